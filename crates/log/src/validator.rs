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
        // A slice is its own buffer: no inflater, no copy, no reader call per byte.
        return walk_slice(body, f);
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

/// [`walk_stream`] over an uncompressed batch's records in memory: the same checks and
/// the same errors, reading varints and skipping keys, values and headers in the slice
/// (the reader walk cost a call per byte and a copy of every value; it ran for every
/// record a client produces).
fn walk_slice(
    body: &[u8],
    mut f: impl FnMut(usize, StreamedRecord) -> Result<()>,
) -> Result<usize> {
    let mut rest = body;
    let mut index = 0usize;
    while !rest.is_empty() {
        let len = slice_varlong(&mut rest)?;
        if len < 1 {
            return Err(LogError::InvalidRecord(format!(
                "record {index} has length {len}"
            )));
        }
        // A record that claims more than the batch holds reads to the batch's end.
        let take = usize::try_from(len).map_or(rest.len(), |l| l.min(rest.len()));
        let mut fields = &rest[..take];
        let record = read_record(&mut fields, index).map_err(|e| match e {
            FieldError::Log(e) => e,
            FieldError::Io(e) => LogError::InvalidRecord(e.to_string()),
        })?;
        let left = len as u64 - (take - fields.len()) as u64;
        if left != 0 {
            return Err(LogError::InvalidRecord(format!(
                "record {index} declares {len} bytes but its fields end {left} bytes early"
            )));
        }
        rest = &rest[take..];
        f(index, record)?;
        index += 1;
    }
    Ok(index)
}

fn slice_eof() -> LogError {
    LogError::InvalidRecord(RECORD_EOF.into())
}

fn slice_take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if r.len() < n {
        return Err(slice_eof());
    }
    let (head, tail) = r.split_at(n);
    *r = tail;
    Ok(head)
}

/// A zig-zag varlong, as [`varint_from`] reads it.
fn slice_varlong(r: &mut &[u8]) -> Result<i64> {
    let mut value = 0u64;
    for i in 0..10 {
        let byte = *slice_take(r, 1)?.first().expect("one byte");
        value |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(LogError::InvalidRecord(OVERLONG_VARINT.into()))
}

enum FieldError {
    Io(io::Error),
    Log(LogError),
}

impl From<LogError> for FieldError {
    fn from(e: LogError) -> Self {
        FieldError::Log(e)
    }
}

impl From<io::Error> for FieldError {
    fn from(e: io::Error) -> Self {
        FieldError::Io(e)
    }
}

/// Where a record's fields are read from: a reader limited to the record's length (the
/// inflated records of a compressed batch) or a slice of it (an uncompressed batch).
trait Fields {
    fn byte(&mut self) -> std::result::Result<u8, FieldError>;
    fn varlong(&mut self) -> std::result::Result<i64, FieldError>;
    /// Skips `len` bytes (a length of -1 or 0: nothing).
    fn skip(&mut self, len: i64) -> std::result::Result<(), FieldError>;
}

impl<R: Read> Fields for Limited<'_, R> {
    fn byte(&mut self) -> std::result::Result<u8, FieldError> {
        Ok(read_exact_byte(self)?)
    }
    fn varlong(&mut self) -> std::result::Result<i64, FieldError> {
        Ok(read_varlong(self)?)
    }
    fn skip(&mut self, len: i64) -> std::result::Result<(), FieldError> {
        Ok(skip(self, len)?)
    }
}

impl Fields for &[u8] {
    fn byte(&mut self) -> std::result::Result<u8, FieldError> {
        Ok(slice_take(self, 1)?[0])
    }
    fn varlong(&mut self) -> std::result::Result<i64, FieldError> {
        Ok(slice_varlong(self)?)
    }
    fn skip(&mut self, len: i64) -> std::result::Result<(), FieldError> {
        if len > 0 {
            slice_take(self, usize::try_from(len).unwrap_or(usize::MAX))?;
        }
        Ok(())
    }
}

/// Reads one record's fields from `r` (which ends where the record's declared length
/// does), skipping keys, values and headers without keeping them.
fn read_record(
    r: &mut impl Fields,
    index: usize,
) -> std::result::Result<StreamedRecord, FieldError> {
    let bad =
        |what: &str| FieldError::Log(LogError::InvalidRecord(format!("record {index}: {what}")));
    r.byte()?; // attributes
    let timestamp_delta = r.varlong()?;
    let offset_delta = r.varlong()?;
    let offset_delta = i32::try_from(offset_delta).map_err(|_| bad("offset delta out of range"))?;
    let key_len = r.varlong()?;
    if key_len < -1 {
        return Err(bad("negative key length"));
    }
    r.skip(key_len)?;
    let value_len = r.varlong()?;
    if value_len < -1 {
        return Err(bad("negative value length"));
    }
    r.skip(value_len)?;
    let headers = r.varlong()?;
    if headers < 0 {
        return Err(bad("negative header count"));
    }
    for _ in 0..headers {
        let k = r.varlong()?;
        if k < 0 {
            return Err(bad("a header without a key"));
        }
        r.skip(k)?;
        let v = r.varlong()?;
        if v < -1 {
            return Err(bad("negative header value length"));
        }
        r.skip(v)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The record walk on a slice and the reader walk (what compressed batches use) agree
    /// on every input: the records they report, and the error they stop at.
    #[test]
    fn the_slice_walk_matches_the_reader_walk_on_damaged_records() {
        let record = |key: Option<&[u8]>, value: &[u8], headers: &[(&[u8], &[u8])]| {
            let mut body = vec![0u8];
            put_varlong(&mut body, 3); // timestamp delta
            put_varlong(&mut body, 0); // offset delta, patched below
            match key {
                Some(k) => {
                    put_varlong(&mut body, k.len() as i64);
                    body.extend_from_slice(k);
                }
                None => put_varlong(&mut body, -1),
            }
            put_varlong(&mut body, value.len() as i64);
            body.extend_from_slice(value);
            put_varlong(&mut body, headers.len() as i64);
            for (k, v) in headers {
                put_varlong(&mut body, k.len() as i64);
                body.extend_from_slice(k);
                put_varlong(&mut body, v.len() as i64);
                body.extend_from_slice(v);
            }
            body
        };
        let mut good = Vec::new();
        for (i, r) in [
            record(Some(b"key"), &[7u8; 300], &[]),
            record(None, b"v", &[(b"h", b"hv"), (b"h2", b"")]),
            record(Some(b""), &[], &[]),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = r;
            r[2] = (i as u8) << 1; // offset delta i (one byte after a one-byte timestamp)
            put_varlong(&mut good, r.len() as i64);
            good.extend_from_slice(&r);
        }
        let walk = |b: &[u8], slice: bool| {
            let mut seen = Vec::new();
            let result = if slice {
                walk_slice(b, |i, r| {
                    seen.push((i, r));
                    Ok(())
                })
            } else {
                walk_stream(
                    b,
                    |e| LogError::InvalidRecord(e.to_string()),
                    |i, r| {
                        seen.push((i, r));
                        Ok(())
                    },
                )
            };
            (result.map_err(|e| e.to_string()), seen)
        };
        let (whole, seen) = walk(&good, true);
        assert_eq!(whole, Ok(3));
        assert_eq!(seen[1].1.offset_delta, 1);
        assert!(!seen[1].1.has_key && seen[2].1.has_key);
        let mut inputs = vec![good.clone()];
        for end in 0..good.len() {
            inputs.push(good[..end].to_vec());
        }
        // Every byte set to values that break lengths, varints and counts.
        for at in 0..good.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff, 0x03, 0x10] {
                let mut bad = good.clone();
                bad[at] = v;
                inputs.push(bad);
            }
        }
        inputs.push(vec![0xff; 12]);
        let mut errors = std::collections::BTreeSet::new();
        for input in inputs {
            let slice = walk(&input, true);
            assert_eq!(slice, walk(&input, false), "input {input:?}");
            if let Err(e) = slice.0 {
                errors.insert(e.split(": ").last().unwrap_or_default().to_string());
            }
        }
        // The damage reached each kind of refusal.
        for kind in [RECORD_EOF, OVERLONG_VARINT, "negative key length"] {
            assert!(errors.contains(kind), "{kind} not seen in {errors:?}");
        }
        assert!(
            errors.iter().any(|e| e.contains("bytes early")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("has length")),
            "{errors:?}"
        );
    }

    fn put_varlong(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
}
