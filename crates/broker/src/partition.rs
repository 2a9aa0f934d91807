//! One partition this broker leads: its log behind a mutex, and the group-commit
//! machinery that makes acks=all wait for an fdatasync shared by concurrent producers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use runnel_log::{LogError, PartitionLog};
use tokio::sync::{watch, Notify};

/// Thread-safe: the log is behind a mutex held only for the duration of one call.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Mutex<PartitionLog>,
    /// Single-node leadership epoch; bumps come with replication.
    pub leader_epoch: i32,
    /// Log end offset up to which data has been fdatasynced.
    durable: watch::Sender<i64>,
    flush_wanted: Notify,
    closed: AtomicBool,
}

impl Partition {
    pub fn new(topic: &str, index: i32, log: PartitionLog) -> Arc<Self> {
        let end = log.log_end_offset();
        let (durable, _) = watch::channel(end);
        let p = Arc::new(Partition {
            topic: topic.to_string(),
            index,
            log: Mutex::new(log),
            leader_epoch: 0,
            durable,
            flush_wanted: Notify::new(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(group_commit_loop(p.clone()));
        p
    }

    /// Stops the group-commit task (the partition is being closed or deleted).
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.flush_wanted.notify_one();
    }

    /// The offset below which consumers may read. On a single node every appended
    /// record is as replicated as it will ever be, so this is the log end.
    pub fn high_watermark(&self) -> i64 {
        self.log.lock().log_end_offset()
    }

    /// Waits until everything below `offset` is on disk. Concurrent waiters share one
    /// fdatasync: the flusher syncs once for all requests that arrived while it worked.
    pub async fn wait_durable(&self, offset: i64) -> Result<(), LogError> {
        let mut rx = self.durable.subscribe();
        loop {
            let durable = *rx.borrow_and_update();
            if durable >= offset {
                return Ok(());
            }
            if durable < 0 {
                return Err(LogError::Io {
                    path: format!("{}-{}", self.topic, self.index),
                    source: std::io::Error::other("fdatasync failed"),
                });
            }
            self.flush_wanted.notify_one();
            if rx.changed().await.is_err() {
                return Err(LogError::Io {
                    path: format!("{}-{}", self.topic, self.index),
                    source: std::io::Error::other("partition closed"),
                });
            }
        }
    }
}

/// One fdatasync per round, covering every append that happened before it started.
/// A failed fdatasync poisons the partition's durability for good (waiters get errors):
/// after a failed fsync the kernel may have dropped dirty pages, so later successes
/// prove nothing about earlier data.
async fn group_commit_loop(p: Arc<Partition>) {
    loop {
        p.flush_wanted.notified().await;
        if p.closed.load(Ordering::Acquire) {
            return;
        }
        let (end, file) = {
            let log = p.log.lock();
            (log.log_end_offset(), log.active_file())
        };
        let synced = tokio::task::spawn_blocking(move || file.sync_data()).await;
        match synced {
            Ok(Ok(())) => {
                p.durable.send_if_modified(|d| {
                    let advanced = *d >= 0 && end > *d;
                    if advanced {
                        *d = end;
                    }
                    advanced
                });
            }
            _ => {
                tracing::error!(topic = %p.topic, partition = p.index, "fdatasync failed; acks=all producers get an error");
                p.durable.send_replace(-1);
            }
        }
    }
}
