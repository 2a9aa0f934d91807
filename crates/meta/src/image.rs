//! The metadata records (what the controller decides) and the image they build (what
//! every broker acts on). Records are applied in log order; applying is deterministic, so
//! every node that applied the same prefix holds the same image.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// No leader: every in-sync replica is fenced (the partition is offline).
pub const NO_LEADER: i32 = -1;

/// One of a broker's listeners as clients reach it (Kafka's BrokerEndpoint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    /// The listener name (`PLAINTEXT`, `CLIENT`, ...).
    pub name: String,
    pub host: String,
    pub port: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerImage {
    pub id: i32,
    /// The inter-broker listener's endpoint (followers fetch from it).
    pub host: String,
    pub port: i32,
    /// Every broker listener's endpoint; empty in records written before listeners
    /// were named (then `host:port` serves every client).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<BrokerEndpoint>,
    pub rack: Option<String>,
    /// Changes at every registration: a restarted broker is a new incarnation.
    pub epoch: i64,
    pub incarnation: Uuid,
    /// Missed its heartbeats (or shut down): leads nothing, is in no ISR it can be taken
    /// out of, and is not listed to clients (but for a moment after it was fenced: the
    /// broker's `Cluster::listed_brokers`).
    pub fenced: bool,
}

impl BrokerImage {
    /// The (host, port) of `listener`, for a client that came in on that listener:
    /// Kafka tells each client the endpoints of its own listener. A broker without that
    /// listener is reached at its inter-broker endpoint.
    pub fn endpoint(&self, listener: &str) -> (&str, i32) {
        self.endpoints
            .iter()
            .find(|e| e.name == listener)
            .map_or((self.host.as_str(), self.port), |e| {
                (e.host.as_str(), e.port)
            })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// Assigned replicas; the first is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    /// Bumped on every leader change; stamped on the batches the leader appends.
    pub leader_epoch: i32,
    /// Bumped on every change of this partition (ISR included): AlterPartition must name
    /// the current one, so a stale leader cannot overwrite a newer decision.
    pub partition_epoch: i32,
    /// During a reassignment (Kafka's AddingReplicas): replicas of the target set that are
    /// not in the original set. They are in `replicas` until the reassignment completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<i32>,
    /// During a reassignment (Kafka's RemovingReplicas): replicas of the original set that
    /// the target drops. They leave `replicas` when the reassignment completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<i32>,
}

impl PartitionImage {
    /// A new partition on `replicas`: all in sync, the first leads, epochs 0.
    pub fn new(replicas: Vec<i32>) -> Self {
        PartitionImage {
            leader: replicas.first().copied().unwrap_or(NO_LEADER),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    /// A reassignment is under way.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition will have once its reassignment completes (its replicas
    /// when there is none).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }

    /// The replicas it had before the reassignment started (its replicas when there is none).
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    /// Topic-level overrides only (as in Kafka's ConfigRecord).
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionImage>,
}

/// One entry of the metadata log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// Written once, by the first leader of a new quorum.
    InitCluster {
        cluster_id: String,
    },
    RegisterBroker(BrokerImage),
    FenceBroker {
        id: i32,
        epoch: i64,
    },
    UnfenceBroker {
        id: i32,
        epoch: i64,
    },
    /// A broker left for good (not used for restarts).
    UnregisterBroker {
        id: i32,
    },
    CreateTopic(TopicImage),
    DeleteTopic {
        id: Uuid,
    },
    /// New partitions appended to a topic (CreatePartitions).
    AddPartitions {
        topic_id: Uuid,
        partitions: Vec<PartitionImage>,
    },
    /// The whole new state of one partition (leader, ISR, replicas, epochs).
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        state: PartitionImage,
    },
    /// Replaces a topic's overrides.
    TopicConfigs {
        topic_id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// Cluster-wide dynamic broker configs (None deletes the key).
    BrokerConfig {
        key: String,
        value: Option<String>,
    },
}

/// What the metadata log says the cluster is, after applying records up to
/// `applied_index`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterImage {
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<i32, BrokerImage>,
    pub topics: BTreeMap<String, TopicImage>,
    pub broker_configs: BTreeMap<String, String>,
    /// Raft log index of the last applied record (0 = nothing yet).
    pub applied_index: u64,
}

impl ClusterImage {
    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.values().find(|t| t.id == id)
    }

    fn topic_by_id_mut(&mut self, id: Uuid) -> Option<&mut TopicImage> {
        self.topics.values_mut().find(|t| t.id == id)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionImage> {
        let p = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(p)
    }

    /// Brokers clients may be sent to.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Partitions with a reassignment under way (ListPartitionReassignments).
    pub fn reassignments(&self) -> impl Iterator<Item = (&str, i32, &PartitionImage)> {
        self.topics.values().flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.is_reassigning())
                .map(move |(i, p)| (t.name.as_str(), i as i32, p))
        })
    }

    pub fn is_live(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// Applies one record. Records that name something unknown (a topic deleted meanwhile)
    /// are ignored: the controller validated them against an image that may have moved on.
    pub fn apply(&mut self, index: u64, record: &MetadataRecord) {
        self.applied_index = index;
        match record {
            MetadataRecord::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
            }
            MetadataRecord::RegisterBroker(b) => {
                self.brokers.insert(b.id, b.clone());
            }
            MetadataRecord::FenceBroker { id, epoch } => {
                if let Some(b) = self.brokers.get_mut(id).filter(|b| b.epoch == *epoch) {
                    b.fenced = true;
                }
            }
            MetadataRecord::UnfenceBroker { id, epoch } => {
                if let Some(b) = self.brokers.get_mut(id).filter(|b| b.epoch == *epoch) {
                    b.fenced = false;
                }
            }
            MetadataRecord::UnregisterBroker { id } => {
                self.brokers.remove(id);
            }
            MetadataRecord::CreateTopic(t) => {
                self.topics.insert(t.name.clone(), t.clone());
            }
            MetadataRecord::DeleteTopic { id } => {
                self.topics.retain(|_, t| t.id != *id);
            }
            MetadataRecord::AddPartitions {
                topic_id,
                partitions,
            } => {
                if let Some(t) = self.topic_by_id_mut(*topic_id) {
                    t.partitions.extend(partitions.iter().cloned());
                }
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                state,
            } => {
                if let Some(slot) = self
                    .topic_by_id_mut(*topic_id)
                    .and_then(|t| t.partitions.get_mut(usize::try_from(*partition).ok()?))
                {
                    *slot = state.clone();
                }
            }
            MetadataRecord::TopicConfigs { topic_id, configs } => {
                if let Some(t) = self.topic_by_id_mut(*topic_id) {
                    t.configs = configs.clone();
                }
            }
            MetadataRecord::BrokerConfig { key, value } => match value {
                Some(v) => {
                    self.broker_configs.insert(key.clone(), v.clone());
                }
                None => {
                    self.broker_configs.remove(key);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_change_replaces_state_and_unknown_topics_are_ignored() {
        let id = Uuid::new_v4();
        let p = PartitionImage::new(vec![1, 2, 3]);
        let mut image = ClusterImage::default();
        image.apply(
            1,
            &MetadataRecord::CreateTopic(TopicImage {
                name: "t".into(),
                id,
                configs: BTreeMap::new(),
                partitions: vec![p.clone()],
            }),
        );
        let moved = PartitionImage {
            isr: vec![2, 3],
            leader: 2,
            leader_epoch: 1,
            partition_epoch: 1,
            ..p
        };
        image.apply(
            2,
            &MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                state: moved.clone(),
            },
        );
        image.apply(
            3,
            &MetadataRecord::PartitionChange {
                topic_id: Uuid::new_v4(),
                partition: 0,
                state: moved.clone(),
            },
        );
        assert_eq!(image.partition("t", 0), Some(&moved));
        assert_eq!(image.applied_index, 3);
    }

    #[test]
    fn partition_json_without_reassignment_fields_loads() {
        let old = r#"{"replicas":[1,2],"isr":[1],"leader":1,"leader_epoch":2,"partition_epoch":3}"#;
        let p: PartitionImage = serde_json::from_str(old).unwrap();
        assert!(!p.is_reassigning());
        assert_eq!(serde_json::to_string(&p).unwrap(), old);
    }
}
