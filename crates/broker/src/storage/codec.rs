//! Kafka's record compression codecs, for the cleaner re-compressing a batch it filtered.
//! Inflating is the log's bounded reader (`runnel_log::compression`): the produce path
//! streams a compressed batch through it once, in the validator.

use bytes::{BufMut, BytesMut};
use runnel_log::{CompressionCodec, RecordCodec};
use runnel_protocol::kp::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

pub struct KafkaCodecs;

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
                runnel_log::compression::inflate(codec, &packed, 1 << 20).unwrap(),
                data,
                "{codec:?}"
            );
        }
    }
}
