//! The checkpoint directory, in Spark's layout:
//!
//! ```text
//! <checkpointLocation>/metadata          {"id":"<query id>"}
//! <checkpointLocation>/offsets/<batchId> v1, batch metadata JSON, one offsets JSON per source
//! <checkpointLocation>/commits/<batchId> v1, {"nextBatchWatermarkMs":...}
//! <checkpointLocation>/state/<batchId>   the stateful operator's snapshot after the batch
//! ```
//!
//! The offsets entry is written (and fsynced) before a batch runs, the commit entry after
//! its output and state are durable. A restart re-runs the last batch that has offsets but
//! no commit, with the same offsets and the state of the batch before it.
//! Old entries are deleted beyond `MIN_BATCHES_TO_RETAIN`.

use crate::error::{Result, SqlError};
use crate::source::{offsets_json, parse_offsets_json, PartitionOffsets};
use serde_json::json;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Spark's `spark.sql.streaming.minBatchesToRetain` default.
pub const MIN_BATCHES_TO_RETAIN: u64 = 100;
/// State snapshots kept (the last one is enough to resume; one more for safety).
const STATE_SNAPSHOTS_KEPT: u64 = 2;
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
    let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.len() > MAX_ENTRY_BYTES {
        return Err(SqlError::Checkpoint {
            path: path.display().to_string(),
            message: format!("larger than {MAX_ENTRY_BYTES} bytes"),
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
        let query_id = if meta.exists() {
            let v: serde_json::Value =
                serde_json::from_slice(&read_limited(&meta)?).map_err(|e| {
                    SqlError::Checkpoint {
                        path: meta.display().to_string(),
                        message: e.to_string(),
                    }
                })?;
            v["id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| SqlError::Checkpoint {
                    path: meta.display().to_string(),
                    message: "no id".into(),
                })?
        } else {
            let id = uuid::Uuid::new_v4().to_string();
            write_atomic(&meta, json!({ "id": id }).to_string().as_bytes())?;
            id
        };
        Ok(Checkpoint { root, query_id })
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

    /// The newest state snapshot at or before `batch_id`.
    pub fn read_state(&self, batch_id: u64) -> Result<Option<(u64, Vec<u8>, String)>> {
        let ids = self.batch_ids("state")?;
        match ids.into_iter().rfind(|&i| i <= batch_id) {
            Some(id) => {
                let p = self.root.join("state").join(id.to_string());
                Ok(Some((id, read_limited(&p)?, p.display().to_string())))
            }
            None => Ok(None),
        }
    }

    fn purge(&self, committed: u64) -> Result<()> {
        for (sub, keep) in [
            ("offsets", MIN_BATCHES_TO_RETAIN),
            ("commits", MIN_BATCHES_TO_RETAIN),
            ("state", STATE_SNAPSHOTS_KEPT),
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
        assert_eq!(
            cp.batch_ids("state").unwrap().len() as u64,
            STATE_SNAPSHOTS_KEPT
        );
        std::fs::write(dir.path().join("offsets/149"), "v9\n{}").unwrap();
        assert!(cp.latest_offsets().is_err());
    }
}
