//! One segment: a file of record batches starting at `base_offset`, with its indexes.
//!
//! Not thread-safe: the owning [`crate::PartitionLog`] serialises access.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchHeader, BATCH_HEADER_BYTES, LOG_OVERHEAD};
use crate::error::{LogError, Result};
use crate::index::{OffsetIndex, TimeIndex};

pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// What recovery may assume about a segment at open.
#[derive(Debug, Clone, Copy)]
pub struct ScanPolicy {
    /// Batches at or after this offset may not have reached the disk (Kafka's recovery
    /// point): they are CRC-checked. Below it only the batch framing is walked.
    pub recovery_point: i64,
    /// This is the active segment: a bad batch past the recovery point is a torn write
    /// and is cut, with everything after it. Anywhere else damage is reported.
    pub may_cut: bool,
    /// Offsets must follow each other with no gap: the log is not compacted (a
    /// compacted topic, or a follower of one, has gaps).
    pub dense: bool,
}

impl ScanPolicy {
    /// Trust the whole segment's framing, cut nothing (a segment just written whole).
    pub fn trusted() -> Self {
        ScanPolicy {
            recovery_point: i64::MAX,
            may_cut: false,
            dense: false,
        }
    }
}

#[derive(Debug)]
pub struct LogSegment {
    pub base_offset: i64,
    /// One past the last offset stored here (== base_offset while empty).
    pub next_offset: i64,
    pub size: u64,
    /// Largest record timestamp in the segment, and the offset of the batch that holds it.
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    /// Wall-clock time the segment was created or opened empty; drives `segment.ms`.
    pub created_ms: i64,
    file: Arc<File>,
    log_path: PathBuf,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u64,
}

impl LogSegment {
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Self> {
        let log_path = dir.join(format!("{}.log", file_stem(base_offset)));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| LogError::io(&log_path, e))?;
        Ok(Self::new(file, log_path, base_offset, now_ms))
    }

    fn new(file: File, log_path: PathBuf, base_offset: i64, now_ms: i64) -> Self {
        LogSegment {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            created_ms: now_ms,
            file: Arc::new(file),
            log_path,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
        }
    }

    /// Opens an existing segment and rebuilds its in-memory indexes from the batch
    /// headers (one 61-byte read per batch). See [`ScanPolicy`] for what is checked and
    /// what may be cut. Returns the segment and how many bytes were cut; damage that may
    /// not be cut is an error naming the file and the byte where it starts, and the file
    /// is left exactly as it was.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        policy: ScanPolicy,
        index_interval: u64,
        now_ms: i64,
    ) -> Result<(Self, u64)> {
        let log_path = dir.join(format!("{}.log", file_stem(base_offset)));
        // O_APPEND: every write lands at the end of the file, wherever the cursor of a
        // reopened segment happens to be (it starts at 0).
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| LogError::io(&log_path, e))?;
        let file_size = file
            .metadata()
            .map_err(|e| LogError::io(&log_path, e))?
            .len();
        let mut seg = Self::new(file, log_path, base_offset, now_ms);
        let valid_end = seg.scan(file_size, policy, index_interval)?;
        let cut = file_size - valid_end;
        if cut > 0 {
            tracing::warn!(segment = %seg.log_path.display(), valid_end, cut, recovery_point = policy.recovery_point, "truncating the torn tail written after the recovery point");
            seg.file
                .set_len(valid_end)
                .map_err(|e| LogError::io(&seg.log_path, e))?;
        }
        seg.size = valid_end;
        Ok((seg, cut))
    }

    /// Walks batches from the start to `to`, rebuilding the indexes and the segment's
    /// offsets and timestamps. Returns where the last good batch ends.
    fn scan(&mut self, to: u64, policy: ScanPolicy, index_interval: u64) -> Result<u64> {
        let mut pos = 0;
        let mut buf = Vec::new();
        while pos < to {
            // Offsets below the recovery point were fsynced: damage there is not a torn
            // write, whatever the bytes now say, so it is reported, never cut.
            let unflushed = self.next_offset >= policy.recovery_point;
            let problem = match self.check_batch_at(pos, to, policy, unflushed, &mut buf)? {
                Ok(h) => {
                    let total = h.total_size() as u64;
                    self.track(&h, pos, total, index_interval);
                    pos += total;
                    continue;
                }
                Err(problem) => problem,
            };
            if unflushed && policy.may_cut {
                break;
            }
            return Err(LogError::Damaged {
                path: self.log_path.display().to_string(),
                position: pos,
                what: problem,
            });
        }
        Ok(pos)
    }

    /// The batch at `pos` if it passes the checks `policy` asks for, else what is wrong.
    fn check_batch_at(
        &self,
        pos: u64,
        to: u64,
        policy: ScanPolicy,
        unflushed: bool,
        buf: &mut Vec<u8>,
    ) -> Result<std::result::Result<BatchHeader, String>> {
        if to - pos < BATCH_HEADER_BYTES as u64 {
            return Ok(Err(format!(
                "{} trailing bytes, shorter than a batch header",
                to - pos
            )));
        }
        let mut head = [0u8; BATCH_HEADER_BYTES];
        self.file
            .read_exact_at(&mut head, pos)
            .map_err(|e| LogError::io(&self.log_path, e))?;
        let h = BatchHeader::parse(&head)?;
        let total = h.total_size() as u64;
        if h.batch_length < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32 || pos + total > to {
            return Ok(Err(format!(
                "batch length {} does not fit the {} bytes left in the file",
                h.batch_length,
                to - pos
            )));
        }
        if h.magic != 2 {
            return Ok(Err(format!(
                "magic byte {} (only v2 batches are stored)",
                h.magic
            )));
        }
        if h.last_offset_delta < 0 || h.base_offset < self.next_offset {
            return Ok(Err(format!(
                "batch offsets [{}, {}] go back before {}",
                h.base_offset,
                h.last_offset(),
                self.next_offset
            )));
        }
        // Offsets are dense unless compaction (or a compacted leader) left gaps; the base
        // offset is outside the CRC, so density is what catches a damaged one.
        if policy.dense && h.base_offset != self.next_offset {
            return Ok(Err(format!(
                "batch starts at offset {}, expected {}",
                h.base_offset, self.next_offset
            )));
        }
        if unflushed {
            buf.resize(total as usize, 0);
            self.file
                .read_exact_at(buf, pos)
                .map_err(|e| LogError::io(&self.log_path, e))?;
            if let Err(e) = batch::validate_batch(buf) {
                return Ok(Err(e.to_string()));
            }
        }
        Ok(Ok(h))
    }

    fn track(&mut self, h: &BatchHeader, pos: u64, total: u64, index_interval: u64) {
        let relative = (h.base_offset - self.base_offset) as u32;
        if pos == 0 || self.bytes_since_index_entry >= index_interval {
            self.offset_index.push(relative, pos as u32);
            self.time_index.push(h.max_timestamp, relative);
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += total;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.last_offset();
        }
        self.next_offset = h.last_offset() + 1;
    }

    /// Appends already-validated, offset-assigned batches (`headers` describe `bytes`).
    /// On a failed write the file is cut back, so a partial batch is never left behind.
    pub fn append(
        &mut self,
        bytes: &[u8],
        headers: &[BatchHeader],
        index_interval: u64,
    ) -> Result<()> {
        self.append_parts(&[bytes], headers, index_interval)
    }

    /// Like [`LogSegment::append`], the bytes being `parts` one after the other (a
    /// batch's stored header, then its records from the request): one `writev`, no
    /// copy into a contiguous buffer first.
    pub fn append_parts(
        &mut self,
        parts: &[&[u8]],
        headers: &[BatchHeader],
        index_interval: u64,
    ) -> Result<()> {
        let start = self.size;
        if let Err(e) = write_all_parts(&self.file, parts) {
            let _ = self.file.set_len(start);
            return Err(LogError::io(&self.log_path, e));
        }
        let mut pos = start;
        for h in headers {
            let total = h.total_size() as u64;
            self.track(h, pos, total, index_interval);
            pos += total;
        }
        self.size = pos;
        Ok(())
    }

    /// The file position of the first batch whose last offset is >= `offset`, and its
    /// header; None when the segment holds nothing at or after `offset`.
    pub fn find(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = (offset.max(self.base_offset) - self.base_offset) as u32;
        self.scan_from(self.offset_index.lookup(relative) as u64, |h| {
            h.last_offset() >= offset
        })
    }

    /// First batch at or after `pos` for which `pred` holds.
    fn scan_from(
        &self,
        mut pos: u64,
        pred: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>> {
        let mut head = [0u8; BATCH_HEADER_BYTES];
        while pos + BATCH_HEADER_BYTES as u64 <= self.size {
            self.file
                .read_exact_at(&mut head, pos)
                .map_err(|e| LogError::io(&self.log_path, e))?;
            let h = BatchHeader::parse(&head)?;
            if pred(&h) {
                return Ok(Some((pos, h)));
            }
            pos += h.total_size() as u64;
        }
        Ok(None)
    }

    /// The first batch whose max timestamp is >= `timestamp`.
    pub fn find_by_timestamp(&self, timestamp: i64) -> Result<Option<(u64, BatchHeader)>> {
        let relative = self.time_index.lookup(timestamp);
        self.scan_from(self.offset_index.lookup(relative) as u64, |h| {
            h.max_timestamp >= timestamp
        })
    }

    /// Where the whole batches starting at `pos` (a batch boundary) end, taking as many
    /// as fit before the byte position `limit` and stopping at the first batch whose
    /// base offset is `upper_bound` or more. Reads batch headers only (a short scan from
    /// the sparse index), never the records: a fetch sends them from the file.
    pub fn whole_batches_end(&self, pos: u64, limit: u64, upper_bound: i64) -> Result<u64> {
        let mut limit = limit.min(self.size);
        if upper_bound < self.next_offset {
            // The first batch holding `upper_bound` or later: a batch that starts below the
            // bound is sent whole, one that starts at or past it is not.
            if let Some((p, h)) = self.find(upper_bound)? {
                let stop = if h.base_offset >= upper_bound {
                    p
                } else {
                    p + h.total_size() as u64
                };
                limit = limit.min(stop);
            }
        }
        let mut end = pos.max(self.offset_index.batch_start_at_or_before(limit));
        let mut head = [0u8; BATCH_HEADER_BYTES];
        while end + BATCH_HEADER_BYTES as u64 <= limit {
            self.file
                .read_exact_at(&mut head, end)
                .map_err(|e| LogError::io(&self.log_path, e))?;
            let total = BatchHeader::parse(&head)?.total_size() as u64;
            if end + total > limit {
                break;
            }
            end += total;
        }
        Ok(end)
    }

    /// The bytes `[pos, pos + len)` of this segment, to be sent or read later, outside
    /// the partition lock. `len` must lie within the segment.
    pub fn slice(&self, pos: u64, len: u64) -> FileSlice {
        assert!(
            pos + len <= self.size,
            "a slice [{pos}, {}) past the end {} of {}",
            pos + len,
            self.size,
            self.log_path.display()
        );
        FileSlice {
            file: self.file.clone(),
            position: pos,
            len: len as usize,
        }
    }

    /// Reads up to `len` bytes at `pos` (fewer at the end of the segment).
    pub fn read_at(&self, pos: u64, len: usize) -> Result<Vec<u8>> {
        let len = len.min(self.size.saturating_sub(pos) as usize);
        self.slice(pos, len as u64)
            .read_to_vec()
            .map_err(|e| LogError::io(&self.log_path, e))
    }

    /// A handle for fsync outside the partition lock (group commit).
    pub fn file_handle(&self) -> Arc<File> {
        self.file.clone()
    }

    pub fn flush(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| LogError::io(&self.log_path, e))
    }

    pub fn delete_files(&self) -> Result<()> {
        match fs::remove_file(&self.log_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(LogError::io(&self.log_path, e))
            }
            _ => Ok(()),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

/// Writes every byte of `parts`, in order, with as few `writev` calls as the kernel
/// allows (at most 1024 slices a call).
fn write_all_parts(mut file: &File, parts: &[&[u8]]) -> std::io::Result<()> {
    use std::io::IoSlice;
    const MAX_SLICES: usize = 1024;
    for chunk in parts.chunks(MAX_SLICES) {
        let mut slices: Vec<IoSlice<'_>> = chunk.iter().map(|p| IoSlice::new(p)).collect();
        let mut left = &mut slices[..];
        while !left.is_empty() {
            match file.write_vectored(left) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "the segment file took no bytes",
                    ))
                }
                Ok(n) => IoSlice::advance_slices(&mut left, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// A byte range of a segment file, held open: a fetch reads it (or sends it with
/// `sendfile`) after the partition lock is released. The segment may be deleted
/// meanwhile (the open file keeps its bytes); a follower's truncation may shorten it,
/// which the reader sees as an early end of file.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

impl FileSlice {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the slice into memory. The buffer is not zero-filled first: on the fetch
    /// path that memset cost a third of the CPU.
    pub fn read_to_vec(&self) -> std::io::Result<Vec<u8>> {
        let mut buf: Vec<u8> = Vec::with_capacity(self.len);
        self.read_into(&mut buf, self.position, self.len)?;
        Ok(buf)
    }

    /// Appends `len` bytes of the file at `position` to `buf` (pread, no zero-fill).
    /// The file ending first is an `UnexpectedEof` error.
    pub fn read_into(&self, buf: &mut Vec<u8>, position: u64, len: usize) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        buf.reserve(len);
        let mut filled = 0usize;
        while filled < len {
            let spare = buf.spare_capacity_mut();
            // SAFETY: pread writes at most `len - filled` bytes into the spare capacity,
            // which is at least that large; only the bytes it reports are then exposed.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    spare.as_mut_ptr().cast::<libc::c_void>(),
                    len - filled,
                    (position + filled as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment shorter than its recorded size",
                ));
            }
            // SAFETY: the kernel initialised the first `n` spare bytes.
            unsafe { buf.set_len(buf.len() + n as usize) };
            filled += n as usize;
        }
        Ok(())
    }
}
