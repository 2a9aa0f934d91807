//! Bounded inflation of compressed record sections.
//!
//! Every place that looks inside a compressed batch (produce validation, ListOffsets by
//! timestamp, the cleaner, coordinator replay) reads through [`inflating_reader`], which
//! fails as soon as the output passes a cap. Nothing is ever allocated from a size read
//! off the wire: streams are read in fixed chunks, a snappy block's claimed length is
//! checked against the cap before its buffer exists, and zstd's window is limited so a
//! frame header cannot make the decoder reserve more than [`ZSTD_WINDOW_LOG_MAX`] bytes.
//!
//! Thread-safe: plain functions over their arguments.

use std::io::{self, Read};

use crate::batch::CompressionCodec;
use crate::error::{LogError, Result};

/// log2 of the largest zstd window accepted (16 MiB). Producers compress one batch at a
/// time and zstd never uses a window larger than its input, so only a forged frame asks
/// for more.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// How far a batch may inflate, from the topic's `max.message.bytes`: 64 times the
/// largest batch, at least 16 MiB and at most 1 GiB. Validation streams through the
/// records, so this bounds CPU time rather than memory; readers that keep the inflated
/// bytes (the cleaner, replay, ListOffsets) hold at most this much.
pub fn inflated_cap(max_message_bytes: usize) -> u64 {
    (max_message_bytes as u64)
        .saturating_mul(64)
        .clamp(16 << 20, 1 << 30)
}

/// A reader that fails with [`io::ErrorKind::FileTooLarge`]-style `Other` once more than
/// `cap` bytes have come out of `inner`.
pub struct CappedReader<R> {
    inner: R,
    produced: u64,
    cap: u64,
}

impl<R: Read> CappedReader<R> {
    pub fn new(inner: R, cap: u64) -> Self {
        CappedReader {
            inner,
            produced: 0,
            cap,
        }
    }
    /// Bytes produced so far (never more than the cap).
    pub fn produced(&self) -> u64 {
        self.produced
    }
}

/// The message a capped reader fails with; [`LogError`] conversion recognises it.
const OVER_CAP: &str = "inflated size exceeds the cap";

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte past the cap so that reaching it is distinguishable from EOF.
        let room = (self.cap - self.produced).saturating_add(1);
        let want = buf.len().min(room.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if self.produced + n as u64 > self.cap {
            return Err(io::Error::other(OVER_CAP));
        }
        self.produced += n as u64;
        Ok(n)
    }
}

/// A reader over the inflated records section `data` of a batch compressed with `codec`,
/// failing past `cap` output bytes. `None` is the section itself.
pub fn inflating_reader<'a>(
    codec: CompressionCodec,
    data: &'a [u8],
    cap: u64,
) -> Result<CappedReader<Box<dyn Read + 'a>>> {
    let inner: Box<dyn Read + 'a> = match codec {
        CompressionCodec::None => Box::new(data),
        CompressionCodec::Gzip => Box::new(flate2::read::GzDecoder::new(data)),
        CompressionCodec::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| corrupt(codec, &e))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| corrupt(codec, &e))?;
            Box::new(d)
        }
        CompressionCodec::Lz4 => Box::new(lz4::Decoder::new(data).map_err(|e| corrupt(codec, &e))?),
        CompressionCodec::Snappy => Box::new(SnappyReader::new(data, cap)),
    };
    Ok(CappedReader::new(inner, cap))
}

/// Inflates a whole records section into memory, at most `cap` bytes.
pub fn inflate(codec: CompressionCodec, data: &[u8], cap: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    inflating_reader(codec, data, cap)?
        .read_to_end(&mut out)
        .map_err(|e| inflate_error(codec, cap, &e))?;
    Ok(out)
}

/// Maps a read error from an inflating reader to the log's error: past the cap is
/// `BatchTooLarge` (RECORD_TOO_LARGE), anything else a corrupt payload (CORRUPT_MESSAGE).
pub fn inflate_error(codec: CompressionCodec, cap: u64, e: &io::Error) -> LogError {
    if e.to_string() == OVER_CAP {
        LogError::InflatedTooLarge { codec, cap }
    } else {
        corrupt(codec, e)
    }
}

fn corrupt(codec: CompressionCodec, e: &dyn std::fmt::Display) -> LogError {
    LogError::CorruptBatch(format!("the {codec:?} payload does not decompress: {e}"))
}

/// Kafka's snappy: either the xerial framing (a 16-byte magic header, then blocks each
/// prefixed by a big-endian u32 compressed length) or one raw snappy block. Blocks are
/// inflated one at a time; each block's claimed size is checked against what is left of
/// the cap before a buffer is made for it.
struct SnappyReader<'a> {
    rest: &'a [u8],
    raw: bool,
    block: Vec<u8>,
    at: usize,
    left: u64,
}

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";

impl<'a> SnappyReader<'a> {
    fn new(data: &'a [u8], cap: u64) -> Self {
        let xerial = data.len() >= 16 && data[..8] == XERIAL_MAGIC[..];
        SnappyReader {
            rest: if xerial { &data[16..] } else { data },
            raw: !xerial,
            block: Vec::new(),
            at: 0,
            left: cap,
        }
    }

    fn next_block(&mut self) -> io::Result<bool> {
        if self.rest.is_empty() {
            return Ok(false);
        }
        let compressed = if self.raw {
            std::mem::take(&mut self.rest)
        } else {
            if self.rest.len() < 4 {
                return Err(io::Error::other("truncated snappy block length"));
            }
            let n = u32::from_be_bytes(self.rest[..4].try_into().expect("4 bytes")) as usize;
            if n > self.rest.len() - 4 {
                return Err(io::Error::other("snappy block runs past the payload"));
            }
            let (block, rest) = self.rest[4..].split_at(n);
            self.rest = rest;
            block
        };
        let len = snap::raw::decompress_len(compressed).map_err(io::Error::other)?;
        if len as u64 > self.left {
            return Err(io::Error::other(OVER_CAP));
        }
        self.left -= len as u64;
        self.block.clear();
        self.block.resize(len, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(io::Error::other)?;
        self.at = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_codec_inflates_within_the_cap_and_stops_past_it() {
        let data: Vec<u8> = (0..50_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let snappy = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut lz4 = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        lz4.write_all(&data).unwrap();
        let (lz4, r) = lz4.finish();
        r.unwrap();
        let packed = [
            (CompressionCodec::Gzip, gzip(&data)),
            (
                CompressionCodec::Zstd,
                zstd::encode_all(&data[..], 3).unwrap(),
            ),
            (CompressionCodec::Snappy, snappy),
            (CompressionCodec::Lz4, lz4),
        ];
        for (codec, bytes) in &packed {
            assert_eq!(inflate(*codec, bytes, data.len() as u64).unwrap(), data);
            let err = inflate(*codec, bytes, data.len() as u64 - 1).unwrap_err();
            assert!(
                matches!(err, LogError::InflatedTooLarge { .. }),
                "{codec:?}: {err}"
            );
            // A truncated stream is an error, except that the lz4 frame decoder stops
            // quietly at a block boundary: its short output then fails the validator's
            // record count.
            match inflate(*codec, &bytes[..bytes.len() / 2], 1 << 30) {
                Err(LogError::CorruptBatch(_)) => {}
                Ok(short) if *codec == CompressionCodec::Lz4 => assert!(short.len() < data.len()),
                other => panic!("{codec:?}: {:?}", other.map(|v| v.len())),
            }
        }
    }

    #[test]
    fn a_zstd_bomb_stops_at_the_cap_without_allocating_its_size() {
        // 64 MiB of zeros packs into a few KiB; the reader gives up after 1 MiB.
        let bomb = zstd::encode_all(std::io::repeat(0).take(64 << 20), 19).unwrap();
        assert!(bomb.len() < 64 << 10);
        let mut r = inflating_reader(CompressionCodec::Zstd, &bomb, 1 << 20).unwrap();
        let e = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert_eq!(r.produced(), 1 << 20);
        assert!(matches!(
            inflate_error(CompressionCodec::Zstd, 1 << 20, &e),
            LogError::InflatedTooLarge { .. }
        ));
    }

    #[test]
    fn a_snappy_block_claiming_more_than_the_cap_is_refused_before_allocation() {
        // A raw snappy block whose varint length header claims 2^31 bytes.
        let forged = [0x80, 0x80, 0x80, 0x80, 0x08, 0x00];
        let e = inflate(CompressionCodec::Snappy, &forged, 1 << 20).unwrap_err();
        assert!(matches!(e, LogError::InflatedTooLarge { .. }), "{e}");
    }
}
