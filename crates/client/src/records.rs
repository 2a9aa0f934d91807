//! Records as a producer builds them and a consumer reads them, the v2 record-batch codec
//! around `kafka_protocol::records`, and Kafka's default key partitioner.
//!
//! Pure functions, no I/O; thread-safe.

use crate::error::{Error, Result};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Header keys must be UTF-8 (Kafka's rule). A key given twice keeps its last value:
    /// the batch codec stores headers in a map.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Create time in ms since the Unix epoch; `None` means "now" at encoding.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with only a value.
    pub fn value(value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            value: Some(value.into()),
            ..Default::default()
        }
    }

    /// Size of key, value and headers: what the record contributes to a batch, roughly.
    pub fn payload_bytes(&self) -> usize {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len());
        len(&self.key)
            + len(&self.value)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + len(v))
                .sum::<usize>()
    }
}

/// A record as consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    /// True when the broker stamped the time (LogAppendTime), false for CreateTime.
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// An idempotent producer's identity and the sequence number of a batch's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Parses a codec name as the CLI and Kafka's `compression.type` spell it.
pub fn parse_compression(name: &str) -> Option<Compression> {
    match name.to_ascii_lowercase().as_str() {
        "none" | "uncompressed" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// Encodes `records` as one v2 record batch (offsets from 0; the broker assigns real ones).
/// With `producer`, the batch carries the idempotent producer's id, epoch and sequence.
pub fn encode_batch(
    records: &[ProducerRecord],
    compression: Compression,
    producer: Option<ProducerIdentity>,
    now_ms: i64,
) -> Result<Bytes> {
    encode_batch_as(records, compression, producer, now_ms, false)
}

/// [`encode_batch`], marked transactional when `transactional` (the producer is then a
/// transactional one, inside a transaction that holds the partition).
pub fn encode_batch_as(
    records: &[ProducerRecord],
    compression: Compression,
    producer: Option<ProducerIdentity>,
    now_ms: i64,
    transactional: bool,
) -> Result<Bytes> {
    if records.is_empty() {
        return Err(Error::InvalidArgument(
            "cannot encode an empty record batch".into(),
        ));
    }
    let (producer_id, producer_epoch, base_sequence) = match producer {
        Some(p) => (p.producer_id, p.producer_epoch, p.base_sequence),
        None => (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, -1),
    };
    let mut encoded = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let mut headers = IndexMap::with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers.insert(StrBytes::from_string(k.clone()), v.clone());
        }
        encoded.push(Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch only while offset minus sequence stays
            // constant, and writes the first record's sequence as the base sequence. Without
            // a producer id the base sequence must be -1 (Kafka's NO_SEQUENCE).
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: r.timestamp_ms.unwrap_or(now_ms),
            key: r.key.clone(),
            value: r.value.clone(),
            headers,
        });
    }
    let size_hint = records
        .iter()
        .map(|r| r.payload_bytes() + 24)
        .sum::<usize>()
        + 61;
    let mut buf = BytesMut::with_capacity(size_hint);
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &encoded, &options).map_err(|e| {
        Error::Records(format!(
            "cannot encode a batch of {} records: {e}",
            records.len()
        ))
    })?;
    debug_assert_eq!(batch_count(&buf), 1, "records must land in one batch");
    Ok(buf.freeze())
}

/// Number of complete batches at the start of `data` (used by tests and assertions).
fn batch_count(mut data: &[u8]) -> usize {
    let mut n = 0;
    while data.len() >= 12 {
        let len = i32::from_be_bytes(data[8..12].try_into().unwrap());
        if len < 0 || data.len() < 12 + len as usize {
            break;
        }
        data = &data[12 + len as usize..];
        n += 1;
    }
    n
}

/// What [`decode_batches`] found in a fetched partition's record bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedRecords {
    /// Data records at or after the requested offset, in offset order.
    pub records: Vec<ConsumerRecord>,
    /// The offset after the last complete batch (data or control), or `None` if there was
    /// no complete batch.
    pub next_offset: Option<i64>,
    /// The bytes ended in a partial batch (normal: fetch limits cut batches). When this is
    /// the only batch, the fetch size limit is smaller than the batch.
    pub partial_tail: bool,
}

// Offsets of fields in a v2 batch header.
const BATCH_HEADER_LEN: usize = 61;
const LENGTH_PREFIX_END: usize = 12;
const MAGIC_AT: usize = 16;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const RECORD_COUNT_AT: usize = 57;
const PRODUCER_ID_AT: usize = 43;
const TRANSACTIONAL_FLAG: i16 = 1 << 4;
const CONTROL_FLAG: i16 = 1 << 5;
const CODEC_MASK: i16 = 0x7;
/// The smallest encoded record: seven one-byte fields.
const MIN_RECORD_BYTES: usize = 7;
/// Bound on the record count of a compressed batch (the decoder reserves room for it).
const MAX_COMPRESSED_RECORDS: usize = 1 << 22;

/// Decodes the record batches in `data` (a fetch response's records for one partition),
/// skipping control batches and records before `from_offset`. A partial batch at the end is
/// ignored, as Kafka clients do.
pub fn decode_batches(data: Bytes, from_offset: i64) -> Result<DecodedRecords> {
    decode_committed_batches(data, from_offset, &[])
}

/// [`decode_batches`] for a read_committed fetch: `aborted` is the response's aborted
/// transactions (producer id, first offset); the batches of a producer inside one of
/// them, up to that producer's abort marker, are skipped, as Kafka's consumer does.
pub fn decode_committed_batches(
    mut data: Bytes,
    from_offset: i64,
    aborted: &[(i64, i64)],
) -> Result<DecodedRecords> {
    let mut out = DecodedRecords::default();
    let mut pending: Vec<(i64, i64)> = aborted.to_vec();
    // Latest first offset at the end, so the next one to open pops off.
    pending.sort_by_key(|&(_, first)| std::cmp::Reverse(first));
    let mut aborting: std::collections::HashSet<i64> = std::collections::HashSet::new();
    while data.len() >= LENGTH_PREFIX_END {
        let base_offset = (&data[0..8]).get_i64();
        let len = (&data[8..12]).get_i32();
        if len < 0 {
            return Err(Error::Records(format!(
                "batch at offset {base_offset} has negative length {len}"
            )));
        }
        let total = LENGTH_PREFIX_END + len as usize;
        if data.len() < total {
            out.partial_tail = true;
            break;
        }
        let mut batch = data.split_to(total);
        if total < BATCH_HEADER_LEN {
            return Err(Error::Records(format!(
                "batch at offset {base_offset} is {total} bytes, shorter than a v2 header"
            )));
        }
        let magic = batch[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(Error::Records(format!(
                "batch at offset {base_offset} uses message format v{magic}; only v2 is supported"
            )));
        }
        let attributes = (&batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2]).get_i16();
        let last_offset_delta = (&batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]).get_i32();
        let last_offset = base_offset + last_offset_delta as i64;
        out.next_offset = Some(last_offset + 1);
        let producer_id = (&batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8]).get_i64();
        while pending
            .last()
            .is_some_and(|&(_, first)| first <= last_offset)
        {
            let (pid, _) = pending.pop().expect("checked");
            aborting.insert(pid);
        }
        if attributes & CONTROL_FLAG != 0 {
            // The marker ends the producer's transaction (aborted or not).
            aborting.remove(&producer_id);
            continue;
        }
        if attributes & TRANSACTIONAL_FLAG != 0 && aborting.contains(&producer_id) {
            continue;
        }
        // The decoder sizes a vector by this count: check it against what the bytes can hold.
        let count = (&batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4]).get_i32();
        let most = if attributes & CODEC_MASK == 0 {
            (total - BATCH_HEADER_LEN) / MIN_RECORD_BYTES
        } else {
            MAX_COMPRESSED_RECORDS
        };
        if count < 0 || count as usize > most {
            return Err(Error::Records(format!(
                "batch at offset {base_offset} claims {count} records, more than its {total} bytes can hold"
            )));
        }
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| {
            Error::Records(format!(
                "cannot decode the batch at offset {base_offset}: {e}"
            ))
        })?;
        for r in set.records {
            if r.offset < from_offset || r.control {
                continue;
            }
            out.records.push(ConsumerRecord {
                offset: r.offset,
                timestamp_ms: r.timestamp,
                log_append_time: r.timestamp_type == TimestampType::LogAppend,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_string(), v))
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// Standard base64 (RFC 4648, padded): how the CLI's JSON output and the HTTP admin API
/// carry bytes that are not text.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's Java producer picks for a keyed record.
pub fn partition_for_key(key: &[u8], partitions: usize) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    ((murmur2(key) & 0x7fff_ffff) as usize % partitions) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from Kafka's UtilsTest.testMurmur2.
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), *want, "{}", String::from_utf8_lossy(data));
        }
        for key in [&b"a"[..], b"key-1", b""] {
            assert!((0..7).contains(&partition_for_key(key, 7)));
        }
    }

    fn record(i: usize) -> ProducerRecord {
        ProducerRecord {
            key: (i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
            value: (i % 3 != 0).then(|| Bytes::from(format!("value {i}"))),
            headers: vec![("h".into(), Some(Bytes::from("1"))), ("n".into(), None)],
            timestamp_ms: Some(1_700_000_000_000 + i as i64),
        }
    }

    #[test]
    fn batches_round_trip_with_every_codec() {
        let records: Vec<_> = (0..50).map(record).collect();
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let c = parse_compression(codec).unwrap();
            let bytes = encode_batch(&records, c, None, 0).unwrap();
            assert_eq!(batch_count(&bytes), 1, "{codec}");
            // Base sequence -1 and producer id -1 without idempotence.
            assert_eq!(i64::from_be_bytes(bytes[43..51].try_into().unwrap()), -1);
            assert_eq!(i32::from_be_bytes(bytes[53..57].try_into().unwrap()), -1);
            let decoded = decode_batches(bytes, 0).unwrap();
            assert_eq!(decoded.next_offset, Some(50));
            assert!(!decoded.partial_tail);
            assert_eq!(decoded.records.len(), 50);
            for (i, (got, want)) in decoded.records.iter().zip(&records).enumerate() {
                assert_eq!(got.offset, i as i64);
                assert_eq!(got.key, want.key);
                assert_eq!(got.value, want.value);
                assert_eq!(got.headers, want.headers);
                assert_eq!(Some(got.timestamp_ms), want.timestamp_ms);
            }
        }
    }

    #[test]
    fn idempotent_batches_carry_the_producer_and_sequence() {
        let records: Vec<_> = (0..3).map(record).collect();
        let p = ProducerIdentity {
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 10,
        };
        let bytes = encode_batch(&records, Compression::None, Some(p), 0).unwrap();
        assert_eq!(batch_count(&bytes), 1);
        assert_eq!(i64::from_be_bytes(bytes[43..51].try_into().unwrap()), 42);
        assert_eq!(i16::from_be_bytes(bytes[51..53].try_into().unwrap()), 3);
        assert_eq!(i32::from_be_bytes(bytes[53..57].try_into().unwrap()), 10);
    }

    /// CRC-32C (Castagnoli), bitwise: for batches whose header a test changed.
    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A batch of one record at `offset` from producer `pid`, with `flags` set.
    fn batch_at(offset: i64, pid: i64, flags: i16) -> BytesMut {
        let p = ProducerIdentity {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
        };
        let mut b = BytesMut::from(
            &encode_batch(&[record(offset as usize)], Compression::None, Some(p), 0).unwrap()[..],
        );
        b[0..8].copy_from_slice(&offset.to_be_bytes());
        let attributes = i16::from_be_bytes([b[ATTRIBUTES_AT], b[ATTRIBUTES_AT + 1]]) | flags;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c(&b[ATTRIBUTES_AT..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn read_committed_decoding_skips_aborted_transactions_until_their_marker() {
        let txn = TRANSACTIONAL_FLAG;
        let mut all = BytesMut::new();
        for b in [
            batch_at(0, 7, txn),                // aborted
            batch_at(1, 9, 0),                  // not transactional: kept
            batch_at(2, 8, txn),                // another producer's open transaction: kept
            batch_at(3, 7, txn),                // still aborted
            batch_at(4, 7, txn | CONTROL_FLAG), // pid 7's abort marker
            batch_at(5, 7, txn),                // pid 7's next transaction: kept
        ] {
            all.extend_from_slice(&b);
        }
        let all = all.freeze();
        let offsets = |d: DecodedRecords| d.records.iter().map(|r| r.offset).collect::<Vec<_>>();
        let committed = decode_committed_batches(all.clone(), 0, &[(7, 0)]).unwrap();
        assert_eq!(committed.next_offset, Some(6));
        assert_eq!(offsets(committed), vec![1, 2, 5]);
        // read_uncommitted (no aborted list) keeps every data record.
        assert_eq!(
            offsets(decode_batches(all, 0).unwrap()),
            vec![0, 1, 2, 3, 5]
        );
    }

    #[test]
    fn decoding_skips_early_records_partial_tails_and_control_batches() {
        let a = encode_batch(
            &(0..4).map(record).collect::<Vec<_>>(),
            Compression::None,
            None,
            0,
        )
        .unwrap();
        let mut b =
            BytesMut::from(&encode_batch(&[record(9)], Compression::None, None, 0).unwrap()[..]);
        b[0..8].copy_from_slice(&4i64.to_be_bytes());
        let mut control =
            BytesMut::from(&encode_batch(&[record(1)], Compression::None, None, 0).unwrap()[..]);
        control[0..8].copy_from_slice(&5i64.to_be_bytes());
        control[ATTRIBUTES_AT + 1] |= CONTROL_FLAG as u8;
        // (The CRC is not recomputed: a control batch is skipped before decoding.)
        let mut all = BytesMut::new();
        all.extend_from_slice(&a);
        all.extend_from_slice(&b);
        all.extend_from_slice(&control);
        all.extend_from_slice(&a[..30]);
        let decoded = decode_batches(all.freeze(), 2).unwrap();
        let offsets: Vec<_> = decoded.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![2, 3, 4]);
        assert_eq!(decoded.next_offset, Some(6));
        assert!(decoded.partial_tail);

        let only_partial = decode_batches(a.slice(..a.len() - 1), 0).unwrap();
        assert_eq!(only_partial.next_offset, None);
        assert!(only_partial.partial_tail && only_partial.records.is_empty());
        assert_eq!(
            decode_batches(Bytes::new(), 0).unwrap(),
            DecodedRecords::default()
        );
    }

    #[test]
    fn corrupt_batches_are_errors_not_panics() {
        let good = encode_batch(&[record(1)], Compression::Gzip, None, 0).unwrap();
        for i in 0..good.len() {
            let mut bad = BytesMut::from(&good[..]);
            bad[i] ^= 0xff;
            let _ = decode_batches(bad.freeze(), 0);
        }
        let mut huge =
            BytesMut::from(&encode_batch(&[record(1)], Compression::None, None, 0).unwrap()[..]);
        huge[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        let err = decode_batches(huge.freeze(), 0).unwrap_err().to_string();
        assert!(err.contains("claims"), "{err}");
        let mut short = BytesMut::from(&good[..20]);
        short[8..12].copy_from_slice(&8i32.to_be_bytes());
        assert!(decode_batches(short.freeze(), 0).is_err());
    }

    #[test]
    fn codec_names_parse() {
        assert_eq!(parse_compression("ZSTD"), Some(Compression::Zstd));
        assert_eq!(parse_compression("brotli"), None);
        assert!(encode_batch(&[], Compression::None, None, 0).is_err());
    }
}
