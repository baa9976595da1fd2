//! `kbackup run`: the backup writer.

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
    // Listen before anything slow: a stop asked for during start-up (an orchestrator scaling down
    // a pod that is still connecting) must end the process cleanly, not by the signal's default.
    let stop = Arc::new(writer::StopRequest::default());
    let stopped = spawn_signal_handler(stop.clone())?;
    let started = tokio::select! {
        started = start(&args) => started?,
        _ = stopped => {
            info!("stopped before consuming anything");
            return Ok(());
        }
    };
    let Started { config, storage, health, retention_ms, settings_recorded } = started;
    let rt = tokio::runtime::Handle::current();
    let opts = RunOptions { until_caught_up: args.until_caught_up, retention_ms };
    let asked = stop.clone();
    let ran = tokio::task::spawn_blocking(move || writer::run(&config, &storage, rt, stop, opts, health)).await.context("writer thread panicked")?;
    // Every way the writer can end badly is exit 1: what it had not committed is read again.
    let summary = ran.map_err(|e: writer::RunError| ExitError { code: 1, message: e.to_string() })?;
    // The topics' settings are recorded beside the consumption, not before it (a DescribeConfigs
    // round trip was a tenth of a one-shot run): a one-shot run that ends first waits for them
    // here. A stop asked for does not: its bound is the stop's, and the next run records them.
    if args.until_caught_up && !asked.asked() && tokio::time::timeout(SETTINGS_WAIT, settings_recorded).await.is_err() {
        warn!("recording the topics' settings took over 15 s: stopping without them (the next run records them)");
    }
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

/// What start-up hands the writer.
struct Started {
    config: crate::config::Config,
    storage: Storage,
    health: Arc<Health>,
    /// Each topic's `retention.ms` (where the broker told it).
    retention_ms: std::collections::HashMap<String, i64>,
    /// Fires once the topics' settings were first recorded (or failed to be).
    settings_recorded: tokio::sync::oneshot::Receiver<()>,
}

/// How long recording the topics' settings may take: a slow store or a broker that refuses
/// DescribeConfigs must not hold up the backup, which does not depend on them.
const SETTINGS_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Everything before the first poll: config, storage, topics, the status server, retention.
async fn start(args: &RunArgs) -> anyhow::Result<Started> {
    let config = load_config(&args.config)?;
    let storage = Storage::open(&config.storage).map_err(|e| ExitError { code: 2, message: e.to_string() })?;

    let health = Arc::new(Health::default());
    // Start-up counts as a turn of the loop: live while it checks storage and Kafka (each step has
    // its own timeout, well inside the liveness window), not ready until partitions are assigned.
    health.loop_ran();
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
    // Live from here on (ready once partitions are assigned), while storage and Kafka are checked.
    let ensured = storage
        .ensure_container_patiently(config.storage.create_container, std::time::Duration::from_secs(60))
        .await
        .with_context(|| format!("storage {}", storage.describe))?;
    if ensured == crate::storage::Ensured::Created {
        info!(storage = %storage.describe, "container created (storage.create_container = true)");
    }
    // The exactly-once protocol rests on create-only writes: proven, not assumed.
    match crate::upload::probe_create_only(storage.store.as_ref()).await {
        Ok(p) => {
            info!(
                requests = p.requests,
                elapsed_ms = p.elapsed.as_millis() as u64,
                "create-only writes proven: the store refuses a second write of a name"
            );
            metrics::gauge!(crate::metrics::STORE_CREATE_ONLY).set(1.0);
        }
        Err(e @ crate::upload::ProbeError::Overwrites { .. }) if config.storage.accept_overwriting_store => {
            warn!(
                "storage {}: {e}; running anyway because storage.accept_overwriting_store = true: a zombie writer's upload can replace a file, so exactly once no longer holds (docs/exactly-once.md)",
                storage.describe
            );
            metrics::gauge!(crate::metrics::STORE_CREATE_ONLY).set(0.0);
        }
        Err(e @ crate::upload::ProbeError::Overwrites { .. }) => {
            return Err(ExitError { code: 2, message: crate::upload::overwriting_store_message(&storage.describe, &e) }.into())
        }
        Err(e) => return Err(anyhow::Error::from(e).context(format!("storage {}: the create-only probe", storage.describe))),
    }
    // One pair of clients for the topic check, the retention look-up and the topics' settings.
    let cluster = crate::consumer::Cluster::connect(&config.kafka)
        .map_err(|e| ExitError { code: 2, message: format!("kafka: {}", crate::consumer::kafka_error_text(&e)) })?;
    // Read side by side, each waiting on a round trip to the brokers. The check's failure ends
    // both at once (a refused login fails the check fast, while the retention read waits out
    // its request timeout).
    let names = config.topic_names();
    let retention = async { Ok::<_, anyhow::Error>(cluster.retention_ms(&names).await) };
    let ((), retention_ms) = tokio::try_join!(check_topics_exist(&config, &cluster), retention)?;
    // With a [secor] section: never resume from a position Secor's auto-commit left (the naive switch).
    crate::takeover::guard(&config).await.map_err(|e| match e {
        crate::takeover::GuardError::NaiveSwitch { .. } => ExitError { code: 2, message: format!("{e}: kbackup takeover {}", args.config.as_args()) },
        crate::takeover::GuardError::Unreadable(_) => ExitError { code: 1, message: e.to_string() },
    })?;
    // Each topic's partition count and settings, next to its files (for `replay
    // --create-topic`): now, beside the consumption, and every ten minutes in case they change.
    let paths: Vec<(String, String)> = config.topics.iter().filter_map(|t| Some((t.name.clone(), t.layout().ok()?.marker_path()))).collect();
    let store = storage.clone();
    let (recorded, settings_recorded) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        crate::topic_settings::record_all(&cluster, &store, &paths).await;
        let _ = recorded.send(());
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
            crate::topic_settings::record_all(&cluster, &store, &paths).await;
        }
    });
    Ok(Started { config, storage, health, retention_ms, settings_recorded })
}

/// Fails before consuming anything if a configured topic does not exist.
async fn check_topics_exist(config: &crate::config::Config, cluster: &crate::consumer::Cluster) -> anyhow::Result<()> {
    let names = config.topic_names();
    let counts = cluster
        .partition_counts(&names, std::time::Duration::from_secs(30))
        .await
        .with_context(|| format!("reading metadata from {}", config.kafka.brokers))?;
    for (t, n) in &counts {
        if let Some(n) = n {
            metrics::gauge!(crate::metrics::TOPIC_PARTITIONS, "topic" => t.clone()).set(*n as f64);
        }
    }
    let missing: Vec<String> = counts.into_iter().filter(|(_, n)| n.is_none()).map(|(t, _)| t).collect();
    if !missing.is_empty() {
        anyhow::bail!("topic(s) not found on {}: {}", config.kafka.brokers, missing.join(", "));
    }
    Ok(())
}

/// First SIGTERM/SIGINT: graceful stop (the returned receiver fires). Second: exit at once
/// (uncommitted events are re-read).
///
/// The listeners are registered before this returns, so a signal sent from then on is seen.
fn spawn_signal_handler(stop: Arc<writer::StopRequest>) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    tokio::spawn(async move {
        for n in 0.. {
            // 128 + the signal's number, as shells report a process ended by it.
            let code = tokio::select! {
                _ = int.recv() => 130,
                _ = term.recv() => 143,
            };
            if n == 0 {
                info!("signal received: finishing uploads and committing (send again to exit at once)");
                stop.ask();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            } else {
                warn!("second signal: exiting without finishing; uncommitted events will be re-read");
                std::process::exit(code);
            }
        }
    });
    Ok(rx)
}
