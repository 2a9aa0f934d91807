//! Kafka's record compression codecs, for the few places the broker must look inside a
//! compressed batch (keys of compacted topics, the cleaner). The hot produce and fetch
//! paths never inflate.

use bytes::{BufMut, Bytes, BytesMut};
use runnel_log::{CompressionCodec, RecordCodec};
use runnel_protocol::kp::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

/// Inflating a batch past this is refused: a compression bomb must not take the broker's
/// memory (Kafka bounds it by the batch's own limits in the same spirit).
pub const MAX_INFLATED_BYTES: usize = 256 * 1024 * 1024;

pub struct KafkaCodecs;

fn inflate<D: Decompressor<Bytes, Buf = Bytes>>(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut src = Bytes::copy_from_slice(data);
    D::decompress(&mut src, |out: &mut Bytes| {
        if out.len() > MAX_INFLATED_BYTES {
            anyhow::bail!("inflates to more than {MAX_INFLATED_BYTES} bytes");
        }
        Ok(out.to_vec())
    })
    .map_err(|e| e.to_string())
}

fn deflate<C: Compressor<BytesMut, BufMut = BytesMut>>(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    C::compress(&mut out, |raw: &mut BytesMut| {
        raw.put_slice(data);
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(out.to_vec())
}

impl RecordCodec for KafkaCodecs {
    fn decompress(&self, codec: CompressionCodec, data: &[u8]) -> Result<Vec<u8>, String> {
        match codec {
            CompressionCodec::None => Ok(data.to_vec()),
            CompressionCodec::Gzip => inflate::<Gzip>(data),
            CompressionCodec::Snappy => inflate::<Snappy>(data),
            CompressionCodec::Lz4 => inflate::<Lz4>(data),
            CompressionCodec::Zstd => inflate::<Zstd>(data),
        }
    }

    fn compress(&self, codec: CompressionCodec, data: &[u8]) -> Result<Vec<u8>, String> {
        match codec {
            CompressionCodec::None => Ok(data.to_vec()),
            CompressionCodec::Gzip => deflate::<Gzip>(data),
            CompressionCodec::Snappy => deflate::<Snappy>(data),
            CompressionCodec::Lz4 => deflate::<Lz4>(data),
            CompressionCodec::Zstd => deflate::<Zstd>(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in [
            CompressionCodec::Gzip,
            CompressionCodec::Snappy,
            CompressionCodec::Lz4,
            CompressionCodec::Zstd,
        ] {
            let packed = KafkaCodecs.compress(codec, &data).unwrap();
            assert!(packed.len() < data.len(), "{codec:?}");
            assert_eq!(
                KafkaCodecs.decompress(codec, &packed).unwrap(),
                data,
                "{codec:?}"
            );
        }
        assert!(KafkaCodecs
            .decompress(CompressionCodec::Gzip, b"not gzip")
            .is_err());
    }
}
