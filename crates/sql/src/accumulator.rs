//! The aggregate functions a streaming aggregation computes and their accumulators:
//! how a value folds in, how two merge (session windows), and their bytes in state files.
//! Not thread-safe: each accumulator belongs to one state entry.

use crate::checkpoint::Reader;
use crate::error::Result;
use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array};
use datafusion::arrow::row::Rows;

/// The aggregate functions the streaming operator computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggKind {
    Count,
    SumInt,
    SumFloat,
    Avg,
    Min,
    Max,
    ApproxDistinct,
}

impl AggKind {
    /// Maps a DataFusion aggregate function name; `arg_is_int` picks the sum flavour.
    pub fn from_name(name: &str, arg_is_int: bool) -> Option<AggKind> {
        Some(match name.to_ascii_lowercase().as_str() {
            "count" => AggKind::Count,
            "sum" if arg_is_int => AggKind::SumInt,
            "sum" => AggKind::SumFloat,
            "avg" | "mean" => AggKind::Avg,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "approx_distinct" | "approx_count_distinct" => AggKind::ApproxDistinct,
            _ => return None,
        })
    }
}

/// HyperLogLog registers, Spark's default precision (relative SD 5%: p = 9).
const HLL_P: u32 = 9;
const HLL_M: usize = 1 << HLL_P;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Acc {
    Count(i64),
    SumInt(Option<i64>),
    SumFloat(Option<f64>),
    Avg(f64, i64),
    Min(Option<Box<[u8]>>),
    Max(Option<Box<[u8]>>),
    Hll(Box<[u8]>),
}

impl Acc {
    pub(crate) fn new(kind: AggKind) -> Acc {
        match kind {
            AggKind::Count => Acc::Count(0),
            AggKind::SumInt => Acc::SumInt(None),
            AggKind::SumFloat => Acc::SumFloat(None),
            AggKind::Avg => Acc::Avg(0.0, 0),
            AggKind::Min => Acc::Min(None),
            AggKind::Max => Acc::Max(None),
            AggKind::ApproxDistinct => Acc::Hll(vec![0u8; HLL_M].into_boxed_slice()),
        }
    }

    pub(crate) fn update(&mut self, arg: &ArgData, i: usize) {
        if !arg.is_valid(i) {
            return;
        }
        match (self, arg) {
            (Acc::Count(n), _) => *n += 1,
            (Acc::SumInt(s), ArgData::I64(a)) => *s = Some(s.unwrap_or(0).wrapping_add(a.value(i))),
            (Acc::SumFloat(s), ArgData::F64(a)) => *s = Some(s.unwrap_or(0.0) + a.value(i)),
            (Acc::Avg(s, n), ArgData::F64(a)) => {
                *s += a.value(i);
                *n += 1;
            }
            (Acc::Min(m), ArgData::Rows(r, _)) => {
                let v = r.row(i);
                if m.as_deref().is_none_or(|cur| v.as_ref() < cur) {
                    *m = Some(v.as_ref().into());
                }
            }
            (Acc::Max(m), ArgData::Rows(r, _)) => {
                let v = r.row(i);
                if m.as_deref().is_none_or(|cur| v.as_ref() > cur) {
                    *m = Some(v.as_ref().into());
                }
            }
            (Acc::Hll(regs), ArgData::Rows(r, _)) => {
                let h = hash64(r.row(i).as_ref());
                let idx = (h >> (64 - HLL_P)) as usize;
                let rank = ((h << HLL_P) | (1 << (HLL_P - 1))).leading_zeros() as u8 + 1;
                if regs[idx] < rank {
                    regs[idx] = rank;
                }
            }
            (acc, _) => unreachable!("accumulator {acc:?} fed the wrong argument type"),
        }
    }

    /// Folds another accumulator of the same kind in (session windows merging).
    pub(crate) fn merge(&mut self, other: &Acc) {
        fn pick(cur: &mut Option<Box<[u8]>>, other: &Option<Box<[u8]>>, less: bool) {
            if let Some(o) = other {
                let better =
                    cur.as_deref()
                        .is_none_or(|c| if less { o.as_ref() < c } else { o.as_ref() > c });
                if better {
                    *cur = Some(o.clone());
                }
            }
        }
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::SumInt(a), Acc::SumInt(Some(b))) => *a = Some(a.unwrap_or(0).wrapping_add(*b)),
            (Acc::SumFloat(a), Acc::SumFloat(Some(b))) => *a = Some(a.unwrap_or(0.0) + b),
            (Acc::SumInt(_), Acc::SumInt(None)) | (Acc::SumFloat(_), Acc::SumFloat(None)) => {}
            (Acc::Avg(s, n), Acc::Avg(s2, n2)) => {
                *s += s2;
                *n += n2;
            }
            (Acc::Min(a), Acc::Min(b)) => pick(a, b, true),
            (Acc::Max(a), Acc::Max(b)) => pick(a, b, false),
            (Acc::Hll(a), Acc::Hll(b)) => {
                for (x, y) in a.iter_mut().zip(b.iter()) {
                    *x = (*x).max(*y);
                }
            }
            (a, b) => unreachable!("merging accumulators of different kinds: {a:?} and {b:?}"),
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        fn opt_bytes(out: &mut Vec<u8>, b: &Option<Box<[u8]>>) {
            match b {
                None => out.push(0),
                Some(b) => {
                    out.push(1);
                    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    out.extend_from_slice(b);
                }
            }
        }
        match self {
            Acc::Count(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Acc::SumInt(s) => {
                out.push(2);
                out.push(s.is_some() as u8);
                out.extend_from_slice(&s.unwrap_or(0).to_le_bytes());
            }
            Acc::SumFloat(s) => {
                out.push(3);
                out.push(s.is_some() as u8);
                out.extend_from_slice(&s.unwrap_or(0.0).to_le_bytes());
            }
            Acc::Avg(s, n) => {
                out.push(4);
                out.extend_from_slice(&s.to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
            }
            Acc::Min(m) => {
                out.push(5);
                opt_bytes(out, m);
            }
            Acc::Max(m) => {
                out.push(6);
                opt_bytes(out, m);
            }
            Acc::Hll(r) => {
                out.push(7);
                out.extend_from_slice(r);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Acc> {
        let opt_bytes = |r: &mut Reader| -> Result<Option<Box<[u8]>>> {
            Ok(match r.u8()? {
                0 => None,
                _ => {
                    let n = r.u32()? as usize;
                    Some(r.bytes(n)?.into())
                }
            })
        };
        Ok(match r.u8()? {
            1 => Acc::Count(r.i64()?),
            2 => {
                let some = r.u8()? != 0;
                let v = r.i64()?;
                Acc::SumInt(some.then_some(v))
            }
            3 => {
                let some = r.u8()? != 0;
                let v = f64::from_bits(r.i64()? as u64);
                Acc::SumFloat(some.then_some(v))
            }
            4 => Acc::Avg(f64::from_bits(r.i64()? as u64), r.i64()?),
            5 => Acc::Min(opt_bytes(r)?),
            6 => Acc::Max(opt_bytes(r)?),
            7 => Acc::Hll(r.bytes(HLL_M)?.into()),
            t => return Err(r.error(&format!("unknown accumulator tag {t}"))),
        })
    }
}

/// HyperLogLog estimate with the linear-counting correction for small cardinalities.
pub(crate) fn hll_estimate(regs: &[u8]) -> i64 {
    let m = regs.len() as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let sum: f64 = regs.iter().map(|&r| 2f64.powi(-(r as i32))).sum();
    let e = alpha * m * m / sum;
    let zeros = regs.iter().filter(|&&r| r == 0).count();
    if e <= 2.5 * m && zeros > 0 {
        (m * (m / zeros as f64).ln()).round() as i64
    } else {
        e.round() as i64
    }
}

/// A stable 64-bit hash (FNV-1a, then murmur3's finaliser).
fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// An aggregate's argument column, prepared once per input batch.
pub(crate) enum ArgData {
    /// Only validity matters (count).
    Valid(ArrayRef),
    I64(Int64Array),
    F64(Float64Array),
    /// Row-encoded values (order-preserving bytes) and the original array for nulls.
    Rows(Rows, ArrayRef),
}

impl ArgData {
    pub(crate) fn is_valid(&self, i: usize) -> bool {
        match self {
            ArgData::Valid(a) => a.is_valid(i),
            ArgData::I64(a) => a.is_valid(i),
            ArgData::F64(a) => a.is_valid(i),
            ArgData::Rows(_, a) => a.is_valid(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hll_is_close() {
        let mut regs = vec![0u8; HLL_M];
        for i in 0..100_000u64 {
            let h = hash64(&i.to_le_bytes());
            let idx = (h >> (64 - HLL_P)) as usize;
            let rank = ((h << HLL_P) | (1 << (HLL_P - 1))).leading_zeros() as u8 + 1;
            regs[idx] = regs[idx].max(rank);
        }
        let e = hll_estimate(&regs);
        assert!((e - 100_000).abs() < 15_000, "{e}");
        let mut small = vec![0u8; HLL_M];
        small[3] = 1;
        small[9] = 2;
        assert_eq!(hll_estimate(&small), 2);
    }
}
