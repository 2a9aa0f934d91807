//! Where ACLs and client quotas persist, the way group configs do: on a single node a
//! JSON file in `<first log dir>/__cluster_metadata/`; in a cluster the metadata log, as
//! cluster-wide config records whose keys carry a prefix (`acl:`, `quota:`), so every
//! broker applies the same set and it survives restarts of any node.
//!
//! Thread-safe: the entries are behind a read-write lock; a single node's writes are
//! serialized by the write lock held across the file write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};

/// Changes to a record set: Some sets a key, None deletes it.
pub type Changes = BTreeMap<String, Option<String>>;

pub struct RecordStore {
    /// Prefix of this set's keys among the metadata log's cluster-wide configs.
    prefix: &'static str,
    /// File name under `__cluster_metadata` on a single node.
    file: &'static str,
    path: RwLock<Option<PathBuf>>,
    /// Keys without the prefix.
    entries: RwLock<BTreeMap<String, String>>,
}

impl RecordStore {
    pub fn new(prefix: &'static str, file: &'static str) -> RecordStore {
        RecordStore {
            prefix,
            file,
            path: RwLock::new(None),
            entries: RwLock::new(BTreeMap::new()),
        }
    }

    /// Single node: reads the file in `meta_dir` (missing = empty).
    pub fn open_local(&self, meta_dir: &Path) -> Result<(), BrokerError> {
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
        *self.path.write() = Some(path);
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

    /// Applies `changes` durably: the file on a single node, the metadata log in a
    /// cluster (waiting until this broker's image has them).
    pub fn commit(&self, broker: &Broker, changes: Changes) -> Result<(), BrokerError> {
        if changes.is_empty() {
            return Ok(());
        }
        if let Some(cluster) = broker.cluster() {
            let records: Changes = changes
                .into_iter()
                .map(|(k, v)| (format!("{}{k}", self.prefix), v))
                .collect();
            let done = |img: &runnel_meta::ClusterImage| {
                records
                    .iter()
                    .all(|(k, v)| img.broker_configs.get(k) == v.as_ref())
            };
            let image = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    cluster
                        .controller
                        .alter_broker_configs(records.clone())
                        .await
                        .map_err(crate::cluster::controller_error)?;
                    cluster.wait_for_image(done).await;
                    Ok::<_, BrokerError>(cluster.image.borrow().clone())
                })
            })?;
            self.apply_image(&image.broker_configs);
            return Ok(());
        }
        let mut entries = self.entries.write();
        let mut next = entries.clone();
        for (k, v) in changes {
            match v {
                Some(v) => next.insert(k, v),
                None => next.remove(&k),
            };
        }
        if let Some(path) = &*self.path.read() {
            let raw = serde_json::to_vec_pretty(&next).expect("string maps serialise");
            crate::topics::write_file_atomically(path, &raw)?;
        }
        *entries = next;
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
        store.open_local(dir.path()).unwrap();
        assert!(store.entries().is_empty());
        std::fs::write(dir.path().join("acls.json"), b"{not json").unwrap();
        let e = store.open_local(dir.path()).unwrap_err();
        assert!(e.message.contains("acls.json"), "{}", e.message);
    }
}
