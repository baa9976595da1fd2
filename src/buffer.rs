//! Open files in memory and the rotation policy that decides when to seal them.

mod memory;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use memory::{block_counts, pooled_bytes, release_idle_blocks, set_pool_limit, Memory};

/// Identifies one open file: (topic, Kafka partition, prefix, date, error bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferKey {
    /// Index of the topic in the config.
    pub topic: usize,
    pub partition: i32,
    pub prefix: Option<Arc<str>>,
    pub date: Arc<str>,
    /// True for the `error_path` bucket.
    pub error: bool,
    /// Which of the topic's outputs the file is of (`0` unless the topic has several).
    pub output: u8,
}

impl BufferKey {
    /// The key as borrowed names.
    pub fn borrowed(&self) -> BufferKeyRef<'_> {
        BufferKeyRef {
            topic: self.topic,
            partition: self.partition,
            prefix: self.prefix.as_ref(),
            date: &self.date,
            error: self.error,
            output: self.output,
        }
    }
}

impl std::hash::Hash for BufferKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        // As the borrowed form hashes, so that either finds the other in a map.
        self.borrowed().hash(h)
    }
}

/// A [`BufferKey`] that borrows its names: what a message is filed under, looked up per
/// message without cloning. Cloning the route's names moved their reference counts several
/// times per message, on the line the routing thread's date cache moves too; on two cores those
/// contended atomic operations were most of the appending thread's own time per message.
#[derive(Debug, Clone, Copy)]
pub struct BufferKeyRef<'a> {
    pub topic: usize,
    pub partition: i32,
    pub prefix: Option<&'a Arc<str>>,
    pub date: &'a Arc<str>,
    pub error: bool,
    pub output: u8,
}

impl BufferKeyRef<'_> {
    /// The fields as plain values: what the hash and the equality with an owned key both read,
    /// so that the two cannot disagree.
    fn fields(&self) -> (usize, i32, Option<&str>, &str, bool, u8) {
        (self.topic, self.partition, self.prefix.map(|p| &**p), &**self.date, self.error, self.output)
    }
}

/// The owned key (clones the names: once per file opened).
impl From<&BufferKeyRef<'_>> for BufferKey {
    fn from(k: &BufferKeyRef<'_>) -> BufferKey {
        BufferKey { topic: k.topic, partition: k.partition, prefix: k.prefix.cloned(), date: k.date.clone(), error: k.error, output: k.output }
    }
}

impl std::hash::Hash for BufferKeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.fields().hash(h)
    }
}

impl hashbrown::Equivalent<BufferKey> for BufferKeyRef<'_> {
    fn equivalent(&self, k: &BufferKey) -> bool {
        self.fields() == k.borrowed().fields()
    }
}

/// How a file frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// One message per line (Secor's delimited text).
    #[default]
    Lines,
    /// A Hadoop SequenceFile, uncompressed while it fills (see [`crate::seqfile`]).
    SequenceFile,
}

/// Where a SequenceFile being filled stands.
#[derive(Debug)]
struct Sequence {
    sync: [u8; 16],
    /// Where the last sync marker (or the header) ends.
    last_sync: usize,
}

/// The contents of one file being filled: newline-delimited messages, or a SequenceFile.
#[derive(Debug)]
pub struct Buffer {
    pub data: Memory,
    pub first_offset: i64,
    pub last_offset: i64,
    pub events: u64,
    pub opened_at: Instant,
    /// Kafka record time of the first message (epoch ms): the oldest uncommitted message while
    /// the file is not committed, which the retention headroom gauge measures.
    pub first_record_ms: Option<i64>,
    sequence: Option<Sequence>,
    /// What sealing it will hold besides its bytes, by its length (a Parquet file's columns).
    seal_cost: SealCost,
}

/// Memory that sealing a buffer of `len` bytes holds besides the buffer itself.
pub type SealCost = fn(len: u64) -> u64;

/// Sealing holds nothing worth counting besides the buffer (gzip's output and a SequenceFile's
/// blocks are a fraction of it, within the budget's slack).
pub fn no_seal_cost(_len: u64) -> u64 {
    0
}

impl Buffer {
    /// A new empty buffer of lines whose first message will have `first_offset`.
    pub fn new(first_offset: i64, now: Instant) -> Buffer {
        Buffer::framed(first_offset, now, Framing::Lines)
    }

    /// A new empty buffer of `framing`; a SequenceFile starts with its header.
    pub fn framed(first_offset: i64, now: Instant, framing: Framing) -> Buffer {
        let mut data = Memory::new();
        let sequence = match framing {
            Framing::Lines => None,
            Framing::SequenceFile => {
                let sync = crate::seqfile::sync_for(first_offset);
                data.extend_from_slice(&crate::seqfile::header(&sync, None));
                Some(Sequence { sync, last_sync: 0 })
            }
        };
        Buffer { data, first_offset, last_offset: first_offset, events: 0, opened_at: now, first_record_ms: None, sequence, seal_cost: no_seal_cost }
    }

    /// The same buffer, charged from its first byte for what sealing it will hold besides it:
    /// a seal then moves its charge to the uploads without raising the budget's total, so
    /// sealing for memory never makes the writer hold more than the budget.
    pub fn sealed_at_cost(mut self, seal_cost: SealCost) -> Buffer {
        self.seal_cost = seal_cost;
        self
    }

    /// Appends one message and its `\n`. Returns true if the value held raw `\n`/`\r` bytes,
    /// which are written as spaces so every message stays exactly one line. In valid JSON those
    /// bytes can only be insignificant whitespace (strings must escape them), so the parsed
    /// value is unchanged.
    #[cfg(test)]
    pub fn append(&mut self, offset: i64, payload: &[u8]) -> bool {
        self.append_checked(offset, payload, None)
    }

    /// Appends one message as `append` does, when whether `payload` holds `\n`/`\r` may
    /// already be known (the router finds out while validating JSON); `None` searches for them.
    pub fn append_checked(&mut self, offset: i64, payload: &[u8], line_breaks: Option<bool>) -> bool {
        self.last_offset = offset;
        self.events += 1;
        if let Some(seq) = &mut self.sequence {
            // Binary-safe: the value is kept as it is, framed by its length. A sync marker every
            // SYNC_INTERVAL bytes, as Hadoop's writer puts them, lets readers split the file.
            let data = &mut self.data;
            if data.len() >= seq.last_sync + crate::seqfile::SYNC_INTERVAL {
                crate::seqfile::sync_bytes(&seq.sync, |b| data.extend_from_slice(b));
                seq.last_sync = data.len();
            }
            crate::seqfile::record_bytes(offset, payload, |b| data.extend_from_slice(b));
            return false;
        }
        let had_newline = line_breaks.unwrap_or_else(|| memchr::memchr2(b'\n', b'\r', payload).is_some());
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        if had_newline {
            for b in self.data.tail_mut(start) {
                if *b == b'\n' || *b == b'\r' {
                    *b = b' ';
                }
            }
        }
        self.data.push(b'\n');
        had_newline
    }

    /// Bytes held (uncompressed).
    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Memory held, which the memory budget counts: a little more than `len` (see [`Memory`]),
    /// plus what sealing it will hold (see [`Buffer::sealed_at_cost`]).
    pub fn charged(&self) -> u64 {
        self.data.charged() + self.sealing_bytes()
    }

    /// What sealing it will hold besides its bytes.
    pub fn sealing_bytes(&self) -> u64 {
        (self.seal_cost)(self.len())
    }

    /// True if nothing was appended.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }
}

/// Why a buffer was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealReason {
    Size,
    Age,
    /// Sealed early to stay within the memory budget.
    Memory,
    Revoke,
    Shutdown,
    /// The partition passed the file's date: sealed so the date's marker need not wait for
    /// the file's age.
    DatePassed,
    /// Its range began inside files being recorded while the commit record passed half its
    /// limit: sealed and recorded first, so that it never waits for room (the writer's
    /// `next_intents`).
    Record,
    /// A `--until-caught-up` run reached its ends: its files would only be sealed at the exit,
    /// holding the commits back while the run writes its markers.
    CaughtUp,
}

impl SealReason {
    /// A short label for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            SealReason::Size => "size",
            SealReason::Age => "age",
            SealReason::Memory => "memory",
            SealReason::Revoke => "revoke",
            SealReason::Shutdown => "shutdown",
            SealReason::DatePassed => "date_passed",
            SealReason::Record => "record",
            SealReason::CaughtUp => "caught_up",
        }
    }
}

/// When a buffer is due: Secor's `max.file.size.bytes` / `max.file.age.seconds`.
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    pub max_bytes: u64,
    pub max_age: Duration,
}

impl RotationPolicy {
    /// The reason to seal `buf` now, if any. Age counts from the first message, so an idle
    /// partition's buffer is sealed by the timer, not by the next message.
    pub fn due(&self, buf: &Buffer, now: Instant) -> Option<SealReason> {
        if buf.len() >= self.max_bytes {
            Some(SealReason::Size)
        } else if now.saturating_duration_since(buf.opened_at) >= self.max_age {
            Some(SealReason::Age)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_key_finds_exactly_its_owned_key() {
        let key = |prefix: Option<&str>, date: &str, error: bool, output: u8| BufferKey {
            topic: 1,
            partition: 3,
            prefix: prefix.map(Arc::from),
            date: Arc::from(date),
            error,
            output,
        };
        let keys = [
            key(None, "2020-01-31", false, 0),
            key(Some("logs"), "2020-01-31", false, 0),
            key(Some(""), "2020-01-31", false, 0),
            key(None, "2020-02-01", false, 0),
            key(None, "2020-01-31", true, 0),
            key(None, "2020-01-31", false, 1),
            BufferKey { partition: 4, ..key(None, "2020-01-31", false, 0) },
            BufferKey { topic: 0, ..key(None, "2020-01-31", false, 0) },
        ];
        let mut map: hashbrown::HashMap<BufferKey, usize, rustc_hash::FxBuildHasher> = Default::default();
        for (i, k) in keys.iter().enumerate() {
            map.insert(k.clone(), i);
        }
        for (i, k) in keys.iter().enumerate() {
            // Names equal by text, not by pointer, as a route's names are.
            let (prefix, date) = (k.prefix.as_deref().map(Arc::<str>::from), Arc::<str>::from(&*k.date));
            let probe = BufferKeyRef { prefix: prefix.as_ref(), date: &date, ..k.borrowed() };
            assert_eq!(map.get(&probe), Some(&i), "{k:?}");
            assert_eq!(BufferKey::from(&probe), *k);
            let mut entry_found = false;
            map.entry_ref(&probe).and_modify(|_| entry_found = true);
            assert!(entry_found, "{k:?}");
        }
        let absent = key(Some("other"), "2020-01-31", false, 0);
        assert_eq!(map.get(&absent.borrowed()), None);
    }

    #[test]
    fn a_buffer_is_charged_what_sealing_it_will_hold_from_its_first_byte() {
        let mut plain = Buffer::new(0, Instant::now());
        let mut columnar = Buffer::new(0, Instant::now()).sealed_at_cost(crate::columnar::working_set);
        for off in 0..1000 {
            let line = vec![b'x'; 700 + off as usize % 300];
            plain.append(off, &line);
            columnar.append(off, &line);
            assert_eq!(plain.sealing_bytes(), 0);
            assert_eq!(columnar.sealing_bytes(), crate::columnar::working_set(columnar.len()));
            assert_eq!(columnar.charged(), plain.charged() + columnar.sealing_bytes());
        }
    }

    #[test]
    fn append_writes_value_and_newline() {
        let now = Instant::now();
        let mut b = Buffer::new(10, now);
        assert!(b.is_empty());
        assert!(!b.append(10, br#"{"a":1}"#));
        assert!(!b.append(12, b""));
        assert_eq!(b.data.as_slice(), b"{\"a\":1}\n\n");
        assert_eq!((b.first_offset, b.last_offset, b.events), (10, 12, 2));
    }

    #[test]
    fn large_buffers_keep_every_byte() {
        let mut b = Buffer::new(0, Instant::now());
        let mut want = Vec::new();
        for i in 0..20_000u32 {
            let line: Vec<u8> = (0..(i % 700) as usize).map(|j| b'a' + ((i as usize * 31 + j) % 26) as u8).collect();
            b.append(i as i64, &line);
            want.extend_from_slice(&line);
            want.push(b'\n');
        }
        assert_eq!(b.len() as usize, want.len());
        assert!(b.data.as_slice() == want, "contents differ");
    }

    #[test]
    fn embedded_newlines_become_spaces_and_json_stays_equal() {
        let mut b = Buffer::new(0, Instant::now());
        let pretty = b"{\r\n  \"a\": [1,\n 2]\n}";
        assert!(b.append(0, pretty));
        assert_eq!(b.data.as_slice().iter().filter(|&&c| c == b'\n').count(), 1, "one line per message");
        let line = &b.data.as_slice()[..b.data.len() - 1];
        let orig: serde_json::Value = serde_json::from_slice(pretty).unwrap();
        let back: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(orig, back);
    }

    /// A SequenceFile buffer holds the file as Hadoop's writer would write it uncompressed:
    /// values kept byte for byte (newlines too), keyed by their offsets.
    #[test]
    fn sequence_file_buffers_frame_values_by_length() {
        let mut b = Buffer::framed(7, Instant::now(), Framing::SequenceFile);
        assert!(b.is_empty());
        let values: Vec<Vec<u8>> = (0..500).map(|i| format!("{{\"a\":\n{i}}}\r").into_bytes()).collect();
        for (i, v) in values.iter().enumerate() {
            assert!(!b.append(7 + i as i64, v), "no newline is replaced");
        }
        let back: Vec<crate::seqfile::Record> = crate::seqfile::Reader::new(b.data.as_slice()).unwrap().collect::<std::io::Result<_>>().unwrap();
        assert_eq!(back.len(), 500);
        for (i, r) in back.iter().enumerate() {
            assert_eq!((r.offset, &r.value), (Some(7 + i as i64), &values[i]));
        }
        assert_eq!((b.first_offset, b.last_offset, b.events), (7, 506, 500));
    }

    #[test]
    fn rotation_by_size_and_age() {
        let t0 = Instant::now();
        let p = RotationPolicy { max_bytes: 10, max_age: Duration::from_secs(60) };
        let mut b = Buffer::new(0, t0);
        b.append(0, b"12345");
        assert_eq!(p.due(&b, t0), None);
        assert_eq!(p.due(&b, t0 + Duration::from_secs(59)), None);
        assert_eq!(p.due(&b, t0 + Duration::from_secs(60)), Some(SealReason::Age));
        b.append(1, b"1234");
        assert_eq!(p.due(&b, t0), Some(SealReason::Size), "5+1+4+1 bytes >= 10");
    }
}
