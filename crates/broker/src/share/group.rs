//! The share-group coordinator's membership (KIP-932's `ShareGroup` in Kafka's
//! `GroupMetadataManager`): ShareGroupHeartbeat joins, heartbeats and leaves, members
//! expire after `group.share.session.timeout.ms`, and the assignment is Kafka's share
//! `SimpleAssignor` in its homogeneous form: every member gets every partition of the
//! topics it subscribes to (a share-partition is consumed by many members at once; the
//! share-partition leader hands each record to one of them).
//!
//! Membership is in memory only (as KIP-848 membership in Runnel): after a restart a
//! member's heartbeat gets UNKNOWN_MEMBER_ID and it rejoins with epoch 0.
//!
//! Not thread-safe by itself: `Shares` keeps the map behind a mutex.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::ErrorCode;

/// A member's assignment: topic id -> partitions (sorted).
pub type Assignment = BTreeMap<Uuid, Vec<i32>>;

#[derive(Debug, Clone)]
pub struct Member {
    pub epoch: i32,
    previous_epoch: i32,
    pub rack: Option<String>,
    pub subscribed: Vec<String>,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Assignment,
    deadline: Instant,
}

#[derive(Debug, Default)]
pub struct ShareGroup {
    pub epoch: i32,
    pub members: BTreeMap<String, Member>,
}

impl ShareGroup {
    /// Kafka's share-group states: Empty or Stable (a share group never rebalances).
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else {
            "Stable"
        }
    }
}

pub struct HeartbeatParams<'a> {
    pub member_id: &'a str,
    pub member_epoch: i32,
    pub rack: Option<String>,
    pub subscribed: Option<Vec<String>>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub max_size: usize,
}

#[derive(Debug, PartialEq)]
pub struct HeartbeatResult {
    pub error: ErrorCode,
    pub message: Option<String>,
    pub member_epoch: i32,
    /// Sent when it changed (and always on a join).
    pub assignment: Option<Assignment>,
}

fn refused(error: ErrorCode, message: impl Into<String>) -> HeartbeatResult {
    HeartbeatResult {
        error,
        message: Some(message.into()),
        member_epoch: -1,
        assignment: None,
    }
}

/// One heartbeat. `resolve` gives a topic's id and partition count (None: no such
/// topic, left out of the assignment until it exists).
pub fn heartbeat(
    group: &mut ShareGroup,
    p: HeartbeatParams<'_>,
    now: Instant,
    resolve: &dyn Fn(&str) -> Option<(Uuid, i32)>,
) -> HeartbeatResult {
    if p.member_id.is_empty() {
        return refused(ErrorCode::InvalidRequest, "MemberId can't be empty.");
    }
    if p.member_epoch == -1 {
        if group.members.remove(p.member_id).is_some() {
            group.epoch += 1;
        }
        return HeartbeatResult {
            error: ErrorCode::None,
            message: None,
            member_epoch: -1,
            assignment: None,
        };
    }
    if p.member_epoch < -1 {
        return refused(ErrorCode::InvalidRequest, "MemberEpoch is invalid.");
    }
    let joining = p.member_epoch == 0;
    if joining {
        if p.subscribed.as_ref().is_none_or(|s| s.is_empty()) {
            return refused(
                ErrorCode::InvalidRequest,
                "SubscribedTopicNames must be set in first request.",
            );
        }
        if !group.members.contains_key(p.member_id) && group.members.len() >= p.max_size {
            return refused(
                ErrorCode::GroupMaxSizeReached,
                format!(
                    "The share group has reached its maximum capacity of {} members.",
                    p.max_size
                ),
            );
        }
    } else {
        match group.members.get(p.member_id) {
            None => {
                return refused(
                    ErrorCode::UnknownMemberId,
                    format!("Member {} is not a member of the share group.", p.member_id),
                )
            }
            Some(m) if p.member_epoch != m.epoch && p.member_epoch != m.previous_epoch => {
                return refused(
                    ErrorCode::FencedMemberEpoch,
                    format!(
                        "The share group member has a member epoch ({}) different from the coordinator's ({}).",
                        p.member_epoch, m.epoch
                    ),
                )
            }
            Some(_) => {}
        }
    }
    let member = group
        .members
        .entry(p.member_id.to_string())
        .or_insert_with(|| Member {
            epoch: 0,
            previous_epoch: 0,
            rack: None,
            subscribed: Vec::new(),
            client_id: String::new(),
            client_host: String::new(),
            assignment: Assignment::new(),
            deadline: now,
        });
    member.deadline = now + p.session_timeout;
    member.client_id = p.client_id;
    member.client_host = p.client_host;
    if p.rack.is_some() {
        member.rack = p.rack;
    }
    if let Some(s) = p.subscribed {
        member.subscribed = s;
    }
    let target = assign(&member.subscribed, resolve);
    let changed = target != member.assignment || member.epoch == 0;
    if changed {
        group.epoch += 1;
        let member = group.members.get_mut(p.member_id).expect("inserted above");
        member.previous_epoch = member.epoch;
        member.epoch = group.epoch;
        member.assignment = target;
    }
    let member = &group.members[p.member_id];
    HeartbeatResult {
        error: ErrorCode::None,
        message: None,
        member_epoch: member.epoch,
        assignment: (changed || joining).then(|| member.assignment.clone()),
    }
}

/// Every partition of every subscribed topic that exists.
fn assign(subscribed: &[String], resolve: &dyn Fn(&str) -> Option<(Uuid, i32)>) -> Assignment {
    subscribed
        .iter()
        .filter_map(|name| resolve(name))
        .map(|(id, n)| (id, (0..n.max(0)).collect()))
        .collect()
}

/// Removes the members whose session expired; returns their ids.
pub fn expire(group: &mut ShareGroup, now: Instant) -> Vec<String> {
    let gone: Vec<String> = group
        .members
        .iter()
        .filter(|(_, m)| m.deadline <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in &gone {
        group.members.remove(id);
    }
    if !gone.is_empty() {
        group.epoch += 1;
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(id: &str, epoch: i32, topics: Option<&[&str]>) -> HeartbeatParams<'static> {
        HeartbeatParams {
            member_id: Box::leak(id.to_string().into_boxed_str()),
            member_epoch: epoch,
            rack: None,
            subscribed: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(45),
            max_size: 2,
        }
    }

    const T: Uuid = Uuid::from_u128(7);

    fn resolve(name: &str) -> Option<(Uuid, i32)> {
        (name == "t").then_some((T, 2))
    }

    #[test]
    fn every_member_gets_every_partition() {
        let mut g = ShareGroup::default();
        let now = Instant::now();
        let a = heartbeat(
            &mut g,
            params("a", 0, Some(&["t", "missing"])),
            now,
            &resolve,
        );
        let b = heartbeat(&mut g, params("b", 0, Some(&["t"])), now, &resolve);
        assert_eq!(a.assignment.unwrap()[&T], vec![0, 1]);
        assert_eq!(b.assignment.unwrap()[&T], vec![0, 1]);
        // A steady heartbeat carries no assignment.
        let again = heartbeat(&mut g, params("a", a.member_epoch, None), now, &resolve);
        assert_eq!(again.error, ErrorCode::None);
        assert_eq!(again.assignment, None);
        assert_eq!(g.state(), "Stable");
    }

    #[test]
    fn errors_follow_kafka() {
        let mut g = ShareGroup::default();
        let now = Instant::now();
        assert_eq!(
            heartbeat(&mut g, params("", 0, Some(&["t"])), now, &resolve).error,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            heartbeat(&mut g, params("a", 0, None), now, &resolve).error,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            heartbeat(&mut g, params("x", 3, None), now, &resolve).error,
            ErrorCode::UnknownMemberId
        );
        let a = heartbeat(&mut g, params("a", 0, Some(&["t"])), now, &resolve);
        assert_eq!(
            heartbeat(&mut g, params("a", a.member_epoch + 5, None), now, &resolve).error,
            ErrorCode::FencedMemberEpoch
        );
        heartbeat(&mut g, params("b", 0, Some(&["t"])), now, &resolve);
        assert_eq!(
            heartbeat(&mut g, params("c", 0, Some(&["t"])), now, &resolve).error,
            ErrorCode::GroupMaxSizeReached
        );
        // Leaving frees a place; expiry removes silent members.
        heartbeat(&mut g, params("b", -1, None), now, &resolve);
        assert_eq!(g.members.len(), 1);
        assert_eq!(
            expire(&mut g, now + Duration::from_secs(46)),
            vec!["a".to_string()]
        );
        assert_eq!(g.state(), "Empty");
    }
}
