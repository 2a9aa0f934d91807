//! [`Membership`]: this client as a member of a consumer group, with the consumer
//! protocol of KIP-848 (ConsumerGroupHeartbeat): the coordinator assigns partitions, the
//! member heartbeats at the interval it is told, reports the partitions it owns, and
//! commits offsets with its member id and epoch, so it shows in `groups describe` like any
//! Java or librdkafka consumer.
//!
//! Not thread-safe: one task drives a member (heartbeat, commit, leave).

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::groups::commit_offsets;
use crate::Client;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::{ApiKey, ConsumerGroupHeartbeatRequest, GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::time::Duration;

pub const CONSUMER_GROUP_HEARTBEAT: i16 = 0;
/// The epoch a member sends to leave the group.
const LEAVE_EPOCH: i32 = -1;

/// A member of one consumer group, subscribed to a list of topics.
pub struct Membership {
    client: Client,
    group: String,
    topics: Vec<String>,
    coordinator: Option<Connection>,
    member_id: String,
    member_epoch: i32,
    heartbeat_interval: Duration,
    /// The latest assignment, by topic id.
    assignment: Vec<(uuid::Uuid, Vec<i32>)>,
    rebalance_timeout_ms: i32,
}

impl Membership {
    pub fn new(client: Client, group: &str, topics: Vec<String>) -> Membership {
        Membership {
            client,
            group: group.to_string(),
            topics,
            coordinator: None,
            member_id: String::new(),
            member_epoch: 0,
            heartbeat_interval: Duration::from_secs(5),
            assignment: Vec::new(),
            rebalance_timeout_ms: 30_000,
        }
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn member_epoch(&self) -> i32 {
        self.member_epoch
    }

    /// How long to wait before the next [`Membership::heartbeat`], as the coordinator said.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    async fn coordinator(&mut self) -> Result<Connection> {
        match &self.coordinator {
            Some(c) if !c.is_closed() => Ok(c.clone()),
            _ => {
                let c = self.client.group_coordinator(&self.group).await?;
                c.require(ApiKey::ConsumerGroupHeartbeat, CONSUMER_GROUP_HEARTBEAT)?;
                self.coordinator = Some(c.clone());
                Ok(c)
            }
        }
    }

    async fn send(&mut self, epoch: i32, full: bool) -> Result<()> {
        let conn = self.coordinator().await?;
        let owned: Vec<TopicPartitions> = self
            .assignment
            .iter()
            .map(|(id, ps)| {
                TopicPartitions::default()
                    .with_topic_id(*id)
                    .with_partitions(ps.clone())
            })
            .collect();
        let mut request = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(-1)
            .with_topic_partitions(Some(owned));
        // The first heartbeat (and one after a fence) carries the whole subscription.
        if full {
            request = request
                .with_rebalance_timeout_ms(self.rebalance_timeout_ms)
                .with_subscribed_topic_names(Some(
                    self.topics
                        .iter()
                        .map(|t| TopicName(StrBytes::from_string(t.clone())))
                        .collect(),
                ));
        }
        let response = match conn.send(&request, CONSUMER_GROUP_HEARTBEAT).await {
            Ok(r) => r,
            Err(e) => {
                self.coordinator = None;
                return Err(e);
            }
        };
        if let Err(e) = Error::check(
            response.error_code,
            || format!("heartbeat to group {}", self.group),
            response.error_message.as_ref().map(|m| m.to_string()),
        ) {
            if matches!(
                e.kafka_error(),
                Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable)
            ) {
                self.coordinator = None;
            }
            return Err(e);
        }
        if let Some(id) = response.member_id {
            if !id.is_empty() {
                self.member_id = id.to_string();
            }
        }
        self.member_epoch = response.member_epoch;
        if response.heartbeat_interval_ms > 0 {
            self.heartbeat_interval = Duration::from_millis(response.heartbeat_interval_ms as u64);
        }
        if let Some(a) = response.assignment {
            self.assignment = a
                .topic_partitions
                .into_iter()
                .map(|tp| (tp.topic_id, tp.partitions))
                .collect();
        }
        Ok(())
    }

    /// Heartbeats (joining first if needed) and returns the assignment by topic name.
    /// A fenced member (UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH) rejoins with epoch 0 and
    /// an empty assignment, as Kafka's consumer does; the caller then re-reads positions.
    pub async fn heartbeat(&mut self) -> Result<BTreeMap<String, Vec<i32>>> {
        let joining = self.member_epoch == 0;
        match self.send(self.member_epoch, joining).await {
            Err(e)
                if matches!(
                    e.kafka_error(),
                    Some(ResponseError::UnknownMemberId | ResponseError::FencedMemberEpoch)
                ) =>
            {
                self.assignment.clear();
                self.member_epoch = 0;
                self.send(0, true).await?;
            }
            other => other?,
        }
        self.assignment_by_name().await
    }

    /// The current assignment keyed by topic name (ids resolved through metadata).
    async fn assignment_by_name(&self) -> Result<BTreeMap<String, Vec<i32>>> {
        let mut out = BTreeMap::new();
        if self.assignment.is_empty() {
            return Ok(out);
        }
        let metadata = self
            .client
            .metadata(Some(self.topics.as_slice()), false)
            .await?;
        for (id, ps) in &self.assignment {
            let id = id.to_string();
            if let Some(t) = metadata.topics.iter().find(|t| t.topic_id == id) {
                let mut ps = ps.clone();
                ps.sort_unstable();
                out.insert(t.name.clone(), ps);
            }
        }
        Ok(out)
    }

    /// Commits offsets (topic, partition, next offset to read) as this member.
    pub async fn commit(&mut self, offsets: &[(String, i32, i64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let conn = self.coordinator().await?;
        commit_offsets(
            &conn,
            &self.group,
            &self.member_id,
            self.member_epoch,
            offsets,
        )
        .await
    }

    /// Leaves the group, so its partitions go to other members at once.
    pub async fn leave(&mut self) -> Result<()> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        self.send(LEAVE_EPOCH, false).await
    }
}
