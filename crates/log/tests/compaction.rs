//! Log compaction: the latest value per key survives, offsets are preserved, tombstones
//! go after `delete.retention.ms`, the active segment is untouched, and a crash in the
//! middle of a swap is completed at the next open.

use std::collections::BTreeMap;

use runnel_log::batch::{build_batch, for_each_record};
use runnel_log::{
    BatchHeader, CompactionConfig, CompressionCodec, LogConfig, PartitionLog, RecordCodec,
};

struct NoCodec;
impl RecordCodec for NoCodec {
    fn compress(&self, _: CompressionCodec, _: &[u8]) -> Result<Vec<u8>, String> {
        Err("test batches are uncompressed".into())
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        ..LogConfig::default()
    }
}

/// Everything readable: (offset, key, value).
fn dump(log: &PartitionLog) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let r = log.read(next, 1 << 20, i64::MAX, true).unwrap();
        if r.records.is_empty() {
            break;
        }
        let mut at = 0;
        while at < r.records.len() {
            let h = BatchHeader::parse(&r.records[at..]).unwrap();
            for_each_record(&r.records[at..at + h.total_size()], |rec| {
                out.push((
                    rec.offset,
                    String::from_utf8_lossy(rec.key.unwrap()).into_owned(),
                    rec.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                ));
            })
            .unwrap();
            next = h.last_offset() + 1;
            at += h.total_size();
        }
    }
    out
}

fn put(log: &mut PartitionLog, key: &str, value: Option<&str>, ts: i64) -> i64 {
    let mut b = build_batch(&[(Some(key.as_bytes()), value.map(str::as_bytes))], ts);
    log.append(&mut b, 0, ts).unwrap().base_offset
}

#[test]
fn keeps_the_latest_value_per_key_with_offsets_preserved() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(), 0).unwrap();
    let mut model: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for i in 0..300 {
        let key = format!("k{}", i % 17);
        let value = format!("v{i}");
        let offset = put(&mut log, &key, Some(&value), 1000);
        model.insert(key, (offset, value));
    }
    let active_base = log.log_end_offset() - 1; // at least the last record is in the active segment
    let before = log.size_bytes();
    let cfg = CompactionConfig {
        min_cleanable_dirty_ratio: 0.0,
        ..CompactionConfig::default()
    };
    let stats = log.compact(2000, &cfg, &NoCodec).unwrap();
    assert!(stats.records_removed > 200, "{stats:?}");
    assert!(log.size_bytes() < before / 2);
    let after = dump(&log);
    // Every key's latest value is still there at its original offset...
    for (key, (offset, value)) in &model {
        assert!(
            after.contains(&(*offset, key.clone(), Some(value.clone()))),
            "{key} lost"
        );
    }
    // ...and in the compacted part, nothing else is.
    let compacted: Vec<_> = after
        .iter()
        .filter(|(o, _, _)| *o < active_base - 40)
        .collect();
    for (offset, key, _) in compacted {
        assert_eq!(model[key].0, *offset, "stale {key}@{offset} survived");
    }
    // Offsets still ascend and the log still appends after reopening.
    drop(log);
    let mut log = PartitionLog::open(dir.path(), config(), 0).unwrap();
    let offsets: Vec<i64> = dump(&log).iter().map(|r| r.0).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(put(&mut log, "k0", Some("new"), 3000), 300);
}

#[test]
fn tombstones_are_removed_after_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(), 0).unwrap();
    put(&mut log, "gone", Some("x"), 1000);
    put(&mut log, "gone", None, 1000);
    put(&mut log, "young", Some("y"), 50_000);
    put(&mut log, "young", None, 50_000);
    for i in 0..200 {
        put(&mut log, &format!("filler{}", i % 3), Some("f"), 50_000);
    }
    let cfg = CompactionConfig {
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 10_000,
        min_compaction_lag_ms: 0,
    };
    log.compact(55_000, &cfg, &NoCodec).unwrap();
    let keys: Vec<(String, Option<String>)> =
        dump(&log).into_iter().map(|(_, k, v)| (k, v)).collect();
    assert!(
        !keys.iter().any(|(k, _)| k == "gone"),
        "old tombstone and value removed"
    );
    assert!(
        keys.contains(&("young".to_string(), None)),
        "young tombstone kept"
    );
    assert!(!keys.contains(&("young".to_string(), Some("y".to_string()))));
}

#[test]
fn an_interrupted_swap_is_completed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(), 0).unwrap();
    for i in 0..120 {
        put(
            &mut log,
            &format!("k{}", i % 5),
            Some(&format!("v{i}")),
            1000,
        );
    }
    log.close().unwrap();
    let expected = dump(&log);
    drop(log);
    // A leftover .cleaned file (crash before the swap) is ignored and removed.
    std::fs::write(
        dir.path().join("00000000000000000000.cleaned"),
        b"partial garbage",
    )
    .unwrap();
    let log = PartitionLog::open(dir.path(), config(), 0).unwrap();
    assert_eq!(dump(&log), expected);
    assert!(!dir.path().join("00000000000000000000.cleaned").exists());
    drop(log);
    // A .swap file (crash after the cleaned segment was complete) replaces its range.
    let segments: Vec<i64> = {
        let mut v: Vec<i64> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .strip_suffix(".log")
                    .and_then(|s| s.parse().ok())
            })
            .collect();
        v.sort();
        v
    };
    assert!(segments.len() >= 3);
    let (first, end) = (segments[0], segments[2]);
    let mut swapped = Vec::new();
    for (offset, key, value) in &expected {
        if *offset >= first && *offset < end && *offset % 2 == 0 {
            let mut b = build_batch(
                &[(Some(key.as_bytes()), value.as_deref().map(str::as_bytes))],
                1000,
            );
            b[0..8].copy_from_slice(&offset.to_be_bytes());
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            swapped.extend_from_slice(&b);
        }
    }
    std::fs::write(
        dir.path().join(format!("{first:020}.{end:020}.swap")),
        &swapped,
    )
    .unwrap();
    let log = PartitionLog::open(dir.path(), config(), 0).unwrap();
    let now = dump(&log);
    let want: Vec<_> = expected
        .iter()
        .filter(|(o, _, _)| !(*o >= first && *o < end) || *o % 2 == 0)
        .cloned()
        .collect();
    assert_eq!(now, want);
}
