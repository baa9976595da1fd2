//! `kbackup ls`: list backup files by date and Kafka partition.

use anyhow::Context;
use chrono::NaiveDate;

use crate::cmd::ExitError;
use crate::config::{Config, StorageConfig};
use crate::listing::{parse_partitions, Selection};
use crate::naming::FileLayout;
use crate::storage::Storage;

/// Which files: shared by `ls` and the commands that read backups.
#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    /// Config file; the topic's path, prefixes and storage come from it.
    #[arg(long, short = 'c', env = "KBACKUP_CONFIG", required_unless_present = "url")]
    pub config: Option<std::path::PathBuf>,
    /// Topic whose backups to list (with --config).
    #[arg(long, required_unless_present = "path")]
    pub topic: Option<String>,
    /// Storage URL, instead of a config: az://container[/root], s3://bucket[/root] or file:///dir
    /// (credentials from the environment: AZURE_STORAGE_CONNECTION_STRING, AWS_*, ...).
    #[arg(long, conflicts_with = "config", requires = "path")]
    pub url: Option<String>,
    /// Path inside the container, instead of a config's topic path (e.g. unique/raw).
    #[arg(long, conflicts_with = "topic")]
    pub path: Option<String>,
    /// First date, inclusive (YYYY-MM-DD).
    #[arg(long)]
    pub from: NaiveDate,
    /// Last date, inclusive (defaults to --from).
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Kafka partitions, e.g. 0,3,5-7.
    #[arg(long)]
    pub partitions: Option<String>,
    /// With --partitions, also keep old-name files that carry no partition.
    #[arg(long)]
    pub include_unpartitioned: bool,
}

pub use crate::listing::Listed;

impl SelectArgs {
    /// Opens storage and lists the selected blobs in (date, partition, timestamp) order, with
    /// the number of old-name files left out by `--partitions`.
    pub async fn resolve(&self) -> anyhow::Result<(Storage, Vec<Listed>, usize)> {
        let usage = |m: String| ExitError { code: 2, message: m };
        let to = self.to.unwrap_or(self.from);
        let mut sel = Selection::new(self.from, to).map_err(|e| usage(e.to_string()))?;
        if let Some(p) = &self.partitions {
            sel.partitions = Some(parse_partitions(p).map_err(|e| usage(e.to_string()))?);
        }
        sel.include_unpartitioned = self.include_unpartitioned;
        let (storage_cfg, layout) = match (&self.config, &self.url) {
            (Some(path), _) => {
                let config = Config::load(path).map_err(|e| usage(e.to_string()))?;
                let name = self.topic.as_deref().unwrap_or_default();
                let t = config.topic(name).ok_or_else(|| usage(format!("topic `{name}` is not in {}", path.display())))?;
                let mut layout = t.layout().map_err(|e| usage(format!("topic `{name}`: {e}")))?;
                if let Some(set) = &sel.partitions {
                    // Partitions the topic does not have would list nothing, like an empty backup.
                    let counts =
                        crate::consumer::lookup_partition_counts(&config.kafka, &[name.to_string()], std::time::Duration::from_secs(10)).await;
                    match counts.map(|mut c| c.pop().and_then(|(_, n)| n)) {
                        Ok(Some(count)) => crate::listing::check_partitions(name, set, count as i32).map_err(usage)?,
                        Ok(None) => tracing::warn!("topic {name} is not on {}: --partitions is not checked against it", config.kafka.brokers),
                        Err(e) => tracing::warn!("cannot read topic {name}'s partition count ({e}): --partitions is not checked against it"),
                    }
                }
                if let Some(p) = &self.path {
                    layout = layout.with_path(p);
                }
                (config.storage.clone(), layout)
            }
            (None, Some(url)) => {
                let cfg = StorageConfig { url: url.clone(), ..Default::default() };
                (cfg, FileLayout::bare(self.path.as_deref().unwrap_or_default()))
            }
            (None, None) => unreachable!("clap requires --config or --url"),
        };
        let storage = Storage::open(&storage_cfg).map_err(|e| usage(e.to_string()))?;
        let listing = crate::listing::list(&storage, &layout, &sel)
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
        Ok((storage, listing.files, listing.unpartitioned_left_out))
    }
}

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
