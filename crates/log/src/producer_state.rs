//! Idempotent-producer state: per producer id, its epoch and its last few batches, so a
//! retried batch is recognised as a duplicate and a gap in sequences is refused.
//!
//! Survives restarts through snapshots written at segment roll and clean shutdown; on
//! open the log replays batch headers written after the snapshot.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use crate::batch::BatchHeader;
use crate::error::{LogError, Result};
use crate::index::write_atomically;

/// Kafka keeps the metadata of the last five batches per producer, matching the client's
/// `max.in.flight.requests.per.connection` limit of five for idempotence.
pub const MAX_CACHED_BATCHES_PER_PRODUCER: usize = 5;
const SNAPSHOT_MAGIC: &[u8; 4] = b"RPS2";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub last_timestamp: i64,
    /// First offset of this producer's open transaction on the partition, if any.
    pub txn_first_offset: Option<i64>,
    batches: VecDeque<BatchMetadata>,
}

impl ProducerEntry {
    /// The last sequence number written, or -1.
    pub fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_seq)
    }
}

/// A transaction that ended with an abort marker: consumers reading committed data skip
/// this producer's records from `first_offset` up to the marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    Duplicate(BatchMetadata),
}

#[derive(Debug, Default)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    aborted: Vec<AbortedTxn>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStateManager {
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Decides whether a batch with a producer id may be appended (Kafka's checkSequence).
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck> {
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // Unknown producer (new, or its state expired): any sequence is accepted.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                current: entry.epoch,
                got: h.producer_epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            if h.base_sequence != 0 {
                return Err(LogError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        let last_seq = h.last_sequence();
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|m| m.first_seq == h.base_sequence && m.last_seq == last_seq)
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        if let Some(last) = entry.batches.back() {
            let expected = next_seq(last.last_seq);
            if h.base_sequence != expected {
                return Err(LogError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected,
                    got: h.base_sequence,
                });
            }
        }
        Ok(SequenceCheck::Append)
    }

    /// Records an appended batch (its header already carries its assigned base offset).
    pub fn update(&mut self, h: &BatchHeader) {
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = h.max_timestamp;
        if h.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(h.base_offset);
        }
        entry.batches.push_back(BatchMetadata {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while entry.batches.len() > MAX_CACHED_BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
    }

    /// Applies a transaction marker written at `offset`: the producer's open transaction
    /// (if any) ends, and an abort is remembered for read_committed fetches.
    pub fn apply_marker(&mut self, producer_id: i64, epoch: i16, commit: bool, offset: i64) {
        let entry = self.producers.entry(producer_id).or_default();
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if let Some(first) = entry.txn_first_offset.take() {
            if !commit
                && !self
                    .aborted
                    .iter()
                    .any(|a| a.producer_id == producer_id && a.first_offset == first)
            {
                self.aborted.push(AbortedTxn {
                    producer_id,
                    first_offset: first,
                    last_offset: offset,
                });
            }
        }
    }

    /// The first offset of the oldest open transaction, if any.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers
            .values()
            .filter_map(|e| e.txn_first_offset)
            .min()
    }

    /// Aborted transactions overlapping [from, to).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.first_offset < to && a.last_offset >= from)
            .copied()
            .collect()
    }

    /// Producers with state on this partition (DescribeProducers).
    pub fn producers(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// Forgets aborted transactions wholly below the log start.
    pub fn prune_aborted(&mut self, log_start_offset: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start_offset);
    }

    pub fn save(&self, path: &Path, offset: i64) -> Result<()> {
        let mut b = Vec::new();
        b.extend_from_slice(SNAPSHOT_MAGIC);
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (pid, e) in &self.producers {
            b.extend_from_slice(&pid.to_be_bytes());
            b.extend_from_slice(&e.epoch.to_be_bytes());
            b.extend_from_slice(&e.last_timestamp.to_be_bytes());
            b.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            b.push(e.batches.len() as u8);
            for m in &e.batches {
                b.extend_from_slice(&m.first_seq.to_be_bytes());
                b.extend_from_slice(&m.last_seq.to_be_bytes());
                b.extend_from_slice(&m.first_offset.to_be_bytes());
                b.extend_from_slice(&m.last_offset.to_be_bytes());
            }
        }
        b.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            b.extend_from_slice(&a.producer_id.to_be_bytes());
            b.extend_from_slice(&a.first_offset.to_be_bytes());
            b.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        write_atomically(path, &b)
    }

    /// Loads a snapshot; returns the offset it is valid up to. A damaged snapshot is
    /// reported as None so the caller rebuilds from the log instead.
    pub fn load(path: &Path) -> Option<(i64, Self)> {
        let b = std::fs::read(path).ok()?;
        if b.len() < 20 || &b[0..4] != SNAPSHOT_MAGIC {
            return None;
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader { b: body, at: 4 };
        let offset = r.i64()?;
        let count = r.u32()?;
        let mut state = ProducerStateManager::default();
        for _ in 0..count {
            let pid = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp = r.i64()?;
            let txn_first_offset = Some(r.i64()?).filter(|o| *o >= 0);
            let n = r.u8()?;
            let mut batches = VecDeque::new();
            for _ in 0..n {
                batches.push_back(BatchMetadata {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            state.producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    last_timestamp,
                    txn_first_offset,
                    batches,
                },
            );
        }
        for _ in 0..r.u32()? {
            state.aborted.push(AbortedTxn {
                producer_id: r.i64()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
            });
        }
        Some((offset, state))
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let v = self.b.get(self.at..self.at + N)?.try_into().ok()?;
        self.at += N;
        Some(v)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::make_batch;

    fn header(pid: i64, epoch: i16, seq: i32, n: usize, base_offset: i64) -> BatchHeader {
        let values: Vec<&[u8]> = vec![b"v"; n];
        let mut h = BatchHeader::parse(&make_batch(&values, 0, 0, pid, epoch, seq)).unwrap();
        h.base_offset = base_offset;
        h
    }

    #[test]
    fn duplicates_gaps_and_fencing() {
        let mut s = ProducerStateManager::default();
        let first = header(7, 0, 0, 3, 0);
        assert_eq!(s.check(&first).unwrap(), SequenceCheck::Append);
        s.update(&first);
        assert!(
            matches!(s.check(&header(7, 0, 0, 3, 99)).unwrap(), SequenceCheck::Duplicate(m) if m.first_offset == 0)
        );
        assert!(matches!(
            s.check(&header(7, 0, 5, 1, 3)),
            Err(LogError::OutOfOrderSequence {
                expected: 3,
                got: 5,
                ..
            })
        ));
        assert_eq!(
            s.check(&header(7, 0, 3, 1, 3)).unwrap(),
            SequenceCheck::Append
        );
        assert_eq!(
            s.check(&header(7, 1, 0, 1, 3)).unwrap(),
            SequenceCheck::Append
        );
        assert!(s.check(&header(7, 1, 4, 1, 3)).is_err());
        s.update(&header(7, 1, 0, 1, 3));
        assert!(matches!(
            s.check(&header(7, 0, 3, 1, 4)),
            Err(LogError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn snapshot_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.snapshot");
        let mut s = ProducerStateManager::default();
        s.update(&header(1, 2, 0, 4, 10));
        s.save(&path, 14).unwrap();
        let (offset, loaded) = ProducerStateManager::load(&path).unwrap();
        assert_eq!(offset, 14);
        assert!(matches!(
            loaded.check(&header(1, 2, 0, 4, 0)).unwrap(),
            SequenceCheck::Duplicate(_)
        ));
        let mut raw = std::fs::read(&path).unwrap();
        raw[10] ^= 0xff;
        std::fs::write(&path, raw).unwrap();
        assert!(ProducerStateManager::load(&path).is_none());
    }
}
