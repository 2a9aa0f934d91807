//! Behaviour of a partition log through its public API: append, read, roll, recovery,
//! retention, timestamps and idempotent producers.

use proptest::prelude::*;
use runnel_log::{BatchHeader, LogConfig, LogError, PartitionLog, TimestampType};
use std::fs;

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// An uncompressed v2 batch of `n` records whose values are `tag-i`.
fn batch(tag: &str, n: usize, base_ts: i64, pid: i64, seq: i32) -> Vec<u8> {
    let mut records = Vec::new();
    for i in 0..n {
        let value = format!("{tag}-{i}");
        let mut r = vec![0u8];
        put_varlong(&mut r, i as i64); // timestamp delta: 1 ms apart
        put_varlong(&mut r, i as i64);
        put_varlong(&mut r, -1);
        put_varlong(&mut r, value.len() as i64);
        r.extend_from_slice(value.as_bytes());
        put_varlong(&mut r, 0);
        put_varlong(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(n as i32 - 1).to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&(base_ts + n as i64 - 1).to_be_bytes());
    b.extend_from_slice(&pid.to_be_bytes());
    b.extend_from_slice(&(if pid >= 0 { 0i16 } else { -1 }).to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&(n as i32).to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

/// Every batch in `bytes`, as headers.
fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = BatchHeader::parse(&bytes[at..]).unwrap();
        at += h.total_size();
        out.push(h);
    }
    out
}

/// Reads the whole log from `from`, batch by batch, returning each batch's base offset.
fn read_all(log: &PartitionLog, from: i64) -> Vec<i64> {
    let mut offsets = Vec::new();
    let mut next = from;
    while next < log.log_end_offset() {
        let r = log.read(next, 300, i64::MAX, true).unwrap();
        let hs = headers(&r.records);
        assert!(
            !hs.is_empty(),
            "read at {next} returned nothing below the log end"
        );
        for h in hs {
            offsets.push(h.base_offset);
            next = h.last_offset() + 1;
        }
    }
    offsets
}

#[test]
fn appends_read_back_across_rolled_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_segments(), 0).unwrap();
    for i in 0..50 {
        let r = log
            .append(&mut batch("v", 3, 1000 + i, -1, -1), 0, 0)
            .unwrap();
        assert_eq!((r.base_offset, r.last_offset), (i * 3, i * 3 + 2));
    }
    assert!(log.segment_count() > 3, "small segments roll");
    assert_eq!(
        read_all(&log, 0),
        (0..50).map(|i| i * 3).collect::<Vec<_>>()
    );
    // A read in the middle of a batch starts at that batch.
    let r = log.read(4, 10_000, i64::MAX, true).unwrap();
    assert_eq!(headers(&r.records)[0].base_offset, 3);
    // Nothing at or above the upper bound is served.
    let r = log.read(0, 1 << 20, 6, true).unwrap();
    assert_eq!(headers(&r.records).last().unwrap().last_offset(), 5);
    assert!(matches!(
        log.read(151, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(log
        .read(150, 100, i64::MAX, true)
        .unwrap()
        .records
        .is_empty());
}

/// What a read must return, worked out from the whole log in memory: the batches from
/// the one holding `offset`, whole, below `upper` (by base offset), within `max_bytes`
/// (the first one whole even when larger, with `min_one`); nothing from `upper` on.
fn expected_read(all: &[u8], offset: i64, max_bytes: usize, upper: i64, min_one: bool) -> Vec<u8> {
    if offset >= upper {
        return Vec::new();
    }
    let mut at = 0;
    let mut start = None;
    let mut end = 0;
    while at < all.len() {
        let h = BatchHeader::parse(&all[at..]).unwrap();
        let next = at + h.total_size();
        if start.is_none() && h.last_offset() >= offset {
            if h.base_offset >= upper {
                break;
            }
            start = Some(at);
            end = if min_one || h.total_size() <= max_bytes {
                next
            } else {
                at
            };
            if end == at {
                break;
            }
        } else if let Some(s) = start {
            if h.base_offset >= upper || next - s > max_bytes {
                break;
            }
            end = next;
        }
        at = next;
    }
    start.map_or_else(Vec::new, |s| all[s..end].to_vec())
}

#[test]
fn reads_end_at_whole_batches_within_the_limit_and_below_the_bound() {
    // One segment (reads stop at a segment's end) with a sparse index every 128 bytes,
    // batches of 1 to 7 records: the end of a read is found from batch headers alone.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config, 0).unwrap();
    for i in 0..60 {
        log.append(
            &mut batch("w", 1 + (i * 5) % 7, 1000 + i as i64, -1, -1),
            0,
            0,
        )
        .unwrap();
    }
    let end = log.log_end_offset();
    let all = log.read(0, 1 << 30, i64::MAX, true).unwrap().records;
    assert_eq!(headers(&all).last().unwrap().last_offset() + 1, end);
    for offset in (0..end).step_by(3) {
        for max_bytes in [0, 1, 60, 100, 333, 1000, 4096, 1 << 20] {
            for upper in [offset, offset + 1, offset + 9, end / 2, end, i64::MAX] {
                for min_one in [false, true] {
                    let got = log.read(offset, max_bytes, upper, min_one).unwrap().records;
                    let want = expected_read(&all, offset, max_bytes, upper.min(end), min_one);
                    assert_eq!(
                        got, want,
                        "read({offset}, {max_bytes}, {upper}, {min_one}) of a {end}-offset log"
                    );
                    let slice = log.read_slice(offset, max_bytes, upper, min_one).unwrap();
                    assert_eq!(slice.map_or(0, |s| s.len), want.len());
                }
            }
        }
    }
}

#[test]
fn oversized_and_corrupt_batches_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_message_bytes: 200,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config, 0).unwrap();
    assert!(matches!(
        log.append(&mut batch("big", 20, 0, -1, -1), 0, 0),
        Err(LogError::BatchTooLarge { .. })
    ));
    let mut bad = batch("x", 2, 0, -1, -1);
    let n = bad.len();
    bad[n - 2] ^= 0x40;
    assert!(matches!(
        log.append(&mut bad, 0, 0),
        Err(LogError::CorruptBatch(_))
    ));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn torn_tail_is_cut_at_recovery_and_offsets_stay_dense() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
        for _ in 0..10 {
            log.append(&mut batch("v", 2, 0, -1, -1), 0, 0).unwrap();
        }
        // No close(): this is a crash.
    }
    let seg = dir.path().join(format!("{:020}.log", 0));
    let len = fs::metadata(&seg).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    assert_eq!(log.log_end_offset(), 18);
    assert_eq!(read_all(&log, 0).len(), 9);
    assert_eq!(
        log.append(&mut batch("v", 2, 0, -1, -1), 0, 0)
            .unwrap()
            .base_offset,
        18
    );
}

#[test]
fn idempotent_state_survives_restart_clean_or_not() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = PartitionLog::open(dir.path(), small_segments(), 0).unwrap();
            for seq in 0..20 {
                log.append(&mut batch("p", 1, 0, 42, seq), 0, 0).unwrap();
            }
            if clean {
                log.close().unwrap();
            }
        }
        let mut log = PartitionLog::open(dir.path(), small_segments(), 0).unwrap();
        let dup = log.append(&mut batch("p", 1, 0, 42, 19), 0, 0).unwrap();
        assert!(
            dup.duplicate && dup.base_offset == 19,
            "clean={clean}: {dup:?}"
        );
        assert!(matches!(
            log.append(&mut batch("p", 1, 0, 42, 25), 0, 0),
            Err(LogError::OutOfOrderSequence { expected: 20, .. })
        ));
        assert_eq!(
            log.append(&mut batch("p", 1, 0, 42, 20), 0, 0)
                .unwrap()
                .base_offset,
            20
        );
    }
}

#[test]
fn offsets_by_timestamp_and_max_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_segments(), 0).unwrap();
    for i in 0..20 {
        log.append(&mut batch("t", 4, 1000 + i * 10, -1, -1), 0, 0)
            .unwrap(); // records at +0..+3
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1052).unwrap(), Some((22, 1052)));
    assert_eq!(log.offset_for_timestamp(1055).unwrap(), Some((24, 1060)));
    assert_eq!(log.offset_for_timestamp(5000).unwrap(), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((79, 1193)));
}

#[test]
fn log_append_time_replaces_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config, 0).unwrap();
    let r = log.append(&mut batch("x", 2, 5, -1, -1), 0, 777).unwrap();
    assert_eq!(r.log_append_time_ms, 777);
    let h = headers(&log.read(0, 1000, i64::MAX, true).unwrap().records)[0];
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, 777);
}

#[test]
fn retention_by_time_and_size_moves_the_start_offset() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 1000,
        ..small_segments()
    };
    let mut log = PartitionLog::open(dir.path(), config, 0).unwrap();
    for i in 0..30 {
        log.append(&mut batch("r", 2, i * 100, -1, -1), 0, 0)
            .unwrap();
    }
    let segments = log.segment_count();
    assert!(log.apply_retention(3000).unwrap() > 0);
    assert!(log.segment_count() < segments);
    assert!(log.log_start_offset() > 0);
    assert!(matches!(
        log.read(0, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let start = log.log_start_offset();
    assert_eq!(read_all(&log, start).first(), Some(&start));
    // Everything expired: the log is emptied but keeps its end offset.
    log.apply_retention(1_000_000).unwrap();
    assert_eq!(log.log_start_offset(), 60);
    assert_eq!(log.log_end_offset(), 60);
    let size_config = LogConfig {
        retention_bytes: 2048,
        ..small_segments()
    };
    let dir2 = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir2.path(), size_config, 0).unwrap();
    for _ in 0..60 {
        log.append(&mut batch("s", 2, 0, -1, -1), 0, 0).unwrap();
    }
    log.apply_retention(0).unwrap();
    assert!(log.size_bytes() <= 2048 + 1024, "size {}", log.size_bytes());
}

#[test]
fn leader_epochs_answer_offset_for_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.append(&mut batch("a", 2, 0, -1, -1), 0, 0).unwrap();
    log.append(&mut batch("b", 2, 0, -1, -1), 3, 0).unwrap();
    assert_eq!(log.end_offset_for_epoch(0), (0, 2));
    assert_eq!(log.end_offset_for_epoch(2), (0, 2));
    assert_eq!(log.end_offset_for_epoch(3), (3, 4));
    drop(log);
    let log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    assert_eq!(log.end_offset_for_epoch(5), (3, 4));
}

/// A partition never written has no directory: opening, reading, flushing, rolling,
/// retention, closing and deleting it touch no file, and reopening it (a restart) finds
/// the same empty log. The first append makes the directory and its first segment.
#[test]
fn a_new_log_makes_its_directory_on_the_first_write_only() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("t-0");
    let mut log = PartitionLog::open(&dir, LogConfig::default(), 0).unwrap();
    assert!(!dir.exists() && !log.on_disk());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert!(log
        .read(0, 1024, i64::MAX, true)
        .unwrap()
        .records
        .is_empty());
    assert!(matches!(
        log.read(1, 1024, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), None);
    assert_eq!((log.size_bytes(), log.segment_count()), (0, 1));
    assert!(log.active_file().is_none());
    log.flush().unwrap();
    log.roll(0).unwrap();
    assert_eq!(log.apply_retention(i64::MAX).unwrap(), 0);
    assert_eq!(log.delete_records_before(0).unwrap(), 0);
    assert_eq!(log.truncate_to(0, 0).unwrap(), 0);
    log.close().unwrap();
    assert!(!dir.exists(), "nothing written, nothing made");

    let mut log = PartitionLog::open(&dir, LogConfig::default(), 0).unwrap();
    assert!(!dir.exists());
    log.append(&batch("a", 3, 0, -1, -1), 0, 0).unwrap();
    assert!(dir.join("00000000000000000000.log").exists() && log.on_disk());
    assert!(log.active_file().is_some());
    log.close().unwrap();
    let log = PartitionLog::open(&dir, LogConfig::default(), 0).unwrap();
    assert_eq!(read_all(&log, 0), vec![0]);
    log.delete().unwrap();
    assert!(!dir.exists());

    // Never written, deleted: nothing to remove, no error.
    PartitionLog::open(&dir, LogConfig::default(), 0)
        .unwrap()
        .delete()
        .unwrap();

    // A follower reset past offset 0 and a transaction marker make it too.
    let mut log = PartitionLog::open(&dir, LogConfig::default(), 0).unwrap();
    assert_eq!(log.reset_to(42, 0).unwrap(), 42);
    assert!(dir.exists() && log.on_disk() && log.log_start_offset() == 42);
    log.delete().unwrap();
    let mut log = PartitionLog::open(&dir, LogConfig::default(), 0).unwrap();
    log.append_marker(7, 0, true, 0, 0, 0).unwrap();
    assert!(dir.exists() && log.log_end_offset() == 1);
}

/// The first write to a partition whose directory cannot be made fails with the I/O
/// error naming the path, as any failed write does, and leaves the log empty.
#[test]
fn a_first_write_that_cannot_make_the_directory_is_an_io_error() {
    let parent = tempfile::tempdir().unwrap();
    let blocker = parent.path().join("not-a-dir");
    fs::write(&blocker, b"x").unwrap();
    let dir = blocker.join("t-0");
    let mut log = PartitionLog::open(&dir, LogConfig::default(), 0).unwrap();
    match log.append(&batch("a", 1, 0, -1, -1), 0, 0) {
        Err(e @ LogError::Io { .. }) => assert!(e.to_string().contains("t-0"), "{e}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), 0);
    assert!(!log.on_disk());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random damage to a segment file never panics recovery, and whatever survives is
    /// a dense prefix of what was written, every batch of which passes its CRC.
    #[test]
    fn recovery_survives_random_corruption(flips in proptest::collection::vec((any::<u64>(), any::<u8>()), 1..6), cut in any::<u64>()) {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
            for _ in 0..20 {
                log.append(&mut batch("c", 3, 0, -1, -1), 0, 0).unwrap();
            }
        }
        let seg = dir.path().join(format!("{:020}.log", 0));
        let mut raw = fs::read(&seg).unwrap();
        for (at, byte) in flips {
            let n = raw.len() as u64;
            raw[(at % n) as usize] ^= byte | 1;
        }
        raw.truncate((cut % (raw.len() as u64 + 1)) as usize);
        fs::write(&seg, &raw).unwrap();
        let log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
        let end = log.log_end_offset();
        prop_assert!(end % 3 == 0 && end <= 60);
        let offsets = read_all(&log, 0);
        prop_assert_eq!(offsets, (0..end / 3).map(|i| i * 3).collect::<Vec<_>>());
    }
}

#[test]
fn delete_records_moves_the_start_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_segments(), 0).unwrap();
    for i in 0..40 {
        log.append(&mut batch("d", 2, i, -1, -1), 0, 0).unwrap();
    }
    let segments = log.segment_count();
    assert_eq!(log.delete_records_before(33).unwrap(), 33);
    assert!(
        log.segment_count() < segments,
        "whole segments below the new start are gone"
    );
    assert!(matches!(
        log.read(31, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.delete_records_before(81),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        log.delete_records_before(10).unwrap(),
        33,
        "the start never moves back"
    );
    drop(log);
    let log = PartitionLog::open(dir.path(), small_segments(), 0).unwrap();
    assert_eq!(log.log_start_offset(), 33);
    // Reading at the start returns the batch holding it.
    let r = log.read(33, 1000, i64::MAX, true).unwrap();
    assert_eq!(BatchHeader::parse(&r.records).unwrap().base_offset, 32);
}

#[test]
fn appends_after_reopening_go_to_the_end_of_the_segment() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
            for _ in 0..5 {
                log.append(&mut batch("a", 2, 0, -1, -1), 0, 0).unwrap();
            }
            if clean {
                log.close().unwrap();
            }
        }
        for round in 0..2 {
            let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
            let base = log
                .append(&mut batch("b", 2, 0, -1, -1), 0, 0)
                .unwrap()
                .base_offset;
            assert_eq!(base, 10 + round * 2);
            assert_eq!(
                read_all(&log, 0),
                (0..(6 + round)).map(|i| i * 2).collect::<Vec<_>>(),
                "clean={clean} round={round}"
            );
        }
    }
}

/// A follower copies the leader's batches byte for byte, truncates to a divergence point,
/// and catches up again; producer state follows the copied batches.
#[test]
fn a_follower_copies_truncates_and_catches_up() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(leader_dir.path(), small_segments(), 0).unwrap();
    for i in 0..20 {
        leader
            .append(
                &mut batch(&format!("r{i}"), 3, i, 7, i as i32 * 3),
                i as i32 / 5,
                0,
            )
            .unwrap();
    }
    let mut follower = PartitionLog::open(follower_dir.path(), small_segments(), 0).unwrap();
    let mut next = 0;
    while next < leader.log_end_offset() {
        let r = leader.read(next, 500, i64::MAX, true).unwrap();
        next = follower.append_replicated(&r.records, 0).unwrap();
    }
    assert_eq!(follower.log_end_offset(), 60);
    assert_eq!(read_all(&follower, 0), read_all(&leader, 0));
    assert_eq!(
        follower.end_offset_for_epoch(1),
        leader.end_offset_for_epoch(1)
    );
    assert_eq!(follower.producer(7).unwrap().last_sequence(), 59);
    // A refetch of what is already there is skipped.
    let again = leader.read(30, 500, i64::MAX, true).unwrap();
    assert_eq!(follower.append_replicated(&again.records, 0).unwrap(), 60);

    // Divergence at offset 31 (inside the batch [30, 32]): the whole batch goes.
    assert_eq!(follower.truncate_to(31, 0).unwrap(), 30);
    assert_eq!(follower.producer(7).unwrap().last_sequence(), 29);
    assert_eq!(follower.end_offset_for_epoch(3), (1, 30));
    drop(follower);
    let mut follower = PartitionLog::open(follower_dir.path(), small_segments(), 0).unwrap();
    assert_eq!(follower.log_end_offset(), 30);
    let mut next = 30;
    while next < leader.log_end_offset() {
        let r = leader.read(next, 500, i64::MAX, true).unwrap();
        next = follower.append_replicated(&r.records, 0).unwrap();
    }
    assert_eq!(read_all(&follower, 0), read_all(&leader, 0));

    // Behind the leader's log start: start over there.
    assert_eq!(follower.reset_to(45, 0).unwrap(), 45);
    assert_eq!(follower.log_start_offset(), 45);
    let r = leader.read(45, 10_000, i64::MAX, true).unwrap();
    assert_eq!(follower.append_replicated(&r.records, 0).unwrap(), 60);
    assert_eq!(read_all(&follower, 45), read_all(&leader, 45));
}
