//! Persistence of one voter: the Raft vote, the log (an append-only file, fsynced before
//! an append is acknowledged) and the state machine ([`ClusterImage`]) with its snapshots.
//!
//! Layout under the node's directory:
//! - `vote.json`: the last vote (written to a temporary file, fsynced, renamed).
//! - `committed.json`: the last known committed log id (a hint, not fsynced).
//! - `log.bin`: frames `[len: u32 BE][crc32c: u32 BE][JSON]`; the first frame may be the
//!   purge marker, the others are log entries in index order. Appends add frames and fsync;
//!   a truncation or purge rewrites the file (temporary file, fsync, rename).
//! - `snapshot.json`: `{"meta": ..., "image": ...}`, the latest snapshot.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::MetaError;
use crate::image::{ClusterImage, MetadataRecord};

/// One log entry's payload: the records of one decision, applied atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatch(pub Vec<MetadataRecord>);

impl std::fmt::Display for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} metadata records", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// Runnel's Raft types: entries carry [`RecordBatch`]es, node ids are Kafka node ids.
    pub TypeConfig:
        D = RecordBatch,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type NodeId = u64;
pub type LogEntry = Entry<TypeConfig>;
type SError = StorageError<NodeId>;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

/// Upper bound of one frame in the log file (and on the wire): a larger length prefix means
/// a corrupt file.
pub(crate) const MAX_FRAME: usize = 64 << 20;

const LOG_FILE: &str = "log.bin";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
const SNAPSHOT_FILE: &str = "snapshot.json";

#[derive(Serialize, Deserialize)]
enum LogFrame {
    /// Everything up to this log id was purged (is in a snapshot).
    Purged(LogId<NodeId>),
    Entry(LogEntry),
}

fn encode_frame(frame: &LogFrame, out: &mut Vec<u8>) -> io::Result<()> {
    let body = serde_json::to_vec(frame).map_err(io::Error::other)?;
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

pub(crate) use runnel_core::fs::write_atomically as write_atomic;

struct LogInner {
    dir: PathBuf,
    file: File,
    entries: BTreeMap<u64, LogEntry>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

impl LogInner {
    fn path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Rewrites the whole file from memory (after a truncation or a purge).
    fn rewrite(&mut self) -> io::Result<()> {
        let mut buf = Vec::new();
        if let Some(p) = self.last_purged {
            encode_frame(&LogFrame::Purged(p), &mut buf)?;
        }
        for e in self.entries.values() {
            encode_frame(&LogFrame::Entry(e.clone()), &mut buf)?;
        }
        let path = self.path();
        write_atomic(&path, &buf)?;
        self.file = OpenOptions::new().append(true).open(&path)?;
        Ok(())
    }
}

/// The Raft log and vote of one voter. Cheap to clone (the reader shares it).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

/// Reads the frames of the log file; a torn last frame (a crash during an append that was
/// never acknowledged) is cut off, a bad frame before the end is an error.
fn read_log_file(path: &Path) -> Result<(Vec<LogFrame>, u64), MetaError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)
                .map_err(|e| MetaError::io(path, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(MetaError::io(path, e)),
    }
    let mut frames = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let bad = |detail: String| MetaError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("frame at byte {pos}: {detail}"),
        };
        if rest.len() < 8 {
            tracing::warn!(path = %path.display(), pos, "metadata log: cutting a torn frame header");
            break;
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_FRAME {
            return Err(bad(format!("length {len} is above the limit {MAX_FRAME}")));
        }
        if rest.len() < 8 + len {
            tracing::warn!(path = %path.display(), pos, "metadata log: cutting a torn frame");
            break;
        }
        let body = &rest[8..8 + len];
        let last = rest.len() == 8 + len;
        if crc32c::crc32c(body) != crc {
            if last {
                tracing::warn!(path = %path.display(), pos, "metadata log: cutting a last frame with a bad checksum");
                break;
            }
            return Err(bad("checksum mismatch".into()));
        }
        let frame: LogFrame =
            serde_json::from_slice(body).map_err(|e| bad(format!("not a log frame: {e}")))?;
        frames.push(frame);
        pos += 8 + len;
    }
    Ok((frames, pos as u64))
}

fn read_json_file<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, MetaError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| MetaError::Corrupt {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MetaError::io(path, e)),
    }
}

impl LogStore {
    pub fn open(dir: &Path) -> Result<LogStore, MetaError> {
        fs::create_dir_all(dir).map_err(|e| MetaError::io(dir, e))?;
        let path = dir.join(LOG_FILE);
        let (frames, good_len) = read_log_file(&path)?;
        let mut entries = BTreeMap::new();
        let mut last_purged = None;
        for frame in frames {
            match frame {
                LogFrame::Purged(p) => last_purged = Some(p),
                LogFrame::Entry(e) => {
                    entries.insert(e.log_id.index, e);
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| MetaError::io(&path, e))?;
        if file.metadata().map_err(|e| MetaError::io(&path, e))?.len() != good_len {
            file.set_len(good_len)
                .and_then(|_| file.sync_all())
                .map_err(|e| MetaError::io(&path, e))?;
        }
        let vote = read_json_file(&dir.join(VOTE_FILE))?;
        // Only a hint: a damaged file means "unknown".
        let committed = read_json_file(&dir.join(COMMITTED_FILE)).unwrap_or(None);
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                dir: dir.to_path_buf(),
                file,
                entries,
                last_purged,
                vote,
                committed,
            })),
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, SError> {
        let inner = self.inner.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SError> {
        let inner = self.inner.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SError> {
        let mut inner = self.inner.lock();
        let bytes = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        write_atomic(&inner.dir.join(VOTE_FILE), &bytes)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SError> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SError> {
        let mut inner = self.inner.lock();
        inner.committed = committed;
        // A hint for a faster restart; losing it only delays applying.
        if let Ok(bytes) = serde_json::to_vec(&committed) {
            let path = inner.dir.join(COMMITTED_FILE);
            let tmp = path.with_extension("tmp");
            if fs::write(&tmp, bytes)
                .and_then(|_| fs::rename(&tmp, &path))
                .is_err()
            {
                tracing::warn!(path = %path.display(), "could not save the committed log id");
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SError> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), SError>
    where
        I: IntoIterator<Item = LogEntry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock();
        let mut buf = Vec::new();
        let mut added = Vec::new();
        for e in entries {
            encode_frame(&LogFrame::Entry(e.clone()), &mut buf)
                .map_err(|err| StorageIOError::write_log_entry(e.log_id, &err))?;
            added.push(e);
        }
        let res = inner
            .file
            .write_all(&buf)
            .and_then(|_| inner.file.sync_data());
        match res {
            Ok(()) => {
                for e in added {
                    inner.entries.insert(e.log_id.index, e);
                }
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(err) => {
                let msg = format!("appending to {}: {err}", inner.path().display());
                // The file may now hold a torn frame: rewrite it from memory.
                let _ = inner.rewrite();
                callback.log_io_completed(Err(io::Error::new(err.kind(), msg.clone())));
                Err(StorageIOError::write_logs(&io::Error::other(msg)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SError> {
        let mut inner = self.inner.lock();
        inner.entries.split_off(&log_id.index);
        inner
            .rewrite()
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SError> {
        let mut inner = self.inner.lock();
        let keep = inner.entries.split_off(&(log_id.index + 1));
        inner.entries = keep;
        inner.last_purged = Some(log_id);
        inner
            .rewrite()
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// The latest snapshot: its meta and the image as JSON.
#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    image: ClusterImage,
}

/// The state machine: the cluster image, published on a watch channel after each apply.
pub struct StateMachine {
    dir: PathBuf,
    state: Applied,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    tx: watch::Sender<Arc<ClusterImage>>,
    snapshot_seq: u64,
}

/// What the state machine has applied: the image, the last entry and the membership.
#[derive(Clone)]
struct Applied {
    image: Arc<ClusterImage>,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
}

impl StateMachine {
    /// Loads the latest snapshot of `dir`, if any.
    pub fn open(dir: &Path) -> Result<StateMachine, MetaError> {
        fs::create_dir_all(dir).map_err(|e| MetaError::io(dir, e))?;
        let path = dir.join(SNAPSHOT_FILE);
        let file: Option<SnapshotFile> = read_json_file(&path)?;
        let (image, last_applied, membership, snapshot) = match file {
            Some(f) => {
                let data = serde_json::to_vec(&f.image).map_err(|e| MetaError::Corrupt {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
                (
                    f.image,
                    f.meta.last_log_id,
                    f.meta.last_membership.clone(),
                    Some(StoredSnapshot { meta: f.meta, data }),
                )
            }
            None => (ClusterImage::default(), None, Membership::default(), None),
        };
        let image = Arc::new(image);
        let (tx, _) = watch::channel(image.clone());
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            state: Applied {
                image,
                last_applied,
                membership,
            },
            snapshot: Arc::new(Mutex::new(snapshot)),
            tx,
            snapshot_seq: 0,
        })
    }

    /// The sender, so that the node can hand out receivers after the state machine moved
    /// into Raft.
    pub fn sender(&self) -> watch::Sender<Arc<ClusterImage>> {
        self.tx.clone()
    }
}

fn save_snapshot(
    dir: &Path,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
    image: &ClusterImage,
) -> io::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct SnapshotFileRef<'a> {
        meta: &'a SnapshotMeta<NodeId, openraft::BasicNode>,
        image: &'a ClusterImage,
    }
    let file = serde_json::to_vec(&SnapshotFileRef { meta, image }).map_err(io::Error::other)?;
    write_atomic(&dir.join(SNAPSHOT_FILE), &file)?;
    serde_json::to_vec(image).map_err(io::Error::other)
}

pub struct SnapshotBuilder {
    dir: PathBuf,
    state: Applied,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SError> {
        let snapshot_id = match self.state.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.seq),
            None => format!("0-0-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.state.last_applied,
            last_membership: self.state.membership.clone(),
            snapshot_id,
        };
        let data = save_snapshot(&self.dir, &meta, &self.state.image)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *self.snapshot.lock() = Some(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), SError> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, SError>
    where
        I: IntoIterator<Item = LogEntry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let state = &mut self.state;
        let image = Arc::make_mut(&mut state.image);
        for e in entries {
            let index = e.log_id.index;
            match e.payload {
                EntryPayload::Blank => image.applied_index = index,
                EntryPayload::Normal(batch) => {
                    image.applied_index = index;
                    for r in &batch.0 {
                        image.apply(index, r);
                    }
                }
                EntryPayload::Membership(m) => {
                    image.applied_index = index;
                    state.membership = StoredMembership::new(Some(e.log_id), m);
                }
            }
            state.last_applied = Some(e.log_id);
            out.push(());
        }
        self.tx.send_replace(self.state.image.clone());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        SnapshotBuilder {
            dir: self.dir.clone(),
            state: self.state.clone(),
            snapshot: self.snapshot.clone(),
            seq: self.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SError> {
        let data = snapshot.into_inner();
        let mut image: ClusterImage = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        image.applied_index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let data = save_snapshot(&self.dir, meta, &image)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *self.snapshot.lock() = Some(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        self.state = Applied {
            image: Arc::new(image),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.tx.send_replace(self.state.image.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SError> {
        Ok(self.snapshot.lock().clone().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn entry(index: u64) -> LogEntry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(RecordBatch(vec![MetadataRecord::BrokerConfig {
                key: format!("k{index}"),
                value: None,
            }])),
        }
    }

    fn write_entries(path: &Path, range: std::ops::Range<u64>) -> Vec<u8> {
        let mut buf = Vec::new();
        for i in range {
            encode_frame(&LogFrame::Entry(entry(i)), &mut buf).unwrap();
        }
        fs::write(path, &buf).unwrap();
        buf
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(0..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn a_torn_last_frame_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let good = write_entries(&path, 1..4);
        let mut torn = good.clone();
        torn.extend_from_slice(&[0, 0, 0, 50, 1, 2]);
        fs::write(&path, &torn).unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3]);
        assert_eq!(fs::metadata(&path).unwrap().len(), good.len() as u64);
    }

    #[test]
    fn a_bad_frame_before_the_end_is_an_error_naming_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut bytes = write_entries(&path, 1..4);
        bytes[10] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let e = LogStore::open(dir.path())
            .err()
            .expect("corruption detected");
        let msg = e.to_string();
        assert!(
            msg.contains("log.bin") && msg.contains("byte 0") && msg.contains("checksum"),
            "{msg}"
        );
        // A length prefix beyond the limit is refused without allocating it.
        fs::write(&path, [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1]).unwrap();
        let e = LogStore::open(dir.path())
            .err()
            .expect("bad length detected");
        assert!(e.to_string().contains("above the limit"), "{e}");
    }

    #[tokio::test]
    async fn vote_truncation_and_purge_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        write_entries(&dir.path().join(LOG_FILE), 1..10);
        let mut store = LogStore::open(dir.path()).unwrap();
        let vote = Vote::new(3, 2);
        store.save_vote(&vote).await.unwrap();
        store.truncate(entry(8).log_id).await.unwrap();
        store.purge(entry(3).log_id).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(entry(3).log_id));
        assert_eq!(state.last_log_id, Some(entry(7).log_id));
    }

    #[tokio::test]
    async fn snapshots_restore_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let rx = sm.sender().subscribe();
        sm.apply(vec![entry(1), entry(2)]).await.unwrap();
        assert_eq!(rx.borrow().applied_index, 2);
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(entry(2).log_id));
        drop(sm);
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(entry(2).log_id));
        assert_eq!(sm.sender().borrow().applied_index, 2);
        // A snapshot that is not an image is refused, naming the snapshot.
        let bad = sm
            .install_snapshot(&snap.meta, Box::new(Cursor::new(b"nope".to_vec())))
            .await
            .unwrap_err();
        assert!(bad.to_string().contains("snapshot"), "{bad}");
    }
}
