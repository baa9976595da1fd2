//! `kbackup handback`: the way back to Secor, with kbackup's position written where Secor reads it.

use crate::cmd::{load_config, print_move, ConfigArg, SecorArgs};
use crate::takeover::{self, Between};

/// Arguments of `kbackup handback`.
#[derive(Debug, clap::Args)]
pub struct HandbackArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub secor: SecorArgs,
    /// Hand back although Secor's position is ahead of kbackup's commit (Secor stored past
    /// it): Secor will upload those events again.
    #[arg(long)]
    pub allow_rewind: bool,
}

pub async fn run(args: HandbackArgs) -> anyhow::Result<()> {
    let config = args.secor.apply(load_config(&args.config)?)?;
    let secor = config.secor.as_ref().expect("apply sets [secor]");
    let opts = takeover::HandbackOptions {
        dry_run: args.secor.dry_run,
        allow_rewind: args.allow_rewind,
        wait_for_stop: std::time::Duration::from_secs(args.secor.wait_for_stop),
    };
    let report =
        takeover::handback(&Between { config: &config, secor }, opts).await.map_err(crate::cmd::move_failure("handback", args.secor.json))?;
    print_move(&report, args.secor.json)
}
