//! Any bytes as a partition's only segment after a crash: recovery opens the log (online
//! or offline), never panics, and what it serves passes its CRC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_log::{LogConfig, PartitionLog};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("runnel-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{:020}.log", 0)), data).unwrap();
    let log = PartitionLog::open(&dir, LogConfig::default(), 0).unwrap();
    if log.offline_reason().is_none() && log.log_end_offset() > 0 {
        let read = log.read(0, 1 << 20, i64::MAX, true).unwrap();
        runnel_log::batch::for_each_batch(&read.records, |r| {
            runnel_log::batch::validate_batch(&read.records[r]).map(|_| ())
        })
        .expect("served batches pass their CRC");
    }
});
