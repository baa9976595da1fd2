//! `kbackup bench …`: the ceilings the benchmark compares the writer against (hidden command).

use crate::bench;

/// Arguments of `kbackup bench`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// Drain a topic with a bare librdkafka consumer doing nothing with the messages.
    Consume {
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
    },
    /// Print the number of retained messages of a topic (sum of watermark spans).
    Count {
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
    },
    /// Send every line of the files under `--from-dir` to `--topic` with a plain producer
    /// (no keys, default partitioner): the ceiling `replay` is compared with.
    Produce {
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        from_dir: std::path::PathBuf,
    },
    /// PUT `--bytes` to storage in blobs of `--blob-bytes`, `--concurrency` at once.
    Put {
        #[arg(long)]
        url: String,
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value_t = 8 << 20)]
        blob_bytes: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Delete every blob under `--url` (the benchmark's runs would otherwise fill the disk).
    Clear {
        #[arg(long)]
        url: String,
    },
    /// Run the writer's per-event work (routing, appending, gzip) on generated events, without
    /// Kafka or storage: what `scripts/bench` counts instructions per event on.
    Path {
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        #[arg(long, value_enum)]
        stage: bench::PathStage,
    },
    /// Print when a group's commits on `--topic` first covered 90 % and all of `--events`
    /// (seconds from this command's start).
    Commits {
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        events: i64,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
}

/// Runs one ceiling measurement and prints one JSON line.
pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    let line = match cmd {
        BenchCmd::Consume { brokers, topic } => {
            let m = tokio::task::spawn_blocking(move || bench::consume(&brokers, &topic)).await??;
            serde_json::json!({"events": m.events, "bytes": m.bytes, "seconds": m.seconds})
        }
        BenchCmd::Count { brokers, topic } => {
            let n = tokio::task::spawn_blocking(move || bench::count(&brokers, &topic)).await??;
            serde_json::json!({ "events": n })
        }
        BenchCmd::Produce { brokers, topic, from_dir } => {
            let m = tokio::task::spawn_blocking(move || bench::produce(&brokers, &topic, &from_dir)).await??;
            serde_json::json!({"events": m.events, "seconds": m.seconds})
        }
        BenchCmd::Put { url, bytes, blob_bytes, concurrency } => {
            let m = bench::put(&url, bytes, blob_bytes, concurrency).await?;
            serde_json::json!({"bytes": m.bytes, "seconds": m.seconds})
        }
        BenchCmd::Clear { url } => serde_json::json!({ "deleted": bench::clear(&url).await? }),
        BenchCmd::Path { events, stage } => {
            let (seconds, checksum) = tokio::task::spawn_blocking(move || bench::path(events, stage)).await??;
            serde_json::json!({"events": events, "seconds": seconds, "checksum": checksum})
        }
        BenchCmd::Commits { brokers, group, topic, events, timeout_secs } => {
            let timeout = std::time::Duration::from_secs(timeout_secs);
            let (at_90, at_all) = tokio::task::spawn_blocking(move || bench::commits(&brokers, &group, &topic, events, timeout)).await??;
            serde_json::json!({"at_90": at_90, "at_all": at_all})
        }
    };
    crate::outln!("{line}");
    Ok(())
}
