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

use crate::listing::request::{Place, Request, RequestError};
use crate::listing::{parse_partitions, DayArg};
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
    /// Which of the topic's outputs, for a topic backed up more than once (one `[[topic]]`
    /// entry per output, e.g. JSON and Parquet): 0 is its first entry.
    #[arg(long, default_value_t = 0, requires = "topic")]
    pub output: u8,
}

impl SelectArgs {
    /// The library request these flags describe: the config read once, `--partitions` parsed.
    pub fn request(&self) -> anyhow::Result<Request> {
        let usage = |m: String| ExitError { code: 2, message: m };
        let partitions = self.partitions.as_deref().map(parse_partitions).transpose().map_err(|e| usage(e.to_string()))?;
        let place = if self.config.is_some() || !self.secor_properties.is_empty() {
            let arg = ConfigArg {
                config: self.config.clone(),
                secor_properties: self.secor_properties.clone(),
                secor_property: self.secor_property.clone(),
            };
            let config = load_config_unchecked(&arg)?;
            let topic = self.topic.clone().unwrap_or_default();
            if config.topic(&topic).is_none() {
                return Err(usage(format!("topic `{topic}` is not in {}", arg.describe())).into());
            }
            let config = config.with_output(&topic, self.output).map_err(|e| usage(e.to_string()))?;
            Place::Topic { config: Box::new(config), topic, path: self.path.clone() }
        } else {
            let url = self.url.clone().expect("clap requires --config, --secor-properties or --url");
            Place::Url { url, path: self.path.clone().unwrap_or_default() }
        };
        Ok(Request { place, from: self.from, to: self.to, partitions, include_unpartitioned: self.include_unpartitioned })
    }

    /// Opens storage and lists the selected blobs in (date, partition, timestamp) order, with
    /// the number of old-name files left out by `--partitions`.
    pub async fn resolve(&self) -> anyhow::Result<(Storage, Vec<crate::listing::Listed>, usize)> {
        let s = self.request()?.files().await.map_err(request_failed)?;
        Ok((s.storage, s.files, s.unpartitioned_left_out))
    }

    /// What `replay` reads ([`Request::restore_source`]).
    pub async fn source(&self, window_from: Option<i64>) -> anyhow::Result<(crate::replay::restore::Source, usize)> {
        self.request()?.restore_source(window_from).await.map_err(request_failed)
    }

    /// Per selected date: which partitions its completion markers declare complete.
    pub async fn completion(&self) -> anyhow::Result<Vec<crate::completion::read::DateStatus>> {
        self.request()?.completion().await.map_err(request_failed)
    }
}

/// A selection's usage errors exit 2; storage failures exit 1.
fn request_failed(e: RequestError) -> anyhow::Error {
    match e {
        RequestError::Usage(message) => ExitError { code: 2, message }.into(),
        e => e.into(),
    }
}

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
            crate::consumer::validate_properties(&k).map_err(|e| ExitError { code: 2, message: e.to_string() })?;
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
    crate::consumer::validate_properties(&config.kafka).map_err(|e| ExitError { code: 2, message: e.to_string() })?;
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
