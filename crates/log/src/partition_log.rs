//! A partition's log: its segments, offsets, producer state and leader epochs.
//!
//! Not thread-safe: callers hold a lock around every method (the broker keeps one mutex
//! per partition). Invariants, checked where they could break:
//! - segments are contiguous: each one's base offset is the previous one's next offset;
//! - `log_start_offset <= next_offset`, and every offset in between is readable;
//! - a batch is written whole or not at all; a torn tail is cut at the next open.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchHeader, BATCH_HEADER_BYTES};
use crate::cleaner::{self, CompactionConfig, CompactionStats, RecordCodec};
use crate::config::{LogConfig, TimestampType};
use crate::error::{LogError, Result};
use crate::index::write_atomically;
use crate::producer_state::{ProducerEntry, ProducerStateManager, SequenceCheck};
use crate::segment::{FileSlice, LogSegment, ScanPolicy};
use crate::validator::{self, ValidationContext};

const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const SNAPSHOT_FILE: &str = "producer.snapshot";
const EPOCH_FILE: &str = "leader-epoch-checkpoint";
const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
const LOG_START_FILE: &str = "log-start-offset-checkpoint";
/// Everything below this offset was fsynced (Kafka's name; here one file per partition).
const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's time stamped on the batch under LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    /// The batch was a retry of one already stored; nothing was written.
    pub duplicate: bool,
    pub record_count: i64,
    /// The leader epoch the append was made (or the duplicate answered) under.
    pub leader_epoch: i32,
}

/// Who is appending: a client (sequence numbers checked) or the broker's own
/// coordinators writing on a producer's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    Client,
    Coordinator,
}

/// Whole batches read from the log.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub records: Vec<u8>,
}

pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, LogSegment>,
    log_start_offset: i64,
    next_offset: i64,
    producers: ProducerStateManager,
    /// (leader epoch, first offset written in it), ascending.
    epochs: Vec<(i32, i64)>,
    unflushed_records: i64,
    /// Compaction has cleaned everything below this offset (`cleaner-offset-checkpoint`).
    cleaned_up_to: i64,
    /// Everything below this offset is on disk (`recovery-point-offset-checkpoint`).
    recovery_point: i64,
    /// Set when the files failed recovery: the log then serves and changes nothing.
    offline: Option<String>,
}

impl PartitionLog {
    /// Opens the log in `dir`, recovering from an unclean shutdown.
    ///
    /// A `dir` that does not exist is an empty log that is not on disk yet: nothing is
    /// made until the first write needs it ([`PartitionLog::on_disk`]), so creating 1,000
    /// partitions costs no mkdir and no file (ext4 spends most of a creation zeroing each
    /// new directory's block). Reads of such a log see an empty partition; the first
    /// append, marker, replicated batch or reset makes the directory and its first
    /// segment, and an error doing so is that write's I/O error, as any other.
    ///
    /// Recovery never deletes what it cannot prove torn: only batches past the recovery
    /// point in the active segment may be cut. Anything else that fails its checks (a
    /// damaged batch in an older segment, overlapping or missing segments, a file that
    /// cannot be read) leaves every file as it is and opens the partition *offline*: it
    /// answers KAFKA_STORAGE_ERROR to every read and write, and the error is logged with
    /// the file and byte. Never an error itself.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Self> {
        if !dir.exists() {
            return Ok(Self::empty(dir, config, BTreeMap::new(), None));
        }
        match Self::recover(dir, config.clone(), now_ms) {
            Ok(log) => Ok(log),
            Err(e) => {
                tracing::error!(partition = %dir.display(), error = %e, "partition offline: its files failed the recovery checks; nothing was deleted; repair or move the named file aside and restart");
                Ok(Self::offline(dir, config, e.to_string()))
            }
        }
    }

    /// A log whose files failed recovery: it holds no segment and refuses every read and
    /// write with [`LogError::Offline`].
    fn offline(dir: &Path, config: LogConfig, reason: String) -> Self {
        Self::empty(dir, config, BTreeMap::new(), Some(reason))
    }

    /// A log with no records in `segments` (none: not on disk yet, or offline).
    fn empty(
        dir: &Path,
        config: LogConfig,
        segments: BTreeMap<i64, LogSegment>,
        offline: Option<String>,
    ) -> Self {
        PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: 0,
            next_offset: 0,
            producers: ProducerStateManager::default(),
            epochs: Vec::new(),
            unflushed_records: 0,
            cleaned_up_to: 0,
            recovery_point: 0,
            offline,
        }
    }

    /// Why the partition is offline, if it is.
    pub fn offline_reason(&self) -> Option<&str> {
        self.offline.as_deref()
    }

    /// Whether the log's directory exists (false for a partition never written since it
    /// was created, and for an offline one).
    pub fn on_disk(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Makes the directory and first segment of a log not on disk yet (see
    /// [`PartitionLog::open`]); a no-op for one that is. Called by every write, after
    /// `check_online`.
    fn make_on_disk(&mut self, now_ms: i64) -> Result<()> {
        if self.on_disk() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir).map_err(|e| LogError::io(&self.dir, e))?;
        let seg = LogSegment::create(&self.dir, self.next_offset, now_ms)?;
        self.segments.insert(self.next_offset, seg);
        Ok(())
    }

    fn check_online(&self) -> Result<()> {
        match &self.offline {
            None => Ok(()),
            Some(reason) => Err(LogError::Offline {
                dir: self.dir.display().to_string(),
                reason: reason.clone(),
            }),
        }
    }

    fn recover(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Self> {
        finish_interrupted_compaction(dir)?;
        let clean_marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = clean_marker.exists();
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
            let name = entry.map_err(|e| LogError::io(dir, e))?.file_name();
            let name = name.to_string_lossy();
            match name.strip_suffix(".log").map(str::parse::<i64>) {
                Some(Ok(base)) if base >= 0 => bases.push(base),
                Some(_) => {
                    tracing::warn!(partition = %dir.display(), file = %name, "ignoring a file that is not named like a segment");
                }
                None => {}
            }
        }
        bases.sort_unstable();
        let cleaned_up_to = read_offset_file(&dir.join(CLEANER_CHECKPOINT_FILE)).unwrap_or(0);
        let last = bases.last().copied();
        // Without a checkpoint (a log written before it existed): a clean shutdown flushed
        // everything; after a crash the segments older than the active one were fsynced
        // when they were rolled.
        let recovery_point = read_offset_file(&dir.join(RECOVERY_POINT_FILE)).unwrap_or(if clean {
            i64::MAX
        } else {
            last.unwrap_or(0)
        });
        let dense = !config.compacted && cleaned_up_to == 0;
        let mut segments = BTreeMap::new();
        for base in bases {
            let policy = ScanPolicy {
                recovery_point,
                may_cut: Some(base) == last,
                dense,
            };
            let (seg, _cut) =
                LogSegment::open(dir, base, policy, config.index_interval_bytes, now_ms)?;
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            segments.insert(0, LogSegment::create(dir, 0, now_ms)?);
        }
        let first = segments.values().next().expect("at least one segment");
        // DeleteRecords may have moved the start inside the first segment.
        let recorded_start = read_offset_file(&dir.join(LOG_START_FILE)).unwrap_or(0);
        let last_end = segments
            .values()
            .next_back()
            .expect("at least one segment")
            .next_offset;
        let log_start_offset = first.base_offset.max(recorded_start.min(last_end));
        let next_offset = last_end;
        let mut log = PartitionLog {
            cleaned_up_to,
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            next_offset,
            producers: ProducerStateManager::default(),
            epochs: Vec::new(),
            unflushed_records: 0,
            recovery_point: recovery_point.min(next_offset),
            offline: None,
        };
        log.check_contiguous(dense)?;
        log.epochs = read_epochs(&dir.join(EPOCH_FILE))
            .into_iter()
            .filter(|&(_, start)| start < next_offset)
            .collect();
        log.rebuild_producer_state()?;
        if clean {
            fs::remove_file(&clean_marker).map_err(|e| LogError::io(&clean_marker, e))?;
        }
        Ok(log)
    }

    /// Segments never overlap; without compaction they also leave no gap (a gap is a
    /// segment file gone missing).
    fn check_contiguous(&self, dense: bool) -> Result<()> {
        let mut prev: Option<&LogSegment> = None;
        for seg in self.segments.values() {
            if let Some(p) = prev {
                if seg.base_offset < p.next_offset || (dense && seg.base_offset > p.next_offset) {
                    let what = if seg.base_offset < p.next_offset {
                        "overlaps the previous segment, which ends at"
                    } else {
                        "leaves a gap (a missing segment file?) after the previous segment, which ends at"
                    };
                    return Err(LogError::Damaged {
                        path: seg.log_path().display().to_string(),
                        position: 0,
                        what: format!(
                            "segment starts at offset {} and {what} {} ({})",
                            seg.base_offset,
                            p.next_offset,
                            p.log_path().display()
                        ),
                    });
                }
            }
            prev = Some(seg);
        }
        Ok(())
    }

    /// Records that everything below `offset` is on disk (`recovery-point-offset-checkpoint`):
    /// the next open only CRC-checks, and may only cut, what lies past it.
    fn set_recovery_point(&mut self, offset: i64) -> Result<()> {
        self.recovery_point = offset;
        write_atomically(
            &self.dir.join(RECOVERY_POINT_FILE),
            offset.to_string().as_bytes(),
        )
    }

    /// Loads the producer snapshot and replays batch headers written after it.
    fn rebuild_producer_state(&mut self) -> Result<()> {
        let (from, state) = match ProducerStateManager::load(&self.dir.join(SNAPSHOT_FILE)) {
            Some((offset, state)) if offset <= self.next_offset => (offset, state),
            _ => (self.log_start_offset, ProducerStateManager::default()),
        };
        let mut producers = state;
        let from = from.max(self.log_start_offset);
        // Segments may have gaps after compaction: visit every segment that ends past
        // `from`, starting inside the first one.
        for seg in self.segments.values().filter(|s| s.next_offset > from) {
            let Some((mut pos, _)) = seg.find(from)? else {
                continue;
            };
            while pos < seg.size {
                let head = seg.read_at(pos, batch::BATCH_HEADER_BYTES)?;
                let h = BatchHeader::parse(&head)?;
                if h.has_producer_id() && h.last_offset() >= from {
                    if h.is_control() {
                        let whole = seg.read_at(pos, h.total_size())?;
                        if let Some(commit) = batch::marker_type(&whole) {
                            producers.apply_marker(
                                h.producer_id,
                                h.producer_epoch,
                                commit,
                                h.base_offset,
                            );
                        }
                    } else {
                        producers.update(&h);
                    }
                }
                pos += h.total_size() as u64;
            }
        }
        self.producers = producers;
        Ok(())
    }

    fn active(&self) -> &LogSegment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }
    /// Segments, counting the empty active segment of a log not on disk yet.
    pub fn segment_count(&self) -> usize {
        self.segments.len().max(usize::from(self.offline.is_none()))
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn producer(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(producer_id)
    }
    /// The active segment's file, for an fsync done outside the partition lock (None
    /// when the partition is offline or not on disk yet: nothing written to sync).
    pub fn active_file(&self) -> Option<Arc<File>> {
        self.segments
            .values()
            .next_back()
            .map(LogSegment::file_handle)
    }

    /// Validates and appends the batches in `records` (a produce request's bytes for this
    /// partition). Nothing is written unless every batch is valid. Offsets are assigned
    /// from the log end; `leader_epoch` is stamped on every batch.
    pub fn append(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendResult> {
        self.append_from(records, leader_epoch, now_ms, AppendOrigin::Client)
    }

    /// Like `append`, for batches the broker writes on a producer's behalf (transactional
    /// offset commits): no sequence numbers to check, but an older epoch is still fenced.
    pub fn append_from(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendResult> {
        self.check_online()?;
        let mut ranges = Vec::new();
        batch::for_each_batch(records, |r| {
            ranges.push(r);
            Ok(())
        })?;
        if ranges.is_empty() {
            return Err(LogError::InvalidRecord(
                "produce request carries no record batch".into(),
            ));
        }
        let ctx = ValidationContext {
            max_message_bytes: self.config.max_message_bytes,
            compacted: self.config.compacted,
            timestamp_type: self.config.timestamp_type,
            from_client: origin == AppendOrigin::Client,
        };
        let mut headers = Vec::with_capacity(ranges.len());
        for r in &ranges {
            let h = validator::validate(&records[r.clone()], &ctx)?;
            if h.has_producer_id() && origin == AppendOrigin::Coordinator {
                if let Some(entry) = self.producers.get(h.producer_id) {
                    if h.producer_epoch < entry.epoch {
                        return Err(LogError::InvalidProducerEpoch {
                            producer_id: h.producer_id,
                            current: entry.epoch,
                            got: h.producer_epoch,
                        });
                    }
                }
            } else if h.has_producer_id() {
                if let SequenceCheck::Duplicate(m) = self.producers.check(&h)? {
                    if ranges.len() == 1 {
                        return Ok(AppendResult {
                            base_offset: m.first_offset,
                            last_offset: m.last_offset,
                            log_append_time_ms: -1,
                            duplicate: true,
                            record_count: 0,
                            leader_epoch,
                        });
                    }
                    return Err(LogError::InvalidRecord(
                        "a duplicate batch inside a multi-batch append".into(),
                    ));
                }
            }
            headers.push(h);
        }
        self.make_on_disk(now_ms)?;
        self.maybe_roll(records.len() as u64, now_ms)?;
        let base_offset = self.next_offset;
        let mut next = base_offset;
        let log_append = self.config.timestamp_type == TimestampType::LogAppendTime;
        let mut record_count = 0i64;
        // Each batch is written as its stored header (a 61-byte copy with the offsets,
        // epoch and timestamps set) and its records straight from `records`.
        let mut heads = Vec::with_capacity(ranges.len());
        for (r, h) in ranges.iter().zip(headers.iter_mut()) {
            let b = &records[r.clone()];
            let head = batch::stored_header(
                b,
                next,
                leader_epoch,
                h.max_timestamp,
                log_append.then_some(now_ms),
            );
            *h = BatchHeader::parse(&head)?;
            next = h.last_offset() + 1;
            record_count += h.record_count as i64;
            heads.push(head);
        }
        let parts: Vec<&[u8]> = ranges
            .iter()
            .zip(&heads)
            .flat_map(|(r, head)| [&head[..], &records[r.start + BATCH_HEADER_BYTES..r.end]])
            .collect();
        let index_interval = self.config.index_interval_bytes;
        self.active_mut()
            .append_parts(&parts, &headers, index_interval)?;
        self.next_offset = next;
        for h in &headers {
            if h.has_producer_id() {
                self.producers.update(h);
            }
        }
        self.note_epoch(leader_epoch, base_offset)?;
        self.unflushed_records += record_count;
        if self.unflushed_records >= self.config.flush_messages {
            self.flush()?;
        }
        Ok(AppendResult {
            base_offset,
            last_offset: next - 1,
            log_append_time_ms: if log_append { now_ms } else { -1 },
            duplicate: false,
            record_count,
            leader_epoch,
        })
    }

    fn note_epoch(&mut self, epoch: i32, start_offset: i64) -> Result<()> {
        if epoch >= 0 && self.epochs.last().is_none_or(|&(e, _)| epoch > e) {
            self.epochs.push((epoch, start_offset));
            write_epochs(&self.dir.join(EPOCH_FILE), &self.epochs)?;
        }
        Ok(())
    }

    /// Appends a transaction marker (a control batch) for `producer_id`, ending its open
    /// transaction on this partition. Written by the transaction coordinator only.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<i64> {
        self.check_online()?;
        if let Some(entry) = self.producers.get(producer_id) {
            if epoch < entry.epoch {
                return Err(LogError::InvalidProducerEpoch {
                    producer_id,
                    current: entry.epoch,
                    got: epoch,
                });
            }
        }
        let mut b =
            batch::build_control_batch(producer_id, epoch, commit, coordinator_epoch, now_ms);
        self.make_on_disk(now_ms)?;
        self.maybe_roll(b.len() as u64, now_ms)?;
        let offset = self.next_offset;
        batch::patch_offset_and_epoch(&mut b, offset, leader_epoch);
        let h = BatchHeader::parse(&b)?;
        let index_interval = self.config.index_interval_bytes;
        self.active_mut().append(&b, &[h], index_interval)?;
        self.next_offset = offset + 1;
        self.producers
            .apply_marker(producer_id, epoch, commit, offset);
        self.note_epoch(leader_epoch, offset)?;
        Ok(offset)
    }

    /// Calls `f` with every batch of the log, header and bytes, in offset order (how the
    /// coordinators replay their internal topics).
    pub fn for_each_batch<E: From<LogError>>(
        &self,
        mut f: impl FnMut(&BatchHeader, &[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let (mut offset, end) = (self.log_start_offset, self.next_offset);
        while offset < end {
            let read = self.read(offset, 1 << 20, end, true)?;
            if read.records.is_empty() {
                break;
            }
            let mut at = 0;
            while at < read.records.len() {
                let h = BatchHeader::parse(&read.records[at..])?;
                f(&h, &read.records[at..at + h.total_size()])?;
                offset = h.last_offset() + 1;
                at += h.total_size();
            }
        }
        Ok(())
    }

    /// Appends batches copied from the partition's leader (a follower's fetch). Offsets,
    /// leader epochs and timestamps are the leader's and are kept; CRCs are checked, but
    /// sequence numbers are not (the leader already did), and producer and transaction
    /// state follow the batches, markers included, so a follower that becomes leader
    /// deduplicates and tracks open transactions like the old leader did.
    /// Batches wholly below the log end (a refetch) are skipped. Returns the new log end.
    pub fn append_replicated(&mut self, records: &[u8], now_ms: i64) -> Result<i64> {
        self.check_online()?;
        let mut ranges = Vec::new();
        batch::for_each_batch(records, |r| {
            ranges.push(r);
            Ok(())
        })?;
        for r in ranges {
            let bytes = &records[r];
            let h = batch::validate_batch(bytes)?;
            if h.last_offset() < self.next_offset {
                continue;
            }
            if h.base_offset < self.next_offset {
                return Err(LogError::CorruptBatch(format!(
                    "replicated batch [{}, {}] overlaps the log end {}",
                    h.base_offset,
                    h.last_offset(),
                    self.next_offset
                )));
            }
            self.make_on_disk(now_ms)?;
            self.maybe_roll(bytes.len() as u64, now_ms)?;
            if self.active().size == 0 && self.active().base_offset < h.base_offset {
                // An empty active segment named below the batch (after compaction gaps on
                // the leader, or a reset): rename it by recreating it at the batch's base.
                let (_, seg) = self
                    .segments
                    .pop_last()
                    .expect("a log always has a segment");
                seg.delete_files()?;
                let seg = LogSegment::create(&self.dir, h.base_offset, now_ms)?;
                self.segments.insert(h.base_offset, seg);
            }
            let index_interval = self.config.index_interval_bytes;
            self.active_mut()
                .append(bytes, std::slice::from_ref(&h), index_interval)?;
            self.next_offset = h.last_offset() + 1;
            if h.has_producer_id() {
                if h.is_control() {
                    if let Some(commit) = batch::marker_type(bytes) {
                        self.producers.apply_marker(
                            h.producer_id,
                            h.producer_epoch,
                            commit,
                            h.base_offset,
                        );
                    }
                } else {
                    self.producers.update(&h);
                }
            }
            self.note_epoch(h.partition_leader_epoch, h.base_offset)?;
            self.unflushed_records += h.record_count as i64;
        }
        if self.unflushed_records >= self.config.flush_messages {
            self.flush()?;
        }
        Ok(self.next_offset)
    }

    /// Cuts the log back to `offset` (a follower whose leader never had what follows, as
    /// OffsetForLeaderEpoch told it). A batch that straddles `offset` goes whole. Leader
    /// epochs and producer state are rebuilt for what remains. Returns the new log end.
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> Result<i64> {
        self.check_online()?;
        if offset >= self.next_offset {
            return Ok(self.next_offset);
        }
        if offset <= self.log_start_offset {
            return self.reset_to(self.log_start_offset.max(offset), now_ms);
        }
        while self.segments.len() > 1
            && *self.segments.keys().next_back().expect("non-empty") >= offset
        {
            let (_, seg) = self.segments.pop_last().expect("non-empty");
            seg.delete_files()?;
        }
        let (&base, seg) = self.segments.iter().next_back().expect("non-empty");
        let cut_at = match seg.find(offset)? {
            Some((pos, h)) if h.base_offset < offset => pos,
            Some((pos, _)) => pos,
            None => seg.size,
        };
        let path = seg.log_path().to_path_buf();
        let file = seg.file_handle();
        file.set_len(cut_at).map_err(|e| LogError::io(&path, e))?;
        file.sync_data().map_err(|e| LogError::io(&path, e))?;
        let index_interval = self.config.index_interval_bytes;
        let (seg, _) = LogSegment::open(
            &self.dir,
            base,
            ScanPolicy::trusted(),
            index_interval,
            now_ms,
        )?;
        self.next_offset = seg.next_offset.max(seg.base_offset);
        self.segments.insert(base, seg);
        self.after_cut()?;
        Ok(self.next_offset)
    }

    /// Empties the log and starts it at `offset` (a follower that is behind the leader's
    /// log start, or truncating everything it has).
    pub fn reset_to(&mut self, offset: i64, now_ms: i64) -> Result<i64> {
        self.check_online()?;
        self.make_on_disk(now_ms)?;
        while let Some((_, seg)) = self.segments.pop_first() {
            seg.delete_files()?;
        }
        self.segments
            .insert(offset, LogSegment::create(&self.dir, offset, now_ms)?);
        write_atomically(
            &self.dir.join(LOG_START_FILE),
            offset.to_string().as_bytes(),
        )?;
        self.log_start_offset = offset;
        self.next_offset = offset;
        self.after_cut()?;
        Ok(offset)
    }

    /// After the log lost its tail: forget epochs and producer state from what is gone.
    fn after_cut(&mut self) -> Result<()> {
        let end = self.next_offset;
        if self.recovery_point > end {
            self.set_recovery_point(end)?;
        }
        self.epochs.retain(|&(_, start)| start < end);
        write_epochs(&self.dir.join(EPOCH_FILE), &self.epochs)?;
        let snapshot = self.dir.join(SNAPSHOT_FILE);
        let _ = fs::remove_file(&snapshot);
        self.rebuild_producer_state()?;
        self.unflushed_records = 0;
        Ok(())
    }

    /// The last stable offset: below it every transaction is decided (Kafka's LSO).
    pub fn last_stable_offset(&self) -> i64 {
        self.producers
            .first_unstable_offset()
            .map_or(self.next_offset, |o| o.min(self.next_offset))
    }

    /// Aborted transactions overlapping [from, to), for read_committed fetches.
    pub fn aborted_transactions(
        &self,
        from: i64,
        to: i64,
    ) -> Vec<crate::producer_state::AbortedTxn> {
        self.producers.aborted_between(from, to)
    }

    /// Every producer with state on this partition (DescribeProducers).
    pub fn producer_states(&self) -> Vec<(i64, ProducerEntry)> {
        self.producers
            .producers()
            .map(|(id, e)| (id, e.clone()))
            .collect()
    }

    /// Rolls to a new segment when the next append would overflow the active one, when
    /// the active one is older than `segment.ms`, or when relative offsets would overflow.
    fn maybe_roll(&mut self, incoming_bytes: u64, now_ms: i64) -> Result<()> {
        let active = self.active();
        if active.size == 0 {
            return Ok(());
        }
        let full = active.size + incoming_bytes > self.config.segment_bytes;
        let old = now_ms - active.created_ms >= self.config.segment_ms;
        let offsets_overflow = self.next_offset - active.base_offset > (i32::MAX as i64) / 2;
        if full || old || offsets_overflow {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Closes the active segment (fsynced, so recovery never needs to look at it again)
    /// and starts a new one at the log end.
    pub fn roll(&mut self, now_ms: i64) -> Result<()> {
        self.check_online()?;
        if !self.on_disk() {
            return Ok(()); // nothing written: nothing to close
        }
        self.active().flush()?;
        let seg = LogSegment::create(&self.dir, self.next_offset, now_ms)?;
        self.segments.insert(self.next_offset, seg);
        self.set_recovery_point(self.next_offset)?;
        self.producers
            .save(&self.dir.join(SNAPSHOT_FILE), self.next_offset)?;
        self.unflushed_records = 0;
        Ok(())
    }

    /// fsyncs the active segment.
    pub fn flush(&mut self) -> Result<()> {
        if !self.on_disk() {
            return Ok(());
        }
        self.active().flush()?;
        self.unflushed_records = 0;
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
    /// and below `upper_bound` (the high watermark). With `min_one`, the first batch is
    /// returned whole even if it is larger than `max_bytes` (KIP-74), so a consumer can
    /// always make progress.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one: bool,
    ) -> Result<ReadResult> {
        let Some(slice) = self.read_slice(offset, max_bytes, upper_bound, min_one)? else {
            return Ok(ReadResult::default());
        };
        let records = slice
            .read_to_vec()
            .map_err(|e| LogError::io(&self.dir, e))?;
        Ok(ReadResult { records })
    }

    /// Like [`PartitionLog::read`], without reading the records: where they are in a
    /// segment file, to be sent from there (or read) once the partition lock is released.
    /// None when there is nothing to read.
    pub fn read_slice(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one: bool,
    ) -> Result<Option<FileSlice>> {
        self.check_online()?;
        if offset < self.log_start_offset || offset > self.next_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: self.next_offset,
            });
        }
        let upper_bound = upper_bound.min(self.next_offset);
        if offset >= upper_bound {
            return Ok(None);
        }
        let mut found = None;
        for seg in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .chain(self.segments.range(offset + 1..))
        {
            if let Some((pos, h)) = seg.1.find(offset)? {
                found = Some((seg.1, pos, h));
                break;
            }
        }
        let Some((seg, pos, first)) = found else {
            return Ok(None);
        };
        if first.base_offset >= upper_bound {
            return Ok(None);
        }
        let first_size = first.total_size() as u64;
        let want = if first_size > max_bytes as u64 && min_one {
            first_size
        } else {
            max_bytes as u64
        };
        let end = seg.whole_batches_end(pos, pos.saturating_add(want), upper_bound)?;
        Ok((end > pos).then(|| seg.slice(pos, end - pos)))
    }

    /// The first offset whose record timestamp is >= `timestamp`, with that timestamp
    /// (ListOffsets by time). Exact per record, compressed batches included (inflated
    /// through the bounded reader); LogAppendTime batches answer their first offset.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        self.check_online()?;
        for seg in self.segments.values() {
            if seg.max_timestamp < timestamp {
                continue;
            }
            let Some((pos, h)) = seg.find_by_timestamp(timestamp)? else {
                continue;
            };
            if h.base_offset < self.log_start_offset {
                continue;
            }
            return Ok(Some(
                self.locate_in_batch(seg, pos, &h, |ts| ts >= timestamp)?,
            ));
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the largest timestamp (KIP-734).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>> {
        self.check_online()?;
        let Some(seg) = self
            .segments
            .values()
            .filter(|s| s.max_timestamp >= 0)
            .max_by_key(|s| s.max_timestamp)
        else {
            return Ok(None);
        };
        let max = seg.max_timestamp;
        let Some((pos, h)) = seg.find(seg.offset_of_max_timestamp)? else {
            return Ok(None);
        };
        Ok(Some(self.locate_in_batch(seg, pos, &h, |ts| ts >= max)?))
    }

    /// Finds the first record of a batch whose timestamp satisfies `pred`.
    fn locate_in_batch(
        &self,
        seg: &LogSegment,
        pos: u64,
        h: &BatchHeader,
        pred: impl Fn(i64) -> bool,
    ) -> Result<(i64, i64)> {
        if h.is_log_append_time() {
            return Ok((h.base_offset, h.max_timestamp));
        }
        // Compressed batches are streamed through the bounded inflater: the answer is the
        // exact record, as Kafka gives it.
        let bytes = seg.read_at(pos, h.total_size())?;
        let cap = crate::compression::inflated_cap(self.config.max_message_bytes);
        let mut hit = None;
        crate::validator::stream_records(&bytes, h, cap, |_, r| {
            let ts = h.base_timestamp.saturating_add(r.timestamp_delta);
            if hit.is_none() && pred(ts) {
                hit = Some((h.base_offset + r.offset_delta as i64, ts));
            }
            Ok(())
        })?;
        Ok(hit.unwrap_or((h.base_offset, h.max_timestamp)))
    }

    /// For OffsetForLeaderEpoch: the largest epoch <= `epoch` and the offset where it ends.
    /// (-1, -1) when no such epoch is known.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let i = self.epochs.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return (-1, -1);
        }
        let end = self
            .epochs
            .get(i)
            .map_or(self.next_offset, |&(_, start)| start);
        (self.epochs[i - 1].0, end)
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.last().map(|&(e, _)| e)
    }

    /// Applies `retention.ms` and `retention.bytes`; returns how many segments it deleted.
    /// The active segment is rolled first when it alone is expired, as Kafka does.
    /// DeleteRecords: makes `offset` the new log start (records below it are no longer
    /// readable) and deletes segments wholly below it. Returns the new log start.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64> {
        self.check_online()?;
        if offset < 0 || offset > self.next_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: self.next_offset,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        write_atomically(
            &self.dir.join(LOG_START_FILE),
            offset.to_string().as_bytes(),
        )?;
        self.log_start_offset = offset;
        while self.segments.len() > 1 {
            let (&base, first) = self.segments.iter().next().expect("non-empty");
            let next_base = *self.segments.keys().nth(1).expect("two segments");
            if next_base > offset || first.base_offset != base {
                break;
            }
            let (_, seg) = self.segments.pop_first().expect("non-empty");
            seg.delete_files()?;
        }
        self.producers.prune_aborted(self.log_start_offset);
        Ok(self.log_start_offset)
    }

    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize> {
        if self.offline.is_some() {
            return Ok(0);
        }
        let mut deleted = 0;
        let retention_ms = self.config.retention_ms;
        let expired = |s: &LogSegment| {
            retention_ms >= 0
                && s.size > 0
                && s.max_timestamp >= 0
                && now_ms - s.max_timestamp > retention_ms
        };
        if self.segments.len() == 1 && expired(self.active()) {
            self.roll(now_ms)?;
        }
        while self.segments.len() > 1 {
            let first = self.segments.values().next().expect("non-empty");
            let over_size = self.config.retention_bytes >= 0
                && self.size_bytes() - first.size >= self.config.retention_bytes as u64;
            if !(expired(first) || over_size) {
                break;
            }
            if expired(self.active()) && self.segments.len() == 2 && self.active().size > 0 {
                self.roll(now_ms)?;
            }
            let (_, seg) = self.segments.pop_first().expect("non-empty");
            seg.delete_files()?;
            deleted += 1;
            let new_start = self
                .segments
                .values()
                .next()
                .expect("non-empty")
                .base_offset;
            self.log_start_offset = self.log_start_offset.max(new_start);
            self.producers.prune_aborted(self.log_start_offset);
        }
        Ok(deleted)
    }

    /// Compacts the cleanable part of the log (see `cleaner.rs`). Runs under the
    /// partition lock; segments are read whole, so memory use is bounded by
    /// `segment.bytes` plus the key map of the cleanable range.
    pub fn compact(
        &mut self,
        now_ms: i64,
        cfg: &CompactionConfig,
        codec: &dyn RecordCodec,
    ) -> Result<CompactionStats> {
        if !self.on_disk() {
            return Ok(CompactionStats::default());
        }
        let mut stats = CompactionStats::default();
        let active_base = self.active().base_offset;
        let lag_cutoff = now_ms.saturating_sub(cfg.min_compaction_lag_ms);
        let mut cleanable = Vec::new();
        for (base, seg) in self.segments.range(..active_base) {
            if cfg.min_compaction_lag_ms > 0 && seg.max_timestamp > lag_cutoff {
                break;
            }
            cleanable.push(*base);
        }
        let Some(&last) = cleanable.last() else {
            return Ok(stats);
        };
        let end = self
            .segments
            .range(last + 1..)
            .next()
            .map_or(self.next_offset, |(b, _)| *b);
        let total: u64 = cleanable.iter().map(|b| self.segments[b].size).sum();
        let dirty: u64 = cleanable
            .iter()
            .filter(|b| self.segments[b].next_offset > self.cleaned_up_to)
            .map(|b| self.segments[b].size)
            .sum();
        if total == 0 || (dirty as f64) / (total as f64) < cfg.min_cleanable_dirty_ratio {
            return Ok(stats);
        }
        let cap = crate::compression::inflated_cap(self.config.max_message_bytes);
        let mut map = HashMap::new();
        for b in &cleanable {
            let seg = &self.segments[b];
            cleaner::index_keys(&seg.read_at(0, seg.size as usize)?, cap, &mut map)?;
        }
        // Consecutive segments are merged while they fit in one segment.
        let mut groups: Vec<Vec<i64>> = Vec::new();
        let mut group_size = 0u64;
        for b in &cleanable {
            let size = self.segments[b].size;
            match groups.last_mut() {
                Some(g) if group_size + size <= self.config.segment_bytes => {
                    g.push(*b);
                    group_size += size;
                }
                _ => {
                    groups.push(vec![*b]);
                    group_size = size;
                }
            }
        }
        let tombstone_cutoff = now_ms.saturating_sub(cfg.delete_retention_ms);
        for group in groups {
            let first = group[0];
            let group_end = self
                .segments
                .range(group[group.len() - 1] + 1..)
                .next()
                .map_or(self.next_offset, |(b, _)| *b);
            let mut out = Vec::new();
            for b in &group {
                let seg = &self.segments[b];
                stats.bytes_before += seg.size;
                cleaner::filter_batches(
                    &seg.read_at(0, seg.size as usize)?,
                    &map,
                    tombstone_cutoff,
                    cap,
                    codec,
                    &mut out,
                    &mut stats,
                )?;
            }
            stats.bytes_after += out.len() as u64;
            self.swap_in(first, group_end, &out, now_ms)?;
            stats.segments_rewritten += group.len();
        }
        self.cleaned_up_to = end;
        write_atomically(
            &self.dir.join(CLEANER_CHECKPOINT_FILE),
            end.to_string().as_bytes(),
        )?;
        Ok(stats)
    }

    /// Replaces the segments with bases in [first, end) by one holding `bytes`, crash-safely.
    fn swap_in(&mut self, first: i64, end: i64, bytes: &[u8], now_ms: i64) -> Result<()> {
        let stem = crate::segment::file_stem(first);
        let cleaned = self.dir.join(format!("{stem}.cleaned"));
        write_atomically(&cleaned, bytes)?;
        let swap = self
            .dir
            .join(format!("{stem}.{}.swap", crate::segment::file_stem(end)));
        fs::rename(&cleaned, &swap).map_err(|e| LogError::io(&swap, e))?;
        sync_dir(&self.dir)?;
        let old: Vec<i64> = self.segments.range(first..end).map(|(b, _)| *b).collect();
        for b in old {
            if let Some(seg) = self.segments.remove(&b) {
                if b != first {
                    seg.delete_files()?;
                }
            }
        }
        let target = self.dir.join(format!("{stem}.log"));
        fs::rename(&swap, &target).map_err(|e| LogError::io(&target, e))?;
        sync_dir(&self.dir)?;
        let (seg, _) = LogSegment::open(
            &self.dir,
            first,
            ScanPolicy::trusted(),
            self.config.index_interval_bytes,
            now_ms,
        )?;
        self.segments.insert(first, seg);
        Ok(())
    }

    /// Flushes everything and leaves a marker so the next open skips crash recovery.
    pub fn close(&mut self) -> Result<()> {
        if !self.on_disk() {
            return Ok(()); // offline, or never written: nothing to flush or mark
        }
        self.flush()?;
        self.set_recovery_point(self.next_offset)?;
        self.producers
            .save(&self.dir.join(SNAPSHOT_FILE), self.next_offset)?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        File::create(&marker).map_err(|e| LogError::io(&marker, e))?;
        Ok(())
    }

    /// Removes the partition's directory and everything in it (none for a log never
    /// written).
    pub fn delete(self) -> Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LogError::io(&self.dir, e)),
            _ => Ok(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Completes or discards a compaction that a crash interrupted: a `.cleaned` file was
/// never swapped in (the originals are intact), so it goes; a `.swap` file was, so the
/// segments it replaces are deleted and it takes the first one's name.
fn finish_interrupted_compaction(dir: &Path) -> Result<()> {
    let mut logs = Vec::new();
    let mut swaps = Vec::new();
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let path = entry.map_err(|e| LogError::io(dir, e))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".cleaned") {
            fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            removed = true;
        } else if let Some(stem) = name.strip_suffix(".swap") {
            if let Some((a, b)) = stem.split_once('.') {
                if let (Ok(first), Ok(end)) = (a.parse::<i64>(), b.parse::<i64>()) {
                    swaps.push((first, end, path));
                }
            }
        } else if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(base) = stem.parse::<i64>() {
                logs.push(base);
            }
        }
    }
    let changed = removed || !swaps.is_empty();
    for (first, end, swap) in swaps {
        tracing::warn!(swap = %swap.display(), "completing a compaction interrupted by a crash");
        for b in logs.iter().filter(|b| **b > first && **b < end) {
            let p = dir.join(format!("{}.log", crate::segment::file_stem(*b)));
            fs::remove_file(&p).map_err(|e| LogError::io(&p, e))?;
        }
        let target = dir.join(format!("{}.log", crate::segment::file_stem(first)));
        fs::rename(&swap, &target).map_err(|e| LogError::io(&target, e))?;
        // The swapped range was cleaned: its gaps are compaction's, not missing segments.
        let checkpoint = dir.join(CLEANER_CHECKPOINT_FILE);
        let cleaned = read_offset_file(&checkpoint).unwrap_or(0);
        if end > cleaned {
            write_atomically(&checkpoint, end.to_string().as_bytes())?;
        }
    }
    // Nothing interrupted (every partition opened at start-up or created): no directory
    // changed, and an fsync per partition would make creating or opening thousands slow.
    if !changed {
        return Ok(());
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}

/// An offset checkpoint file (one number); None when absent or unreadable.
fn read_offset_file(path: &Path) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_epochs(path: &Path) -> Vec<(i32, i64)> {
    // Kafka's text format: version line, count line, then "epoch offset" lines.
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut epochs: Vec<(i32, i64)> = text
        .lines()
        .skip(2)
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect();
    epochs.sort_unstable();
    epochs
}

fn write_epochs(path: &Path, epochs: &[(i32, i64)]) -> Result<()> {
    let mut text = format!("0\n{}\n", epochs.len());
    for (e, o) in epochs {
        text.push_str(&format!("{e} {o}\n"));
    }
    write_atomically(path, text.as_bytes())
}
