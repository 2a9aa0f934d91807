//! The checkpoint directory, in Spark's layout:
//!
//! ```text
//! <checkpointLocation>/metadata          {"id":"<query id>","runnel":{query identity}}
//! <checkpointLocation>/offsets/<batchId> v1, batch metadata JSON, one offsets JSON per source
//! <checkpointLocation>/commits/<batchId> v1, {"nextBatchWatermarkMs":...}
//! <checkpointLocation>/state/<batchId>   the stateful operator's state after the batch: a
//!                                        full snapshot, or (an operator's changelog) a
//!                                        delta over the file before it
//! ```
//!
//! The offsets entry is written (and fsynced) before a batch runs, the commit entry after
//! its output and state are durable. A restart re-runs the last batch that has offsets but
//! no commit, with the same offsets and the state of the batch before it.
//! Old entries are deleted beyond `MIN_BATCHES_TO_RETAIN`.
//!
//! The query's identity (a hash of its text, and its sources) is recorded in `metadata`
//! at its first start; another query on the same checkpoint is refused, as Spark refuses
//! incompatible changes, instead of resuming from offsets and state that are not its own.

use crate::error::{Result, SqlError};
use crate::source::{offsets_json, parse_offsets_json, PartitionOffsets};
use serde_json::json;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Spark's `spark.sql.streaming.minBatchesToRetain` default.
pub const MIN_BATCHES_TO_RETAIN: u64 = 100;
/// State snapshots kept (the last one is enough to resume; one more for safety), with
/// the deltas after the older one.
const STATE_SNAPSHOTS_KEPT: usize = 2;
/// How a state file that is a delta over the one before it starts (Spark's changelog
/// checkpointing); any other state file is a full snapshot.
pub const DELTA_MAGIC: &[u8] = b"RUNNEL-DELTA-1\n";

/// Spark's `spark.sql.streaming.stateStore.minDeltasForSnapshot` default.
pub const DEFAULT_DELTAS_PER_SNAPSHOT: u32 = 10;

/// A reader over a state file's body once its checksum and `magic` are checked.
pub(crate) fn checked_reader<'a>(bytes: &'a [u8], magic: &[u8], what: &str) -> Result<Reader<'a>> {
    let err = |m: &str| SqlError::Checkpoint {
        path: what.to_string(),
        message: m.to_string(),
    };
    if bytes.len() < magic.len() + 20 {
        return Err(err("state file is truncated"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(err("state file checksum mismatch"));
    }
    let mut r = Reader {
        data: body,
        pos: 0,
        what: what.to_string(),
    };
    if r.bytes(magic.len())? != magic {
        return Err(err("not a runnel state file of this kind"));
    }
    Ok(r)
}

/// Reads a state file's fields in order; errors name the file and the byte.
pub(crate) struct Reader<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
    pub(crate) what: String,
}

impl<'a> Reader<'a> {
    pub(crate) fn error(&self, m: &str) -> SqlError {
        SqlError::Checkpoint {
            path: self.what.clone(),
            message: format!("{m} at byte {}", self.pos),
        }
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return Err(self.error("state file is truncated"));
        }
        let b = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }
    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }
}

/// A state kept as Spark's changelog checkpointing keeps it: full snapshots and the
/// deltas written after them.
pub trait Changelog {
    fn cadence_mut(&mut self) -> &mut SnapshotCadence;
    /// Replaces the state with a full snapshot; `what` names the file for errors.
    fn restore_snapshot(&mut self, bytes: &[u8], what: &str) -> Result<()>;
    /// Applies one delta to the state.
    fn apply_delta(&mut self, bytes: &[u8], what: &str) -> Result<()>;

    /// Restores from a full snapshot and the deltas written after it, in order (what
    /// `Checkpoint::read_state_chain` gives).
    fn restore_chain(&mut self, files: &[(Vec<u8>, String)]) -> Result<()> {
        let Some(((first, what), deltas)) = files.split_first() else {
            return Ok(());
        };
        self.restore_snapshot(first, what)?;
        for (bytes, what) in deltas {
            self.apply_delta(bytes, what)?;
        }
        self.cadence_mut().restored(deltas.len());
        Ok(())
    }
}

/// State keys in order.
pub type Keys<'a> = Vec<&'a Box<[u8]>>;

/// The keys a batch touched, in order, split into those still in `state` and those
/// removed (what a delta writes).
pub fn split_touched<'a, V>(
    touched: &'a std::collections::HashSet<Box<[u8]>>,
    state: &std::collections::HashMap<Box<[u8]>, V>,
) -> (Keys<'a>, Keys<'a>) {
    let mut keys: Vec<&Box<[u8]>> = touched.iter().collect();
    keys.sort();
    keys.into_iter().partition(|k| state.contains_key(*k))
}

/// When an operator with changelog checkpointing writes a full snapshot rather than a
/// delta: first, and after every `every` deltas (Spark's `minDeltasForSnapshot`; 0:
/// always). Not thread-safe: part of its operator.
#[derive(Clone, Debug)]
pub struct SnapshotCadence {
    /// Deltas written since the last full snapshot; None: nothing written or restored.
    since: Option<u32>,
    pub every: u32,
}

impl SnapshotCadence {
    pub fn new(every: u32) -> SnapshotCadence {
        SnapshotCadence { since: None, every }
    }

    /// Whether the next state file is a full snapshot; counts it.
    pub fn next_is_full(&mut self) -> bool {
        let full = match self.since {
            None => true,
            Some(n) => self.every == 0 || n >= self.every,
        };
        self.since = Some(if full { 0 } else { self.since.unwrap_or(0) + 1 });
        full
    }

    /// The next state file is a full snapshot (the changes tracked for a delta were
    /// dropped: `bound_changes`).
    pub fn force_full(&mut self) {
        self.since = None;
    }

    /// The state was restored from a snapshot and `deltas` deltas after it.
    pub fn restored(&mut self, deltas: usize) {
        self.since = Some(deltas as u32);
    }
}
/// Changes tracked for the next delta beyond the state's own size before they are
/// dropped and the next state file is a full snapshot instead: a query without a
/// checkpoint never writes a state file, and what it tracks must not grow with every key
/// it ever saw.
pub const MAX_CHANGES_OVER_STATE: usize = 100_000;

/// Drops `touched` (the keys changed since the last state file) once it holds more than
/// `state_len + MAX_CHANGES_OVER_STATE` keys; the next state file is then a full snapshot.
pub fn bound_changes(
    touched: &mut std::collections::HashSet<Box<[u8]>>,
    state_len: usize,
    cadence: &mut SnapshotCadence,
) {
    if touched.len() > state_len + MAX_CHANGES_OVER_STATE {
        *touched = Default::default();
        cadence.force_full();
    }
}

/// Largest checkpoint file we will read.
const MAX_ENTRY_BYTES: u64 = 64 << 20;

/// One offsets-log entry.
#[derive(Clone, Debug, PartialEq)]
pub struct OffsetEntry {
    pub batch_id: u64,
    pub watermark_ms: i64,
    pub timestamp_ms: i64,
    /// End offsets per source, in declaration order.
    pub sources: Vec<PartitionOffsets>,
}

/// A checkpoint directory. Not thread-safe: one query owns it.
pub struct Checkpoint {
    root: PathBuf,
    pub query_id: String,
    /// The `metadata` file's JSON.
    meta: serde_json::Value,
}

/// What makes a checkpoint's query that query: its text (None from the Rust API, which
/// has no text) and its streaming sources' descriptions, in declaration order.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryIdentity {
    pub text: Option<String>,
    pub sources: Vec<String>,
}

impl QueryIdentity {
    /// The text with whitespace runs folded, so reformatting a query is no change.
    fn folded_text(&self) -> Option<String> {
        self.text
            .as_ref()
            .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// CRC32C of the folded text, in hex.
    fn text_hash(&self) -> Option<String> {
        self.folded_text()
            .map(|t| format!("{:08x}", crc32c::crc32c(t.as_bytes())))
    }
}

/// At most this much of a query's text goes into an error message.
const QUERY_TEXT_SHOWN: usize = 160;

fn shown(text: &str) -> String {
    match text.char_indices().nth(QUERY_TEXT_SHOWN) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> SqlError {
    SqlError::io(path.display().to_string(), e)
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry")
    ));
    {
        let mut f = fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
        f.sync_data().map_err(|e| io_err(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read_limited(path: &Path) -> Result<Vec<u8>> {
    read_capped(path, MAX_ENTRY_BYTES)
}

/// A checkpoint file's bytes; a file larger than `cap` is refused.
fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.len() > cap {
        return Err(SqlError::Checkpoint {
            path: path.display().to_string(),
            message: format!("larger than {cap} bytes"),
        });
    }
    fs::read(path).map_err(|e| io_err(path, e))
}

impl Checkpoint {
    /// Opens or creates a checkpoint directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Checkpoint> {
        let root = root.into();
        for sub in ["offsets", "commits", "state"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
        }
        let meta = root.join("metadata");
        let (query_id, meta_json) = if meta.exists() {
            let v: serde_json::Value =
                serde_json::from_slice(&read_limited(&meta)?).map_err(|e| {
                    SqlError::Checkpoint {
                        path: meta.display().to_string(),
                        message: e.to_string(),
                    }
                })?;
            let id = v["id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| SqlError::Checkpoint {
                    path: meta.display().to_string(),
                    message: "no id".into(),
                })?;
            (id, v)
        } else {
            let id = uuid::Uuid::new_v4().to_string();
            let v = json!({ "id": id });
            write_atomic(&meta, v.to_string().as_bytes())?;
            (id, v)
        };
        Ok(Checkpoint {
            root,
            query_id,
            meta: meta_json,
        })
    }

    /// Records `identity` in `metadata` if none is recorded yet (a new checkpoint, or
    /// one from before identities were kept); otherwise refuses a query whose sources or
    /// text differ from the recorded ones, saying what differs.
    pub fn check_identity(&mut self, identity: &QueryIdentity) -> Result<()> {
        let refuse = |what: String| SqlError::Checkpoint {
            path: self.root.display().to_string(),
            message: format!(
                "{what}; a checkpoint belongs to one query (Spark refuses such changes): \
                 give this query a new checkpointLocation, or delete the directory to start over"
            ),
        };
        let recorded = &self.meta["runnel"];
        if recorded.is_object() {
            let sources: Vec<String> = recorded["sources"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if sources != identity.sources {
                return Err(refuse(format!(
                    "written by a query reading {}, this query reads {}",
                    sources.join(", "),
                    identity.sources.join(", ")
                )));
            }
            if let (Some(old), Some(new)) = (recorded["queryHash"].as_str(), identity.text_hash()) {
                if old != new {
                    return Err(refuse(format!(
                        "written by another query (text hash {old}: {:?}), this query's text hash is {new}: {:?}",
                        shown(recorded["query"].as_str().unwrap_or("")),
                        shown(&identity.folded_text().unwrap_or_default())
                    )));
                }
            }
            return Ok(());
        }
        self.meta["runnel"] = json!({
            "queryHash": identity.text_hash(),
            "query": identity.folded_text(),
            "sources": identity.sources,
        });
        write_atomic(
            &self.root.join("metadata"),
            self.meta.to_string().as_bytes(),
        )
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn batch_ids(&self, sub: &str) -> Result<Vec<u64>> {
        let d = self.root.join(sub);
        let mut ids: Vec<u64> = fs::read_dir(&d)
            .map_err(|e| io_err(&d, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    pub fn latest_offsets(&self) -> Result<Option<OffsetEntry>> {
        match self.batch_ids("offsets")?.last() {
            Some(&id) => self.read_offsets(id).map(Some),
            None => Ok(None),
        }
    }

    pub fn latest_commit(&self) -> Result<Option<u64>> {
        Ok(self.batch_ids("commits")?.last().copied())
    }

    pub fn read_offsets(&self, batch_id: u64) -> Result<OffsetEntry> {
        let path = self.root.join("offsets").join(batch_id.to_string());
        let bad = |m: String| SqlError::Checkpoint {
            path: path.display().to_string(),
            message: m,
        };
        let text = String::from_utf8(read_limited(&path)?).map_err(|e| bad(e.to_string()))?;
        let mut lines = text.lines();
        if lines.next() != Some("v1") {
            return Err(bad("unsupported version (expected v1)".into()));
        }
        let meta: serde_json::Value = serde_json::from_str(lines.next().unwrap_or(""))
            .map_err(|e| bad(format!("metadata: {e}")))?;
        let sources = lines
            .map(|l| parse_offsets_json(l).map_err(&bad))
            .collect::<Result<Vec<_>>>()?;
        Ok(OffsetEntry {
            batch_id,
            watermark_ms: meta["batchWatermarkMs"].as_i64().unwrap_or(0),
            timestamp_ms: meta["batchTimestampMs"].as_i64().unwrap_or(0),
            sources,
        })
    }

    /// Logs a batch's offsets before it runs.
    pub fn write_offsets(&self, e: &OffsetEntry) -> Result<()> {
        let mut text = String::from("v1\n");
        text.push_str(
            &json!({"batchWatermarkMs": e.watermark_ms, "batchTimestampMs": e.timestamp_ms})
                .to_string(),
        );
        for s in &e.sources {
            text.push('\n');
            text.push_str(&offsets_json(s).to_string());
        }
        write_atomic(
            &self.root.join("offsets").join(e.batch_id.to_string()),
            text.as_bytes(),
        )
    }

    /// Marks a batch done: its output and state are durable.
    pub fn write_commit(&self, batch_id: u64, next_watermark_ms: i64) -> Result<()> {
        let text = format!(
            "v1\n{}",
            json!({ "nextBatchWatermarkMs": next_watermark_ms })
        );
        write_atomic(
            &self.root.join("commits").join(batch_id.to_string()),
            text.as_bytes(),
        )?;
        self.purge(batch_id)
    }

    pub fn write_state(&self, batch_id: u64, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.root.join("state").join(batch_id.to_string()), bytes)
    }

    /// The state at `batch_id` as files to apply in order: the newest full snapshot at or
    /// before it and the deltas after that one, up to `batch_id`, each with its path.
    pub fn read_state_chain(&self, batch_id: u64) -> Result<Vec<(Vec<u8>, String)>> {
        let mut chain = Vec::new();
        for id in self
            .batch_ids("state")?
            .into_iter()
            .rev()
            .filter(|&i| i <= batch_id)
        {
            let p = self.root.join("state").join(id.to_string());
            let bytes = read_state_file(&p)?;
            let full = !bytes.starts_with(DELTA_MAGIC);
            chain.push((bytes, p.display().to_string()));
            if full {
                chain.reverse();
                return Ok(chain);
            }
        }
        if chain.is_empty() {
            return Ok(chain);
        }
        Err(SqlError::Checkpoint {
            path: self.root.join("state").display().to_string(),
            message: format!(
                "the state deltas up to batch {batch_id} have no full snapshot before them"
            ),
        })
    }

    /// The newest state snapshot at or before `batch_id`.
    pub fn read_state(&self, batch_id: u64) -> Result<Option<(u64, Vec<u8>, String)>> {
        let ids = self.batch_ids("state")?;
        match ids.into_iter().rfind(|&i| i <= batch_id) {
            Some(id) => {
                let p = self.root.join("state").join(id.to_string());
                Ok(Some((id, read_state_file(&p)?, p.display().to_string())))
            }
            None => Ok(None),
        }
    }

    fn purge(&self, committed: u64) -> Result<()> {
        self.purge_state(committed)?;
        for (sub, keep) in [
            ("offsets", MIN_BATCHES_TO_RETAIN),
            ("commits", MIN_BATCHES_TO_RETAIN),
        ] {
            let ids = self.batch_ids(sub)?;
            if ids.len() as u64 <= keep {
                continue;
            }
            let cut = ids.len() - keep as usize;
            for id in &ids[..cut] {
                if *id < committed {
                    let _ = fs::remove_file(self.root.join(sub).join(id.to_string()));
                }
            }
        }
        Ok(())
    }
}

impl Checkpoint {
    /// Deletes state files before the older of the last `STATE_SNAPSHOTS_KEPT` full
    /// snapshots at or before `committed` (the deltas after it stay: they are needed to
    /// rebuild the state).
    fn purge_state(&self, committed: u64) -> Result<()> {
        let ids: Vec<u64> = self
            .batch_ids("state")?
            .into_iter()
            .filter(|&i| i <= committed)
            .collect();
        let dir = self.root.join("state");
        let mut fulls = 0;
        let mut keep_from = None;
        for &id in ids.iter().rev() {
            if !is_delta(&dir.join(id.to_string())) {
                fulls += 1;
                if fulls == STATE_SNAPSHOTS_KEPT {
                    keep_from = Some(id);
                    break;
                }
            }
        }
        let Some(keep_from) = keep_from else {
            return Ok(());
        };
        for id in ids.into_iter().filter(|&i| i < keep_from) {
            let _ = fs::remove_file(dir.join(id.to_string()));
        }
        Ok(())
    }
}

/// Whether a state file is a delta (reads only its first bytes).
fn is_delta(path: &Path) -> bool {
    let mut head = [0u8; 16];
    let n = fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    head[..n].starts_with(DELTA_MAGIC)
}

/// Largest state file read: a snapshot of a large state (10 million keys) exceeds the
/// cap on other checkpoint files.
const MAX_STATE_FILE_BYTES: u64 = 4 << 30;

fn read_state_file(path: &Path) -> Result<Vec<u8>> {
    read_capped(path, MAX_STATE_FILE_BYTES)
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    /// A query that never writes a state file (no checkpoint) keeps what it tracks for
    /// deltas bounded: past the state's size plus the margin it is dropped, and the next
    /// state file (if one is ever written) is a full snapshot.
    #[test]
    fn changes_tracked_for_deltas_stay_bounded_without_state_files() {
        let mut cadence = SnapshotCadence::new(10);
        assert!(cadence.next_is_full());
        let mut touched = std::collections::HashSet::new();
        let state_len = 10;
        for k in 0..(state_len + MAX_CHANGES_OVER_STATE) as u32 {
            touched.insert(Box::<[u8]>::from(&k.to_be_bytes()[..]));
            bound_changes(&mut touched, state_len, &mut cadence);
        }
        assert_eq!(
            touched.len(),
            state_len + MAX_CHANGES_OVER_STATE,
            "at the bound: kept"
        );
        touched.insert(Box::<[u8]>::from(&u32::MAX.to_be_bytes()[..]));
        bound_changes(&mut touched, state_len, &mut cadence);
        assert!(touched.is_empty(), "past the bound: dropped");
        assert!(
            cadence.next_is_full(),
            "so the next file is a full snapshot"
        );
        assert!(!cadence.next_is_full());
    }

    fn identity(text: Option<&str>, sources: &[&str]) -> QueryIdentity {
        QueryIdentity {
            text: text.map(str::to_string),
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn another_query_or_topic_on_a_checkpoint_is_refused() {
        let dir = std::env::temp_dir().join(format!("runnel-cp-id-{}", uuid::Uuid::new_v4()));
        let first = identity(Some("SELECT a\n  FROM s"), &["KafkaV2[Subscribe[t]]"]);
        Checkpoint::open(&dir)
            .unwrap()
            .check_identity(&first)
            .unwrap();
        // Reopened: the same query (reformatted) and the Rust API (no text) are accepted.
        let mut cp = Checkpoint::open(&dir).unwrap();
        cp.check_identity(&identity(
            Some("SELECT a FROM s"),
            &["KafkaV2[Subscribe[t]]"],
        ))
        .unwrap();
        cp.check_identity(&identity(None, &["KafkaV2[Subscribe[t]]"]))
            .unwrap();
        // Another topic.
        let e = Checkpoint::open(&dir)
            .unwrap()
            .check_identity(&identity(
                Some("SELECT a FROM s"),
                &["KafkaV2[Subscribe[u]]"],
            ))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&dir.display().to_string()), "{e}");
        assert!(
            e.contains("Subscribe[t]") && e.contains("Subscribe[u]"),
            "{e}"
        );
        // Another query text.
        let e = Checkpoint::open(&dir)
            .unwrap()
            .check_identity(&identity(
                Some("SELECT b FROM s"),
                &["KafkaV2[Subscribe[t]]"],
            ))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("another query")
                && e.contains("SELECT a FROM s")
                && e.contains("SELECT b FROM s"),
            "{e}"
        );
        // A checkpoint from before identities were recorded adopts the first one it sees.
        let old = std::env::temp_dir().join(format!("runnel-cp-old-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("metadata"), r#"{"id":"q1"}"#).unwrap();
        let mut cp = Checkpoint::open(&old).unwrap();
        assert_eq!(cp.query_id, "q1");
        cp.check_identity(&first).unwrap();
        assert!(Checkpoint::open(&old)
            .unwrap()
            .check_identity(&identity(Some("x"), &["y"]))
            .is_err());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_commits_round_trip_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(dir.path()).unwrap();
        let id = cp.query_id.clone();
        assert_eq!(Checkpoint::open(dir.path()).unwrap().query_id, id);
        let mut src = PartitionOffsets::new();
        src.entry("t".into()).or_default().insert(0, 42);
        for b in 0..150 {
            let e = OffsetEntry {
                batch_id: b,
                watermark_ms: 7,
                timestamp_ms: 9,
                sources: vec![src.clone()],
            };
            cp.write_offsets(&e).unwrap();
            cp.write_state(b, b"s").unwrap();
            cp.write_commit(b, 7).unwrap();
        }
        let last = cp.latest_offsets().unwrap().unwrap();
        assert_eq!(last.batch_id, 149);
        assert_eq!(last.sources[0]["t"][&0], 42);
        assert_eq!(cp.latest_commit().unwrap(), Some(149));
        assert_eq!(
            cp.batch_ids("offsets").unwrap().len() as u64,
            MIN_BATCHES_TO_RETAIN
        );
        assert_eq!(cp.batch_ids("state").unwrap().len(), STATE_SNAPSHOTS_KEPT);
        std::fs::write(dir.path().join("offsets/149"), "v9\n{}").unwrap();
        assert!(cp.latest_offsets().is_err());
    }

    #[test]
    fn state_chain_is_the_newest_snapshot_and_the_deltas_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(dir.path()).unwrap();
        let delta = |n: u8| [DELTA_MAGIC, &[n]].concat();
        // Snapshots at 0, 3 and 6, deltas between.
        for b in 0..9u64 {
            let bytes = if b % 3 == 0 {
                vec![b'S', b as u8]
            } else {
                delta(b as u8)
            };
            cp.write_state(b, &bytes).unwrap();
            cp.write_commit(b, 0).unwrap();
        }
        let chain = cp.read_state_chain(5).unwrap();
        let got: Vec<Vec<u8>> = chain.into_iter().map(|(b, _)| b).collect();
        assert_eq!(got, vec![vec![b'S', 3], delta(4), delta(5)]);
        assert_eq!(cp.read_state_chain(6).unwrap().len(), 1);
        // Purged: everything before the older of the last two snapshots (3).
        assert_eq!(cp.batch_ids("state").unwrap(), (3..9).collect::<Vec<u64>>());
        std::fs::remove_file(dir.path().join("state/3")).unwrap();
        let e = cp.read_state_chain(5).unwrap_err().to_string();
        assert!(e.contains("no full snapshot"), "{e}");
    }
}
