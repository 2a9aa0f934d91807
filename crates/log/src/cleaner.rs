//! Log compaction (`cleanup.policy=compact`): keep the latest record per key.
//!
//! Kafka's cleaner in miniature. The cleanable range runs from the log start to the
//! first segment that is active or younger than `min.compaction.lag.ms`. A map of key to
//! latest offset is built over that range; then consecutive segments are rewritten
//! (grouped up to `segment.bytes`) keeping only records that are the latest for their
//! key, and dropping tombstones whose batch is older than `delete.retention.ms`. Offsets
//! are preserved (gaps are normal in a compacted log); batches keep their base offset,
//! last offset delta, producer id, epoch and sequence. The active segment is never
//! touched.
//!
//! Crash safety: a group is written to `<base>.cleaned`, fsynced, renamed to
//! `<base>.swap`; then the old segments are deleted and the swap file renamed to
//! `<base>.log`. At open, a `.cleaned` file is discarded (the originals are intact) and a
//! `.swap` file completes its swap (see `PartitionLog::open`).

use std::collections::HashMap;

use crate::batch::{self, BatchHeader, CompressionCodec, BATCH_HEADER_BYTES};
use crate::error::{LogError, Result};

/// Deflates record sections the cleaner rewrote. The broker supplies it (it owns the
/// producers' compression settings); inflating is the log's own bounded reader
/// (`compression.rs`).
pub trait RecordCodec {
    fn compress(
        &self,
        codec: CompressionCodec,
        data: &[u8],
    ) -> std::result::Result<Vec<u8>, String>;
}

/// The topic configs that steer compaction.
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_rewritten: usize,
    pub records_kept: u64,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// One record inside a (decompressed) records section: its key, whether it is a
/// tombstone, its absolute offset, and its bytes including the length prefix.
pub struct RawRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub tombstone: bool,
    pub offset: i64,
    pub bytes: &'a [u8],
}

/// Splits a records section into records.
pub fn split_records(body: &[u8], base_offset: i64) -> Result<Vec<RawRecord<'_>>> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (len, n) = batch::read_varint(rest)?;
        if len < 1 || n + len as usize > rest.len() {
            return Err(LogError::InvalidRecord(format!(
                "record length {len} runs past the batch"
            )));
        }
        let whole = &rest[..n + len as usize];
        let mut r = &rest[n + 1..n + len as usize];
        let (_, m) = batch::read_varlong(r)?; // timestamp delta
        r = &r[m..];
        let (offset_delta, m) = batch::read_varint(r)?;
        r = &r[m..];
        let (key, r2) = batch::read_nullable_bytes(r)?;
        let (value, _) = batch::read_nullable_bytes(r2)?;
        out.push(RawRecord {
            key,
            tombstone: value.is_none(),
            offset: base_offset + offset_delta,
            bytes: whole,
        });
        rest = &rest[n + len as usize..];
    }
    Ok(out)
}

/// The records section of a batch, inflated if needed (at most `cap` bytes).
pub fn records_section(b: &[u8], h: &BatchHeader, cap: u64) -> Result<Vec<u8>> {
    let section = b
        .get(BATCH_HEADER_BYTES..h.total_size())
        .ok_or_else(|| LogError::CorruptBatch("batch shorter than its length field".into()))?;
    crate::compression::inflate(h.compression()?, section, cap)
}

/// Records (key -> latest offset) from every keyed record of `batches`.
pub fn index_keys(batches: &[u8], cap: u64, map: &mut HashMap<Vec<u8>, i64>) -> Result<()> {
    batch::for_each_batch(batches, |range| {
        let b = &batches[range];
        let h = BatchHeader::parse(b)?;
        if h.is_control() {
            return Ok(());
        }
        let section = records_section(b, &h, cap)?;
        for r in split_records(&section, h.base_offset)? {
            if let Some(k) = r.key {
                map.insert(k.to_vec(), r.offset);
            }
        }
        Ok(())
    })
}

/// Rewrites `batches` keeping the latest record per key (per `map`) and young
/// tombstones; appends the surviving batches to `out`.
pub fn filter_batches(
    batches: &[u8],
    map: &HashMap<Vec<u8>, i64>,
    tombstone_cutoff_ms: i64,
    cap: u64,
    codec: &dyn RecordCodec,
    out: &mut Vec<u8>,
    stats: &mut CompactionStats,
) -> Result<()> {
    batch::for_each_batch(batches, |range| {
        let b = &batches[range];
        let h = BatchHeader::parse(b)?;
        if h.is_control() {
            out.extend_from_slice(b);
            return Ok(());
        }
        let section = records_section(b, &h, cap)?;
        let records = split_records(&section, h.base_offset)?;
        let total = records.len() as u64;
        let kept: Vec<&RawRecord> = records
            .iter()
            .filter(|r| match r.key {
                None => false,
                Some(k) => {
                    map.get(k) == Some(&r.offset)
                        && !(r.tombstone && h.max_timestamp < tombstone_cutoff_ms)
                }
            })
            .collect();
        stats.records_kept += kept.len() as u64;
        stats.records_removed += total - kept.len() as u64;
        if kept.is_empty() {
            return Ok(());
        }
        if kept.len() as u64 == total {
            out.extend_from_slice(b);
            return Ok(());
        }
        let mut raw = Vec::with_capacity(section.len());
        for r in &kept {
            raw.extend_from_slice(r.bytes);
        }
        let body = match h.compression()? {
            CompressionCodec::None => raw,
            c => codec.compress(c, &raw).map_err(|e| {
                LogError::CorruptBatch(format!("cannot deflate a {c:?} batch: {e}"))
            })?,
        };
        let start = out.len();
        out.extend_from_slice(&b[..BATCH_HEADER_BYTES]);
        out.extend_from_slice(&body);
        let new = &mut out[start..];
        let length = (new.len() - batch::LOG_OVERHEAD) as i32;
        new[8..12].copy_from_slice(&length.to_be_bytes());
        new[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
        let crc = crc32c::crc32c(&new[21..]);
        new[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    })
}
