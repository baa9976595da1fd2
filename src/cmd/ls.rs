//! `kbackup ls`: list backup files by date and Kafka partition.

use std::collections::BTreeSet;

use anyhow::Context;
use chrono::NaiveDate;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use crate::cmd::{ExitError};
use crate::config::{Config, StorageConfig};
use crate::listing::{parse_partitions, Selection, Verdict};
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
    /// Storage URL, instead of a config (az://container or file:///dir).
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

/// One selected blob.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub key: String,
    pub date: String,
    pub kafka_partition: Option<i32>,
    pub timestamp: Option<i64>,
    pub size: u64,
}

impl SelectArgs {
    /// Opens storage and lists the selected blobs in (date, partition, timestamp) order.
    pub async fn resolve(&self) -> anyhow::Result<(Storage, Vec<Listed>, usize)> {
        let to = self.to.unwrap_or(self.from);
        let mut sel = Selection::new(self.from, to).map_err(|e| ExitError { code: 2, message: e.to_string() })?;
        if let Some(p) = &self.partitions {
            sel.partitions = Some(parse_partitions(p).map_err(|e| ExitError { code: 2, message: e.to_string() })?);
        }
        sel.include_unpartitioned = self.include_unpartitioned;
        let (storage_cfg, dirs) = match (&self.config, &self.url) {
            (Some(path), _) => {
                let config = Config::load(path).map_err(|e| ExitError { code: 2, message: e.to_string() })?;
                let name = self.topic.as_deref().unwrap_or_default();
                let t = config.topic(name).ok_or_else(|| ExitError {
                    code: 2,
                    message: format!("topic `{name}` is not in {}", path.display()),
                })?;
                let base = self.path.clone().unwrap_or_else(|| t.path.clone());
                let mut dirs: BTreeSet<String> = BTreeSet::new();
                if t.prefix_map.is_empty() {
                    dirs.insert(base.trim_matches('/').to_string());
                } else {
                    for sub in t.prefix_map.values() {
                        dirs.insert(format!("{}/{}", base.trim_matches('/'), sub.trim_matches('/')));
                    }
                }
                (config.storage.clone(), dirs)
            }
            (None, Some(url)) => {
                let cfg = StorageConfig { url: url.clone(), ..Default::default() };
                let path = self.path.clone().unwrap_or_default();
                (cfg, [path.trim_matches('/').to_string()].into())
            }
            (None, None) => unreachable!("clap requires --config or --url"),
        };
        let storage = Storage::open(&storage_cfg).map_err(|e| ExitError { code: 2, message: e.to_string() })?;
        let mut out = Vec::new();
        let mut left_out = 0;
        for dir in &dirs {
            let prefix = ObjectPath::from(dir.as_str());
            // Listing is per directory; the date range is applied to the names.
            let listing = storage
                .store
                .list_with_delimiter(Some(&prefix))
                .await
                .with_context(|| format!("listing {dir}/ in {}", storage.describe))?;
            for meta in listing.objects {
                let key = meta.location.to_string();
                let file = key.rsplit('/').next().unwrap_or(&key);
                match sel.judge(file) {
                    Verdict::Keep(n) => out.push(Listed {
                        date: n.date.format("%Y-%m-%d").to_string(),
                        kafka_partition: n.kafka_partition,
                        timestamp: n.timestamp_ms,
                        size: meta.size,
                        key,
                    }),
                    Verdict::UnpartitionedLeftOut => left_out += 1,
                    Verdict::Skip | Verdict::NotBackup => {}
                }
            }
        }
        out.sort_by(|a, b| (&a.date, a.kafka_partition, a.timestamp, &a.key).cmp(&(&b.date, b.kafka_partition, b.timestamp, &b.key)));
        Ok((storage, out, left_out))
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
        eprintln!(
            "note: {left_out} old-name file(s) without a Kafka partition in their name were left out; add --include-unpartitioned to list them"
        );
    }
    Ok(())
}
