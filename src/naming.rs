//! Blob names: Secor's file pattern placeholders, the full key layout, unique upload timestamps,
//! and parsing names back (new `<date>-<kafkaPartition>-<ts>` and old `<date>-<ts>` forms).

use chrono::{DateTime, NaiveDate, Utc};

/// An error in a `file_pattern`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatternError {
    #[error("unknown placeholder `{{{0}}}` (known: {{partition}}, {{kafkaPartition}}, {{currentTimestamp}}, {{topic}}, {{generation}}, {{fmOffset}}, {{randomHex}}, {{currentTime}}, {{currentDate}})")]
    Unknown(String),
    #[error("unbalanced `{{` or `}}` in the pattern")]
    Unbalanced,
    #[error("the pattern must start with {{partition}} (readers list files by `<path>/<date>`)")]
    MustStartWithDate,
    #[error("the pattern must not contain `/`")]
    Slash,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Lit(String),
    Date,
    KafkaPartition,
    CurrentTimestamp,
    Topic,
    Generation,
    FmOffset,
    RandomHex,
    CurrentTime,
    CurrentDate,
}

/// A parsed `file_pattern` such as `{partition}-{kafkaPartition}-{currentTimestamp}.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePattern {
    tokens: Vec<Token>,
}

/// The values a file name is rendered from.
#[derive(Debug, Clone)]
pub struct NameContext<'a> {
    /// The event date, already formatted (Secor's `{partition}`).
    pub date: &'a str,
    pub kafka_partition: i32,
    /// Epoch milliseconds at sealing time, unique per process (see [`UploadClock`]).
    pub current_ms: i64,
    pub topic: &'a str,
    pub generation: u32,
    /// Offset of the file's first message.
    pub first_offset: i64,
    /// 16 random bits for `{randomHex}`.
    pub random: u16,
}

impl FilePattern {
    /// Parses a pattern; unknown placeholders are an error.
    pub fn parse(s: &str) -> Result<FilePattern, PatternError> {
        if s.contains('/') {
            return Err(PatternError::Slash);
        }
        let mut tokens = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    tokens.push(Token::Lit(rest.to_string()));
                    break;
                }
                Some(i) if rest.as_bytes()[i] == b'}' => return Err(PatternError::Unbalanced),
                Some(i) => {
                    if i > 0 {
                        tokens.push(Token::Lit(rest[..i].to_string()));
                    }
                    let close = rest[i..].find('}').ok_or(PatternError::Unbalanced)? + i;
                    let name = &rest[i + 1..close];
                    if name.contains('{') {
                        return Err(PatternError::Unbalanced);
                    }
                    tokens.push(match name {
                        "partition" => Token::Date,
                        "kafkaPartition" => Token::KafkaPartition,
                        "currentTimestamp" => Token::CurrentTimestamp,
                        "topic" => Token::Topic,
                        "generation" => Token::Generation,
                        "fmOffset" => Token::FmOffset,
                        "randomHex" => Token::RandomHex,
                        "currentTime" => Token::CurrentTime,
                        "currentDate" => Token::CurrentDate,
                        other => return Err(PatternError::Unknown(other.to_string())),
                    });
                    rest = &rest[close + 1..];
                }
            }
        }
        if tokens.first() != Some(&Token::Date) {
            return Err(PatternError::MustStartWithDate);
        }
        Ok(FilePattern { tokens })
    }

    /// True if the pattern names the topic (so two topics may share a path).
    pub fn has_topic(&self) -> bool {
        self.tokens.contains(&Token::Topic)
    }

    /// True if `-{kafkaPartition}-` follows the date, which per-partition readers rely on.
    pub fn is_partition_filterable(&self) -> bool {
        matches!(self.tokens.get(1), Some(Token::Lit(l)) if l == "-")
            && self.tokens.get(2) == Some(&Token::KafkaPartition)
            && matches!(self.tokens.get(3), Some(Token::Lit(l)) if l.starts_with('-'))
    }

    /// Renders the file name (without the compression extension).
    pub fn render(&self, ctx: &NameContext<'_>) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(64);
        let now = DateTime::<Utc>::from_timestamp_millis(ctx.current_ms).unwrap_or_default();
        for t in &self.tokens {
            match t {
                Token::Lit(l) => out.push_str(l),
                Token::Date => out.push_str(ctx.date),
                Token::KafkaPartition => write!(out, "{}", ctx.kafka_partition).unwrap(),
                Token::CurrentTimestamp => write!(out, "{}", ctx.current_ms).unwrap(),
                Token::Topic => out.push_str(ctx.topic),
                Token::Generation => write!(out, "{}", ctx.generation).unwrap(),
                Token::FmOffset => write!(out, "{:020}", ctx.first_offset).unwrap(),
                Token::RandomHex => write!(out, "{:04x}", ctx.random).unwrap(),
                // Secor formats these with the JVM's zone, which is UTC in Sunbird's containers.
                Token::CurrentTime => write!(out, "{}", now.format("%H-%M")).unwrap(),
                Token::CurrentDate => write!(out, "{}", now.format("%Y%m%d")).unwrap(),
            }
        }
        out
    }
}

/// Joins `<path>/[<prefix>/]<name><ext>` with single slashes.
pub fn blob_key(path: &str, prefix: Option<&str>, name: &str, ext: &str) -> String {
    let mut key = String::with_capacity(path.len() + name.len() + 24);
    key.push_str(path.trim_matches('/'));
    if let Some(p) = prefix {
        key.push('/');
        key.push_str(p.trim_matches('/'));
    }
    key.push('/');
    key.push_str(name);
    key.push_str(ext);
    key
}

/// Hands out upload timestamps that never repeat within a process.
///
/// Two files sealed in the same millisecond for the same date and partition would otherwise get
/// the same key and the second upload would overwrite the first; each call returns
/// `max(now, previous + 1)`.
#[derive(Debug, Default)]
pub struct UploadClock {
    last: i64,
}

impl UploadClock {
    /// The next timestamp at or after `now_ms`, strictly after every earlier one.
    pub fn next(&mut self, now_ms: i64) -> i64 {
        self.last = now_ms.max(self.last + 1);
        self.last
    }
}

/// What a backup file name says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    pub date: NaiveDate,
    /// `None` for old names (`<date>-<ts>`), written before the Kafka partition was added.
    pub kafka_partition: Option<i32>,
    pub timestamp_ms: Option<i64>,
    pub gzip: bool,
}

/// Parses a blob's file name (the part after the last `/`) in the new or old Sunbird form.
///
/// New: `2020-02-01-3-1580495403199.json.gz`; old: `2020-02-01-1580495403199.json.gz`.
/// The two are told apart by the number of dash-separated numbers after the date, never by
/// the digits themselves, so an old name whose timestamp starts with `1` is not partition 1.
pub fn parse_name(file_name: &str) -> Option<ParsedName> {
    let file_name = file_name.rsplit('/').next()?;
    if file_name.len() < 11 || !file_name.is_char_boundary(10) {
        return None;
    }
    let date = NaiveDate::parse_from_str(&file_name[..10], "%Y-%m-%d").ok()?;
    let rest = file_name[10..].strip_prefix('-')?;
    let (stem, gzip) = match rest.strip_suffix(".gz") {
        Some(s) => (s, true),
        None => (rest, false),
    };
    let stem = stem.split('.').next()?;
    let nums: Vec<&str> = stem.split('-').collect();
    let num = |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<i64>().ok()).flatten();
    match nums.as_slice() {
        [p, ts] => Some(ParsedName {
            date,
            kafka_partition: Some(i32::try_from(num(p)?).ok()?),
            timestamp_ms: Some(num(ts)?),
            gzip,
        }),
        [ts] => Some(ParsedName { date, kafka_partition: None, timestamp_ms: Some(num(ts)?), gzip }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> NameContext<'static> {
        NameContext {
            date: "2020-02-01",
            kafka_partition: 3,
            current_ms: 1_580_495_403_199,
            topic: "dev.telemetry.unique",
            generation: 1,
            first_offset: 42,
            random: 0xab1,
        }
    }

    #[test]
    fn sunbird_default_pattern() {
        let p = FilePattern::parse(crate::config::DEFAULT_FILE_PATTERN).unwrap();
        assert!(p.is_partition_filterable());
        let name = p.render(&ctx());
        assert_eq!(name, "2020-02-01-3-1580495403199.json");
        assert_eq!(blob_key("unique/raw", None, &name, ".gz"), "unique/raw/2020-02-01-3-1580495403199.json.gz");
        assert_eq!(
            blob_key("/telemetry-denormalized/", Some("raw"), &name, ".gz"),
            "telemetry-denormalized/raw/2020-02-01-3-1580495403199.json.gz"
        );
    }

    #[test]
    fn every_placeholder() {
        let p = FilePattern::parse(
            "{partition}_{kafkaPartition}_{currentTimestamp}_{topic}_{generation}_{fmOffset}_{randomHex}_{currentTime}_{currentDate}.json",
        )
        .unwrap();
        // 1580495403199 ms = 2020-01-31T18:30:03.199Z
        assert_eq!(
            p.render(&ctx()),
            "2020-02-01_3_1580495403199_dev.telemetry.unique_1_00000000000000000042_0ab1_18-30_20200131.json"
        );
        assert!(!p.is_partition_filterable());
        assert!(p.has_topic());
    }

    #[test]
    fn old_raw_pattern_is_allowed_but_not_filterable() {
        let p = FilePattern::parse("{partition}-{currentTimestamp}.json").unwrap();
        assert!(!p.is_partition_filterable());
        assert_eq!(p.render(&ctx()), "2020-02-01-1580495403199.json");
    }

    #[test]
    fn pattern_errors() {
        assert_eq!(FilePattern::parse("{partition}-{nope}"), Err(PatternError::Unknown("nope".into())));
        assert_eq!(FilePattern::parse("{partition}-{kafkaPartition"), Err(PatternError::Unbalanced));
        assert_eq!(FilePattern::parse("{partition}}"), Err(PatternError::Unbalanced));
        assert_eq!(FilePattern::parse("{partition}-{{x}}"), Err(PatternError::Unbalanced));
        assert_eq!(FilePattern::parse("{kafkaPartition}-{partition}"), Err(PatternError::MustStartWithDate));
        assert_eq!(FilePattern::parse("x{partition}"), Err(PatternError::MustStartWithDate));
        assert_eq!(FilePattern::parse("{partition}/{kafkaPartition}"), Err(PatternError::Slash));
    }

    #[test]
    fn upload_clock_never_repeats() {
        let mut c = UploadClock::default();
        assert_eq!(c.next(1000), 1000);
        assert_eq!(c.next(1000), 1001);
        assert_eq!(c.next(1000), 1002);
        assert_eq!(c.next(999), 1003, "a clock step backwards must not repeat a name");
        assert_eq!(c.next(5000), 5000);
    }

    #[test]
    fn parse_new_and_old_names() {
        let n = parse_name("unique/raw/2020-02-01-3-1580495403199.json.gz").unwrap();
        assert_eq!(n.date, NaiveDate::from_ymd_opt(2020, 2, 1).unwrap());
        assert_eq!(n.kafka_partition, Some(3));
        assert_eq!(n.timestamp_ms, Some(1580495403199));
        assert!(n.gzip);
        let o = parse_name("2020-02-01-1580495403199.json.gz").unwrap();
        assert_eq!(o.kafka_partition, None, "old name: the timestamp's leading 1 is not a partition");
        assert_eq!(o.timestamp_ms, Some(1580495403199));
        let plain = parse_name("2020-02-01-12-1580495403199.json").unwrap();
        assert_eq!(plain.kafka_partition, Some(12));
        assert!(!plain.gzip);
        for bad in ["2020-02-31-1-2.json", "2020-02-01.json", "x-1-2.json", "2020-02-01-a-2.json", "2020-02-01-1-2-3.json", "2020-02-01--2.json"] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn rendered_names_parse_back() {
        let p = FilePattern::parse(crate::config::DEFAULT_FILE_PATTERN).unwrap();
        for part in [0, 1, 9, 10, 63] {
            let mut c = ctx();
            c.kafka_partition = part;
            let key = blob_key("unique/raw", None, &p.render(&c), ".gz");
            let n = parse_name(&key).unwrap();
            assert_eq!(n.kafka_partition, Some(part));
            assert_eq!(n.timestamp_ms, Some(c.current_ms));
        }
    }
}
