//! Open files in memory and the rotation policy that decides when to seal them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Identifies one open file: (topic, Kafka partition, prefix, date, error bucket).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BufferKey {
    /// Index of the topic in the config.
    pub topic: usize,
    pub partition: i32,
    pub prefix: Option<Arc<str>>,
    pub date: Arc<str>,
    /// True for the `error_path` bucket.
    pub error: bool,
}

/// The newline-delimited contents of one file being filled.
///
/// The bytes are kept as a list of pieces: ranges of chunks that a whole batch of messages was
/// copied into off the polling thread (see [`line_into`]), and bytes copied one message at a
/// time. Sealing turns them into the parts of one blob without another copy.
#[derive(Debug)]
pub struct Buffer {
    pieces: Vec<Piece>,
    len: u64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub events: u64,
    pub opened_at: Instant,
}

#[derive(Debug)]
enum Piece {
    Shared { chunk: Bytes, start: usize, end: usize },
    Copied(Vec<u8>),
}

/// Writes `payload` as one line into `out`: raw `\n`/`\r` bytes become spaces, so every message
/// stays exactly one line (in valid JSON those bytes can only be insignificant whitespace —
/// strings must escape them — so the parsed value is unchanged), then a `\n`. Whether the
/// payload holds such bytes may already be known (`line_breaks`); returns whether it did.
pub fn line_into(out: &mut Vec<u8>, payload: &[u8], line_breaks: Option<bool>) -> bool {
    let had_newline = line_breaks.unwrap_or_else(|| memchr::memchr2(b'\n', b'\r', payload).is_some());
    if had_newline {
        out.extend(payload.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
    } else {
        out.extend_from_slice(payload);
    }
    out.push(b'\n');
    had_newline
}

impl Buffer {
    /// A new empty buffer whose first message will have `first_offset`.
    pub fn new(first_offset: i64, now: Instant) -> Buffer {
        Buffer { pieces: Vec::new(), len: 0, first_offset, last_offset: first_offset, events: 0, opened_at: now }
    }

    /// Appends one message as a line (see [`line_into`]); returns true if it held raw
    /// `\n`/`\r` bytes.
    pub fn append(&mut self, offset: i64, payload: &[u8]) -> bool {
        self.append_checked(offset, payload, None)
    }

    /// [`Self::append`] when whether `payload` holds `\n`/`\r` may already be known (the
    /// router finds out while validating JSON); `None` searches for them.
    pub fn append_checked(&mut self, offset: i64, payload: &[u8], line_breaks: Option<bool>) -> bool {
        self.last_offset = offset;
        self.events += 1;
        if !matches!(self.pieces.last(), Some(Piece::Copied(_))) {
            self.pieces.push(Piece::Copied(Vec::new()));
        }
        let Some(Piece::Copied(out)) = self.pieces.last_mut() else { unreachable!("pushed above") };
        let before = out.len();
        let had_newline = line_into(out, payload, line_breaks);
        self.len += (out.len() - before) as u64;
        had_newline
    }

    /// Appends one message whose line is already written at `range` of `chunk`; consecutive
    /// ranges of one chunk are kept as one piece.
    pub fn append_line(&mut self, offset: i64, chunk: &Bytes, range: std::ops::Range<usize>) {
        self.last_offset = offset;
        self.events += 1;
        self.len += range.len() as u64;
        if let Some(Piece::Shared { chunk: c, end, .. }) = self.pieces.last_mut() {
            if c.as_ptr() == chunk.as_ptr() && *end == range.start {
                *end = range.end;
                return;
            }
        }
        self.pieces.push(Piece::Shared { chunk: chunk.clone(), start: range.start, end: range.end });
    }

    /// The file's contents as the parts of one blob (no copy of the lines).
    pub fn into_parts(self) -> Vec<Bytes> {
        self.pieces
            .into_iter()
            .map(|p| match p {
                Piece::Shared { chunk, start, end } => chunk.slice(start..end),
                Piece::Copied(v) => Bytes::from(v),
            })
            .collect()
    }

    /// Bytes held (uncompressed).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if nothing was appended.
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

    fn contents(b: Buffer) -> Vec<u8> {
        b.into_parts().concat()
    }

    #[test]
    fn shared_lines_and_copied_lines_keep_their_order() {
        let mut chunk = Vec::new();
        let mut ranges = Vec::new();
        for line in [&b"a"[..], b"b\nc", b"d"] {
            let start = chunk.len();
            line_into(&mut chunk, line, None);
            ranges.push(start..chunk.len());
        }
        let chunk = Bytes::from(chunk);
        let mut b = Buffer::new(0, Instant::now());
        b.append_line(0, &chunk, ranges[0].clone());
        b.append_line(1, &chunk, ranges[1].clone());
        b.append(2, b"x");
        b.append_line(3, &chunk, ranges[2].clone());
        assert_eq!((b.events, b.len(), b.last_offset), (4, 10, 3));
        // Contiguous ranges of one chunk are one piece: [a, b c], [x], [d].
        assert_eq!(b.pieces.len(), 3);
        assert_eq!(contents(b), b"a\nb c\nx\nd\n");
    }

    #[test]
    fn append_writes_value_and_newline() {
        let now = Instant::now();
        let mut b = Buffer::new(10, now);
        assert!(b.is_empty());
        assert!(!b.append(10, br#"{"a":1}"#));
        assert!(!b.append(12, b""));
        assert_eq!((b.first_offset, b.last_offset, b.events, b.len()), (10, 12, 2, 9));
        assert_eq!(contents(b), b"{\"a\":1}\n\n");
    }

    #[test]
    fn embedded_newlines_become_spaces_and_json_stays_equal() {
        let mut b = Buffer::new(0, Instant::now());
        let pretty = b"{\r\n  \"a\": [1,\n 2]\n}";
        assert!(b.append(0, pretty));
        let data = contents(b);
        assert_eq!(data.iter().filter(|&&c| c == b'\n').count(), 1, "one line per message");
        let line = &data[..data.len() - 1];
        let orig: serde_json::Value = serde_json::from_slice(pretty).unwrap();
        let back: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(orig, back);
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
