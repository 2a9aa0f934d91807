//! `__transaction_state` records in Kafka's layout: TransactionLogKey v0 (transactional
//! id) and TransactionLogValue v0 (producer id and epoch, timeout, state, partitions,
//! timestamps).

use bytes::{Buf, BufMut};

use super::TxnState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: Vec<(String, Vec<i32>)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_i16(0);
    put_str(&mut b, transactional_id);
    b
}

pub fn encode_value(v: &TxnValue) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_i16(0);
    b.put_i64(v.producer_id);
    b.put_i16(v.producer_epoch);
    b.put_i32(v.timeout_ms);
    b.put_i8(v.state.code());
    b.put_i32(v.partitions.len() as i32);
    for (topic, ps) in &v.partitions {
        put_str(&mut b, topic);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(*p);
        }
    }
    b.put_i64(v.last_update_ms);
    b.put_i64(v.start_ms);
    b
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn i8(&mut self) -> Option<i8> {
        (self.0.remaining() >= 1).then(|| self.0.get_i8())
    }
    fn i16(&mut self) -> Option<i16> {
        (self.0.remaining() >= 2).then(|| self.0.get_i16())
    }
    fn i32(&mut self) -> Option<i32> {
        (self.0.remaining() >= 4).then(|| self.0.get_i32())
    }
    fn i64(&mut self) -> Option<i64> {
        (self.0.remaining() >= 8).then(|| self.0.get_i64())
    }
    fn str(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        let s = String::from_utf8(self.0.get(..len)?.to_vec()).ok()?;
        self.0.advance(len);
        Some(s)
    }
}

pub fn decode_key(raw: &[u8]) -> Option<String> {
    let mut r = Reader(raw);
    (r.i16()? == 0).then_some(())?;
    r.str()
}

pub fn decode_value(raw: &[u8]) -> Option<TxnValue> {
    let mut r = Reader(raw);
    r.i16()?;
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_code(r.i8()?)?;
    let n = r.i32()?;
    let mut partitions = Vec::new();
    for _ in 0..n.max(0) {
        let topic = r.str()?;
        let count = r.i32()?;
        let mut ps = Vec::new();
        for _ in 0..count.max(0) {
            ps.push(r.i32()?);
        }
        partitions.push((topic, ps));
    }
    Some(TxnValue {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms: r.i64()?,
        start_ms: r.i64()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = TxnValue {
            producer_id: 5,
            producer_epoch: 2,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: vec![("t".into(), vec![0, 3])],
            last_update_ms: 9,
            start_ms: 8,
        };
        assert_eq!(decode_value(&encode_value(&v)), Some(v));
        assert_eq!(decode_key(&encode_key("tx-1")).as_deref(), Some("tx-1"));
        assert_eq!(decode_value(&[0, 0, 1]), None);
    }
}
