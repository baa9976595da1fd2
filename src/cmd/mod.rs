//! One module per `kbackup` subcommand; each is a thin shell over the library stages.

pub mod bench;
pub mod cat;
pub mod check;
pub mod ls;
pub mod plan;
pub mod produce_sample;
pub mod repartition;
pub mod replay;
pub mod run;
pub mod verify;

use std::path::PathBuf;

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
    /// Secor .properties files instead of a TOML config; later files override earlier ones.
    #[arg(long = "secor-properties", value_name = "FILE")]
    pub secor_properties: Vec<PathBuf>,
}

impl ConfigArg {
    /// Where the config came from, for messages.
    pub fn describe(&self) -> String {
        match &self.config {
            Some(p) => p.display().to_string(),
            None => self.secor_properties.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" + "),
        }
    }
}

/// The `[kafka]` settings of tools that can run without a kbackup config (`replay`, `plan`):
/// the config's section, `--brokers` replacing only its servers; else `--brokers`; else env
/// `KAFKA_BROKERS`. The environment never overrides a config. `None` when nothing names a broker.
pub fn kafka_for(config: Option<&std::path::Path>, brokers: Option<&str>) -> anyhow::Result<Option<crate::config::KafkaConfig>> {
    let kafka = match (config, brokers) {
        (Some(path), b) => {
            let mut k = crate::config::Config::load(path).map_err(|e| ExitError { code: 2, message: e.to_string() })?.kafka;
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
            let props = crate::secor::load(&arg.secor_properties).map_err(bad)?;
            let mapped = crate::secor::map(&props).map_err(bad)?;
            if !mapped.ignored.is_empty() {
                tracing::warn!(keys = %mapped.ignored.join(", "), "Secor keys not used by kbackup (unknown, or misspelled?)");
            }
            for n in &mapped.notes {
                tracing::info!("{n}");
            }
            Ok(mapped.config)
        }
    }
}
