//! Per-group dynamic configs (Kafka 4.0's `GroupConfig`, config resource type GROUP = 32):
//! DescribeConfigs and IncrementalAlterConfigs on a group id. The consumer-protocol
//! (KIP-848) coordinator uses `consumer.session.timeout.ms` and
//! `consumer.heartbeat.interval.ms` in place of the broker's defaults; the share-group
//! keys are validated and stored, and read by the share-group handlers
//! (`handlers/share.rs`).
//!
//! Storage: the metadata log (one cluster-wide config record per group, key `group:<id>`,
//! value the group's overrides as JSON), so every coordinator sees the same overrides.
//!
//! Thread-safe: the overrides are behind a read-write lock.

use std::collections::BTreeMap;

use parking_lot::RwLock;

use super::GroupConfig;
use crate::coordinators::share::ShareConfig;
use crate::error::{BrokerError, ErrorCode};

/// Kafka's group-config bounds (`group.consumer.min.session.timeout.ms` and friends),
/// at Kafka's defaults.
const CONSUMER_SESSION_TIMEOUT_RANGE_MS: (i64, i64) = (45_000, 60_000);
const CONSUMER_HEARTBEAT_INTERVAL_RANGE_MS: (i64, i64) = (5_000, 15_000);
const SHARE_SESSION_TIMEOUT_RANGE_MS: (i64, i64) = (45_000, 60_000);
const SHARE_HEARTBEAT_INTERVAL_RANGE_MS: (i64, i64) = (5_000, 15_000);

pub const CONSUMER_SESSION_TIMEOUT_MS: &str = "consumer.session.timeout.ms";
pub const CONSUMER_HEARTBEAT_INTERVAL_MS: &str = "consumer.heartbeat.interval.ms";
const SHARE_SESSION_TIMEOUT_MS: &str = "share.session.timeout.ms";
const SHARE_HEARTBEAT_INTERVAL_MS: &str = "share.heartbeat.interval.ms";
const SHARE_RECORD_LOCK_DURATION_MS: &str = "share.record.lock.duration.ms";
const SHARE_AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";
/// `read_committed` or `read_uncommitted` (Kafka's `GroupConfig.SHARE_ISOLATION_LEVEL_CONFIG`).
pub const SHARE_ISOLATION_LEVEL: &str = "share.isolation.level";
const ISOLATION_LEVELS: [&str; 2] = ["read_committed", "read_uncommitted"];

/// Kafka's ConfigType codes.
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;

/// Prefix of a group's record among the metadata log's cluster-wide configs.
const IMAGE_KEY_PREFIX: &str = "group:";

/// Every group config key in Kafka's order, its ConfigType and its default (the share
/// keys' defaults are the broker's `group.share.*` values, as in Kafka).
pub fn defaults(broker: &GroupConfig, share: &ShareConfig) -> Vec<(&'static str, i8, String)> {
    vec![
        (
            CONSUMER_SESSION_TIMEOUT_MS,
            TYPE_INT,
            broker.consumer_session_timeout_ms.to_string(),
        ),
        (
            CONSUMER_HEARTBEAT_INTERVAL_MS,
            TYPE_INT,
            broker.consumer_heartbeat_interval_ms.to_string(),
        ),
        (SHARE_SESSION_TIMEOUT_MS, TYPE_INT, "45000".into()),
        (SHARE_HEARTBEAT_INTERVAL_MS, TYPE_INT, "5000".into()),
        (
            SHARE_RECORD_LOCK_DURATION_MS,
            TYPE_INT,
            share.record_lock_duration_ms.to_string(),
        ),
        (SHARE_AUTO_OFFSET_RESET, TYPE_STRING, "latest".into()),
        (
            SHARE_ISOLATION_LEVEL,
            TYPE_STRING,
            "read_uncommitted".into(),
        ),
    ]
}

fn invalid(message: String) -> BrokerError {
    BrokerError::new(ErrorCode::InvalidConfig, message)
}

fn int_in(key: &str, value: &str, (min, max): (i64, i64)) -> Result<i64, BrokerError> {
    let n: i64 = value.trim().parse().map_err(|_| {
        invalid(format!(
            "invalid value '{value}' for '{key}': expected an integer"
        ))
    })?;
    if n < min {
        return Err(invalid(format!(
            "{key} must be greater than or equal to {min}"
        )));
    }
    if n > max {
        return Err(invalid(format!(
            "{key} must be less than or equal to {max}"
        )));
    }
    Ok(n)
}

/// `earliest`, `latest`, or `by_duration:<ISO-8601 duration>` (not negative).
fn valid_auto_offset_reset(value: &str) -> bool {
    match value.trim().to_ascii_lowercase().as_str() {
        "earliest" | "latest" => true,
        v => v.strip_prefix("by_duration:").is_some_and(|d| {
            let d = d.trim();
            d.starts_with('p') && d.len() > 1 && !d.contains('-')
        }),
    }
}

/// Checks a group's full set of overrides merged over the defaults, as Kafka's
/// `GroupConfig.validate` does: names, types, the broker's bounds, and each session
/// timeout above its heartbeat interval. A share group's lock duration lies within the
/// broker's `group.share.min/max.record.lock.duration.ms`.
pub fn validate(
    overrides: &BTreeMap<String, String>,
    broker: &GroupConfig,
    share: &ShareConfig,
) -> Result<(), BrokerError> {
    let mut merged: BTreeMap<String, String> = defaults(broker, share)
        .into_iter()
        .map(|(k, _, v)| (k.to_string(), v))
        .collect();
    for (k, v) in overrides {
        if !merged.contains_key(k) {
            return Err(invalid(format!("Unknown group config name: {k}")));
        }
        merged.insert(k.clone(), v.clone());
    }
    let get = |k: &str| merged.get(k).map(String::as_str).unwrap_or_default();
    let session = int_in(
        CONSUMER_SESSION_TIMEOUT_MS,
        get(CONSUMER_SESSION_TIMEOUT_MS),
        CONSUMER_SESSION_TIMEOUT_RANGE_MS,
    )?;
    let heartbeat = int_in(
        CONSUMER_HEARTBEAT_INTERVAL_MS,
        get(CONSUMER_HEARTBEAT_INTERVAL_MS),
        CONSUMER_HEARTBEAT_INTERVAL_RANGE_MS,
    )?;
    let share_session = int_in(
        SHARE_SESSION_TIMEOUT_MS,
        get(SHARE_SESSION_TIMEOUT_MS),
        SHARE_SESSION_TIMEOUT_RANGE_MS,
    )?;
    let share_heartbeat = int_in(
        SHARE_HEARTBEAT_INTERVAL_MS,
        get(SHARE_HEARTBEAT_INTERVAL_MS),
        SHARE_HEARTBEAT_INTERVAL_RANGE_MS,
    )?;
    int_in(
        SHARE_RECORD_LOCK_DURATION_MS,
        get(SHARE_RECORD_LOCK_DURATION_MS),
        (
            share.min_record_lock_duration_ms as i64,
            share.max_record_lock_duration_ms as i64,
        ),
    )?;
    let isolation = get(SHARE_ISOLATION_LEVEL);
    if !ISOLATION_LEVELS.contains(&isolation) {
        return Err(invalid(format!(
            "Invalid value {isolation} for configuration {SHARE_ISOLATION_LEVEL}: String must be one of: read_committed, read_uncommitted"
        )));
    }
    if !valid_auto_offset_reset(get(SHARE_AUTO_OFFSET_RESET)) {
        return Err(invalid(format!(
            "invalid value '{}' for '{SHARE_AUTO_OFFSET_RESET}': expected earliest, latest or by_duration:<ISO-8601 duration>",
            get(SHARE_AUTO_OFFSET_RESET)
        )));
    }
    if session <= heartbeat {
        return Err(invalid(format!(
            "{CONSUMER_SESSION_TIMEOUT_MS} must be greater than {CONSUMER_HEARTBEAT_INTERVAL_MS}"
        )));
    }
    if share_session <= share_heartbeat {
        return Err(invalid(format!(
            "{SHARE_SESSION_TIMEOUT_MS} must be greater than {SHARE_HEARTBEAT_INTERVAL_MS}"
        )));
    }
    Ok(())
}

/// The overrides of every group that has any.
#[derive(Default)]
pub struct GroupConfigStore {
    overrides: RwLock<BTreeMap<String, BTreeMap<String, String>>>,
}

impl GroupConfigStore {
    /// Reads the `group-configs.json` an older single node kept in `meta_dir` (missing =
    /// none), for the import into the metadata log.
    pub fn read_legacy_file(&self, meta_dir: &std::path::Path) -> Result<(), BrokerError> {
        let path = meta_dir.join("group-configs.json");
        *self.overrides.write() = crate::storage::topics::read_json_file(&path)?;
        Ok(())
    }

    /// A group's overrides.
    pub fn get(&self, group: &str) -> BTreeMap<String, String> {
        self.overrides
            .read()
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// An override as an integer, if the group has one.
    pub fn get_i32(&self, group: &str, key: &str) -> Option<i32> {
        self.overrides
            .read()
            .get(group)
            .and_then(|c| c.get(key))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The metadata-log records of every group's overrides (a file being imported).
    pub fn image_records(&self) -> BTreeMap<String, Option<String>> {
        self.overrides
            .read()
            .iter()
            .map(|(g, c)| GroupConfigStore::image_record(g, c))
            .collect()
    }

    /// The metadata-log record that sets a group's overrides (None deletes them).
    pub fn image_record(
        group: &str,
        configs: &BTreeMap<String, String>,
    ) -> (String, Option<String>) {
        let value = (!configs.is_empty())
            .then(|| serde_json::to_string(configs).expect("string maps serialise"));
        (format!("{IMAGE_KEY_PREFIX}{group}"), value)
    }

    /// In a cluster: takes every group's overrides from the metadata image's configs.
    pub fn apply_image(&self, image_configs: &BTreeMap<String, String>) {
        let parsed: BTreeMap<String, BTreeMap<String, String>> = image_configs
            .iter()
            .filter_map(|(k, v)| {
                let group = k.strip_prefix(IMAGE_KEY_PREFIX)?;
                match serde_json::from_str(v) {
                    Ok(configs) => Some((group.to_string(), configs)),
                    Err(e) => {
                        tracing::error!(group, error = %e, "malformed group config record");
                        None
                    }
                }
            })
            .collect();
        *self.overrides.write() = parsed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn validation_follows_kafka() {
        let b = GroupConfig::default();
        let s = ShareConfig::default();
        let validate = |m: &BTreeMap<String, String>| validate(m, &b, &s);
        assert!(validate(&map(&[])).is_ok());
        assert!(validate(&map(&[(CONSUMER_SESSION_TIMEOUT_MS, "50000")])).is_ok());
        assert!(validate(&map(&[(SHARE_AUTO_OFFSET_RESET, "earliest")])).is_ok());
        assert!(validate(&map(&[(SHARE_AUTO_OFFSET_RESET, "by_duration:PT1H")])).is_ok());
        assert!(validate(&map(&[(SHARE_ISOLATION_LEVEL, "read_committed")])).is_ok());
        for bad in [
            map(&[("no.such.key", "1")]),
            map(&[(CONSUMER_SESSION_TIMEOUT_MS, "1000")]),
            map(&[(CONSUMER_SESSION_TIMEOUT_MS, "x")]),
            map(&[(CONSUMER_HEARTBEAT_INTERVAL_MS, "16000")]),
            map(&[(SHARE_AUTO_OFFSET_RESET, "sometimes")]),
            map(&[(SHARE_RECORD_LOCK_DURATION_MS, "1000")]),
            map(&[(SHARE_ISOLATION_LEVEL, "READ_COMMITTED")]),
        ] {
            let e = validate(&bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{bad:?}");
        }
    }

    #[test]
    fn share_lock_duration_bounds_are_the_brokers() {
        let mut s = ShareConfig::default();
        let lock = map(&[(SHARE_RECORD_LOCK_DURATION_MS, "1000")]);
        assert!(validate(&lock, &GroupConfig::default(), &s).is_err());
        s.min_record_lock_duration_ms = 1000;
        assert!(validate(&lock, &GroupConfig::default(), &s).is_ok());
    }

    #[test]
    fn image_records_round_trip() {
        let store = GroupConfigStore::default();
        let (k, v) =
            GroupConfigStore::image_record("g1", &map(&[(CONSUMER_SESSION_TIMEOUT_MS, "50000")]));
        let image = BTreeMap::from([(k, v.unwrap()), ("log.retention.ms".into(), "1".into())]);
        store.apply_image(&image);
        assert_eq!(
            store.get_i32("g1", CONSUMER_SESSION_TIMEOUT_MS),
            Some(50000)
        );
        assert!(store.get("g2").is_empty());
        let (_, none) = GroupConfigStore::image_record("g1", &BTreeMap::new());
        assert!(none.is_none());
    }
}
