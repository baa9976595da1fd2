//! `kbackup takeover`: kbackup's group takes over the position Secor had uploaded to.

use crate::cmd::{load_config, print_move, ConfigArg, SecorArgs};
use crate::takeover::{self, Between, TakeoverOptions};

/// Arguments of `kbackup takeover`.
#[derive(Debug, clap::Args)]
pub struct TakeoverArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub secor: SecorArgs,
    /// Take over although Kafka deleted offsets Secor had not uploaded: those events are lost,
    /// and kbackup starts at the log start.
    #[arg(long)]
    pub accept_retention_gap: bool,
}

pub async fn run(args: TakeoverArgs) -> anyhow::Result<()> {
    let config = args.secor.apply(load_config(&args.config)?)?;
    let secor = config.secor.as_ref().expect("apply sets [secor]");
    let opts = TakeoverOptions { dry_run: args.secor.dry_run, accept_retention_gap: args.accept_retention_gap };
    let report = takeover::takeover(&Between { config: &config, secor }, opts).await.map_err(crate::cmd::move_failure)?;
    print_move(&report, args.secor.json)
}
