//! The TOML configuration: parsing, defaults and validation.
//!
//! Every error names the key it is about (`topic[1].output_timezone`, `kafka.brokers`, ...) so an
//! operator can fix a config without reading code. Validation happens before anything is consumed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::naming::{FileLayout, LayoutError};

/// Default file name pattern: Sunbird's `{partition}-{kafkaPartition}-{currentTimestamp}.json`.
pub use crate::naming::DEFAULT_FILE_PATTERN;

/// A configuration error; the message always names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), message: message.into() }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub storage: StorageConfig,
    #[serde(rename = "topic", default)]
    pub topics: Vec<TopicConfig>,
    #[serde(default)]
    pub writer: WriterConfig,
    /// Where the Secor deployment this config replaces kept its position (`kbackup takeover`,
    /// `kbackup handback`, and `run`'s refusal to resume from a position Secor did not upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secor: Option<SecorConfig>,
}

/// `[secor]`: the Secor deployment a config replaces (Secor: `zookeeper.quorum`,
/// `kafka.zookeeper.path`, `secor.kafka.group`, `kafka.offsets.storage`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecorConfig {
    /// ZooKeeper connect string, `host:port[,host:port...]` (Secor: `zookeeper.quorum`).
    pub zookeeper: String,
    /// The chroot segment of Secor's offset nodes (Secor: `kafka.zookeeper.path`; `/` or empty
    /// for none): offsets live at `/<path>/consumers/<group>/offsets/<topic>/<partition>`.
    #[serde(default = "default_zookeeper_path")]
    pub zookeeper_path: String,
    /// Secor's consumer group (Secor: `secor.kafka.group`); unset: `kafka.group_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Where Secor read its position from on restart (Secor: `kafka.offsets.storage`).
    #[serde(default)]
    pub offsets_storage: OffsetsStorage,
}

fn default_zookeeper_path() -> String {
    "/".into()
}

impl SecorConfig {
    /// Secor's consumer group: its own, else the one kbackup uses.
    pub fn group<'a>(&'a self, kafka: &'a KafkaConfig) -> &'a str {
        self.group.as_deref().unwrap_or(&kafka.group_id)
    }
}

/// Where Secor read its position from when it took a partition (`kafka.offsets.storage`). Its
/// uploader writes ZooKeeper after every upload in both modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetsStorage {
    /// ZooKeeper only (Sunbird's setting): Kafka holds nothing Secor uploaded.
    #[default]
    Zookeeper,
    /// Kafka as well: the uploader also commits the next offset to Secor's group.
    Kafka,
}

/// `[kafka]`: where to consume from.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]` (Secor: `kafka.seed.broker.host`/`port`).
    pub brokers: String,
    /// Consumer group (Secor: `secor.kafka.group`).
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Passed verbatim to librdkafka; they override kbackup's own defaults.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values come from environment variables (property → variable),
    /// e.g. `"sasl.password" = "KAFKA_SASL_PASSWORD"` from a Kubernetes Secret: the secret stays
    /// out of the config file. Read when the config is loaded; a missing variable is an error.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties_from_env: BTreeMap<String, String>,
}

// Hand-written: `[kafka.properties]` holds SASL passwords and TLS key passwords, so only the
// property names reach a `{:?}`.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .field("properties_from_env", &self.properties_from_env)
            .finish()
    }
}

fn default_request_timeout() -> u64 {
    60
}

impl KafkaConfig {
    /// Reads `properties_from_env` into `properties` (the variables' values are never printed).
    pub fn resolve_env(&mut self) -> Result<(), ConfigError> {
        for (property, var) in &self.properties_from_env {
            let key = format!("kafka.properties_from_env.\"{property}\"");
            if self.properties.contains_key(property) {
                return Err(ConfigError::invalid(key, "is also set in [kafka.properties]: keep one"));
            }
            let value = std::env::var(var).map_err(|_| ConfigError::invalid(&key, format!("environment variable {var} is not set")))?;
            self.properties.insert(property.clone(), value);
        }
        Ok(())
    }

    /// Settings for tools that only need to reach the brokers (no group of their own).
    pub fn for_brokers(brokers: impl Into<String>) -> KafkaConfig {
        KafkaConfig { brokers: brokers.into(), group_id: default_group(), properties: BTreeMap::new(), properties_from_env: BTreeMap::new() }
    }
}

fn default_group() -> String {
    "kbackup".into()
}

/// `[storage]`: where files go.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `az://<container>[/<root>]` or `file:///dir`.
    pub url: String,
    /// An Azure connection string (else env `AZURE_STORAGE_CONNECTION_STRING`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<String>,
    /// Storage account name (else env `AZURE_STORAGE_ACCOUNT_NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Storage account key (else env `AZURE_STORAGE_ACCOUNT_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    /// A SAS token (else env `AZURE_STORAGE_SAS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token: Option<String>,
    /// Blob endpoint override, e.g. `http://127.0.0.1:10000/devstoreaccount1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Create the container at start when it is missing.
    #[serde(default)]
    pub create_container: bool,
    /// Longest a single storage request may take before it is abandoned and retried.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Run on a store whose create-only writes the start-up probe found overwriting (an
    /// S3-compatible gateway that ignores If-None-Match). Exactly once then no longer holds
    /// against a zombie writer: docs/exactly-once.md, "Stores that overwrite".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_overwriting_store: bool,
    /// Extra `object_store` Azure options (e.g. `azure_use_azure_cli`, `azure_client_id`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// S3: the region (else env `AWS_REGION` / `AWS_DEFAULT_REGION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3: access key id (else env `AWS_ACCESS_KEY_ID`, profiles, web identity, instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// S3: secret access key (else env `AWS_SECRET_ACCESS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// S3: session token of temporary credentials (else env `AWS_SESSION_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    /// GCS: a service-account key file (else env `GOOGLE_SERVICE_ACCOUNT`,
    /// `GOOGLE_APPLICATION_CREDENTIALS`, workload identity, the metadata server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_path: Option<String>,
    /// GCS: a service-account key, its JSON text (a secret: never logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_key: Option<String>,
    /// S3: `true` for virtual-hosted-style requests (`bucket.host`), `false` for path style
    /// (`host/bucket`, what most S3-compatible servers want); unset: object_store's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_hosted_style: Option<bool>,
    /// An endpoint derived from other settings (Secor's `secor.azure.endpoints.protocol=http`):
    /// config too, so it comes after `endpoint` but before any connection string's.
    #[serde(skip)]
    pub fallback_endpoint: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: String::new(),
            connection_string: None,
            account: None,
            access_key: None,
            sas_token: None,
            endpoint: None,
            create_container: false,
            request_timeout_secs: default_request_timeout(),
            accept_overwriting_store: false,
            options: BTreeMap::new(),
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            virtual_hosted_style: None,
            service_account_path: None,
            service_account_key: None,
            fallback_endpoint: None,
        }
    }
}

// Hand-written so that keys and connection strings never reach a log line through `{:?}`.
impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("StorageConfig")
            .field("url", &self.url)
            .field("connection_string", &redact(&self.connection_string))
            .field("account", &self.account)
            .field("access_key", &redact(&self.access_key))
            .field("sas_token", &redact(&self.sas_token))
            .field("endpoint", &self.endpoint)
            .field("create_container", &self.create_container)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("accept_overwriting_store", &self.accept_overwriting_store)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("service_account_path", &self.service_account_path)
            .field("service_account_key", &redact(&self.service_account_key))
            .finish()
    }
}

/// Output compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip; `.gz` is appended to the file name (text and SequenceFiles).
    Gzip,
    /// Uncompressed (plain newline-delimited JSON, or Parquet pages without a codec).
    None,
    /// Zstandard pages (Parquet only; its default).
    Zstd,
    /// Snappy pages (Parquet only).
    Snappy,
}

impl Compression {
    /// The extension appended after the pattern's own (`.json` + `.gz`). Parquet compresses
    /// inside the file: its names never end with a codec's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::None | Compression::Zstd | Compression::Snappy => "",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
        }
    }
}

/// What each line of a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The message value, as Secor writes it (Sunbird's readers need this).
    #[default]
    Value,
    /// The whole record as a JSON envelope (partition, offset, timestamp, key, headers,
    /// value; see `record.rs`), in files named `….records.json[.gz]`.
    Record,
}

/// How a topic's files are laid out and named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// `<path>[/<prefix>]/<file_pattern>`: Sunbird's fork (`{partition}-{kafkaPartition}-{currentTimestamp}.json`).
    #[default]
    Pattern,
    /// Stock Secor's: `<path>/<topic>[/<prefix>]/dt=<date>[/hr=<HH>[/min=<mm>]]/<generation>_<kafkaPartition>_<firstOffset:%020d><file_extension>`.
    Secor,
}

/// The time folders of stock Secor's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    #[default]
    Day,
    Hour,
    Minute,
}

/// When the Kafka record timestamp dates an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordTime {
    /// When no timestamp field holds a usable time (the default).
    #[default]
    Fallback,
    /// Never: an event without a usable field time goes to `invalid_date`, as stock Secor's
    /// `JsonMessageParser` files it under the epoch's date.
    Never,
    /// Always: events are dated by their record time (Secor's `kafka.useTimestamp=true`).
    Only,
}

/// Stock Secor's offset folders (`OffsetMessageParser`, `DailyOffsetMessageParser`): a file
/// of offsets `[n·per, (n+1)·per)` lands in `<prefix><n·per>`, below the day's folder when
/// `daily`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetBuckets {
    /// `secor.offsets.per.partition`.
    pub per: i64,
    /// `secor.offsets.prefix` (`offset=`).
    #[serde(default = "default_offset_prefix")]
    pub prefix: String,
    /// Below a `dt=<date>` folder, the date of the message's record time.
    #[serde(default)]
    pub daily: bool,
}

fn default_offset_prefix() -> String {
    "offset=".into()
}

/// What a file is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One message per line (Secor's `DelimitedTextFileReaderWriterFactory`).
    #[default]
    Text,
    /// Hadoop's SequenceFile, key the offset (`LongWritable`), value the message
    /// (`BytesWritable`): stock Secor's default (`SequenceFileReaderWriterFactory`).
    SequenceFile,
    /// Parquet: the Kafka envelope as typed columns, the value's bytes, and the value as a
    /// Variant column for queries (see `columnar.rs`).
    Parquet,
}

/// The type of a field shredded out of a Parquet file's Variant column: its `typed_value`
/// column's. A value of another type stays in the field's Variant-encoded `value` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShredType {
    /// `BYTE_ARRAY (STRING)`: JSON strings.
    String,
    /// `INT64`: JSON integers that fit 64 bits (epoch times, counts).
    Int64,
}

/// Why a set of `parquet_shred` paths cannot be shredded: a path with an empty part, or a path
/// that is both a field and the object of another shredded field (`context`, `context.did`).
pub fn shred_paths_error(paths: &BTreeMap<String, ShredType>) -> Option<String> {
    if let Some(p) = paths.keys().find(|p| p.split('.').any(str::is_empty)) {
        return Some(format!("`{p}`: a path is field names joined by `.`, none of them empty"));
    }
    // In sorted order a path's extensions follow it (`.` sorts before letters and digits, and
    // any other byte between would make the next path not an extension).
    paths.keys().find_map(|p| {
        paths
            .range::<String, _>((std::ops::Bound::Excluded(p.clone()), std::ops::Bound::Unbounded))
            .map(|(q, _)| q)
            .take_while(|q| q.starts_with(p.as_str()))
            .find(|q| q.as_bytes().get(p.len()) == Some(&b'.'))
            .map(|q| format!("`{p}` is shredded both as a field and as the object holding `{q}`"))
    })
}

/// One `[[topic]]`: a Kafka topic and how its files are laid out.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Kafka topic name.
    pub name: String,
    /// Path prefix inside the container (Secor: `secor.azure.path`).
    pub path: String,
    /// File name pattern (Secor: `secor.s3.output_file_pattern`).
    #[serde(default = "default_pattern")]
    pub file_pattern: String,
    /// `value` (default, Secor's lines) or `record` (the whole Kafka record per line).
    #[serde(default)]
    pub format: Format,
    /// Text and SequenceFiles: `gzip` (default) or `none` (Secor: `secor.compression.codec`).
    /// Parquet: its page codec, `zstd` (default), `snappy` or `none`. Read it through
    /// [`TopicConfig::compression`], which applies the file format's default.
    #[serde(default, rename = "compression", skip_serializing_if = "Option::is_none")]
    pub compression_set: Option<Compression>,
    /// gzip level 1-12: 1 (ISA-L's fastest; `gzip -6`'s ratio on telemetry), 2-3 (ISA-L's
    /// level 3), 4-12 (libdeflate's scale: smaller files for much more CPU).
    #[serde(default = "default_level")]
    pub compression_level: u32,
    /// Fields tried in order for the event time; dotted paths reach nested fields
    /// (Secor: `message.timestamp.name`, `message.fallback.timestamp.name`).
    #[serde(default = "default_ts_fields")]
    pub timestamp_fields: Vec<String>,
    /// strftime pattern for string timestamps, matched against the start of the string
    /// (Secor: `message.timestamp.input.pattern`). Unset: RFC 3339 / ISO-8601 / plain dates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_input_pattern: Option<String>,
    /// Time zone of string timestamps that carry no offset (Secor: `secor.message.timezone`).
    #[serde(default = "default_tz")]
    pub message_timezone: String,
    /// Time zone the date is computed in (Secor: `secor.parser.timezone`).
    #[serde(default = "default_tz")]
    pub output_timezone: String,
    /// strftime format of the date (Secor: `secor.partition.output_dt_format`).
    #[serde(default = "default_date_format")]
    pub date_format: String,
    /// Seal a file when its uncompressed bytes reach this (Secor: `secor.max.file.size.bytes`).
    #[serde(default = "default_max_bytes")]
    pub max_file_bytes: u64,
    /// Seal a file this long after its first message, even if idle (Secor: `secor.max.file.age.seconds`).
    #[serde(default = "default_max_age")]
    pub max_file_age_secs: u64,
    /// Field whose value picks a sub-path (Secor: `secor.partition.prefix.identifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_field: Option<String>,
    /// Field value → sub-path; `DEFAULT` catches the rest (Secor: `secor.partition.prefix.mapping`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prefix_map: BTreeMap<String, String>,
    /// Date used for messages that are not JSON or not UTF-8 (Secor: `1970-01-01`).
    #[serde(default = "default_invalid_date")]
    pub invalid_date: String,
    /// If set, invalid messages go under this path instead of `<path>/<invalid_date>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_path: Option<String>,
    /// Earliest event date taken from a message or record time (in `output_timezone`); an
    /// earlier time is treated as no time, so the next rung of the ladder dates the event.
    #[serde(default = "default_earliest")]
    pub earliest_event_date: String,
    /// Latest event date taken from a message or record time (inclusive); later is no time.
    #[serde(default = "default_latest")]
    pub latest_event_date: String,
    /// Value of the `{generation}` placeholder (Secor: `secor.generation`).
    #[serde(default = "default_generation")]
    pub generation: u32,
    /// Write completion markers (`<path>/_kbackup/complete/<date>/<partition>-<seq>.json`).
    /// Unset: on, for a daily `date_format` (docs/completion.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_markers: Option<bool>,
    /// How long after a date's end (in `output_timezone`) its events may still arrive in
    /// order: a partition has passed a date once it consumed an event this much newer than
    /// the date's end, or is caught up with the wall clock that far past it.
    #[serde(default = "default_completion_grace")]
    pub completion_grace_secs: u64,
    /// The first date (YYYY-MM-DD) to mark on a partition that has no marker progress yet.
    /// Unset: the date in progress when the writer is assigned the partition, or an earlier
    /// date of up to 7 days that it reads events of (a backlog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_start_date: Option<String>,
    /// `pattern` (default: `file_pattern` under `path`, Sunbird's names) or `secor` (stock
    /// Secor's `<path>/<topic>/dt=<date>/<generation>_<kafkaPartition>_<firstOffset>`).
    #[serde(default, rename = "layout", skip_serializing_if = "is_default")]
    pub layout_kind: LayoutKind,
    /// With `layout = "secor"`: `day` (default), `hour` or `minute` folders (Secor:
    /// `partitioner.granularity.hour`, `.minute`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub granularity: Granularity,
    /// With `layout = "secor"`: the date folder's prefix (`partitioner.granularity.date.prefix`).
    #[serde(default = "default_date_prefix", skip_serializing_if = "is_default_date_prefix")]
    pub date_prefix: String,
    /// With `layout = "secor"` and hourly or minutely folders: their prefixes.
    #[serde(default = "default_hour_prefix", skip_serializing_if = "is_default_hour_prefix")]
    pub hour_prefix: String,
    #[serde(default = "default_minute_prefix", skip_serializing_if = "is_default_minute_prefix")]
    pub minute_prefix: String,
    /// `text` (default: one message per line), `sequencefile` (Hadoop's, key the offset,
    /// value the message: stock Secor's default) or `parquet` (columns and a Variant of the
    /// event, for queries; see `columnar.rs`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub file_format: FileFormat,
    /// With `file_format = "parquet"`: the fields of each event kept in typed columns beside the
    /// Variant (shredded), path → `string` or `int64`; dotted paths reach nested fields. Unset:
    /// the timestamp fields (`int64`) and `prefix_field` (`string`). Read it through
    /// [`TopicConfig::parquet_shred`].
    #[serde(default, rename = "parquet_shred", skip_serializing_if = "Option::is_none")]
    pub parquet_shred_set: Option<BTreeMap<String, ShredType>>,
    /// With `layout = "secor"`: what follows the file name (`secor.file.extension`); default
    /// `.gz` with gzip, none otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_extension: Option<String>,
    /// When the Kafka record time dates an event: `fallback` (default), `never`, `only`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub record_time: RecordTime,
    /// With `prefix_field` and `layout = "secor"`: the field's value itself names the folder
    /// (Secor's `SplitByFieldMessageParser`) instead of `prefix_map`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub prefix_as_value: bool,
    /// Write an empty `_SUCCESS` in a date's folder once every partition's marker of the date
    /// exists, as Secor's `PartitionFinalizer` does. Unset: on with `layout = "secor"` and
    /// daily folders (when markers are written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_files: Option<bool>,
    /// With `layout = "secor"`: offset folders (Secor's offset parsers) instead of dates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_buckets: Option<OffsetBuckets>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl TopicConfig {
    /// Today's date where the topic dates its files (`output_timezone`), for the readers'
    /// relative dates (`today`, `yesterday`, `-N`).
    pub fn today(&self) -> Result<chrono::NaiveDate, ConfigError> {
        Ok(chrono::Utc::now().with_timezone(&self.output_tz()?).date_naive())
    }

    /// The time zone dates are written in (`output_timezone`).
    pub fn output_tz(&self) -> Result<Tz, ConfigError> {
        parse_tz(&format!("topic `{}`: output_timezone", self.name), &self.output_timezone)
    }

    /// `invalid_date`, read: the date the invalid bucket's files carry.
    pub fn invalid_day(&self) -> Result<chrono::NaiveDate, ConfigError> {
        parse_day(&format!("topic `{}`: invalid_date", self.name), &self.invalid_date)
    }

    /// `completion_start_date`, read.
    pub fn completion_start(&self) -> Result<Option<chrono::NaiveDate>, ConfigError> {
        self.completion_start_date.as_deref().map(|d| parse_day(&format!("topic `{}`: completion_start_date", self.name), d)).transpose()
    }

    /// Whether the writer writes completion markers for this topic (dates of daily folders;
    /// not with folders named by a field's value, whose set is open).
    pub fn markers(&self) -> bool {
        self.completion_markers.unwrap_or_else(|| {
            crate::event_date::is_daily_format(&self.date_format) && self.granularity == Granularity::Day && !self.prefix_as_value && self.dated()
        })
    }

    /// False when file names carry no date (stock Secor's `OffsetMessageParser`).
    pub fn dated(&self) -> bool {
        self.offset_buckets.as_ref().is_none_or(|b| b.daily)
    }

    /// Whether the writer writes `_SUCCESS` in a date's folders once the date is complete.
    pub fn success_files(&self) -> bool {
        self.success_files.unwrap_or(self.layout_kind == LayoutKind::Secor) && self.markers()
    }

    /// The format of a route's date string: `date_format`, followed with stock Secor's hourly
    /// (minutely) granularity by the hour (and minute) folders.
    pub fn partition_format(&self) -> String {
        let day = format!("{}{}", self.date_prefix, self.date_format);
        match (self.layout_kind, self.granularity) {
            (LayoutKind::Pattern, _) => self.date_format.clone(),
            (LayoutKind::Secor, Granularity::Day) => day,
            (LayoutKind::Secor, Granularity::Hour) => format!("{day}/{}%H", self.hour_prefix),
            (LayoutKind::Secor, Granularity::Minute) => format!("{day}/{}%H/{}%M", self.hour_prefix, self.minute_prefix),
        }
    }

    /// What follows a file's name.
    pub fn extension(&self) -> String {
        match (self.layout_kind, &self.file_extension) {
            (LayoutKind::Secor, Some(e)) => e.clone(),
            _ => self.compression().extension().to_string(),
        }
    }

    /// The fields a Parquet file shreds: `parquet_shred`, or the timestamp fields (`int64`, epoch
    /// times) and `prefix_field` (`string`), which readers filter and group by.
    pub fn parquet_shred(&self) -> BTreeMap<String, ShredType> {
        match &self.parquet_shred_set {
            Some(m) => m.clone(),
            None => {
                let mut m: BTreeMap<String, ShredType> = self.timestamp_fields.iter().map(|f| (f.clone(), ShredType::Int64)).collect();
                if let Some(p) = &self.prefix_field {
                    m.entry(p.clone()).or_insert(ShredType::String);
                }
                m
            }
        }
    }

    /// True if the writer buffers each message as its record envelope line: files of
    /// `format = "record"`, and Parquet files, which are transcoded from those lines.
    pub fn buffers_envelopes(&self) -> bool {
        self.format == Format::Record || self.file_format == FileFormat::Parquet
    }

    /// The compression the topic's files get: the configured one, or the file format's default
    /// (gzip for text and SequenceFiles, as Secor's; zstd for Parquet).
    pub fn compression(&self) -> Compression {
        match (self.compression_set, self.file_format) {
            (Some(c), _) => c,
            (None, FileFormat::Parquet) => Compression::Zstd,
            (None, FileFormat::Text | FileFormat::SequenceFile) => Compression::Gzip,
        }
    }

    /// Where the topic's files live and what they are called (the one naming rule).
    pub fn layout(&self) -> Result<FileLayout, LayoutError> {
        let partition_format = self.partition_format();
        FileLayout::new(&crate::naming::LayoutSpec {
            topic: &self.name,
            path: &self.path,
            prefixes: self.prefix_map.values().map(String::as_str).collect(),
            error_path: self.error_path.as_deref(),
            file_pattern: &self.file_pattern,
            date_format: &partition_format,
            extension: &self.extension(),
            records: self.format == Format::Record,
            parquet: self.file_format == FileFormat::Parquet,
            open_prefixes: self.prefix_as_value,
            secor: match self.layout_kind {
                LayoutKind::Pattern => None,
                LayoutKind::Secor => Some(crate::naming::SecorNames {
                    generation: self.generation,
                    first: match &self.offset_buckets {
                        Some(b) if !b.daily => crate::naming::FirstFolder::Offsets(b.prefix.clone()),
                        _ => crate::naming::FirstFolder::Day(crate::naming::DateFormat::parse(&format!("{}{}", self.date_prefix, self.date_format))?),
                    },
                }),
            },
        })
    }
}

fn default_date_prefix() -> String {
    "dt=".into()
}
fn default_hour_prefix() -> String {
    "hr=".into()
}
fn default_minute_prefix() -> String {
    "min=".into()
}
fn is_default_date_prefix(s: &str) -> bool {
    s == "dt="
}
fn is_default_hour_prefix(s: &str) -> bool {
    s == "hr="
}
fn is_default_minute_prefix(s: &str) -> bool {
    s == "min="
}

fn default_pattern() -> String {
    DEFAULT_FILE_PATTERN.into()
}
pub(crate) fn default_level() -> u32 {
    1
}
fn default_ts_fields() -> Vec<String> {
    vec!["syncts".into(), "@timestamp".into()]
}
fn default_tz() -> String {
    "UTC".into()
}
fn default_date_format() -> String {
    "%Y-%m-%d".into()
}
fn default_max_bytes() -> u64 {
    100_000_000
}
fn default_max_age() -> u64 {
    14_400
}
fn default_invalid_date() -> String {
    "1970-01-01".into()
}
pub(crate) fn default_earliest() -> String {
    "2000-01-01".into()
}
pub(crate) fn default_latest() -> String {
    "2099-12-31".into()
}
fn default_generation() -> u32 {
    1
}
/// One hour. Sunbird's `syncts` is stamped by the API when a device syncs, and events reach
/// `unique` and `denorm` in that order within minutes (the dedup and denorm jobs): an hour
/// covers pipeline lag with room, and delays each date's markers by no more than that.
pub(crate) fn default_completion_grace() -> u64 {
    3600
}

/// `[writer]`: process-wide knobs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// Upper bound on bytes held in open buffers plus files being uploaded.
    #[serde(default = "default_memory_limit")]
    pub memory_limit_bytes: u64,
    /// Files compressed and uploaded at once.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
    /// Longest a graceful stop may take in total — uploads, final commit, leaving the group —
    /// before the writer exits 1 (what was not committed is re-read by the next owner).
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// Longest a revocation waits for its partitions' uploads (within a stop, the stop's bound).
    #[serde(default = "default_revoke_timeout")]
    pub revoke_timeout_secs: u64,
    /// Least time between two offset commits in steady state.
    #[serde(default = "default_commit_interval")]
    pub commit_interval_ms: u64,
    /// Largest upload-intent record kept in a partition's commit metadata; must not exceed the
    /// brokers' `offset.metadata.max.bytes` (default 4096).
    #[serde(default = "default_metadata_limit")]
    pub commit_metadata_limit: usize,
}

fn default_metadata_limit() -> usize {
    crate::intent::DEFAULT_METADATA_LIMIT
}

fn default_memory_limit() -> u64 {
    256 * 1024 * 1024
}
fn default_upload_concurrency() -> usize {
    4
}
fn default_shutdown_timeout() -> u64 {
    120
}
fn default_revoke_timeout() -> u64 {
    30
}
fn default_commit_interval() -> u64 {
    1000
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            memory_limit_bytes: default_memory_limit(),
            upload_concurrency: default_upload_concurrency(),
            shutdown_timeout_secs: default_shutdown_timeout(),
            revoke_timeout_secs: default_revoke_timeout(),
            commit_interval_ms: default_commit_interval(),
            commit_metadata_limit: default_metadata_limit(),
        }
    }
}

/// A TOML error without the source line toml prints under it, and without the string values
/// serde quotes (`invalid type: string "…"`): either may be a secret (an unterminated
/// `secret_access_key = "…` is shown whole otherwise). Line and column say where to look.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut message = e.message().to_string();
    while let Some(start) = message.find("string \"") {
        let value_start = start + "string \"".len();
        let end = message[value_start..].rfind('"').map_or(message.len(), |i| value_start + i + 1);
        message.replace_range(start..end, "a string");
    }
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            // The key of that line, never its value.
            let key =
                text.lines().nth(line - 1).and_then(|l| l.split_once('=')).map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.starts_with('#'));
            match key {
                Some(k) => format!("TOML parse error at line {line}, column {column} (key `{k}`): {message}"),
                None => format!("TOML parse error at line {line}, column {column}: {message}"),
            }
        }
        None => format!("TOML parse error: {message}"),
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_string(), message: toml_error(text, &e) })?;
        config.kafka.resolve_env()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value that serde's types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.brokers.trim().is_empty() {
            return Err(ConfigError::invalid("kafka.brokers", "must name at least one host:port"));
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(ConfigError::invalid("kafka.group_id", "must not be empty"));
        }
        for key in ["enable.auto.commit", "group.id", "bootstrap.servers"] {
            if self.kafka.properties.contains_key(key) {
                return Err(ConfigError::invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is managed by kbackup (use kafka.brokers / kafka.group_id; auto commit is never used)",
                ));
            }
        }
        if self.storage.request_timeout_secs == 0 {
            return Err(ConfigError::invalid("storage.request_timeout_secs", "must be at least 1"));
        }
        crate::storage_url::StorageUrl::parse(&self.storage.url).map_err(|e| ConfigError::invalid("storage.url", e.to_string()))?;
        if self.topics.is_empty() {
            return Err(ConfigError::invalid("topic", "at least one [[topic]] is required"));
        }
        if let Some(secor) = &self.secor {
            if secor.zookeeper.trim().is_empty() {
                return Err(ConfigError::invalid("secor.zookeeper", "must name at least one host:port"));
            }
            if secor.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
                return Err(ConfigError::invalid("secor.group", "must not be empty (leave it out to use kafka.group_id)"));
            }
            if secor.zookeeper_path.contains("//") || secor.zookeeper_path.chars().any(char::is_whitespace) {
                return Err(ConfigError::invalid("secor.zookeeper_path", format!("`{}` is not a ZooKeeper path", secor.zookeeper_path)));
            }
        }
        let w = &self.writer;
        if w.memory_limit_bytes < 1024 * 1024 {
            return Err(ConfigError::invalid("writer.memory_limit_bytes", "must be at least 1 MiB"));
        }
        if w.commit_metadata_limit < 512 {
            return Err(ConfigError::invalid("writer.commit_metadata_limit", "must be at least 512 bytes (room for a few upload intents)"));
        }
        if w.upload_concurrency == 0 {
            return Err(ConfigError::invalid("writer.upload_concurrency", "must be at least 1"));
        }
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut layouts = std::collections::HashSet::new();
        for (i, t) in self.topics.iter().enumerate() {
            let k = |name: &str| format!("topic[{i}].{name}");
            if t.name.trim().is_empty() {
                return Err(ConfigError::invalid(k("name"), "must not be empty"));
            }
            match seen.get(t.name.as_str()) {
                Some(&first) => self.check_output(i, first)?,
                None => {
                    seen.insert(&t.name, i);
                }
            }
            check_path(&k("path"), &t.path)?;
            not_java(&k("date_format"), &t.date_format)?;
            check_strftime(&k("date_format"), &t.date_format)?;
            if t.date_format.contains('/') {
                return Err(ConfigError::invalid(k("date_format"), "must not contain `/` (the date is part of the file name)"));
            }
            if t.file_pattern.ends_with(crate::naming::RECORDS_SUFFIX) {
                return Err(ConfigError::invalid(
                    k("file_pattern"),
                    format!("must not end with `{}`: that marks record files, and format = \"record\" adds it", crate::naming::RECORDS_SUFFIX),
                ));
            }
            let layout = t.layout().map_err(|e| match e {
                LayoutError::Date(e) => ConfigError::invalid(k("date_format"), e.to_string()),
                e => ConfigError::invalid(k("file_pattern"), e.to_string()),
            })?;
            // Two topics writing the same names under one path would overwrite each other.
            if layout.secor().is_none() && !layout.pattern().has_topic() && !layouts.insert(t.path.trim_matches('/').to_string()) {
                return Err(ConfigError::invalid(
                    k("path"),
                    format!("path `{}` is used by another topic; give each topic its own path or put {{topic}} in file_pattern", t.path),
                ));
            }
            if !(1..=12).contains(&t.compression_level) {
                return Err(ConfigError::invalid(k("compression_level"), "must be 1-12"));
            }
            if t.timestamp_fields.iter().any(|f| f.is_empty() || f.split('.').any(str::is_empty)) {
                return Err(ConfigError::invalid(k("timestamp_fields"), "field names must be non-empty dotted paths"));
            }
            // No field would date every event by its record time, or file it under invalid_date.
            if t.timestamp_fields.is_empty() && t.record_time != RecordTime::Only {
                return Err(ConfigError::invalid(
                    k("timestamp_fields"),
                    "is empty: name the fields that hold the event time (e.g. [\"syncts\"]), or set record_time = \"only\" to date events by their Kafka record time",
                ));
            }
            parse_tz(&k("message_timezone"), &t.message_timezone)?;
            parse_tz(&k("output_timezone"), &t.output_timezone)?;
            if let Some(p) = &t.timestamp_input_pattern {
                not_java(&k("timestamp_input_pattern"), p)?;
                check_strftime(&k("timestamp_input_pattern"), p)?;
            }
            if t.max_file_bytes == 0 {
                return Err(ConfigError::invalid(k("max_file_bytes"), "must be greater than 0"));
            }
            if t.max_file_age_secs == 0 {
                return Err(ConfigError::invalid(k("max_file_age_secs"), "must be greater than 0"));
            }
            if t.completion_markers == Some(true) && !crate::event_date::is_daily_format(&t.date_format) {
                return Err(ConfigError::invalid(
                    k("completion_markers"),
                    format!("markers are per date: date_format {:?} is not a daily format (set completion_markers = false)", t.date_format),
                ));
            }
            if t.completion_markers == Some(true) && t.granularity != Granularity::Day {
                return Err(ConfigError::invalid(
                    k("completion_markers"),
                    "markers are per date: with hourly or minutely folders set completion_markers = false",
                ));
            }
            if t.layout_kind == LayoutKind::Pattern {
                for (key, set) in [
                    ("granularity", t.granularity != Granularity::Day),
                    ("file_extension", t.file_extension.is_some()),
                    ("prefix_as_value", t.prefix_as_value),
                    ("offset_buckets", t.offset_buckets.is_some()),
                    ("success_files", t.success_files == Some(true)),
                ] {
                    if set {
                        return Err(ConfigError::invalid(k(key), "applies to layout = \"secor\" only (file_pattern names the files otherwise)"));
                    }
                }
            } else {
                if let Some(b) = &t.offset_buckets {
                    if b.per <= 0 {
                        return Err(ConfigError::invalid(k("offset_buckets.per"), "must be a positive number of offsets"));
                    }
                    if !crate::naming::is_folder_name(&b.prefix) || b.prefix.ends_with(|c: char| c.is_ascii_digit()) {
                        return Err(ConfigError::invalid(
                            k("offset_buckets.prefix"),
                            "must be a folder name prefix not ending in a digit (Secor's: offset=)",
                        ));
                    }
                    if t.prefix_field.is_some() {
                        return Err(ConfigError::invalid(k("offset_buckets"), "offset folders take no prefix_field"));
                    }
                    if t.completion_markers == Some(true) && !b.daily {
                        return Err(ConfigError::invalid(
                            k("completion_markers"),
                            "files in offset folders carry no date: no date can be marked complete",
                        ));
                    }
                }
                if t.prefix_as_value && (t.prefix_field.is_none() || !t.prefix_map.is_empty()) {
                    return Err(ConfigError::invalid(
                        k("prefix_as_value"),
                        "needs prefix_field and no prefix_map (the field's value names the folder)",
                    ));
                }
                if t.success_files == Some(true) && !t.markers() {
                    return Err(ConfigError::invalid(
                        k("success_files"),
                        "_SUCCESS is written once every partition's completion marker of a date exists: it needs daily folders and completion markers",
                    ));
                }
                if t.format == Format::Record {
                    return Err(ConfigError::invalid(
                        k("format"),
                        "stock Secor's layout holds message values: format = \"record\" needs layout = \"pattern\"",
                    ));
                }
                for (key, prefix) in [("date_prefix", &t.date_prefix), ("hour_prefix", &t.hour_prefix), ("minute_prefix", &t.minute_prefix)] {
                    // An empty date prefix is the fork's PatternDateMessageParser without a pattern.
                    if (prefix.is_empty() && key != "date_prefix")
                        || prefix.contains('/')
                        || prefix.contains(|c: char| c.is_ascii_digit())
                        || prefix.contains('%')
                        || prefix.starts_with(['_', '.'])
                    {
                        return Err(ConfigError::invalid(
                            k(key),
                            "must be a folder prefix without `/`, `%` or digits, not starting with `_` or `.` (Secor's defaults: dt=, hr=, min=)",
                        ));
                    }
                }
                if let Some(e) = &t.file_extension {
                    if e.contains('/') || (!e.is_empty() && !e.starts_with('.')) {
                        return Err(ConfigError::invalid(k("file_extension"), "must start with `.` and not contain `/` (e.g. .gz, .json.gz)"));
                    }
                }
            }
            match (t.file_format, t.compression()) {
                (FileFormat::Parquet, Compression::Gzip) => {
                    return Err(ConfigError::invalid(
                        k("compression"),
                        "Parquet compresses its pages itself: choose zstd (the default for Parquet), snappy or none",
                    ))
                }
                (FileFormat::Text | FileFormat::SequenceFile, c @ (Compression::Zstd | Compression::Snappy)) => {
                    return Err(ConfigError::invalid(
                        k("compression"),
                        format!("{} is a Parquet page codec: text and SequenceFiles are gzip-compressed or not at all (gzip or none)", c.as_str()),
                    ))
                }
                _ => {}
            }
            if t.parquet_shred_set.is_some() && t.file_format != FileFormat::Parquet {
                return Err(ConfigError::invalid(k("parquet_shred"), "shreds fields of Parquet files: it needs file_format = \"parquet\""));
            }
            if t.file_format == FileFormat::Parquet {
                if let Some(e) = shred_paths_error(&t.parquet_shred()) {
                    return Err(ConfigError::invalid(k("parquet_shred"), e));
                }
                if t.layout_kind == LayoutKind::Secor {
                    return Err(ConfigError::invalid(
                        k("file_format"),
                        "stock Secor's layout holds text or SequenceFiles: file_format = \"parquet\" needs layout = \"pattern\"",
                    ));
                }
            }
            if t.file_format == FileFormat::SequenceFile && t.format == Format::Record {
                return Err(ConfigError::invalid(
                    k("file_format"),
                    "a SequenceFile holds message values keyed by offset: format = \"record\" needs file_format = \"text\"",
                ));
            }
            if let Some(d) = &t.completion_start_date {
                if chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() {
                    return Err(ConfigError::invalid(k("completion_start_date"), "must be a date like 2026-12-01"));
                }
            }
            if t.completion_grace_secs > 7 * 86_400 {
                return Err(ConfigError::invalid(k("completion_grace_secs"), "at most 604800 (7 days, Kafka's default retention)"));
            }
            match (&t.prefix_field, t.prefix_map.is_empty()) {
                (Some(_), true) if !t.prefix_as_value => {
                    return Err(ConfigError::invalid(k("prefix_map"), "is required when prefix_field is set (or prefix_as_value = true)"))
                }
                (None, false) => return Err(ConfigError::invalid(k("prefix_field"), "is required when prefix_map is set")),
                (Some(f), false) => {
                    if f.is_empty() || f.split('.').any(str::is_empty) {
                        return Err(ConfigError::invalid(k("prefix_field"), "must be a non-empty dotted path"));
                    }
                    if !t.prefix_map.contains_key("DEFAULT") {
                        return Err(ConfigError::invalid(k("prefix_map"), "needs a DEFAULT entry for values that match no other key"));
                    }
                    for (value, sub) in &t.prefix_map {
                        check_path(&format!("{}.{value}", k("prefix_map")), sub)?;
                    }
                }
                (Some(f), true) => {
                    if f.is_empty() || f.split('.').any(str::is_empty) {
                        return Err(ConfigError::invalid(k("prefix_field"), "must be a non-empty dotted path"));
                    }
                }
                (None, true) => {}
            }
            if chrono::NaiveDate::parse_from_str(&t.invalid_date, "%Y-%m-%d").is_err() {
                return Err(ConfigError::invalid(k("invalid_date"), "must be a date like 1970-01-01"));
            }
            if let Some(p) = &t.error_path {
                check_path(&k("error_path"), p)?;
            }
            let earliest = parse_day(&k("earliest_event_date"), &t.earliest_event_date)?;
            let latest = parse_day(&k("latest_event_date"), &t.latest_event_date)?;
            if earliest > latest {
                return Err(ConfigError::invalid(k("latest_event_date"), format!("{latest} is before earliest_event_date {earliest}")));
            }
        }
        Ok(())
    }

    /// Each Kafka topic once, in config order, with the index of its first `[[topic]]` entry:
    /// the one that routes the topic and answers for it when it has several outputs.
    pub fn first_entries(&self) -> Vec<(&str, usize)> {
        let mut out: Vec<(&str, usize)> = Vec::new();
        for (i, t) in self.topics.iter().enumerate() {
            if !out.iter().any(|(n, _)| *n == t.name) {
                out.push((&t.name, i));
            }
        }
        out
    }

    /// The Kafka topics to read, each once, in config order (a topic listed once per output).
    pub fn topic_names(&self) -> Vec<String> {
        self.first_entries().into_iter().map(|(n, _)| n.to_string()).collect()
    }

    /// The topic section for a Kafka topic name: its first output, when it has several.
    pub fn topic(&self, name: &str) -> Option<&TopicConfig> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The config with output `output` of topic `name` as the topic's only entry, so that a
    /// tool reading one topic's files (`verify`, `ls`, `cat`, …) reads that output's: `0` is the
    /// first `[[topic]]` entry of the name.
    pub fn with_output(mut self, name: &str, output: u8) -> Result<Config, ConfigError> {
        let entries: Vec<usize> = (0..self.topics.len()).filter(|&i| self.topics[i].name == name).collect();
        let Some(&keep) = entries.get(usize::from(output)) else {
            return Err(ConfigError::invalid(
                "--output",
                format!(
                    "topic `{name}` has {} output(s) in the config ([[topic]] entries of that name): 0 to {}",
                    entries.len(),
                    entries.len().saturating_sub(1)
                ),
            ));
        };
        let mut i = 0;
        self.topics.retain(|_| {
            let kept = !entries.contains(&i) || i == keep;
            i += 1;
            kept
        });
        Ok(self)
    }

    /// Checks `topic[i]`, a later output of the topic first listed as `topic[first]`: one read
    /// of the topic routes each message once for all its outputs, so they must route alike,
    /// and their files must not share names.
    fn check_output(&self, i: usize, first: usize) -> Result<(), ConfigError> {
        let (t, f) = (&self.topics[i], &self.topics[first]);
        let k = |name: &str| format!("topic[{i}].{name}");
        let outputs = self.topics[..i].iter().filter(|o| o.name == t.name).count();
        if outputs >= MAX_OUTPUTS {
            return Err(ConfigError::invalid(k("name"), format!("topic `{}` is listed more than {MAX_OUTPUTS} times (once per output)", t.name)));
        }
        let same = [
            ("timestamp_fields", t.timestamp_fields == f.timestamp_fields),
            ("timestamp_input_pattern", t.timestamp_input_pattern == f.timestamp_input_pattern),
            ("message_timezone", t.message_timezone == f.message_timezone),
            ("output_timezone", t.output_timezone == f.output_timezone),
            ("date_format", t.partition_format() == f.partition_format()),
            ("earliest_event_date", t.earliest_event_date == f.earliest_event_date),
            ("latest_event_date", t.latest_event_date == f.latest_event_date),
            ("prefix_field", t.prefix_field == f.prefix_field),
            ("prefix_map", t.prefix_map == f.prefix_map),
            ("prefix_as_value", t.prefix_as_value == f.prefix_as_value),
            ("invalid_date", t.invalid_date == f.invalid_date),
            ("error_path", t.error_path.is_some() == f.error_path.is_some()),
            ("record_time", t.record_time == f.record_time),
            ("format", t.format == f.format),
            ("offset_buckets", t.offset_buckets == f.offset_buckets),
        ];
        if let Some((key, _)) = same.iter().find(|(_, same)| !same) {
            return Err(ConfigError::invalid(
                k(key),
                format!(
                    "differs from topic[{first}]'s: both back up topic `{}` in one read, as outputs that file each message on the same route (date, prefix); give them the same {key}",
                    t.name
                ),
            ));
        }
        if t.completion_markers == Some(true) {
            return Err(ConfigError::invalid(
                k("completion_markers"),
                format!("completion markers are written for topic `{}`'s first output (topic[{first}]) only", t.name),
            ));
        }
        let segments = |p: &str| p.trim_matches('/').split('/').filter(|s| !s.is_empty()).map(str::to_string).collect::<Vec<_>>();
        fn dirs(t: &TopicConfig) -> Vec<(&'static str, &String)> {
            [Some(("path", &t.path)), t.error_path.as_ref().map(|e| ("error_path", e))].into_iter().flatten().collect()
        }
        for (j, o) in self.topics[..i].iter().enumerate().filter(|(_, o)| o.name == t.name) {
            for (key, mine) in dirs(t) {
                for (their_key, theirs) in dirs(o) {
                    let (a, b) = (segments(mine), segments(theirs));
                    if a.starts_with(&b) || b.starts_with(&a) {
                        return Err(ConfigError::invalid(
                            k(key),
                            format!(
                                "`{mine}` is, or is inside or around, topic[{j}].{their_key} `{theirs}`: each output of topic `{}` needs folders of its own (recovery tells their files apart by them)",
                                t.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The most `[[topic]]` entries (outputs) one Kafka topic may have.
pub const MAX_OUTPUTS: usize = 8;

/// Parses a `YYYY-MM-DD` day.
pub fn parse_day(key: &str, s: &str) -> Result<chrono::NaiveDate, ConfigError> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| ConfigError::invalid(key, format!("`{s}` is not a date like 2000-01-01")))
}

/// Parses an IANA time zone name.
pub fn parse_tz(key: &str, name: &str) -> Result<Tz, ConfigError> {
    name.parse::<Tz>().map_err(|_| ConfigError::invalid(key, format!("`{name}` is not an IANA time zone (e.g. UTC, Asia/Kolkata)")))
}

/// Refuses Secor's Java form (`yyyy-MM-dd`): strftime reads it as literal text, so it would
/// match no timestamp and date every event by another rung, silently.
fn not_java(key: &str, fmt: &str) -> Result<(), ConfigError> {
    match crate::event_date::looks_like_java(fmt) {
        Some(strftime) => {
            Err(ConfigError::invalid(key, format!("`{fmt}` is a Java SimpleDateFormat pattern (Secor's form); kbackup takes strftime: `{strftime}`")))
        }
        None => Ok(()),
    }
}

fn check_strftime(key: &str, fmt: &str) -> Result<(), ConfigError> {
    use chrono::format::{Item, StrftimeItems};
    if fmt.is_empty() {
        return Err(ConfigError::invalid(key, "must not be empty"));
    }
    if StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error)) {
        return Err(ConfigError::invalid(key, format!("`{fmt}` is not a valid strftime format")));
    }
    Ok(())
}

fn check_path(key: &str, path: &str) -> Result<(), ConfigError> {
    let p = path.trim_matches('/');
    if p.is_empty() {
        return Err(ConfigError::invalid(key, "must not be empty"));
    }
    if p.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return Err(ConfigError::invalid(key, format!("`{path}` has an empty, `.` or `..` segment")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [kafka]
        brokers = "127.0.0.1:9092"
        [storage]
        url = "az://telemetry-data-store"
        [[topic]]
        name = "dev.telemetry.unique"
        path = "unique/raw"
    "#;

    #[test]
    fn each_file_format_has_its_compression_default_and_parquet_names_carry_no_codec() {
        let text = Config::parse(GOOD, "t").unwrap();
        assert_eq!((text.topics[0].compression(), text.topics[0].extension().as_str()), (Compression::Gzip, ".gz"));
        let parquet = Config::parse(&format!("{GOOD}\nfile_format = \"parquet\""), "t").unwrap();
        assert_eq!((parquet.topics[0].compression(), parquet.topics[0].extension().as_str()), (Compression::Zstd, ""));
        assert!(parquet.topics[0].buffers_envelopes());
        let snappy = Config::parse(&format!("{GOOD}\nfile_format = \"parquet\"\ncompression = \"snappy\""), "t").unwrap();
        assert_eq!(snappy.topics[0].compression(), Compression::Snappy);
        let ctx = crate::naming::NameContext {
            date: "2026-12-06",
            kafka_partition: 3,
            current_ms: 1_796_000_000_000,
            topic: "dev.telemetry.unique",
            generation: 0,
            first_offset: 0,
            random: 0,
        };
        assert_eq!(parquet.topics[0].layout().unwrap().key(None, false, &ctx), "unique/raw/2026-12-06-3-1796000000000.parquet");
    }

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn kafka_properties_can_come_from_the_environment() {
        std::env::set_var("KBACKUP_TEST_SASL_PASSWORD_FROM_ENV", "s3cr3t-from-a-secret");
        let text = format!("{GOOD}\n[kafka.properties_from_env]\n\"sasl.password\" = \"KBACKUP_TEST_SASL_PASSWORD_FROM_ENV\"\n")
            .replace("[storage]", "[kafka.properties]\n\"sasl.username\" = \"u\"\n[storage]");
        // (A table after [[topic]] still belongs under [kafka]: TOML tables come in any order.)
        let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.kafka.properties.get("sasl.password").map(String::as_str), Some("s3cr3t-from-a-secret"));
        assert!(!format!("{:?}", c.kafka).contains("s3cr3t"));
        let e = err(&text.replace("KBACKUP_TEST_SASL_PASSWORD_FROM_ENV", "KBACKUP_TEST_NOT_SET_ANYWHERE"));
        assert!(e.contains("kafka.properties_from_env.\"sasl.password\"") && e.contains("KBACKUP_TEST_NOT_SET_ANYWHERE is not set"), "{e}");
        let e = err(&text.replace("\"sasl.username\" = \"u\"", "\"sasl.password\" = \"x\""));
        assert!(e.contains("keep one"), "{e}");
    }

    #[test]
    fn parse_errors_never_echo_values() {
        const SECRET: &str = "wJalrXUtnFEMI-SECRET";
        let cases = [
            // Unterminated: toml would print the whole source line.
            (format!("[storage]\nsecret_access_key = \"{SECRET}\n"), "line 2"),
            (format!("[storage]\nsas_token = \"\"\"{SECRET}\n"), "TOML parse error at line"),
            (format!("[storage]\naccess_key = {SECRET}\n"), "line 2, column 14 (key `access_key`)"),
            // A wrong type: serde quotes the value.
            (format!("[storage]\nurl = \"az://c\"\nrequest_timeout_secs = \"{SECRET}\"\n"), "line 3"),
            (format!("[storage]\nurl = \"az://c\"\ncreate_container = \"{SECRET}\"\n"), "line 3"),
            (format!("[kafka]\nbrokers = \"b\"\n[kafka.properties]\n\"sasl.password\" = \"{SECRET}\" x\n"), "line 4"),
        ];
        for (text, at) in cases {
            let e = err(&text);
            assert!(!e.contains(SECRET) && !e.contains("wJalr"), "{e}");
            assert!(e.contains(at) && e.contains("test.toml"), "{e}");
        }
        assert!(err("[storage]\nrequest_timeout_secs = \"x\"\n").contains("invalid type: a string, expected u64"));
        let k = KafkaConfig { properties: [("sasl.password".to_string(), SECRET.to_string())].into(), ..KafkaConfig::for_brokers("b:1") };
        assert!(!format!("{k:?}").contains(SECRET) && format!("{k:?}").contains("sasl.password"));
    }

    #[test]
    fn minimal_config_gets_sunbird_defaults() {
        let c = Config::parse(GOOD, "t").unwrap();
        let t = &c.topics[0];
        assert_eq!(c.kafka.group_id, "kbackup");
        assert_eq!(t.file_pattern, DEFAULT_FILE_PATTERN);
        assert_eq!(t.compression(), Compression::Gzip);
        assert_eq!(t.timestamp_fields, vec!["syncts", "@timestamp"]);
        assert_eq!(t.max_file_bytes, 100_000_000);
        assert_eq!(t.max_file_age_secs, 14_400);
        assert_eq!(t.invalid_date, "1970-01-01");
        assert_eq!(c.writer.memory_limit_bytes, 256 * 1024 * 1024);
    }

    #[test]
    fn typo_key_is_named() {
        let e = err(&GOOD.replace("path =", "paht ="));
        assert!(e.contains("paht"), "{e}");
        let e = err(&format!("{GOOD}\nmax_file_byte = 3"));
        assert!(e.contains("max_file_byte"), "{e}");
        let e = err(&GOOD.replace("[storage]", "[storage]\nconection_string = \"x\""));
        assert!(e.contains("conection_string"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (format!("{GOOD}\noutput_timezone = \"Asia/Kolkota\""), "topic[0].output_timezone"),
            (format!("{GOOD}\nfile_pattern = \"{{partition}}-{{nope}}.json\""), "topic[0].file_pattern"),
            (format!("{GOOD}\nprefix_field = \"eid\""), "topic[0].prefix_map"),
            (format!("{GOOD}\nprefix_field = \"eid\"\nprefix_map = {{ A = \"a\" }}"), "topic[0].prefix_map"),
            (format!("{GOOD}\nmax_file_bytes = 0"), "topic[0].max_file_bytes"),
            (format!("{GOOD}\nfile_format = \"parquet\"\ncompression = \"gzip\""), "topic[0].compression"),
            (format!("{GOOD}\ncompression = \"zstd\""), "topic[0].compression"),
            (format!("{GOOD}\nfile_format = \"sequencefile\"\ncompression = \"snappy\""), "topic[0].compression"),
            (format!("{GOOD}\nparquet_shred = {{ eid = \"string\" }}"), "topic[0].parquet_shred"),
            (
                format!("{GOOD}\nfile_format = \"parquet\"\nparquet_shred = {{ context = \"string\", \"context.did\" = \"string\" }}"),
                "topic[0].parquet_shred",
            ),
            (format!("{GOOD}\nfile_format = \"parquet\"\nparquet_shred = {{ \"a..b\" = \"string\" }}"), "topic[0].parquet_shred"),
            (format!("{GOOD}\nfile_format = \"parquet\"\nparquet_shred = {{ eid = \"text\" }}"), "key `parquet_shred`"),
            (format!("{GOOD}\nfile_format = \"parquet\"\nlayout = \"secor\""), "topic[0].file_format"),
            (format!("{GOOD}\ninvalid_date = \"yesterday\""), "topic[0].invalid_date"),
            (format!("{GOOD}\ntimestamp_fields = []"), "topic[0].timestamp_fields"),
            (format!("{GOOD}\ndate_format = \"%Y/%m/%d\""), "topic[0].date_format"),
            (format!("{GOOD}\nfile_pattern = \"{{partition}}.json\""), "topic[0].file_pattern"),
            (format!("{GOOD}\nfile_pattern = \"{{partition}}-{{kafkaPartition}}{{currentTimestamp}}.json\""), "topic[0].file_pattern"),
            (format!("{GOOD}\ndate_format = \"%Y-%m\""), "topic[0].date_format"),
            (format!("{GOOD}\ndate_format = \"yyyy-MM-dd\""), "strftime: `%Y-%m-%d`"),
            (format!("{GOOD}\ntimestamp_input_pattern = \"yyyy-MM-dd\""), "topic[0].timestamp_input_pattern"),
            (format!("{GOOD}\ntimestamp_input_pattern = \"yyyy-MM-dd'T'HH:mm:ss\""), "strftime: `%Y-%m-%dT%H:%M:%S`"),
            (format!("{GOOD}\nfile_pattern = \"{{partition}}-{{currentTimestamp}}.records.json\""), "topic[0].file_pattern"),
            (format!("{GOOD}\nformat = \"avro\""), "format"),
            (format!("{GOOD}\ndate_format = \"%b %d %Y\""), "topic[0].date_format"),
            (format!("{GOOD}\ncompression = \"zstd\""), "compression"),
            (GOOD.replace("az://telemetry-data-store", "s4://x"), "storage.url"),
            (GOOD.replace("unique/raw", "unique//raw"), "topic[0].path"),
            (format!("{GOOD}\n[[topic]]\nname = \"other\"\npath = \"unique/raw/\""), "topic[1].path"),
            (GOOD.replace("[storage]", "[kafka.properties]\n\"enable.auto.commit\" = \"true\"\n[storage]"), "enable.auto.commit"),
        ];
        for (text, key) in cases {
            let e = err(&text);
            assert!(e.contains(key), "expected `{key}` in: {e}");
        }
    }

    #[test]
    fn a_topic_listed_again_is_another_output_of_it() {
        const PARQUET: &str = "\n[[topic]]\nname = \"dev.telemetry.unique\"\npath = \"unique/parquet\"\nfile_format = \"parquet\"";
        let c = Config::parse(&format!("{GOOD}{PARQUET}\n[[topic]]\nname = \"other\"\npath = \"o\""), "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.topic_names(), ["dev.telemetry.unique", "other"], "each topic read once");
        assert_eq!(c.topic("dev.telemetry.unique").unwrap().path, "unique/raw", "the first output answers for the topic");
        let cases = [
            (format!("{GOOD}{PARQUET}\ntimestamp_fields = [\"ets\"]"), "topic[1].timestamp_fields`: differs from topic[0]'s"),
            (format!("{GOOD}{PARQUET}\nprefix_field = \"eid\"\nprefix_map = {{ DEFAULT = \"x\" }}"), "topic[1].prefix_field"),
            (format!("{GOOD}{PARQUET}\ndate_format = \"%d-%m-%Y\""), "topic[1].date_format"),
            (format!("{GOOD}{PARQUET}\noutput_timezone = \"Asia/Kolkata\""), "topic[1].output_timezone"),
            (format!("{GOOD}{PARQUET}\nerror_path = \"errors\""), "topic[1].error_path`: differs"),
            (format!("{GOOD}{PARQUET}\ncompletion_markers = true"), "topic[1].completion_markers"),
            (format!("{GOOD}{}", PARQUET.replace("unique/parquet", "unique")), "topic[1].path`: `unique` is, or is inside or around, topic[0].path"),
            (format!("{GOOD}{}", PARQUET.replace("unique/parquet", "/unique/raw/p")), "topic[1].path"),
            (format!("{GOOD}\nerror_path = \"e\"{PARQUET}\nerror_path = \"unique/raw/e\""), "topic[1].error_path`: `unique/raw/e`"),
            (format!("{GOOD}{}", PARQUET.repeat(2).replace("unique/parquet", "p")), "topic[2].path`: `p` is, or is inside or around, topic[1].path"),
        ];
        for (text, key) in cases {
            let e = Config::parse(&text, "t").map(|_| format!("no error for {text}")).unwrap_or_else(|e| e.to_string());
            assert!(e.contains(key), "expected `{key}` in: {e}");
        }
        let many: String = (1..=MAX_OUTPUTS).map(|i| PARQUET.replace("unique/parquet", &format!("p{i}"))).collect();
        assert!(err(&format!("{GOOD}{many}")).contains(&format!("topic[{MAX_OUTPUTS}].name")), "{}", err(&format!("{GOOD}{many}")));
        // A tool reads one output's files: the one `--output` names.
        let second = c.clone().with_output("dev.telemetry.unique", 1).unwrap();
        assert_eq!(second.topics.iter().map(|t| t.path.as_str()).collect::<Vec<_>>(), ["unique/parquet", "o"]);
        assert_eq!(c.clone().with_output("other", 0).unwrap().topics.len(), 3, "a topic's only output: nothing else changes");
        let e = c.clone().with_output("dev.telemetry.unique", 2).unwrap_err().to_string();
        assert!(e.contains("--output") && e.contains("has 2 output(s)"), "{e}");
        // What routes alike may differ: sizes, ages, formats, names.
        Config::parse(&format!("{GOOD}{PARQUET}\nmax_file_bytes = 5\nmax_file_age_secs = 9\nfile_pattern = \"{{partition}}-{{kafkaPartition}}-{{currentTimestamp}}.json\""), "t")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn missing_topics_is_an_error() {
        let text = GOOD.split("[[topic]]").next().unwrap();
        assert!(err(text).contains("topic"));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let s = StorageConfig {
            url: "az://c".into(),
            connection_string: Some("AccountKey=SECRET".into()),
            access_key: Some("SECRET".into()),
            sas_token: Some("sig=SECRET".into()),
            secret_access_key: Some("SECRET".into()),
            session_token: Some("SECRET".into()),
            ..Default::default()
        };
        let d = format!("{s:?}");
        assert!(!d.contains("SECRET"), "{d}");
    }

    #[test]
    fn shipped_configs_are_valid() {
        for f in ["config/local.toml", "config/sunbird-unique-denorm.toml", "config/sunbird-s3.toml", "config/eventhubs.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            Config::load(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }
}
