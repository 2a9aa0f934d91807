//! Partition replication, Kafka's way: followers pull from the leader with Fetch (replica
//! id set), the leader tracks what each follower has, the high watermark is the smallest
//! log end in the ISR, and the ISR shrinks when a follower falls more than
//! `replica.lag.time.max.ms` behind and grows when it catches up (both through the
//! controller, by AlterPartition).
//!
//! This file: a partition's replica state and the leader's bookkeeping. The follower side
//! (one fetcher task per leader broker) is `crate::cluster::fetcher`.

use std::collections::BTreeMap;

use runnel_meta::PartitionImage;

use crate::storage::partition::Partition;

/// What the leader knows of one follower, from its fetches.
#[derive(Debug, Clone, Copy)]
pub struct FollowerProgress {
    /// The follower's log end: the offset it last asked for (-1: not heard from since
    /// this broker became leader).
    pub log_end: i64,
    /// Last time the follower had everything the leader had (Kafka's lastCaughtUpTime).
    pub caught_up_ms: i64,
    /// The leader's log end when the follower's previous fetch arrived, and when.
    leader_end_at_last_fetch: i64,
    last_fetch_ms: i64,
}

/// An ISR the leader wants, with the epochs it was computed under: the controller
/// refuses it if either moved since, so a request that waited in line cannot undo a newer
/// decision (e.g. put back a follower the controller removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedIsr {
    pub isr: Vec<i32>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A partition's replica state, as the metadata image last said (a single node is a
/// cluster of one: it leads with an ISR of itself).
#[derive(Debug, Default)]
pub struct ReplicaState {
    /// A state from the image was applied (until then this broker neither leads nor
    /// follows the partition).
    pub applied: bool,
    pub local_id: i32,
    pub leader: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas being added by a reassignment (their copying may be throttled).
    pub adding: Vec<i32>,
    /// Leader only.
    pub followers: BTreeMap<i32, FollowerProgress>,
    /// Leader only: the ISR of an AlterPartition on its way to the controller. Until the
    /// answer, the high watermark counts the union of this and `isr` (Kafka's "maximal
    /// ISR"): the controller may already have recorded a newcomer, and could elect it.
    pub pending_isr: Option<Vec<i32>>,
    /// Leader only: the log end when it became leader. A follower joins the ISR only
    /// once it has everything up to here (all the previous leader committed), as in
    /// Kafka; the high watermark of a new leader may lag behind that.
    pub epoch_start_offset: i64,
}

impl ReplicaState {
    pub fn is_leader(&self) -> bool {
        self.applied && self.leader == self.local_id
    }
}

/// What a change of partition state asks of this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Nothing: same leader and epoch, or an older state than we have.
    None,
    BecameLeader,
    /// Follow `leader` (fetch from it, after truncating to where its epoch ends).
    BecameFollower {
        leader: i32,
    },
    /// Not a replica (any more), or the partition has no leader.
    Stopped,
}

/// [`apply_state_at`] at the machine's time (unit tests, which have no broker clock).
#[cfg(test)]
pub fn apply_state(p: &Partition, local_id: i32, state: &PartitionImage) -> Transition {
    apply_state_at(p, local_id, state, runnel_core::clock::now_ms())
}

/// Applies a partition state from the metadata image (or an AlterPartition reply), at
/// `now` (ms; the broker's clock: a new leader's followers start their lag window then).
/// States older than the one held (by partition epoch) are ignored.
pub fn apply_state_at(
    p: &Partition,
    local_id: i32,
    state: &PartitionImage,
    now: i64,
) -> Transition {
    // The log lock orders this against appends: an append either finishes under the old
    // epoch or sees the new role.
    let log = p.log.lock();
    let mut r = p.replica.lock();
    if r.applied && state.partition_epoch < r.partition_epoch {
        return Transition::None;
    }
    let epoch_changed = !r.applied || state.leader_epoch != p.leader_epoch();
    let leader_changed = !r.applied || state.leader != r.leader;
    // A reassignment adds or removes this broker without a leader change.
    let membership_changed = r.replicas.contains(&local_id) != state.replicas.contains(&local_id);
    // An ISR change in flight stays pending until a newer partition state answers it: an
    // image that only repeats the current state (any unrelated metadata change brings
    // one) says nothing about whether the controller has applied it.
    let newer = !r.applied || state.partition_epoch > r.partition_epoch;
    r.applied = true;
    r.local_id = local_id;
    r.partition_epoch = state.partition_epoch;
    r.replicas = state.replicas.clone();
    r.isr = state.isr.clone();
    r.adding = state.adding_replicas.clone();
    if newer || epoch_changed || leader_changed {
        r.pending_isr = None;
    }
    if !(epoch_changed || leader_changed || membership_changed) {
        if r.leader == local_id {
            // Same leader, new replica set (a reassignment adding or dropping replicas):
            // track the newcomers' fetches, forget the departed.
            let log_end = log.log_end_offset();
            let replicas = state.replicas.clone();
            r.followers.retain(|id, _| replicas.contains(id));
            for id in replicas.into_iter().filter(|id| *id != local_id) {
                r.followers.entry(id).or_insert(FollowerProgress {
                    log_end: -1,
                    caught_up_ms: now,
                    leader_end_at_last_fetch: log_end,
                    last_fetch_ms: 0,
                });
            }
        }
        return Transition::None;
    }
    r.leader = state.leader;
    p.set_leader_epoch(state.leader_epoch);
    let log_end = log.log_end_offset();
    if state.leader == local_id {
        r.epoch_start_offset = log_end;
        r.followers = state
            .replicas
            .iter()
            .filter(|&&id| id != local_id)
            .map(|&id| {
                (
                    id,
                    FollowerProgress {
                        log_end: -1,
                        // A new leader gives every follower a full lag window.
                        caught_up_ms: now,
                        leader_end_at_last_fetch: log_end,
                        last_fetch_ms: 0,
                    },
                )
            })
            .collect();
        drop(r);
        drop(log);
        // The watermark may only move forward from what this broker knew as a follower.
        maybe_advance_high_watermark(p);
        Transition::BecameLeader
    } else if state.replicas.contains(&local_id) && state.leader >= 0 {
        r.followers.clear();
        Transition::BecameFollower {
            leader: state.leader,
        }
    } else {
        r.followers.clear();
        Transition::Stopped
    }
}

/// Leader: records a follower's fetch at `fetch_offset` (its log end), made at `now` (ms;
/// the caller's clock), and advances the high watermark (which wakes the fetches parked
/// on `p`). Returns the ISR the partition should have when the follower caught up and is
/// outside it.
pub fn on_follower_fetch(
    p: &Partition,
    follower: i32,
    fetch_offset: i64,
    now: i64,
) -> Option<ProposedIsr> {
    let leader_end = p.log.lock().log_end_offset();
    let expand = {
        let mut r = p.replica.lock();
        let hw = *p.high_watermark_ref();
        let Some(f) = r.followers.get_mut(&follower) else {
            return None;
        };
        if fetch_offset >= leader_end {
            f.caught_up_ms = now;
        } else if fetch_offset >= f.leader_end_at_last_fetch {
            f.caught_up_ms = f.caught_up_ms.max(f.last_fetch_ms);
        }
        f.log_end = fetch_offset;
        f.leader_end_at_last_fetch = leader_end;
        f.last_fetch_ms = now;
        let caught_up = fetch_offset >= hw && fetch_offset >= r.epoch_start_offset;
        if !r.isr.contains(&follower) && caught_up && r.pending_isr.is_none() {
            let mut isr = r.isr.clone();
            isr.push(follower);
            isr.sort_unstable();
            r.pending_isr = Some(isr.clone());
            Some(ProposedIsr {
                isr,
                leader_epoch: p.leader_epoch(),
                partition_epoch: r.partition_epoch,
            })
        } else {
            None
        }
    };
    maybe_advance_high_watermark(p);
    expand
}

/// Leader: the ISR without followers that have not caught up for `lag_max_ms` at `now`
/// (ms; the caller's clock), if that differs from the current ISR.
pub fn lagging_isr(p: &Partition, lag_max_ms: u64, now: i64) -> Option<ProposedIsr> {
    let mut r = p.replica.lock();
    if !r.is_leader() || r.pending_isr.is_some() {
        return None;
    }
    let lagging: Vec<i32> = r
        .isr
        .iter()
        .copied()
        .filter(|id| *id != r.local_id)
        .filter(|id| {
            r.followers
                .get(id)
                .is_some_and(|f| now - f.caught_up_ms > lag_max_ms as i64)
        })
        .collect();
    if lagging.is_empty() {
        return None;
    }
    let isr: Vec<i32> = r
        .isr
        .iter()
        .copied()
        .filter(|id| !lagging.contains(id))
        .collect();
    r.pending_isr = Some(isr.clone());
    Some(ProposedIsr {
        isr,
        leader_epoch: p.leader_epoch(),
        partition_epoch: r.partition_epoch,
    })
}

/// Leader: high watermark = the smallest log end over the ISR (followers not heard from
/// since the leader took over hold it where it is). Wakes waiters when it moves.
pub fn maybe_advance_high_watermark(p: &Partition) -> bool {
    // Called after every append: a follower returns before touching
    // the log lock. The lock order is log before replica, so the check is repeated below.
    if !p.replica.lock().is_leader() {
        return false;
    }
    let leader_end = p.log.lock().log_end_offset();
    let target = {
        let r = p.replica.lock();
        if !r.is_leader() {
            return false;
        }
        let mut hw = leader_end;
        let pending = r.pending_isr.iter().flatten();
        for id in r.isr.iter().chain(pending).filter(|id| **id != r.local_id) {
            match r.followers.get(id) {
                Some(f) if f.log_end >= 0 => hw = hw.min(f.log_end),
                _ => return false,
            }
        }
        hw
    };
    p.advance_high_watermark(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_core::clock::now_ms;
    use runnel_log::{LogConfig, PartitionLog};
    use std::sync::Arc;

    fn leader_of(dir: &std::path::Path) -> Arc<Partition> {
        let log = PartitionLog::open(&dir.join("t-0"), LogConfig::default(), 0).unwrap();
        let p = Partition::new("t", 0, log, Default::default());
        let state = PartitionImage {
            isr: vec![1, 2],
            ..PartitionImage::new(vec![1, 2, 3])
        };
        assert_eq!(apply_state(&p, 1, &state), Transition::BecameLeader);
        p
    }

    /// The partition applies the log-dir policy itself, so every writer (produce, the
    /// coordinators, markers) gets it: an I/O error takes the partition's log dir
    /// offline, after which its leader appends are refused while a partition on another
    /// dir keeps taking them.
    #[tokio::test]
    async fn an_io_error_takes_the_log_dir_offline_for_every_writer() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dirs: Arc<crate::storage::log_dirs::LogDirs> = Default::default();
        let open = |dir: &std::path::Path| {
            let log = PartitionLog::open(&dir.join("t-0"), LogConfig::default(), 0).unwrap();
            let p = Partition::new("t", 0, log, dirs.clone());
            let state = PartitionImage::new(vec![1]);
            assert_eq!(apply_state(&p, 1, &state), Transition::BecameLeader);
            p
        };
        let (on_a, on_b) = (open(a.path()), open(b.path()));
        let append = |p: &Partition| {
            let mut batch = runnel_log::batch::build_batch(&[(None, Some(b"v"))], 0);
            p.append_as_leader(|log, epoch| log.append(&mut batch, epoch, 0))
        };
        assert!(append(&on_a).is_ok());
        assert!(!on_a.is_offline());

        // A record the log refuses is not a failing disk.
        on_a.note_storage_error(&runnel_log::LogError::CorruptBatch("test".into()));
        assert!(!on_a.is_offline());
        on_a.note_storage_error(&runnel_log::LogError::Io {
            path: a.path().display().to_string(),
            source: std::io::Error::other("disk gone"),
        });
        assert!(on_a.is_offline());
        assert!(matches!(
            append(&on_a),
            Err(crate::storage::partition::AppendError::Offline)
        ));
        assert_eq!(dirs.offline(), vec![a.path().to_path_buf()]);
        assert!(append(&on_b).is_ok(), "the other log dir keeps serving");
        assert!(!on_b.is_offline());
    }

    /// An expansion in flight (maybe already committed by the controller) keeps counting
    /// in the high watermark when an image that merely repeats the current state arrives:
    /// dropping it there let a leader acknowledge records the newcomer lacked, and the
    /// newcomer could then be elected.
    #[tokio::test]
    async fn a_pending_isr_survives_an_image_that_repeats_the_current_state() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of(dir.path());
        let current = {
            let r = p.replica.lock();
            PartitionImage {
                isr: r.isr.clone(),
                leader: 1,
                leader_epoch: p.leader_epoch(),
                partition_epoch: r.partition_epoch,
                ..PartitionImage::new(vec![1, 2, 3])
            }
        };
        p.replica.lock().pending_isr = Some(vec![1, 2, 3]);
        assert_eq!(apply_state(&p, 1, &current), Transition::None);
        assert_eq!(p.replica.lock().pending_isr, Some(vec![1, 2, 3]));
        // The controller's answer (a newer partition epoch) replaces it.
        let answered = PartitionImage {
            isr: vec![1, 2, 3],
            partition_epoch: current.partition_epoch + 1,
            ..current
        };
        assert_eq!(apply_state(&p, 1, &answered), Transition::None);
        assert_eq!(p.replica.lock().pending_isr, None);
        assert_eq!(p.replica.lock().isr, vec![1, 2, 3]);
    }

    /// The data loss the history tests found: a leader is cut off with an acks=all batch
    /// not yet replicated, another broker takes over and writes other records at the same
    /// offsets, and the old leader, now a follower, cuts its tail and copies them. Its high
    /// watermark then passes the batch's end as a follower's; the producer waiting on it
    /// must hear NOT_LEADER_OR_FOLLOWER (and retry), never an acknowledgement of records
    /// that are gone.
    #[tokio::test]
    async fn an_acks_all_wait_fails_when_its_batch_was_cut_by_a_new_leader() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = leader_with_follower_caught_up(dir.path());
        let mut batch = runnel_log::batch::build_batch(&[(None, Some(&b"acked?"[..]))], 0);
        let written = p
            .append_as_leader(|log, epoch| log.append(&mut batch, epoch, 0))
            .unwrap();
        let at = crate::storage::partition::Appended::after(&written);
        assert!(
            p.high_watermark() < at.end,
            "follower 2 does not have it yet"
        );
        let waiter = {
            let p = p.clone();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            tokio::spawn(async move { p.wait_replicated(at, deadline).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;

        // Broker 2 now leads (epoch + 1); this broker follows, truncates to where its
        // epoch ended on 2 and copies 2's record into the same offset, with 2's high
        // watermark past it. No await in between: the waiter sees it all at once.
        let new_epoch = p.leader_epoch() + 1;
        let follower = PartitionImage {
            leader: 2,
            leader_epoch: new_epoch,
            partition_epoch: p.replica.lock().partition_epoch + 1,
            isr: vec![2, 3],
            ..PartitionImage::new(vec![1, 2, 3])
        };
        assert_eq!(
            apply_state(&p, 1, &follower),
            Transition::BecameFollower { leader: 2 }
        );
        p.log.lock().truncate_to(written.base_offset, 0).unwrap();
        let theirs = runnel_log::batch::build_batch(&[(None, Some(&b"theirs"[..]))], 0);
        let head =
            runnel_log::batch::stored_header(&theirs, written.base_offset, new_epoch, 0, None);
        let replicated = [&head[..], &theirs[head.len()..]].concat();
        assert!(p
            .append_as_follower(new_epoch, &replicated, 0, at.end + 1, 0)
            .unwrap());
        assert!(p.high_watermark() >= at.end);

        assert_eq!(
            waiter.await.unwrap(),
            Err(crate::error::ErrorCode::NotLeaderOrFollower)
        );
    }

    /// A leader (ISR 1, 2) whose follower 2 fetched up to the log end at the time returned.
    fn leader_with_follower_caught_up(dir: &std::path::Path) -> (Arc<Partition>, i64) {
        let p = leader_of(dir);
        let t0 = now_ms() + 1_000;
        let end = p.log.lock().log_end_offset();
        assert!(on_follower_fetch(&p, 2, end, t0).is_none());
        (p, t0)
    }

    /// Kafka's replica.lag.time.max.ms, in test time: a follower that fetched up to the
    /// leader's log end stays in the ISR for exactly the lag limit after that fetch.
    #[tokio::test]
    async fn a_follower_leaves_the_isr_exactly_when_it_has_not_caught_up_for_the_lag_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (p, t0) = leader_with_follower_caught_up(dir.path());
        assert!(lagging_isr(&p, 30_000, t0 + 30_000).is_none());
        let shrink = lagging_isr(&p, 30_000, t0 + 30_001).expect("2 lags");
        assert_eq!(shrink.isr, vec![1]);
        assert_eq!(p.replica.lock().pending_isr, Some(vec![1]));
        // While that proposal is pending, nothing else is proposed.
        assert!(lagging_isr(&p, 30_000, t0 + 60_000).is_none());
    }

    #[tokio::test]
    async fn a_follower_fetching_behind_the_end_has_caught_up_only_to_its_previous_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let (p, t0) = leader_with_follower_caught_up(dir.path());
        let batch = runnel_log::batch::build_batch(&[(None, Some(&b"v"[..]))], t0);
        p.log.lock().append(&batch, p.leader_epoch(), t0).unwrap();
        // It keeps fetching from offset 0, no longer the end. Kafka's rule: it has caught
        // up to where the leader's log ended at its previous fetch (t0), and no further.
        assert!(on_follower_fetch(&p, 2, 0, t0 + 10_000).is_none());
        assert!(on_follower_fetch(&p, 2, 0, t0 + 12_000).is_none());
        assert!(lagging_isr(&p, 15_000, t0 + 15_000).is_none());
        assert_eq!(
            lagging_isr(&p, 15_000, t0 + 15_001).map(|s| s.isr),
            Some(vec![1])
        );
    }
}
