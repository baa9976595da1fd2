//! The record envelope (`format = "record"`): one JSON object per Kafka record, holding what
//! Secor's value-only lines drop — partition, offset, timestamp, key and headers — so that a
//! replay can restore a topic record for record.
//!
//! One line per record, fields always in this order (schema version 1, `docs/record-format.md`):
//!
//! ```text
//! {"v":1,"partition":3,"offset":42,"timestamp":1700000000000,"timestamp_type":"create",
//!  "key":"did-1","headers":[["trace","abc"]],"value":{"eid":"START",...}}
//! ```
//!
//! - `key` and each header value: `null` (absent), a string (valid UTF-8), or
//!   `{"base64":"..."}` (any other bytes).
//! - `value`: the value itself, embedded, when it is valid JSON that survives embedding byte
//!   for byte (no raw line break, no surrounding whitespace, no byte order mark, not the bare
//!   literal `null`); otherwise `"value_encoding":"string"` (UTF-8 text as a JSON string) or
//!   `"value_encoding":"base64"` comes before it. `null` is a tombstone.
//!
//! Encoding is deterministic: the same record always gives the same bytes, which both the
//! writer's recovery (rebuilding a file under its recorded name) and `verify` rely on.

use base64::Engine;
use serde::Deserialize;

/// The schema version written in `v`.
pub const VERSION: u32 = 1;

/// How Kafka set a record's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampKind {
    /// Set by the producer (`CreateTime`).
    Create,
    /// Set by the broker (`LogAppendTime`).
    LogAppend,
}

impl TimestampKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampKind::Create => "create",
            TimestampKind::LogAppend => "log_append",
        }
    }

    /// The kind [`TimestampKind::as_str`] names.
    pub fn from_name(name: &str) -> Option<TimestampKind> {
        [TimestampKind::Create, TimestampKind::LogAppend].into_iter().find(|k| k.as_str() == name)
    }
}

/// The parts of one record, borrowed from the consumer's message (or from a value-only line).
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordView<'a> {
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub timestamp: Option<(i64, TimestampKind)>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The value is known to be valid JSON (the router validated it); whether it can be
    /// embedded as is is still decided here.
    pub value_is_json: bool,
}

/// Appends the record's line (without `\n`) to `out`. `headers` in the record's order.
pub fn encode<'h>(out: &mut Vec<u8>, r: &RecordView<'_>, headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>) {
    use std::io::Write;
    out.extend_from_slice(b"{\"v\":1,\"partition\":");
    number(out, r.partition.map(i64::from));
    out.extend_from_slice(b",\"offset\":");
    number(out, r.offset);
    out.extend_from_slice(b",\"timestamp\":");
    number(out, r.timestamp.map(|t| t.0));
    out.extend_from_slice(b",\"timestamp_type\":");
    match r.timestamp {
        Some((_, k)) => {
            let _ = write!(out, "\"{}\"", k.as_str());
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"key\":");
    blob(out, r.key);
    out.extend_from_slice(b",\"headers\":[");
    for (i, (name, value)) in headers.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        string(out, name);
        out.push(b',');
        blob(out, value);
        out.push(b']');
    }
    out.push(b']');
    match r.value {
        None => out.extend_from_slice(b",\"value\":null"),
        Some(v) if r.value_is_json && embeddable(v) => {
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(v);
        }
        Some(v) => match std::str::from_utf8(v) {
            Ok(text) => {
                out.extend_from_slice(b",\"value_encoding\":\"string\",\"value\":");
                string(out, text);
            }
            Err(_) => {
                out.extend_from_slice(b",\"value_encoding\":\"base64\",\"value\":\"");
                base64_into(out, v);
                out.push(b'"');
            }
        },
    }
    out.push(b'}');
}

/// Whether valid JSON reads back from the envelope as exactly these bytes.
fn embeddable(v: &[u8]) -> bool {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    !v.is_empty()
        && !v.first().is_some_and(ws)
        && !v.last().is_some_and(ws)
        && !v.starts_with("\u{feff}".as_bytes())
        && v != b"null"
        && memchr::memchr2(b'\n', b'\r', v).is_none()
}

fn number(out: &mut Vec<u8>, n: Option<i64>) {
    match n {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// A key or header value: null, a string, or `{"base64":"..."}`.
fn blob(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b.map(|b| (b, std::str::from_utf8(b))) {
        None => out.extend_from_slice(b"null"),
        Some((_, Ok(text))) => string(out, text),
        Some((bytes, Err(_))) => {
            out.extend_from_slice(b"{\"base64\":\"");
            base64_into(out, bytes);
            out.extend_from_slice(b"\"}");
        }
    }
}

fn base64_into(out: &mut Vec<u8>, b: &[u8]) {
    let start = out.len();
    out.resize(start + base64::encoded_len(b.len(), true).expect("a Kafka record fits in memory"), 0);
    let n = base64::engine::general_purpose::STANDARD.encode_slice(b, &mut out[start..]).expect("sized by encoded_len");
    out.truncate(start + n);
}

/// A JSON string literal; `s` is UTF-8, so only quotes, backslashes and control characters
/// need escaping.
fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let b = s.as_bytes();
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        if esc.is_empty() {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        } else {
            out.extend_from_slice(esc);
        }
        run = i + 1;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

/// A value as `format = "value"` stores it: raw line breaks written as spaces (a tombstone or
/// an empty value gives an empty line). Parquet files are read back by the same rule.
pub fn value_line(value: Option<&[u8]>) -> Vec<u8> {
    let mut v = value.unwrap_or_default().to_vec();
    for b in v.iter_mut().filter(|b| **b == b'\n' || **b == b'\r') {
        *b = b' ';
    }
    v
}

/// One record read back from a record file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub timestamp: Option<(i64, TimestampKind)>,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// `None`: a tombstone.
    pub value: Option<Vec<u8>>,
}

/// A line that is not a record of a version this build reads.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a kbackup record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("record format version {0} is newer than this kbackup reads ({VERSION}); upgrade kbackup")]
    Version(u32),
    #[error("not a kbackup record: {0}")]
    Field(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireBlob {
    Text(String),
    Binary { base64: String },
}

#[derive(Deserialize)]
struct Wire<'a> {
    v: u32,
    partition: Option<i32>,
    offset: Option<i64>,
    timestamp: Option<i64>,
    timestamp_type: Option<String>,
    key: Option<WireBlob>,
    #[serde(default)]
    headers: Vec<(String, Option<WireBlob>)>,
    value_encoding: Option<String>,
    #[serde(borrow)]
    value: Option<&'a serde_json::value::RawValue>,
}

fn unblob(b: WireBlob) -> Result<Vec<u8>, RecordError> {
    match b {
        WireBlob::Text(s) => Ok(s.into_bytes()),
        WireBlob::Binary { base64 } => unbase64(&base64),
    }
}

fn unbase64(s: &str) -> Result<Vec<u8>, RecordError> {
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| RecordError::Field(format!("bad base64: {e}")))
}

/// Reads one line of a record file (without its `\n`).
pub fn decode(line: &[u8]) -> Result<Record, RecordError> {
    let w: Wire<'_> = serde_json::from_slice(line)?;
    if w.v != VERSION {
        return Err(RecordError::Version(w.v));
    }
    let timestamp = match (w.timestamp, w.timestamp_type.as_deref()) {
        (None, _) => None,
        (Some(t), None) => Some((t, TimestampKind::Create)),
        (Some(t), Some(name)) => match TimestampKind::from_name(name) {
            Some(kind) => Some((t, kind)),
            None => return Err(RecordError::Field(format!("unknown timestamp_type `{name}`"))),
        },
    };
    let value = match (w.value, w.value_encoding.as_deref()) {
        (None, _) => None,
        (Some(raw), None | Some("json")) => Some(raw.get().as_bytes().to_vec()),
        (Some(raw), Some(enc @ ("string" | "base64"))) => {
            let s: String = serde_json::from_str(raw.get()).map_err(|_| RecordError::Field(format!("value_encoding {enc} needs a string value")))?;
            Some(if enc == "string" { s.into_bytes() } else { unbase64(&s)? })
        }
        (Some(_), Some(other)) => return Err(RecordError::Field(format!("unknown value_encoding `{other}`"))),
    };
    Ok(Record {
        partition: w.partition,
        offset: w.offset,
        timestamp,
        key: w.key.map(unblob).transpose()?,
        headers: w.headers.into_iter().map(|(k, v)| Ok((k, v.map(unblob).transpose()?))).collect::<Result<_, RecordError>>()?,
        value,
    })
}

impl Record {
    /// The value as `format = "value"` stores it: raw line breaks written as spaces (a
    /// tombstone or an empty value gives an empty line).
    pub fn value_line(&self) -> Vec<u8> {
        value_line(self.value.as_deref())
    }

    /// Encodes it again (the inverse of [`decode`]; a record file in Parquet is read back as
    /// these lines).
    pub fn encode(&self, out: &mut Vec<u8>) {
        // The writer's own rule (the router's validator), so a re-encoded record is byte for byte
        // what the writer stored.
        let value_is_json = self.value.as_deref().is_some_and(|v| std::str::from_utf8(v).is_ok_and(crate::routing::is_json));
        let view = RecordView {
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            value_is_json,
        };
        encode(out, &view, self.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: &RecordView<'_>, headers: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, r, headers.iter().copied());
        out
    }

    fn json_ok(v: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(v).is_ok()
    }

    #[test]
    fn a_json_value_is_embedded_and_the_line_is_json() {
        let v = br#"{"eid":"START","context":{"did":"d1"}}"#;
        let r = RecordView {
            partition: Some(3),
            offset: Some(42),
            timestamp: Some((1_700_000_000_000, TimestampKind::Create)),
            key: Some(b"d1"),
            value: Some(v),
            value_is_json: true,
        };
        let l = line(&r, &[("trace", Some(b"abc")), ("empty", None)]);
        assert_eq!(
            String::from_utf8(l.clone()).unwrap(),
            r#"{"v":1,"partition":3,"offset":42,"timestamp":1700000000000,"timestamp_type":"create","key":"d1","headers":[["trace","abc"],["empty",null]],"value":{"eid":"START","context":{"did":"d1"}}}"#
        );
        let parsed: serde_json::Value = serde_json::from_slice(&l).unwrap();
        assert_eq!(parsed["value"]["context"]["did"], "d1", "readers can query the value in place");
        let back = decode(&l).unwrap();
        assert_eq!(back.value.as_deref(), Some(&v[..]));
        assert_eq!(back.key.as_deref(), Some(&b"d1"[..]));
        assert_eq!(back.headers, vec![("trace".to_string(), Some(b"abc".to_vec())), ("empty".to_string(), None)]);
        assert_eq!(back.timestamp, Some((1_700_000_000_000, TimestampKind::Create)));
        assert_eq!((back.partition, back.offset), (Some(3), Some(42)));
    }

    /// Every kind of value and key reads back byte for byte, and every line is one JSON line.
    #[test]
    fn every_value_round_trips_exactly() {
        let values: Vec<Option<Vec<u8>>> = vec![
            None,
            Some(b"".to_vec()),
            Some(b"null".to_vec()),
            Some(b"\"text\"".to_vec()),
            Some(b"plain text, not JSON".to_vec()),
            Some(b"{\"a\":\n1}".to_vec()),
            Some(b" {\"a\":1}".to_vec()),
            Some(b"{\"a\":1}\t".to_vec()),
            Some("\u{feff}{\"a\":1}".as_bytes().to_vec()),
            Some(b"{\"a\" : [1, 2.5e3, true, null, \"\\u00e9\"]}".to_vec()),
            Some(vec![0xff, 0x00, 0x80, b'\n']),
            Some("tab\there \"quoted\" back\\slash \u{1} é 😀".as_bytes().to_vec()),
            Some(b"12345".to_vec()),
        ];
        let keys: Vec<Option<Vec<u8>>> =
            vec![None, Some(b"".to_vec()), Some(b"d-1".to_vec()), Some(vec![0, 159, 146, 150]), Some(b"{\"base64\":\"x\"}".to_vec())];
        for v in &values {
            for k in &keys {
                let r = RecordView {
                    partition: Some(0),
                    offset: Some(7),
                    timestamp: Some((5, TimestampKind::LogAppend)),
                    key: k.as_deref(),
                    value: v.as_deref(),
                    value_is_json: v.as_deref().is_some_and(json_ok),
                };
                let bin: &[u8] = &[1, 2, 0xfe];
                let l = line(&r, &[("h", Some(bin)), ("h", Some(b"twice")), ("n", None)]);
                assert!(!l.contains(&b'\n') && !l.contains(&b'\r'), "one line: {}", String::from_utf8_lossy(&l));
                assert!(json_ok(&l), "valid JSON: {}", String::from_utf8_lossy(&l));
                let back = decode(&l).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&l)));
                assert_eq!(&back.value, v, "{}", String::from_utf8_lossy(&l));
                assert_eq!(&back.key, k);
                assert_eq!(back.headers.len(), 3);
                assert_eq!(back.headers[0].1.as_deref(), Some(bin));
                let mut again = Vec::new();
                back.encode(&mut again);
                assert_eq!(again, l, "deterministic: decode then encode gives the same line");
            }
        }
    }

    #[test]
    fn value_line_is_what_the_value_format_stores() {
        let r = Record { partition: None, offset: None, timestamp: None, key: None, headers: vec![], value: Some(b"{\"a\":\r\n1}".to_vec()) };
        assert_eq!(r.value_line(), b"{\"a\":  1}");
        let tomb = Record { value: None, ..r };
        assert_eq!(tomb.value_line(), b"");
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors() {
        assert!(matches!(decode(br#"{"v":2,"value":1}"#), Err(RecordError::Version(2))));
        assert!(matches!(decode(br#"{"mid":"x"}"#), Err(RecordError::Json(_))));
        assert!(decode(br#"{"v":1,"partition":0,"offset":1,"timestamp":null,"timestamp_type":null,"key":null,"headers":[],"value_encoding":"rot13","value":"x"}"#).is_err());
        assert!(decode(br#"{"v":1,"partition":0,"offset":1,"timestamp":null,"timestamp_type":null,"key":{"base64":"!!"},"headers":[],"value":1}"#)
            .is_err());
    }

    #[test]
    fn missing_parts_are_null() {
        let l = line(&RecordView { value: Some(b"{}"), value_is_json: true, ..Default::default() }, &[]);
        assert_eq!(l, br#"{"v":1,"partition":null,"offset":null,"timestamp":null,"timestamp_type":null,"key":null,"headers":[],"value":{}}"#);
        let back = decode(&l).unwrap();
        assert_eq!((back.partition, back.offset, back.timestamp), (None, None, None));
    }
}
