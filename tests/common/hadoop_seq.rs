//! Hadoop's SequenceFile, written and read for the tests independently of kbackup's code
//! (`org.apache.hadoop.io.SequenceFile`, version 6): what stock Secor's
//! `SequenceFileReaderWriterFactory` writes — `LongWritable` offsets, `BytesWritable` values
//! record-compressed with `DefaultCodec`, a sync marker every 2,000 bytes (Hadoop 2) — and, for
//! reading kbackup's files, the uncompressed and the block-compressed (`GzipCodec`) forms.

use std::io::Read;

const KEY: &str = "org.apache.hadoop.io.LongWritable";
const VALUE: &str = "org.apache.hadoop.io.BytesWritable";

fn text(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 128, "class names fit a one-byte vint");
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

const DEFAULT_CODEC: &str = "org.apache.hadoop.io.compress.DefaultCodec";

/// A SequenceFile of (offset, value) records as stock Secor writes it without a codec: Hadoop's
/// default `io.seqfile.compression.type` is RECORD, so each value is compressed on its own with
/// `DefaultCodec` (zlib) — seen in a real stock Secor's files.
pub fn write(records: &[(i64, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let sync: [u8; 16] = rand::random();
    let mut out = b"SEQ\x06".to_vec();
    text(&mut out, KEY);
    text(&mut out, VALUE);
    out.extend_from_slice(&[1, 0]);
    text(&mut out, DEFAULT_CODEC);
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&sync);
    let mut last_sync = 0;
    for (offset, value) in records {
        if out.len() >= last_sync + 2000 {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            out.extend_from_slice(&sync);
            last_sync = out.len();
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&(value.len() as i32).to_be_bytes()).unwrap();
        z.write_all(value).unwrap();
        let compressed = z.finish().unwrap();
        out.extend_from_slice(&((8 + compressed.len()) as i32).to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    out
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn int(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn vint(&mut self) -> i64 {
        let first = self.take(1)[0] as i8;
        if first >= -112 {
            return first as i64;
        }
        let negative = first < -120;
        let len = if negative { -119 - first as i32 } else { -111 - first as i32 } as usize;
        let mut v = 0i64;
        for b in self.take(len - 1).to_vec() {
            v = (v << 8) | b as i64;
        }
        if negative {
            !v
        } else {
            v
        }
    }
    fn string(&mut self) -> String {
        let n = self.vint() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    fn done(&self) -> bool {
        self.pos == self.data.len()
    }
}

/// The (offset, value) records of a SequenceFile: uncompressed or block-compressed with
/// `GzipCodec`. Panics on anything else (these are test assertions).
pub fn read(data: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let mut i = Input { data, pos: 0 };
    assert_eq!(i.take(4), b"SEQ\x06", "a version 6 SequenceFile");
    assert_eq!((i.string(), i.string()), (KEY.to_string(), VALUE.to_string()));
    let (compressed, block) = (i.take(1)[0] != 0, i.take(1)[0] != 0);
    let codec = if compressed { i.string() } else { String::new() };
    match (compressed, block) {
        (true, true) => assert_eq!(codec, "org.apache.hadoop.io.compress.GzipCodec", "kbackup's block compression"),
        (true, false) => assert_eq!(codec, DEFAULT_CODEC, "stock Secor's record compression"),
        _ => {}
    }
    assert_eq!(i.int(), 0, "no metadata");
    let sync = i.take(16).to_vec();
    let mut out = Vec::new();
    while !i.done() {
        let n = i.int();
        if n == -1 {
            assert_eq!(i.take(16), &sync[..], "the file's sync marker");
            if block {
                let records = i.vint() as usize;
                let mut bufs = Vec::new();
                for _ in 0..4 {
                    let len = i.vint() as usize;
                    let mut plain = Vec::new();
                    flate2::read::MultiGzDecoder::new(i.take(len)).read_to_end(&mut plain).unwrap();
                    bufs.push(plain);
                }
                let mut cursors: Vec<Input<'_>> = bufs.iter().map(|b| Input { data: b, pos: 0 }).collect();
                for _ in 0..records {
                    let kl = cursors[0].vint() as usize;
                    assert_eq!(kl, 8);
                    let key = i64::from_be_bytes(cursors[1].take(8).try_into().unwrap());
                    let vl = cursors[2].vint() as usize;
                    let raw = cursors[3].take(vl).to_vec();
                    let len = i32::from_be_bytes(raw[..4].try_into().unwrap()) as usize;
                    assert_eq!(len + 4, vl);
                    out.push((key, raw[4..].to_vec()));
                }
            }
            continue;
        }
        assert!(!block, "a block-compressed file holds blocks only");
        assert_eq!(i.int(), 8, "a LongWritable key");
        let key = i64::from_be_bytes(i.take(8).try_into().unwrap());
        let raw = if compressed {
            let mut plain = Vec::new();
            flate2::read::ZlibDecoder::new(i.take(n as usize - 8)).read_to_end(&mut plain).unwrap();
            plain
        } else {
            i.take(n as usize - 8).to_vec()
        };
        let len = i32::from_be_bytes(raw[..4].try_into().unwrap()) as usize;
        assert_eq!(raw.len(), 4 + len, "a BytesWritable value");
        out.push((key, raw[4..].to_vec()));
    }
    out
}
