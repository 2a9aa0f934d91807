//! Where ACLs and client quotas persist, the way group configs do: the metadata log, as
//! cluster-wide config records whose keys carry a prefix (`acl:`, `quota:`), so every
//! broker applies the same set and it survives restarts of any node. An older single
//! node's JSON file is read once, by the import (`cluster::import`).
//!
//! Thread-safe: the entries are behind a read-write lock.

use std::collections::BTreeMap;
use std::path::Path;

use parking_lot::RwLock;

use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};

/// Changes to a record set: Some sets a key, None deletes it.
pub type Changes = BTreeMap<String, Option<String>>;

pub struct RecordStore {
    /// Prefix of this set's keys among the metadata log's cluster-wide configs.
    prefix: &'static str,
    /// File name under `__cluster_metadata` an older single node kept this set in.
    file: &'static str,
    /// Keys without the prefix.
    entries: RwLock<BTreeMap<String, String>>,
}

impl RecordStore {
    pub fn new(prefix: &'static str, file: &'static str) -> RecordStore {
        RecordStore {
            prefix,
            file,
            entries: RwLock::new(BTreeMap::new()),
        }
    }

    /// Reads the file an older single node kept in `meta_dir` (missing = empty), for
    /// the import into the metadata log.
    pub fn read_legacy_file(&self, meta_dir: &Path) -> Result<(), BrokerError> {
        let path = meta_dir.join(self.file);
        let entries = match std::fs::read(&path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| {
                BrokerError::new(
                    ErrorCode::KafkaStorageError,
                    format!(
                        "{} is damaged ({e}); restore it from a backup or remove it",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(BrokerError::storage(&path, e)),
        };
        *self.entries.write() = entries;
        Ok(())
    }

    /// The metadata-log records that hold this set (a single node's file being imported).
    pub fn image_records(&self) -> Changes {
        self.entries
            .read()
            .iter()
            .map(|(k, v)| (format!("{}{k}", self.prefix), Some(v.clone())))
            .collect()
    }

    /// The file name under `__cluster_metadata` a single node kept this set in.
    pub fn file_name(&self) -> &'static str {
        self.file
    }

    pub fn entries(&self) -> BTreeMap<String, String> {
        self.entries.read().clone()
    }

    /// In a cluster: takes this set from the image's configs. Returns whether it changed.
    pub fn apply_image(&self, image_configs: &BTreeMap<String, String>) -> bool {
        let next: BTreeMap<String, String> = image_configs
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(self.prefix)?.to_string(), v.clone())))
            .collect();
        let mut entries = self.entries.write();
        if *entries == next {
            return false;
        }
        *entries = next;
        true
    }

    /// Applies `changes` durably through the metadata log, waiting until this broker's
    /// image has them.
    pub fn commit(&self, broker: &Broker, changes: Changes) -> Result<(), BrokerError> {
        if changes.is_empty() {
            return Ok(());
        }
        let cluster = broker.cluster();
        let records: Changes = changes
            .into_iter()
            .map(|(k, v)| (format!("{}{k}", self.prefix), v))
            .collect();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(cluster.write_config_records(records))
        })?;
        self.apply_image(&cluster.current_image().broker_configs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_keys_are_filtered_by_prefix() {
        let store = RecordStore::new("acl:", "acls.json");
        let image = BTreeMap::from([
            ("acl:a".to_string(), "1".to_string()),
            ("group:g".to_string(), "{}".to_string()),
            ("log.retention.ms".to_string(), "5".to_string()),
        ]);
        assert!(store.apply_image(&image));
        assert!(!store.apply_image(&image));
        assert_eq!(
            store.entries(),
            BTreeMap::from([("a".to_string(), "1".to_string())])
        );
    }

    #[test]
    fn local_file_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new("acl:", "acls.json");
        store.read_legacy_file(dir.path()).unwrap();
        assert!(store.entries().is_empty());
        std::fs::write(dir.path().join("acls.json"), b"{not json").unwrap();
        let e = store.read_legacy_file(dir.path()).unwrap_err();
        assert!(e.message.contains("acls.json"), "{}", e.message);
    }
}
