//! `__share_group_state` records in Kafka's format (the share coordinator's
//! `ShareSnapshotKey`/`ShareSnapshotValue`, record type 0; `ShareUpdateKey`, type 1, is
//! read as a snapshot's delta). A key is the record type (int16) then GroupId (string),
//! TopicId (uuid), Partition (int32); a value is its version (int16, 0) then the flexible
//! v0 body: SnapshotEpoch, StateEpoch, LeaderEpoch (int32), StartOffset,
//! CreateTimestamp, WriteTimestamp (int64; ShareUpdate has StartOffset only), and
//! StateBatches (FirstOffset, LastOffset int64, DeliveryState int8 with 0 available,
//! 2 acknowledged, 4 archived, DeliveryCount int16), each struct with empty tagged
//! fields.
//!
//! Decoding never trusts a length from disk for an allocation and returns None on
//! anything malformed (the caller logs and skips the record).

use uuid::Uuid;

use super::partition_state::RecordState;

pub use crate::storage::topics::SHARE_STATE_TOPIC as STATE_TOPIC;
pub const SNAPSHOT_TYPE: i16 = 0;
pub const UPDATE_TYPE: i16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey {
    pub group: String,
    pub topic_id: Uuid,
    pub partition: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateValue {
    pub snapshot_epoch: i32,
    pub state_epoch: i32,
    pub leader_epoch: i32,
    pub start_offset: i64,
    pub create_timestamp: i64,
    pub write_timestamp: i64,
    pub batches: Vec<(i64, i64, RecordState, i16)>,
}

/// Kafka's `Uuid.toString`: URL-safe base64 without padding.
pub fn kafka_uuid_string(id: Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

impl StateKey {
    /// The `__share_group_state` partition holding this key, as Kafka places it: the Java
    /// hash of "group:topicId:partition".
    pub fn state_partition(&self, partitions: i32) -> i32 {
        let coordinator_key = format!(
            "{}:{}:{}",
            self.group,
            kafka_uuid_string(self.topic_id),
            self.partition
        );
        crate::coordinators::groups::records::partition_for(&coordinator_key, partitions)
    }
}

fn delivery_state_code(s: RecordState) -> i8 {
    match s {
        RecordState::Available | RecordState::Acquired => 0,
        RecordState::Acknowledged => 2,
        RecordState::Archived => 4,
    }
}

fn delivery_state(code: i8) -> Option<RecordState> {
    match code {
        0 => Some(RecordState::Available),
        2 => Some(RecordState::Acknowledged),
        4 => Some(RecordState::Archived),
        _ => None,
    }
}

pub fn encode_key(k: &StateKey) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + 2 + k.group.len() + 16 + 4);
    b.extend_from_slice(&SNAPSHOT_TYPE.to_be_bytes());
    b.extend_from_slice(&(k.group.len() as i16).to_be_bytes());
    b.extend_from_slice(k.group.as_bytes());
    b.extend_from_slice(k.topic_id.as_bytes());
    b.extend_from_slice(&k.partition.to_be_bytes());
    b
}

fn uvarint(b: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        b.push((n as u8) | 0x80);
        n >>= 7;
    }
    b.push(n as u8);
}

pub fn encode_snapshot(v: &StateValue) -> Vec<u8> {
    let mut b = Vec::with_capacity(48 + v.batches.len() * 20);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&v.snapshot_epoch.to_be_bytes());
    b.extend_from_slice(&v.state_epoch.to_be_bytes());
    b.extend_from_slice(&v.leader_epoch.to_be_bytes());
    b.extend_from_slice(&v.start_offset.to_be_bytes());
    b.extend_from_slice(&v.create_timestamp.to_be_bytes());
    b.extend_from_slice(&v.write_timestamp.to_be_bytes());
    uvarint(&mut b, v.batches.len() as u64 + 1);
    for &(first, last, state, count) in &v.batches {
        b.extend_from_slice(&first.to_be_bytes());
        b.extend_from_slice(&last.to_be_bytes());
        b.push(delivery_state_code(state) as u8);
        b.extend_from_slice(&count.to_be_bytes());
        uvarint(&mut b, 0);
    }
    uvarint(&mut b, 0);
    b
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn uvarint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            n |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }
    /// Skips a tagged-field section.
    fn skip_tags(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let len = usize::try_from(self.uvarint()?).ok()?;
            self.take(len)?;
        }
        Some(())
    }
}

/// (record type, key), or None for a malformed key.
pub fn decode_key(b: &[u8]) -> Option<(i16, StateKey)> {
    let mut r = Reader(b);
    let kind = r.i16()?;
    let len = usize::try_from(r.i16()?).ok()?;
    let group = String::from_utf8(r.take(len)?.to_vec()).ok()?;
    let topic_id = Uuid::from_slice(r.take(16)?).ok()?;
    let partition = r.i32()?;
    Some((
        kind,
        StateKey {
            group,
            topic_id,
            partition,
        },
    ))
}

/// A snapshot value (record type 0), or None for a malformed one.
pub fn decode_snapshot(b: &[u8]) -> Option<StateValue> {
    let mut r = Reader(b);
    if r.i16()? != 0 {
        return None;
    }
    let snapshot_epoch = r.i32()?;
    let state_epoch = r.i32()?;
    let leader_epoch = r.i32()?;
    let start_offset = r.i64()?;
    let create_timestamp = r.i64()?;
    let write_timestamp = r.i64()?;
    let batches = read_batches(&mut r)?;
    r.skip_tags()?;
    Some(StateValue {
        snapshot_epoch,
        state_epoch,
        leader_epoch,
        start_offset,
        create_timestamp,
        write_timestamp,
        batches,
    })
}

fn read_batches(r: &mut Reader<'_>) -> Option<Vec<(i64, i64, RecordState, i16)>> {
    let n = r.uvarint()?.checked_sub(1)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let first = r.i64()?;
        let last = r.i64()?;
        let state = delivery_state(r.i8()?)?;
        let count = r.i16()?;
        r.skip_tags()?;
        if last < first {
            return None;
        }
        out.push((first, last, state, count));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_garbage_is_refused() {
        let k = StateKey {
            group: "g".into(),
            topic_id: Uuid::from_u128(0x0102),
            partition: 3,
        };
        assert_eq!(
            decode_key(&encode_key(&k)),
            Some((SNAPSHOT_TYPE, k.clone()))
        );
        let v = StateValue {
            snapshot_epoch: 4,
            state_epoch: 0,
            leader_epoch: 2,
            start_offset: 10,
            create_timestamp: 1,
            write_timestamp: 2,
            batches: vec![
                (10, 12, RecordState::Acknowledged, 1),
                (13, 13, RecordState::Available, 3),
            ],
        };
        let bytes = encode_snapshot(&v);
        assert_eq!(decode_snapshot(&bytes), Some(v));
        for cut in 0..bytes.len() {
            assert_eq!(decode_snapshot(&bytes[..cut]), None, "cut at {cut}");
        }
        assert!(k.state_partition(50) < 50);
    }

    #[test]
    fn kafka_uuid_strings() {
        // Kafka prints Uuid(0, 1) as "AAAAAAAAAAAAAAAAAAAAAQ".
        assert_eq!(
            kafka_uuid_string(Uuid::from_u128(1)),
            "AAAAAAAAAAAAAAAAAAAAAQ"
        );
    }
}
