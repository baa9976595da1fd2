//! Drop-in Secor configuration: read Secor `.properties` files as Secor resolves them (see
//! [`load`]: includes in place, a key's first value counts, `--secor-property` replaces like
//! `-D`) and map them to a kbackup [`Config`]. Keys whose meaning kbackup cannot keep are errors
//! that name the key and the value; keys it does not need are named with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{
    Compression, Config, ConfigError, FileFormat, Granularity, KafkaConfig, LayoutKind, OffsetBuckets, OffsetsStorage, RecordTime, SecorConfig,
    StorageConfig, TopicConfig, WriterConfig, DEFAULT_FILE_PATTERN,
};

/// Properties in file order, later keys winning.
pub type Properties = BTreeMap<String, String>;

/// Parses Java `.properties` text (comments, `=`/`:`/space separators, continuations, escapes).
pub fn parse_properties(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut logical = String::new();
    for raw in text.lines() {
        // Leading blanks are dropped on first and continuation lines alike.
        let line = raw.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        let trailing = line.chars().rev().take_while(|&c| c == '\\').count();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        let (k, v) = split_key_value(&logical);
        out.push((unescape(&k), unescape(&v)));
        logical.clear();
    }
    if !logical.is_empty() {
        let (k, v) = split_key_value(&logical);
        out.push((unescape(&k), unescape(&v)));
    }
    out
}

fn split_key_value(line: &str) -> (String, String) {
    let mut key = String::new();
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                key.push(c);
                if let Some((_, n)) = chars.next() {
                    key.push(n);
                }
            }
            '=' | ':' | ' ' | '\t' => {
                let mut rest = line[i + c.len_utf8()..].trim_start();
                if c.is_whitespace() {
                    if let Some(r) = rest.strip_prefix(['=', ':']) {
                        rest = r.trim_start();
                    }
                }
                return (key, rest.to_string());
            }
            _ => key.push(c),
        }
    }
    (key, String::new())
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                if let Some(ch) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(ch);
                }
            }
            Some(o) => out.push(o),
            None => {}
        }
    }
    out
}

/// Properties as Secor resolves them, and what the user should know about how.
#[derive(Debug, Default)]
pub struct Loaded {
    pub props: Properties,
    /// Keys set more than once with different values: which value counts, and how to change it.
    pub notes: Vec<String>,
}

/// Loads files the way Secor loads its `-Dconfig` file (Commons Configuration's
/// `PropertiesConfiguration`): `include=` loads another file at that point, relative to the
/// including one, and a key set twice keeps its *first* value (the later one is appended to a
/// list whose first element is what Secor reads). Several files are read in order as if one
/// included the next. `overrides` (`--secor-property KEY=VALUE`) replace a key, as Secor's
/// `-DKEY=VALUE` system properties do.
pub fn load(files: &[PathBuf], overrides: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let mut seen: BTreeMap<String, (String, String, usize)> = BTreeMap::new();
    let mut notes = Vec::new();
    for f in files {
        load_into(f, &mut seen, &mut notes, 0)?;
    }
    let mut props: Properties = seen.into_iter().map(|(k, (v, _, _))| (k, v)).collect();
    for (k, v) in overrides {
        props.insert(k.clone(), v.clone());
    }
    Ok(Loaded { props, notes })
}

fn load_into(path: &Path, seen: &mut BTreeMap<String, (String, String, usize)>, notes: &mut Vec<String>, depth: usize) -> Result<(), ConfigError> {
    if depth > 10 {
        return Err(ConfigError::Parse { path: path.display().to_string(), message: "include nesting deeper than 10".into() });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    for (k, v) in parse_properties(&text) {
        if k == "include" {
            let inc = path.parent().unwrap_or(Path::new(".")).join(&v);
            load_into(&inc, seen, notes, depth + 1)?;
            continue;
        }
        match seen.get(&k) {
            None => {
                seen.insert(k, (v, path.display().to_string(), depth));
            }
            // A value set again no deeper in the includes than the first reads as an override
            // that Secor ignores: say so. (Defaults included after a deployment's own keys are
            // deeper, and meant to lose.)
            Some((first, at, first_depth)) if first.trim() != v.trim() && depth <= *first_depth => notes.push(format!(
                "{k} is set twice: `{first}` ({at}) and `{v}` ({}); Secor reads the first (a key set again is appended, never replaced), and so does kbackup. To change it, set it once, or override it as Secor's -D{k}=… does: --secor-property {k}=…",
                path.display()
            )),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Parses a `--secor-property KEY=VALUE`.
pub fn parse_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}`: expected KEY=VALUE (as Secor's -DKEY=VALUE)")),
    }
}

/// The result of a mapping: the config, and what became of every key.
#[derive(Debug)]
pub struct Mapped {
    pub config: Config,
    /// Keys no table knows: unknown, or misspelled (one warning).
    pub ignored: Vec<String>,
    /// Keys that configure a part of Secor kbackup does not have, with the reason.
    pub secor_only: Vec<(String, &'static str)>,
    /// Notes about keys whose effect differs slightly (always-on behaviour and the like).
    pub notes: Vec<String>,
}

/// Keys (or key prefixes, ending in `.`) that configure parts of Secor kbackup does not have,
/// each with the reason it is safe to leave them: shown by `check`, logged by `run`. A key
/// whose value would change what lands in storage is never here: it is mapped or refused.
const SECOR_ONLY: &[(&str, &str)] = &[
    ("secor.zookeeper.path", "Secor's upload locks: kbackup's partitions have one owner through Kafka's group protocol"),
    ("secor.local.path", "Secor's local disk buffer: kbackup buffers in memory (writer.memory_limit_bytes)"),
    ("secor.local.log.delete.age.hours", "Secor's local disk buffer: kbackup buffers in memory"),
    ("secor.consumer.threads", "one consumer per process: run more processes in the group"),
    ("secor.messages.per.second", "Secor's read throttle: kbackup reads as fast as it uploads (use Kafka quotas to throttle)"),
    ("secor.upload.class", "Secor's uploader: kbackup's is built in"),
    ("secor.upload.on.shutdown", "kbackup always uploads and commits on a graceful stop"),
    ("secor.upload.deterministic", "kbackup's file names and contents are deterministic and exactly once by design"),
    ("secor.max.file.timestamp.range.millis", "a rule of secor.upload.deterministic: kbackup rotates by size, age and date"),
    ("secor.max.input.payload.size.bytes", "a rule of secor.upload.deterministic: kbackup rotates by size, age and date"),
    ("secor.file.age.youngest", "kbackup ages a file from its first message"),
    ("secor.upload.minute_mark", "kbackup uploads by size, age and date"),
    ("secor.kafka.upload_at_minute_mark.topic_filter", "kbackup uploads by size, age and date"),
    ("secor.upload.last.seen.offset", "Secor's uploader bookkeeping: kbackup commits after its uploads land"),
    ("secor.upload.secor.upload.last.seen.offset", "Secor's uploader bookkeeping: kbackup commits after its uploads land"),
    ("secor.consumer.max_bad_messages", "kbackup never drops a message: one it cannot date goes to invalid_date, counted"),
    ("secor.max.message.size.bytes", "Secor's legacy consumer fetch size: librdkafka sizes its fetches"),
    ("secor.topic_partition.forget.seconds", "Secor's partition bookkeeping"),
    ("secor.max.file.count", "not read by Secor 0.29 or later"),
    ("message.timestamp.skew.max.ms", "not read by Secor 0.29 or later"),
    ("secor.s3.filesystem", "Hadoop's file system scheme: kbackup writes through the object store API"),
    ("secor.swift.", "OpenStack Swift is not a kbackup store (secor.upload.manager.class decides)"),
    ("swift.", "OpenStack Swift is not a kbackup store (secor.upload.manager.class decides)"),
    ("secor.gs.tasks.ratelimit.pr.second", "Secor's GCS client: kbackup retries uploads with backoff (writer.upload_concurrency)"),
    ("secor.gs.threadpool.fixed.size", "Secor's GCS client: kbackup retries uploads with backoff (writer.upload_concurrency)"),
    ("secor.gs.connect.timeout.ms", "Secor's GCS client: kbackup retries uploads with backoff"),
    ("secor.gs.read.timeout.ms", "Secor's GCS client: kbackup retries uploads with backoff"),
    ("secor.gs.upload.direct", "Secor's GCS client: kbackup uploads from memory"),
    ("ostrich.port", "Secor's monitoring: kbackup exports Prometheus metrics (writer.status_addr)"),
    ("secor.monitoring.", "Secor's monitoring: kbackup exports Prometheus metrics (writer.status_addr)"),
    ("monitoring.", "Secor's monitoring: kbackup exports Prometheus metrics (writer.status_addr)"),
    ("statsd.", "Secor's monitoring: kbackup exports Prometheus metrics (writer.status_addr)"),
    ("tsdb.hostport", "Secor's monitoring: kbackup exports Prometheus metrics (writer.status_addr)"),
    ("secor.enable.qubole", "Hive/Qubole partition registration: kbackup writes _SUCCESS but registers no partitions"),
    ("secor.qubole.timeout.ms", "Hive/Qubole partition registration: kbackup writes _SUCCESS but registers no partitions"),
    ("qubole.", "Hive/Qubole partition registration: kbackup writes _SUCCESS but registers no partitions"),
    ("hive.table.prefix", "Hive/Qubole partition registration: kbackup writes _SUCCESS but registers no partitions"),
    ("secor.hive.prefix", "Hive/Qubole partition registration: kbackup writes _SUCCESS but registers no partitions"),
    ("secor.finalizer.lookback.periods", "Secor's finalizer walks back this many periods: kbackup marks each date as it completes"),
    ("parquet.", "settings of the Parquet writers, which kbackup does not map"),
    ("secor.orc.", "settings of the ORC writer, which kbackup does not map"),
    ("secor.avro.", "settings of the Avro parsers and writers, which kbackup does not map"),
    ("schema.registry.url", "settings of the Avro parsers and writers, which kbackup does not map"),
    ("secor.thrift.", "settings of the Thrift parser, which kbackup does not map"),
    ("secor.protobuf.", "settings of the Protobuf parser, which kbackup does not map"),
    ("message.timestamp.id", "a Thrift parser setting"),
    ("message.timestamp.type", "a Thrift parser setting"),
    ("secor.file.reader.Delimiter", "Secor's readers' setting: kbackup's readers read what its writer writes"),
    ("kafka.consumer.timeout.ms", "Secor's legacy consumer"),
    ("kafka.consumer.auto.offset.reset", "Secor's legacy consumer (kafka.new.consumer.auto.offset.reset is mapped)"),
    ("kafka.dual.commit.enabled", "Secor's legacy consumer"),
    ("kafka.rebalance.max.retries", "Secor's legacy consumer"),
    ("kafka.rebalance.backoff.ms", "Secor's legacy consumer"),
    ("kafka.socket.receive.buffer.bytes", "Secor's Kafka client tuning: set librdkafka's in a TOML config's [kafka.properties]"),
    ("kafka.fetch.", "Secor's Kafka client tuning: set librdkafka's in a TOML config's [kafka.properties]"),
    ("kafka.partition.assignment.strategy", "Secor's Kafka client: kbackup's group assignment is its own"),
    ("kafka.new.consumer.partition.assignment.strategy.class", "Secor's Kafka client: kbackup's group assignment is its own"),
    ("kafka.client.className", "Secor's Kafka client classes"),
    ("kafka.message.iterator.className", "Secor's Kafka client classes"),
    ("kafka.message.timestamp.className", "Secor's Kafka client classes"),
    ("kafka.new.consumer.poll.timeout.seconds", "Secor's Kafka client tuning: librdkafka polls by itself"),
    ("kafka.new.consumer.max.poll.records", "Secor's Kafka client tuning: librdkafka batches by itself"),
    ("kafka.new.consumer.request.timeout.ms", "Secor's Kafka client tuning: set librdkafka's in a TOML config's [kafka.properties]"),
    ("kafka.new.consumer.max.poll.interval.ms", "Secor's Kafka client tuning: set librdkafka's in a TOML config's [kafka.properties]"),
    ("zookeeper.session.timeout.ms", "Secor's ZooKeeper client: takeover and handback use their own"),
    ("zookeeper.sync.time.ms", "Secor's ZooKeeper client: takeover and handback use their own"),
    ("secor.kafka.perf_topic_prefix", "Secor's performance test"),
];

/// The reason a Secor key needs nothing from kbackup, if it is one.
fn secor_only(key: &str) -> Option<&'static str> {
    SECOR_ONLY.iter().find(|(k, _)| if k.ends_with('.') { key.starts_with(k) } else { key == *k }).map(|(_, why)| *why)
}

/// The parser that dates or places Secor's messages (`secor.message.parser.class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    /// Sunbird's fork: a timestamp field, a fallback field, an input pattern, prefix routing.
    PatternDate,
    /// A JSON number (seconds, milliseconds, micro- or nanoseconds).
    Json,
    /// A JSON string read with `message.timestamp.input.pattern`; only day folders.
    Date,
    /// An ISO-8601 JSON string.
    Iso8601,
    /// A JSON number, below a folder named by another field's value.
    SplitByField,
    /// `offset=<N>` folders: no date.
    Offset,
    /// `dt=<date>/offset=<N>` folders.
    DailyOffset,
}

impl Parser {
    /// The parser a config names; formats kbackup cannot read are refused, naming the class.
    pub fn of(class: Option<&str>) -> Result<Parser, ConfigError> {
        let Some(class) = class else { return Ok(Parser::PatternDate) };
        let short = class.rsplit('.').next().unwrap_or(class);
        let refuse = |what: &str| {
            Err(err(
                "secor.message.parser.class",
                format!("`{class}`: {what}; kbackup reads JSON values with JsonMessageParser, DateMessageParser, Iso8601MessageParser, SplitByFieldMessageParser, OffsetMessageParser, DailyOffsetMessageParser or PatternDateMessageParser (docs/runbook.md, \"Secor's parsers and writers\")"),
            ))
        };
        Ok(match short {
            "PatternDateMessageParser" => Parser::PatternDate,
            "JsonMessageParser" => Parser::Json,
            "DateMessageParser" => Parser::Date,
            "Iso8601MessageParser" => Parser::Iso8601,
            "SplitByFieldMessageParser" => Parser::SplitByField,
            "OffsetMessageParser" => Parser::Offset,
            "DailyOffsetMessageParser" => Parser::DailyOffset,
            "ThriftMessageParser" => return refuse("Thrift messages are not read by kbackup"),
            "ProtobufMessageParser" => return refuse("Protobuf messages are not read by kbackup"),
            "AvroMessageParser" | "AvroIso8601MessageParser" | "AvroSplitByFieldMessageParser" => {
                return refuse("Avro messages are not read by kbackup")
            }
            "MessagePackParser" => return refuse("MessagePack messages are not read by kbackup"),
            "RegexMessageParser" => return refuse("timestamps found by a regular expression over the raw message are not read by kbackup"),
            _ => return refuse("a parser kbackup does not know"),
        })
    }

    /// Secor's own name for it.
    pub fn name(self) -> &'static str {
        match self {
            Parser::PatternDate => "PatternDateMessageParser",
            Parser::Json => "JsonMessageParser",
            Parser::Date => "DateMessageParser",
            Parser::Iso8601 => "Iso8601MessageParser",
            Parser::SplitByField => "SplitByFieldMessageParser",
            Parser::Offset => "OffsetMessageParser",
            Parser::DailyOffset => "DailyOffsetMessageParser",
        }
    }
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// Converts a Java `SimpleDateFormat` pattern to strftime; the error names `key`.
pub fn java_date_pattern(key: &str, p: &str) -> Result<String, ConfigError> {
    crate::event_date::strftime_from_java(p).map_err(|e| err(key, e.to_string()))
}

/// Maps Secor properties to a kbackup config.
pub fn map(props: &Properties) -> Result<Mapped, ConfigError> {
    let get = |k: &str| props.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let mut notes = Vec::new();

    let host = get("kafka.seed.broker.host").ok_or_else(|| err("kafka.seed.broker.host", "is required"))?;
    let port = get("kafka.seed.broker.port").unwrap_or_else(|| "9092".into());
    let brokers = if host.contains(':') || host.contains(',') { host } else { format!("{host}:{port}") };
    let group_id = get("secor.kafka.group").ok_or_else(|| err("secor.kafka.group", "is required"))?;

    // Secor's new consumer subscribes to `kafka.new.consumer.topic.list` when it is set, else to
    // the `secor.kafka.topic_filter` regex; kbackup subscribes to names. Dots are taken
    // literally; `a|b` lists two.
    let names: Vec<String> = match get("kafka.new.consumer.topic.list") {
        Some(list) => list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        None => {
            let filter = get("secor.kafka.topic_filter").ok_or_else(|| err("secor.kafka.topic_filter", "is required"))?;
            let names: Vec<String> = filter.split('|').map(|s| s.trim().replace("\\.", ".")).collect();
            if names.iter().any(|n| n.is_empty() || n.contains(['*', '+', '?', '[', ']', '(', ')', '^', '$', '{', '}'])) {
                return Err(err("secor.kafka.topic_filter", format!("`{filter}` is a regex; kbackup needs topic names (use `a|b` for several)")));
            }
            names
        }
    };
    if let Some(b) = get("secor.kafka.topic_blacklist") {
        return Err(err(
            "secor.kafka.topic_blacklist",
            format!("`{b}`: kbackup subscribes to the topics named in secor.kafka.topic_filter; leave the excluded ones out of it"),
        ));
    }

    // Which store: Secor picks it by `secor.cloud.service` and the upload manager class.
    // Which store: Secor picks it by `cloud.service` (older configs: `secor.cloud.service`) and
    // the upload manager class.
    let manager = get("secor.upload.manager.class").unwrap_or_default();
    let (service_key, service) = match (get("cloud.service"), get("secor.cloud.service")) {
        (Some(a), Some(b)) if a != b => return Err(err("cloud.service", format!("`{a}`, but secor.cloud.service says `{b}`: keep one"))),
        (Some(a), _) => ("cloud.service", Some(a)),
        (None, b) => ("secor.cloud.service", b),
    };
    let by_manager = if manager.contains("S3UploadManager") {
        Some(Store::S3)
    } else if manager.contains("GsUploadManager") || manager.contains("GSUploadManager") {
        Some(Store::Gcs)
    } else if manager.contains("AzureUploadManager") {
        Some(Store::Azure)
    } else if manager.is_empty() {
        None
    } else {
        return Err(err(
            "secor.upload.manager.class",
            format!("`{manager}`: kbackup uploads to Azure Blob, S3 or GCS (AzureUploadManager, S3UploadManager, GsUploadManager)"),
        ));
    };
    let by_service = match service.as_deref() {
        None => None,
        Some("S3" | "s3") => Some(Store::S3),
        Some("GS" | "gs" | "GCS" | "gcs") => Some(Store::Gcs),
        Some("Azure" | "azure") => Some(Store::Azure),
        Some(other) => return Err(err(service_key, format!("`{other}`: kbackup supports Azure, S3 and GS"))),
    };
    // Secor uploads with its upload manager; `cloud.service` only points its readers and
    // finalizer (Secor's defaults say S3 whatever the manager), so the manager decides.
    let store = match (by_service, by_manager) {
        (Some(a), Some(b)) if a != b => {
            notes.push(format!(
                "{service_key}={} names {}, but secor.upload.manager.class uploads to {}: kbackup writes where Secor's uploads went ({})",
                service.clone().unwrap_or_default(),
                a.name(),
                b.name(),
                b.name()
            ));
            b
        }
        (_, Some(s)) | (Some(s), None) => s,
        (None, None) => Store::Azure,
    };
    let parser = Parser::of(get("secor.message.parser.class").as_deref())?;
    let file_format = match get("secor.file.reader.writer.factory") {
        // Missing only without Secor's common properties (which set SequenceFiles): the fork's text.
        None => FileFormat::Text,
        Some(f) => {
            let short = f.rsplit('.').next().unwrap_or(&f).to_string();
            match short.as_str() {
                "SequenceFileReaderWriterFactory" => FileFormat::SequenceFile,
                "DelimitedTextFileReaderWriterFactory" | "FlexibleDelimitedFileReaderWriterFactory" => {
                    if let Some(d) = props.get("secor.file.writer.Delimiter").filter(|d| !d.is_empty() && *d != "\n") {
                        return Err(err("secor.file.writer.Delimiter", format!("{d:?}: kbackup writes one message per line (\\n)")));
                    }
                    FileFormat::Text
                }
                _ => {
                    let what = if short.contains("Parquet") {
                        "Parquet files"
                    } else if short.contains("ORC") {
                        "ORC files"
                    } else if short.contains("Avro") {
                        "Avro files"
                    } else if short.contains("MessagePack") {
                        "MessagePack SequenceFiles"
                    } else {
                        "a format kbackup does not know"
                    };
                    return Err(err(
                        "secor.file.reader.writer.factory",
                        format!("`{f}`: {what} are not written by kbackup; it writes SequenceFiles (SequenceFileReaderWriterFactory) and delimited text (DelimitedTextFileReaderWriterFactory)"),
                    ));
                }
            }
        }
    };
    refuse_unmapped_values(&get)?;
    let (storage, path_key) = if store == Store::Gcs {
        let bucket = get("secor.gs.bucket").ok_or_else(|| err("secor.gs.bucket", "is required for GCS"))?;
        let storage = StorageConfig {
            url: format!("gs://{bucket}"),
            // Empty in Secor's defaults: the environment's credentials then.
            service_account_path: get("secor.gs.credentials.path"),
            ..Default::default()
        };
        (storage, "secor.gs.path")
    } else if store == Store::S3 {
        let bucket = get("secor.s3.bucket").ok_or_else(|| err("secor.s3.bucket", "is required for S3"))?;
        let storage = StorageConfig {
            url: format!("s3://{bucket}"),
            region: get("aws.region"),
            endpoint: get("aws.endpoint"),
            access_key_id: get("aws.access.key"),
            secret_access_key: get("aws.secret.key"),
            session_token: get("aws.session.token"),
            // S3-compatible servers behind an endpoint want path-style requests, as Secor sends.
            virtual_hosted_style: get("aws.endpoint").map(|_| false),
            ..Default::default()
        };
        (storage, "secor.s3.path")
    } else {
        let container = get("secor.azure.container.name").ok_or_else(|| err("secor.azure.container.name", "is required"))?;
        let account = get("secor.azure.account.name");
        let endpoint = match (&account, get("secor.azure.endpoints.protocol")) {
            (Some(a), Some(proto)) if proto == "http" || proto == "https" => Some(format!("{proto}://{a}.blob.core.windows.net")),
            (_, Some(proto)) if proto != "http" && proto != "https" => {
                return Err(err("secor.azure.endpoints.protocol", format!("`{proto}`: expected http or https")))
            }
            _ => None,
        };
        let storage = StorageConfig {
            url: format!("az://{container}"),
            account,
            access_key: get("secor.azure.account.key"),
            fallback_endpoint: endpoint.filter(|e| e.starts_with("http://")),
            ..Default::default()
        };
        (storage, "secor.azure.path")
    };

    let path = get(path_key).ok_or_else(|| err(path_key, "is required"))?;
    let naming = naming(&get, props, parser, file_format, &mut notes)?;
    // Where Secor kept its position: `takeover` reads it, `handback` writes it, and `run`
    // refuses to resume from a commit Secor's auto-commit made past what it uploaded.
    let secor = match get("zookeeper.quorum") {
        Some(quorum) => Some(SecorConfig {
            zookeeper: quorum.split(',').map(str::trim).collect::<Vec<_>>().join(","),
            zookeeper_path: get("kafka.zookeeper.path").unwrap_or_else(|| "/".into()),
            group: None,
            offsets_storage: match get("kafka.offsets.storage").as_deref() {
                None | Some("zookeeper") => OffsetsStorage::Zookeeper,
                Some("kafka") => OffsetsStorage::Kafka,
                Some(other) => return Err(err("kafka.offsets.storage", format!("`{other}`: expected zookeeper or kafka"))),
            },
        }),
        None => {
            notes.push("no zookeeper.quorum: kbackup cannot read where Secor stopped uploading; see `kbackup takeover` in docs/runbook.md".into());
            None
        }
    };
    // Where a partition without any committed position starts, for Secor and for kbackup.
    let mut kafka_properties = BTreeMap::new();
    if let Some(reset) = get("kafka.new.consumer.auto.offset.reset") {
        if !matches!(reset.as_str(), "earliest" | "latest") {
            return Err(err("kafka.new.consumer.auto.offset.reset", format!("`{reset}`: expected earliest or latest")));
        }
        kafka_properties.insert("auto.offset.reset".to_string(), reset);
    }
    if let Some(name) = get("kafka.new.consumer.sasl.kerberos.service.name") {
        kafka_properties.insert("sasl.kerberos.service.name".to_string(), name);
    }
    if let Some(level) = get("kafka.new.consumer.isolation.level") {
        kafka_properties.insert("isolation.level".to_string(), level);
    }
    let security = kafka_security(&get)?;
    let used_security: Vec<String> = security.used.clone();
    kafka_properties.extend(security.properties);
    notes.extend(security.notes);
    let num = |k: &str, default: u64| -> Result<u64, ConfigError> {
        get(k).map(|v| v.parse::<u64>().map_err(|_| err(k, format!("`{v}` is not a whole number")))).unwrap_or(Ok(default))
    };

    let topics = names
        .iter()
        .map(|name| -> Result<TopicConfig, ConfigError> {
            let n = naming.clone();
            Ok(TopicConfig {
                name: name.clone(),
                path: path.clone(),
                file_pattern: n.file_pattern,
                format: crate::config::Format::Value,
                compression_set: Some(n.compression),
                compression_level: 1,
                timestamp_fields: n.timestamp_fields,
                timestamp_input_pattern: n.timestamp_input_pattern,
                message_timezone: n.message_timezone,
                output_timezone: n.output_timezone,
                date_format: n.date_format,
                max_file_bytes: num("secor.max.file.size.bytes", 200_000_000)?,
                max_file_age_secs: num("secor.max.file.age.seconds", 3600)?,
                prefix_field: n.prefix_field,
                prefix_map: n.prefix_map,
                invalid_date: n.invalid_date,
                error_path: None,
                earliest_event_date: crate::config::default_earliest(),
                latest_event_date: crate::config::default_latest(),
                generation: num("secor.generation", 1)? as u32,
                completion_markers: None,
                completion_grace_secs: match get("partitioner.finalizer.delay.seconds") {
                    Some(_) => num("partitioner.finalizer.delay.seconds", 0)?,
                    None => crate::config::default_completion_grace(),
                },
                completion_start_date: None,
                layout_kind: n.layout_kind,
                granularity: n.granularity,
                date_prefix: n.date_prefix,
                hour_prefix: n.hour_prefix,
                minute_prefix: n.minute_prefix,
                file_format,
                file_extension: n.file_extension,
                parquet_shred_set: None,
                record_time: n.record_time,
                prefix_as_value: n.prefix_as_value,
                success_files: None,
                offset_buckets: n.offset_buckets,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut ignored = Vec::new();
    let mut secor_only_keys = Vec::new();
    for k in props.keys() {
        if MAPPED.contains(&k.as_str()) || used_security.contains(k) || naming.used.contains(&k.as_str()) {
            continue;
        }
        match secor_only(k) {
            Some(why) => secor_only_keys.push((k.clone(), why)),
            // Secor's own defaults list many keys with empty values: unset, whatever they are.
            None if props[k].trim().is_empty() => {}
            None if naming.other_parsers.contains(&k.as_str()) => {
                secor_only_keys.push((k.clone(), "read by another of Secor's parsers than the config's secor.message.parser.class"))
            }
            None => ignored.push(k.clone()),
        }
    }

    let config = Config {
        kafka: KafkaConfig { brokers, group_id, properties: kafka_properties, properties_from_env: BTreeMap::new() },
        storage,
        topics,
        writer: WriterConfig::default(),
        secor,
    };
    // The same validation as a TOML config, so errors read the same way.
    config.validate().map_err(|e| match e {
        ConfigError::Invalid { key, message } => ConfigError::Invalid { key: secor_key_for(&key), message },
        other => other,
    })?;
    Ok(Mapped { config, ignored, secor_only: secor_only_keys, notes })
}

/// Keys the mapping reads whatever the parser (the naming keys are in [`naming`]).
const MAPPED: &[&str] = &[
    "include",
    "kafka.seed.broker.host",
    "kafka.seed.broker.port",
    "secor.kafka.group",
    "secor.kafka.topic_filter",
    "secor.kafka.topic_blacklist",
    "kafka.new.consumer.topic.list",
    "kafka.new.consumer.isolation.level",
    "secor.message.parser.class",
    "secor.file.reader.writer.factory",
    "secor.file.writer.Delimiter",
    "secor.upload.manager.class",
    "cloud.service",
    "secor.cloud.service",
    "secor.azure.account.name",
    "secor.azure.account.key",
    "secor.azure.endpoints.protocol",
    "secor.azure.container.name",
    "secor.azure.path",
    "secor.s3.bucket",
    "secor.s3.path",
    "secor.gs.bucket",
    "secor.gs.path",
    "secor.gs.credentials.path",
    "aws.access.key",
    "aws.secret.key",
    "aws.session.token",
    "aws.region",
    "aws.endpoint",
    "aws.client.pathstyleaccess",
    "secor.max.file.size.bytes",
    "secor.max.file.age.seconds",
    "secor.generation",
    "partitioner.finalizer.delay.seconds",
    "zookeeper.quorum",
    "kafka.zookeeper.path",
    "kafka.offsets.storage",
    "kafka.new.consumer.auto.offset.reset",
    "kafka.new.consumer.sasl.kerberos.service.name",
    // Refused unless unset or their defaults (`refuse_unmapped_values`).
    "secor.s3.prefix.md5hash",
    "secor.s3.alter.path.date",
    "secor.s3.alternative.path",
    "aws.role",
    "aws.sse.type",
    "aws.sse.customer.key",
    "aws.sse.kms.key",
    "aws.proxy.isEnabled",
    "aws.proxy.http.host",
    "aws.proxy.http.port",
    "secor.message.transformer.class",
    "kafka.new.consumer.sasl.client.callback.handler.class",
    "kafka.new.consumer.sasl.login.callback.handler.class",
    "kafka.new.consumer.sasl.login.class",
];

/// Settings whose values would change where or how files land, and that kbackup does not
/// map: refused unless unset (or at Secor's defaults), naming the key and what to do instead.
fn refuse_unmapped_values(get: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let on = |k: &str| get(k).is_some_and(|v| truthy(&v) == Some(true));
    if on("secor.s3.prefix.md5hash") {
        return Err(err(
            "secor.s3.prefix.md5hash",
            "true: files under an MD5-hashed prefix are not written by kbackup (its readers list by topic and date)",
        ));
    }
    for k in ["secor.s3.alter.path.date", "secor.s3.alternative.path"] {
        if let Some(v) = get(k) {
            return Err(err(k, format!("`{v}`: a second path for later dates is not written by kbackup; point secor.s3.path at the path to write")));
        }
    }
    if let Some(v) = get("aws.role") {
        return Err(err(
            "aws.role",
            format!(
                "`{v}`: assuming a role is not mapped; give kbackup the role through its environment (AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE)"
            ),
        ));
    }
    for k in ["aws.sse.type", "aws.sse.customer.key", "aws.sse.kms.key"] {
        if get(k).is_some() {
            return Err(err(k, "per-request server-side encryption is not mapped: set the bucket's default encryption (SSE-S3 or SSE-KMS), which S3 applies to every upload"));
        }
    }
    if on("aws.proxy.isEnabled") {
        return Err(err("aws.proxy.isEnabled", "true: set HTTPS_PROXY (and NO_PROXY) in kbackup's environment instead"));
    }
    if let Some(t) = get("secor.message.transformer.class").filter(|t| !t.ends_with("IdentityMessageTransformer")) {
        return Err(err("secor.message.transformer.class", format!("`{t}`: kbackup stores messages as Kafka holds them; it runs no transformer")));
    }
    for k in [
        "kafka.new.consumer.sasl.client.callback.handler.class",
        "kafka.new.consumer.sasl.login.callback.handler.class",
        "kafka.new.consumer.sasl.login.class",
    ] {
        if let Some(v) = get(k) {
            return Err(err(k, format!("`{v}`: a Java class librdkafka cannot load; set librdkafka's sasl.* in a TOML config's [kafka.properties]")));
        }
    }
    Ok(())
}

/// A Java properties boolean as Commons Configuration reads it.
fn truthy(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// How files are named and messages dated, from the parser's keys.
#[derive(Debug, Clone)]
struct Naming {
    layout_kind: LayoutKind,
    granularity: Granularity,
    date_prefix: String,
    hour_prefix: String,
    minute_prefix: String,
    file_pattern: String,
    date_format: String,
    compression: Compression,
    file_extension: Option<String>,
    timestamp_fields: Vec<String>,
    timestamp_input_pattern: Option<String>,
    message_timezone: String,
    output_timezone: String,
    invalid_date: String,
    record_time: RecordTime,
    prefix_field: Option<String>,
    prefix_map: BTreeMap<String, String>,
    prefix_as_value: bool,
    offset_buckets: Option<OffsetBuckets>,
    /// The keys read.
    used: Vec<&'static str>,
    /// Keys of the other parsers (named as such, not as unknown).
    other_parsers: Vec<&'static str>,
}

/// Stock Secor's partitioner keys (the folders of the timestamp parsers).
const PARTITIONER_KEYS: [&str; 8] = [
    "partitioner.granularity.hour",
    "partitioner.granularity.minute",
    "partitioner.granularity.date.prefix",
    "partitioner.granularity.hour.prefix",
    "partitioner.granularity.minute.prefix",
    "partitioner.granularity.date.format",
    "partitioner.granularity.hour.format",
    "partitioner.granularity.minute.format",
];

/// Every key a parser reads (with [`PARTITIONER_KEYS`]), so that a key of another parser is
/// named as such.
const PARSER_KEYS: &[&str] = &[
    "secor.s3.output_file_pattern",
    "secor.compression.codec",
    "secor.file.extension",
    "message.timestamp.name",
    "message.timestamp.name.separator",
    "message.fallback.timestamp.name",
    "message.timestamp.input.pattern",
    "message.timestamp.required",
    "secor.message.timezone",
    "secor.parser.timezone",
    "secor.partition.output_dt_format",
    "secor.partition.prefix.enable",
    "secor.partition.prefix.identifier",
    "secor.partition.prefix.mapping",
    "message.split.field.name",
    "kafka.useTimestamp",
    "secor.offsets.per.partition",
    "secor.offsets.prefix",
];

/// The date of epoch time 0 in `tz`: where Secor's timestamp parsers file a message whose time
/// they could not read (they date it 0).
fn epoch_date(tz: &str) -> String {
    let tz: chrono_tz::Tz = tz.parse().unwrap_or(chrono_tz::Tz::UTC);
    chrono::DateTime::from_timestamp(0, 0).expect("0 is a time").with_timezone(&tz).date_naive().format("%Y-%m-%d").to_string()
}

/// Maps the keys that name files and date messages, for `parser`.
fn naming(
    get: &dyn Fn(&str) -> Option<String>,
    props: &Properties,
    parser: Parser,
    format: FileFormat,
    notes: &mut Vec<String>,
) -> Result<Naming, ConfigError> {
    let mut used: Vec<&'static str> =
        vec!["secor.compression.codec", "secor.file.extension", "secor.parser.timezone", "secor.s3.output_file_pattern"];
    let flag = |k: &str| -> Result<bool, ConfigError> {
        match get(k) {
            None => Ok(false),
            Some(v) => truthy(&v).ok_or_else(|| err(k, format!("`{v}` is not true or false"))),
        }
    };
    // Secor reads these with a default that applies when the key is absent; an empty value
    // is the empty string.
    let raw_or = |k: &str, default: &str| props.get(k).map(|v| v.trim().to_string()).unwrap_or_else(|| default.to_string());
    let compression = match get("secor.compression.codec").as_deref() {
        None => Compression::None,
        Some(c) if c.ends_with("GzipCodec") => Compression::Gzip,
        Some(c) => return Err(err("secor.compression.codec", format!("`{c}`: kbackup compresses with gzip (GzipCodec) or not at all"))),
    };
    let output_timezone = get("secor.parser.timezone").unwrap_or_else(|| "UTC".into());
    let pattern = get("secor.s3.output_file_pattern");
    let mut n = Naming {
        layout_kind: LayoutKind::Secor,
        granularity: Granularity::Day,
        date_prefix: raw_or("partitioner.granularity.date.prefix", "dt="),
        hour_prefix: raw_or("partitioner.granularity.hour.prefix", "hr="),
        minute_prefix: raw_or("partitioner.granularity.minute.prefix", "min="),
        file_pattern: DEFAULT_FILE_PATTERN.into(),
        date_format: java_date_pattern(
            "partitioner.granularity.date.format",
            &get("partitioner.granularity.date.format").unwrap_or_else(|| "yyyy-MM-dd".into()),
        )?,
        compression,
        file_extension: None,
        timestamp_fields: Vec::new(),
        timestamp_input_pattern: None,
        message_timezone: output_timezone.clone(),
        invalid_date: epoch_date(&output_timezone),
        output_timezone,
        record_time: RecordTime::Never,
        prefix_field: None,
        prefix_map: BTreeMap::new(),
        prefix_as_value: false,
        offset_buckets: None,
        used: Vec::new(),
        other_parsers: Vec::new(),
    };
    // The partitioner's granularity (hour and minute folders), for the parsers that have it.
    let granularity = |n: &mut Naming, used: &mut Vec<&'static str>| -> Result<(), ConfigError> {
        used.extend(PARTITIONER_KEYS);
        for (k, want) in [("partitioner.granularity.hour.format", "HH"), ("partitioner.granularity.minute.format", "mm")] {
            if let Some(v) = get(k).filter(|v| v != want) {
                return Err(err(k, format!("`{v}`: kbackup writes hour and minute folders as {want} only")));
            }
        }
        n.granularity = match (flag("partitioner.granularity.hour")?, flag("partitioner.granularity.minute")?) {
            (_, true) => Granularity::Minute,
            (true, false) => Granularity::Hour,
            (false, false) => Granularity::Day,
        };
        Ok(())
    };
    // `message.timestamp.name` with Secor's nesting rule: split on the separator when one is set.
    let field = |used: &mut Vec<&'static str>| -> Result<String, ConfigError> {
        used.extend(["message.timestamp.name", "message.timestamp.name.separator"]);
        let name = get("message.timestamp.name").unwrap_or_else(|| "timestamp".into());
        match props.get("message.timestamp.name.separator").filter(|s| !s.is_empty()) {
            None if name.contains('.') => Err(err(
                "message.timestamp.name",
                format!("`{name}` holds `.` but no message.timestamp.name.separator is set: Secor reads a top-level key of that name, which kbackup (reading dots as nesting) cannot"),
            )),
            None => Ok(name),
            Some(sep) if sep == "." => Ok(name),
            Some(sep) => {
                let parts: Vec<&str> = name.split(sep.as_str()).collect();
                if parts.iter().any(|p| p.contains('.') || p.is_empty()) {
                    return Err(err("message.timestamp.name", format!("`{name}` split on {sep:?} gives a key holding `.` or an empty key, which kbackup cannot read")));
                }
                Ok(parts.join("."))
            }
        }
    };
    let required_note = |notes: &mut Vec<String>, used: &mut Vec<&'static str>| {
        used.push("message.timestamp.required");
        if get("message.timestamp.required").and_then(|v| truthy(&v)) == Some(true) {
            notes.push(format!(
                "message.timestamp.required=true: where Secor drops a message without a timestamp (counting it as bad), kbackup stores it under {} and counts it (kbackup_invalid_messages_total)",
                "the invalid date"
            ));
        }
    };
    match parser {
        Parser::PatternDate => {
            used.extend([
                "message.timestamp.name",
                "message.fallback.timestamp.name",
                "message.timestamp.input.pattern",
                "secor.message.timezone",
                "secor.partition.output_dt_format",
                "secor.partition.prefix.enable",
                "secor.partition.prefix.identifier",
                "secor.partition.prefix.mapping",
            ]);
            n.timestamp_fields.push(get("message.timestamp.name").unwrap_or_else(|| "timestamp".into()));
            if let Some(f) = get("message.fallback.timestamp.name") {
                n.timestamp_fields.push(f);
            }
            n.timestamp_input_pattern =
                get("message.timestamp.input.pattern").map(|p| java_date_pattern("message.timestamp.input.pattern", &p)).transpose()?;
            n.message_timezone = get("secor.message.timezone").unwrap_or_else(|| "UTC".into());
            n.date_format = java_date_pattern(
                "secor.partition.output_dt_format",
                &get("secor.partition.output_dt_format").unwrap_or_else(|| "yyyy-MM-dd".into()),
            )?;
            // The fork's parser files events without any time by the clock; kbackup by the
            // record time (deterministic), and unreadable values under 1970-01-01 like it.
            n.record_time = RecordTime::Fallback;
            n.invalid_date = "1970-01-01".into();
            if flag("secor.partition.prefix.enable")? {
                let field = get("secor.partition.prefix.identifier")
                    .ok_or_else(|| err("secor.partition.prefix.identifier", "is required when secor.partition.prefix.enable=true"))?;
                let mapping = get("secor.partition.prefix.mapping")
                    .ok_or_else(|| err("secor.partition.prefix.mapping", "is required when secor.partition.prefix.enable=true"))?;
                n.prefix_map = serde_json::from_str(&mapping)
                    .map_err(|e| err("secor.partition.prefix.mapping", format!("not a JSON object of strings: {e}")))?;
                n.prefix_field = Some(field);
            }
            // Without a pattern the fork writes stock Secor's layout, its day folder the bare date.
            n.date_prefix = String::new();
        }
        Parser::Json | Parser::Iso8601 | Parser::SplitByField => {
            granularity(&mut n, &mut used)?;
            n.timestamp_fields.push(field(&mut used)?);
            required_note(notes, &mut used);
            if parser == Parser::Iso8601 {
                notes.push("Iso8601MessageParser: a time without an offset is read in UTC (Secor reads it in the JVM's zone)".into());
                n.message_timezone = "UTC".into();
            }
            if parser == Parser::SplitByField {
                used.push("message.split.field.name");
                n.prefix_field =
                    Some(get("message.split.field.name").ok_or_else(|| err("message.split.field.name", "is required by SplitByFieldMessageParser"))?);
                n.prefix_as_value = true;
                if pattern.is_some() {
                    return Err(err(
                        "secor.s3.output_file_pattern",
                        "with SplitByFieldMessageParser the pattern's {partition} is the split field's value, without the date: kbackup cannot write or read such names; remove the pattern",
                    ));
                }
            } else {
                used.push("kafka.useTimestamp");
                if flag("kafka.useTimestamp")? {
                    n.record_time = RecordTime::Only;
                }
            }
        }
        Parser::Date => {
            used.extend(["partitioner.granularity.date.prefix", "partitioner.granularity.date.format", "message.timestamp.input.pattern"]);
            n.timestamp_fields.push(field(&mut used)?);
            let p =
                get("message.timestamp.input.pattern").ok_or_else(|| err("message.timestamp.input.pattern", "is required by DateMessageParser"))?;
            n.timestamp_input_pattern = Some(java_date_pattern("message.timestamp.input.pattern", &p)?);
            // DateMessageParser files what it cannot read under dt=1970-01-01 whatever the zone.
            n.invalid_date = "1970-01-01".into();
            if flag("partitioner.granularity.hour")? || flag("partitioner.granularity.minute")? {
                notes.push("DateMessageParser writes day folders only (it ignores partitioner.granularity.hour and .minute); so does kbackup".into());
            }
        }
        Parser::Offset | Parser::DailyOffset => {
            used.extend(["secor.offsets.per.partition", "secor.offsets.prefix"]);
            let per = match get("secor.offsets.per.partition") {
                None => 10_000_000,
                Some(v) => v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| err("secor.offsets.per.partition", format!("`{v}` is not a positive whole number")))?,
            };
            n.offset_buckets = Some(OffsetBuckets { per, prefix: raw_or("secor.offsets.prefix", "offset="), daily: parser == Parser::DailyOffset });
            n.record_time = RecordTime::Only;
            if parser == Parser::DailyOffset {
                granularity(&mut n, &mut used)?;
                notes.push("DailyOffsetMessageParser: kbackup dates the dt= folder by each message's Kafka record time (Secor by its clock when it reads the message), so a file rebuilt after a restart lands where it did".into());
            }
        }
    }
    match pattern {
        // Sunbird's fork names files by the pattern (stock Secor ignores the key).
        Some(p) => {
            n.layout_kind = LayoutKind::Pattern;
            n.file_pattern = p;
            if parser != Parser::PatternDate {
                notes.push("secor.s3.output_file_pattern is set: files are named by it, as Sunbird's fork does (stock Secor ignores the key: remove it to keep stock Secor's layout)".into());
                // The fork renders {partition} as the parser's first folder: `dt=<date>`.
                n.date_format = format!("{}{}", n.date_prefix, n.date_format);
                n.granularity = Granularity::Day;
            }
            if n.offset_buckets.is_some() {
                return Err(err(
                    "secor.s3.output_file_pattern",
                    format!("with {} the pattern's {{partition}} is an offset folder, not a date: remove the pattern", parser.name()),
                ));
            }
            match (get("secor.file.extension").as_deref(), compression) {
                (None, _) | (Some(".gz"), Compression::Gzip) => {}
                (Some(ext), _) => {
                    return Err(err(
                        "secor.file.extension",
                        format!("`{ext}` with this codec and a pattern: kbackup appends .gz for gzip and nothing otherwise"),
                    ))
                }
            }
        }
        None => n.file_extension = get("secor.file.extension"),
    }
    if format == FileFormat::SequenceFile && compression == Compression::Gzip {
        notes.push("SequenceFiles with GzipCodec are block-compressed, as Secor writes them (Hadoop and Spark read them natively)".into());
    }
    n.used = used;
    n.other_parsers = PARSER_KEYS.iter().chain(&PARTITIONER_KEYS).copied().filter(|k| !n.used.contains(k)).collect();
    Ok(n)
}

/// The store a Secor config uploads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Azure,
    S3,
    Gcs,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Azure => "Azure",
            Store::S3 => "S3",
            Store::Gcs => "GCS",
        }
    }
}

/// Secor's consumer security settings mapped to librdkafka's.
struct Security {
    properties: BTreeMap<String, String>,
    /// The Secor keys read.
    used: Vec<String>,
    notes: Vec<String>,
}

/// Secor's consumer security keys (`kafka.new.consumer.<x>` in Sunbird's fork, `kafka.<x>` in
/// other versions) as librdkafka properties. Java-only settings librdkafka cannot read (a JKS
/// truststore, a Kerberos login module) are errors naming the key and what to use instead.
fn kafka_security(get: &dyn Fn(&str) -> Option<String>) -> Result<Security, ConfigError> {
    let mut out = Security { properties: BTreeMap::new(), used: Vec::new(), notes: Vec::new() };
    let mut read = |name: &str| -> Option<(String, String)> {
        for key in [format!("kafka.new.consumer.{name}"), format!("kafka.{name}")] {
            if let Some(v) = get(&key) {
                out.used.push(key.clone());
                return Some((key, v));
            }
        }
        None
    };
    if let Some((_, v)) = read("security.protocol") {
        out.properties.insert("security.protocol".into(), v);
    }
    if let Some((_, v)) = read("sasl.mechanism") {
        out.properties.insert("sasl.mechanism".into(), v);
    }
    if let Some((key, jaas)) = read("sasl.jaas.config") {
        if !jaas.contains("PlainLoginModule") && !jaas.contains("ScramLoginModule") {
            return Err(err(&key, "only PlainLoginModule and ScramLoginModule logins map to librdkafka; set sasl.* in a TOML config for others"));
        }
        // `username="…" password="…"`: the password is never echoed in an error.
        let field = |name: &str| -> Option<String> {
            let start = jaas.find(&format!("{name}=\""))? + name.len() + 2;
            let end = jaas[start..].find('"')? + start;
            Some(jaas[start..end].to_string())
        };
        let (Some(user), Some(password)) = (field("username"), field("password")) else {
            return Err(err(&key, "needs username=\"…\" and password=\"…\""));
        };
        out.properties.insert("sasl.username".into(), user);
        out.properties.insert("sasl.password".into(), password);
    }
    if let Some((key, _)) = read("ssl.truststore.location") {
        return Err(err(
            &key,
            "a Java truststore cannot be read by librdkafka: export the CA as PEM (keytool -exportcert -rfc) and set ssl.ca.location in a TOML config's [kafka.properties]",
        ));
    }
    read("ssl.truststore.password");
    read("ssl.truststore.type");
    if let Some((key, location)) = read("ssl.keystore.location") {
        let kind = read("ssl.keystore.type").map(|(_, v)| v).unwrap_or_else(|| "JKS".into());
        if !kind.eq_ignore_ascii_case("PKCS12") {
            return Err(err(&key, format!("a {kind} keystore cannot be read by librdkafka: convert it to PKCS12 (keytool -importkeystore) and set kafka.new.consumer.ssl.keystore.type=PKCS12")));
        }
        out.properties.insert("ssl.keystore.location".into(), location);
        if let Some((_, v)) = read("ssl.keystore.password") {
            out.properties.insert("ssl.keystore.password".into(), v);
        }
    }
    if let Some((_, v)) = read("ssl.key.password") {
        out.properties.insert("ssl.key.password".into(), v);
    }
    for java_only in ["ssl.enabled.protocols", "ssl.protocol", "ssl.provider"] {
        if let Some((key, _)) = read(java_only) {
            out.notes.push(format!("{key}: a Java TLS setting; librdkafka negotiates TLS 1.2 or newer by itself"));
        }
    }
    Ok(out)
}

/// Names the Secor key behind a kbackup key in validation errors.
fn secor_key_for(key: &str) -> String {
    let field = key.rsplit('.').next().unwrap_or(key);
    let secor = match field {
        "file_pattern" => "secor.s3.output_file_pattern",
        "path" => "secor.azure.path, secor.s3.path or secor.gs.path",
        "output_timezone" => "secor.parser.timezone",
        "message_timezone" => "secor.message.timezone",
        "date_format" => "secor.partition.output_dt_format",
        "timestamp_input_pattern" => "message.timestamp.input.pattern",
        "prefix_map" => "secor.partition.prefix.mapping",
        "max_file_bytes" => "secor.max.file.size.bytes",
        "max_file_age_secs" => "secor.max.file.age.seconds",
        "url" => "secor.azure.container.name, secor.s3.bucket or secor.gs.bucket",
        "zookeeper" => "zookeeper.quorum",
        "zookeeper_path" => "kafka.zookeeper.path",
        _ => return key.to_string(),
    };
    format!("{secor} ({key})")
}

/// What became of the keys, as TOML comments: the Secor-only ones grouped by reason, the
/// notes, and the unknown ones.
pub fn account(m: &Mapped) -> String {
    let mut out = String::new();
    if !m.secor_only.is_empty() {
        out.push_str("# Secor keys kbackup has no use for, and why:\n");
        let mut by_reason: Vec<(&str, Vec<&str>)> = Vec::new();
        for (k, why) in &m.secor_only {
            match by_reason.iter_mut().find(|(w, _)| w == why) {
                Some((_, keys)) => keys.push(k),
                None => by_reason.push((why, vec![k])),
            }
        }
        for (why, keys) in by_reason {
            out.push_str(&format!("#   {}: {why}\n", keys.join(", ")));
        }
    }
    for n in &m.notes {
        out.push_str(&format!("# note: {n}\n"));
    }
    if !m.ignored.is_empty() {
        out.push_str(&format!("# unknown keys (misspelled?), not used: {}\n", m.ignored.join(", ")));
    }
    out
}

/// The TOML equivalent, with the account key left out (set it through the environment).
pub fn to_toml(config: &Config) -> String {
    let mut c = config.clone();
    let had_key = c.storage.access_key.take().is_some();
    let had_secret = c.storage.secret_access_key.take().is_some() | c.storage.session_token.take().is_some();
    let kafka_secrets: Vec<String> = ["sasl.password", "ssl.key.password", "ssl.keystore.password"]
        .into_iter()
        .filter(|k| c.kafka.properties.remove(*k).is_some())
        .map(String::from)
        .collect();
    let mut out = String::from("# Generated by `kbackup check --secor-properties`.\n");
    if had_key {
        out.push_str("# The account key from secor.azure.account.key is not printed: set AZURE_STORAGE_ACCOUNT_KEY.\n");
    }
    if had_secret {
        out.push_str("# The secret from aws.secret.key (and aws.session.token) is not printed: set AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN).\n");
    }
    if !kafka_secrets.is_empty() {
        out.push_str(&format!(
            "# Not printed: [kafka.properties] {} from Secor's properties; add them from your secret store.\n",
            kafka_secrets.join(", ")
        ));
    }
    out.push_str(&toml::to_string_pretty(&c).expect("config serializes"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sunbird's unique backup, as their Secor deployment configures it.
    pub const SUNBIRD_UNIQUE: &str = r#"
# Kafka
kafka.seed.broker.host=kafka-1
kafka.seed.broker.port=9092
zookeeper.quorum=zk-1:2181
secor.kafka.group=telemetry-unique-backup
secor.kafka.topic_filter=prod.telemetry.unique
secor.cloud.service=Azure
secor.azure.account.name=sunbirdstore
secor.azure.account.key=c2VjcmV0a2V5c2VjcmV0a2V5
secor.azure.container.name=telemetry-data-store
secor.azure.endpoints.protocol=https
secor.azure.path=unique/raw
secor.s3.output_file_pattern={partition}-{kafkaPartition}-{currentTimestamp}.json
secor.compression.codec=org.apache.hadoop.io.compress.GzipCodec
secor.file.extension=.gz
secor.file.reader.writer.factory=com.pinterest.secor.io.impl.DelimitedTextFileReaderWriterFactory
secor.message.parser.class=com.pinterest.secor.parser.PatternDateMessageParser
message.timestamp.name=syncts
message.fallback.timestamp.name=@timestamp
message.timestamp.input.pattern=yyyy-MM-dd
secor.message.timezone=UTC
secor.parser.timezone=Asia/Kolkata
secor.partition.output_dt_format=yyyy-MM-dd
secor.max.file.size.bytes=100000000
secor.max.file.age.seconds=14400
secor.local.path=/mnt/secor_data/message_logs/partition
secor.upload.on.shutdown=true
secor.messages.per.second=10000
"#;

    fn props(text: &str) -> Properties {
        parse_properties(text).into_iter().collect()
    }

    #[test]
    fn properties_syntax() {
        let p = parse_properties("a=1\n b : 2\nc 3\n# x=y\n! z\nd=multi\\\n   line\ne=tab\\tand\\u0041\nf=\ng=a=b");
        assert_eq!(
            p,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("c".into(), "3".into()),
                ("d".into(), "multiline".into()),
                ("e".into(), "tab\tandA".into()),
                ("f".into(), "".into()),
                ("g".into(), "a=b".into()),
            ]
        );
    }

    #[test]
    fn sunbird_unique_maps_to_the_toml_config() {
        let m = map(&props(SUNBIRD_UNIQUE)).unwrap();
        let c = &m.config;
        assert_eq!(c.kafka.brokers, "kafka-1:9092");
        assert_eq!(c.kafka.group_id, "telemetry-unique-backup");
        assert_eq!(c.storage.url, "az://telemetry-data-store");
        assert_eq!(c.storage.account.as_deref(), Some("sunbirdstore"));
        let t = &c.topics[0];
        assert_eq!(t.name, "prod.telemetry.unique");
        assert_eq!(t.path, "unique/raw");
        assert_eq!(t.compression(), Compression::Gzip);
        assert_eq!(t.timestamp_fields, vec!["syncts", "@timestamp"]);
        assert_eq!(t.timestamp_input_pattern.as_deref(), Some("%Y-%m-%d"));
        assert_eq!(t.output_timezone, "Asia/Kolkata");
        assert_eq!(t.date_format, "%Y-%m-%d");
        assert_eq!((t.max_file_bytes, t.max_file_age_secs), (100_000_000, 14_400));
        assert!(m.ignored.is_empty(), "{:?}", m.ignored);
        let only: Vec<&str> = m.secor_only.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(only, vec!["secor.local.path", "secor.messages.per.second", "secor.upload.on.shutdown"]);
        assert!(m.secor_only[0].1.contains("memory"), "{:?}", m.secor_only);
        assert_eq!(t.layout_kind, LayoutKind::Pattern, "the fork's pattern names the files");
        // The shipped TOML says the same about the topic.
        let shipped = Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sunbird-unique-denorm.toml")).unwrap();
        let s = &shipped.topics[0];
        assert_eq!(
            (
                &s.path,
                &s.file_pattern,
                s.compression(),
                &s.timestamp_fields,
                &s.timestamp_input_pattern,
                &s.output_timezone,
                &s.date_format,
                s.max_file_bytes,
                s.max_file_age_secs
            ),
            (
                &t.path,
                &t.file_pattern,
                t.compression(),
                &t.timestamp_fields,
                &t.timestamp_input_pattern,
                &t.output_timezone,
                &t.date_format,
                t.max_file_bytes,
                t.max_file_age_secs
            )
        );
    }

    #[test]
    fn denorm_prefix_mapping() {
        let text = SUNBIRD_UNIQUE.replace("unique/raw", "telemetry-denormalized")
            + "secor.partition.prefix.enable=true\nsecor.partition.prefix.identifier=eid\nsecor.partition.prefix.mapping={\"ME_WORKFLOW_SUMMARY\":\"summary\",\"DEFAULT\":\"raw\"}\n";
        let t = &map(&props(&text)).unwrap().config.topics[0];
        assert_eq!(t.prefix_field.as_deref(), Some("eid"));
        assert_eq!(t.prefix_map.get("ME_WORKFLOW_SUMMARY").map(String::as_str), Some("summary"));
    }

    /// As a real stock Secor resolves its files (seen running it: a deployment file that
    /// includes secor.common.properties at its top and sets `secor.kafka.topic_filter` again
    /// subscribed to common's `.*`): includes load in place, a key's first value counts, and
    /// overrides replace it as `-D` does. The duplicate is told, never silent.
    #[test]
    fn the_first_value_counts_as_in_secor_and_overrides_replace_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("common.properties"), "secor.kafka.group=common\nsecor.max.file.age.seconds=60\n").unwrap();
        std::fs::write(dir.path().join("a.properties"), "include=common.properties\nsecor.kafka.group=a\nsecor.generation=2\n").unwrap();
        // Keys set before the defaults are included win without a word (the usual layout).
        std::fs::write(dir.path().join("own.properties"), "secor.kafka.group=own\ninclude=common.properties\n").unwrap();
        let l = load(&[dir.path().join("own.properties")], &[]).unwrap();
        assert_eq!((l.props["secor.kafka.group"].as_str(), l.notes.len()), ("own", 0), "{:?}", l.notes);
        std::fs::write(dir.path().join("b.properties"), "secor.max.file.age.seconds=120\nsecor.generation=2\n").unwrap();
        let l = load(&[dir.path().join("a.properties"), dir.path().join("b.properties")], &[]).unwrap();
        assert_eq!(l.props["secor.kafka.group"], "common", "included first, so its value counts");
        assert_eq!(l.props["secor.max.file.age.seconds"], "60");
        assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
        assert!(l.notes[0].contains("secor.kafka.group is set twice") && l.notes[0].contains("--secor-property secor.kafka.group="), "{:?}", l.notes);
        let l = load(&[dir.path().join("a.properties")], &[parse_override("secor.kafka.group=mine").unwrap()]).unwrap();
        assert_eq!(l.props["secor.kafka.group"], "mine");
        assert!(parse_override("nokey").is_err() && parse_override("=x").is_err());
    }

    #[test]
    fn keys_that_cannot_be_kept_are_named() {
        let cases = [
            ("secor.compression.codec=org.apache.hadoop.io.compress.SnappyCodec", "secor.compression.codec"),
            ("secor.kafka.topic_filter=prod.telemetry.*", "secor.kafka.topic_filter"),
            (
                "secor.file.reader.writer.factory=com.pinterest.secor.io.impl.ProtobufParquetFileReaderWriterFactory",
                "secor.file.reader.writer.factory",
            ),
            ("secor.cloud.service=Swift", "secor.cloud.service"),
            ("secor.cloud.service=GS", "secor.gs.bucket"),
            ("secor.cloud.service=S3", "secor.s3.bucket"),
            ("secor.upload.manager.class=com.pinterest.secor.uploader.SwiftUploadManager", "secor.upload.manager.class"),
            ("secor.upload.manager.class=com.pinterest.secor.uploader.GsUploadManager", "secor.gs.bucket"),
            ("secor.file.extension=.json", "secor.file.extension"),
            ("secor.partition.output_dt_format=EEE", "secor.partition.output_dt_format"),
            ("secor.parser.timezone=Asia/Kolkota", "secor.parser.timezone"),
            ("secor.s3.output_file_pattern={kafkaPartition}/{partition}.json", "secor.s3.output_file_pattern"),
            ("secor.max.file.age.seconds=soon", "secor.max.file.age.seconds"),
        ];
        for (line, key) in cases {
            let e = map(&props(&format!("{SUNBIRD_UNIQUE}\n{line}\n"))).unwrap_err().to_string();
            assert!(e.contains(key), "expected {key} in: {e}");
        }
        let e = map(&props("secor.kafka.group=x")).unwrap_err().to_string();
        assert!(e.contains("kafka.seed.broker.host"), "{e}");
    }

    #[test]
    fn secor_s3_keys_map_to_an_s3_store() {
        let text = SUNBIRD_UNIQUE
            .replace("secor.cloud.service=Azure", "secor.upload.manager.class=com.pinterest.secor.uploader.S3UploadManager")
            .replace("secor.azure.path=unique/raw", "secor.s3.path=unique/raw")
            + "\nsecor.s3.bucket=telemetry-data-store\naws.access.key=AKIDEXAMPLE\naws.secret.key=SECRETEXAMPLE\naws.region=ap-south-1\naws.endpoint=https://s3.example.internal\n";
        let m = map(&props(&text)).unwrap();
        let st = &m.config.storage;
        assert_eq!(st.url, "s3://telemetry-data-store");
        assert_eq!((st.region.as_deref(), st.endpoint.as_deref()), (Some("ap-south-1"), Some("https://s3.example.internal")));
        assert_eq!((st.access_key_id.as_deref(), st.secret_access_key.as_deref()), (Some("AKIDEXAMPLE"), Some("SECRETEXAMPLE")));
        assert_eq!(st.virtual_hosted_style, Some(false));
        assert_eq!(m.config.topics[0].path, "unique/raw");
        assert!(m.ignored.iter().all(|k| !k.starts_with("aws.") && !k.starts_with("secor.s3.")), "{:?}", m.ignored);
        let toml = to_toml(&m.config);
        assert!(!toml.contains("SECRETEXAMPLE") && toml.contains("AWS_SECRET_ACCESS_KEY"), "{toml}");
        crate::config::Config::parse(&toml, "generated").unwrap();
    }

    #[test]
    fn where_secor_kept_its_position_is_mapped() {
        let m = map(&props(SUNBIRD_UNIQUE)).unwrap();
        let s = m.config.secor.as_ref().expect("zookeeper.quorum names Secor's ZooKeeper");
        assert_eq!((s.zookeeper.as_str(), s.zookeeper_path.as_str(), s.offsets_storage), ("zk-1:2181", "/", OffsetsStorage::Zookeeper));
        assert_eq!(s.group(&m.config.kafka), "telemetry-unique-backup", "Secor's group is the config's group");
        assert!(m.config.kafka.properties.is_empty());

        let text = SUNBIRD_UNIQUE.replace("zookeeper.quorum=zk-1:2181", "zookeeper.quorum=zk-1:2181, zk-2:2181")
            + "kafka.zookeeper.path=/kafka\nkafka.offsets.storage=kafka\nkafka.new.consumer.auto.offset.reset=latest\n";
        let m = map(&props(&text)).unwrap();
        let s = m.config.secor.as_ref().unwrap();
        assert_eq!((s.zookeeper.as_str(), s.zookeeper_path.as_str(), s.offsets_storage), ("zk-1:2181,zk-2:2181", "/kafka", OffsetsStorage::Kafka));
        assert_eq!(m.config.kafka.properties.get("auto.offset.reset").map(String::as_str), Some("latest"));
        assert!(!m.ignored.iter().any(|k| k.contains("zookeeper") || k.contains("offset")), "{:?}", m.ignored);
        // The generated TOML keeps it, so a user who moves to TOML keeps the protection.
        let back = Config::parse(&to_toml(&m.config), "generated").unwrap();
        assert_eq!(back.secor, m.config.secor);

        for (line, key) in [
            ("kafka.offsets.storage=hbase", "kafka.offsets.storage"),
            ("kafka.new.consumer.auto.offset.reset=none", "kafka.new.consumer.auto.offset.reset"),
        ] {
            let e = map(&props(&format!("{SUNBIRD_UNIQUE}\n{line}\n"))).unwrap_err().to_string();
            assert!(e.contains(key), "expected {key} in: {e}");
        }
        let without = map(&props(&SUNBIRD_UNIQUE.replace("zookeeper.quorum=zk-1:2181", ""))).unwrap();
        assert!(without.config.secor.is_none());
        assert!(without.notes.iter().any(|n| n.contains("zookeeper.quorum")), "{:?}", without.notes);
    }

    #[test]
    fn secors_security_settings_map_to_librdkafka() {
        let text = format!(
            "{SUNBIRD_UNIQUE}\nkafka.new.consumer.security.protocol=SASL_SSL\nkafka.new.consumer.sasl.mechanism=SCRAM-SHA-512\n\
             kafka.new.consumer.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"secor\" password=\"hunter2hunter2\";\n"
        );
        let m = map(&props(&text)).unwrap();
        let k = &m.config.kafka.properties;
        assert_eq!(k.get("security.protocol").map(String::as_str), Some("SASL_SSL"));
        assert_eq!(k.get("sasl.mechanism").map(String::as_str), Some("SCRAM-SHA-512"));
        assert_eq!((k.get("sasl.username").map(String::as_str), k.get("sasl.password").map(String::as_str)), (Some("secor"), Some("hunter2hunter2")));
        assert!(m.ignored.iter().all(|i| !i.starts_with("kafka.new.consumer")), "{:?}", m.ignored);
        crate::consumer::validate_properties(&m.config.kafka).unwrap();
        let toml = to_toml(&m.config);
        assert!(!toml.contains("hunter2hunter2") && toml.contains("sasl.password"), "{toml}");
        // The older `kafka.<x>` form too.
        let m = map(&props(&format!("{SUNBIRD_UNIQUE}\nkafka.security.protocol=SSL\n"))).unwrap();
        assert_eq!(m.config.kafka.properties.get("security.protocol").map(String::as_str), Some("SSL"));
        // What librdkafka cannot read is named, with what to do instead; no secret in the message.
        for (line, key) in [
            ("kafka.new.consumer.ssl.truststore.location=/etc/secor/truststore.jks", "kafka.new.consumer.ssl.truststore.location"),
            ("kafka.new.consumer.ssl.keystore.location=/etc/secor/keystore.jks", "kafka.new.consumer.ssl.keystore.location"),
            ("kafka.new.consumer.sasl.jaas.config=com.sun.security.auth.module.Krb5LoginModule required;", "kafka.new.consumer.sasl.jaas.config"),
            (
                "kafka.new.consumer.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required password=\"hunter2hunter2\";",
                "username",
            ),
            ("secor.message.parser.class=com.pinterest.secor.parser.ThriftMessageParser", "secor.message.parser.class"),
        ] {
            let e = map(&props(&format!("{SUNBIRD_UNIQUE}\n{line}\n"))).unwrap_err().to_string();
            assert!(e.contains(key) && !e.contains("hunter2hunter2"), "expected {key} in: {e}");
        }
        // Secor uploads with its upload manager, whatever cloud.service says (Secor's defaults
        // say S3): the manager decides, and the difference is told.
        let m = map(&props(&(SUNBIRD_UNIQUE.replace(
            "secor.cloud.service=Azure",
            "secor.cloud.service=Azure\nsecor.upload.manager.class=com.pinterest.secor.uploader.S3UploadManager\nsecor.s3.bucket=backups\nsecor.s3.path=unique/raw",
        ))))
        .unwrap();
        assert_eq!(m.config.storage.url, "s3://backups");
        assert!(
            m.notes.iter().any(|n| n.contains("secor.cloud.service=Azure names Azure, but secor.upload.manager.class uploads to S3")),
            "{:?}",
            m.notes
        );
    }

    #[test]
    fn secor_gcs_keys_map_to_a_gs_store() {
        let text = SUNBIRD_UNIQUE.replace("secor.cloud.service=Azure", "cloud.service=GS\nsecor.upload.manager.class=com.pinterest.secor.uploader.GsUploadManager")
            + "\nsecor.gs.bucket=telemetry_store\nsecor.gs.path=unique/raw\nsecor.gs.credentials.path=/etc/secor/gcs.json\nsecor.gs.upload.direct=false\n";
        let m = map(&props(&text)).unwrap();
        let st = &m.config.storage;
        assert_eq!((st.url.as_str(), st.service_account_path.as_deref()), ("gs://telemetry_store", Some("/etc/secor/gcs.json")));
        assert_eq!(m.config.topics[0].path, "unique/raw");
        assert!(m.ignored.iter().all(|k| !k.starts_with("secor.gs.") && k != "cloud.service"), "{:?}", m.ignored);
        let e = map(&props(&format!("{text}\nsecor.cloud.service=S3\n"))).unwrap_err().to_string();
        assert!(e.contains("cloud.service") && e.contains("keep one"), "{e}");
    }

    fn stock() -> Properties {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/secor-stock");
        load(&[dir.join("secor.unique.properties")], &[]).unwrap().props
    }

    fn with(mut p: Properties, extra: &str) -> Properties {
        p.extend(parse_properties(extra));
        p
    }

    /// Stock Secor's own properties (its secor.common.properties, included kafka.properties
    /// and a deployment's file): every key is mapped, named as Secor-only with its reason, or
    /// refused; the files are stock Secor's layout and SequenceFiles.
    #[test]
    fn stock_secors_own_properties_map_with_every_key_accounted_for() {
        let m = map(&stock()).unwrap_or_else(|e| panic!("{e}"));
        assert!(m.ignored.is_empty(), "unknown keys: {:?}", m.ignored);
        let c = &m.config;
        assert_eq!(
            (c.kafka.brokers.as_str(), c.kafka.group_id.as_str(), c.storage.url.as_str()),
            ("kafka-1:9092", "secor_unique_backup", "s3://telemetry-backups")
        );
        let t = &c.topics[0];
        assert_eq!(t.name, "prod.telemetry.unique");
        assert_eq!(
            (t.layout_kind, t.file_format, t.compression(), t.granularity),
            (LayoutKind::Secor, FileFormat::SequenceFile, Compression::None, Granularity::Day)
        );
        assert_eq!(
            (t.timestamp_fields.clone(), t.record_time, t.output_timezone.as_str()),
            (vec!["syncts".to_string()], RecordTime::Never, "Asia/Kolkata")
        );
        assert_eq!((t.date_prefix.as_str(), t.date_format.as_str(), t.invalid_date.as_str(), t.generation), ("dt=", "%Y-%m-%d", "1970-01-01", 1));
        assert_eq!(t.completion_grace_secs, 3600, "partitioner.finalizer.delay.seconds");
        assert!(t.success_files() && t.markers());
        let l = t.layout().unwrap();
        assert_eq!(l.dir(None, false), "secor/raw/prod.telemetry.unique");
        let reason = |k: &str| m.secor_only.iter().find(|(x, _)| x == k).map(|(_, why)| *why);
        for k in [
            "secor.messages.per.second",
            "secor.local.path",
            "parquet.block.size",
            "secor.enable.qubole",
            "ostrich.port",
            "kafka.client.className",
            "secor.orc.message.schema.*",
        ] {
            assert!(reason(k).is_some(), "{k} is not named Secor-only: {:?}", m.secor_only);
        }
        assert!(reason("secor.enable.qubole").unwrap().contains("_SUCCESS"));
        assert!(reason("secor.partition.output_dt_format").is_none(), "an empty default is unset");
        // The generated TOML keeps all of it.
        let back = Config::parse(&to_toml(c), "generated").unwrap();
        assert_eq!(back.topics[0].layout().unwrap().dir(None, false), l.dir(None, false));
        assert_eq!((back.topics[0].file_format, back.topics[0].record_time), (t.file_format, t.record_time));
    }

    /// Each of Secor's parsers that dates or places messages maps to its folders; what kbackup
    /// cannot write is refused naming the key and the value.
    #[test]
    fn every_secor_parser_maps_or_is_refused() {
        let parser =
            |class: &str, extra: &str| map(&with(stock(), &format!("secor.message.parser.class=com.pinterest.secor.parser.{class}\n{extra}")));
        let t = |m: Mapped| m.config.topics[0].clone();

        let json = t(parser("JsonMessageParser", "partitioner.granularity.hour=true\nmessage.timestamp.name=context.syncts\nmessage.timestamp.name.separator=.\nsecor.parser.timezone=America/New_York").unwrap());
        assert_eq!(
            (json.granularity, json.timestamp_fields[0].as_str(), json.invalid_date.as_str()),
            (Granularity::Hour, "context.syncts", "1969-12-31"),
            "ts 0 in New York"
        );
        assert_eq!(json.partition_format(), "dt=%Y-%m-%d/hr=%H");
        let nested = t(parser("JsonMessageParser", "message.timestamp.name=context/syncts\nmessage.timestamp.name.separator=/").unwrap());
        assert_eq!(nested.timestamp_fields, vec!["context.syncts"]);
        let e = parser("JsonMessageParser", "message.timestamp.name=a.b").unwrap_err().to_string();
        assert!(e.contains("message.timestamp.name") && e.contains("top-level key"), "{e}");
        let by_record = t(parser("JsonMessageParser", "kafka.useTimestamp=true").unwrap());
        assert_eq!(by_record.record_time, RecordTime::Only);
        let minute = t(parser("Iso8601MessageParser", "partitioner.granularity.minute=true\npartitioner.granularity.date.prefix=day=").unwrap());
        assert_eq!(minute.partition_format(), "day=%Y-%m-%d/hr=%H/min=%M");

        let date =
            t(parser("DateMessageParser", "message.timestamp.input.pattern=yyyy-MM-dd'T'HH:mm:ss\npartitioner.granularity.hour=true").unwrap());
        assert_eq!((date.timestamp_input_pattern.as_deref(), date.granularity), (Some("%Y-%m-%dT%H:%M:%S"), Granularity::Day));
        let e = parser("DateMessageParser", "").unwrap_err().to_string();
        assert!(e.contains("message.timestamp.input.pattern"), "{e}");
        let e = parser("DateMessageParser", "message.timestamp.input.pattern=yyyy-ww").unwrap_err().to_string();
        assert!(e.contains("message.timestamp.input.pattern") && e.contains("`ww`"), "{e}");

        let split = t(parser("SplitByFieldMessageParser", "message.split.field.name=eid").unwrap());
        assert_eq!((split.prefix_field.as_deref(), split.prefix_as_value, split.markers()), (Some("eid"), true, false));
        assert!(parser("SplitByFieldMessageParser", "").unwrap_err().to_string().contains("message.split.field.name"));

        let offsets = t(parser("OffsetMessageParser", "secor.offsets.per.partition=1000").unwrap());
        assert_eq!(offsets.offset_buckets, Some(OffsetBuckets { per: 1000, prefix: "offset=".into(), daily: false }));
        let daily = t(parser("DailyOffsetMessageParser", "").unwrap());
        assert_eq!((daily.offset_buckets.map(|b| (b.per, b.daily)), daily.record_time), (Some((10_000_000, true)), RecordTime::Only));

        let fork = t(parser("PatternDateMessageParser", "").unwrap());
        assert_eq!(
            (fork.layout_kind, fork.date_prefix.as_str(), fork.record_time),
            (LayoutKind::Secor, "", RecordTime::Fallback),
            "the fork without a pattern: stock folders, bare dates"
        );

        for (line, key, value) in [
            ("secor.message.parser.class=com.pinterest.secor.parser.ThriftMessageParser", "secor.message.parser.class", "ThriftMessageParser"),
            ("secor.message.parser.class=com.pinterest.secor.parser.ProtobufMessageParser", "secor.message.parser.class", "Protobuf"),
            ("secor.message.parser.class=com.pinterest.secor.parser.AvroMessageParser", "secor.message.parser.class", "Avro"),
            ("secor.message.parser.class=com.pinterest.secor.parser.MessagePackParser", "secor.message.parser.class", "MessagePack"),
            (
                "secor.file.reader.writer.factory=com.pinterest.secor.io.impl.ProtobufParquetFileReaderWriterFactory",
                "secor.file.reader.writer.factory",
                "Parquet",
            ),
            (
                "secor.file.reader.writer.factory=com.pinterest.secor.io.impl.JsonORCFileReaderWriterFactory",
                "secor.file.reader.writer.factory",
                "ORC",
            ),
            (
                "secor.file.reader.writer.factory=com.pinterest.secor.io.impl.MessagePackSequenceFileReaderWriterFactory",
                "secor.file.reader.writer.factory",
                "MessagePack",
            ),
            ("secor.compression.codec=org.apache.hadoop.io.compress.SnappyCodec", "secor.compression.codec", "SnappyCodec"),
            ("partitioner.granularity.hour.format=H", "partitioner.granularity.hour.format", "`H`"),
            ("secor.s3.prefix.md5hash=true", "secor.s3.prefix.md5hash", "MD5"),
            ("secor.s3.alternative.path=other", "secor.s3.alternative.path", "other"),
            ("aws.sse.type=S3", "aws.sse.type", "default encryption"),
            ("secor.message.transformer.class=com.example.Mask", "secor.message.transformer.class", "com.example.Mask"),
            ("secor.kafka.topic_blacklist=prod.telemetry.raw", "secor.kafka.topic_blacklist", "prod.telemetry.raw"),
            ("partitioner.granularity.hour=maybe", "partitioner.granularity.hour", "maybe"),
        ] {
            let e = map(&with(stock(), line)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(value), "{line}: {e}");
        }
        // Keys of another parser are named as such, not as unknown.
        let m = parser("JsonMessageParser", "secor.partition.output_dt_format=yyyyMMdd").unwrap();
        assert!(
            m.ignored.is_empty() && m.secor_only.iter().any(|(k, why)| k == "secor.partition.output_dt_format" && why.contains("another")),
            "{:?}",
            m.secor_only
        );
    }

    #[test]
    fn typo_keys_are_listed_not_silently_dropped() {
        let m = map(&props(&format!("{SUNBIRD_UNIQUE}\nsecor.max.file.age.secnds=60\n"))).unwrap();
        assert!(m.ignored.contains(&"secor.max.file.age.secnds".to_string()));
    }

    #[test]
    fn java_patterns() {
        assert_eq!(java_date_pattern("k", "yyyy-MM-dd").unwrap(), "%Y-%m-%d");
        assert_eq!(java_date_pattern("k", "yyyyMMdd'T'HH").unwrap(), "%Y%m%dT%H");
        assert_eq!(java_date_pattern("k", "'dt='yyyy-MM-dd").unwrap(), "dt=%Y-%m-%d");
        assert_eq!(java_date_pattern("k", "EEE, dd MMM yyyy HH:mm:ss Z").unwrap(), "%a, %d %b %Y %H:%M:%S %z");
        assert_eq!(java_date_pattern("k", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").unwrap(), "%Y-%m-%dT%H:%M:%S.%3f%:z");
        assert_eq!(java_date_pattern("k", "MMMM d, yyyy h:mm a").unwrap(), "%B %d, %Y %I:%M %p");
        for unknown in ["yyyy-MM-dd z", "yyyy-MM-dd X", "yyyy-ww", "yyyy-MM-dd G", "yyyy-MM-dd'T'HH:mm:ss.SS"] {
            let e = java_date_pattern("message.timestamp.input.pattern", unknown).unwrap_err().to_string();
            assert!(e.contains("message.timestamp.input.pattern"), "{unknown}: {e}");
        }
        // Translated patterns date what Java dates the same.
        let rules = |p: &str| crate::event_date::DateRules {
            input_pattern: Some(java_date_pattern("k", p).unwrap()),
            message_tz: chrono_tz::Tz::UTC,
            output_tz: chrono_tz::Tz::UTC,
            date_format: "%Y-%m-%d".into(),
            window: (i64::MIN, i64::MAX),
        };
        for (p, value, ms) in [
            ("EEE, dd MMM yyyy HH:mm:ss Z", "Sat, 05 Dec 2026 10:00:00 +0530", 1_796_445_000_000i64),
            ("yyyy-MM-dd'T'HH:mm:ss.SSSXXX", "2026-12-05T10:00:00.250+05:30", 1_796_445_000_250),
            ("MMMM d, yyyy h:mm a", "December 5, 2026 4:30 AM", 1_796_445_000_000),
            ("dd/MM/yyyy", "05/12/2026", 1_796_428_800_000),
        ] {
            assert_eq!(rules(p).millis_from_str(value), Some(ms), "{p}: {value}");
        }
    }

    #[test]
    fn toml_output_parses_back_and_hides_the_key() {
        let m = map(&props(SUNBIRD_UNIQUE)).unwrap();
        let text = to_toml(&m.config);
        assert!(!text.contains("c2VjcmV0a2V5c2VjcmV0a2V5"), "{text}");
        let back = Config::parse(&text, "generated").unwrap();
        assert_eq!(back.topics[0].path, "unique/raw");
    }
}
