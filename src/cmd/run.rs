//! `kbackup run`: the backup writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tracing::{info, warn};

use crate::cmd::{load_config, ConfigArg, ExitError};
use crate::health::Health;
use crate::storage::Storage;
use crate::writer::{self, RunOptions};

/// Arguments of `kbackup run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Consume up to the end offsets read at assignment, upload, commit and exit 0.
    #[arg(long)]
    pub until_caught_up: bool,
    /// Where to serve /metrics, /health/live and /health/ready (`off` to disable).
    #[arg(long, env = "KBACKUP_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
}

/// Runs the writer until SIGTERM/Ctrl-C (or until caught up).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let storage = Storage::open(&config.storage).map_err(|e| ExitError { code: 2, message: e.to_string() })?;
    storage.ensure_container(config.storage.create_container).await.with_context(|| format!("storage {}", storage.describe))?;
    check_topics_exist(&config).await?;

    let health = Arc::new(Health::default());
    if args.metrics_addr != "off" {
        let usage = |e: crate::status_server::BindError| ExitError { code: 2, message: e.to_string() };
        let addr = crate::status_server::resolve(&args.metrics_addr).await.map_err(usage)?;
        let handle = crate::metrics::install()?;
        let bound =
            crate::status_server::serve(addr, handle, health.clone()).await.map_err(|e| match e.downcast::<crate::status_server::BindError>() {
                Ok(b) => usage(b).into(),
                Err(e) => e,
            })?;
        info!(addr = %bound, "serving /metrics, /health/live, /health/ready");
    }
    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_handler(stop.clone());
    let rt = tokio::runtime::Handle::current();
    let names: Vec<String> = config.topics.iter().map(|t| t.name.clone()).collect();
    let retention_ms = crate::consumer::lookup_retention_ms(&config.kafka, &names).await;
    let opts = RunOptions { until_caught_up: args.until_caught_up, retention_ms };
    let summary =
        tokio::task::spawn_blocking(move || writer::run(&config, &storage, rt, stop, opts, health)).await.context("writer thread panicked")??;
    // The writer has logged the whole summary ("writer stopped", one field per count).
    if summary.lost_offsets > 0 {
        // Everything Kafka still held was backed up, but not what it had deleted first.
        return Err(ExitError {
            code: 1,
            message: format!(
                "DATA LOST: Kafka deleted {} offset(s) before they were backed up (see the DATA LOST log lines and docs/runbook.md)",
                summary.lost_offsets
            ),
        }
        .into());
    }
    Ok(())
}

/// Fails before consuming anything if a configured topic does not exist.
async fn check_topics_exist(config: &crate::config::Config) -> anyhow::Result<()> {
    let names: Vec<String> = config.topics.iter().map(|t| t.name.clone()).collect();
    let counts = crate::consumer::lookup_partition_counts(&config.kafka, &names, std::time::Duration::from_secs(30))
        .await
        .with_context(|| format!("reading metadata from {}", config.kafka.brokers))?;
    let missing: Vec<String> = counts.into_iter().filter(|(_, n)| n.is_none()).map(|(t, _)| t).collect();
    if !missing.is_empty() {
        anyhow::bail!("topic(s) not found on {}: {}", config.kafka.brokers, missing.join(", "));
    }
    Ok(())
}

/// First SIGTERM/SIGINT: graceful stop. Second: exit at once (uncommitted events are re-read).
fn spawn_signal_handler(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            if n == 0 {
                info!("signal received: finishing uploads and committing (send again to exit at once)");
                stop.store(true, Ordering::Relaxed);
            } else {
                warn!("second signal: exiting without finishing; uncommitted events will be re-read");
                std::process::exit(130);
            }
        }
    });
}
