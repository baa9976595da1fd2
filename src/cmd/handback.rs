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
}

pub async fn run(args: HandbackArgs) -> anyhow::Result<()> {
    let config = args.secor.apply(load_config(&args.config)?)?;
    let secor = config.secor.as_ref().expect("apply sets [secor]");
    let report = takeover::handback(&Between { config: &config, secor }, args.secor.dry_run).await.map_err(crate::cmd::move_failure)?;
    print_move(&report, args.secor.json)
}
