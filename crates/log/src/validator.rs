//! Validation of a batch before it is stored: Runnel's `LogValidator`.
//!
//! Every client batch passes here once, in the log layer, before anything is written or
//! kept in memory. What is checked (and refused with Kafka's error) and what is
//! rewritten, as Kafka's `LogValidator` does for a v2 batch from a client:
//! - the batch's size against `max.message.bytes` (RECORD_TOO_LARGE), its magic, length,
//!   CRC and codec (CORRUPT_MESSAGE / UNSUPPORTED_*), see [`batch::check_frame`];
//! - no control batch; from a client, `lastOffsetDelta + 1 == recordCount > 0` and a
//!   base sequence when there is a producer id (INVALID_RECORD);
//! - every record, read through the bounded inflater for compressed batches (a payload
//!   that does not inflate is CORRUPT_MESSAGE; one inflating past
//!   [`compression::inflated_cap`] is RECORD_TOO_LARGE): its framing, offset deltas that
//!   run 0..n-1 in order, and exactly `recordCount` records (INVALID_RECORD). Kafka
//!   rebuilds a compressed batch whose inner offsets are wrong; Runnel never recompresses
//!   on produce and refuses it instead;
//! - on a compacted topic, a key on every record (INVALID_RECORD with KIP-467 per-record
//!   errors naming each keyless record's index);
//! - under CreateTime, the batch's max timestamp is recomputed from its records and
//!   written into the batch (CRC recomputed) when it differs, exactly as Kafka sets it.
//!   Old sarama sends -1 there, which would hide the batch from ListOffsets by time and
//!   from time retention.
//!
//! The records are streamed, never held: memory is a fixed read buffer whatever the
//! batch claims. Thread-safe: a pure function of its arguments.

use std::io::{self, BufReader, Read};

use crate::batch::{self, BatchHeader, CompressionCodec, BATCH_HEADER_BYTES};
use crate::compression::{self, inflate_error};
use crate::config::TimestampType;
use crate::error::{LogError, Result};

/// What the validator needs to know about the partition.
#[derive(Debug, Clone, Copy)]
pub struct ValidationContext {
    /// `max.message.bytes`: the largest batch, and the base of the inflation cap.
    pub max_message_bytes: usize,
    /// `cleanup.policy` includes `compact`: every record needs a key.
    pub compacted: bool,
    pub timestamp_type: TimestampType,
    /// A client's batch gets Kafka's client-only checks (offset range, no control batch,
    /// sequence present); the broker's own coordinators write batches it built itself.
    pub from_client: bool,
}

/// One record's position data, as seen while streaming a batch's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamedRecord {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub has_key: bool,
}

/// Validates `b` (exactly one batch). Returns its header with the max timestamp
/// normalised (CreateTime: the largest record timestamp, whatever the batch says);
/// `b` is not changed, the append writes the normalised header (`batch::stored_header`).
pub fn validate(b: &[u8], ctx: &ValidationContext) -> Result<BatchHeader> {
    if b.len() > ctx.max_message_bytes {
        return Err(LogError::BatchTooLarge {
            size: b.len(),
            max: ctx.max_message_bytes,
        });
    }
    let h = batch::check_frame(b)?;
    if h.is_control() {
        // Markers are written by the transaction coordinator through their own path.
        return Err(LogError::InvalidRecord(
            "clients may not write control batches".into(),
        ));
    }
    if ctx.from_client {
        check_client_header(&h)?;
    }
    let cap = compression::inflated_cap(ctx.max_message_bytes);
    let mut max_ts = -1i64;
    let mut keyless = Vec::new();
    let count = stream_records(b, &h, cap, |i, r| {
        if r.offset_delta != i as i32 {
            return Err(LogError::InvalidRecord(format!(
                "record {i} has offset delta {}, expected {i} (offsets inside a batch run 0..n-1)",
                r.offset_delta
            )));
        }
        max_ts = max_ts.max(h.base_timestamp.saturating_add(r.timestamp_delta));
        if ctx.compacted && !r.has_key && keyless.len() < MAX_RECORD_ERRORS {
            keyless.push(i as i32);
        }
        Ok(())
    })?;
    if count != h.record_count as usize {
        return Err(LogError::InvalidRecord(format!(
            "batch header says {} records, its payload holds {count}",
            h.record_count
        )));
    }
    if count > 0 && h.last_offset_delta as usize != count - 1 {
        return Err(LogError::InvalidRecord(format!(
            "lastOffsetDelta {} does not match {count} records",
            h.last_offset_delta
        )));
    }
    if !keyless.is_empty() {
        return Err(LogError::RecordErrors {
            message: "Compacted topic cannot accept message without key.".into(),
            record_errors: keyless
                .into_iter()
                .map(|i| {
                    (
                        i,
                        "Compacted topic cannot accept message without key.".into(),
                    )
                })
                .collect(),
        });
    }
    let mut h = h;
    if ctx.timestamp_type == TimestampType::CreateTime && !h.is_log_append_time() {
        h.max_timestamp = max_ts;
    }
    Ok(h)
}

/// KIP-467 answers at most this many per-record errors (Kafka logs the first three;
/// the response carries them all, which a forged batch must not turn into megabytes).
pub const MAX_RECORD_ERRORS: usize = 1000;

/// Kafka's `validateBatch` checks for a batch from a client.
fn check_client_header(h: &BatchHeader) -> Result<()> {
    if h.record_count <= 0 || h.last_offset_delta as i64 + 1 != h.record_count as i64 {
        return Err(LogError::InvalidRecord(format!(
            "inconsistent batch: lastOffsetDelta {} and recordCount {}",
            h.last_offset_delta, h.record_count
        )));
    }
    if h.has_producer_id() && h.base_sequence < 0 {
        return Err(LogError::InvalidRecord(format!(
            "invalid sequence number {} in a batch with producer id {}",
            h.base_sequence, h.producer_id
        )));
    }
    Ok(())
}

/// Streams the records of batch `b` (header `h`), inflating through a reader capped at
/// `cap` bytes, and calls `f(index, record)` for each. Returns how many records there
/// were. Each record's framing is checked: its fields must fill exactly its length.
pub fn stream_records(
    b: &[u8],
    h: &BatchHeader,
    cap: u64,
    f: impl FnMut(usize, StreamedRecord) -> Result<()>,
) -> Result<usize> {
    let codec = h.compression()?;
    let body = b
        .get(BATCH_HEADER_BYTES..h.total_size().min(b.len()))
        .unwrap_or(&[]);
    let fail = |e: io::Error| {
        let message = e.to_string();
        if message == RECORD_EOF || message == OVERLONG_VARINT {
            LogError::InvalidRecord(message)
        } else {
            inflate_error(codec, cap, &e)
        }
    };
    if codec == CompressionCodec::None {
        // A slice is its own buffer: no inflater, no copy.
        return walk_stream(body, fail, f);
    }
    let inflating = compression::inflating_reader(codec, body, cap)?;
    walk_stream(BufReader::with_capacity(16 * 1024, inflating), fail, f)
}

fn walk_stream<R: Read>(
    mut r: R,
    fail: impl Fn(io::Error) -> LogError,
    mut f: impl FnMut(usize, StreamedRecord) -> Result<()>,
) -> Result<usize> {
    let mut index = 0usize;
    loop {
        let Some(first) = read_byte(&mut r).map_err(&fail)? else {
            return Ok(index);
        };
        let (len, _) = varint_from(first, &mut r).map_err(&fail)?;
        if len < 1 {
            return Err(LogError::InvalidRecord(format!(
                "record {index} has length {len}"
            )));
        }
        let mut rec = Limited {
            inner: &mut r,
            left: len as u64,
        };
        let record = read_record(&mut rec, index).map_err(|e| match e {
            FieldError::Io(e) => fail(e),
            FieldError::Log(e) => e,
        })?;
        if rec.left != 0 {
            return Err(LogError::InvalidRecord(format!(
                "record {index} declares {len} bytes but its fields end {} bytes early",
                rec.left
            )));
        }
        f(index, record)?;
        index += 1;
    }
}

enum FieldError {
    Io(io::Error),
    Log(LogError),
}

impl From<io::Error> for FieldError {
    fn from(e: io::Error) -> Self {
        FieldError::Io(e)
    }
}

/// Reads one record's fields from `r` (limited to the record's declared length),
/// skipping keys, values and headers without keeping them.
fn read_record<R: Read>(
    r: &mut Limited<R>,
    index: usize,
) -> std::result::Result<StreamedRecord, FieldError> {
    let bad =
        |what: &str| FieldError::Log(LogError::InvalidRecord(format!("record {index}: {what}")));
    read_exact_byte(r)?; // attributes
    let timestamp_delta = read_varlong(r)?;
    let offset_delta = read_varlong(r)?;
    let offset_delta = i32::try_from(offset_delta).map_err(|_| bad("offset delta out of range"))?;
    let key_len = read_varlong(r)?;
    if key_len < -1 {
        return Err(bad("negative key length"));
    }
    skip(r, key_len)?;
    let value_len = read_varlong(r)?;
    if value_len < -1 {
        return Err(bad("negative value length"));
    }
    skip(r, value_len)?;
    let headers = read_varlong(r)?;
    if headers < 0 {
        return Err(bad("negative header count"));
    }
    for _ in 0..headers {
        let k = read_varlong(r)?;
        if k < 0 {
            return Err(bad("a header without a key"));
        }
        skip(r, k)?;
        let v = read_varlong(r)?;
        if v < -1 {
            return Err(bad("negative header value length"));
        }
        skip(r, v)?;
    }
    Ok(StreamedRecord {
        offset_delta,
        timestamp_delta,
        has_key: key_len >= 0,
    })
}

/// A reader that ends (EOF) after `left` bytes: a record's fields cannot read past it.
struct Limited<'a, R> {
    inner: &'a mut R,
    left: u64,
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn skip<R: Read>(r: &mut R, len: i64) -> io::Result<()> {
    if len <= 0 {
        return Ok(());
    }
    let copied = io::copy(&mut r.take(len as u64), &mut io::sink())?;
    if copied != len as u64 {
        return Err(record_eof());
    }
    Ok(())
}

fn read_byte<R: Read>(r: &mut R) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn read_exact_byte<R: Read>(r: &mut R) -> io::Result<u8> {
    read_byte(r)?.ok_or_else(record_eof)
}

fn read_varlong<R: Read>(r: &mut R) -> io::Result<i64> {
    let first = read_exact_byte(r)?;
    Ok(varint_from(first, r)?.0)
}

const OVERLONG_VARINT: &str = "overlong varint in a record";
/// The records end inside a record (the decompressor's own EOF errors say otherwise,
/// and are a corrupt payload).
const RECORD_EOF: &str = "a record runs past the end of the batch";

fn record_eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, RECORD_EOF)
}

/// Decodes a zig-zag varlong whose first byte is `first`; returns it and its length.
fn varint_from<R: Read>(first: u8, r: &mut R) -> io::Result<(i64, usize)> {
    let mut value = (first & 0x7f) as u64;
    let mut byte = first;
    let mut i = 1;
    while byte & 0x80 != 0 {
        if i == 10 {
            return Err(io::Error::other(OVERLONG_VARINT));
        }
        byte = read_exact_byte(r)?;
        value |= ((byte & 0x7f) as u64) << (7 * i);
        i += 1;
    }
    Ok((((value >> 1) as i64) ^ -((value & 1) as i64), i))
}
