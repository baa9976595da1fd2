//! One module per `kbackup` subcommand; each is a thin shell over the library stages.

pub mod check;
pub mod ls;
pub mod produce_sample;
pub mod run;
pub mod verify;

use std::path::PathBuf;

/// An error with the exit code it should produce (2: bad config or usage, 1: failure).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    pub code: u8,
    pub message: String,
}

/// `--config FILE`, shared by the commands that read a config.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Path to the TOML config (see config/local.toml).
    #[arg(long, short = 'c', env = "KBACKUP_CONFIG")]
    pub config: PathBuf,
}

/// Loads the config, mapping any problem to exit code 2.
pub fn load_config(arg: &ConfigArg) -> anyhow::Result<crate::config::Config> {
    crate::config::Config::load(&arg.config).map_err(|e| ExitError { code: 2, message: e.to_string() }.into())
}
