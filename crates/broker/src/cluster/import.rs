//! Upgrading a single node's data dir from before the one-voter quorum: the files it kept
//! in `<first log dir>/__cluster_metadata/` (topics, ACLs, client quotas, SCRAM
//! credentials, group configs, cluster links) become metadata records once, at the first
//! start, and each file is renamed `<name>.imported` and never read or written again.
//! Partition data, and with it committed offsets, groups and transactions (which live in
//! `__consumer_offsets` and `__transaction_state`), stays where it is: the imported
//! topics keep their ids and partition counts, so reconcile reopens the same directories.
//!
//! A crash between the records and the rename is harmless: a topic already in the image is
//! not created again, and config records are idempotent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Cluster;
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};
use crate::storage::topics::{read_json_file, MetadataFile};

const TOPICS_FILE: &str = "topics.json";

fn meta_dir(broker: &Broker) -> PathBuf {
    broker.config.log_dirs[0].join("__cluster_metadata")
}

/// Imports the single-node files into this node's one-voter quorum (the node is
/// registered and unfenced, so it can be every imported partition's leader).
pub async fn run(broker: &Broker, cluster: &Cluster) -> Result<(), BrokerError> {
    let dir = meta_dir(broker);
    import_topics(broker, cluster, &dir).await?;
    let (records, files) = config_records(&dir)?;
    cluster.write_config_records(records).await?;
    for file in files {
        set_aside_file(&file)?;
        tracing::info!(file = %file.display(), "imported into the metadata log");
    }
    Ok(())
}

/// A node of a configured cluster takes everything from the quorum: an old `topics.json`
/// there was only a local copy of the image, so it is set aside unread.
pub fn set_aside(broker: &Broker) {
    let path = meta_dir(broker).join(TOPICS_FILE);
    if path.exists() {
        match set_aside_file(&path) {
            Ok(()) => {
                tracing::info!(file = %path.display(), "set aside: topics come from the metadata log")
            }
            Err(e) => tracing::warn!(error = %e, "cannot set aside the old topics file"),
        }
    }
}

fn set_aside_file(path: &Path) -> Result<(), BrokerError> {
    let mut to = path.as_os_str().to_owned();
    to.push(".imported");
    std::fs::rename(path, &to).map_err(|e| BrokerError::storage(path, e))
}

async fn import_topics(broker: &Broker, cluster: &Cluster, dir: &Path) -> Result<(), BrokerError> {
    let path = dir.join(TOPICS_FILE);
    if !path.exists() {
        return Ok(());
    }
    let file: MetadataFile = read_json_file(&path)?;
    let me = broker.node_id();
    let image = cluster.current_image();
    let new: Vec<runnel_meta::NewTopic> = file
        .topics
        .iter()
        .filter(|t| !image.topics.contains_key(&t.name))
        .map(|t| runnel_meta::NewTopic {
            id: Some(t.id),
            name: t.name.clone(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: Some(vec![vec![me]; t.partitions.max(0) as usize]),
            configs: t.configs.clone(),
        })
        .collect();
    if !new.is_empty() {
        let results = cluster.controller.create_topics(new.clone(), false).await;
        for (t, r) in new.iter().zip(results) {
            if let Err(e) = r {
                return Err(BrokerError::new(
                    ErrorCode::KafkaStorageError,
                    format!(
                        "cannot import topic '{}' from {} into the metadata log: {e}",
                        t.name,
                        path.display()
                    ),
                ));
            }
        }
        let all_in = |img: &runnel_meta::ClusterImage| {
            file.topics.iter().all(|t| img.topics.contains_key(&t.name))
        };
        if !cluster.wait_for_image(all_in).await {
            return Err(BrokerError::new(
                ErrorCode::KafkaStorageError,
                format!(
                    "importing {}: the metadata image did not show the topics in time; restart to retry",
                    path.display()
                ),
            ));
        }
        tracing::info!(topics = new.len(), "imported the single-node topics");
    }
    set_aside_file(&path)
}

/// Cluster-wide config records (key, value; None deletes).
type Records = BTreeMap<String, Option<String>>;

/// The records of every single-node config file present, and those files.
fn config_records(dir: &Path) -> Result<(Records, Vec<PathBuf>), BrokerError> {
    let mut records = BTreeMap::new();
    let mut files = Vec::new();
    let mut take = |name: &str, found: Records| {
        let path = dir.join(name);
        if path.exists() {
            records.extend(found);
            files.push(path);
        }
    };
    for store in [
        crate::authz::acl_store(),
        crate::server::quota::quota_store(),
    ] {
        store.read_legacy_file(dir)?;
        take(store.file_name(), store.image_records());
    }
    let scram = crate::server::security::scram::ScramStore::default();
    scram.read_legacy_file(dir)?;
    take("scram-credentials.json", scram.image_records());
    let groups = crate::coordinators::groups::group_configs::GroupConfigStore::default();
    groups.read_legacy_file(dir)?;
    take("group-configs.json", groups.image_records());
    let links = crate::mirror::store::LinkStore::default();
    links.read_legacy_file(dir)?;
    take("cluster-links.json", links.image_records());
    Ok((records, files))
}
