//! Incremental fetch sessions (KIP-227).
//!
//! A consumer of many partitions sends the full partition list once (epoch 0) and
//! afterwards only what changed; the broker remembers the rest and answers with only the
//! partitions that have news (records, an error, a moved high watermark or log start).
//!
//! Thread-safe: one mutex over the cache, held briefly per fetch.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use runnel_protocol::kp::messages::TopicName;
use uuid::Uuid;

/// Kafka's `max.incremental.fetch.session.cache.slots` default.
pub const MAX_SESSIONS: usize = 1000;

/// Identifies a partition in a session: by topic id (Fetch v13+) or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: TopicName,
    pub topic_id: Uuid,
    pub partition: i32,
}

#[derive(Debug, Clone)]
pub struct SessionPartition {
    pub key: PartitionKey,
    pub fetch_offset: i64,
    pub max_bytes: usize,
    /// The leader epoch the client believes current (-1: not checked).
    pub current_leader_epoch: i32,
    /// What the client was last told; a change is news worth a response entry.
    pub sent_high_watermark: i64,
    pub sent_log_start_offset: i64,
}

struct Session {
    next_epoch: i32,
    partitions: Vec<SessionPartition>,
    last_used: Instant,
}

#[derive(Default)]
pub struct FetchSessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<i32, Session>,
    next_id: i32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SessionError {
    NotFound,
    InvalidEpoch,
}

impl FetchSessions {
    /// Starts a session holding `partitions`; returns its id. The least recently used
    /// session is evicted when the cache is full.
    pub fn create(&self, partitions: Vec<SessionPartition>) -> i32 {
        let mut inner = self.inner.lock();
        if inner.sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id)
            {
                inner.sessions.remove(&oldest);
            }
        }
        let mut id = inner.next_id;
        loop {
            id = if id >= i32::MAX - 1 { 1 } else { id + 1 };
            if !inner.sessions.contains_key(&id) {
                break;
            }
        }
        inner.next_id = id;
        tracing::debug!(
            session = id,
            partitions = partitions.len(),
            "fetch session opened"
        );
        inner.sessions.insert(
            id,
            Session {
                next_epoch: 1,
                partitions,
                last_used: Instant::now(),
            },
        );
        id
    }

    pub fn remove(&self, id: i32) {
        self.inner.lock().sessions.remove(&id);
    }

    /// Applies an incremental request: checks the epoch, updates or adds `changed`
    /// partitions, drops `forgotten` ones, and returns the session's partitions.
    pub fn update(
        &self,
        id: i32,
        epoch: i32,
        changed: Vec<SessionPartition>,
        forgotten: &[PartitionKey],
    ) -> Result<Vec<SessionPartition>, SessionError> {
        let mut inner = self.inner.lock();
        let session = inner.sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        if session.next_epoch != epoch {
            return Err(SessionError::InvalidEpoch);
        }
        session.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
        session.last_used = Instant::now();
        session.partitions.retain(|p| !forgotten.contains(&p.key));
        for c in changed {
            match session.partitions.iter_mut().find(|p| p.key == c.key) {
                Some(p) => {
                    p.fetch_offset = c.fetch_offset;
                    p.max_bytes = c.max_bytes;
                    p.current_leader_epoch = c.current_leader_epoch;
                }
                None => session.partitions.push(c),
            }
        }
        Ok(session.partitions.clone())
    }

    /// Records what was sent for a partition of a session.
    pub fn record_sent(
        &self,
        id: i32,
        key: &PartitionKey,
        high_watermark: i64,
        log_start_offset: i64,
    ) {
        let mut inner = self.inner.lock();
        if let Some(p) = inner
            .sessions
            .get_mut(&id)
            .and_then(|s| s.partitions.iter_mut().find(|p| &p.key == key))
        {
            p.sent_high_watermark = high_watermark;
            p.sent_log_start_offset = log_start_offset;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(p: i32, offset: i64) -> SessionPartition {
        SessionPartition {
            key: PartitionKey {
                topic: TopicName::default(),
                topic_id: Uuid::nil(),
                partition: p,
            },
            fetch_offset: offset,
            max_bytes: 100,
            current_leader_epoch: -1,
            sent_high_watermark: -1,
            sent_log_start_offset: -1,
        }
    }

    #[test]
    fn epochs_advance_and_partitions_update() {
        let s = FetchSessions::default();
        let id = s.create(vec![part(0, 0), part(1, 0)]);
        assert_eq!(
            s.update(id, 2, vec![], &[]).unwrap_err(),
            SessionError::InvalidEpoch
        );
        let ps = s
            .update(id, 1, vec![part(0, 5), part(2, 0)], &[part(1, 0).key])
            .unwrap();
        let offsets: Vec<_> = ps
            .iter()
            .map(|p| (p.key.partition, p.fetch_offset))
            .collect();
        assert_eq!(offsets, vec![(0, 5), (2, 0)]);
        assert!(s.update(id, 2, vec![], &[]).is_ok());
        s.remove(id);
        assert_eq!(
            s.update(id, 3, vec![], &[]).unwrap_err(),
            SessionError::NotFound
        );
    }
}
