//! MirrorMaker 2's names and record formats, so tools built on MM2 (Kafka's
//! `RemoteClusterUtils.translateOffsets`, `MirrorClient`, UIs with MM2 serdes) read what
//! `runnel mirror` writes:
//!
//! - topic names: `DefaultReplicationPolicy` (`<source alias><separator><topic>`) or
//!   `IdentityReplicationPolicy` (same name; the heartbeats topic is still prefixed, to
//!   keep cycles detectable), `<alias>.checkpoints.internal`,
//!   `mm2-offset-syncs.<alias>.internal`, `heartbeats`;
//! - `Heartbeat`, `Checkpoint` and `OffsetSync` records: Kafka protocol `Struct`s (big
//!   endian integers, strings as an int16 length and UTF-8), heartbeat and checkpoint
//!   values behind an int16 version header (0);
//! - the source offsets Kafka Connect keeps for `MirrorSourceConnector`
//!   (`["MirrorSourceConnector",{"cluster":..,"partition":..,"topic":..}]` ->
//!   `{"offset": last copied}`), with the downstream offset alongside, which this tool
//!   needs to resume without duplicates.
//!
//! Pure functions; thread-safe.

use bytes::{BufMut, Bytes, BytesMut};

/// How source topic names become target topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationPolicy {
    pub source_alias: String,
    pub separator: String,
    /// IdentityReplicationPolicy: keep names.
    pub identity: bool,
}

pub const HEARTBEATS_TOPIC: &str = "heartbeats";
/// MM2's connector name in the Connect offsets it keeps.
pub const SOURCE_CONNECTOR: &str = "MirrorSourceConnector";

impl ReplicationPolicy {
    /// `default` / `DefaultReplicationPolicy` or `identity` / `IdentityReplicationPolicy`
    /// (with or without Kafka's package name).
    pub fn parse(name: &str, source_alias: &str, separator: &str) -> Result<Self, String> {
        let short = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
        let identity = match short.as_str() {
            "default" | "defaultreplicationpolicy" => false,
            "identity" | "identityreplicationpolicy" => true,
            _ => {
                return Err(format!(
                    "--replication-policy {name}: expected default (DefaultReplicationPolicy) or identity (IdentityReplicationPolicy)"
                ))
            }
        };
        if separator.is_empty() {
            return Err("--separator must not be empty".into());
        }
        Ok(ReplicationPolicy {
            source_alias: source_alias.to_string(),
            separator: separator.to_string(),
            identity,
        })
    }

    /// The target topic for a source topic.
    pub fn remote_topic(&self, topic: &str) -> String {
        if self.identity && !is_heartbeats(topic) {
            topic.to_string()
        } else {
            format!("{}{}{topic}", self.source_alias, self.separator)
        }
    }

    /// Whether `topic` came from the cluster `alias` (a cycle if `alias` is the target).
    /// Identity naming cannot tell, as in MM2.
    pub fn comes_from(&self, topic: &str, alias: &str) -> bool {
        (!self.identity || is_heartbeats(topic))
            && topic
                .strip_prefix(alias)
                .is_some_and(|rest| rest.starts_with(&self.separator))
    }

    pub fn checkpoints_topic(&self) -> String {
        format!(
            "{}{}checkpoints.internal",
            self.source_alias, self.separator
        )
    }

    /// The offset-syncs topic, named (as MM2's `MirrorSourceConfig.offsetSyncsTopic`
    /// does) after the cluster it does not live on: `mm2-offset-syncs.<target>.internal`
    /// on the source (MM2's default `offset-syncs.topic.location=source`),
    /// `mm2-offset-syncs.<source>.internal` on the target (`=target`).
    pub fn offset_syncs_topic(&self, other_alias: &str) -> String {
        format!("mm2-offset-syncs{}{other_alias}.internal", self.separator)
    }

    pub fn offsets_topic(&self, target_alias: &str) -> String {
        format!("mm2-offsets{}{target_alias}.internal", self.separator)
    }
}

/// MM2's heartbeats topics (`heartbeats`, `a.heartbeats`): always mirrored.
pub fn is_heartbeats(topic: &str) -> bool {
    topic == HEARTBEATS_TOPIC || topic.ends_with(".heartbeats")
}

/// Topics MM2 never mirrors (its `DefaultTopicFilter` and internal-topic rules).
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with("__")
        || topic.starts_with('.')
        || topic.starts_with("mm2-")
        || topic.ends_with(".internal")
        || topic.ends_with("-internal")
        || topic.ends_with(".replica")
}

/// Groups MM2 never checkpoints (its `DefaultGroupFilter`).
pub fn is_excluded_group(group: &str) -> bool {
    group.starts_with("console-consumer-")
        || group.starts_with("connect-")
        || group.starts_with("__")
}

fn put_string(b: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    let len = bytes.len().min(i16::MAX as usize);
    b.put_i16(len as i16);
    b.put_slice(&bytes[..len]);
}

const VERSION: i16 = 0;

/// Heartbeat key: {sourceClusterAlias: STRING, targetClusterAlias: STRING}.
pub fn heartbeat_key(source_alias: &str, target_alias: &str) -> Bytes {
    let mut b = BytesMut::new();
    put_string(&mut b, source_alias);
    put_string(&mut b, target_alias);
    b.freeze()
}

/// Heartbeat value: version header, then {timestamp: INT64}.
pub fn heartbeat_value(timestamp_ms: i64) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(VERSION);
    b.put_i64(timestamp_ms);
    b.freeze()
}

/// Checkpoint key: {group: STRING, topic: STRING, partition: INT32}; the topic is the
/// target's (renamed) topic.
pub fn checkpoint_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    put_string(&mut b, group);
    put_string(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

/// Checkpoint value: version header, then {upstreamOffset: INT64, offset: INT64,
/// metadata: STRING}.
pub fn checkpoint_value(upstream: i64, downstream: i64, metadata: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(VERSION);
    b.put_i64(upstream);
    b.put_i64(downstream);
    put_string(&mut b, metadata);
    b.freeze()
}

/// OffsetSync key: {topic: STRING, partition: INT32} (the source topic).
pub fn offset_sync_key(topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    put_string(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

/// OffsetSync value: {upstreamOffset: INT64, offset: INT64} (no version header).
pub fn offset_sync_value(upstream: i64, downstream: i64) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i64(upstream);
    b.put_i64(downstream);
    b.freeze()
}

/// Reads a `put_string` string; returns it and what follows.
fn get_string(b: &[u8]) -> Option<(String, &[u8])> {
    let (n, rest) = b.split_first_chunk::<2>()?;
    let n = usize::try_from(i16::from_be_bytes(*n)).ok()?;
    let s = std::str::from_utf8(rest.get(..n)?).ok()?.to_string();
    Some((s, &rest[n..]))
}

/// Reads two int64s: (upstream, downstream).
fn get_offsets(b: &[u8]) -> Option<(i64, i64)> {
    let upstream = i64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let downstream = i64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
    Some((upstream, downstream))
}

/// Reads an OffsetSync back: (source topic, partition) and (upstream, downstream).
pub fn parse_offset_sync(key: &[u8], value: &[u8]) -> Option<((String, i32), (i64, i64))> {
    let (topic, rest) = get_string(key)?;
    let partition = i32::from_be_bytes(rest.try_into().ok()?);
    Some(((topic, partition), get_offsets(value)?))
}

/// Reads a Checkpoint back: (group, target topic, partition) and (upstream,
/// downstream); None for another version or a record that is not one.
#[allow(clippy::type_complexity)]
pub fn parse_checkpoint(key: &[u8], value: &[u8]) -> Option<((String, String, i32), (i64, i64))> {
    let (group, rest) = get_string(key)?;
    let (topic, rest) = get_string(rest)?;
    let partition = i32::from_be_bytes(rest.try_into().ok()?);
    let (version, value) = value.split_first_chunk::<2>()?;
    if i16::from_be_bytes(*version) != VERSION {
        return None;
    }
    Some(((group, topic, partition), get_offsets(value)?))
}

/// Whether a stored offset can be one (-1 stands for "before the first").
pub fn plausible(offset: i64) -> bool {
    (-1..i64::MAX / 2).contains(&offset)
}

/// The Connect source-offset key MM2 uses for a source partition.
pub fn progress_key(source_alias: &str, topic: &str, partition: i32) -> Bytes {
    let key = serde_json::json!([
        SOURCE_CONNECTOR,
        {"cluster": source_alias, "partition": partition, "topic": topic}
    ]);
    Bytes::from(key.to_string())
}

/// The Connect source-offset value: the last upstream offset copied (MM2 resumes after
/// it) and where it landed on the target.
pub fn progress_value(upstream: i64, downstream: i64) -> Bytes {
    let value = serde_json::json!({"offset": upstream, "runnel.downstream.offset": downstream});
    Bytes::from(value.to_string())
}

/// Reads a progress record back: (source alias, topic, partition) and (upstream,
/// downstream). None for records of other connectors or that this tool did not write.
#[allow(clippy::type_complexity)]
pub fn parse_progress(key: &[u8], value: &[u8]) -> Option<((String, String, i32), (i64, i64))> {
    let key: serde_json::Value = serde_json::from_slice(key).ok()?;
    if key.get(0)?.as_str()? != SOURCE_CONNECTOR {
        return None;
    }
    let part = key.get(1)?;
    let cluster = part.get("cluster")?.as_str()?.to_string();
    let topic = part.get("topic")?.as_str()?.to_string();
    let partition = i32::try_from(part.get("partition")?.as_i64()?).ok()?;
    let value: serde_json::Value = serde_json::from_slice(value).ok()?;
    let upstream = value.get("offset")?.as_i64()?;
    let downstream = value.get("runnel.downstream.offset")?.as_i64()?;
    Some(((cluster, topic, partition), (upstream, downstream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_mm2_policies() {
        let p = ReplicationPolicy::parse("default", "us", ".").unwrap();
        assert_eq!(p.remote_topic("orders"), "us.orders");
        assert_eq!(p.checkpoints_topic(), "us.checkpoints.internal");
        assert_eq!(p.offset_syncs_topic("us"), "mm2-offset-syncs.us.internal");
        assert_eq!(p.offsets_topic("eu"), "mm2-offsets.eu.internal");
        assert!(p.comes_from("eu.orders", "eu") && !p.comes_from("europe", "eu"));
        let i = ReplicationPolicy::parse(
            "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
            "us",
            ".",
        )
        .unwrap();
        assert_eq!(i.remote_topic("orders"), "orders");
        assert_eq!(i.remote_topic("heartbeats"), "us.heartbeats");
        assert!(!i.comes_from("eu.orders", "eu"));
        assert!(ReplicationPolicy::parse("mine", "us", ".").is_err());
        assert!(is_internal("__consumer_offsets") && is_internal("us.checkpoints.internal"));
        assert!(is_internal("mm2-offset-syncs.eu.internal") && !is_internal("orders"));
        assert!(is_heartbeats("us.heartbeats") && is_excluded_group("console-consumer-1"));
    }

    #[test]
    fn records_are_mm2_structs() {
        assert_eq!(&heartbeat_key("a", "bc")[..], b"\x00\x01a\x00\x02bc");
        assert_eq!(
            &heartbeat_value(1)[..],
            b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
        );
        assert_eq!(
            &checkpoint_key("g", "t", 2)[..],
            b"\x00\x01g\x00\x01t\x00\x00\x00\x02"
        );
        let v = checkpoint_value(5, 7, "m");
        assert_eq!(v.len(), 2 + 8 + 8 + 3);
        assert_eq!(&v[..2], b"\x00\x00");
        assert_eq!(&v[2..10], &5i64.to_be_bytes());
        assert_eq!(&v[10..18], &7i64.to_be_bytes());
        assert_eq!(&offset_sync_value(1, 2)[..8], &1i64.to_be_bytes());
        assert_eq!(
            parse_offset_sync(&offset_sync_key("t", 4), &offset_sync_value(1, 2)),
            Some((("t".into(), 4), (1, 2)))
        );
        assert_eq!(parse_offset_sync(b"\x00\x09t", b""), None);
        assert_eq!(
            parse_checkpoint(
                &checkpoint_key("g", "us.t", 2),
                &checkpoint_value(5, 7, "m")
            ),
            Some((("g".into(), "us.t".into(), 2), (5, 7)))
        );
        assert_eq!(
            parse_checkpoint(&checkpoint_key("g", "t", 2), b"\x00\x01"),
            None
        );
        assert_eq!(
            parse_checkpoint(b"\x00\x01g", &checkpoint_value(5, 7, "")),
            None
        );
        let k = progress_key("us", "orders", 3);
        assert_eq!(
            std::str::from_utf8(&k).unwrap(),
            r#"["MirrorSourceConnector",{"cluster":"us","partition":3,"topic":"orders"}]"#
        );
        let parsed = parse_progress(&k, &progress_value(41, 9)).unwrap();
        assert_eq!(parsed, (("us".into(), "orders".into(), 3), (41, 9)));
        assert_eq!(parse_progress(b"[\"Other\",{}]", b"{}"), None);
        assert_eq!(parse_progress(b"not json", b""), None);
        assert!(plausible(-1) && plausible(0) && !plausible(-2) && !plausible(i64::MAX));
    }
}
