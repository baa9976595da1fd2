//! Hadoop's SequenceFile, written and read for the tests independently of kbackup's code
//! (`org.apache.hadoop.io.SequenceFile`, version 6): what stock Secor's
//! `SequenceFileReaderWriterFactory` writes — `LongWritable` offsets, `BytesWritable` values,
//! a sync marker every 2,000 bytes (Hadoop 2) — and, for reading kbackup's files, the
//! block-compressed form with `GzipCodec`.

use std::io::Read;

const KEY: &str = "org.apache.hadoop.io.LongWritable";
const VALUE: &str = "org.apache.hadoop.io.BytesWritable";

fn text(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 128, "class names fit a one-byte vint");
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// An uncompressed SequenceFile of (offset, value) records, as Hadoop's `Writer` lays it out.
pub fn write(records: &[(i64, Vec<u8>)]) -> Vec<u8> {
    let sync: [u8; 16] = rand::random();
    let mut out = b"SEQ\x06".to_vec();
    text(&mut out, KEY);
    text(&mut out, VALUE);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&sync);
    let mut last_sync = 0;
    for (offset, value) in records {
        if out.len() >= last_sync + 2000 {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            out.extend_from_slice(&sync);
            last_sync = out.len();
        }
        out.extend_from_slice(&((8 + 4 + value.len()) as i32).to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(value.len() as i32).to_be_bytes());
        out.extend_from_slice(value);
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
    if compressed {
        assert!(block, "record compression is not what Secor or kbackup write");
        assert_eq!(i.string(), "org.apache.hadoop.io.compress.GzipCodec");
    }
    assert_eq!(i.int(), 0, "no metadata");
    let sync = i.take(16).to_vec();
    let mut out = Vec::new();
    while !i.done() {
        let n = i.int();
        if n == -1 {
            assert_eq!(i.take(16), &sync[..], "the file's sync marker");
            if compressed {
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
        assert!(!compressed, "a block-compressed file holds blocks only");
        assert_eq!(i.int(), 8, "a LongWritable key");
        let key = i64::from_be_bytes(i.take(8).try_into().unwrap());
        let len = i.int() as usize;
        assert_eq!(n as usize, 8 + 4 + len);
        out.push((key, i.take(len).to_vec()));
    }
    out
}
