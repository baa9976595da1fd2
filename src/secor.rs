//! Drop-in Secor configuration: read Secor `.properties` files and map them to a kbackup
//! [`Config`]. Later files override earlier ones (as Secor's includes do); `include=` inside a
//! file loads another file at that point. Keys whose meaning kbackup cannot keep are errors that
//! name the key; keys it does not need are listed in one warning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{
    Compression, Config, ConfigError, KafkaConfig, OffsetsStorage, SecorConfig, StorageConfig, TopicConfig, WriterConfig, DEFAULT_FILE_PATTERN,
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

/// Loads files in order, following `include=` keys relative to the including file.
pub fn load(files: &[PathBuf]) -> Result<Properties, ConfigError> {
    let mut props = Properties::new();
    for f in files {
        load_into(f, &mut props, 0)?;
    }
    Ok(props)
}

fn load_into(path: &Path, props: &mut Properties, depth: usize) -> Result<(), ConfigError> {
    if depth > 10 {
        return Err(ConfigError::Parse { path: path.display().to_string(), message: "include nesting deeper than 10".into() });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    for (k, v) in parse_properties(&text) {
        if k == "include" {
            let inc = path.parent().unwrap_or(Path::new(".")).join(&v);
            load_into(&inc, props, depth + 1)?;
        } else {
            props.insert(k, v);
        }
    }
    Ok(())
}

/// The result of a mapping: the config, and keys that were not used.
#[derive(Debug)]
pub struct Mapped {
    pub config: Config,
    /// Keys kbackup does not need or does not know, for one warning.
    pub ignored: Vec<String>,
    /// Notes about keys whose effect differs slightly (always-on behaviour and the like).
    pub notes: Vec<String>,
}

/// Keys that configure parts of Secor kbackup does not have (its upload locks, local disk
/// buffering, its monitoring) and that are safe to drop. Where Secor kept its offsets is mapped
/// (`[secor]`): `takeover` and `handback` read and write them there.
const NOT_NEEDED: &[&str] = &[
    "secor.zookeeper.path",
    "secor.local.path",
    "secor.consumer.threads",
    "secor.offsets.per.partition",
    "secor.offsets.prefix",
    "secor.upload.manager.class",
    "secor.message.parser.class",
    "secor.file.reader.writer.factory",
    "secor.cloud.service",
    "cloud.service",
    "secor.gs.tasks.ratelimit.pr.second",
    "secor.gs.threadpool.fixed.size",
    "secor.gs.connect.timeout.ms",
    "secor.gs.read.timeout.ms",
    "secor.gs.upload.direct",
    "ostrich.port",
    "secor.monitoring.metrics.collector.class",
    "secor.azure.endpoints.protocol",
    "secor.partition.prefix.enable",
    "secor.upload.on.shutdown",
    "kafka.consumer.timeout.ms",
    "kafka.consumer.auto.offset.reset",
    "kafka.dual.commit.enabled",
    "secor.kafka.perf_topic_prefix",
];

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// Converts a Java `SimpleDateFormat` pattern to strftime; the error names `key`.
pub fn java_date_pattern(key: &str, p: &str) -> Result<String, ConfigError> {
    crate::event_date::strftime_from_java(p).map_err(|m| err(key, m))
}

/// Maps Secor properties to a kbackup config.
pub fn map(props: &Properties) -> Result<Mapped, ConfigError> {
    let get = |k: &str| props.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let mut notes = Vec::new();

    let host = get("kafka.seed.broker.host").ok_or_else(|| err("kafka.seed.broker.host", "is required"))?;
    let port = get("kafka.seed.broker.port").unwrap_or_else(|| "9092".into());
    let brokers = if host.contains(':') || host.contains(',') { host } else { format!("{host}:{port}") };
    let group_id = get("secor.kafka.group").ok_or_else(|| err("secor.kafka.group", "is required"))?;

    let filter = get("secor.kafka.topic_filter").ok_or_else(|| err("secor.kafka.topic_filter", "is required"))?;
    // Secor takes a regex; kbackup subscribes to names. Dots are taken literally; `a|b` lists two.
    let names: Vec<String> = filter.split('|').map(|s| s.trim().replace("\\.", ".")).collect();
    if names.iter().any(|n| n.is_empty() || n.contains(['*', '+', '?', '[', ']', '(', ')', '^', '$', '{', '}'])) {
        return Err(err("secor.kafka.topic_filter", format!("`{filter}` is a regex; kbackup needs topic names (use `a|b` for several)")));
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
    } else if manager.is_empty() || manager.contains("Azure") {
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
    let store = match (by_service, by_manager) {
        (Some(a), Some(b)) if a != b => {
            return Err(err(
                "secor.upload.manager.class",
                format!("`{manager}` uploads to {}, but {service_key}={} names {}: set one store", b.name(), service.unwrap_or_default(), a.name()),
            ))
        }
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => Store::Azure,
    };
    // kbackup dates events the way Sunbird's parser does; another parser files them elsewhere.
    if let Some(parser) = get("secor.message.parser.class") {
        if !parser.ends_with(".PatternDateMessageParser") && parser != "PatternDateMessageParser" {
            return Err(err(
                "secor.message.parser.class",
                format!("`{parser}`: kbackup files events by date like PatternDateMessageParser (Sunbird's parser); this parser partitions them differently"),
            ));
        }
    }
    if let Some(f) = get("secor.file.reader.writer.factory") {
        if !f.contains("DelimitedText") {
            return Err(err("secor.file.reader.writer.factory", format!("`{f}`: kbackup writes delimited text (NDJSON) only")));
        }
    }
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
    let file_pattern = get("secor.s3.output_file_pattern").unwrap_or_else(|| DEFAULT_FILE_PATTERN.into());
    let compression = match get("secor.compression.codec").as_deref() {
        None => Compression::None,
        Some(c) if c.ends_with("GzipCodec") => Compression::Gzip,
        Some(c) => return Err(err("secor.compression.codec", format!("`{c}`: kbackup writes gzip or uncompressed files"))),
    };
    match (get("secor.file.extension").as_deref(), compression) {
        (None, _) | (Some(".gz"), Compression::Gzip) => {}
        (Some(ext), _) => {
            return Err(err("secor.file.extension", format!("`{ext}` with this codec: kbackup appends .gz for gzip and nothing otherwise")))
        }
    }
    let mut timestamp_fields = Vec::new();
    timestamp_fields.push(get("message.timestamp.name").unwrap_or_else(|| "timestamp".into()));
    if let Some(f) = get("message.fallback.timestamp.name") {
        timestamp_fields.push(f);
    }
    let timestamp_input_pattern =
        get("message.timestamp.input.pattern").map(|p| java_date_pattern("message.timestamp.input.pattern", &p)).transpose()?;
    let date_format =
        java_date_pattern("secor.partition.output_dt_format", &get("secor.partition.output_dt_format").unwrap_or_else(|| "yyyy-MM-dd".into()))?;
    let prefix_on = get("secor.partition.prefix.enable").is_some_and(|v| v == "true");
    let (prefix_field, prefix_map) = if prefix_on {
        let field = get("secor.partition.prefix.identifier")
            .ok_or_else(|| err("secor.partition.prefix.identifier", "is required when secor.partition.prefix.enable=true"))?;
        let mapping = get("secor.partition.prefix.mapping")
            .ok_or_else(|| err("secor.partition.prefix.mapping", "is required when secor.partition.prefix.enable=true"))?;
        let map: BTreeMap<String, String> =
            serde_json::from_str(&mapping).map_err(|e| err("secor.partition.prefix.mapping", format!("not a JSON object of strings: {e}")))?;
        (Some(field), map)
    } else {
        (None, BTreeMap::new())
    };
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
    let security = kafka_security(&get)?;
    let used_security: Vec<String> = security.used.clone();
    kafka_properties.extend(security.properties);
    notes.extend(security.notes);
    let num = |k: &str, default: u64| -> Result<u64, ConfigError> {
        get(k).map(|v| v.parse::<u64>().map_err(|_| err(k, format!("`{v}` is not a whole number")))).unwrap_or(Ok(default))
    };
    if get("secor.upload.on.shutdown").is_some_and(|v| v == "false") {
        notes.push("secor.upload.on.shutdown=false: kbackup always uploads and commits on a graceful shutdown".into());
    }
    if get("secor.local.path").is_some() {
        notes.push("secor.local.path: kbackup buffers in memory within writer.memory_limit_bytes; no local disk is used".into());
    }

    let topics = names
        .iter()
        .map(|name| -> Result<TopicConfig, ConfigError> {
            Ok(TopicConfig {
                name: name.clone(),
                path: path.clone(),
                file_pattern: file_pattern.clone(),
                format: crate::config::Format::Value,
                compression,
                compression_level: 1,
                timestamp_fields: timestamp_fields.clone(),
                timestamp_input_pattern: timestamp_input_pattern.clone(),
                message_timezone: get("secor.message.timezone").unwrap_or_else(|| "UTC".into()),
                output_timezone: get("secor.parser.timezone").unwrap_or_else(|| "UTC".into()),
                date_format: date_format.clone(),
                max_file_bytes: num("secor.max.file.size.bytes", 200_000_000)?,
                max_file_age_secs: num("secor.max.file.age.seconds", 3600)?,
                prefix_field: prefix_field.clone(),
                prefix_map: prefix_map.clone(),
                invalid_date: "1970-01-01".into(),
                error_path: None,
                earliest_event_date: crate::config::default_earliest(),
                latest_event_date: crate::config::default_latest(),
                generation: num("secor.generation", 1)? as u32,
                completion_markers: None,
                completion_grace_secs: crate::config::default_completion_grace(),
                completion_start_date: None,
                layout_kind: crate::config::LayoutKind::Pattern,
                granularity: crate::config::Granularity::Day,
                date_prefix: "dt=".into(),
                hour_prefix: "hr=".into(),
                minute_prefix: "min=".into(),
                file_format: crate::config::FileFormat::Text,
                file_extension: None,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    const MAPPED: &[&str] = &[
        "kafka.seed.broker.host",
        "kafka.seed.broker.port",
        "secor.kafka.group",
        "secor.kafka.topic_filter",
        "secor.azure.account.name",
        "secor.azure.account.key",
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
        "secor.s3.output_file_pattern",
        "secor.compression.codec",
        "secor.file.extension",
        "message.timestamp.name",
        "message.fallback.timestamp.name",
        "message.timestamp.input.pattern",
        "secor.message.timezone",
        "secor.parser.timezone",
        "secor.partition.output_dt_format",
        "secor.partition.prefix.identifier",
        "secor.partition.prefix.mapping",
        "secor.max.file.size.bytes",
        "secor.max.file.age.seconds",
        "secor.generation",
        "zookeeper.quorum",
        "kafka.zookeeper.path",
        "kafka.offsets.storage",
        "kafka.new.consumer.auto.offset.reset",
    ];
    let ignored: Vec<String> =
        props.keys().filter(|k| !MAPPED.contains(&k.as_str()) && !NOT_NEEDED.contains(&k.as_str()) && !used_security.contains(k)).cloned().collect();

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
    Ok(Mapped { config, ignored, notes })
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
        assert_eq!(t.compression, Compression::Gzip);
        assert_eq!(t.timestamp_fields, vec!["syncts", "@timestamp"]);
        assert_eq!(t.timestamp_input_pattern.as_deref(), Some("%Y-%m-%d"));
        assert_eq!(t.output_timezone, "Asia/Kolkata");
        assert_eq!(t.date_format, "%Y-%m-%d");
        assert_eq!((t.max_file_bytes, t.max_file_age_secs), (100_000_000, 14_400));
        assert_eq!(m.ignored, vec!["secor.messages.per.second"]);
        assert!(m.notes.iter().any(|n| n.contains("secor.local.path")));
        // The shipped TOML says the same about the topic.
        let shipped = Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sunbird-unique-denorm.toml")).unwrap();
        let s = &shipped.topics[0];
        assert_eq!(
            (
                &s.path,
                &s.file_pattern,
                s.compression,
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
                t.compression,
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

    #[test]
    fn later_files_override_and_includes_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("common.properties"), "secor.kafka.group=common\nsecor.max.file.age.seconds=60\n").unwrap();
        std::fs::write(dir.path().join("a.properties"), "include=common.properties\nsecor.kafka.group=a\n").unwrap();
        std::fs::write(dir.path().join("b.properties"), "secor.max.file.age.seconds=120\n").unwrap();
        let p = load(&[dir.path().join("a.properties"), dir.path().join("b.properties")]).unwrap();
        assert_eq!(p["secor.kafka.group"], "a");
        assert_eq!(p["secor.max.file.age.seconds"], "120");
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
            ("secor.upload.manager.class=com.pinterest.secor.uploader.GsUploadManager", "secor.upload.manager.class"),
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
            ("secor.message.parser.class=com.pinterest.secor.parser.OffsetMessageParser", "secor.message.parser.class"),
        ] {
            let e = map(&props(&format!("{SUNBIRD_UNIQUE}\n{line}\n"))).unwrap_err().to_string();
            assert!(e.contains(key) && !e.contains("hunter2hunter2"), "expected {key} in: {e}");
        }
        let e = map(&props(&SUNBIRD_UNIQUE.replace(
            "secor.cloud.service=Azure",
            "secor.cloud.service=Azure\nsecor.upload.manager.class=com.pinterest.secor.uploader.S3UploadManager",
        )))
        .unwrap_err()
        .to_string();
        assert!(e.contains("uploads to S3, but secor.cloud.service=Azure names Azure"), "{e}");
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
        assert!(java_date_pattern("k", "yyyy-MMM-dd").is_err());
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
