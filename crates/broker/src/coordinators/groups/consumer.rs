//! The next-generation consumer group protocol (KIP-848): ConsumerGroupHeartbeat with
//! server-side assignors (`uniform`, the default, and `range`).
//!
//! The coordinator owns the target assignment; each member converges to it by
//! heartbeats. A partition moves only after its previous owner has stopped owning it
//! (the owner's heartbeat no longer lists it), so no partition is ever assigned to two
//! members at once. A member's epoch rises to the group's assignment epoch once it owns
//! exactly its target. Members that join or leave cause a new target; the others keep
//! consuming what they keep.
//!
//! Membership is in memory only (a restarted broker fences members, which rejoin);
//! committed offsets go through the shared offset store in `super`.
//!
//! Thread-safe: behind the coordinator's mutex.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use regex_lite::Regex;
use std::sync::Arc;
use uuid::Uuid;

use crate::error::ErrorCode;

/// topic id -> partitions
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The subscribable topics: (id, name, partition count).
pub type TopicCatalog = Vec<(Uuid, String, i32)>;

/// Decides whether a topic name may be given to a member through its regex.
#[derive(Clone)]
pub struct TopicFilter(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl TopicFilter {
    pub fn new(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> TopicFilter {
        TopicFilter(Arc::new(f))
    }

    /// Every topic (no authorizer).
    pub fn all() -> TopicFilter {
        TopicFilter::new(|_| true)
    }

    fn allows(&self, name: &str) -> bool {
        (self.0)(name)
    }
}

impl std::fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TopicFilter")
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub id: String,
    pub epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_names: Vec<String>,
    pub subscribed_regex: Option<String>,
    /// `subscribed_regex` compiled (once, when it was set).
    regex: Option<Arc<Regex>>,
    /// The topics the regex may give the member: those its principal may DESCRIBE
    /// (from its latest heartbeat).
    regex_filter: TopicFilter,
    pub rebalance_timeout_ms: i32,
    /// What the coordinator has given the member and not taken back.
    pub owned: Assignment,
    /// Partitions the member was told to give up and has not yet confirmed releasing;
    /// nobody else gets them until it does.
    revoking: Assignment,
    /// The last assignment sent, so unchanged assignments are not re-sent.
    last_sent: Option<Assignment>,
    last_heartbeat: Instant,
}

#[derive(Debug)]
pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
    /// The subscribed topics' partition counts at the last target computation.
    topology: Vec<(Uuid, i32)>,
    /// Topic ids each subscription regex matched, for the catalog in `regex_catalog`:
    /// a regex is matched against the topic names once per change of the topic set,
    /// not at every assignment.
    regex_matches: HashMap<String, Vec<Uuid>>,
    regex_catalog: Vec<Uuid>,
}

pub struct HeartbeatParams {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_names: Option<Vec<String>>,
    pub subscribed_regex: Option<String>,
    /// `subscribed_regex` compiled by [`compile_regex`] (the caller refuses a bad one).
    pub compiled_regex: Option<Arc<Regex>>,
    /// Which topic names the regex may match for this member (Kafka resolves a regex
    /// only to topics the member's principal may DESCRIBE).
    pub regex_filter: TopicFilter,
    pub server_assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug)]
pub struct HeartbeatResult {
    pub error: ErrorCode,
    pub message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    /// None when unchanged since the last response.
    pub assignment: Option<Assignment>,
}

pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// Bounds on a subscription regex: its text, its compiled size (regex-lite matches in
/// O(compiled size x name length), so this bounds the time per topic name), and its
/// nesting depth.
pub const REGEX_MAX_LEN: usize = 1024;
const REGEX_SIZE_LIMIT: usize = 16 * 1024;
const REGEX_NEST_LIMIT: u32 = 32;

/// Compiles a KIP-848 SubscribedTopicRegex (anchored, as Kafka's RE2J `matches`), or
/// says why it is refused (INVALID_REGULAR_EXPRESSION).
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > REGEX_MAX_LEN {
        return Err(format!(
            "the subscription regex is {} bytes; at most {REGEX_MAX_LEN} are accepted",
            pattern.len()
        ));
    }
    regex_lite::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| format!("invalid subscription regex: {e}"))
}
const LEAVE_EPOCH: i32 = -1;
const STATIC_LEAVE_EPOCH: i32 = -2;

fn error(error: ErrorCode, member_id: &str, message: &str) -> HeartbeatResult {
    HeartbeatResult {
        error,
        message: Some(message.to_string()),
        member_id: member_id.to_string(),
        member_epoch: -1,
        assignment: None,
    }
}

impl ConsumerGroup {
    pub fn new(id: &str) -> Self {
        ConsumerGroup {
            id: id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            assignor: ASSIGNORS[0].to_string(),
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            topology: Vec::new(),
            regex_matches: HashMap::new(),
            regex_catalog: Vec::new(),
        }
    }

    /// Kafka's state names for ConsumerGroupDescribe and ListGroups.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            m.epoch != self.assignment_epoch
                || !m.revoking.is_empty()
                || Some(&m.owned) != self.target.get(&m.id)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The topic ids each member subscribes to. Regexes are matched against the names
    /// only for a regex not yet matched against this topic set.
    fn subscriptions(&mut self, catalog: &TopicCatalog) -> BTreeMap<String, Vec<Uuid>> {
        let ids: Vec<Uuid> = catalog.iter().map(|(id, _, _)| *id).collect();
        if ids != self.regex_catalog {
            self.regex_matches.clear();
            self.regex_catalog = ids;
        }
        let cache = &mut self.regex_matches;
        cache.retain(|r, _| {
            self.members
                .values()
                .any(|m| m.subscribed_regex.as_ref() == Some(r))
        });
        let mut subs = BTreeMap::new();
        for m in self.members.values() {
            let by_regex: &[Uuid] = match (&m.subscribed_regex, &m.regex) {
                (Some(source), Some(re)) => cache.entry(source.clone()).or_insert_with(|| {
                    catalog
                        .iter()
                        .filter(|(_, name, _)| re.is_match(name))
                        .map(|(id, _, _)| *id)
                        .collect()
                }),
                _ => &[],
            };
            let ids = catalog
                .iter()
                .filter(|(id, name, _)| {
                    m.subscribed_names.iter().any(|n| n == name)
                        || (by_regex.contains(id) && m.regex_filter.allows(name))
                })
                .map(|(id, _, _)| *id)
                .collect();
            subs.insert(m.id.clone(), ids);
        }
        subs
    }

    pub fn heartbeat(
        &mut self,
        p: HeartbeatParams,
        catalog: &TopicCatalog,
        now: Instant,
    ) -> HeartbeatResult {
        if let Some(a) = &p.server_assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return error(
                    ErrorCode::UnsupportedAssignor,
                    &p.member_id,
                    &format!("assignor '{a}' is not one of {}", ASSIGNORS.join(", ")),
                );
            }
        }
        if p.member_epoch == LEAVE_EPOCH || p.member_epoch == STATIC_LEAVE_EPOCH {
            if self.members.remove(&p.member_id).is_some() {
                self.bump();
            }
            return HeartbeatResult {
                error: ErrorCode::None,
                message: None,
                member_id: p.member_id,
                member_epoch: p.member_epoch,
                assignment: None,
            };
        }
        let member_id = if p.member_epoch == 0 {
            let id = if p.member_id.is_empty() {
                Uuid::new_v4().to_string()
            } else {
                p.member_id.clone()
            };
            if let Some(instance) = &p.instance_id {
                // A static member replacing its previous incarnation takes its place.
                let previous = self
                    .members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(instance) && m.id != id)
                    .map(|m| m.id.clone());
                if let Some(prev) = previous {
                    if let Some(old) = self.members.remove(&prev) {
                        if !old.owned.is_empty() || !old.revoking.is_empty() {
                            self.members.insert(prev, old);
                            return error(
                                ErrorCode::UnreleasedInstanceId,
                                &id,
                                "the previous member with this instance id still owns partitions",
                            );
                        }
                    }
                }
            }
            let rejoining = self.members.remove(&id);
            self.members.insert(
                id.clone(),
                ConsumerMember {
                    id: id.clone(),
                    epoch: 0,
                    instance_id: p.instance_id.clone(),
                    rack_id: p.rack_id.clone(),
                    client_id: p.client_id.clone(),
                    client_host: p.client_host.clone(),
                    subscribed_names: p.subscribed_names.clone().unwrap_or_default(),
                    subscribed_regex: p.subscribed_regex.clone(),
                    regex: p.compiled_regex.clone(),
                    regex_filter: p.regex_filter.clone(),
                    rebalance_timeout_ms: p.rebalance_timeout_ms,
                    owned: Assignment::new(),
                    revoking: Assignment::new(),
                    last_sent: None,
                    last_heartbeat: now,
                },
            );
            let _ = rejoining;
            self.bump();
            id
        } else {
            let Some(m) = self.members.get_mut(&p.member_id) else {
                return error(
                    ErrorCode::UnknownMemberId,
                    &p.member_id,
                    "member is not in the group; rejoin with epoch 0",
                );
            };
            if p.member_epoch > m.epoch {
                return error(
                    ErrorCode::FencedMemberEpoch,
                    &p.member_id,
                    "member epoch is ahead of the coordinator's",
                );
            }
            if p.member_epoch < m.epoch && p.owned.as_ref().is_some_and(|o| !o.is_empty()) {
                // Kafka accepts the previous epoch only while its assignment is a subset.
                let mut held = m.owned.clone();
                for (t, ps) in &m.revoking {
                    held.entry(*t).or_default().extend(ps);
                }
                if !p.owned.as_ref().is_some_and(|o| is_subset(o, &held)) {
                    return error(
                        ErrorCode::FencedMemberEpoch,
                        &p.member_id,
                        "member epoch is stale",
                    );
                }
            }
            m.last_heartbeat = now;
            m.regex_filter = p.regex_filter.clone();
            let mut changed = false;
            if let Some(names) = p.subscribed_names.clone() {
                changed |= names != m.subscribed_names;
                m.subscribed_names = names;
            }
            if p.subscribed_regex.is_some() && p.subscribed_regex != m.subscribed_regex {
                m.subscribed_regex = p.subscribed_regex.clone();
                m.regex = p.compiled_regex.clone();
                changed = true;
            }
            if let Some(reported) = &p.owned {
                // A revocation completes when the member's report no longer lists any of
                // the partitions it was told to give up (Kafka's UNREVOKED_PARTITIONS).
                // Reports never shrink what the coordinator assigned otherwise: a member
                // that has not applied its assignment yet reports less than it will own.
                if !m.revoking.is_empty() && !intersects(reported, &m.revoking) {
                    m.revoking.clear();
                }
            }
            if changed {
                self.bump();
            }
            p.member_id.clone()
        };
        if let Some(a) = p.server_assignor {
            self.assignor = a;
        }
        self.refresh_target(catalog);
        self.reconcile(&member_id)
    }

    fn bump(&mut self) {
        self.group_epoch += 1;
    }

    /// Recomputes the target assignment when membership, subscriptions or partition
    /// counts changed since the last computation.
    fn refresh_target(&mut self, catalog: &TopicCatalog) {
        let topology: Vec<(Uuid, i32)> = catalog.iter().map(|(id, _, n)| (*id, *n)).collect();
        if self.assignment_epoch == self.group_epoch && topology == self.topology {
            return;
        }
        if topology != self.topology && self.assignment_epoch == self.group_epoch {
            self.group_epoch += 1;
        }
        self.topology = topology;
        let subs = self.subscriptions(catalog);
        let counts: HashMap<Uuid, i32> = catalog.iter().map(|(id, _, n)| (*id, *n)).collect();
        let previous = std::mem::take(&mut self.target);
        self.target = match self.assignor.as_str() {
            "range" => assign_range(&subs, &counts),
            _ => assign_uniform(&subs, &counts, &previous),
        };
        self.assignment_epoch = self.group_epoch;
    }

    /// Moves a member toward its target: first it gives up what it must revoke (and
    /// confirms), then it gets what no other member still owns or is revoking.
    fn reconcile(&mut self, member_id: &str) -> HeartbeatResult {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let taken: std::collections::HashSet<(Uuid, i32)> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .flat_map(|m| {
                m.owned
                    .iter()
                    .chain(m.revoking.iter())
                    .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            })
            .collect();
        let assignment_epoch = self.assignment_epoch;
        let m = self.members.get_mut(member_id).expect("member exists");
        if m.revoking.is_empty() {
            let (keep, revoke) = split(&m.owned, &target);
            if !revoke.is_empty() {
                m.owned = keep;
                m.revoking = revoke;
            } else {
                // Nothing left to revoke: the member moves to the new epoch now (KIP-848);
                // partitions another member still holds follow in later heartbeats.
                m.epoch = assignment_epoch;
                for (t, ps) in &target {
                    for p in ps {
                        if !taken.contains(&(*t, *p)) {
                            m.owned.entry(*t).or_default().insert(*p);
                        }
                    }
                }
            }
        }
        let next = m.owned.clone();
        let send = if m.last_sent.as_ref() != Some(&next) {
            m.last_sent = Some(next.clone());
            Some(next)
        } else {
            None
        };
        HeartbeatResult {
            error: ErrorCode::None,
            message: None,
            member_id: member_id.to_string(),
            member_epoch: m.epoch,
            assignment: send,
        }
    }

    /// Removes members whose session expired; true when any was removed.
    pub fn expire(&mut self, session_timeout: Duration, now: Instant) -> bool {
        let before = self.members.len();
        self.members
            .retain(|_, m| now < m.last_heartbeat + session_timeout);
        let removed = self.members.len() != before;
        if removed {
            self.bump();
        }
        removed
    }

    /// When the first member's session ends without a heartbeat.
    pub fn next_session_deadline(&self, session_timeout: Duration) -> Option<Instant> {
        self.members
            .values()
            .map(|m| m.last_heartbeat + session_timeout)
            .min()
    }

    pub fn has_member_epoch(&self, member_id: &str, epoch: i32) -> Result<(), ErrorCode> {
        match self.members.get(member_id) {
            None => Err(ErrorCode::UnknownMemberId),
            Some(m) if m.epoch != epoch => Err(ErrorCode::StaleMemberEpoch),
            Some(_) => Ok(()),
        }
    }
}

/// (what of `owned` is in `target`, what is not)
fn split(owned: &Assignment, target: &Assignment) -> (Assignment, Assignment) {
    let (mut keep, mut revoke) = (Assignment::new(), Assignment::new());
    for (t, ps) in owned {
        for p in ps {
            let dest = if target.get(t).is_some_and(|tp| tp.contains(p)) {
                &mut keep
            } else {
                &mut revoke
            };
            dest.entry(*t).or_default().insert(*p);
        }
    }
    (keep, revoke)
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|bp| !ps.is_disjoint(bp)))
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.iter().all(|p| b.get(t).is_some_and(|bp| bp.contains(p))))
}

/// Spreads partitions evenly, keeping each partition with its previous owner when that
/// owner is still subscribed and not over its share.
pub fn assign_uniform(
    subs: &BTreeMap<String, Vec<Uuid>>,
    counts: &HashMap<Uuid, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subs
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let mut load: BTreeMap<String, usize> = subs.keys().map(|m| (m.clone(), 0)).collect();
    let mut partitions: Vec<(Uuid, i32)> = Vec::new();
    let mut topics: Vec<Uuid> = subs.values().flatten().copied().collect();
    topics.sort();
    topics.dedup();
    for t in topics {
        for p in 0..counts.get(&t).copied().unwrap_or(0) {
            partitions.push((t, p));
        }
    }
    let total = partitions.len();
    let members = subs.len().max(1);
    let quota = total.div_ceil(members);
    let owner_of: HashMap<(Uuid, i32), &String> = previous
        .iter()
        .flat_map(|(m, a)| {
            a.iter()
                .flat_map(move |(t, ps)| ps.iter().map(move |p| ((*t, *p), m)))
        })
        .collect();
    let mut unplaced = Vec::new();
    for (t, p) in partitions {
        match owner_of.get(&(t, p)) {
            Some(m) if subs.get(*m).is_some_and(|s| s.contains(&t)) && load[*m] < quota => {
                out.get_mut(*m)
                    .expect("member")
                    .entry(t)
                    .or_default()
                    .insert(p);
                *load.get_mut(*m).expect("member") += 1;
            }
            _ => unplaced.push((t, p)),
        }
    }
    for (t, p) in unplaced {
        let Some(m) = subs
            .iter()
            .filter(|(_, s)| s.contains(&t))
            .map(|(m, _)| m)
            .min_by_key(|m| (load[*m], (*m).clone()))
        else {
            continue;
        };
        let m = m.clone();
        out.get_mut(&m)
            .expect("member")
            .entry(t)
            .or_default()
            .insert(p);
        *load.get_mut(&m).expect("member") += 1;
    }
    // Sticky placement can leave members over or under by more than one; even it out.
    loop {
        let (max_m, max_l) = load
            .iter()
            .max_by_key(|(m, l)| (**l, std::cmp::Reverse((*m).clone())))
            .map(|(m, l)| (m.clone(), *l))
            .unwrap_or_default();
        let (min_m, min_l) = load
            .iter()
            .min_by_key(|(m, l)| (**l, (*m).clone()))
            .map(|(m, l)| (m.clone(), *l))
            .unwrap_or_default();
        if max_l <= min_l + 1 {
            break;
        }
        let movable = out[&max_m]
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            .find(|(t, _)| subs[&min_m].contains(t));
        let Some((t, p)) = movable else { break };
        out.get_mut(&max_m)
            .expect("member")
            .get_mut(&t)
            .expect("topic")
            .remove(&p);
        out.get_mut(&min_m)
            .expect("member")
            .entry(t)
            .or_default()
            .insert(p);
        *load.get_mut(&max_m).expect("member") -= 1;
        *load.get_mut(&min_m).expect("member") += 1;
    }
    for a in out.values_mut() {
        a.retain(|_, ps| !ps.is_empty());
    }
    out
}

/// Kafka's range assignor: per topic, members (sorted) get contiguous ranges.
pub fn assign_range(
    subs: &BTreeMap<String, Vec<Uuid>>,
    counts: &HashMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subs
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let mut topics: Vec<Uuid> = subs.values().flatten().copied().collect();
    topics.sort();
    topics.dedup();
    for t in topics {
        let members: Vec<&String> = subs
            .iter()
            .filter(|(_, s)| s.contains(&t))
            .map(|(m, _)| m)
            .collect();
        let n = counts.get(&t).copied().unwrap_or(0) as usize;
        let (per, extra) = (n / members.len(), n % members.len());
        let mut next = 0;
        for (i, m) in members.iter().enumerate() {
            let take = per + usize::from(i < extra);
            let ps: BTreeSet<i32> = (next..next + take).map(|p| p as i32).collect();
            next += take;
            if !ps.is_empty() {
                out.get_mut(*m).expect("member").insert(t, ps);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(member: &str, epoch: i32, owned: Option<Assignment>) -> HeartbeatParams {
        HeartbeatParams {
            member_id: member.to_string(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: 30_000,
            subscribed_names: Some(vec!["t".into()]),
            subscribed_regex: None,
            compiled_regex: None,
            regex_filter: TopicFilter::all(),
            server_assignor: None,
            owned,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    #[test]
    fn members_converge_without_double_ownership() {
        let topic = Uuid::new_v4();
        let catalog = vec![(topic, "t".to_string(), 6)];
        let mut g = ConsumerGroup::new("g");
        let now = Instant::now();
        let a = g.heartbeat(params("a", 0, None), &catalog, now);
        assert_eq!(count(a.assignment.as_ref().unwrap()), 6);
        let a_owned = a.assignment.unwrap();
        // b joins: the target splits 3/3, but b gets nothing until a lets go.
        let b = g.heartbeat(params("b", 0, None), &catalog, now);
        assert_eq!(b.assignment.as_ref().map(count), Some(0));
        assert_eq!(
            b.member_epoch, g.assignment_epoch,
            "nothing to revoke: b is at the new epoch"
        );
        assert_eq!(g.state(), "Reconciling");
        let a2 = g.heartbeat(params("a", a.member_epoch, Some(a_owned)), &catalog, now);
        let a_keep = a2.assignment.unwrap();
        assert_eq!(count(&a_keep), 3, "a is told to keep 3");
        // a confirms it released the other 3; then b can take them.
        let a3 = g.heartbeat(
            params("a", a2.member_epoch, Some(a_keep.clone())),
            &catalog,
            now,
        );
        assert_eq!(a3.member_epoch, g.assignment_epoch);
        let b2 = g.heartbeat(
            params("b", b.member_epoch, Some(Assignment::new())),
            &catalog,
            now,
        );
        let b_got = b2.assignment.unwrap();
        assert_eq!(count(&b_got), 3);
        assert!(b_got[&topic].is_disjoint(&a_keep[&topic]));
        assert_eq!(b2.member_epoch, g.assignment_epoch);
        assert_eq!(g.state(), "Stable");
    }

    #[test]
    fn assignors_balance() {
        let t1 = Uuid::new_v4();
        let subs: BTreeMap<String, Vec<Uuid>> =
            (0..3).map(|i| (format!("m{i}"), vec![t1])).collect();
        let counts = HashMap::from([(t1, 7)]);
        for out in [
            assign_uniform(&subs, &counts, &BTreeMap::new()),
            assign_range(&subs, &counts),
        ] {
            let mut sizes: Vec<usize> = out.values().map(count).collect();
            sizes.sort();
            assert_eq!(sizes, vec![2, 2, 3]);
        }
        let range = assign_range(&subs, &counts);
        assert_eq!(range["m0"][&t1], BTreeSet::from([0, 1, 2]));
    }
    #[test]
    fn subscription_regexes_are_bounded_and_follow_the_topic_set() {
        assert!(compile_regex("(unclosed").is_err());
        assert!(compile_regex(&"x".repeat(REGEX_MAX_LEN + 1)).is_err());
        assert!(compile_regex("(.*a){400}")
            .unwrap_err()
            .contains("size limit"));
        let re = Arc::new(compile_regex("orders-.*").unwrap());
        assert!(re.is_match("orders-eu") && !re.is_match("x-orders-eu"));

        let mut g = ConsumerGroup::new("g");
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let regex_params = |filter| HeartbeatParams {
            subscribed_names: None,
            subscribed_regex: Some("orders-.*".into()),
            compiled_regex: Some(re.clone()),
            regex_filter: filter,
            ..params("", 0, None)
        };
        let mut catalog: TopicCatalog = vec![(a, "orders-eu".into(), 1), (b, "audit".into(), 1)];
        let r = g.heartbeat(regex_params(TopicFilter::all()), &catalog, Instant::now());
        let member = r.member_id.clone();
        assert_eq!(g.subscriptions(&catalog)[&member], vec![a]);
        // The same regex for a member whose principal may not describe orders-us.
        let p = regex_params(TopicFilter::new(|n| n != "orders-us"));
        let limited = g.heartbeat(p, &catalog, Instant::now()).member_id;
        // A new matching topic is seen once the topic set changes, by the members whose
        // filter lets it through.
        let c = Uuid::new_v4();
        catalog.push((c, "orders-us".into(), 1));
        let subs = g.subscriptions(&catalog);
        assert_eq!(subs[&member], vec![a, c]);
        assert_eq!(subs[&limited], vec![a]);
    }
}
