//! KIP-932 share sessions (Kafka's `ShareSessionCache`): one per (group, member) on each
//! share-partition leader, holding the partitions the member fetches and the epoch its
//! next ShareFetch/ShareAcknowledge must carry. Epoch 0 opens (or reopens) a session,
//! -1 closes it, anything else must be the session's next epoch. At most
//! `group.share.max.share.sessions` sessions live at once.
//!
//! Not thread-safe by itself: `Shares` keeps the cache behind a mutex.

use std::collections::HashMap;

use uuid::Uuid;

use crate::error::ErrorCode;

pub const INITIAL_EPOCH: i32 = 0;
pub const FINAL_EPOCH: i32 = -1;

pub type SessionKey = (String, String);
pub type PartitionId = (Uuid, i32);

#[derive(Debug, Default)]
pub struct ShareSession {
    /// The epoch the next request must carry.
    pub next_epoch: i32,
    /// The partitions this member fetches here, in the order it first asked for them.
    pub partitions: Vec<PartitionId>,
}

#[derive(Default)]
pub struct ShareSessions {
    sessions: HashMap<SessionKey, ShareSession>,
}

/// What a request does to its session.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// The session continues (opened or updated): fetch these partitions.
    Open(Vec<PartitionId>),
    /// The session was closed: no fetching; the member's records here are released.
    Closed(Vec<PartitionId>),
}

fn next(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

impl ShareSessions {
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Applies a ShareFetch's session fields: `added` joins the session, `forgotten`
    /// leaves it.
    pub fn fetch(
        &mut self,
        key: SessionKey,
        epoch: i32,
        added: &[PartitionId],
        forgotten: &[PartitionId],
        max_sessions: usize,
    ) -> Result<Step, ErrorCode> {
        match epoch {
            INITIAL_EPOCH => {
                if !self.sessions.contains_key(&key) && self.sessions.len() >= max_sessions {
                    return Err(ErrorCode::ShareSessionLimitReached);
                }
                let mut s = ShareSession {
                    next_epoch: 1,
                    partitions: Vec::new(),
                };
                add(&mut s.partitions, added);
                let parts = s.partitions.clone();
                self.sessions.insert(key, s);
                Ok(Step::Open(parts))
            }
            FINAL_EPOCH => {
                let s = self
                    .sessions
                    .remove(&key)
                    .ok_or(ErrorCode::ShareSessionNotFound)?;
                Ok(Step::Closed(s.partitions))
            }
            e => {
                let s = self
                    .sessions
                    .get_mut(&key)
                    .ok_or(ErrorCode::ShareSessionNotFound)?;
                if e != s.next_epoch {
                    return Err(ErrorCode::InvalidShareSessionEpoch);
                }
                s.next_epoch = next(s.next_epoch);
                add(&mut s.partitions, added);
                s.partitions.retain(|p| !forgotten.contains(p));
                Ok(Step::Open(s.partitions.clone()))
            }
        }
    }

    /// Applies a ShareAcknowledge's epoch: it cannot open a session.
    pub fn acknowledge(&mut self, key: SessionKey, epoch: i32) -> Result<Step, ErrorCode> {
        if epoch == INITIAL_EPOCH {
            return Err(ErrorCode::InvalidShareSessionEpoch);
        }
        self.fetch(key, epoch, &[], &[], usize::MAX)
    }

    /// Whether `member` of `group` has a session here.
    pub fn contains(&self, group: &str, member: &str) -> bool {
        self.sessions
            .contains_key(&(group.to_string(), member.to_string()))
    }

    /// Drops every session of `member` in `group` (it left or was removed).
    pub fn remove_member(&mut self, group: &str, member: &str) -> Option<ShareSession> {
        self.sessions
            .remove(&(group.to_string(), member.to_string()))
    }
}

fn add(into: &mut Vec<PartitionId>, added: &[PartitionId]) {
    for p in added {
        if !into.contains(p) {
            into.push(*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(m: &str) -> SessionKey {
        ("g".into(), m.into())
    }

    #[test]
    fn epochs_follow_kip_932() {
        let mut c = ShareSessions::default();
        let p0 = (Uuid::from_u128(1), 0);
        let p1 = (Uuid::from_u128(1), 1);
        assert_eq!(
            c.fetch(key("a"), 1, &[p0], &[], 10),
            Err(ErrorCode::ShareSessionNotFound)
        );
        assert_eq!(
            c.fetch(key("a"), 0, &[p0], &[], 10),
            Ok(Step::Open(vec![p0]))
        );
        assert_eq!(
            c.fetch(key("a"), 2, &[], &[], 10),
            Err(ErrorCode::InvalidShareSessionEpoch)
        );
        assert_eq!(
            c.fetch(key("a"), 1, &[p1], &[], 10),
            Ok(Step::Open(vec![p0, p1]))
        );
        assert_eq!(
            c.fetch(key("a"), 2, &[], &[p0], 10),
            Ok(Step::Open(vec![p1]))
        );
        assert_eq!(
            c.acknowledge(key("a"), 0),
            Err(ErrorCode::InvalidShareSessionEpoch)
        );
        assert_eq!(c.acknowledge(key("a"), 3), Ok(Step::Open(vec![p1])));
        assert_eq!(
            c.fetch(key("b"), 0, &[], &[], 1),
            Err(ErrorCode::ShareSessionLimitReached)
        );
        assert_eq!(c.acknowledge(key("a"), -1), Ok(Step::Closed(vec![p1])));
        assert!(c.is_empty());
    }
}
