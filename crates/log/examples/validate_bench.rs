//! Prints what validation costs on the produce path: MB/s of batch bytes through the
//! structural check alone (`batch::validate_batch`, what produce did before the
//! validator) and through the validator, for an uncompressed, a gzip and a zstd batch of
//! 1000 records of 100 bytes. Run: `cargo run --release -p runnel-log --example validate_bench`.

use std::io::Write;
use std::time::Instant;

use runnel_log::batch::{build_batch, validate_batch};
use runnel_log::validator::{validate, ValidationContext};
use runnel_log::TimestampType;

fn with_codec(plain: &[u8], codec: i16) -> Vec<u8> {
    let body = &plain[61..];
    let packed = match codec {
        0 => body.to_vec(),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        _ => zstd::encode_all(body, 3).unwrap(),
    };
    let mut out = plain[..61].to_vec();
    out.extend_from_slice(&packed);
    let len = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    out[21..23].copy_from_slice(&codec.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

fn rate(bytes: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed().as_millis() < 500 {
        f();
        n += 1;
    }
    (bytes * n) as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i:06}")).collect();
    let value: Vec<u8> = (0..100u32).map(|i| b'a' + (i % 26) as u8).collect();
    let records: Vec<(Option<&[u8]>, Option<&[u8]>)> = keys
        .iter()
        .map(|k| (Some(k.as_bytes()), Some(&value[..])))
        .collect();
    let plain = build_batch(&records, 1_700_000_000_000);
    let ctx = ValidationContext {
        max_message_bytes: 1 << 20,
        compacted: true,
        timestamp_type: TimestampType::CreateTime,
        from_client: true,
    };
    println!(
        "{:<14} {:>9} {:>16} {:>16}",
        "batch", "bytes", "frame MB/s", "validator MB/s"
    );
    for (name, codec) in [("uncompressed", 0), ("gzip", 1), ("zstd", 4)] {
        let b = with_codec(&plain, codec);
        let frame = rate(b.len(), || {
            validate_batch(&b).unwrap();
        });
        let mut scratch = b.clone();
        let full = rate(b.len(), || {
            scratch.copy_from_slice(&b);
            validate(&mut scratch, &ctx).unwrap();
        });
        println!("{name:<14} {:>9} {frame:>16.0} {full:>16.0}", b.len());
    }
}
