//! The record-batch compression codecs, framed exactly as Kafka clients frame them:
//! gzip (RFC 1952), snappy in xerial's block framing (raw snappy accepted on read, as
//! Java's reader does), LZ4 frame format, and zstd frames.
//!
//! Every decompressor is bounded: inflating past `limit` bytes is an error, so a small
//! hostile batch cannot make the broker allocate gigabytes.

use std::io::{Read, Write};

/// Codec named by bits 0..=2 of a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Why compressing or decompressing failed.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("unknown compression codec id {0}")]
    UnknownCodec(u8),
    #[error("{codec:?} data inflates past the limit of {limit} bytes")]
    TooLarge { codec: Compression, limit: usize },
    #[error("{codec:?} data is corrupt: {reason}")]
    Corrupt { codec: Compression, reason: String },
}

/// xerial snappy-java's stream header: magic, version 1, minimum compatible version 1.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// snappy-java's default block size; Kafka's Java producer writes blocks of this size.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

impl Compression {
    pub fn from_id(id: u8) -> Result<Compression, CompressionError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(CompressionError::UnknownCodec(other)),
        })
    }

    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The name Kafka configs use (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    pub fn from_name(name: &str) -> Option<Compression> {
        [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }

    fn corrupt(self, reason: impl ToString) -> CompressionError {
        CompressionError::Corrupt {
            codec: self,
            reason: reason.to_string(),
        }
    }

    /// Compresses `input`, appending to `out`.
    pub fn compress(self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
        match self {
            Compression::None => out.extend_from_slice(input),
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                enc.write_all(input).map_err(|e| self.corrupt(e))?;
                enc.finish().map_err(|e| self.corrupt(e))?;
            }
            Compression::Snappy => {
                out.extend_from_slice(XERIAL_HEADER);
                let mut enc = snap::raw::Encoder::new();
                for block in input.chunks(XERIAL_BLOCK_BYTES) {
                    let len_at = out.len();
                    out.extend_from_slice(&[0; 4]);
                    let start = out.len();
                    out.resize(start + snap::raw::max_compress_len(block.len()), 0);
                    let n = enc
                        .compress(block, &mut out[start..])
                        .map_err(|e| self.corrupt(e))?;
                    out.truncate(start + n);
                    out[len_at..len_at + 4].copy_from_slice(&(n as u32).to_be_bytes());
                }
            }
            Compression::Lz4 => {
                let mut enc = lz4_flex::frame::FrameEncoder::new(out);
                enc.write_all(input).map_err(|e| self.corrupt(e))?;
                enc.finish().map_err(|e| self.corrupt(e))?;
            }
            Compression::Zstd => {
                let compressed = zstd::bulk::compress(input, 3).map_err(|e| self.corrupt(e))?;
                out.extend_from_slice(&compressed);
            }
        }
        Ok(())
    }

    /// Decompresses `input`; fails if the result would exceed `limit` bytes.
    pub fn decompress(self, input: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
        match self {
            Compression::None => {
                if input.len() > limit {
                    return Err(CompressionError::TooLarge { codec: self, limit });
                }
                Ok(input.to_vec())
            }
            Compression::Gzip => self.read_bounded(flate2::read::GzDecoder::new(input), limit),
            Compression::Lz4 => self.read_bounded(lz4_flex::frame::FrameDecoder::new(input), limit),
            Compression::Zstd => {
                let dec = zstd::stream::read::Decoder::new(input).map_err(|e| self.corrupt(e))?;
                self.read_bounded(dec, limit)
            }
            Compression::Snappy => self.snappy_decompress(input, limit),
        }
    }

    fn read_bounded(self, reader: impl Read, limit: usize) -> Result<Vec<u8>, CompressionError> {
        let mut out = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| self.corrupt(e))?;
        if out.len() > limit {
            return Err(CompressionError::TooLarge { codec: self, limit });
        }
        Ok(out)
    }

    fn snappy_decompress(self, input: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
        let mut dec = snap::raw::Decoder::new();
        let mut out = Vec::new();
        let raw_block = |dec: &mut snap::raw::Decoder, block: &[u8], out: &mut Vec<u8>| {
            let n = snap::raw::decompress_len(block).map_err(|e| self.corrupt(e))?;
            if out.len() + n > limit {
                return Err(CompressionError::TooLarge { codec: self, limit });
            }
            let start = out.len();
            out.resize(start + n, 0);
            dec.decompress(block, &mut out[start..])
                .map_err(|e| self.corrupt(e))?;
            Ok(())
        };
        if !input.starts_with(XERIAL_MAGIC) {
            raw_block(&mut dec, input, &mut out)?;
            return Ok(out);
        }
        if input.len() < XERIAL_HEADER.len() {
            return Err(self.corrupt("truncated xerial header"));
        }
        let mut rest = &input[XERIAL_HEADER.len()..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(self.corrupt("truncated xerial block length"));
            }
            let n = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            rest = &rest[4..];
            if n > rest.len() {
                return Err(self.corrupt("xerial block length runs past the data"));
            }
            raw_block(&mut dec, &rest[..n], &mut out)?;
            rest = &rest[n..];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips() {
        let input: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in ALL {
            let mut out = Vec::new();
            c.compress(&input, &mut out).unwrap();
            assert_eq!(c.decompress(&out, input.len()).unwrap(), input, "{c:?}");
            assert_eq!(Compression::from_id(c.id()).unwrap(), c);
            assert_eq!(Compression::from_name(c.name()), Some(c));
        }
        assert!(Compression::from_id(5).is_err());
    }

    #[test]
    fn decompression_bombs_are_rejected() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        for c in ALL {
            let mut out = Vec::new();
            c.compress(&zeros, &mut out).unwrap();
            let err = c.decompress(&out, 1024 * 1024).unwrap_err();
            assert!(
                matches!(err, CompressionError::TooLarge { .. }),
                "{c:?}: {err}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage = [0x82u8, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 1, 2, 3];
        for c in ALL[1..].iter() {
            assert!(c.decompress(&garbage, 1 << 20).is_err(), "{c:?}");
            assert!(c.decompress(&[0xff; 64], 1 << 20).is_err(), "{c:?}");
        }
    }

    #[test]
    fn raw_snappy_is_accepted_like_java_does() {
        let input = b"hello hello hello hello".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
        assert_eq!(
            Compression::Snappy.decompress(&raw, 1 << 20).unwrap(),
            input
        );
    }
}
