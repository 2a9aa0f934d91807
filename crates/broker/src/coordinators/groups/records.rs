//! The records of `__consumer_offsets`, in Kafka's own key and value layouts, so the
//! topic reads the same as a Kafka cluster's: OffsetCommitKey v1 / OffsetCommitValue v3
//! and GroupMetadataKey v2 / GroupMetadataValue v3 (big-endian, i16-length strings).

use bytes::{Buf, BufMut, Bytes};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}
fn put_opt_str(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}
fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

pub fn encode_key(k: &RecordKey) -> Vec<u8> {
    let mut b = Vec::new();
    match k {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            b.put_i16(1);
            put_str(&mut b, group);
            put_str(&mut b, topic);
            b.put_i32(*partition);
        }
        RecordKey::Group { group } => {
            b.put_i16(2);
            put_str(&mut b, group);
        }
    }
    b
}

pub fn encode_offset(v: &OffsetValue) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_i16(3);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_str(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp);
    b
}

pub fn encode_group(v: &GroupValue) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_i16(3);
    put_str(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_opt_str(&mut b, v.protocol.as_deref());
    put_opt_str(&mut b, v.leader.as_deref());
    b.put_i64(v.state_timestamp);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut b, &m.member_id);
        put_opt_str(&mut b, m.instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b
}

/// A bounds-checked reader: every read returns None instead of panicking when the
/// bytes run out (these records are read back from disk at start-up).
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn i16(&mut self) -> Option<i16> {
        (self.0.remaining() >= 2).then(|| self.0.get_i16())
    }
    fn i32(&mut self) -> Option<i32> {
        (self.0.remaining() >= 4).then(|| self.0.get_i32())
    }
    fn i64(&mut self) -> Option<i64> {
        (self.0.remaining() >= 8).then(|| self.0.get_i64())
    }
    fn opt_str(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        let len = len as usize;
        if self.0.len() < len {
            return None;
        }
        let s = String::from_utf8(self.0[..len].to_vec()).ok()?;
        self.0.advance(len);
        Some(Some(s))
    }
    fn str(&mut self) -> Option<String> {
        self.opt_str()?
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let len = self.i32()?;
        if len < 0 {
            return Some(Bytes::new());
        }
        let len = len as usize;
        if self.0.len() < len {
            return None;
        }
        let v = Bytes::copy_from_slice(&self.0[..len]);
        self.0.advance(len);
        Some(v)
    }
}

pub fn decode_key(raw: &[u8]) -> Option<RecordKey> {
    let mut r = Reader(raw);
    match r.i16()? {
        0 | 1 => Some(RecordKey::Offset {
            group: r.str()?,
            topic: r.str()?,
            partition: r.i32()?,
        }),
        2 => Some(RecordKey::Group { group: r.str()? }),
        _ => None,
    }
}

pub fn decode_offset(raw: &[u8]) -> Option<OffsetValue> {
    let mut r = Reader(raw);
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp = r.i64()?;
    Some(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

pub fn decode_group(raw: &[u8]) -> Option<GroupValue> {
    let mut r = Reader(raw);
    let version = r.i16()?;
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol = r.opt_str()?;
    let leader = r.opt_str()?;
    let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        members.push(MemberValue {
            member_id: r.str()?,
            instance_id: if version >= 3 { r.opt_str()? } else { None },
            client_id: r.str()?,
            client_host: r.str()?,
            rebalance_timeout_ms: if version >= 1 { r.i32()? } else { 0 },
            session_timeout_ms: r.i32()?,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Some(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp,
        members,
    })
}

/// Java's `String.hashCode`, which Kafka uses to place a group on a partition.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition that holds `group` (Kafka's `Utils.abs(hash) % n`).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let k = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        assert_eq!(decode_key(&encode_key(&k)), Some(k));
        let v = OffsetValue {
            offset: 9,
            leader_epoch: 0,
            metadata: "m".into(),
            commit_timestamp: 5,
        };
        assert_eq!(decode_offset(&encode_offset(&v)), Some(v));
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: Some("a".into()),
            state_timestamp: 1,
            members: vec![MemberValue {
                member_id: "a".into(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 1,
                session_timeout_ms: 2,
                subscription: Bytes::from_static(b"s"),
                assignment: Bytes::from_static(b"a"),
            }],
        };
        assert_eq!(decode_group(&encode_group(&g)), Some(g));
        assert_eq!(decode_key(&[0, 1, 0]), None);
    }

    #[test]
    fn placement_matches_java() {
        assert_eq!(
            java_string_hash("my-group"),
            "my-group"
                .chars()
                .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
        );
        assert_eq!(java_string_hash("hello"), 99162322);
        assert!((0..50).contains(&partition_for("anything", 50)));
    }
}
