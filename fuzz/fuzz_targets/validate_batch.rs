//! Any bytes as a produce request's batch: the validator answers an error or a batch
//! whose CRC holds, never panics, and never inflates past the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_log::validator::{validate, ValidationContext};
use runnel_log::{BatchHeader, TimestampType};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let ctx = ValidationContext {
        max_message_bytes: 64 * 1024,
        compacted: flags & 1 != 0,
        timestamp_type: TimestampType::CreateTime,
        from_client: flags & 2 == 0,
    };
    let mut b = bytes.to_vec();
    if validate(&mut b, &ctx).is_ok() {
        runnel_log::batch::validate_batch(&b).expect("an accepted batch keeps a valid CRC");
    }
    if let Ok(h) = BatchHeader::parse(bytes) {
        if let (Ok(codec), Some(body)) = (h.compression(), bytes.get(61..)) {
            if let Ok(mut r) = runnel_log::compression::inflating_reader(codec, body, 1 << 20) {
                let _ = std::io::copy(&mut r, &mut std::io::sink());
                assert!(r.produced() <= 1 << 20);
            }
        }
    }
});
