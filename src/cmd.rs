//! One module per `kbackup` subcommand; each is a thin shell over the library stages.

pub mod bench;
pub mod cat;
pub mod check;
pub mod handback;
pub mod ls;
pub mod plan;
pub mod produce_sample;
pub mod repartition;
pub mod replay;
pub mod run;
pub mod takeover;
pub mod verify;

use std::path::PathBuf;

use anyhow::Context;
use chrono::NaiveDate;

use crate::config::StorageConfig;
use crate::listing::{parse_partitions, DayArg, Selection};
use crate::naming::FileLayout;
use crate::storage::Storage;

/// `println!` that returns the write error instead of panicking, so that a command whose reader
/// went away (`kbackup verify | head -1`) ends quietly; `main` turns a broken pipe into exit 141.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// True if the error is a write to a closed pipe (the reader of stdout went away).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// An error with the exit code it should produce (2: bad config or usage, 1: failure).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    pub code: u8,
    pub message: String,
}

/// `--config FILE` or `--secor-properties FILE...`, shared by the commands that read a config.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Path to the TOML config (see config/local.toml).
    #[arg(long, short = 'c', env = "KBACKUP_CONFIG", required_unless_present = "secor_properties", conflicts_with = "secor_properties")]
    pub config: Option<PathBuf>,
    /// Secor .properties files instead of a TOML config, read as Secor reads its -Dconfig file
    /// (includes in place; a key's first value counts).
    #[arg(long = "secor-properties", value_name = "FILE")]
    pub secor_properties: Vec<PathBuf>,
    /// A Secor key's value, replacing the files' as Secor's -DKEY=VALUE does (repeatable).
    #[arg(long = "secor-property", value_name = "KEY=VALUE", value_parser = crate::secor::parse_override, requires = "secor_properties")]
    pub secor_property: Vec<(String, String)>,
}

impl ConfigArg {
    /// The same config as command-line arguments, for messages that name another command.
    pub fn as_args(&self) -> String {
        match &self.config {
            Some(p) => format!("--config {}", p.display()),
            None => self
                .secor_properties
                .iter()
                .map(|p| format!("--secor-properties {}", p.display()))
                .chain(self.secor_property.iter().map(|(k, v)| format!("--secor-property {k}={v}")))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// Where the config came from, for messages.
    pub fn describe(&self) -> String {
        match &self.config {
            Some(p) => p.display().to_string(),
            None => self.secor_properties.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" + "),
        }
    }
}

/// Which files: shared by `ls` and the commands that read backups.
#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    /// Config file; the topic's path, prefixes and storage come from it.
    #[arg(long, short = 'c', env = "KBACKUP_CONFIG", required_unless_present_any = ["url", "secor_properties"])]
    pub config: Option<std::path::PathBuf>,
    /// Secor .properties files instead of a config (as `run --secor-properties` reads them).
    #[arg(long = "secor-properties", value_name = "FILE", conflicts_with_all = ["config", "url"])]
    pub secor_properties: Vec<std::path::PathBuf>,
    /// A Secor key's value, replacing the files' as Secor's -DKEY=VALUE does (repeatable).
    #[arg(long = "secor-property", value_name = "KEY=VALUE", value_parser = crate::secor::parse_override, requires = "secor_properties")]
    pub secor_property: Vec<(String, String)>,
    /// Topic whose backups to list (with --config or --secor-properties).
    #[arg(long, required_unless_present = "path")]
    pub topic: Option<String>,
    /// Storage URL, instead of a config: az://container[/root], s3://bucket[/root],
    /// gs://bucket[/root] or file:///dir
    /// (credentials from the environment: AZURE_STORAGE_CONNECTION_STRING, AWS_*,
    /// GOOGLE_SERVICE_ACCOUNT_*, ...).
    #[arg(long, conflicts_with = "config", requires = "path")]
    pub url: Option<String>,
    /// Path inside the container, instead of a config's topic path (e.g. unique/raw).
    #[arg(long, conflicts_with = "topic")]
    pub path: Option<String>,
    /// First date, inclusive: YYYY-MM-DD, `today`, `yesterday` or `-N` days (in the topic's
    /// output time zone). Required, except by `replay` with a time window.
    #[arg(long, allow_hyphen_values = true)]
    pub from: Option<DayArg>,
    /// Last date, inclusive, in the forms --from takes (default: --from).
    #[arg(long, allow_hyphen_values = true)]
    pub to: Option<DayArg>,
    /// Kafka partitions, e.g. 0,3,5-7.
    #[arg(long)]
    pub partitions: Option<String>,
    /// With --partitions, also keep old-name files that carry no partition.
    #[arg(long)]
    pub include_unpartitioned: bool,
}

impl SelectArgs {
    /// Opens storage and lists the selected blobs in (date, partition, timestamp) order, with
    /// the number of old-name files left out by `--partitions`.
    pub async fn resolve(&self) -> anyhow::Result<(Storage, Vec<crate::listing::Listed>, usize)> {
        let opened = self.open(false).await?;
        let (from, to) = self.days(&opened)?;
        let (listed, left_out) = self.list(&opened, from, to).await?;
        Ok((opened.storage, listed, left_out))
    }

    /// The selected dates: `--from` and `--to` resolved in the topic's time zone.
    fn days(&self, opened: &Opened) -> Result<(NaiveDate, NaiveDate), ExitError> {
        let from = self
            .from
            .ok_or_else(|| ExitError { code: 2, message: "--from is required: a date (YYYY-MM-DD, today, yesterday or -N days ago)".into() })?;
        let from = from.resolve(opened.today);
        Ok((from, self.to.map_or(from, |t| t.resolve(opened.today))))
    }

    /// What `replay` reads: the selected files, the backup's path (where the writer records the
    /// topic's settings) and the topic's `invalid_date` record files when that date is not among
    /// the selected ones (a time window may have records there); with the number of old-name
    /// files left out by `--partitions`.
    ///
    /// Without `--from`, a window's start selects the files: every date (an event's date says
    /// nothing of when Kafka stamped it), but no file uploaded more than a day before the window
    /// opened; a record is written after the broker stamps it, and brokers refuse timestamps
    /// more than an hour ahead (`log.message.timestamp.after.max.ms`), so such a file cannot
    /// hold one of the window's records.
    pub async fn source(&self, window_from: Option<i64>) -> anyhow::Result<(crate::replay::restore::Source, usize)> {
        let opened = self.open(false).await?;
        let (from, to, uploaded_from) = match (self.from, window_from) {
            (None, Some(start)) => (NaiveDate::MIN, NaiveDate::MAX, Some(start - WINDOW_UPLOAD_SLACK_MS)),
            _ => {
                let (from, to) = self
                    .days(&opened)
                    .map_err(|e| ExitError { code: 2, message: format!("{} (or --from-time to select by a time window)", e.message) })?;
                (from, to, None)
            }
        };
        let (mut listed, left_out) = self.list(&opened, from, to).await?;
        let invalid_files = if let Some(min) = uploaded_from {
            let before = listed.len();
            listed.retain(|l| l.timestamp.is_none_or(|t| t >= min));
            tracing::info!(
                "no --from: {} file(s) of every date selected, {} uploaded more than a day before --from-time left out",
                listed.len(),
                before - listed.len()
            );
            // The invalid_date's record files are restored only when asked, as with dates.
            let (invalid, dated): (Vec<_>, Vec<_>) = listed.into_iter().partition(|l| l.name.date == opened.invalid_date && l.name.records);
            listed = dated;
            invalid
        } else if (from..=to).contains(&opened.invalid_date) {
            Vec::new()
        } else {
            let (files, _) = self.list(&opened, opened.invalid_date, opened.invalid_date).await?;
            files.into_iter().filter(|l| l.name.records).collect()
        };
        let source = crate::replay::restore::Source {
            storage: opened.storage,
            listed,
            path: opened.layout.marker_path(),
            invalid_date: opened.invalid_date,
            invalid_files,
        };
        Ok((source, left_out))
    }

    /// Reads the config once (or takes `--url`), checks `--partitions` against the topic, and
    /// opens storage.
    /// With `count`, the topic's partition count is looked up in Kafka even without
    /// `--partitions` (`ls --completion` names the partitions with no file and no marker).
    async fn open(&self, count: bool) -> anyhow::Result<Opened> {
        let usage = |m: String| ExitError { code: 2, message: m };
        let partitions = self.partitions.as_deref().map(parse_partitions).transpose().map_err(|e| usage(e.to_string()))?;
        // Secor's fixed fallback without a config.
        let mut invalid_date = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
        let mut today = chrono::Utc::now().date_naive();
        let mut partition_count = None;
        let from_secor = !self.secor_properties.is_empty();
        let (storage_cfg, layout) = match &self.url {
            _ if self.config.is_some() || from_secor => {
                let arg = ConfigArg {
                    config: self.config.clone(),
                    secor_properties: self.secor_properties.clone(),
                    secor_property: self.secor_property.clone(),
                };
                let config = load_config_unchecked(&arg)?;
                let name = self.topic.as_deref().unwrap_or_default();
                let t = config.topic(name).ok_or_else(|| usage(format!("topic `{name}` is not in {}", arg.describe())))?;
                let mut layout = t.layout().map_err(|e| usage(format!("topic `{name}`: {e}")))?;
                invalid_date = t.invalid_day().map_err(|e| usage(e.to_string()))?;
                today = t.today().map_err(|e| usage(e.to_string()))?;
                if partitions.is_some() || count {
                    // Partitions the topic does not have would list nothing, like an empty backup.
                    let counts =
                        crate::consumer::lookup_partition_counts(&config.kafka, &[name.to_string()], std::time::Duration::from_secs(10)).await;
                    let what = if partitions.is_some() { "--partitions is not checked against it" } else { "partitions without files are not named" };
                    match counts.map(|mut c| c.pop().and_then(|(_, n)| n)) {
                        Ok(Some(n)) => partition_count = Some(n as i32),
                        Ok(None) => tracing::warn!("topic {name} is not on {}: {what}", config.kafka.brokers),
                        Err(e) => tracing::warn!("cannot read topic {name}'s partition count ({e}): {what}"),
                    }
                }
                if let (Some(set), Some(n)) = (&partitions, partition_count) {
                    crate::listing::check_partitions(name, set, n).map_err(usage)?;
                }
                if let Some(p) = &self.path {
                    layout = layout.with_path(p);
                }
                (config.storage.clone(), layout)
            }
            Some(url) => {
                let cfg = StorageConfig { url: url.clone(), ..Default::default() };
                (cfg, FileLayout::bare(self.path.as_deref().unwrap_or_default()))
            }
            None => unreachable!("clap requires --config, --secor-properties or --url"),
        };
        let storage = Storage::open(&storage_cfg).map_err(|e| usage(e.to_string()))?;
        if count && partition_count.is_none() && self.url.is_some() {
            tracing::warn!("with --url the topic's partition count is unknown: partitions without files are not named");
        }
        Ok(Opened { storage, layout, partitions, invalid_date, today, partition_count })
    }

    /// Lists the backup files of `from..=to` (the selected partitions), warning about objects
    /// that are not backup files.
    async fn list(&self, opened: &Opened, from: NaiveDate, to: NaiveDate) -> anyhow::Result<(Vec<crate::listing::Listed>, usize)> {
        let usage = |m: String| ExitError { code: 2, message: m };
        let mut sel = Selection::new(from, to).map_err(|e| usage(e.to_string()))?;
        sel.partitions = opened.partitions.clone();
        sel.include_unpartitioned = self.include_unpartitioned;
        let (storage, layout) = (&opened.storage, &opened.layout);
        let listing = crate::listing::list(storage, layout, &sel)
            .await
            .with_context(|| format!("listing {} in {}", layout.dirs().join(", "), storage.describe))?;
        if !listing.strays.is_empty() {
            let keys: Vec<&str> = listing.strays.iter().take(10).map(|l| l.key.as_str()).collect();
            tracing::warn!(
                "{} object(s) under the selected dates are not backup files ({}{}): readers that read every object of a date (Sunbird's fetcher, Spark) read them, this command does not; `kbackup verify` audits them",
                listing.strays.len(),
                keys.join(", "),
                if listing.strays.len() > keys.len() { ", …" } else { "" }
            );
        }
        Ok((listing.files, listing.unpartitioned_left_out))
    }
}

impl SelectArgs {
    /// Per selected date: which partitions its completion markers declare complete.
    pub async fn completion(&self) -> anyhow::Result<Vec<crate::completion::read::DateStatus>> {
        let opened = self.open(true).await?;
        let (from, to) = self.days(&opened)?;
        let (listed, _) = self.list(&opened, from, to).await?;
        let sel = Selection::new(from, to).map_err(|e| ExitError { code: 2, message: e.to_string() })?;
        let mut out = Vec::new();
        for date in sel.dates() {
            let with_files = listed.iter().filter(|l| l.name.date == date).filter_map(|l| l.kafka_partition).collect();
            let date_str = opened.layout.dates().format(date);
            let status = crate::completion::read::status(
                opened.storage.store.as_ref(),
                &opened.layout.marker_path(),
                &date_str,
                &with_files,
                opened.partition_count,
                opened.partitions.as_ref(),
            )
            .await
            .with_context(|| format!("reading the completion markers of {date_str} in {}", opened.storage.describe))?;
            out.push(status);
        }
        Ok(out)
    }
}

/// A selection's storage and layout, opened once.
struct Opened {
    storage: Storage,
    layout: FileLayout,
    partitions: Option<std::collections::BTreeSet<i32>>,
    /// The topic's `invalid_date`.
    invalid_date: NaiveDate,
    /// Today in the topic's output time zone (UTC with `--url`), for `today`, `-N`.
    today: NaiveDate,
    /// The topic's partition count in Kafka, when looked up and found.
    partition_count: Option<i32>,
}

/// How long before a time window's start a file may have been uploaded and still hold one of
/// its records: a day, far more than the hour of clock skew brokers allow.
const WINDOW_UPLOAD_SLACK_MS: i64 = 24 * 3600 * 1000;

/// Where Secor kept its position, for `takeover` and `handback`: the config's `[secor]` section
/// (mapped from `zookeeper.quorum` and friends with `--secor-properties`), each option
/// replacing its key.
#[derive(Debug, clap::Args)]
pub struct SecorArgs {
    /// Secor's ZooKeeper, `host:port[,host:port]` (Secor: zookeeper.quorum).
    #[arg(long, value_name = "HOSTS")]
    pub zookeeper: Option<String>,
    /// The chroot of Secor's offset nodes (Secor: kafka.zookeeper.path; default `/`).
    #[arg(long, value_name = "PATH")]
    pub zookeeper_path: Option<String>,
    /// Secor's consumer group (Secor: secor.kafka.group; default: the config's group).
    #[arg(long, value_name = "GROUP")]
    pub secor_group: Option<String>,
    /// Where Secor read its position from (Secor: kafka.offsets.storage).
    #[arg(long, value_name = "zookeeper|kafka", value_parser = ["zookeeper", "kafka"])]
    pub offsets_storage: Option<String>,
    /// Show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the groups' members to leave before refusing (a program that has
    /// just stopped may stay listed a moment; one that crashed, until its session times out).
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub wait_for_stop: u64,
}

impl SecorArgs {
    /// The config with its `[secor]` section completed by the options (exit 2 when nothing
    /// names Secor's ZooKeeper), and the mode used.
    pub fn apply(&self, mut config: crate::config::Config) -> anyhow::Result<crate::config::Config> {
        use crate::config::{OffsetsStorage, SecorConfig};
        let mut secor = match (config.secor.take(), &self.zookeeper) {
            (Some(mut s), Some(z)) => {
                s.zookeeper = z.clone();
                s
            }
            (Some(s), None) => s,
            (None, Some(z)) => {
                SecorConfig { zookeeper: z.clone(), zookeeper_path: "/".into(), group: None, offsets_storage: OffsetsStorage::Zookeeper }
            }
            (None, None) => return Err(ExitError {
                code: 2,
                message:
                    "nothing says where Secor kept its position: give --zookeeper (or zookeeper.quorum in Secor's properties, or a [secor] section)"
                        .into(),
            }
            .into()),
        };
        if let Some(p) = &self.zookeeper_path {
            secor.zookeeper_path = p.clone();
        }
        if let Some(g) = &self.secor_group {
            secor.group = Some(g.clone());
        }
        match self.offsets_storage.as_deref() {
            Some("kafka") => secor.offsets_storage = OffsetsStorage::Kafka,
            Some(_) => secor.offsets_storage = OffsetsStorage::Zookeeper,
            None => {}
        }
        config.secor = Some(secor);
        config.validate().map_err(|e| ExitError { code: 2, message: e.to_string() })?;
        Ok(config)
    }
}

/// Every takeover or handback error is a runtime refusal or failure (exit 1), none a config
/// error.
/// A takeover or handback that could not be planned (live members, ZooKeeper or Kafka errors);
/// with `--json` the refusal is printed as JSON on stdout too, for scripts that read it.
pub fn move_failure(command: &'static str, json: bool) -> impl FnOnce(crate::takeover::TakeoverError) -> anyhow::Error {
    move |e| {
        let message = e.to_string();
        if json {
            let kind = match &e {
                crate::takeover::TakeoverError::Running { .. } => "running",
                crate::takeover::TakeoverError::Kafka(_) | crate::takeover::TakeoverError::MissingTopics(_) => "kafka",
                crate::takeover::TakeoverError::Zookeeper(_) | crate::takeover::TakeoverError::NoSecorNodes { .. } => "zookeeper",
                crate::takeover::TakeoverError::NotConfirmed { .. } => "not_confirmed",
                crate::takeover::TakeoverError::Storage(_) => "storage",
                crate::takeover::TakeoverError::Blocking(_) => "blocking",
                crate::takeover::TakeoverError::NoSecor | crate::takeover::TakeoverError::UnknownPartition(_) => "usage",
            };
            // After its commit could not be confirmed, whether it applied is unknown.
            let applied = if kind == "not_confirmed" { serde_json::Value::Null } else { false.into() };
            let refusal = serde_json::json!({"command": command, "refused": true, "applied": applied, "kind": kind, "error": message});
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout().lock(), "{refusal}");
        }
        ExitError { code: 1, message }.into()
    }
}

/// Prints a takeover or handback report (table or JSON); exit 1 when it refused.
pub fn print_move(report: &crate::takeover::Report, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string(report)?);
    } else {
        use std::io::Write as _;
        write!(std::io::stdout().lock(), "{}", report.text())?;
    }
    if report.refused() {
        let why: Vec<String> =
            report.partitions.iter().filter(|r| r.action == "refuse").map(|r| format!("{}/{}: {}", r.topic, r.partition, r.note)).collect();
        return Err(ExitError { code: 1, message: format!("{} refused, nothing changed: {}", report.command, why.join("; ")) }.into());
    }
    Ok(())
}

/// The `[kafka]` settings of tools that can run without a kbackup config (`replay`, `plan`):
/// the config's section, `--brokers` replacing only its servers; else `--brokers`; else env
/// `KAFKA_BROKERS`. The environment never overrides a config. `None` when nothing names a broker.
pub fn kafka_for(config: Option<&std::path::Path>, brokers: Option<&str>) -> anyhow::Result<Option<crate::config::KafkaConfig>> {
    let kafka = match (config, brokers) {
        (Some(path), b) => {
            let mut k = crate::config::Config::load(path).map_err(|e| ExitError { code: 2, message: e.to_string() })?.kafka;
            // librdkafka's verdict on [kafka.properties] before anything connects, as for `run`.
            crate::consumer::validate_properties(&k).map_err(|message| ExitError { code: 2, message })?;
            if let Some(b) = b {
                k.brokers = b.to_string();
            }
            Some(k)
        }
        (None, Some(b)) => Some(crate::config::KafkaConfig::for_brokers(b)),
        (None, None) => std::env::var("KAFKA_BROKERS").ok().filter(|b| !b.is_empty()).map(crate::config::KafkaConfig::for_brokers),
    };
    Ok(kafka)
}

/// Loads the config, mapping any problem to exit code 2. Secor properties are mapped, with one
/// warning listing the keys kbackup does not use.
pub fn load_config(arg: &ConfigArg) -> anyhow::Result<crate::config::Config> {
    let config = load_config_unchecked(arg)?;
    // librdkafka's own verdict on [kafka.properties], before anything connects or consumes.
    crate::consumer::validate_properties(&config.kafka).map_err(|message| ExitError { code: 2, message })?;
    Ok(config)
}

fn load_config_unchecked(arg: &ConfigArg) -> anyhow::Result<crate::config::Config> {
    let bad = |e: crate::config::ConfigError| ExitError { code: 2, message: e.to_string() };
    match &arg.config {
        Some(p) => Ok(crate::config::Config::load(p).map_err(bad)?),
        None => {
            let loaded = crate::secor::load(&arg.secor_properties, &arg.secor_property).map_err(bad)?;
            for n in &loaded.notes {
                tracing::warn!("{n}");
            }
            let mapped = crate::secor::map(&loaded.props).map_err(bad)?;
            if !mapped.ignored.is_empty() {
                tracing::warn!(keys = %mapped.ignored.join(", "), "Secor keys not used by kbackup (unknown, or misspelled?)");
            }
            // `check` lists them with their reasons.
            tracing::debug!(keys = mapped.secor_only.len(), "Secor-only keys left aside (kbackup check lists them with their reasons)");
            for n in &mapped.notes {
                tracing::info!("{n}");
            }
            Ok(mapped.config)
        }
    }
}
