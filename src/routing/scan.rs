//! One pass over a message that validates it as JSON and picks out the values at a few paths.
//!
//! This is the writer's per-message parser, so it is written for speed: no tree, no serde
//! visitor, no allocation unless a wanted value has escapes, and strings (most of a telemetry
//! event) are skipped 16 bytes at a time. What it accepts is exactly what
//! `serde_json::from_str::<IgnoredAny>` accepts — RFC 8259 JSON, nested to any depth — which
//! the tests check on hundreds of thousands of generated and mutated documents. It recurses
//! only along the configured paths; everything else is skipped with an explicit stack, so a
//! deeply nested message cannot exhaust the thread's stack.

use std::borrow::Cow;

use crate::event_date::FieldValue;

/// Most paths one scan can look for (they are tracked as bits of a `u64`).
pub const MAX_PATHS: usize = 64;

/// Why a message is not JSON, and where the scan gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanError {
    /// Byte offset of the problem.
    pub at: usize,
    pub what: &'static str,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for ScanError {}

/// Validates `text` as JSON and stores the first value found at each path in `found`
/// (`paths[i]` is a list of object keys from the top; `found` must be as long as `paths`
/// and all `None`). With `stop_early`, returns as soon as every path is found, without
/// validating the rest.
///
/// Returns whether the message holds a raw `\n` or `\r` byte (in valid JSON only whitespace
/// can: strings must escape them), so the writer need not search for them again; meaningful
/// only when the whole message was scanned.
pub fn scan<'t>(text: &'t str, paths: &[Vec<String>], found: &mut [Option<FieldValue<'t>>], stop_early: bool) -> Result<bool, ScanError> {
    scan_bytes(text.as_bytes(), paths, found, stop_early)
}

/// [`scan`] over bytes not known to be UTF-8: the scan proves they are as it goes (JSON can
/// hold other than ASCII only inside strings, and each such run is validated where the string
/// scan meets it), so a message is read once, not once for UTF-8 and once for JSON. A message
/// that is not UTF-8 is an error here like one that is not JSON; a caller that must tell the
/// two apart checks UTF-8 on that rare path. With `stop_early`, what was not read is not
/// validated either.
pub fn scan_bytes<'t>(b: &'t [u8], paths: &[Vec<String>], found: &mut [Option<FieldValue<'t>>], stop_early: bool) -> Result<bool, ScanError> {
    assert!(paths.len() <= MAX_PATHS && found.len() == paths.len());
    let all = if paths.len() == MAX_PATHS { u64::MAX } else { (1u64 << paths.len()) - 1 };
    let mut s = Scanner { b, i: 0, paths, found, missing: all, stop_early, line_breaks: false, error: ScanError { at: 0, what: "" } };
    match s.value(all, 0) {
        Ok(()) => {}
        Err(Stop::AllFound) => return Ok(s.line_breaks),
        Err(Stop::Invalid) => return Err(s.error),
    }
    s.skip_ws();
    if s.i < s.b.len() {
        s.err("trailing characters");
        return Err(s.error);
    }
    Ok(s.line_breaks)
}

enum Stop {
    /// Every path was found and the caller asked to stop there.
    AllFound,
    /// Not JSON; the details are in `Scanner::error`.
    Invalid,
}

/// A failed step; what failed is recorded in `Scanner::error`. Zero-sized, so results stay in
/// registers on the hot path.
struct Fail;

impl From<Fail> for Stop {
    fn from(_: Fail) -> Stop {
        Stop::Invalid
    }
}

struct Scanner<'t, 'p> {
    b: &'t [u8],
    i: usize,
    paths: &'p [Vec<String>],
    found: &'p mut [Option<FieldValue<'t>>],
    /// Paths not found yet, as bits.
    missing: u64,
    stop_early: bool,
    /// A raw `\n` or `\r` was skipped as whitespace.
    line_breaks: bool,
    error: ScanError,
}

impl<'t> Scanner<'t, '_> {
    #[cold]
    fn err(&mut self, what: &'static str) -> Fail {
        self.error = ScanError { at: self.i, what };
        Fail
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        // Compact JSON has no whitespace between tokens: one compare settles the usual case.
        if self.b.get(self.i).is_some_and(|&c| c > b' ') {
            return;
        }
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b' ' | b'\t' => {}
                b'\n' | b'\r' => self.line_breaks = true,
                _ => break,
            }
            self.i += 1;
        }
    }

    /// One value. `active` are the paths that continue into it, at key index `depth`.
    fn value(&mut self, active: u64, depth: usize) -> Result<(), Stop> {
        self.skip_ws();
        if active & self.missing != 0 && self.b.get(self.i) == Some(&b'{') {
            self.object(active, depth)
        } else {
            Ok(self.skip_value()?)
        }
    }

    /// An object some wanted paths run through (recursion is as deep as the longest path).
    fn object(&mut self, active: u64, depth: usize) -> Result<(), Stop> {
        self.i += 1;
        self.skip_ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            let (start, end, escaped) = self.key()?;
            let wanted = active & self.missing;
            let (mut leaf, mut next) = (0u64, 0u64);
            if wanted != 0 {
                // Compared as bytes: a key without escapes is its own text (already proven
                // UTF-8), and most keys of a message are compared with no wanted name.
                let decoded = if escaped { self.string_value(start, end, true) } else { None };
                // An escaped key that does not decode (a lone surrogate) is no configured name.
                let key: Option<&[u8]> = if escaped { decoded.as_deref().map(str::as_bytes) } else { Some(&self.b[start..end]) };
                let mut bits = wanted;
                while bits != 0 {
                    let p = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if key == Some(self.paths[p][depth].as_bytes()) {
                        if self.paths[p].len() == depth + 1 {
                            leaf |= 1 << p;
                        } else {
                            next |= 1 << p;
                        }
                    }
                }
            }
            // A key that ends one path is read as a scalar, even if a longer path also runs
            // through it (configuring both `a` and `a.b` is not useful).
            if leaf != 0 {
                let v = self.scalar()?;
                let mut bits = leaf;
                while bits != 0 {
                    let p = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    self.found[p] = Some(v.clone());
                }
                self.missing &= !leaf;
                if self.stop_early && self.missing == 0 {
                    return Err(Stop::AllFound);
                }
            } else if next & self.missing == 0 {
                // Off every wanted path. Most such values are strings: read inline, without
                // the call and the container stack of a skip.
                self.skip_ws();
                if self.b.get(self.i) == Some(&b'"') {
                    self.i += 1;
                    self.string()?;
                } else {
                    self.skip_value()?;
                }
            } else {
                self.value(next, depth + 1)?;
            }
            self.skip_ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or '}'").into()),
            }
        }
    }

    /// An object key and its colon: `(start, end, has_escapes)` of the key's text.
    #[inline(always)]
    fn key(&mut self) -> Result<(usize, usize, bool), Fail> {
        if self.b.get(self.i) != Some(&b'"') {
            return Err(self.err("expected a key"));
        }
        self.i += 1;
        let key = self.string()?;
        // Compact JSON: the colon follows at once, and one compare settles it.
        if self.b.get(self.i) != Some(&b':') {
            self.skip_ws();
            if self.b.get(self.i) != Some(&b':') {
                return Err(self.err("expected ':'"));
            }
        }
        self.i += 1;
        Ok(key)
    }

    /// Validates one value of any shape without looking inside; containers are tracked on an
    /// explicit stack (true = object), so nesting depth costs heap, not thread stack.
    fn skip_value(&mut self) -> Result<(), Fail> {
        let mut open = BitStack::default();
        loop {
            // A value (whitespace before it is one more arm of the match, not a test of its own).
            match self.b.get(self.i) {
                Some(b' ' | b'\t' | b'\n' | b'\r') => {
                    self.skip_ws();
                    continue;
                }
                Some(b'{') => {
                    self.i += 1;
                    self.skip_ws();
                    if self.b.get(self.i) == Some(&b'}') {
                        self.i += 1;
                    } else {
                        open.push(true);
                        self.key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    self.skip_ws();
                    if self.b.get(self.i) == Some(&b']') {
                        self.i += 1;
                    } else {
                        open.push(false);
                        continue;
                    }
                }
                Some(b'"') => {
                    self.i += 1;
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(_) => return Err(self.err("expected a value")),
                None => return Err(self.err("unexpected end")),
            }
            // After a value: close what ends here, or move on to the next member.
            loop {
                let Some(in_object) = open.top() else {
                    return Ok(());
                };
                match self.b.get(self.i) {
                    Some(b' ' | b'\t' | b'\n' | b'\r') => self.skip_ws(),
                    Some(b',') => {
                        self.i += 1;
                        if in_object {
                            self.skip_ws();
                            self.key()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {
                        self.i += 1;
                        open.pop();
                    }
                    Some(b']') if !in_object => {
                        self.i += 1;
                        open.pop();
                    }
                    _ => return Err(self.err(if in_object { "expected ',' or '}'" } else { "expected ',' or ']'" })),
                }
            }
        }
    }

    /// The rest of a string whose opening quote was consumed: `(start, end, has_escapes)` of
    /// its contents, with the closing quote consumed.
    #[inline(always)]
    fn string(&mut self) -> Result<(usize, usize, bool), Fail> {
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i = find_special(self.b, self.i);
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok((start, self.i - 1, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    self.i += 1;
                    match self.b.get(self.i) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(self.err("invalid \\u escape"));
                            }
                            self.i += 5;
                        }
                        Some(_) => return Err(self.err("invalid escape")),
                        None => return Err(self.err("unexpected end in a string")),
                    }
                }
                Some(&c) if c >= 0x80 => self.text_beyond_ascii()?,
                Some(_) => return Err(self.err("control character in a string")),
                None => return Err(self.err("unexpected end in a string")),
            }
        }
    }

    /// Text other than ASCII in a string: the run up to the next quote, backslash or control
    /// character is proven UTF-8 at once (no character spans one of those, whose bytes are
    /// ASCII, so a cut character fails here as it should). Out of line: telemetry is mostly
    /// ASCII, and the string scan, inlined everywhere, stays small.
    #[inline(never)]
    fn text_beyond_ascii(&mut self) -> Result<(), Fail> {
        let end = find_quote_or_escape(self.b, self.i);
        if std::str::from_utf8(&self.b[self.i..end]).is_err() {
            return Err(self.err("not UTF-8"));
        }
        self.i = end;
        Ok(())
    }

    /// The text of a string scanned by [`Self::string`]; `None` if an escape does not decode
    /// (a lone surrogate), which no configured key or usable time can contain.
    fn string_value(&self, start: usize, end: usize, escaped: bool) -> Option<Cow<'t, str>> {
        // The string scan proved these bytes UTF-8; converting a wanted value (a handful per
        // message, short) checks again rather than assume it.
        if !escaped {
            return std::str::from_utf8(&self.b[start..end]).ok().map(Cow::Borrowed);
        }
        serde_json::from_slice::<String>(&self.b[start - 1..=end]).ok().map(Cow::Owned)
    }

    /// A number; returns its text and whether it is an integer (no fraction, no exponent).
    #[inline(always)]
    fn number(&mut self) -> Result<(usize, bool), Fail> {
        let start = self.i;
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => {
                self.i += 1;
                // serde_json rejects leading zeros such as `01`.
                if self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                    return Err(self.err("leading zero in a number"));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        let mut integer = true;
        if self.b.get(self.i) == Some(&b'.') {
            integer = false;
            self.i += 1;
            if !self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            integer = false;
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        Ok((start, integer))
    }

    #[inline(always)]
    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Result<(), Fail> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    /// A wanted value: strings and numbers are kept, anything else is validated and skipped.
    fn scalar(&mut self) -> Result<FieldValue<'t>, Stop> {
        self.skip_ws();
        match self.b.get(self.i) {
            Some(b'"') => {
                self.i += 1;
                let (start, end, escaped) = self.string()?;
                Ok(self.string_value(start, end, escaped).map_or(FieldValue::Other, FieldValue::Str))
            }
            Some(b'-' | b'0'..=b'9') => {
                let (start, integer) = self.number()?;
                // A number's bytes are ASCII, which the scan checked digit by digit.
                let Ok(text) = std::str::from_utf8(&self.b[start..self.i]) else { return Err(self.err("not UTF-8").into()) };
                Ok(number_value(text, integer))
            }
            _ => {
                self.skip_value()?;
                Ok(FieldValue::Other)
            }
        }
    }
}

/// The kinds of the open containers (true = object): 64 levels in a register (a `u128`'s
/// shifts cost several instructions each, a `u64`'s one), deeper ones on the heap.
#[derive(Default)]
struct BitStack {
    bits: u64,
    len: usize,
    deeper: Vec<bool>,
}

impl BitStack {
    #[inline(always)]
    fn push(&mut self, v: bool) {
        if self.len < 64 {
            self.bits = (self.bits & !(1 << self.len)) | ((v as u64) << self.len);
        } else {
            self.deeper.push(v);
        }
        self.len += 1;
    }

    #[inline(always)]
    fn top(&self) -> Option<bool> {
        match self.len {
            0 => None,
            n if n <= 64 => Some(self.bits >> (n - 1) & 1 == 1),
            _ => self.deeper.last().copied(),
        }
    }

    #[inline(always)]
    fn pop(&mut self) {
        if self.len > 64 {
            self.deeper.pop();
        }
        self.len -= 1;
    }
}

/// The value of a valid JSON number, as serde_json reads it: integers that fit an `i64` are
/// exact, everything else is an `f64` (infinite if out of range).
fn number_value(text: &str, integer: bool) -> FieldValue<'static> {
    if integer {
        match text.parse::<i64>() {
            // serde_json reads `-0` as the float -0.0.
            Ok(0) if text.starts_with('-') => return FieldValue::Float(-0.0),
            Ok(v) => return FieldValue::Int(v),
            Err(_) => {}
        }
    }
    FieldValue::Float(text.parse::<f64>().unwrap_or(f64::NAN))
}

/// Index of the first `"`, `\`, control character or byte of a character other than ASCII at
/// or after `i` (or `b.len()`).
#[inline]
fn find_special(b: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; every load reads 16 bytes inside `b`.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let ctrl_max = _mm_set1_epi8(0x1f);
            while i + 16 <= b.len() {
                let x = _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i);
                // x <= 0x1f (unsigned) exactly when max(x, 0x1f) == 0x1f.
                let ctrl = _mm_cmpeq_epi8(_mm_max_epu8(x, ctrl_max), ctrl_max);
                let hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)), ctrl);
                // Bytes of 0x80 and above have their top bit set, as the matches (0xff) have.
                let mask = _mm_movemask_epi8(_mm_or_si128(hit, x));
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
    }
    while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f | 0x80..) {
        i += 1;
    }
    i
}

/// Index of the first `"`, `\\` or control character at or after `i` (or `b.len()`): where a
/// run of text other than ASCII inside a string ends.
fn find_quote_or_escape(b: &[u8], i: usize) -> usize {
    b[i..].iter().position(|c| matches!(c, b'"' | b'\\' | 0..=0x1f)).map_or(b.len(), |n| i + n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde::de::IgnoredAny;

    fn valid(text: &str) -> bool {
        let paths: Vec<Vec<String>> = vec![vec!["a".into()], vec!["b".into(), "c".into()]];
        let mut found = vec![None; 2];
        scan(text, &paths, &mut found, false).is_ok()
    }

    fn reference(text: &str) -> bool {
        serde_json::from_str::<IgnoredAny>(text).is_ok()
    }

    #[test]
    fn accepts_and_rejects_like_serde_json_on_edge_cases() {
        let cases = [
            "{}",
            "[]",
            "0",
            "-0",
            "1.5e+10",
            "1E-2",
            "\"\"",
            "true",
            "false",
            "null",
            " {} ",
            "\t[\n]\r",
            r#"{"a":[1,{"b":[]},"x\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00"]}"#,
            r#""\ud800""#,
            "1e400",
            "-1e-400",
            "18446744073709551616",
            "{\"a\":1,\"a\":2}",
            // Invalid:
            "",
            " ",
            "{",
            "}",
            "[",
            "]",
            "{,}",
            "[,]",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{\"a\" 1}",
            "{a:1}",
            "{'a':1}",
            "01",
            "-",
            "-01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "0x10",
            "NaN",
            "Infinity",
            "tru",
            "nul",
            "truex",
            "nulll",
            "\"abc",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12G4\"",
            "\"a\u{1}b\"",
            "\"tab\there\"",
            "{} {}",
            "[] x",
            "\"a\"\"b\"",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            "\u{feff}{}",
            "{\"a\":-}",
            "[-]",
            "[1.e5]",
        ];
        for c in cases {
            assert_eq!(valid(c), reference(c), "{c:?}");
        }
    }

    #[test]
    fn any_nesting_depth_is_valid_like_serde_json() {
        for depth in [1, 63, 64, 65, 100, 127, 128, 129, 500, 100_000] {
            let arr = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(valid(&arr), reference(&arr), "arrays {depth}");
            let obj = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            assert_eq!(valid(&obj), reference(&obj), "objects {depth}");
            assert!(valid(&arr) && valid(&obj), "{depth}");
            let unclosed = format!("{}{}", "[{\"a\":".repeat(depth), "]".repeat(depth));
            assert!(!valid(&unclosed) && !reference(&unclosed), "mismatched {depth}");
        }
    }

    /// A random JSON document from a small grammar biased towards the tricky parts.
    fn gen_value(r: &mut StdRng, depth: u32, out: &mut String) {
        gen_value_keys(r, depth, out, false)
    }

    /// With `unique_keys`, no object repeats a key (after unescaping).
    fn gen_value_keys(r: &mut StdRng, depth: u32, out: &mut String, unique_keys: bool) {
        let pick = if depth > 6 { r.random_range(0..6) } else { r.random_range(0..8) };
        match pick {
            0 => out.push_str(["true", "false", "null"][r.random_range(0..3)]),
            1 | 2 => {
                let n = [
                    "0",
                    "-0",
                    "7",
                    "-12",
                    "1580495403199",
                    "9223372036854775807",
                    "9223372036854775808",
                    "-9223372036854775809",
                    "18446744073709551616",
                    "1.5",
                    "-0.25e3",
                    "6.02E23",
                    "1e-7",
                    "3E+2",
                    "1e400",
                ];
                out.push_str(n[r.random_range(0..n.len())]);
            }
            3..=5 => gen_string(r, out),
            6 => {
                out.push('[');
                for k in 0..r.random_range(0..4) {
                    if k > 0 {
                        out.push(',');
                    }
                    gen_ws(r, out);
                    gen_value_keys(r, depth + 1, out, unique_keys);
                    gen_ws(r, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                let mut keys = std::collections::HashSet::new();
                for k in 0..r.random_range(0..5) {
                    let mut key = String::new();
                    if r.random_bool(0.5) {
                        key = format!("\"{}\"", ["a", "b", "c", "syncts", "did"][r.random_range(0..5)]);
                    } else {
                        gen_string(r, &mut key);
                    }
                    if unique_keys && !keys.insert(serde_json::from_str::<String>(&key).unwrap()) {
                        continue;
                    }
                    if k > 0 && !out.ends_with('{') {
                        out.push(',');
                    }
                    gen_ws(r, out);
                    out.push_str(&key);
                    gen_ws(r, out);
                    out.push(':');
                    gen_ws(r, out);
                    gen_value_keys(r, depth + 1, out, unique_keys);
                }
                out.push('}');
            }
        }
    }

    fn gen_ws(r: &mut StdRng, out: &mut String) {
        if r.random_bool(0.2) {
            out.push([' ', '\t', '\n', '\r'][r.random_range(0..4)]);
        }
    }

    fn gen_string(r: &mut StdRng, out: &mut String) {
        let parts = [
            "a",
            "b",
            "c",
            "syncts",
            "did",
            "x",
            "é",
            "日本",
            "😀",
            "\\\"",
            "\\\\",
            "\\/",
            "\\n",
            "\\u0041",
            "\\u00e9",
            "\\uD83D\\uDE00",
            "\\t",
            "0123456789abcdef",
            " ",
        ];
        out.push('"');
        for _ in 0..r.random_range(0..6) {
            out.push_str(parts[r.random_range(0..parts.len())]);
        }
        out.push('"');
    }

    /// A mutation that usually breaks a document, sometimes subtly.
    fn mutate(r: &mut StdRng, doc: &str) -> String {
        let mut b: Vec<char> = doc.chars().collect();
        let alphabet = ['{', '}', '[', ']', ',', ':', '"', '\\', 'u', '0', '1', '-', '.', 'e', '+', ' ', '\u{1}', '\n', 't', 'n', 'x', 'é'];
        for _ in 0..r.random_range(1..3) {
            let at = r.random_range(0..=b.len());
            match r.random_range(0..3) {
                0 if at < b.len() => {
                    b.remove(at);
                }
                1 if at < b.len() => b[at] = alphabet[r.random_range(0..alphabet.len())],
                _ => b.insert(at, alphabet[r.random_range(0..alphabet.len())]),
            }
        }
        b.into_iter().collect()
    }

    /// A mutation of the bytes, which may cut a character or put bytes that are not UTF-8
    /// (lone continuation bytes, overlong forms, surrogates, bytes never used) anywhere.
    fn mutate_bytes(r: &mut StdRng, doc: &[u8]) -> Vec<u8> {
        let mut b = doc.to_vec();
        let odd: [&[u8]; 8] = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff", b"\xe6\x97", b"\xf0\x9f\x98", b"\xc3\xa9"];
        for _ in 0..r.random_range(1..3) {
            let at = r.random_range(0..=b.len());
            match r.random_range(0..3) {
                0 if at < b.len() => {
                    b.remove(at);
                }
                1 if at < b.len() => b[at] = r.random(),
                _ => {
                    let ins = odd[r.random_range(0..odd.len())];
                    b.splice(at..at, ins.iter().copied());
                }
            }
        }
        b
    }

    #[test]
    fn bytes_are_accepted_exactly_when_they_are_utf8_and_json() {
        let mut r = StdRng::seed_from_u64(20261205);
        let paths: Vec<Vec<String>> = vec![vec!["a".into()], vec!["b".into(), "c".into()]];
        let (mut not_utf8, mut valid_seen) = (0, 0);
        for _ in 0..100_000 {
            let mut doc = String::new();
            gen_value(&mut r, 0, &mut doc);
            for d in [doc.as_bytes().to_vec(), mutate_bytes(&mut r, doc.as_bytes())] {
                let want = std::str::from_utf8(&d).is_ok_and(reference);
                let mut found = vec![None; 2];
                assert_eq!(scan_bytes(&d, &paths, &mut found, false).is_ok(), want, "{d:?}");
                not_utf8 += usize::from(std::str::from_utf8(&d).is_err());
                valid_seen += usize::from(want);
            }
        }
        assert!(not_utf8 > 10_000 && valid_seen > 50_000, "{not_utf8} not UTF-8, {valid_seen} valid");
        // Long runs of text other than ASCII, cut anywhere.
        let long = format!("{{\"a\":\"{}\"}}", "日本語のテキスト😀é".repeat(40));
        for cut in 0..long.len() {
            let mut d = long.as_bytes().to_vec();
            d.remove(cut);
            let want = std::str::from_utf8(&d).is_ok_and(reference);
            let mut found = vec![None; 2];
            assert_eq!(scan_bytes(&d, &paths, &mut found, false).is_ok(), want, "cut at {cut}");
        }
    }

    #[test]
    fn agrees_with_serde_json_on_generated_and_mutated_documents() {
        let mut r = StdRng::seed_from_u64(20261125);
        let (mut valid_seen, mut invalid_seen) = (0, 0);
        for _ in 0..100_000 {
            let mut doc = String::new();
            gen_value(&mut r, 0, &mut doc);
            let docs = [doc.clone(), mutate(&mut r, &doc), doc.chars().take(doc.chars().count() / 2).collect()];
            for d in &docs {
                let want = reference(d);
                assert_eq!(valid(d), want, "{d:?}");
                if want {
                    valid_seen += 1;
                } else {
                    invalid_seen += 1;
                }
            }
        }
        // The generator must exercise both sides, or the comparison proves little.
        assert!(valid_seen > 100_000 && invalid_seen > 50_000, "{valid_seen} valid, {invalid_seen} invalid");
    }

    fn paths(ps: &[&str]) -> Vec<Vec<String>> {
        ps.iter().map(|p| p.split('.').map(String::from).collect()).collect()
    }

    fn find<'t>(text: &'t str, ps: &[&str]) -> Vec<Option<FieldValue<'t>>> {
        let p = paths(ps);
        let mut found = vec![None; p.len()];
        scan(text, &p, &mut found, false).unwrap();
        found
    }

    /// The value at a path by serde_json's tree, for documents without duplicate keys.
    fn by_tree(v: &serde_json::Value, path: &[String]) -> Option<FieldValue<'static>> {
        let mut cur = v;
        for k in path {
            cur = cur.as_object()?.get(k)?;
        }
        Some(match cur {
            serde_json::Value::String(s) => FieldValue::Str(Cow::Owned(s.clone())),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => FieldValue::Int(i),
                None => FieldValue::Float(n.as_f64().unwrap()),
            },
            _ => FieldValue::Other,
        })
    }

    #[test]
    fn finds_the_same_values_as_a_full_parse() {
        let mut r = StdRng::seed_from_u64(7);
        let ps = paths(&["a", "b", "a.b", "b.c", "c.a.b", "syncts", "did"]);
        let mut compared = 0;
        for _ in 0..200_000 {
            let mut doc = String::new();
            // Without duplicate keys: serde_json's map keeps the last, the scan the first.
            gen_value_keys(&mut r, 0, &mut doc, true);
            // 1e400 is valid JSON that serde_json's tree cannot hold.
            let Ok(tree) = serde_json::from_str::<serde_json::Value>(&doc) else {
                continue;
            };
            let mut found = vec![None; ps.len()];
            scan(&doc, &ps, &mut found, false).unwrap();
            for (i, p) in ps.iter().enumerate() {
                // A path through a key whose value is read as a leaf for a shorter path is not
                // descended into (see `object`); the tree lookup does not know that rule.
                if p.len() > 1 && ps.iter().any(|q| q.len() < p.len() && p.starts_with(q)) {
                    continue;
                }
                let want = by_tree(&tree, p);
                match (&found[i], &want) {
                    (Some(FieldValue::Float(a)), Some(FieldValue::Float(b))) => {
                        assert!(a == b || a.is_infinite(), "{doc}: {p:?}")
                    }
                    _ => assert_eq!(found[i], want, "{doc}: {p:?}"),
                }
                compared += want.is_some() as usize;
            }
        }
        assert!(compared > 5_000, "only {compared} values compared");
    }

    #[test]
    fn reads_values_like_serde_json() {
        let f = find(r#"{"a":"x\"y","b":{"c":18446744073709551615},"d":-12,"e":1.5,"f":true,"g":{"h":1}}"#, &["a", "b.c", "d", "e", "f", "g", "z"]);
        assert_eq!(f[0], Some(FieldValue::Str("x\"y".into())));
        assert_eq!(f[1], Some(FieldValue::Float(18446744073709551615.0)));
        assert_eq!(f[2], Some(FieldValue::Int(-12)));
        assert_eq!(f[3], Some(FieldValue::Float(1.5)));
        assert_eq!(f[4], Some(FieldValue::Other));
        assert_eq!(f[5], Some(FieldValue::Other));
        assert_eq!(f[6], None);
        // The first occurrence of a duplicated key wins; an escaped key matches its text.
        let f = find(r#"{"syncts":1,"syncts":2,"\u0064id":"d"}"#, &["syncts", "did"]);
        assert_eq!(f, vec![Some(FieldValue::Int(1)), Some(FieldValue::Str("d".into()))]);
        // Unescaped strings borrow from the message.
        assert!(matches!(&find(r#"{"a":"plain"}"#, &["a"])[0], Some(FieldValue::Str(Cow::Borrowed("plain")))));
        // A lone surrogate is valid JSON but no usable string.
        assert_eq!(find(r#"{"a":"\ud800"}"#, &["a"])[0], Some(FieldValue::Other));
    }

    #[test]
    fn reports_raw_line_breaks() {
        let p = paths(&["a"]);
        for (text, want) in [("{\"a\":1}", false), ("{\n\"a\":1}", true), ("{\"a\":1}\r\n", true), ("{\"a\":\"x\\ny\"}", false), (" [1,\t2] ", false)]
        {
            let mut found = vec![None];
            assert_eq!(scan(text, &p, &mut found, false), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn stop_early_skips_validating_the_rest() {
        let p = paths(&["context.did"]);
        let text = r#"{"context":{"did":"d1","x":1},"rest": not json at all"#;
        let mut found = vec![None];
        assert!(scan(text, &p, &mut found, false).is_err());
        let mut found = vec![None];
        scan(text, &p, &mut found, true).unwrap();
        assert_eq!(found[0], Some(FieldValue::Str("d1".into())));
    }

    #[test]
    fn find_special_matches_a_byte_loop_at_every_alignment() {
        let mut r = StdRng::seed_from_u64(3);
        for _ in 0..20_000 {
            let len = r.random_range(0..70);
            let b: Vec<u8> = (0..len)
                .map(|_| if r.random_bool(0.05) { [b'"', b'\\', 0x1f, 0, 0x7f, 0x20][r.random_range(0..6)] } else { r.random_range(0x20..=0xff) })
                .collect();
            let from = r.random_range(0..=len);
            let want = (from..len).find(|&i| matches!(b[i], b'"' | b'\\' | 0..=0x1f | 0x80..)).unwrap_or(len);
            assert_eq!(find_special(&b, from), want, "{b:?} from {from}");
        }
    }
}
