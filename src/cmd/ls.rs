//! `kbackup ls`: list backup files by date and Kafka partition.

use crate::cmd::SelectArgs;

/// Arguments of `kbackup ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// One JSON object per line: key, date, kafka_partition, timestamp, size.
    #[arg(long)]
    pub json: bool,
}

/// Prints the selected keys.
pub async fn run(args: LsArgs) -> anyhow::Result<()> {
    let (_, listed, left_out) = args.select.resolve().await?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for l in &listed {
        if args.json {
            serde_json::to_writer(&mut out, l)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", l.key)?;
        }
    }
    if left_out > 0 {
        tracing::warn!("{left_out} old-name file(s) without a Kafka partition in their name were left out; add --include-unpartitioned to list them");
    }
    Ok(())
}
