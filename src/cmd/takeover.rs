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
    /// Take Secor's position from where its files in storage end, for partitions whose
    /// ZooKeeper node is missing or holds no offset (stock Secor's layout: its names carry
    /// first offsets); shown in the dry run first.
    #[arg(long)]
    pub from_storage: bool,
    /// Set a partition's position: TOPIC/PARTITION=OFFSET (repeatable), when neither ZooKeeper
    /// nor storage tells it.
    #[arg(long = "offset", value_name = "TOPIC/PARTITION=OFFSET", value_parser = parse_given)]
    pub offsets: Vec<((String, i32), i64)>,
}

fn parse_given(s: &str) -> Result<((String, i32), i64), String> {
    let bad = || format!("`{s}`: expected TOPIC/PARTITION=OFFSET, e.g. prod.telemetry.unique/3=1500");
    let (tp, offset) = s.rsplit_once('=').ok_or_else(bad)?;
    let (topic, p) = tp.rsplit_once('/').ok_or_else(bad)?;
    let p: i32 = p.parse().ok().filter(|p| *p >= 0).ok_or_else(bad)?;
    let offset: i64 = offset.parse().ok().filter(|o| *o >= 0).ok_or_else(bad)?;
    if topic.is_empty() {
        return Err(bad());
    }
    Ok(((topic.to_string(), p), offset))
}

pub async fn run(args: TakeoverArgs) -> anyhow::Result<()> {
    let config = args.secor.apply(load_config(&args.config)?)?;
    let secor = config.secor.as_ref().expect("apply sets [secor]");
    let opts = TakeoverOptions {
        dry_run: args.secor.dry_run,
        accept_retention_gap: args.accept_retention_gap,
        from_storage: args.from_storage,
        offsets: args.offsets.into_iter().collect(),
        wait_for_stop: std::time::Duration::from_secs(args.secor.wait_for_stop),
    };
    let report =
        takeover::takeover(&Between { config: &config, secor }, opts).await.map_err(crate::cmd::move_failure("takeover", args.secor.json))?;
    print_move(&report, args.secor.json)
}
