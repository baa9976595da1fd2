//! Sealing: turning a finished buffer into the bytes of a blob (gzip or plain).

use std::io::Write;

use crate::config::Compression;

/// Encodes a file's contents. gzip output is deterministic (no mtime, no name), so sealing the
/// same events twice yields the same blob.
pub fn encode(data: &[u8], compression: Compression, level: u32) -> Vec<u8> {
    match compression {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::with_capacity(data.len() / 4 + 64), flate2::Compression::new(level));
            enc.write_all(data).expect("writing to a Vec cannot fail");
            enc.finish().expect("writing to a Vec cannot fail")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_round_trips_and_is_deterministic() {
        let data = b"{\"a\":1}\n{\"b\":2}\n".repeat(1000);
        let gz = encode(&data, Compression::Gzip, 3);
        assert!(gz.len() < data.len() / 10);
        assert_eq!(gz, encode(&data, Compression::Gzip, 3));
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn none_is_identity() {
        assert_eq!(encode(b"x\n", Compression::None, 3), b"x\n");
    }
}
