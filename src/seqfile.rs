//! Hadoop's SequenceFile (version 6), the file format stock Secor writes by default
//! (`SequenceFileReaderWriterFactory`): key the Kafka offset (`LongWritable`), value the
//! message (`BytesWritable`).
//!
//! Written the way Secor's Hadoop (2.9) writes it: uncompressed, a sync marker every 2,000
//! bytes; with gzip, block-compressed (`GzipCodec`, blocks of about 1,000,000 bytes, each of
//! its four buffers one gzip stream), so Hadoop's and Spark's readers (`sequenceFile`,
//! `SequenceFileInputFormat`) read and split kbackup's files like Secor's. The output is
//! deterministic: the sync marker is derived from the file's first offset, so a rebuilt file is
//! the same bytes.
//!
//! Read: version 6, uncompressed, record- or block-compressed with `GzipCodec` or
//! `DefaultCodec` (zlib); values `BytesWritable` or `Text`; keys `LongWritable` are read as
//! offsets, other keys skipped. Anything else is an error naming what the file holds.

use std::io::{self, Read};

/// A SequenceFile starts with these bytes (and its version byte).
pub const MAGIC: &[u8; 3] = b"SEQ";
const VERSION: u8 = 6;
const KEY_CLASS: &str = "org.apache.hadoop.io.LongWritable";
const VALUE_CLASS: &str = "org.apache.hadoop.io.BytesWritable";
const TEXT_CLASS: &str = "org.apache.hadoop.io.Text";
const GZIP_CODEC: &str = "org.apache.hadoop.io.compress.GzipCodec";
const DEFAULT_CODEC: &str = "org.apache.hadoop.io.compress.DefaultCodec";
const SYNC_ESCAPE: i32 = -1;
const SYNC_SIZE: usize = 16;
/// Hadoop 2's `SequenceFile.SYNC_INTERVAL` (100 × (4 + 16) bytes).
pub const SYNC_INTERVAL: usize = 2000;
/// Hadoop's `io.seqfile.compress.blocksize` default.
const BLOCK_SIZE: usize = 1_000_000;

/// True if `stored` is a SequenceFile (whatever its name's extension: Secor names a
/// block-compressed one `.gz` after its codec).
pub fn is_sequence_file(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// The sync marker of a file whose first message has `first_offset`: 16 bytes that differ from
/// file to file (as Hadoop's random ones do) yet are the same when the file is rebuilt.
pub fn sync_for(first_offset: i64) -> [u8; SYNC_SIZE] {
    xxhash_rust::xxh3::xxh3_128(&[b"kbackup-sync".as_slice(), &first_offset.to_be_bytes()].concat()).to_be_bytes()
}

/// The header of a file: version 6, `LongWritable` keys, `BytesWritable` values, no metadata;
/// `codec` for a block-compressed one.
pub fn header(sync: &[u8; SYNC_SIZE], codec: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    write_text(&mut out, KEY_CLASS);
    write_text(&mut out, VALUE_CLASS);
    out.push(codec.is_some() as u8);
    out.push(codec.is_some() as u8);
    if let Some(c) = codec {
        write_text(&mut out, c);
    }
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(sync);
    out
}

/// The length of [`header`] without a codec (where the first record starts).
#[cfg(test)]
pub fn header_len() -> usize {
    header(&[0; SYNC_SIZE], None).len()
}

/// What one record takes: record length, key length, key, value length, value.
pub fn record_bytes(offset: i64, value: &[u8], mut write: impl FnMut(&[u8])) {
    let value_len = 4 + value.len();
    write(&((8 + value_len) as i32).to_be_bytes());
    write(&8i32.to_be_bytes());
    write(&offset.to_be_bytes());
    write(&(value.len() as i32).to_be_bytes());
    write(value);
}

/// A sync marker: the escape and the file's sync bytes.
pub fn sync_bytes(sync: &[u8; SYNC_SIZE], mut write: impl FnMut(&[u8])) {
    write(&SYNC_ESCAPE.to_be_bytes());
    write(sync);
}

/// Rewrites an uncompressed file this module wrote as a block-compressed one (`GzipCodec`),
/// as Hadoop's `BlockCompressWriter` lays it out; `gzip` compresses one buffer into one gzip
/// stream.
pub fn block_compress(plain: &[u8], gzip: impl Fn(&[u8]) -> Vec<u8>) -> io::Result<Vec<u8>> {
    let file = Reader::new(plain)?;
    let sync = file.sync;
    let mut out = header(&sync, Some(GZIP_CODEC));
    let mut block = Block::default();
    for record in file {
        let r = record?;
        let key = r.offset.map(i64::to_be_bytes).ok_or_else(|| bad("a record without a LongWritable key"))?;
        write_vint(&mut block.key_lens, key.len() as i64);
        block.keys.extend_from_slice(&key);
        write_vint(&mut block.value_lens, 4 + r.value.len() as i64);
        block.values.extend_from_slice(&(r.value.len() as i32).to_be_bytes());
        block.values.extend_from_slice(&r.value);
        block.records += 1;
        if block.keys.len() + block.values.len() >= BLOCK_SIZE {
            block.write(&mut out, &sync, &gzip);
        }
    }
    block.write(&mut out, &sync, &gzip);
    Ok(out)
}

#[derive(Default)]
struct Block {
    records: i64,
    key_lens: Vec<u8>,
    keys: Vec<u8>,
    value_lens: Vec<u8>,
    values: Vec<u8>,
}

impl Block {
    fn write(&mut self, out: &mut Vec<u8>, sync: &[u8; SYNC_SIZE], gzip: &dyn Fn(&[u8]) -> Vec<u8>) {
        if self.records == 0 {
            return;
        }
        sync_bytes(sync, |b| out.extend_from_slice(b));
        write_vint(out, self.records);
        for buf in [&self.key_lens, &self.keys, &self.value_lens, &self.values] {
            let gz = gzip(buf);
            write_vint(out, gz.len() as i64);
            out.extend_from_slice(&gz);
        }
        *self = Block::default();
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key, when it is a `LongWritable` (Secor's and kbackup's: the Kafka offset).
    pub offset: Option<i64>,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Codec {
    Gzip,
    Zlib,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Compression {
    None,
    Record(Codec),
    Block(Codec),
}

/// Reads a SequenceFile's records in order.
pub struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    pub sync: [u8; SYNC_SIZE],
    long_keys: bool,
    text_values: bool,
    compression: Compression,
    /// The decompressed buffers of the current block: key lengths, keys, value lengths, values.
    block: Option<[Cursor; 4]>,
    block_left: i64,
    failed: bool,
}

#[derive(Default)]
struct Cursor {
    data: Vec<u8>,
    pos: usize,
}

impl Cursor {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.data.len()).ok_or_else(|| bad("a block ends inside a record"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn vint(&mut self) -> io::Result<i64> {
        let mut at = self.pos;
        let v = read_vint(&self.data, &mut at)?;
        self.pos = at;
        Ok(v)
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("SequenceFile: {}", what.into()))
}

impl<'a> Reader<'a> {
    /// Reads the header; errors name what this reader cannot read.
    pub fn new(input: &'a [u8]) -> io::Result<Reader<'a>> {
        if !is_sequence_file(input) {
            return Err(bad("no SEQ header"));
        }
        let version = *input.get(3).ok_or_else(|| bad("truncated header"))?;
        if version != VERSION {
            return Err(bad(format!("version {version}; kbackup reads version 6 (Hadoop 0.20 and later)")));
        }
        let mut pos = 4;
        let key_class = read_text(input, &mut pos)?;
        let value_class = read_text(input, &mut pos)?;
        let flag = |pos: &mut usize| -> io::Result<bool> {
            let b = *input.get(*pos).ok_or_else(|| bad("truncated header"))?;
            *pos += 1;
            Ok(b != 0)
        };
        let compressed = flag(&mut pos)?;
        let block = flag(&mut pos)?;
        let codec = if compressed {
            let name = read_text(input, &mut pos)?;
            match name.as_str() {
                GZIP_CODEC => Codec::Gzip,
                DEFAULT_CODEC | "org.apache.hadoop.io.compress.DeflateCodec" => Codec::Zlib,
                other => return Err(bad(format!("compressed with {other}; kbackup reads GzipCodec and DefaultCodec"))),
            }
        } else {
            Codec::Gzip
        };
        let pairs = read_i32(input, &mut pos)?;
        for _ in 0..pairs.max(0) {
            read_text(input, &mut pos)?;
            read_text(input, &mut pos)?;
        }
        let sync: [u8; SYNC_SIZE] = input.get(pos..pos + SYNC_SIZE).ok_or_else(|| bad("truncated header"))?.try_into().expect("16 bytes");
        pos += SYNC_SIZE;
        let text_values = match value_class.as_str() {
            VALUE_CLASS => false,
            TEXT_CLASS => true,
            other => return Err(bad(format!("values of class {other}; kbackup reads BytesWritable (Secor's) and Text values"))),
        };
        let compression = match (compressed, block) {
            (false, _) => Compression::None,
            (true, false) => Compression::Record(codec),
            (true, true) => Compression::Block(codec),
        };
        Ok(Reader { input, pos, sync, long_keys: key_class == KEY_CLASS, text_values, compression, block: None, block_left: 0, failed: false })
    }

    fn value(&self, raw: &[u8]) -> io::Result<Vec<u8>> {
        if self.text_values {
            let mut at = 0;
            let n = read_vint(raw, &mut at)?;
            return raw
                .get(at..at + usize::try_from(n).map_err(|_| bad("a negative value length"))?)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| bad("a value shorter than its length"));
        }
        let n = raw.get(..4).map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes"))).ok_or_else(|| bad("a value shorter than its length"))?;
        let n = usize::try_from(n).map_err(|_| bad("a negative value length"))?;
        raw.get(4..4 + n).map(<[u8]>::to_vec).ok_or_else(|| bad("a value shorter than its length"))
    }

    fn key(&self, raw: &[u8]) -> Option<i64> {
        (self.long_keys && raw.len() == 8).then(|| i64::from_be_bytes(raw.try_into().expect("8 bytes")))
    }

    fn next_record(&mut self) -> io::Result<Option<Record>> {
        if let Compression::Block(codec) = self.compression {
            return self.next_in_block(codec);
        }
        loop {
            if self.pos == self.input.len() {
                return Ok(None);
            }
            let len = read_i32(self.input, &mut self.pos)?;
            if len == SYNC_ESCAPE {
                self.check_sync()?;
                continue;
            }
            let key_len = read_i32(self.input, &mut self.pos)?;
            let (len, key_len) = match (usize::try_from(len), usize::try_from(key_len)) {
                (Ok(l), Ok(k)) if k <= l => (l, k),
                _ => return Err(bad(format!("a record of {len} bytes with a key of {key_len} at byte {}", self.pos))),
            };
            let raw = self.input.get(self.pos..self.pos + len).ok_or_else(|| bad("the file ends inside a record"))?;
            self.pos += len;
            let offset = self.key(&raw[..key_len]);
            let value = match self.compression {
                Compression::Record(codec) => self.value(&inflate(codec, &raw[key_len..])?)?,
                _ => self.value(&raw[key_len..])?,
            };
            return Ok(Some(Record { offset, value }));
        }
    }

    fn check_sync(&mut self) -> io::Result<()> {
        let s = self.input.get(self.pos..self.pos + SYNC_SIZE).ok_or_else(|| bad("the file ends inside a sync marker"))?;
        if s != self.sync {
            return Err(bad(format!("a sync marker that is not the file's at byte {}", self.pos)));
        }
        self.pos += SYNC_SIZE;
        Ok(())
    }

    fn next_in_block(&mut self, codec: Codec) -> io::Result<Option<Record>> {
        while self.block_left == 0 {
            if self.pos == self.input.len() {
                return Ok(None);
            }
            if read_i32(self.input, &mut self.pos)? != SYNC_ESCAPE {
                return Err(bad(format!("a block without its sync marker at byte {}", self.pos)));
            }
            self.check_sync()?;
            self.block_left = read_vint(self.input, &mut self.pos)?;
            let mut bufs: [Cursor; 4] = Default::default();
            for b in &mut bufs {
                let n = usize::try_from(read_vint(self.input, &mut self.pos)?).map_err(|_| bad("a negative buffer length"))?;
                let raw = self.input.get(self.pos..self.pos + n).ok_or_else(|| bad("the file ends inside a block"))?;
                self.pos += n;
                b.data = inflate(codec, raw)?;
            }
            self.block = Some(bufs);
        }
        let [key_lens, keys, value_lens, values] = self.block.as_mut().expect("a block is loaded");
        let kl = usize::try_from(key_lens.vint()?).map_err(|_| bad("a negative key length"))?;
        let key = keys.take(kl)?.to_vec();
        let vl = usize::try_from(value_lens.vint()?).map_err(|_| bad("a negative value length"))?;
        let raw = values.take(vl)?.to_vec();
        self.block_left -= 1;
        Ok(Some(Record { offset: self.key(&key), value: self.value(&raw)? }))
    }
}

impl Iterator for Reader<'_> {
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<io::Result<Record>> {
        if self.failed {
            return None;
        }
        let r = self.next_record().transpose();
        if matches!(r, Some(Err(_))) {
            self.failed = true;
        }
        r
    }
}

fn inflate(codec: Codec, raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match codec {
        Codec::Gzip => flate2::read::MultiGzDecoder::new(raw).read_to_end(&mut out)?,
        Codec::Zlib => flate2::read::ZlibDecoder::new(raw).read_to_end(&mut out)?,
    };
    Ok(out)
}

fn read_i32(input: &[u8], pos: &mut usize) -> io::Result<i32> {
    let b = input.get(*pos..*pos + 4).ok_or_else(|| bad("the file ends inside a length"))?;
    *pos += 4;
    Ok(i32::from_be_bytes(b.try_into().expect("4 bytes")))
}

fn write_text(out: &mut Vec<u8>, s: &str) {
    write_vint(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

fn read_text(input: &[u8], pos: &mut usize) -> io::Result<String> {
    let n = usize::try_from(read_vint(input, pos)?).map_err(|_| bad("a negative string length"))?;
    let b = input.get(*pos..*pos + n).ok_or_else(|| bad("truncated header"))?;
    *pos += n;
    String::from_utf8(b.to_vec()).map_err(|_| bad("a class name that is not UTF-8"))
}

/// Hadoop's `WritableUtils.writeVLong`: -112..127 in one byte, else a length byte and the
/// big-endian bytes (of the complement, for negatives).
pub fn write_vint(out: &mut Vec<u8>, mut i: i64) {
    if (-112..=127).contains(&i) {
        out.push(i as u8);
        return;
    }
    let mut len: i32 = -112;
    if i < 0 {
        i ^= -1;
        len = -120;
    }
    let mut tmp = i;
    while tmp != 0 {
        tmp >>= 8;
        len -= 1;
    }
    out.push(len as i8 as u8);
    let n = if len < -120 { -(len + 120) } else { -(len + 112) };
    for idx in (1..=n).rev() {
        out.push((i >> ((idx - 1) * 8)) as u8);
    }
}

/// Hadoop's `WritableUtils.readVLong`.
pub fn read_vint(input: &[u8], pos: &mut usize) -> io::Result<i64> {
    let first = *input.get(*pos).ok_or_else(|| bad("the file ends inside a number"))? as i8;
    *pos += 1;
    let size = if first >= -112 {
        return Ok(first as i64);
    } else if first < -120 {
        (-119 - first as i32) as usize
    } else {
        (-111 - first as i32) as usize
    };
    let mut i: i64 = 0;
    for _ in 0..size - 1 {
        let b = *input.get(*pos).ok_or_else(|| bad("the file ends inside a number"))?;
        *pos += 1;
        i = (i << 8) | b as i64;
    }
    Ok(if first < -120 || (-112..0).contains(&first) { i ^ -1 } else { i })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(records: &[(i64, &[u8])]) -> Vec<u8> {
        let sync = sync_for(records.first().map_or(0, |r| r.0));
        let mut out = header(&sync, None);
        let mut last_sync = 0;
        for (o, v) in records {
            if out.len() >= last_sync + SYNC_INTERVAL {
                sync_bytes(&sync, |b| out.extend_from_slice(b));
                last_sync = out.len();
            }
            record_bytes(*o, v, |b| out.extend_from_slice(b));
        }
        out
    }

    #[test]
    fn vints_round_trip_like_hadoops() {
        // Hadoop's own encodings of a few values (WritableUtils.writeVLong).
        for (v, want) in [
            (0i64, vec![0u8]),
            (127, vec![127]),
            (-112, vec![0x90]),
            (128, vec![0x8f, 0x80]),
            (-113, vec![0x87, 0x70]),
            (300, vec![0x8e, 0x01, 0x2c]),
        ] {
            let mut out = Vec::new();
            write_vint(&mut out, v);
            assert_eq!(out, want, "{v}");
        }
        for v in [0, 1, -1, 127, 128, -112, -113, 255, 256, 65_535, 1 << 31, i64::MAX, i64::MIN, -(1 << 40)] {
            let mut out = Vec::new();
            write_vint(&mut out, v);
            let mut pos = 0;
            assert_eq!(read_vint(&out, &mut pos).unwrap(), v);
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn the_header_is_hadoops() {
        let h = header(&[7; 16], None);
        assert_eq!(&h[..4], b"SEQ\x06");
        assert_eq!(h[4] as usize, KEY_CLASS.len());
        assert_eq!(&h[5..5 + KEY_CLASS.len()], KEY_CLASS.as_bytes());
        assert_eq!(h.len(), header_len());
        assert_eq!(&h[h.len() - 16..], &[7; 16]);
    }

    #[test]
    fn plain_and_block_compressed_files_read_back_with_their_offsets() {
        let values: Vec<Vec<u8>> = (0..5000).map(|i| format!("{{\"eid\":\"E{i}\",\"n\":\"{}\"}}\n\r\0", "x".repeat(i % 300)).into_bytes()).collect();
        let records: Vec<(i64, &[u8])> = values.iter().enumerate().map(|(i, v)| (1000 + i as i64, v.as_slice())).collect();
        let file = plain(&records);
        let syncs = file.windows(20).filter(|w| w[..4] == [0xff; 4] && w[4..] == sync_for(1000)).count();
        assert!(syncs > file.len() / (SYNC_INTERVAL + 400), "a sync marker about every 2,000 bytes: {syncs}");
        let back: Vec<Record> = Reader::new(&file).unwrap().collect::<io::Result<_>>().unwrap();
        assert_eq!(back.len(), 5000);
        for (r, (o, v)) in back.iter().zip(&records) {
            assert_eq!((r.offset, r.value.as_slice()), (Some(*o), *v));
        }
        let gzip = |b: &[u8]| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        let gz = block_compress(&file, gzip).unwrap();
        assert!(gz.len() < file.len() / 5, "{} of {}", gz.len(), file.len());
        assert_eq!(gz, block_compress(&file, gzip).unwrap(), "deterministic");
        let back2: Vec<Record> = Reader::new(&gz).unwrap().collect::<io::Result<_>>().unwrap();
        assert_eq!(back2, back);
        // Empty files are files too.
        let empty = plain(&[]);
        assert_eq!(Reader::new(&empty).unwrap().count(), 0);
        assert_eq!(Reader::new(&block_compress(&empty, gzip).unwrap()).unwrap().count(), 0);
    }

    /// A file a real stock Secor uploaded (record-compressed with DefaultCodec): every record
    /// reads back, keyed by its offset.
    #[test]
    fn a_real_stock_secor_file_reads_back() {
        let raw = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/secor-stock/1_0_00000000000000000000")).unwrap();
        let records: Vec<Record> = Reader::new(&raw).unwrap().collect::<io::Result<_>>().unwrap();
        assert_eq!(records.iter().map(|r| r.offset.unwrap()).collect::<Vec<_>>(), (0..30).collect::<Vec<i64>>());
        for r in &records {
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            assert!(v["syncts"].is_i64() && v["mid"].is_string(), "{v}");
        }
    }

    #[test]
    fn damage_is_an_error_not_a_silent_end() {
        let file = plain(&[(1, b"a"), (2, b"bb"), (3, b"ccc")]);
        for cut in [file.len() - 1, file.len() - 5, header_len() + 3] {
            let r: io::Result<Vec<Record>> = Reader::new(&file[..cut]).unwrap().collect();
            assert!(r.is_err(), "cut at {cut}");
        }
        let mut other = file.clone();
        other[3] = 5;
        assert!(Reader::new(&other).err().unwrap().to_string().contains("version 5"));
        let mut codec = header(&[1; 16], Some("org.apache.hadoop.io.compress.SnappyCodec"));
        codec.extend_from_slice(&[0; 8]);
        assert!(Reader::new(&codec).err().unwrap().to_string().contains("SnappyCodec"));
    }
}
