//! Issue 12 regressions in the log layer: the validator (record count, offset deltas,
//! max timestamp, compressed payloads, keys on compacted topics), bounded inflation, and
//! recovery that never deletes what it cannot prove torn.

use std::fs;
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use runnel_log::batch::build_batch;
use runnel_log::{BatchHeader, LogConfig, LogError, PartitionLog};

const CRC_START: usize = 21;

fn recrc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// `n` keyed records, timestamps `ts + i`.
fn keyed(n: usize, ts: i64) -> Vec<u8> {
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let recs: Vec<(Option<&[u8]>, Option<&[u8]>)> = keys
        .iter()
        .map(|k| (Some(k.as_bytes()), Some(&b"value"[..])))
        .collect();
    let mut b = build_batch(&recs, ts);
    // build_batch stamps every record with `ts`; give them distinct timestamps.
    set_record_timestamps(&mut b, |i| i as i64);
    b
}

/// Rewrites each record's timestamp delta (single-byte varints only) and the header's
/// max timestamp to match; recomputes the CRC.
fn set_record_timestamps(b: &mut [u8], delta: impl Fn(usize) -> i64) {
    let mut at = 61;
    let mut i = 0;
    let base = i64::from_be_bytes(b[27..35].try_into().unwrap());
    let mut max = -1;
    while at < b.len() {
        let len = (b[at] >> 1) as usize; // single-byte zig-zag length in these tests
        let d = delta(i);
        assert!((0..64).contains(&d));
        b[at + 2] = (d << 1) as u8;
        max = max.max(base + d);
        at += 1 + len;
        i += 1;
    }
    b[35..43].copy_from_slice(&max.to_be_bytes());
    recrc(b);
}

/// Compresses an uncompressed batch's records with `codec` (1 gzip, 4 zstd).
fn compress(b: &[u8], codec: i16) -> Vec<u8> {
    let body = &b[61..];
    let packed = match codec {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        4 => zstd::encode_all(body, 3).unwrap(),
        _ => unreachable!(),
    };
    with_payload(b, codec, &packed)
}

fn with_payload(b: &[u8], codec: i16, payload: &[u8]) -> Vec<u8> {
    let mut out = b[..61].to_vec();
    out.extend_from_slice(payload);
    let len = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    let attrs = i16::from_be_bytes([out[21], out[22]]) & !7 | codec;
    out[21..23].copy_from_slice(&attrs.to_be_bytes());
    recrc(&mut out);
    out
}

fn compacted() -> LogConfig {
    LogConfig {
        compacted: true,
        ..LogConfig::default()
    }
}

#[test]
fn record_count_offset_deltas_and_last_offset_delta_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    let good = keyed(3, 1000);
    // recordCount says 4.
    let mut b = good.clone();
    b[57..61].copy_from_slice(&4i32.to_be_bytes());
    b[23..27].copy_from_slice(&3i32.to_be_bytes());
    recrc(&mut b);
    assert!(matches!(
        log.append(&mut b, 0, 0),
        Err(LogError::InvalidRecord(_))
    ));
    // lastOffsetDelta disagrees with recordCount.
    let mut b = good.clone();
    b[23..27].copy_from_slice(&5i32.to_be_bytes());
    recrc(&mut b);
    assert!(matches!(
        log.append(&mut b, 0, 0),
        Err(LogError::InvalidRecord(_))
    ));
    // The second record claims offset delta 0 again (a duplicate offset for consumers).
    let mut b = good.clone();
    let second = 61 + 1 + (b[61] >> 1) as usize;
    assert_eq!(b[second + 3], 2); // zig-zag 1
    b[second + 3] = 0;
    recrc(&mut b);
    let e = log.append(&mut b, 0, 0).unwrap_err();
    assert!(
        matches!(e, LogError::InvalidRecord(ref m) if m.contains("offset delta")),
        "{e}"
    );
    assert_eq!(log.log_end_offset(), 0, "nothing was written");
    log.append(&mut good.clone(), 0, 0).unwrap();
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn a_max_timestamp_of_minus_one_is_recomputed_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    // Old sarama: maxTimestamp -1 on a batch whose records carry real timestamps.
    let mut b = keyed(5, 1_000_000);
    b[35..43].copy_from_slice(&(-1i64).to_be_bytes());
    recrc(&mut b);
    log.append(&mut b, 0, 0).unwrap();
    let stored = log.read(0, 1 << 20, i64::MAX, true).unwrap().records;
    let h = runnel_log::batch::validate_batch(&stored).unwrap(); // CRC still valid
    assert_eq!(h.max_timestamp, 1_000_004);
    assert_eq!(
        log.offset_for_timestamp(1_000_003).unwrap(),
        Some((3, 1_000_003))
    );
}

#[test]
fn time_retention_deletes_a_batch_sent_with_max_timestamp_minus_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 3000,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config, 0).unwrap();
    let mut b = keyed(5, 1_000);
    b[35..43].copy_from_slice(&(-1i64).to_be_bytes());
    recrc(&mut b);
    log.append(&mut b, 0, 0).unwrap();
    log.apply_retention(10_000).unwrap();
    assert_eq!(log.log_start_offset(), 5, "the expired records are gone");
}

#[test]
fn keyless_records_on_a_compacted_topic_get_per_record_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), compacted(), 0).unwrap();
    let mut b = build_batch(
        &[(Some(b"k"), Some(b"v")), (None, Some(b"v")), (None, None)],
        0,
    );
    match log.append(&mut b, 0, 0) {
        Err(LogError::RecordErrors { record_errors, .. }) => {
            assert_eq!(
                record_errors.iter().map(|e| e.0).collect::<Vec<_>>(),
                vec![1, 2]
            );
        }
        other => panic!("{other:?}"),
    }
    // The same check inside a compressed batch.
    let mut z = compress(&build_batch(&[(None, Some(b"v"))], 0), 4);
    assert!(matches!(
        log.append(&mut z, 0, 0),
        Err(LogError::RecordErrors { .. })
    ));
    let mut ok = compress(&keyed(2, 0), 4);
    log.append(&mut ok, 0, 0).unwrap();
}

#[test]
fn a_compressed_payload_that_does_not_decode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    let garbage = with_payload(
        &keyed(3, 0),
        4,
        &[0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff, 0xff, 0xff],
    );
    let e = log.append(&mut garbage.clone(), 0, 0).unwrap_err();
    assert!(matches!(e, LogError::CorruptBatch(_)), "{e}");
    // A payload that inflates but holds fewer records than the header says.
    let short = compress(&keyed(3, 0), 1);
    let mut fewer = short.clone();
    fewer[57..61].copy_from_slice(&4i32.to_be_bytes());
    fewer[23..27].copy_from_slice(&3i32.to_be_bytes());
    recrc(&mut fewer);
    assert!(matches!(
        log.append(&mut fewer, 0, 0),
        Err(LogError::InvalidRecord(_))
    ));
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn a_zstd_bomb_on_a_compacted_topic_is_refused_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), compacted(), 0).unwrap();
    // One record claiming a 2 GiB value, followed by 128 MiB of zeros: a tiny frame.
    // Built as a stream: a header for one record claiming a huge value, then zeros.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.write_all(&[0xfe, 0xff, 0xff, 0xff, 0x0f]).unwrap(); // record length varint (huge)
    enc.write_all(&[0, 0, 0, 2, b'k']).unwrap(); // attrs, ts, offset, key "k"
    enc.write_all(&[0xfe, 0xff, 0xff, 0xff, 0x0f]).unwrap(); // value length
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..128 {
        enc.write_all(&zeros).unwrap();
    }
    let payload = enc.finish().unwrap();
    assert!(payload.len() < 1 << 20);
    let mut b = with_payload(&keyed(1, 0), 4, &payload);
    let started = std::time::Instant::now();
    let e = log.append(&mut b, 0, 0).unwrap_err();
    assert!(matches!(e, LogError::InflatedTooLarge { .. }), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn list_offsets_by_time_is_exact_inside_a_gzip_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    let mut b = compress(&keyed(10, 5_000), 1);
    log.append(&mut b, 0, 0).unwrap();
    for i in 0..10 {
        assert_eq!(
            log.offset_for_timestamp(5_000 + i).unwrap(),
            Some((i, 5_000 + i))
        );
    }
    assert_eq!(log.offset_for_timestamp(5_010).unwrap(), None);
}

// ---- recovery ----

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    }
}

/// A log of several segments, closed cleanly or not; returns its segment paths, oldest
/// first, and the log end.
fn write_segments(dir: &Path, clean: bool) -> (Vec<std::path::PathBuf>, i64) {
    let mut log = PartitionLog::open(dir, small(), 0).unwrap();
    for i in 0..40 {
        log.append(&mut keyed(5, i * 10), 0, 0).unwrap();
    }
    if clean {
        log.close().unwrap();
    }
    let end = log.log_end_offset();
    drop(log);
    let mut segs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 4, "{segs:?}");
    (segs, end)
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "log"))
        .map(|p| (p.display().to_string(), fs::read(&p).unwrap()))
        .collect();
    all.sort();
    all
}

/// Opens the damaged log, expects it offline with a reason that names `names`, and
/// checks no segment byte changed; then undoes the damage and expects all `end` offsets.
fn expect_offline_then_whole(
    dir: &Path,
    damage: impl FnOnce(),
    repair: impl FnOnce(),
    names: &str,
    end: i64,
) {
    damage();
    let before = snapshot(dir);
    let log = PartitionLog::open(dir, small(), 0).unwrap();
    let reason = log
        .offline_reason()
        .expect("the partition is offline")
        .to_string();
    assert!(reason.contains(names), "{reason}");
    assert!(matches!(
        log.read(0, 100, i64::MAX, true),
        Err(LogError::Offline { .. })
    ));
    drop(log);
    assert_eq!(snapshot(dir), before, "recovery changed a segment file");
    repair();
    let mut log = PartitionLog::open(dir, small(), 0).unwrap();
    assert_eq!(log.offline_reason(), None);
    assert_eq!(log.log_end_offset(), end, "records lost");
    let mut n = 0;
    log.for_each_batch(|h: &BatchHeader, _| -> Result<(), LogError> {
        n += h.record_count as i64;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, end, "every record readable");
    log.close().unwrap();
}

fn flip(path: &Path, at: usize, mask: u8) {
    let mut raw = fs::read(path).unwrap();
    raw[at] ^= mask;
    fs::write(path, raw).unwrap();
}

#[test]
fn a_flipped_batch_length_in_an_older_segment_takes_the_partition_offline() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (segs, end) = write_segments(dir.path(), clean);
        let seg = segs[1].clone();
        let second_batch = {
            let raw = fs::read(&seg).unwrap();
            BatchHeader::parse(&raw).unwrap().total_size()
        };
        let name = seg.file_name().unwrap().to_string_lossy().into_owned();
        expect_offline_then_whole(
            dir.path(),
            || flip(&seg, second_batch + 11, 0x10),
            || flip(&seg, second_batch + 11, 0x10),
            &format!("{name} is damaged at byte"),
            end,
        );
    }
}

#[test]
fn a_flipped_magic_in_an_older_segment_takes_the_partition_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (segs, end) = write_segments(dir.path(), true);
    let seg = segs[0].clone();
    expect_offline_then_whole(
        dir.path(),
        || flip(&seg, 16, 0x01),
        || flip(&seg, 16, 0x01),
        "magic byte 3",
        end,
    );
}

#[test]
fn a_flipped_base_offset_bit_in_an_older_segments_last_batch_is_reported_not_fatal() {
    for mask in [0x01u8, 0x40] {
        let dir = tempfile::tempdir().unwrap();
        let (segs, end) = write_segments(dir.path(), true);
        let seg = segs[1].clone();
        let raw = fs::read(&seg).unwrap();
        let mut last = 0;
        let mut at = 0;
        while at < raw.len() {
            last = at;
            at += BatchHeader::parse(&raw[at..]).unwrap().total_size();
        }
        // Byte 7 is the base offset's lowest byte: 0x01 moves it by one (overlap or a
        // step back), 0x40 by 64 (into the next segment's range).
        expect_offline_then_whole(
            dir.path(),
            || flip(&seg, last + 7, mask),
            || flip(&seg, last + 7, mask),
            "damaged",
            end,
        );
    }
}

#[test]
fn a_missing_middle_segment_is_reported_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (segs, end) = write_segments(dir.path(), true);
    let aside = dir.path().join("moved-aside");
    let seg = segs[2].clone();
    expect_offline_then_whole(
        dir.path(),
        || fs::rename(&seg, &aside).unwrap(),
        || fs::rename(&aside, &seg).unwrap(),
        "leaves a gap",
        end,
    );
}

#[test]
fn stray_names_are_ignored_and_an_unreadable_segment_takes_only_its_partition_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (_, end) = write_segments(dir.path(), true);
    fs::write(dir.path().join("notes.log"), b"operator notes").unwrap();
    fs::write(dir.path().join("00000000000000000000.log.bak"), b"x").unwrap();
    fs::write(dir.path().join("stray"), b"x").unwrap();
    let mut log = PartitionLog::open(dir.path(), small(), 0).unwrap();
    assert_eq!(log.offline_reason(), None);
    assert_eq!(log.log_end_offset(), end);
    log.close().unwrap();
    // A directory where a segment file should be cannot be opened as one.
    let bogus = dir.path().join(format!("{:020}.log", end + 100));
    expect_offline_then_whole(
        dir.path(),
        || fs::create_dir(&bogus).unwrap(),
        || fs::remove_dir(&bogus).unwrap(),
        &bogus.display().to_string(),
        end,
    );
}

#[test]
fn after_a_crash_only_the_unflushed_tail_of_the_active_segment_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (segs, end) = write_segments(dir.path(), false);
    // A torn write at the end of the active segment: cut, as before.
    let active = segs.last().unwrap();
    let len = fs::metadata(active).unwrap().len();
    assert!(len > 10);
    fs::OpenOptions::new()
        .write(true)
        .open(active)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let log = PartitionLog::open(dir.path(), small(), 0).unwrap();
    assert_eq!(log.offline_reason(), None);
    assert_eq!(log.log_end_offset(), end - 5, "only the torn batch went");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The validator on mutated batches (plain and compressed): never a panic, never
    /// more than the cap inflated, and what it accepts reads back with a valid CRC.
    #[test]
    fn the_validator_survives_mutated_batches(
        n in 1usize..6,
        codec in prop_oneof![Just(0i16), Just(1), Just(4)],
        flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<u16>()),
        recompute_crc in any::<bool>(),
    ) {
        let plain = keyed(n, 100);
        let mut b = if codec == 0 { plain } else { compress(&plain, codec) };
        for (at, byte) in flips {
            let at = at as usize % b.len();
            b[at] ^= byte;
        }
        if let Some(c) = cut {
            b.truncate(61.max(c as usize % (b.len() + 1)));
        }
        if recompute_crc && b.len() >= 61 {
            recrc(&mut b);
        }
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { max_message_bytes: 4096, compacted: codec == 1, ..LogConfig::default() };
        let mut log = PartitionLog::open(dir.path(), config, 0).unwrap();
        if log.append(&mut b, 0, 0).is_ok() {
            let stored = log.read(0, 1 << 20, i64::MAX, true).unwrap().records;
            prop_assert!(runnel_log::batch::validate_batch(&stored).is_ok());
        }
        // Whatever the payload claims, streaming its records never passes the cap.
        if let Ok(h) = BatchHeader::parse(&b) {
            if let Ok(c) = h.compression() {
                let body = &b[61..];
                if let Ok(mut r) = runnel_log::compression::inflating_reader(c, body, 4096) {
                    let _ = std::io::copy(&mut r, &mut std::io::sink());
                    prop_assert!(r.produced() <= 4096);
                }
            }
        }
    }
}
