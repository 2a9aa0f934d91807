//! The Kafka v2 record batch header: parsing, validation and the two patches the log makes.
//!
//! Layout (big-endian): baseOffset i64 @0, batchLength i32 @8 (bytes after this field),
//! partitionLeaderEpoch i32 @12, magic i8 @16, crc u32 @17 (CRC32C of bytes 21..end),
//! attributes i16 @21, lastOffsetDelta i32 @23, baseTimestamp i64 @27, maxTimestamp i64 @35,
//! producerId i64 @43, producerEpoch i16 @51, baseSequence i32 @53, recordCount i32 @57.

use crate::error::{LogError, Result};

pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before and including `batchLength`; `batchLength` counts what follows.
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionCodec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// The fixed-size header of one v2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `b`. Needs at least [`BATCH_HEADER_BYTES`].
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < BATCH_HEADER_BYTES {
            return Err(LogError::CorruptBatch(format!(
                "{} bytes is shorter than a batch header",
                b.len()
            )));
        }
        Ok(BatchHeader {
            base_offset: be_i64(b, 0),
            batch_length: be_i32(b, 8),
            partition_leader_epoch: be_i32(b, 12),
            magic: b[16] as i8,
            crc: be_i32(b, 17) as u32,
            attributes: be_i16(b, 21),
            last_offset_delta: be_i32(b, 23),
            base_timestamp: be_i64(b, 27),
            max_timestamp: be_i64(b, 35),
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
            record_count: be_i32(b, 57),
        })
    }

    /// Total bytes of this batch on disk, header included.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    pub fn compression(&self) -> Result<CompressionCodec> {
        match self.attributes & 0x07 {
            0 => Ok(CompressionCodec::None),
            1 => Ok(CompressionCodec::Gzip),
            2 => Ok(CompressionCodec::Snappy),
            3 => Ok(CompressionCodec::Lz4),
            4 => Ok(CompressionCodec::Zstd),
            other => Err(LogError::UnsupportedCompression(other as u8)),
        }
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
    /// The last sequence number in the batch (sequences wrap at i32::MAX, as in Kafka).
    pub fn last_sequence(&self) -> i32 {
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }
}

/// Checks one complete batch (`b` is exactly the batch) for everything the log relies on:
/// magic, length, CRC, codec, and record count against the record framing when the batch
/// is uncompressed. Returns the parsed header.
pub fn validate_batch(b: &[u8]) -> Result<BatchHeader> {
    let h = check_frame(b)?;
    if h.compression()? == CompressionCodec::None {
        let walked = walk_records(&b[BATCH_HEADER_BYTES..], |_| ())?;
        if walked != h.record_count as usize {
            return Err(LogError::InvalidRecord(format!(
                "batch header says {} records, its bytes hold {walked}",
                h.record_count
            )));
        }
    }
    Ok(h)
}

/// The checks of [`validate_batch`] that do not look at the records: magic, length, CRC,
/// codec, non-negative counts. (The validator walks the records itself.)
pub fn check_frame(b: &[u8]) -> Result<BatchHeader> {
    let h = BatchHeader::parse(b)?;
    if h.magic != 2 {
        return Err(LogError::UnsupportedMagic(h.magic));
    }
    if h.total_size() != b.len() || h.total_size() < BATCH_HEADER_BYTES {
        return Err(LogError::CorruptBatch(format!(
            "batch length field says {} bytes, frame holds {}",
            h.total_size(),
            b.len()
        )));
    }
    let actual = crc32c::crc32c(&b[CRC_START..]);
    if actual != h.crc {
        return Err(LogError::CorruptBatch(format!(
            "CRC32C mismatch: stored {:#010x}, computed {actual:#010x}",
            h.crc
        )));
    }
    h.compression()?;
    if h.record_count < 0 || h.last_offset_delta < 0 {
        return Err(LogError::InvalidRecord(format!(
            "negative record count {} or offset delta",
            h.record_count
        )));
    }
    Ok(h)
}

/// Splits `buf` into complete batches, calling `f` with each batch's byte range.
/// Stops with an error at the first batch that does not fit.
pub fn for_each_batch(
    buf: &[u8],
    mut f: impl FnMut(std::ops::Range<usize>) -> Result<()>,
) -> Result<()> {
    let mut at = 0usize;
    while at < buf.len() {
        if buf.len() - at < LOG_OVERHEAD {
            return Err(LogError::CorruptBatch(format!(
                "{} trailing bytes after the last batch",
                buf.len() - at
            )));
        }
        let len = be_i32(buf, at + 8);
        if len < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return Err(LogError::CorruptBatch(format!(
                "batch length {len} is below the header size"
            )));
        }
        let end = at + LOG_OVERHEAD + len as usize;
        if end > buf.len() {
            return Err(LogError::CorruptBatch(format!(
                "batch of {} bytes runs past the end of its buffer",
                end - at
            )));
        }
        f(at..end)?;
        at = end;
    }
    Ok(())
}

/// Sets the base offset and partition leader epoch: the two fields outside the CRC.
pub fn patch_offset_and_epoch(b: &mut [u8], base_offset: i64, leader_epoch: i32) {
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// The header of the valid batch `b` as it is stored: `b`'s first
/// [`BATCH_HEADER_BYTES`] with the base offset and leader epoch set, the max timestamp
/// set to `max_timestamp` (the validator's normalisation), and with `log_append_time`
/// the batch marked LogAppendTime at that time. The CRC is re-computed when a field
/// under it changed. The records after the header are written from `b` as they are:
/// an append copies 61 bytes, never the batch.
pub fn stored_header(
    b: &[u8],
    base_offset: i64,
    leader_epoch: i32,
    max_timestamp: i64,
    log_append_time: Option<i64>,
) -> [u8; BATCH_HEADER_BYTES] {
    let mut head = [0u8; BATCH_HEADER_BYTES];
    head.copy_from_slice(&b[..BATCH_HEADER_BYTES]);
    patch_offset_and_epoch(&mut head, base_offset, leader_epoch);
    let max_timestamp = match log_append_time {
        Some(now_ms) => {
            let attrs = be_i16(&head, 21) | ATTR_TIMESTAMP_TYPE;
            head[21..23].copy_from_slice(&attrs.to_be_bytes());
            now_ms
        }
        None => max_timestamp,
    };
    head[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    if head[CRC_START..] != b[CRC_START..BATCH_HEADER_BYTES] {
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&head[CRC_START..]), &b[BATCH_HEADER_BYTES..]);
        head[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    head
}

/// Marks a batch LogAppendTime with `now_ms` as its max timestamp and re-computes the CRC,
/// which both fields are under (Kafka does the same).
pub fn set_log_append_time(b: &mut [u8], now_ms: i64) {
    let attrs = be_i16(b, 21) | ATTR_TIMESTAMP_TYPE;
    b[21..23].copy_from_slice(&attrs.to_be_bytes());
    b[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// One record's position data, as seen while walking an uncompressed batch.
#[derive(Debug, Clone, Copy)]
pub struct RecordPosition {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
}

/// Walks the records of an uncompressed batch body, returning how many there are.
/// Every length is bounds-checked; a record that runs past the body is an error.
pub fn walk_records(mut body: &[u8], mut f: impl FnMut(RecordPosition)) -> Result<usize> {
    let mut count = 0usize;
    while !body.is_empty() {
        let (len, n) = read_varint(body)?;
        if len < 0 || n + len as usize > body.len() {
            return Err(LogError::InvalidRecord(format!(
                "record length {len} runs past the batch"
            )));
        }
        let record = &body[n..n + len as usize];
        let rec = record
            .get(1..)
            .ok_or_else(|| LogError::InvalidRecord("empty record".into()))?; // attributes
        let (timestamp_delta, m) = read_varlong(rec)?;
        let (offset_delta, _) = read_varint(&rec[m..])?;
        f(RecordPosition {
            timestamp_delta,
            offset_delta: offset_delta as i32,
        });
        body = &body[n + len as usize..];
        count += 1;
    }
    Ok(count)
}

pub fn read_varlong(b: &[u8]) -> Result<(i64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(10) {
        value |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Ok((decoded, i + 1));
        }
    }
    Err(LogError::InvalidRecord(
        "truncated or overlong varint".into(),
    ))
}

pub fn read_varint(b: &[u8]) -> Result<(i64, usize)> {
    let (v, n) = read_varlong(b)?;
    if n > 5 || v < i32::MIN as i64 || v > i32::MAX as i64 {
        return Err(LogError::InvalidRecord("varint out of i32 range".into()));
    }
    Ok((v, n))
}

/// One record of an uncompressed batch, borrowed from the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The cap on inflating a stored batch of an internal topic or during replay when no
/// topic limit is at hand: what [`crate::compression::inflated_cap`] allows at Kafka's
/// default `max.message.bytes`.
pub const DEFAULT_INFLATED_CAP: u64 = 64 << 20;

/// Calls `f` with every record of a batch. A compressed batch is inflated through the
/// bounded reader (at most [`DEFAULT_INFLATED_CAP`] bytes), so coordinators can replay
/// what a past version or a client wrote compressed into their topics.
pub fn for_each_record(b: &[u8], mut f: impl FnMut(RecordView<'_>)) -> Result<()> {
    let h = BatchHeader::parse(b)?;
    let body = b
        .get(BATCH_HEADER_BYTES..h.total_size().min(b.len()))
        .unwrap_or(&[]);
    let inflated;
    let mut body = match h.compression()? {
        CompressionCodec::None => body,
        codec => {
            inflated = crate::compression::inflate(codec, body, DEFAULT_INFLATED_CAP)?;
            &inflated[..]
        }
    };
    while !body.is_empty() {
        let (len, n) = read_varint(body)?;
        if len < 1 || n + len as usize > body.len() {
            return Err(LogError::InvalidRecord(format!(
                "record length {len} runs past the batch"
            )));
        }
        let mut r = &body[n + 1..n + len as usize]; // skip attributes
        let (ts_delta, m) = read_varlong(r)?;
        r = &r[m..];
        let (offset_delta, m) = read_varint(r)?;
        r = &r[m..];
        let (key, rest) = read_nullable_bytes(r)?;
        let (value, _) = read_nullable_bytes(rest)?;
        f(RecordView {
            offset: h.base_offset.wrapping_add(offset_delta),
            timestamp: h.base_timestamp.wrapping_add(ts_delta),
            key,
            value,
        });
        body = &body[n + len as usize..];
    }
    Ok(())
}

pub(crate) fn read_nullable_bytes(b: &[u8]) -> Result<(Option<&[u8]>, &[u8])> {
    let (len, n) = read_varint(b)?;
    if len < 0 {
        return Ok((None, &b[n..]));
    }
    let end = n + len as usize;
    if end > b.len() {
        return Err(LogError::InvalidRecord(
            "record field runs past the record".into(),
        ));
    }
    Ok((Some(&b[n..end]), &b[end..]))
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Builds an uncompressed v2 batch of (key, value) records, all stamped `timestamp`,
/// with no producer id; the log assigns its offsets on append.
pub fn build_batch(records: &[(Option<&[u8]>, Option<&[u8]>)], timestamp: i64) -> Vec<u8> {
    let mut body = Vec::new();
    let mut r = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        r.clear();
        r.push(0); // attributes
        put_varlong(&mut r, 0);
        put_varlong(&mut r, i as i64);
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    put_varlong(&mut r, bytes.len() as i64);
                    r.extend_from_slice(bytes);
                }
                None => put_varlong(&mut r, -1),
            }
        }
        put_varlong(&mut r, 0); // headers
        put_varlong(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let n = records.len() as i32;
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((BATCH_HEADER_BYTES - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(n - 1).to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Stamps a built batch with a producer id and epoch (no sequence), optionally marking
/// it transactional, and re-computes the CRC.
pub fn set_producer(b: &mut [u8], producer_id: i64, epoch: i16, transactional: bool) {
    let attrs = be_i16(b, 21) | if transactional { ATTR_TRANSACTIONAL } else { 0 };
    b[21..23].copy_from_slice(&attrs.to_be_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Builds a transaction marker: a control batch (transactional + control attributes)
/// for `producer_id`/`epoch` holding one EndTransactionMarker record (key: version 0,
/// type 0 abort / 1 commit; value: version 0, coordinator epoch).
pub fn build_control_batch(
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let mut key = [0u8; 4];
    key[2..4].copy_from_slice(&(commit as i16).to_be_bytes());
    let mut value = [0u8; 6];
    value[2..6].copy_from_slice(&coordinator_epoch.to_be_bytes());
    let mut b = build_batch(&[(Some(&key), Some(&value))], timestamp);
    b[21..23].copy_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL).to_be_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// For a control batch, whether its marker commits (true) or aborts (false); None when
/// the batch is not a transaction marker.
pub fn marker_type(b: &[u8]) -> Option<bool> {
    let h = BatchHeader::parse(b).ok()?;
    if !h.is_control() {
        return None;
    }
    let mut kind = None;
    for_each_record(b, |r| {
        if kind.is_none() {
            kind = r
                .key
                .filter(|k| k.len() >= 4)
                .map(|k| i16::from_be_bytes([k[2], k[3]]) == 1);
        }
    })
    .ok()?;
    kind
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn put_varlong(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    /// Builds an uncompressed v2 batch of `values` with the given timestamps and producer.
    pub fn make_batch(
        values: &[&[u8]],
        base_ts: i64,
        ts_step: i64,
        pid: i64,
        epoch: i16,
        seq: i32,
    ) -> Vec<u8> {
        let mut records = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let mut r = vec![0u8];
            put_varlong(&mut r, ts_step * i as i64);
            put_varlong(&mut r, i as i64);
            put_varlong(&mut r, -1); // null key
            put_varlong(&mut r, v.len() as i64);
            r.extend_from_slice(v);
            put_varlong(&mut r, 0);
            put_varlong(&mut records, r.len() as i64);
            records.extend_from_slice(&r);
        }
        let n = values.len() as i32;
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(
            &((BATCH_HEADER_BYTES - LOG_OVERHEAD + records.len()) as i32).to_be_bytes(),
        );
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(n - 1).to_be_bytes());
        b.extend_from_slice(&base_ts.to_be_bytes());
        b.extend_from_slice(&(base_ts + ts_step * (n as i64 - 1)).to_be_bytes());
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(&records);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn validates_a_good_batch_and_refuses_damage() {
        let b = make_batch(&[b"a", b"bc"], 1000, 5, -1, -1, -1);
        let h = validate_batch(&b).unwrap();
        assert_eq!(
            (h.record_count, h.last_offset_delta, h.max_timestamp),
            (2, 1, 1005)
        );
        let mut bad = b.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            validate_batch(&bad),
            Err(LogError::CorruptBatch(_))
        ));
        let mut old = b.clone();
        old[16] = 1;
        assert!(matches!(
            validate_batch(&old),
            Err(LogError::UnsupportedMagic(1))
        ));
        assert!(validate_batch(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn sequence_wraps_like_kafka() {
        let mut h =
            BatchHeader::parse(&make_batch(&[b"a", b"b", b"c"], 0, 0, 1, 0, i32::MAX - 1)).unwrap();
        assert_eq!(h.last_sequence(), 0);
        h.base_sequence = 5;
        assert_eq!(h.last_sequence(), 7);
    }

    #[test]
    fn built_batches_validate_and_read_back() {
        let b = build_batch(&[(Some(b"k"), Some(b"v")), (Some(b"k2"), None)], 42);
        validate_batch(&b).unwrap();
        let mut seen = Vec::new();
        for_each_record(&b, |r| {
            seen.push((
                r.offset,
                r.timestamp,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
            ))
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, 42, Some(b"k".to_vec()), Some(b"v".to_vec())),
                (1, 42, Some(b"k2".to_vec()), None)
            ]
        );
    }

    #[test]
    fn control_batches_carry_their_marker() {
        let b = build_control_batch(7, 3, true, 0, 5);
        let h = validate_batch(&b).unwrap();
        assert!(h.is_control() && h.is_transactional());
        assert_eq!((h.producer_id, h.producer_epoch), (7, 3));
        assert_eq!(marker_type(&b), Some(true));
        assert_eq!(
            marker_type(&build_control_batch(7, 3, false, 0, 5)),
            Some(false)
        );
        assert_eq!(marker_type(&build_batch(&[(None, None)], 0)), None);
    }

    #[test]
    fn log_append_time_keeps_the_crc_valid() {
        let mut b = make_batch(&[b"x"], 1, 0, -1, -1, -1);
        set_log_append_time(&mut b, 99);
        let h = validate_batch(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99);
    }

    /// The stored header written in front of a batch's untouched records is the header
    /// the batch would have after patching it in place (offsets, epoch, timestamps, CRC),
    /// so what lands on disk is a valid batch.
    #[test]
    fn stored_headers_equal_the_batch_patched_in_place() {
        let b = make_batch(&[b"x", b"yy", b"zzz"], 1, 0, -1, -1, -1);
        let stored = |max_ts, lat| {
            let mut out = stored_header(&b, 500, 7, max_ts, lat).to_vec();
            out.extend_from_slice(&b[BATCH_HEADER_BYTES..]);
            out
        };
        let h = validate_batch(&b).unwrap();
        // Nothing under the CRC changes: the CRC is the client's.
        let same = stored(h.max_timestamp, None);
        let mut patched = b.clone();
        patch_offset_and_epoch(&mut patched, 500, 7);
        assert_eq!(same, patched);
        // A new max timestamp, and LogAppendTime: both re-compute the CRC.
        let fixed = validate_batch(&stored(h.max_timestamp + 5, None)).unwrap();
        assert_eq!(
            (fixed.base_offset, fixed.max_timestamp),
            (500, h.max_timestamp + 5)
        );
        let mut lat = b.clone();
        patch_offset_and_epoch(&mut lat, 500, 7);
        set_log_append_time(&mut lat, 99);
        assert_eq!(stored(h.max_timestamp, Some(99)), lat);
        validate_batch(&lat).unwrap();
    }
}
