//! The share-group coordinator's membership (KIP-932's `ShareGroup` in Kafka's
//! `GroupMetadataManager`): ShareGroupHeartbeat joins, heartbeats and leaves, members
//! expire after `group.share.session.timeout.ms`, and the assignment is Kafka's share
//! `SimpleAssignor`: each member is hashed onto one partition of its topics (Java's
//! `String.hashCode`), the partitions no member holds go round-robin, and a member keeps
//! what it held while it still subscribes (several members may share a partition; its
//! leader hands each record to one of them). As on Kafka, a topic is assigned only once
//! its share-partitions are initialized for the group, which completes after the
//! heartbeat that first subscribes to it (Kafka's coordinator initializes them through
//! the share coordinator; here the group timer's next tick, within 100 ms): that
//! heartbeat and any other before the tick carry none of the topic, and the members'
//! next heartbeats (a heartbeat interval later) get the assignment computed over every
//! member that joined meanwhile, so members that start together share the partitions out.
//!
//! Membership is in memory only (as KIP-848 membership in Runnel): after a restart a
//! member's heartbeat gets UNKNOWN_MEMBER_ID and it rejoins with epoch 0.
//!
//! Not thread-safe by itself: `Shares` keeps the map behind a mutex.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Topics whose share-partitions are initialized for this group (only they are
    /// assigned).
    initialized: BTreeSet<Uuid>,
    /// Topics subscribed to since the last `finish_initializing`.
    initializing: BTreeSet<Uuid>,
    /// The target assignment and what it was computed from: recomputed only when the
    /// members, their subscriptions, the initialized topics or the topics' partition
    /// counts change (Kafka's target assignment per group epoch), so the members
    /// reconciling to it one heartbeat at a time all get parts of one assignment.
    target: Option<(TargetInputs, BTreeMap<String, Assignment>)>,
}

/// What a target assignment depends on.
#[derive(Debug, PartialEq)]
struct TargetInputs {
    subscriptions: Vec<(String, Vec<String>)>,
    initialized: BTreeSet<Uuid>,
    topics: Vec<Option<(Uuid, i32)>>,
}

impl ShareGroup {
    /// Completes the initialization of the topics subscribed to since the last call
    /// (the group timer calls it): they are assigned from the members' next heartbeats.
    pub fn finish_initializing(&mut self) {
        let done = std::mem::take(&mut self.initializing);
        self.initialized.extend(done);
    }

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
    let target = target_of(group, p.member_id, resolve);
    // Topics first subscribed now are initialized after this heartbeat.
    let subscribed: Vec<Uuid> = group.members[p.member_id]
        .subscribed
        .iter()
        .filter_map(|name| resolve(name).map(|(id, _)| id))
        .filter(|id| !group.initialized.contains(id))
        .collect();
    group.initializing.extend(subscribed);
    let member = &group.members[p.member_id];
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

/// `member`'s part of the group's target assignment, recomputing it if its inputs
/// changed.
fn target_of(
    group: &mut ShareGroup,
    member: &str,
    resolve: &dyn Fn(&str) -> Option<(Uuid, i32)>,
) -> Assignment {
    let subscriptions: Vec<(String, Vec<String>)> = group
        .members
        .iter()
        .map(|(id, m)| (id.clone(), m.subscribed.clone()))
        .collect();
    let names: BTreeSet<&String> = subscriptions.iter().flat_map(|(_, s)| s).collect();
    let inputs = TargetInputs {
        topics: names.into_iter().map(|n| resolve(n)).collect(),
        subscriptions,
        initialized: group.initialized.clone(),
    };
    if group.target.as_ref().is_none_or(|(was, _)| *was != inputs) {
        let target = assign(group, resolve);
        group.target = Some((inputs, target));
    }
    group
        .target
        .as_ref()
        .and_then(|(_, t)| t.get(member).cloned())
        .unwrap_or_default()
}

/// Java's `String.hashCode` (over UTF-16 code units), which Kafka's assignor hashes
/// member ids with.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// Kafka's share `SimpleAssignor` over the group's members: every member's target
/// assignment. Only initialized topics that exist are assigned.
fn assign(
    group: &ShareGroup,
    resolve: &dyn Fn(&str) -> Option<(Uuid, i32)>,
) -> BTreeMap<String, Assignment> {
    type Tp = (Uuid, i32);
    // Each member's partitions, in its subscription's order.
    let wanted: BTreeMap<&str, Vec<Tp>> = group
        .members
        .iter()
        .map(|(id, m)| {
            let parts = m
                .subscribed
                .iter()
                .filter_map(|name| resolve(name))
                .filter(|(tid, _)| group.initialized.contains(tid))
                .flat_map(|(tid, n)| (0..n.max(0)).map(move |p| (tid, p)))
                .collect();
            (id.as_str(), parts)
        })
        .collect();
    let mut current: BTreeMap<Tp, Vec<&str>> = BTreeMap::new();
    for (id, m) in &group.members {
        for (tid, ps) in &m.assignment {
            for p in ps {
                current.entry((*tid, *p)).or_default().push(id.as_str());
            }
        }
    }
    let mut fresh: BTreeMap<Tp, Vec<&str>> = BTreeMap::new();
    // Step 1: each member hashed onto one of its partitions.
    for (id, parts) in &wanted {
        if !parts.is_empty() {
            let i = (java_hash(id) % parts.len() as i32).unsigned_abs() as usize;
            fresh.entry(parts[i]).or_default().push(id);
        }
    }
    // Step 2: partitions nobody holds go round-robin to their topic's subscribers
    // (homogeneous groups: all members, over all topics at once, as Kafka does).
    let homogeneous = group.members.values().all(|m| {
        group
            .members
            .values()
            .next()
            .is_some_and(|f| f.subscribed == m.subscribed)
    });
    let mut all: Vec<Tp> = wanted.values().flatten().copied().collect();
    all.sort();
    all.dedup();
    let unheld: Vec<Tp> = all
        .into_iter()
        .filter(|tp| !fresh.contains_key(tp) && !current.contains_key(tp))
        .collect();
    let subscribers = |tid: Option<Uuid>| -> Vec<&str> {
        wanted
            .iter()
            .filter(|(_, parts)| tid.is_none_or(|t| parts.iter().any(|(pt, _)| *pt == t)))
            .map(|(id, _)| *id)
            .collect()
    };
    let mut by_topic: BTreeMap<Option<Uuid>, Vec<Tp>> = BTreeMap::new();
    for tp in unheld {
        by_topic
            .entry((!homogeneous).then_some(tp.0))
            .or_default()
            .push(tp);
    }
    for (tid, tps) in by_topic {
        let members = subscribers(tid);
        if members.is_empty() {
            continue;
        }
        for (i, tp) in tps.into_iter().enumerate() {
            fresh
                .entry(tp)
                .or_default()
                .push(members[i % members.len()]);
        }
    }
    // Step 3: what each member held and still subscribes to, plus the new.
    let mut out: BTreeMap<String, Assignment> = group
        .members
        .keys()
        .map(|id| (id.clone(), Assignment::new()))
        .collect();
    let held = current
        .iter()
        .flat_map(|(tp, ids)| ids.iter().map(move |id| (*tp, *id)))
        .filter(|(tp, id)| wanted.get(id).is_some_and(|parts| parts.contains(tp)));
    let new = fresh
        .iter()
        .flat_map(|(tp, ids)| ids.iter().map(move |id| (*tp, *id)));
    for ((tid, p), id) in held.chain(new) {
        let ps = out
            .get_mut(id)
            .expect("members only")
            .entry(tid)
            .or_default();
        if !ps.contains(&p) {
            ps.push(p);
        }
    }
    for a in out.values_mut() {
        for ps in a.values_mut() {
            ps.sort();
        }
    }
    out
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
    fn java_string_hash() {
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("ab"), 3105);
        assert_eq!(java_hash("hello"), 99_162_322);
        // Overflow wraps as in Java.
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn a_topic_is_assigned_once_initialized_and_shared_out() {
        let mut g = ShareGroup::default();
        let now = Instant::now();
        let a = heartbeat(
            &mut g,
            params("a", 0, Some(&["t", "missing"])),
            now,
            &resolve,
        );
        // Until the topic is initialized, heartbeats carry none of it.
        assert_eq!(a.assignment, Some(Assignment::new()));
        let again = heartbeat(&mut g, params("a", a.member_epoch, None), now, &resolve);
        assert_eq!(again.assignment, None);
        let b = heartbeat(&mut g, params("b", 0, Some(&["t"])), now, &resolve);
        assert_eq!(b.assignment, Some(Assignment::new()));
        g.finish_initializing();
        let a = heartbeat(&mut g, params("a", a.member_epoch, None), now, &resolve);
        let b = heartbeat(&mut g, params("b", b.member_epoch, None), now, &resolve);
        let (pa, pb) = (&a.assignment.unwrap()[&T], &b.assignment.unwrap()[&T]);
        // Each member has a partition, and together they hold both.
        assert!(!pa.is_empty() && !pb.is_empty(), "{pa:?} {pb:?}");
        let mut all: Vec<i32> = pa.iter().chain(pb).copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(all, vec![0, 1]);
        // A steady heartbeat carries no assignment.
        let again = heartbeat(&mut g, params("a", a.member_epoch, None), now, &resolve);
        assert_eq!(again.error, ErrorCode::None);
        assert_eq!(again.assignment, None);
        assert_eq!(g.state(), "Stable");
    }

    #[test]
    fn partitions_of_a_member_that_left_go_to_the_others() {
        let mut g = ShareGroup::default();
        let now = Instant::now();
        let mut epochs = BTreeMap::new();
        for m in ["a", "b", "c"] {
            let r = heartbeat(&mut g, params(m, 0, Some(&["t"])), now, &resolve);
            epochs.insert(m, r.member_epoch);
        }
        g.finish_initializing();
        for m in ["a", "b"] {
            let r = heartbeat(&mut g, params(m, epochs[m], None), now, &resolve);
            epochs.insert(m, r.member_epoch);
        }
        heartbeat(&mut g, params("b", -1, None), now, &resolve);
        let r = heartbeat(&mut g, params("a", epochs["a"], None), now, &resolve);
        let held = r
            .assignment
            .map_or_else(|| g.members["a"].assignment.clone(), |a| a);
        // "c" never heartbeated again and holds nothing: "a" ends up with both.
        assert_eq!(held[&T], vec![0, 1]);
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
