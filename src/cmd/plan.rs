//! `kbackup plan`: the WFS submit step, one job per group of Kafka partitions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use crate::cmd::ExitError;
use crate::plan::{groups, job_manager_message, render_exec, with_partitions};

/// How the jobs are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One job per group of `--parallelisation` partitions.
    ViaPartition,
    /// One job over all partitions (the job config unchanged).
    RunMode,
    /// One `{"model","config"}` message per group on the job-manager topic.
    JobManager,
}

/// Arguments of `kbackup plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The WFS job config (JSON with search.queries).
    #[arg(long)]
    pub job_config: PathBuf,
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Partitions per job.
    #[arg(long, default_value_t = 1)]
    pub parallelisation: usize,
    /// Number of Kafka partitions; without it, read from --topic's metadata.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Topic whose partition count is used (e.g. prod.telemetry.unique).
    #[arg(long)]
    pub topic: Option<String>,
    /// Bootstrap servers (default: --config's kafka.brokers; without --config, env KAFKA_BROKERS).
    #[arg(long)]
    pub brokers: Option<String>,
    /// A kbackup config whose [kafka] section (brokers, TLS/SASL and other properties) the
    /// partition look-up and the job-manager producer use; --brokers replaces its servers.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Command run per job, with {config} and {partitions} filled in (e.g. a spark-submit line).
    #[arg(long)]
    pub exec: Option<String>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Where the per-job configs are written.
    #[arg(long, default_value = "wfs-plan")]
    pub out_dir: PathBuf,
    /// job-manager mode: the job-queue topic.
    #[arg(long)]
    pub job_topic: Option<String>,
    /// job-manager mode: the model name (default: the job config's "model").
    #[arg(long)]
    pub model: Option<String>,
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    ExitError { code: 2, message: message.into() }.into()
}

/// Plans, writes and (optionally) runs or publishes the jobs.
pub async fn run(a: PlanArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.job_config).with_context(|| format!("reading {}", a.job_config.display()))?;
    let job: Value = serde_json::from_str(&text).map_err(|e| usage(format!("{}: not JSON: {e}", a.job_config.display())))?;
    let kafka = crate::cmd::kafka_for(a.config.as_deref(), a.brokers.as_deref())?;
    let count = match (a.partitions, &a.topic) {
        (Some(n), _) => n,
        (None, Some(topic)) => {
            let kafka = kafka.as_ref().ok_or_else(|| usage("--topic needs --brokers (or KAFKA_BROKERS) or --config"))?;
            crate::consumer::lookup_partition_count(kafka, topic).await?.ok_or_else(|| anyhow::anyhow!("topic {topic} not found"))?
        }
        (None, None) => return Err(usage("give --partitions COUNT, or --topic NAME with --brokers")),
    };
    if count < 1 {
        return Err(usage("--partitions must be at least 1"));
    }
    if a.concurrency == 0 {
        return Err(usage("--concurrency must be at least 1"));
    }
    // Everything a mode needs is checked before anything is written.
    let manager = match a.mode {
        Mode::JobManager => {
            let topic = a.job_topic.clone().ok_or_else(|| usage("job-manager mode needs --job-topic"))?;
            let kafka = kafka.clone().ok_or_else(|| usage("job-manager mode needs --brokers (or KAFKA_BROKERS) or --config"))?;
            let model = a
                .model
                .clone()
                .or_else(|| job.get("model").and_then(Value::as_str).map(String::from))
                .ok_or_else(|| usage("no --model and no \"model\" in the job config"))?;
            Some((topic, kafka, model))
        }
        _ => None,
    };
    let plan: Vec<Vec<i32>> = match a.mode {
        Mode::RunMode => vec![(0..count).collect()],
        _ => groups(count, a.parallelisation).map_err(|e| usage(e.to_string()))?,
    };
    let configs: Vec<(String, Value)> = plan
        .iter()
        .map(|parts| match a.mode {
            Mode::RunMode => Ok(("job-all.json".to_string(), job.clone())),
            _ => Ok((format!("job-{}-{}.json", parts[0], parts[parts.len() - 1]), with_partitions(&job, parts).map_err(|e| usage(e.to_string()))?)),
        })
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(&a.out_dir).with_context(|| format!("creating {}", a.out_dir.display()))?;
    remove_stale_configs(&a.out_dir)?;
    let mut jobs = Vec::new();
    for (parts, (name, config)) in plan.iter().zip(configs) {
        let path = a.out_dir.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        crate::outln!("planned {} partitions {:?}", path.display(), parts);
        jobs.push((path, parts.clone(), config));
    }

    if let Some((topic, kafka, model)) = manager {
        let producer: FutureProducer = crate::consumer::client_config(&kafka, crate::consumer::Role::Producer, &[("enable.idempotence", "true")])
            .create()
            .map_err(|e| usage(format!("kafka.properties: {e}")))?;
        for (path, parts, config) in &jobs {
            let msg = serde_json::to_string(&job_manager_message(&model, config))?;
            producer
                .send(FutureRecord::<(), str>::to(&topic).payload(&msg), Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .with_context(|| format!("publishing {}", path.display()))?;
            crate::outln!("published job for partitions {parts:?} to {topic}");
        }
        return Ok(());
    }

    let Some(template) = a.exec.clone() else {
        return Ok(());
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut tasks = Vec::new();
    for (path, parts, _) in jobs {
        let cmd = render_exec(&template, &path.display().to_string(), &parts);
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let status = tokio::process::Command::new("sh").arg("-c").arg(&cmd).status().await;
            (parts, cmd, status, started.elapsed())
        }));
    }
    let mut failed = 0;
    for t in tasks {
        let (parts, cmd, status, took) = t.await?;
        match status {
            Ok(s) if s.success() => {
                crate::outln!("job partitions {parts:?}: ok in {:.1}s", took.as_secs_f64())
            }
            Ok(s) => {
                failed += 1;
                crate::outln!("job partitions {parts:?}: FAILED ({s}) in {:.1}s: {cmd}", took.as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                crate::outln!("job partitions {parts:?}: could not start ({e}): {cmd}");
            }
        }
    }
    if failed > 0 {
        return Err(ExitError { code: 1, message: format!("{failed} job(s) failed") }.into());
    }
    Ok(())
}

/// Removes the job configs an earlier plan wrote (`job-*.json`), so the directory holds exactly
/// this plan's jobs; other files are left alone.
fn remove_stale_configs(dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("job-") && name.ends_with(".json") && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path()).with_context(|| format!("removing stale {}", entry.path().display()))?;
        }
    }
    Ok(())
}
