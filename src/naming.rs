//! Blob names — the one rule shared by the writer and every reader.
//!
//! From a topic's config, [`FileLayout`] derives where its files live (path, prefix
//! sub-paths, `error_path`), the key the writer gives a new file, and a parser for every name the
//! writer can have written, plus the Sunbird names that stay in storage for years
//! (`<date>-<kafkaPartition>-<ts>` and the old `<date>-<ts>`). A pattern that could not be parsed
//! back, or that could give two files the same name, is refused when the config is loaded.

use chrono::format::{Item, Numeric, Pad, StrftimeItems};
use chrono::{DateTime, NaiveDate, Utc};

/// An error in a `file_pattern` or in the `date_format` it is rendered with.
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
    #[error("{{{0}}} must be followed by the end of the pattern or by a character that is not a digit (otherwise names cannot be read back)")]
    Ambiguous(&'static str),
    #[error(
        "the pattern must contain {{currentTimestamp}}, or {{fmOffset}} together with {{kafkaPartition}}: otherwise two files get the same name"
    )]
    NotUnique,
}

/// An error in a `date_format` used in file names.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DateFormatError {
    #[error("`{0}` uses a specifier that cannot be read back from a file name (allowed: %Y, %m, %d, %j, %F and characters other than digits, `%` and `/`)")]
    Unreadable(String),
    #[error("`{0}` does not name a day (it needs %Y with %m and %d, or %Y with %j)")]
    NotADay(String),
}

/// A date format that file names can be rendered with and parsed back from: fixed-width,
/// zero-padded numeric fields and literal separators.
#[derive(Debug, Clone, PartialEq)]
pub struct DateFormat {
    format: String,
    /// Per character of a rendered date: true where a digit stands, false for a literal.
    shape: Vec<Option<char>>,
}

impl DateFormat {
    /// Checks a strftime format for use in names.
    pub fn parse(format: &str) -> Result<DateFormat, DateFormatError> {
        DateFormat::parse_with(format, false)
    }

    /// The strftime format.
    pub fn as_str(&self) -> &str {
        &self.format
    }

    /// A stock Secor partition format: a day, optionally followed by `/<hour prefix>%H` and
    /// `/<minute prefix>%M` (hourly or minutely folders); literal `/` and `=` are allowed.
    pub fn parse_partition(format: &str) -> Result<DateFormat, DateFormatError> {
        DateFormat::parse_with(format, true)
    }

    /// A day of fixed-width numbers and literals; `folders`: also `/`, hours and minutes.
    fn parse_with(format: &str, folders: bool) -> Result<DateFormat, DateFormatError> {
        let unreadable = || DateFormatError::Unreadable(format.to_string());
        let mut shape = Vec::new();
        let (mut y, mut m, mut d, mut j) = (false, false, false, false);
        for item in StrftimeItems::new(format) {
            let literal = match &item {
                Item::Literal(s) | Item::Space(s) => Some(*s),
                Item::OwnedLiteral(s) | Item::OwnedSpace(s) => Some(&**s),
                _ => None,
            };
            if let Some(s) = literal {
                for c in s.chars() {
                    if c.is_ascii_digit() || (c == '/' && !folders) {
                        return Err(unreadable());
                    }
                    shape.push(Some(c));
                }
                continue;
            }
            let width = match item {
                Item::Numeric(Numeric::Year, Pad::Zero) => {
                    y = true;
                    4
                }
                Item::Numeric(Numeric::Month, Pad::Zero) => {
                    m = true;
                    2
                }
                Item::Numeric(Numeric::Day, Pad::Zero) => {
                    d = true;
                    2
                }
                Item::Numeric(Numeric::Ordinal, Pad::Zero) => {
                    j = true;
                    3
                }
                Item::Numeric(Numeric::Hour | Numeric::Minute, Pad::Zero) if folders => 2,
                _ => return Err(unreadable()),
            };
            shape.extend(std::iter::repeat_n(None, width));
        }
        if !(y && ((m && d) || j)) {
            return Err(DateFormatError::NotADay(format.to_string()));
        }
        Ok(DateFormat { format: format.to_string(), shape })
    }

    /// Formats a day (used for `invalid_date`, so every name of a topic has one date form); an
    /// hour or minute in the format is its first.
    pub fn format(&self, d: NaiveDate) -> String {
        d.and_time(chrono::NaiveTime::MIN).format(&self.format).to_string()
    }

    /// The date `s` starts with, if it starts with one in this format.
    pub fn leading_date(&self, s: &str) -> Option<NaiveDate> {
        self.read(s).map(|(d, _)| d)
    }

    /// Reads a date from the start of `s`; returns it and the rest.
    fn read<'a>(&self, s: &'a str) -> Option<(NaiveDate, &'a str)> {
        let mut chars = s.char_indices();
        for want in &self.shape {
            let (_, c) = chars.next()?;
            match want {
                None if c.is_ascii_digit() => {}
                Some(l) if *l == c => {}
                _ => return None,
            }
        }
        let end = chars.next().map_or(s.len(), |(i, _)| i);
        let d = match NaiveDate::parse_from_str(&s[..end], &self.format) {
            Ok(d) => d,
            Err(_) => chrono::NaiveDateTime::parse_from_str(&s[..end], &self.format).ok()?.date(),
        };
        Some((d, &s[end..]))
    }
}

impl Default for DateFormat {
    fn default() -> Self {
        DateFormat::parse("%Y-%m-%d").expect("the default date format is readable")
    }
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
        // Numbers of varying width are read greedily, so what follows one must not be a digit.
        for (i, t) in tokens.iter().enumerate() {
            let name = match t {
                Token::KafkaPartition => "kafkaPartition",
                Token::CurrentTimestamp => "currentTimestamp",
                Token::Generation => "generation",
                _ => continue,
            };
            let next_ok = match tokens.get(i + 1) {
                None => true,
                Some(Token::Lit(l)) => !l.starts_with(|c: char| c.is_ascii_digit()),
                // Checked against the topic name in `FileLayout::new`.
                Some(Token::Topic) => true,
                Some(_) => false,
            };
            if !next_ok {
                return Err(PatternError::Ambiguous(name));
            }
        }
        let has = |t: Token| tokens.contains(&t);
        if !(has(Token::CurrentTimestamp) || (has(Token::FmOffset) && has(Token::KafkaPartition))) {
            return Err(PatternError::NotUnique);
        }
        Ok(FilePattern { tokens })
    }

    /// True if the name carries the Kafka partition.
    pub fn has_kafka_partition(&self) -> bool {
        self.tokens.contains(&Token::KafkaPartition)
    }

    /// Reads a file name (without `.gz`) rendered by this pattern; `topic` fills `{topic}`.
    fn read(&self, name: &str, dates: &DateFormat, topic: &str) -> Option<(NaiveDate, Option<i32>, Option<i64>)> {
        fn digits(s: &str) -> (&str, &str) {
            let n = s.bytes().take_while(u8::is_ascii_digit).count();
            s.split_at(n)
        }
        fn fixed(s: &str, n: usize, ok: impl Fn(u8) -> bool) -> Option<&str> {
            (s.len() >= n && s.as_bytes()[..n].iter().all(|b| ok(*b))).then(|| &s[n..])
        }
        let (mut date, mut partition, mut ts) = (None, None, None);
        let mut rest = name;
        for t in &self.tokens {
            rest = match t {
                Token::Lit(l) => rest.strip_prefix(l.as_str())?,
                Token::Date => {
                    let (d, r) = dates.read(rest)?;
                    if date.is_some_and(|prev| prev != d) {
                        return None;
                    }
                    date = Some(d);
                    r
                }
                Token::KafkaPartition => {
                    let (n, r) = digits(rest);
                    partition = Some(n.parse::<i32>().ok()?);
                    r
                }
                Token::CurrentTimestamp => {
                    let (n, r) = digits(rest);
                    ts = Some(n.parse::<i64>().ok()?);
                    r
                }
                Token::Generation => {
                    let (n, r) = digits(rest);
                    n.parse::<u32>().ok()?;
                    r
                }
                Token::Topic => rest.strip_prefix(topic)?,
                Token::FmOffset => fixed(rest, 20, |b| b.is_ascii_digit())?,
                Token::RandomHex => fixed(rest, 4, |b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))?,
                Token::CurrentTime => {
                    let r = fixed(rest, 2, |b| b.is_ascii_digit())?.strip_prefix('-')?;
                    fixed(r, 2, |b| b.is_ascii_digit())?
                }
                Token::CurrentDate => fixed(rest, 8, |b| b.is_ascii_digit())?,
            };
        }
        rest.is_empty().then_some((date?, partition, ts))
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
    /// `None` for names without the Kafka partition (old `<date>-<ts>` files, or a pattern
    /// without `{kafkaPartition}`).
    pub kafka_partition: Option<i32>,
    pub timestamp_ms: Option<i64>,
    pub gzip: bool,
    /// A `format = "record"` file (`….records.json`): one record envelope per line.
    pub records: bool,
    /// A Parquet file (`….parquet`).
    pub parquet: bool,
    /// The offset of its first message, when the name says (stock Secor's names).
    pub first_offset: Option<i64>,
}

/// What marks a record file's name: the pattern's `.json` (or its end) becomes this.
pub const RECORDS_SUFFIX: &str = ".records.json";

/// What marks a Parquet file's name: the pattern's `.json` (or its end) becomes this.
pub const PARQUET_SUFFIX: &str = ".parquet";

/// The name of a Parquet file rendered by a pattern: a trailing `.json` becomes `.parquet`,
/// otherwise `.parquet` is appended (readers that pick files by suffix must not take it for
/// JSON).
fn parquet_name(mut name: String) -> String {
    if name.ends_with(".json") {
        name.truncate(name.len() - ".json".len());
    }
    name.push_str(PARQUET_SUFFIX);
    name
}

/// The name of a record file rendered by a pattern: a trailing `.json` becomes
/// `.records.json`, otherwise `.records.json` is appended.
fn records_name(mut name: String) -> String {
    if name.ends_with(".json") {
        name.truncate(name.len() - ".json".len());
    }
    name.push_str(RECORDS_SUFFIX);
    name
}

/// Where one topic's files live and what they are called: the writer names files with it and
/// every reader (`ls`, `cat`, `verify`, `replay`, `repartition`) selects files with it.
#[derive(Debug, Clone)]
pub struct FileLayout {
    path: String,
    prefixes: Vec<String>,
    error_path: Option<String>,
    pattern: FilePattern,
    dates: DateFormat,
    topic: String,
    extension: String,
    records: bool,
    parquet: bool,
    /// Stock Secor's layout, when the topic uses it (else names follow `pattern`).
    secor: Option<SecorNames>,
    /// Prefix folders are named by a field's value (`prefix_as_value`): readers find them by
    /// listing, as no config lists them.
    open_prefixes: bool,
}

/// Stock Secor's layout (`LogFilePath`): `<path>/<topic>[/<prefix>]/<partition path>/<name>`,
/// the partition path being the route's date string (`dt=<date>`, with `/hr=<HH>` and
/// `/min=<mm>` below it for hourly and minutely granularity), the name
/// `<generation>_<kafkaPartition>_<firstOffset:%020d><extension>`. Names are deterministic: a
/// rebuilt file has its earlier upload's name by construction.
#[derive(Debug, Clone, PartialEq)]
pub struct SecorNames {
    pub generation: u32,
    /// The folder a route's partition path starts with.
    pub first: FirstFolder,
}

/// The first folder of stock Secor's partition path.
#[derive(Debug, Clone, PartialEq)]
pub enum FirstFolder {
    /// A day: the date prefix and the date format (`dt=%Y-%m-%d`).
    Day(DateFormat),
    /// An offset folder (`offset=<N>`, `OffsetMessageParser`): the files carry no date.
    Offsets(String),
}

/// The date of a file whose name carries none (stock Secor's `OffsetMessageParser`): every
/// date selection keeps it, since its events may be of any date.
pub const UNDATED: NaiveDate = NaiveDate::MIN;

impl FirstFolder {
    /// The date a folder name stands for: its day, or [`UNDATED`] for an offset folder.
    fn read(&self, folder: &str) -> Option<NaiveDate> {
        match self {
            FirstFolder::Day(f) => f.read(folder).filter(|(_, rest)| rest.is_empty()).map(|(d, _)| d),
            FirstFolder::Offsets(p) => {
                let n = folder.strip_prefix(p.as_str())?;
                (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(UNDATED)
            }
        }
    }
}

/// A value that can name a folder of its own: letters, digits, `.`, `_`, `=` and `-`, not
/// hidden (a leading `.` or `_`, which Hadoop's readers skip), at most 200 bytes.
pub fn is_folder_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 200
        && !v.starts_with(['.', '_'])
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'=' | b'-'))
}

/// Hadoop's hidden files (`_SUCCESS`, `.crc`): readers of a folder skip them.
pub fn is_hadoop_hidden(name: &str) -> bool {
    name.starts_with('_') || name.starts_with('.')
}

/// Sunbird's two name forms, which stay readable whatever a topic's pattern is today.
fn legacy_patterns() -> &'static [FilePattern; 2] {
    static P: std::sync::OnceLock<[FilePattern; 2]> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        [
            FilePattern::parse(DEFAULT_FILE_PATTERN).expect("default pattern"),
            FilePattern::parse("{partition}-{currentTimestamp}.json").expect("old pattern"),
        ]
    })
}

/// An error building a topic's layout; the caller names the config key.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LayoutError {
    #[error("{0}")]
    Pattern(#[from] PatternError),
    #[error("{0}")]
    Date(#[from] DateFormatError),
    #[error("the topic name `{0}` starts with a digit, so a number before {{topic}} cannot be read back")]
    TopicAfterNumber(String),
}

/// The file pattern Secor and Sunbird use: `<date>-<kafkaPartition>-<uploadMillis>.json`.
pub const DEFAULT_FILE_PATTERN: &str = "{partition}-{kafkaPartition}-{currentTimestamp}.json";

/// What a topic's layout is built from (its config's naming keys; see `TopicConfig::layout`).
#[derive(Debug, Clone)]
pub struct LayoutSpec<'a> {
    pub topic: &'a str,
    pub path: &'a str,
    /// The directories `prefix_map` sends messages to.
    pub prefixes: Vec<&'a str>,
    pub error_path: Option<&'a str>,
    pub file_pattern: &'a str,
    /// The format of the route's date string: `date_format`, or with stock Secor's hourly or
    /// minutely granularity the day followed by its hour (and minute) folders.
    pub date_format: &'a str,
    /// What follows the name: the compression's (`.gz` or none), or stock Secor's extension.
    pub extension: &'a str,
    /// `format = "record"`.
    pub records: bool,
    /// `file_format = "parquet"`.
    pub parquet: bool,
    /// Stock Secor's layout instead of `file_pattern`.
    pub secor: Option<SecorNames>,
    /// `prefix_as_value`: prefix folders named by a field's value.
    pub open_prefixes: bool,
}

impl FileLayout {
    /// The layout of one topic.
    pub fn new(t: &LayoutSpec<'_>) -> Result<FileLayout, LayoutError> {
        let pattern = FilePattern::parse(t.file_pattern)?;
        let dates = match &t.secor {
            Some(_) => DateFormat::parse_partition(t.date_format)?,
            None => DateFormat::parse(t.date_format)?,
        };
        let numeric = [Token::KafkaPartition, Token::CurrentTimestamp, Token::Generation];
        let number_then_topic = pattern.tokens.windows(2).any(|w| numeric.contains(&w[0]) && w[1] == Token::Topic);
        if number_then_topic && t.topic.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(LayoutError::TopicAfterNumber(t.topic.to_string()));
        }
        let mut prefixes: Vec<String> = t.prefixes.iter().map(|v| v.trim_matches('/').to_string()).collect();
        prefixes.sort();
        prefixes.dedup();
        Ok(FileLayout {
            path: t.path.trim_matches('/').to_string(),
            prefixes,
            error_path: t.error_path.map(|e| e.trim_matches('/').to_string()),
            pattern,
            dates,
            topic: t.topic.to_string(),
            extension: t.extension.to_string(),
            records: t.records,
            parquet: t.parquet,
            secor: t.secor.clone(),
            open_prefixes: t.open_prefixes,
        })
    }

    /// The layout of a bare path, for tools run without a config: Sunbird's names.
    pub fn bare(path: &str) -> FileLayout {
        FileLayout {
            path: path.trim_matches('/').to_string(),
            prefixes: Vec::new(),
            error_path: None,
            pattern: legacy_patterns()[0].clone(),
            dates: DateFormat::default(),
            topic: String::new(),
            extension: ".gz".to_string(),
            records: false,
            parquet: false,
            secor: None,
            open_prefixes: false,
        }
    }

    /// Stock Secor's layout, if the topic uses it.
    pub fn secor(&self) -> Option<&SecorNames> {
        self.secor.as_ref()
    }

    /// True when prefix folders are named by a field's value: `dirs` lists only the topic's
    /// folder, and readers find the prefix folders below it.
    pub fn open_prefixes(&self) -> bool {
        self.open_prefixes
    }

    /// The base path inside the container.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Replaces the base path (a reader's `--path` over a config's topic).
    pub fn with_path(mut self, path: &str) -> FileLayout {
        self.path = path.trim_matches('/').to_string();
        self
    }

    /// Every directory that holds files of the topic: `<path>` or `<path>/<prefix>` for each
    /// prefix, and `error_path`.
    pub fn dirs(&self) -> Vec<String> {
        let mut dirs = self.data_dirs();
        if self.error_path.is_some() {
            let e = self.dir(None, true);
            if !dirs.contains(&e) {
                dirs.push(e);
            }
        }
        dirs
    }

    /// The directories that hold dated files: `<path>`, or `<path>/<prefix>` for each prefix
    /// (what [`dirs`](Self::dirs) lists but `error_path`).
    pub fn data_dirs(&self) -> Vec<String> {
        if self.prefixes.is_empty() {
            vec![self.dir(None, false)]
        } else {
            self.prefixes.iter().map(|p| self.dir(Some(p), false)).collect()
        }
    }

    /// The topic's own pattern.
    pub fn pattern(&self) -> &FilePattern {
        &self.pattern
    }

    /// The date format of names.
    pub fn dates(&self) -> &DateFormat {
        &self.dates
    }

    /// The blob key of a new file: `<base>/[<prefix>/]<name><ext>`, `<base>` being `error_path`
    /// for invalid messages when one is configured.
    pub fn key(&self, prefix: Option<&str>, error: bool, ctx: &NameContext<'_>) -> String {
        if let Some(s) = &self.secor {
            return format!(
                "{}/{}/{}_{}_{:020}{}",
                self.dir(prefix, error),
                ctx.date,
                s.generation,
                ctx.kafka_partition,
                ctx.first_offset,
                self.extension
            );
        }
        let name = self.pattern.render(ctx);
        let name = if self.records { records_name(name) } else { name };
        let name = if self.parquet { parquet_name(name) } else { name };
        blob_key(self.base(error), prefix, &name, &self.extension)
    }

    /// The directory a route's files land in: `<base>[/<prefix>]`, or with stock Secor's layout
    /// `<base>/<topic>[/<prefix>]` (its date folders below it).
    pub fn dir(&self, prefix: Option<&str>, error: bool) -> String {
        let base = match (&self.secor, self.base(error)) {
            (Some(_), "") => self.topic.clone(),
            (Some(_), b) => format!("{b}/{}", self.topic),
            (None, b) => b.to_string(),
        };
        match prefix {
            Some(p) => format!("{base}/{}", p.trim_matches('/')),
            None => base,
        }
    }

    /// Where a listing of one date of a route's directory starts: names that start with the
    /// date string, or stock Secor's partition folder (and what is below it).
    pub fn date_listing(&self, dir: &str, date: &str) -> String {
        match &self.secor {
            Some(_) => format!("{}/{date}/", dir.trim_end_matches('/')),
            None => format!("{}/{date}", dir.trim_end_matches('/')),
        }
    }

    /// The route directory (a [`dir`](Self::dir)) a stored key belongs to.
    pub fn route_dir_of<'k>(&self, key: &'k str) -> &'k str {
        match &self.secor {
            Some(s) => split_secor(s, key).map_or_else(|| key.rsplit_once('/').map_or("", |(d, _)| d), |(dir, _, _)| dir),
            None => key.rsplit_once('/').map_or("", |(d, _)| d),
        }
    }

    /// The route directory and date string a stored file of this layout is under: the key's
    /// directory and its name's date, or with stock Secor's layout the folders before and from
    /// its day folder (`dt=2020-02-01/hr=13`).
    pub fn place_of(&self, key: &str) -> Option<(String, String)> {
        match &self.secor {
            Some(s) => split_secor(s, key).map(|(dir, partitions, _)| (dir.to_string(), partitions.to_string())),
            None => {
                let n = self.parse(key)?;
                Some((key.rsplit_once('/').map_or("", |(d, _)| d).to_string(), self.dates.format(n.date)))
            }
        }
    }

    /// Where kbackup's records of the topic (completion markers, its settings) live:
    /// `<path>/_kbackup/…`, or `<path>/<topic>/_kbackup/…` when topics may share the path (stock
    /// Secor's layout, a pattern with `{topic}`): one topic's markers must never be read as
    /// another's.
    pub fn marker_path(&self) -> String {
        if self.secor.is_some() || self.pattern.has_topic() {
            format!("{}/{}", self.path, self.topic).trim_start_matches('/').to_string()
        } else {
            self.path.clone()
        }
    }

    fn base(&self, error: bool) -> &str {
        match (&self.error_path, error) {
            (Some(e), true) => e,
            _ => &self.path,
        }
    }

    /// Parses a blob's file name (the part after the last `/`): the topic's own pattern first,
    /// then Sunbird's new and old forms. `.gz` is optional whatever the topic's compression
    /// (a topic's compression may have changed over the years), and so is the record marker
    /// (a topic's format may have changed too): the name says which one a file holds.
    pub fn parse(&self, key: &str) -> Option<ParsedName> {
        if let Some(s) = &self.secor {
            return self.parse_secor(s, key);
        }
        let file = key.rsplit('/').next()?;
        let (stem, gzip) = match file.strip_suffix(".gz") {
            Some(s) => (s, true),
            None => (file, false),
        };
        // A Parquet or record file's stem is read as the name it was rendered from: with
        // `.json`, or without it for a pattern that has none (the pattern itself tells which).
        let (stem, parquet) = match stem.strip_suffix(PARQUET_SUFFIX) {
            Some(base) => (base, true),
            None => (stem, false),
        };
        let (stems, records) = match (stem.strip_suffix(RECORDS_SUFFIX.trim_end_matches(".json")), parquet) {
            (Some(base), true) => ([Some(format!("{base}.json")), Some(base.to_string())], true),
            (None, true) => ([Some(format!("{stem}.json")), Some(stem.to_string())], false),
            (_, false) => match stem.strip_suffix(RECORDS_SUFFIX) {
                Some(base) => ([Some(format!("{base}.json")), Some(base.to_string())], true),
                None => ([Some(stem.to_string()), None], false),
            },
        };
        let default_dates = DateFormat::default();
        let tries = std::iter::once((&self.pattern, &self.dates))
            .chain(legacy_patterns().iter().map(|p| (p, &self.dates)))
            .chain(legacy_patterns().iter().map(|p| (p, &default_dates)));
        tries
            .flat_map(|(p, d)| stems.iter().flatten().map(move |s| (p, d, s)))
            .filter_map(|(p, d, s)| p.read(s, d, &self.topic))
            .map(|(date, kafka_partition, timestamp_ms)| ParsedName {
                date,
                kafka_partition,
                timestamp_ms,
                gzip,
                records,
                parquet,
                first_offset: None,
            })
            .next()
    }
}

impl FileLayout {
    /// The date a date-prefix reader files `name` under: Sunbird's fetcher (and Spark jobs like
    /// it) lists `<dir>/<date>` and reads every object whose name starts with it, backup name or
    /// not. In the topic's date format or the default one. With stock Secor's layout, `name` is
    /// a date folder (`dt=<date>`), whose readers read every file below it.
    pub fn reader_date(&self, name: &str) -> Option<NaiveDate> {
        if let Some(s) = &self.secor {
            return s.first.read(name);
        }
        self.dates.leading_date(name).or_else(|| DateFormat::default().leading_date(name))
    }

    /// Stock Secor's `<dir>/<partition path>/<generation>_<kafkaPartition>_<offset:%020d><ext>`.
    fn parse_secor(&self, s: &SecorNames, key: &str) -> Option<ParsedName> {
        let (_, partitions, file) = split_secor(s, key)?;
        let stem = match self.extension.as_str() {
            "" => file,
            ext => file.strip_suffix(ext)?,
        };
        let mut parts = stem.splitn(3, '_');
        let (g, p, o) = (parts.next()?, parts.next()?, parts.next()?);
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
        if !(digits(g) && digits(p) && digits(o)) || o.len() != 20 {
            return None;
        }
        let first = partitions.split('/').next().unwrap_or_default();
        Some(ParsedName {
            date: s.first.read(first)?,
            kafka_partition: Some(p.parse().ok()?),
            timestamp_ms: None,
            gzip: file.ends_with(".gz"),
            records: false,
            parquet: false,
            first_offset: Some(o.parse().ok()?),
        })
    }
}

/// Splits a stock Secor key into its route directory, its partition path (from the day folder
/// on: `dt=2020-02-01/hr=13`) and its file name. The day folder is the last folder the day
/// format reads whole (the last offset folder, for undated files).
fn split_secor<'k>(s: &SecorNames, key: &'k str) -> Option<(&'k str, &'k str, &'k str)> {
    let (parent, file) = key.rsplit_once('/')?;
    let mut end = parent.len();
    loop {
        let start = parent[..end].rfind('/').map_or(0, |i| i + 1);
        if s.first.read(&parent[start..end]).is_some() {
            return Some((parent[..start].trim_end_matches('/'), &parent[start..], file));
        }
        if start == 0 {
            return None;
        }
        end = start - 1;
    }
}

/// Parses a name in Sunbird's forms (new `<date>-<p>-<ts>` and old `<date>-<ts>`), for code
/// that has no topic config.
pub fn parse_name(key: &str) -> Option<ParsedName> {
    FileLayout::bare("").parse(key)
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
        let p = FilePattern::parse(DEFAULT_FILE_PATTERN).unwrap();
        assert!(p.is_partition_filterable());
        let name = p.render(&ctx());
        assert_eq!(name, "2020-02-01-3-1580495403199.json");
        assert_eq!(blob_key("unique/raw", None, &name, ".gz"), "unique/raw/2020-02-01-3-1580495403199.json.gz");
        assert_eq!(blob_key("/telemetry-denormalized/", Some("raw"), &name, ".gz"), "telemetry-denormalized/raw/2020-02-01-3-1580495403199.json.gz");
    }

    #[test]
    fn every_placeholder() {
        let p = FilePattern::parse(
            "{partition}_{kafkaPartition}_{currentTimestamp}_{topic}_{generation}_{fmOffset}_{randomHex}_{currentTime}_{currentDate}.json",
        )
        .unwrap();
        // 1580495403199 ms = 2020-01-31T18:30:03.199Z
        assert_eq!(p.render(&ctx()), "2020-02-01_3_1580495403199_dev.telemetry.unique_1_00000000000000000042_0ab1_18-30_20200131.json");
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

    fn topic(pattern: &str, date_format: &str) -> crate::config::TopicConfig {
        let text = format!(
            "[kafka]\nbrokers='x:1'\n[storage]\nurl='file:///tmp/x'\n[[topic]]\nname='dev.telemetry.unique'\npath='unique/raw'\nfile_pattern='{pattern}'\ndate_format='{date_format}'\n"
        );
        let c: crate::config::Config = toml::from_str(&text).unwrap();
        c.topics[0].clone()
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
        for bad in [
            "2020-02-31-1-2.json",
            "2020-02-01.json",
            "x-1-2.json",
            "2020-02-01-a-2.json",
            "2020-02-01-1-2-3.json",
            "2020-02-01--2.json",
            "2020-02-01-1-2.json.tmp",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn rendered_names_parse_back() {
        let p = FilePattern::parse(DEFAULT_FILE_PATTERN).unwrap();
        for part in [0, 1, 9, 10, 63] {
            let mut c = ctx();
            c.kafka_partition = part;
            let key = blob_key("unique/raw", None, &p.render(&c), ".gz");
            let n = parse_name(&key).unwrap();
            assert_eq!(n.kafka_partition, Some(part));
            assert_eq!(n.timestamp_ms, Some(c.current_ms));
        }
    }

    /// Every pattern and date format the config accepts: what the writer names, the readers
    /// read back, with the same date, partition and timestamp.
    #[test]
    fn every_accepted_layout_reads_back_what_it_writes() {
        let patterns = [
            DEFAULT_FILE_PATTERN,
            "{partition}-{kafkaPartition}-{currentTimestamp}-{randomHex}.json",
            "{partition}-{topic}-{currentTimestamp}.json",
            "{partition}_{kafkaPartition}_{currentTimestamp}.json",
            "{partition}-{currentTimestamp}.json",
            "{partition}-{kafkaPartition}-{fmOffset}.json",
            "{partition}-{generation}-{kafkaPartition}-{fmOffset}-{currentTimestamp}.json",
            "{partition}_{kafkaPartition}_{currentTimestamp}_{topic}_{generation}_{fmOffset}_{randomHex}_{currentTime}_{currentDate}.json",
            "{partition}-{kafkaPartition}-{randomHex}{currentTimestamp}",
            "{partition}.{currentTimestamp}",
        ];
        let formats = ["%Y-%m-%d", "%Y%m%d", "%d-%m-%Y", "%Y_%j", "%F", "dt=%Y-%m-%d"];
        let days = [
            NaiveDate::from_ymd_opt(2020, 2, 1).unwrap(),
            NaiveDate::from_ymd_opt(1970, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(2099, 12, 31).unwrap(),
        ];
        use crate::config::{FileFormat, Format};
        for (pat, format, file_format) in patterns
            .iter()
            .flat_map(|p| [(*p, Format::Value, FileFormat::Text), (*p, Format::Record, FileFormat::Text), (*p, Format::Value, FileFormat::Parquet)])
        {
            for fmt in formats {
                let mut t = topic(pat, fmt);
                t.format = format;
                t.file_format = file_format;
                let records = format == Format::Record;
                let parquet = file_format == FileFormat::Parquet;
                crate::config::Config::parse(&format!("[kafka]\nbrokers='x:1'\n[storage]\nurl='file:///tmp/x'\n[[topic]]\nname='{}'\npath='unique/raw'\nfile_pattern='{pat}'\ndate_format='{fmt}'\n", t.name), "t")
                    .unwrap_or_else(|e| panic!("{pat} / {fmt} should be accepted: {e}"));
                let layout = t.layout().unwrap();
                for day in days {
                    for (part, ms, first) in [(0, 1_580_495_403_199i64, 0i64), (7, 1_000, 123_456), (11, 1_999_999_999_999, 1)] {
                        let date = layout.dates().format(day);
                        let c = NameContext {
                            date: &date,
                            kafka_partition: part,
                            current_ms: ms,
                            topic: &t.name,
                            generation: 3,
                            first_offset: first,
                            random: 0xbeef,
                        };
                        for error in [false, true] {
                            let key = layout.key(Some("raw"), error, &c);
                            let n = layout.parse(&key).unwrap_or_else(|| panic!("{pat} / {fmt}: cannot read back {key}"));
                            assert_eq!(n.date, day, "{key}");
                            let has = |s: &str| pat.contains(s);
                            assert_eq!(n.kafka_partition, has("{kafkaPartition}").then_some(part), "{key}");
                            assert_eq!(n.timestamp_ms, has("{currentTimestamp}").then_some(ms), "{key}");
                            assert_eq!(n.gzip, !parquet, "{key}");
                            assert_eq!(n.records, records, "{key}");
                            assert_eq!(n.parquet, parquet, "{key}");
                            assert_eq!(key.contains(".records.json"), records, "the name shows the format: {key}");
                            assert_eq!(key.ends_with(".parquet"), parquet, "the name shows the file format: {key}");
                            assert!(!(parquet && key.contains(".json")), "a Parquet file is not named as JSON: {key}");
                            if pat == DEFAULT_FILE_PATTERN && fmt == "%Y-%m-%d" {
                                // Tools run with a bare --url read both formats of the default names.
                                assert_eq!(FileLayout::bare("unique/raw").parse(&key).as_ref(), Some(&n), "{key}");
                            }
                        }
                    }
                }
                // Sunbird's names stay readable under any layout.
                let old = layout.parse("unique/raw/2020-02-01-1580495403199.json.gz").unwrap();
                assert_eq!((old.kafka_partition, old.timestamp_ms), (None, Some(1580495403199)), "{pat} / {fmt}");
            }
        }
    }

    #[test]
    fn patterns_that_cannot_be_read_back_or_repeat_names_are_refused() {
        for (pat, want) in [
            ("{partition}.json", PatternError::NotUnique),
            ("{partition}-{kafkaPartition}.json", PatternError::NotUnique),
            ("{partition}-{fmOffset}.json", PatternError::NotUnique),
            ("{partition}-{topic}-{randomHex}.json", PatternError::NotUnique),
            ("{partition}-{kafkaPartition}{currentTimestamp}.json", PatternError::Ambiguous("kafkaPartition")),
            ("{partition}-{currentTimestamp}{fmOffset}.json", PatternError::Ambiguous("currentTimestamp")),
            ("{partition}-{currentTimestamp}{randomHex}", PatternError::Ambiguous("currentTimestamp")),
            ("{partition}-{kafkaPartition}1-{currentTimestamp}", PatternError::Ambiguous("kafkaPartition")),
        ] {
            assert_eq!(FilePattern::parse(pat), Err(want), "{pat}");
        }
        let mut t = topic("{partition}-{currentTimestamp}{topic}.json", "%Y-%m-%d");
        t.name = "1topic".into();
        assert!(matches!(t.layout(), Err(LayoutError::TopicAfterNumber(_))));
        t.name = "topic".into();
        assert!(t.layout().is_ok());
    }

    #[test]
    fn date_formats_that_cannot_be_read_back_are_refused() {
        for bad in ["%Y-%m", "%m-%d", "%Y-%b-%d", "%Y-%-m-%d", "%Y-%m-%d-%H", "%s", "%Y1%m%d", "%y-%m-%d", "%Y-%m-%e"] {
            assert!(DateFormat::parse(bad).is_err(), "{bad}");
        }
        for good in ["%Y-%m-%d", "%Y%m%d", "%d-%m-%Y", "%F", "%Y_%j", "day=%Y.%m.%d"] {
            assert!(DateFormat::parse(good).is_ok(), "{good}");
        }
    }

    fn secor_topic(extra: &str) -> crate::config::TopicConfig {
        let text = format!(
            "[kafka]\nbrokers='x:1'\n[storage]\nurl='file:///tmp/x'\n[[topic]]\nname='dev.telemetry.unique'\npath='secor/backup'\nlayout='secor'\n{extra}\n"
        );
        crate::config::Config::parse(&text, "t").unwrap_or_else(|e| panic!("{extra}: {e}")).topics[0].clone()
    }

    /// Stock Secor's `LogFilePath`: `<path>/<topic>/dt=<date>[/hr=<HH>]/<gen>_<kp>_<offset:%020d><ext>`,
    /// written and read back, with its prefixes and granularities; Hadoop's hidden files and
    /// other names are not backup files.
    #[test]
    fn stock_secor_names_are_written_and_read_back() {
        let t = secor_topic("compression='none'");
        let l = t.layout().unwrap();
        let day = NaiveDate::from_ymd_opt(2020, 2, 1).unwrap();
        let date = l.dates().format(day);
        assert_eq!(date, "dt=2020-02-01");
        let mut c = ctx();
        c.date = &date;
        c.first_offset = 42;
        let key = l.key(None, false, &c);
        assert_eq!(key, "secor/backup/dev.telemetry.unique/dt=2020-02-01/1_3_00000000000000000042");
        let n = l.parse(&key).unwrap();
        assert_eq!((n.date, n.kafka_partition, n.first_offset, n.timestamp_ms, n.gzip), (day, Some(3), Some(42), None, false));
        assert_eq!(l.route_dir_of(&key), "secor/backup/dev.telemetry.unique");
        assert_eq!(l.dirs(), vec!["secor/backup/dev.telemetry.unique"]);
        assert_eq!(l.date_listing(&l.dir(None, false), &date), "secor/backup/dev.telemetry.unique/dt=2020-02-01/");
        assert_eq!(l.marker_path(), "secor/backup/dev.telemetry.unique");
        assert_eq!(l.reader_date("dt=2020-02-01"), Some(day));
        assert_eq!(l.reader_date("dt=2020-02-01x"), None);
        assert_eq!(l.reader_date("2020-02-01"), None);
        for other in [
            "secor/backup/dev.telemetry.unique/dt=2020-02-01/_SUCCESS",
            "secor/backup/dev.telemetry.unique/dt=2020-02-01/.1_3_00000000000000000042.crc",
            "secor/backup/dev.telemetry.unique/dt=2020-02-01/1_3_42",
            "secor/backup/dev.telemetry.unique/dt=2020-02-01/1_x_00000000000000000042",
            "secor/backup/dev.telemetry.unique/1_3_00000000000000000042",
            "secor/backup/dev.telemetry.unique/dt=2020-02-31/1_3_00000000000000000042",
            "secor/backup/dev.telemetry.unique/2020-02-01-3-1580495403199.json",
        ] {
            assert_eq!(l.parse(other), None, "{other}");
        }

        // Hourly folders, a prefix (SplitByField), an extension and gzip, an error path.
        let t =
            secor_topic("granularity='hour'\nfile_extension='.json.gz'\nerror_path='secor/errors'\nprefix_field='eid'\nprefix_map={DEFAULT='raw'}");
        let l = t.layout().unwrap();
        let date = "dt=2020-02-01/hr=13";
        c.date = date;
        let key = l.key(Some("raw"), false, &c);
        assert_eq!(key, "secor/backup/dev.telemetry.unique/raw/dt=2020-02-01/hr=13/1_3_00000000000000000042.json.gz");
        let n = l.parse(&key).unwrap();
        assert_eq!((n.date, n.kafka_partition, n.first_offset, n.gzip), (day, Some(3), Some(42), true));
        assert_eq!(l.route_dir_of(&key), "secor/backup/dev.telemetry.unique/raw");
        assert_eq!(l.key(None, true, &c), "secor/errors/dev.telemetry.unique/dt=2020-02-01/hr=13/1_3_00000000000000000042.json.gz");
        assert_eq!(l.dirs(), vec!["secor/backup/dev.telemetry.unique/raw", "secor/errors/dev.telemetry.unique"]);
        assert_eq!(l.dates().leading_date(date), Some(day));
        assert_eq!(l.parse("secor/backup/dev.telemetry.unique/raw/dt=2020-02-01/hr=13/1_3_00000000000000000042.gz"), None, "another extension");

        // Offset folders: undated (OffsetMessageParser), or below the day (DailyOffsetMessageParser).
        let t = secor_topic("offset_buckets={per=1000}");
        let l = t.layout().unwrap();
        c.date = "offset=1000";
        let key = l.key(None, false, &c);
        assert_eq!(key, "secor/backup/dev.telemetry.unique/offset=1000/1_3_00000000000000000042.gz");
        assert_eq!((l.parse(&key).map(|n| n.date), l.route_dir_of(&key)), (Some(UNDATED), "secor/backup/dev.telemetry.unique"));
        assert_eq!((l.reader_date("offset=1000"), l.reader_date("offset=x"), l.reader_date("dt=2020-02-01")), (Some(UNDATED), None, None));
        let t = secor_topic("offset_buckets={per=1000,daily=true}");
        let l = t.layout().unwrap();
        c.date = "dt=2020-02-01/offset=1000";
        let key = l.key(None, false, &c);
        assert_eq!(key, "secor/backup/dev.telemetry.unique/dt=2020-02-01/offset=1000/1_3_00000000000000000042.gz");
        assert_eq!((l.parse(&key).map(|n| n.date), l.route_dir_of(&key)), (Some(day), "secor/backup/dev.telemetry.unique"));
        assert!(t.markers() && !secor_topic("offset_buckets={per=1000}").markers(), "undated files mark no date");

        // Another date prefix and format.
        let t = secor_topic("date_prefix='day='\ndate_format='%Y%m%d'\ngeneration=7");
        let l = t.layout().unwrap();
        let date = l.dates().format(day);
        c.date = &date;
        let key = l.key(None, false, &c);
        assert_eq!(key, "secor/backup/dev.telemetry.unique/day=20200201/7_3_00000000000000000042.gz");
        assert_eq!(l.parse(&key).map(|n| n.date), Some(day));
    }

    #[test]
    fn layout_dirs_include_prefixes_and_error_path() {
        let mut t = topic(DEFAULT_FILE_PATTERN, "%Y-%m-%d");
        assert_eq!(t.layout().unwrap().dirs(), vec!["unique/raw"]);
        t.error_path = Some("/errors/unique/".into());
        t.prefix_map =
            [("DEFAULT".to_string(), "raw".to_string()), ("ME_WORKFLOW_SUMMARY".into(), "summary".into()), ("X".into(), "raw".into())].into();
        assert_eq!(t.layout().unwrap().dirs(), vec!["unique/raw/raw", "unique/raw/summary", "errors/unique"]);
        let l = t.layout().unwrap();
        let c = ctx();
        assert_eq!(l.key(None, true, &c), "errors/unique/2020-02-01-3-1580495403199.json.gz");
        assert_eq!(l.key(Some("summary"), false, &c), "unique/raw/summary/2020-02-01-3-1580495403199.json.gz");
        assert_eq!(l.dir(Some("summary"), false), "unique/raw/summary");
        assert_eq!(l.dir(None, true), "errors/unique");
    }
}
