//! Sealing: turning a finished buffer into the bytes of a blob (gzip or plain).
//!
//! gzip is written in one pass over the whole buffer, as a single gzip member that every reader
//! handles. Levels 1–3 use Intel's ISA-L (igzip; the `isal` feature, on by default): at level 1
//! it compresses Sunbird telemetry slightly better than `gzip -6` at about three times
//! libdeflate's level-1 speed (see scripts/bench). Levels 4–12, and every level without the
//! feature, use libdeflate. The output is deterministic (no timestamp, no name), so sealing the
//! same events twice yields the same blob.

use bytes::Bytes;

use crate::config::{Compression, FileFormat};

/// Encodes a file's contents (plain files are passed through without a copy; gzip frees the
/// input as soon as it is compressed).
pub fn encode<T: AsRef<[u8]> + Send + 'static>(data: T, compression: Compression, level: u32) -> Bytes {
    match compression {
        Compression::None => Bytes::from_owner(data),
        // The config check refuses them for anything but Parquet, which `encode_file` seals.
        Compression::Zstd | Compression::Snappy => unreachable!("a Parquet page codec is never a text file's compression"),
        Compression::Gzip => {
            let data = data.as_ref();
            #[cfg(feature = "isal")]
            if level <= 3 {
                if let Some(out) = isal_gzip(data, level) {
                    return Bytes::from(out);
                }
            }
            Bytes::from(libdeflate_gzip(data, level))
        }
    }
}

fn libdeflate_gzip(data: &[u8], level: u32) -> Vec<u8> {
    let lvl = libdeflater::CompressionLvl::new(level.clamp(1, 12) as i32).unwrap_or_default();
    let mut c = libdeflater::Compressor::new(lvl);
    // calloc'd: pages the compressor does not write are never touched.
    let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
    let n = c.gzip_compress(data, &mut out).expect("the output buffer is sized by gzip_compress_bound");
    out.truncate(n);
    out.shrink_to_fit();
    out
}

/// ISA-L's stateless gzip (level 1, or 3 for levels 2–3); `None` if the output did not fit
/// (incompressible input), so the caller falls back to libdeflate.
#[cfg(feature = "isal")]
fn isal_gzip(data: &[u8], level: u32) -> Option<Vec<u8>> {
    let lvl = if level <= 1 { isal::CompressionLevel::One } else { isal::CompressionLevel::Three };
    // Stored blocks cost 5 bytes per 64 KiB; headers and trailer a few dozen. calloc'd, so
    // pages past the compressed size are never touched.
    let mut out = vec![0u8; data.len() + data.len() / 1024 + 4096];
    let n = isal::compress_into(data, &mut out, lvl, isal::Codec::Gzip).ok()?;
    out.truncate(n);
    out.shrink_to_fit();
    Some(out)
}

/// How a topic's files are sealed, made once per topic from its config.
#[derive(Debug, Clone)]
pub struct Sealing {
    pub format: FileFormat,
    pub compression: Compression,
    pub level: u32,
    /// Parquet: the fields shredded out of the event Variant.
    pub shred: crate::columnar::Shred,
    /// Parquet: whole records are kept (`format = "record"`: timestamp type and headers too).
    pub records: bool,
}

impl Sealing {
    /// The topic's (its config is checked: a shredding it refuses is not used).
    pub fn of(t: &crate::config::TopicConfig) -> Sealing {
        Sealing {
            format: t.file_format,
            compression: t.compression(),
            level: t.compression_level,
            shred: if t.file_format == FileFormat::Parquet {
                crate::columnar::Shred::new(&t.parquet_shred()).unwrap_or_default()
            } else {
                Default::default()
            },
            records: t.format == crate::config::Format::Record,
        }
    }

    /// Plain settings without shredding (tests, tools).
    pub fn plain(format: FileFormat, compression: Compression, level: u32) -> Sealing {
        Sealing { format, compression, level, shred: Default::default(), records: false }
    }
}

/// A sealed file: its bytes, and for Parquet how many values got no Variant (not JSON).
pub struct Encoded {
    pub body: Bytes,
    pub without_variant: u64,
}

/// Encodes a file of `format`: a SequenceFile is buffered uncompressed (see
/// [`crate::seqfile`]) and, with gzip, block-compressed here as Hadoop does; a Parquet file is
/// buffered as record envelope lines and transcoded here (see [`crate::columnar`]); text files
/// are [`encode`]d whole.
pub fn encode_file<T: AsRef<[u8]> + Send + 'static>(data: T, sealing: &Sealing) -> Encoded {
    let (compression, level) = (sealing.compression, sealing.level);
    let body = match (sealing.format, compression) {
        (FileFormat::SequenceFile, Compression::Gzip) => Bytes::from(
            crate::seqfile::block_compress(data.as_ref(), |b| encode(b.to_vec(), Compression::Gzip, level).to_vec())
                .expect("a SequenceFile the writer framed reads back"),
        ),
        (FileFormat::Parquet, _) => {
            let sealed = crate::columnar::encode(data.as_ref(), compression, level, &sealing.shred, sealing.records)
                .expect("the writer buffers record envelopes, which transcode");
            // The transcoding's many small allocations are freed into this thread's arena, which
            // glibc keeps: give them back, or RSS stays at the sum of every arena's peak.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free memory to the OS.
            unsafe {
                libc::malloc_trim(0);
            }
            return Encoded { body: Bytes::from(sealed.file), without_variant: sealed.not_json };
        }
        _ => encode(data, compression, level),
    };
    Encoded { body, without_variant: 0 }
}

/// Reads a stored blob back as lines, decompressing by the key's `.gz` extension (the inverse
/// of [`encode`]; multi-member gzip, as other writers may produce, is read whole). A
/// SequenceFile (recognised by its header, whatever its name) reads as its values, and a
/// Parquet file (recognised by its magic) as the value lines a text file would hold, each
/// followed by `\n`.
pub fn reader<'a>(key: &str, stored: &'a [u8]) -> Box<dyn std::io::Read + 'a> {
    if crate::seqfile::is_sequence_file(stored) || crate::columnar::is_parquet(stored) {
        let mut joined = Vec::with_capacity(stored.len());
        let mut failed = None;
        for r in lines(key, stored) {
            match r {
                Ok(v) => {
                    joined.extend_from_slice(&v);
                    joined.push(b'\n');
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let tail: Box<dyn std::io::Read> = match failed {
            None => Box::new(std::io::empty()),
            Some(e) => Box::new(FailingReader(Some(e))),
        };
        return Box::new(std::io::Read::chain(std::io::Cursor::new(joined), tail));
    }
    if key.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(stored))
    } else {
        Box::new(stored)
    }
}

/// A reader that fails with the error a SequenceFile's decoding met.
struct FailingReader(Option<std::io::Error>);

impl std::io::Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(self.0.take().unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "SequenceFile: damaged")))
    }
}

/// The messages of a stored blob: its lines, decompressed, each without its `\n`, or a
/// SequenceFile's values — how every reader (`cat`, `replay`, `verify`, `repartition`) reads a
/// backup file. An `Err` item means the file is corrupt or truncated from there on.
pub fn lines<'a>(key: &str, stored: &'a [u8]) -> Box<dyn Iterator<Item = std::io::Result<Vec<u8>>> + 'a> {
    use std::io::BufRead;
    if crate::columnar::is_parquet(stored) {
        return match crate::columnar::lines(stored) {
            Ok(lines) => Box::new(lines.into_iter().map(Ok)),
            Err(e) => Box::new(std::iter::once(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())))),
        };
    }
    if crate::seqfile::is_sequence_file(stored) {
        return match crate::seqfile::Reader::new(stored) {
            Ok(r) => Box::new(r.map(|r| r.map(|r| r.value))),
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
    }
    Box::new(std::io::BufReader::with_capacity(1 << 20, reader(key, stored)).split(b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_round_trips_and_is_deterministic() {
        let data = b"{\"a\":1}\n{\"b\":2}\n".repeat(1000);
        for level in [0, 1, 6, 12] {
            let gz = encode(data.clone(), Compression::Gzip, level);
            assert!(level == 0 || gz.len() < data.len() / 10, "level {level}");
            assert_eq!(gz, encode(data.clone(), Compression::Gzip, level));
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    /// Every level's output is a standard, deterministic gzip file (no timestamp: bytes 4–7 of
    /// the header are zero) that flate2 reads back, for text, empty, incompressible and
    /// highly repetitive input.
    #[test]
    fn every_level_writes_standard_deterministic_gzip() {
        let mut noise = vec![0u8; 300_000];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let inputs = [b"{\"eid\":\"START\",\"mid\":\"m\"}\n".repeat(5000), Vec::new(), noise, vec![b'a'; 1 << 20]];
        for level in 1..=12 {
            for data in &inputs {
                let gz = encode(data.clone(), Compression::Gzip, level);
                assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0], "level {level}: a plain gzip header");
                assert_eq!(&gz[4..8], &[0, 0, 0, 0], "level {level}: no modification time");
                assert_eq!(gz, encode(data.clone(), Compression::Gzip, level), "level {level}: deterministic");
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
                assert_eq!(&out, data, "level {level}");
            }
        }
    }

    #[test]
    fn empty_input_is_a_valid_gzip_file() {
        let gz = encode(Vec::new(), Compression::Gzip, 1);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn none_is_identity() {
        assert_eq!(encode(b"x\n".to_vec(), Compression::None, 3), &b"x\n"[..]);
        let mut m = crate::buffer::Memory::new();
        m.extend_from_slice(b"y\n");
        assert_eq!(encode(m, Compression::None, 0), &b"y\n"[..]);
    }
}
