//! Peers whose replica fetch connection to or from this broker just closed (EOF or
//! reset): their process may be gone, and the controller is deciding (it probes the
//! peer's port and fences it at once if it refuses, issue 19).
//!
//! Two uses: the report to the controller is sent at most once a [`REPORT_INTERVAL`] per
//! peer; and Metadata holds, for at most [`UNDECIDED_FOR`] after the close, an answer that
//! would name such a peer as a partition's leader, until this broker's image shows the
//! peer fenced. A client that lost its connection to a killed leader asks Metadata at
//! once; answered before the fence, it would be sent back to the dead broker, and
//! librdkafka only asks again at its once-a-second topic scan (a failover of over a
//! second instead of the fence's tens of milliseconds). Answered after it, the client
//! goes straight to the new leader. A live peer's port accepts the probe and is not
//! fenced: its partitions' Metadata answers are late by at most [`UNDECIDED_FOR`], once
//! per closed connection.
//!
//! Thread-safe (one mutex; never held across an await).

use std::collections::HashMap;
use std::time::Duration;

use runnel_meta::ClusterImage;
use tokio::time::Instant;

/// How often one peer's closed replica connections are reported to the controller.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// How long after a peer's replica connection closed Metadata may wait for the
/// controller's decision on it. The controller decides a killed broker's fence within
/// tens of milliseconds, a few hundred when the active controller itself died and the
/// quorum elects a new one first (issue 19's rounds: at most 371 ms); librdkafka asks
/// again a second later, so waiting longer than this would cost more than it saves.
pub const UNDECIDED_FOR: Duration = Duration::from_millis(600);

/// How long Metadata waits, when another broker leads what it is asked about, for this
/// broker to notice that broker's connections closing: they close at the same instant as
/// the asking client's, and the client can be quicker than this broker's tasks.
pub const CLOSE_NOTICE: Duration = Duration::from_millis(5);

/// A peer (at one broker epoch) whose connection closed and that is not fenced yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undecided {
    pub id: i32,
    pub epoch: i64,
    /// When Metadata stops waiting for the decision on it.
    pub until: Instant,
}

impl Undecided {
    /// Whether `image` still shows this peer, at this epoch, unfenced.
    pub fn pending(&self, image: &ClusterImage) -> bool {
        image
            .brokers
            .get(&self.id)
            .is_some_and(|b| !b.fenced && b.epoch == self.epoch)
    }
}

/// The last report per peer: when, and at which broker epoch.
#[derive(Default)]
pub struct ClosedPeers {
    reports: parking_lot::Mutex<HashMap<i32, (Instant, i64)>>,
}

impl ClosedPeers {
    /// Notes that a connection of peer `id` (at `epoch`) closed at `now`; true when the
    /// controller should be told (not already told within [`REPORT_INTERVAL`] for this
    /// epoch).
    pub fn note(&self, id: i32, epoch: i64, now: Instant) -> bool {
        let mut reports = self.reports.lock();
        let recent = reports
            .get(&id)
            .is_some_and(|&(at, e)| e == epoch && now.duration_since(at) < REPORT_INTERVAL);
        if !recent {
            reports.insert(id, (now, epoch));
        }
        !recent
    }

    /// The peers reported within [`UNDECIDED_FOR`] before `now` that `image` still shows
    /// unfenced at the reported epoch.
    pub fn undecided(&self, image: &ClusterImage, now: Instant) -> Vec<Undecided> {
        self.reports
            .lock()
            .iter()
            .map(|(&id, &(at, epoch))| Undecided {
                id,
                epoch,
                until: at + UNDECIDED_FOR,
            })
            .filter(|u| now < u.until && u.pending(image))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brokers `(id, epoch, fenced)`.
    fn image(brokers: &[(i32, i64, bool)]) -> ClusterImage {
        let ids: Vec<(i32, bool)> = brokers.iter().map(|&(id, _, f)| (id, f)).collect();
        let mut img = super::super::tests::image(&ids);
        for &(id, epoch, _) in brokers {
            img.brokers.get_mut(&id).expect("just added").epoch = epoch;
        }
        img
    }

    #[test]
    fn a_closed_peer_is_undecided_until_fenced_or_the_wait_is_over() {
        let t0 = Instant::now();
        let peers = ClosedPeers::default();
        assert!(peers.note(2, 7, t0));
        let live = image(&[(1, 1, false), (2, 7, false), (3, 1, false)]);
        let u = peers.undecided(&live, t0 + Duration::from_millis(10));
        assert_eq!(
            u,
            vec![Undecided {
                id: 2,
                epoch: 7,
                until: t0 + UNDECIDED_FOR
            }]
        );
        // Fenced: decided.
        let fenced = image(&[(1, 1, false), (2, 7, true), (3, 1, false)]);
        assert!(peers.undecided(&fenced, t0).is_empty());
        assert!(!u[0].pending(&fenced));
        // Registered again at a new epoch (it restarted): not the process that closed.
        let back = image(&[(1, 1, false), (2, 9, false), (3, 1, false)]);
        assert!(peers.undecided(&back, t0).is_empty());
        // Still unfenced once the wait is over: Metadata answers from the image as it is.
        assert!(peers.undecided(&live, t0 + UNDECIDED_FOR).is_empty());
        // Never reported: nothing to wait for.
        assert!(!peers.undecided(&live, t0).iter().any(|u| u.id != 2));
    }

    #[test]
    fn a_peer_is_reported_once_a_second_per_epoch() {
        let t0 = Instant::now();
        let peers = ClosedPeers::default();
        assert!(peers.note(2, 7, t0));
        assert!(!peers.note(2, 7, t0 + Duration::from_millis(500)));
        // A later close of the same process, after the interval: reported, and the wait
        // runs from it.
        let t1 = t0 + REPORT_INTERVAL;
        assert!(peers.note(2, 7, t1));
        let live = image(&[(2, 7, false)]);
        assert_eq!(peers.undecided(&live, t1)[0].until, t1 + UNDECIDED_FOR);
        // A new incarnation of the peer is reported at once.
        assert!(peers.note(2, 8, t1 + Duration::from_millis(1)));
        assert!(peers.note(3, 1, t0));
    }
}
