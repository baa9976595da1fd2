//! `kbackup ls`: list backup files by date and Kafka partition.

use crate::cmd::SelectArgs;

/// Arguments of `kbackup ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// One JSON object per line: key, date, kafka_partition, timestamp, size (with
    /// --completion: date, complete, incomplete, changed_after_complete, markers).
    #[arg(long)]
    pub json: bool,
    /// Per date, which partitions are complete (have a completion marker) instead of files.
    #[arg(long)]
    pub completion: bool,
}

/// Prints the selected keys.
pub async fn run(args: LsArgs) -> anyhow::Result<()> {
    if args.completion {
        return completion(&args).await;
    }
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

/// `--completion`: one line (or JSON object) per date.
async fn completion(args: &LsArgs) -> anyhow::Result<()> {
    let list = |ps: &[i32]| if ps.is_empty() { "-".to_string() } else { ps.iter().map(i32::to_string).collect::<Vec<_>>().join(",") };
    for s in args.select.completion().await? {
        if args.json {
            crate::outln!("{}", serde_json::to_string(&s)?);
            continue;
        }
        crate::outln!(
            "{}  complete: {}  incomplete (no marker): {}{}",
            s.date,
            list(&s.complete),
            list(&s.incomplete),
            if s.changed_after_complete.is_empty() {
                String::new()
            } else {
                format!("  changed after complete: {}", list(&s.changed_after_complete))
            }
        );
        for m in &s.markers {
            crate::outln!(
                "  partition {}: marker {} with {} file(s), {} event(s), complete below offset {}, written {}",
                m.partition,
                m.seq,
                m.files.len(),
                m.events,
                m.complete_below,
                m.written_at
            );
        }
    }
    Ok(())
}
