//! The streaming text-file source (Spark's `readStream.text(path)`): `USING text OPTIONS
//! (path '/dir', maxFilesPerTrigger '1')`. Each line of each file is a row with one
//! column, `value` (a string); `from_json(value, ...)` parses JSON lines. Files are taken
//! in name order, whole; a file that appears later must sort after those already taken.
//! The offset is the number of files taken, logged as `{"<path>":{"0":n}}`.
//!
//! Also `StreamSource`, the one type the driver holds for any streaming source.
//! Not thread-safe: one task owns a source.

use crate::error::{Result, SqlError};
use crate::source::{KafkaSource, PartitionOffsets};
use datafusion::arrow::array::StringBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Rows per Arrow batch built from lines.
const ROWS_PER_ARROW_BATCH: usize = 8192;
/// Longest line accepted (a line is one row).
const MAX_LINE_BYTES: usize = 16 << 20;

pub struct FileSource {
    path: PathBuf,
    max_files_per_trigger: Option<u64>,
    schema: SchemaRef,
    /// Files taken so far (in name order).
    taken: usize,
}

impl FileSource {
    pub fn from_options(opts: &BTreeMap<String, String>) -> Result<FileSource> {
        crate::options::check(&crate::options::TEXT_SOURCE, opts)?;
        let get = |k: &str| {
            opts.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let path = get("path").ok_or_else(|| SqlError::option("path", "is required"))?;
        let max_files_per_trigger = get("maxFilesPerTrigger")
            .map(|v| {
                v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    SqlError::option(
                        "maxFilesPerTrigger",
                        format!("{v:?} is not a positive number"),
                    )
                })
            })
            .transpose()?;
        Ok(FileSource {
            path: PathBuf::from(path),
            max_files_per_trigger,
            schema: Arc::new(Schema::new(vec![Field::new(
                "value",
                DataType::Utf8,
                false,
            )])),
            taken: 0,
        })
    }

    fn key(&self) -> String {
        self.path.display().to_string()
    }

    /// The files now there, in name order (hidden and `_`-prefixed names skipped).
    fn files(&self) -> Result<Vec<PathBuf>> {
        let io = |e| SqlError::io(self.key(), e);
        let meta = std::fs::metadata(&self.path).map_err(io)?;
        if meta.is_file() {
            return Ok(vec![self.path.clone()]);
        }
        let mut files = Vec::new();
        for e in std::fs::read_dir(&self.path).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.')
                && !name.starts_with('_')
                && e.file_type().map_err(io)?.is_file()
            {
                files.push(e.path());
            }
        }
        files.sort();
        Ok(files)
    }

    fn offsets(&self, n: usize) -> PartitionOffsets {
        [(self.key(), [(0, n as i64)].into())].into()
    }

    fn offset_in(&self, o: &PartitionOffsets) -> Result<usize> {
        let n = o
            .get(&self.key())
            .and_then(|p| p.get(&0))
            .copied()
            .ok_or_else(|| {
                SqlError::option(
                    "path",
                    format!("the checkpoint has no offset for {}", self.key()),
                )
            })?;
        usize::try_from(n).map_err(|_| SqlError::option("path", format!("bad file offset {n}")))
    }

    fn read(&self, files: &[PathBuf]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut b = StringBuilder::new();
        let mut rows = 0;
        for f in files {
            let io = |e| SqlError::io(f.display().to_string(), e);
            let mut r =
                std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(f).map_err(io)?);
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).map_err(io)? == 0 {
                    break;
                }
                if line.len() > MAX_LINE_BYTES {
                    return Err(SqlError::Query(format!(
                        "{}: a line longer than {MAX_LINE_BYTES} bytes",
                        f.display()
                    )));
                }
                b.append_value(line.trim_end_matches(['\n', '\r']));
                rows += 1;
                if rows == ROWS_PER_ARROW_BATCH {
                    out.push(RecordBatch::try_new(
                        self.schema.clone(),
                        vec![Arc::new(b.finish())],
                    )?);
                    rows = 0;
                }
            }
        }
        if rows > 0 {
            out.push(RecordBatch::try_new(
                self.schema.clone(),
                vec![Arc::new(b.finish())],
            )?);
        }
        Ok(out)
    }
}

/// Any streaming source, as the driver holds it.
pub enum StreamSource {
    Kafka(Box<KafkaSource>),
    Files(FileSource),
}

impl StreamSource {
    pub fn schema(&self) -> SchemaRef {
        match self {
            StreamSource::Kafka(k) => k.schema(),
            StreamSource::Files(f) => f.schema.clone(),
        }
    }

    pub fn description(&self) -> String {
        match self {
            StreamSource::Kafka(k) => k.description(),
            StreamSource::Files(f) => format!("FileStreamSource[{}]", f.key()),
        }
    }

    /// The most a batch takes: offsets (Kafka) or files.
    pub fn max_per_trigger(&self) -> u64 {
        match self {
            StreamSource::Kafka(k) => k.options().max_offsets_per_trigger.unwrap_or(u64::MAX),
            StreamSource::Files(f) => f.max_files_per_trigger.unwrap_or(u64::MAX),
        }
    }

    pub fn start(&mut self, resume: Option<&PartitionOffsets>) -> Result<()> {
        match self {
            StreamSource::Kafka(k) => k.start(resume),
            StreamSource::Files(f) => {
                f.taken = match resume {
                    Some(o) => f.offset_in(o)?,
                    None => 0,
                };
                Ok(())
            }
        }
    }

    pub fn positions(&self) -> PartitionOffsets {
        match self {
            StreamSource::Kafka(k) => k.positions(),
            StreamSource::Files(f) => f.offsets(f.taken),
        }
    }

    pub fn latest_offsets(&self) -> Result<PartitionOffsets> {
        match self {
            StreamSource::Kafka(k) => k.latest_offsets(),
            StreamSource::Files(f) => Ok(f.offsets(f.files()?.len())),
        }
    }

    pub fn finished(&self) -> bool {
        match self {
            StreamSource::Kafka(k) => k.finished(),
            StreamSource::Files(_) => false,
        }
    }

    pub async fn next_batch(
        &mut self,
        max: u64,
        wait: Duration,
    ) -> Result<(Vec<RecordBatch>, PartitionOffsets)> {
        match self {
            StreamSource::Kafka(k) => k.next_batch(max, wait).await,
            StreamSource::Files(f) => {
                let files = f.files()?;
                let end = files
                    .len()
                    .min(f.taken.saturating_add(max.min(usize::MAX as u64) as usize));
                if end <= f.taken {
                    tokio::time::sleep(wait).await;
                    return Ok((Vec::new(), f.offsets(f.taken)));
                }
                let rows = f.read(&files[f.taken..end])?;
                f.taken = end;
                Ok((rows, f.offsets(end)))
            }
        }
    }

    pub async fn replay(
        &mut self,
        end: &PartitionOffsets,
        timeout: Duration,
    ) -> Result<Vec<RecordBatch>> {
        match self {
            StreamSource::Kafka(k) => k.replay(end, timeout).await,
            StreamSource::Files(f) => {
                let end = f.offset_in(end)?;
                let files = f.files()?;
                if end > files.len() {
                    return Err(SqlError::DataLoss(format!(
                        "{}: the logged batch reads {end} files, only {} are there",
                        f.key(),
                        files.len()
                    )));
                }
                let rows = f.read(&files[f.taken.min(end)..end])?;
                f.taken = end;
                Ok(rows)
            }
        }
    }
}
