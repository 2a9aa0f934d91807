//! Consumer-group administration, as `kafka-consumer-groups` and the admin clients do it:
//! find a group's coordinator, list, describe (classic groups with DescribeGroups and the
//! consumer protocol's assignment bytes decoded; KIP-848 groups with
//! ConsumerGroupDescribe), fetch committed offsets, commit offsets from outside the group
//! (generation -1, no member id: the coordinator accepts that only for an empty group), and
//! delete groups. `member.rs` (`Membership`) is the one way this client joins a group itself (KIP-848).

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::Client;
use bytes::Bytes;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerProtocolAssignment, DeleteGroupsRequest,
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;

/// The versions of the group APIs this client speaks (see [`crate::versions`]).
pub const FIND_COORDINATOR: i16 = 4;
pub const LIST_GROUPS: i16 = 4;
pub const DESCRIBE_GROUPS: i16 = 5;
pub const CONSUMER_GROUP_DESCRIBE: i16 = 0;
pub const OFFSET_FETCH: i16 = 8;
pub const OFFSET_COMMIT: i16 = 8;
pub const DELETE_GROUPS: i16 = 2;
pub const SHARE_GROUP_DESCRIBE: i16 = 1;
pub const DESCRIBE_SHARE_GROUP_OFFSETS: i16 = 0;

/// A share-partition's start offset (DescribeShareGroupOffsets): every record below it
/// was accepted, rejected or archived; -1 when the group has not read the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareStartOffset {
    pub topic: String,
    pub partition: i32,
    pub start_offset: i64,
}

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
    /// "classic" or "consumer" when the broker says (ListGroups v5), "share" for a share
    /// group; empty otherwise.
    pub group_type: String,
}

/// A member of a group and the partitions it is assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// topic -> partitions, sorted.
    pub assignment: BTreeMap<String, Vec<i32>>,
    /// The member epoch (consumer protocol only).
    pub member_epoch: Option<i32>,
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    /// "classic" or "consumer" (KIP-848).
    pub group_type: String,
    pub protocol_type: String,
    /// The assignor: the classic group's chosen protocol, or the server-side assignor.
    pub assignor: String,
    /// The group epoch (consumer protocol only).
    pub epoch: Option<i32>,
    pub members: Vec<GroupMember>,
}

impl GroupDescription {
    /// Whether the group has no members (Kafka's Empty or Dead): only then may offsets be
    /// reset or the group be deleted.
    pub fn is_inactive(&self) -> bool {
        self.members.is_empty() && matches!(self.state.as_str(), "Empty" | "Dead" | "")
    }

    /// The member assigned `topic`/`partition`, if any.
    pub fn owner(&self, topic: &str, partition: i32) -> Option<&GroupMember> {
        self.members.iter().find(|m| {
            m.assignment
                .get(topic)
                .is_some_and(|ps| ps.contains(&partition))
        })
    }
}

/// A committed offset of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: Option<String>,
}

fn s(b: &StrBytes) -> String {
    b.as_str().to_string()
}

fn group_id(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

/// OffsetCommit to `conn` (the group's coordinator) as member `member_id` at
/// `member_epoch` (empty and -1: from outside the group).
pub(crate) async fn commit_offsets(
    conn: &Connection,
    group: &str,
    member_id: &str,
    member_epoch: i32,
    offsets: &[(String, i32, i64)],
) -> Result<()> {
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (topic, partition, offset) in offsets {
        by_topic.entry(topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_static_str(""))),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(member_epoch)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let response = conn.send(&request, OFFSET_COMMIT).await?;
    for t in response.topics {
        for p in t.partitions {
            Error::check(
                p.error_code,
                || {
                    format!(
                        "commit the offset of group {group} for {}/{}",
                        t.name.0.as_str(),
                        p.partition_index
                    )
                },
                None,
            )?;
        }
    }
    Ok(())
}

/// Decodes a classic group member's assignment (the consumer protocol's
/// ConsumerProtocolAssignment: a version, then topics and partitions).
pub fn decode_assignment(bytes: &[u8]) -> Result<BTreeMap<String, Vec<i32>>> {
    let mut out = BTreeMap::new();
    if bytes.is_empty() {
        return Ok(out);
    }
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.len() < 2 {
        return Err(Error::Records(
            "a group assignment shorter than its version".into(),
        ));
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    // Versions above 3 keep the v3 layout in front (new fields would be tagged).
    let a = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3))
        .map_err(|e| Error::Records(format!("cannot decode a group assignment: {e}")))?;
    for t in a.assigned_partitions {
        let mut ps = t.partitions;
        ps.sort_unstable();
        out.entry(t.topic.0.as_str().to_string())
            .or_insert_with(Vec::new)
            .extend(ps);
    }
    Ok(out)
}

impl Client {
    /// A connection to the coordinator of `group`.
    pub async fn group_coordinator(&self, group: &str) -> Result<Connection> {
        self.coordinator(0, group, "group").await
    }

    /// A connection to the coordinator of transactional id `id`.
    pub async fn transaction_coordinator(&self, id: &str) -> Result<Connection> {
        self.coordinator(1, id, "transactional id").await
    }

    /// FindCoordinator for `key` (`key_type` 0: a group, 1: a transactional id).
    async fn coordinator(&self, key_type: i8, key: &str, what: &str) -> Result<Connection> {
        let conn = self.bootstrap_connection().await?;
        let mut attempt = 0;
        loop {
            let request = FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_coordinator_keys(vec![StrBytes::from_string(key.to_string())]);
            let response = conn.send(&request, FIND_COORDINATOR).await?;
            let c = response
                .coordinators
                .into_iter()
                .next()
                .ok_or_else(|| Error::Protocol {
                    addr: conn.addr().to_string(),
                    api: ApiKey::FindCoordinator,
                    detail: "no coordinator in the response".into(),
                })?;
            match Error::check(
                c.error_code,
                || format!("find the coordinator of {what} {key}"),
                c.error_message.as_ref().map(s),
            ) {
                Ok(()) => {}
                Err(e) if e.is_retriable() && attempt < self.config().retries => {
                    attempt += 1;
                    tokio::time::sleep(self.config().retry_backoff).await;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let addr = format!("{}:{}", c.host.as_str(), c.port);
            if addr == conn.addr() {
                return Ok(conn);
            }
            return Connection::connect(&addr, &self.config().connection).await;
        }
    }

    /// Every group on every broker (ListGroups), sorted by id. `states` filters by state
    /// name (Kafka's: Stable, Empty, ...), as the broker does it.
    pub async fn list_groups(&self, states: &[String]) -> Result<Vec<GroupListing>> {
        let metadata = self.metadata(Some(&[]), false).await?;
        let mut addrs: Vec<String> = metadata.brokers.iter().map(|b| b.addr()).collect();
        let bootstrap = self.bootstrap_connection().await?;
        if addrs.is_empty() {
            addrs.push(bootstrap.addr().to_string());
        }
        let mut out = Vec::new();
        for addr in addrs {
            let conn = if addr == bootstrap.addr() {
                bootstrap.clone()
            } else {
                Connection::connect(&addr, &self.config().connection).await?
            };
            let request = ListGroupsRequest::default().with_states_filter(
                states
                    .iter()
                    .map(|st| StrBytes::from_string(st.clone()))
                    .collect(),
            );
            let response = conn.send(&request, LIST_GROUPS).await?;
            Error::check(
                response.error_code,
                || format!("list groups on {addr}"),
                None,
            )?;
            out.extend(response.groups.into_iter().map(|g| {
                // ListGroups v4 carries no type; a share group says so by its protocol.
                let group_type = if g.group_type.is_empty() && g.protocol_type.as_str() == "share" {
                    "share".to_string()
                } else {
                    s(&g.group_type)
                };
                GroupListing {
                    group_id: s(&g.group_id.0),
                    protocol_type: s(&g.protocol_type),
                    state: s(&g.group_state),
                    group_type,
                }
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    /// Describes one group: with ConsumerGroupDescribe when it is a consumer-protocol
    /// (KIP-848) group, else with DescribeGroups. A group that does not exist is reported
    /// as Kafka does, in state Dead with no members.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let conn = self.group_coordinator(group).await?;
        if conn
            .require(ApiKey::ConsumerGroupDescribe, CONSUMER_GROUP_DESCRIBE)
            .is_ok()
        {
            let request =
                ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
            let response = conn.send(&request, CONSUMER_GROUP_DESCRIBE).await?;
            if let Some(g) = response.groups.into_iter().next() {
                if g.error_code == 0 {
                    return Ok(GroupDescription {
                        group_id: s(&g.group_id.0),
                        state: consumer_state_name(g.group_state.as_str()),
                        group_type: "consumer".into(),
                        protocol_type: "consumer".into(),
                        assignor: s(&g.assignor_name),
                        epoch: Some(g.group_epoch),
                        members: g
                            .members
                            .into_iter()
                            .map(|m| GroupMember {
                                member_id: s(&m.member_id),
                                instance_id: m.instance_id.as_ref().map(s),
                                client_id: s(&m.client_id),
                                host: s(&m.client_host),
                                assignment: m
                                    .assignment
                                    .topic_partitions
                                    .into_iter()
                                    .map(|t| {
                                        let mut ps = t.partitions;
                                        ps.sort_unstable();
                                        (t.topic_name.0.as_str().to_string(), ps)
                                    })
                                    .collect(),
                                member_epoch: Some(m.member_epoch),
                            })
                            .collect(),
                    });
                }
                // GROUP_ID_NOT_FOUND: no such consumer group, or a classic one.
                let code = g.error_code;
                if code != ResponseError::GroupIdNotFound.code() {
                    Error::check(
                        code,
                        || format!("describe group {group}"),
                        g.error_message.as_ref().map(s),
                    )?;
                }
            }
        }
        let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
        let response = conn.send(&request, DESCRIBE_GROUPS).await?;
        let g = response
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol {
                addr: conn.addr().to_string(),
                api: ApiKey::DescribeGroups,
                detail: format!("no result for group {group}"),
            })?;
        Error::check(
            g.error_code,
            || format!("describe group {group}"),
            g.error_message.as_ref().map(s),
        )?;
        let consumer = g.protocol_type.as_str() == "consumer" || g.protocol_type.is_empty();
        let mut members = Vec::new();
        for m in g.members {
            let assignment = if consumer {
                decode_assignment(&m.member_assignment)
                    .map_err(|e| Error::Records(format!("member {}: {e}", m.member_id.as_str())))?
            } else {
                BTreeMap::new()
            };
            members.push(GroupMember {
                member_id: s(&m.member_id),
                instance_id: m.group_instance_id.as_ref().map(s),
                client_id: s(&m.client_id),
                host: s(&m.client_host),
                assignment,
                member_epoch: None,
            });
        }
        Ok(GroupDescription {
            group_id: s(&g.group_id.0),
            state: s(&g.group_state),
            group_type: "classic".into(),
            protocol_type: s(&g.protocol_type),
            assignor: s(&g.protocol_data),
            epoch: None,
            members,
        })
    }

    /// A share group (KIP-932) with ShareGroupDescribe and its share-partitions' start
    /// offsets with DescribeShareGroupOffsets; None when the broker has no share groups or
    /// `group` is not one.
    pub async fn describe_share_group(
        &self,
        group: &str,
    ) -> Result<Option<(GroupDescription, Vec<ShareStartOffset>)>> {
        use kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup;
        use kafka_protocol::messages::{
            DescribeShareGroupOffsetsRequest, ShareGroupDescribeRequest,
        };
        let conn = self.group_coordinator(group).await?;
        if conn
            .require(ApiKey::ShareGroupDescribe, SHARE_GROUP_DESCRIBE)
            .is_err()
        {
            return Ok(None);
        }
        let request = ShareGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
        let response = conn.send(&request, SHARE_GROUP_DESCRIBE).await?;
        let Some(g) = response.groups.into_iter().next() else {
            return Ok(None);
        };
        if g.error_code == ResponseError::GroupIdNotFound.code() {
            return Ok(None);
        }
        Error::check(
            g.error_code,
            || format!("describe share group {group}"),
            g.error_message.as_ref().map(s),
        )?;
        let description = GroupDescription {
            group_id: s(&g.group_id.0),
            state: s(&g.group_state),
            group_type: "share".into(),
            protocol_type: "share".into(),
            assignor: s(&g.assignor_name),
            epoch: Some(g.group_epoch),
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: s(&m.member_id),
                    instance_id: None,
                    client_id: s(&m.client_id),
                    host: s(&m.client_host),
                    assignment: m
                        .assignment
                        .topic_partitions
                        .into_iter()
                        .map(|t| (t.topic_name.0.as_str().to_string(), t.partitions))
                        .collect(),
                    member_epoch: Some(m.member_epoch),
                })
                .collect(),
        };
        let request = DescribeShareGroupOffsetsRequest::default().with_groups(vec![
            DescribeShareGroupOffsetsRequestGroup::default()
                .with_group_id(group_id(group))
                .with_topics(None),
        ]);
        let response = conn.send(&request, DESCRIBE_SHARE_GROUP_OFFSETS).await?;
        let mut offsets = Vec::new();
        for g in response.groups {
            Error::check(
                g.error_code,
                || format!("describe the offsets of share group {group}"),
                g.error_message.as_ref().map(s),
            )?;
            for t in g.topics {
                for p in t.partitions {
                    offsets.push(ShareStartOffset {
                        topic: t.topic_name.0.as_str().to_string(),
                        partition: p.partition_index,
                        start_offset: p.start_offset,
                    });
                }
            }
        }
        Ok(Some((description, offsets)))
    }

    /// Every offset `group` has committed, sorted by topic and partition.
    pub async fn committed_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>> {
        let conn = self.group_coordinator(group).await?;
        let request = OffsetFetchRequest::default()
            .with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(group_id(group))
                .with_topics(None)])
            .with_require_stable(false);
        let response = conn.send(&request, OFFSET_FETCH).await?;
        let g = response
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol {
                addr: conn.addr().to_string(),
                api: ApiKey::OffsetFetch,
                detail: format!("no result for group {group}"),
            })?;
        Error::check(
            g.error_code,
            || format!("fetch the offsets of group {group}"),
            None,
        )?;
        let mut out = Vec::new();
        for t in g.topics {
            for p in t.partitions {
                let topic = t.name.0.as_str().to_string();
                Error::check(
                    p.error_code,
                    || {
                        format!(
                            "fetch the offset of group {group} for {topic}/{}",
                            p.partition_index
                        )
                    },
                    None,
                )?;
                if p.committed_offset < 0 {
                    continue;
                }
                out.push(CommittedOffset {
                    topic,
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    metadata: p.metadata.as_ref().map(s),
                });
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// Commits `offsets` (topic, partition, offset) for `group` from outside the group.
    /// The coordinator refuses it (UNKNOWN_MEMBER_ID) while the group has members.
    pub async fn commit_group_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<()> {
        let conn = self.group_coordinator(group).await?;
        commit_offsets(&conn, group, "", -1, offsets).await
    }

    /// Deletes groups (DeleteGroups); one result per group, in the order given.
    pub async fn delete_groups(&self, groups: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let mut out = Vec::new();
        for group in groups {
            let conn = self.group_coordinator(group).await?;
            let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
            let response = conn.send(&request, DELETE_GROUPS).await?;
            let code = response
                .results
                .iter()
                .find(|r| r.group_id.0.as_str() == group)
                .map_or(ResponseError::UnknownServerError.code(), |r| r.error_code);
            out.push((
                group.clone(),
                Error::check(code, || format!("delete group {group}"), None),
            ));
        }
        Ok(out)
    }
}

/// KIP-848 state names (lower case on the wire) in the classic spelling.
fn consumer_state_name(state: &str) -> String {
    match state {
        "empty" => "Empty".into(),
        "assigning" => "Assigning".into(),
        "reconciling" => "Reconciling".into(),
        "stable" => "Stable".into(),
        "dead" => "Dead".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn assignments_decode() {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![3, 1]),
        ]);
        for version in [0i16, 1, 3] {
            let mut buf = bytes::BytesMut::new();
            buf.extend_from_slice(&version.to_be_bytes());
            a.encode(&mut buf, version).unwrap();
            let got = decode_assignment(&buf).unwrap();
            assert_eq!(got.get("t"), Some(&vec![1, 3]));
        }
        assert!(decode_assignment(&[]).unwrap().is_empty());
        assert!(decode_assignment(&[0]).is_err());
    }
}
