//! `kbackup plan`: the WFS submit step, one job per group of Kafka partitions.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use crate::cmd::ExitError;
use crate::wfs::launch::{self, Job, LaunchError, Launcher, Outcome};
use crate::wfs::{groups, with_partitions, SparkJob};

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
    /// A kbackup config whose `[kafka]` section (brokers, TLS/SASL and other properties) the
    /// partition look-up and the job-manager producer use; --brokers replaces its servers.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Command run per job by `sh -c`, with {config} and {partitions} filled in (for
    /// launchers other than spark-submit; see --jar / --py-file for Spark).
    #[arg(long, conflicts_with_all = ["jar", "py_file"])]
    pub exec: Option<String>,
    /// Run each job with spark-submit: this application jar (with --class).
    #[arg(long, conflicts_with = "py_file", requires = "class")]
    pub jar: Option<PathBuf>,
    /// Run each job with spark-submit: this PySpark file (e.g. examples/wfs/wfs.py).
    #[arg(long)]
    pub py_file: Option<PathBuf>,
    /// The jar's main class (Sunbird: org.ekstep.analytics.job.JobExecutor).
    #[arg(long)]
    pub class: Option<String>,
    /// spark-submit's --master: `local[*]`, or a cluster URL.
    #[arg(long, default_value = "local[*]")]
    pub spark_master: String,
    /// The spark-submit to run (default: $SPARK_HOME/bin/spark-submit, else spark-submit on PATH).
    #[arg(long)]
    pub spark_submit: Option<PathBuf>,
    /// Extra spark-submit --conf KEY=VALUE (repeatable).
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    pub confs: Vec<String>,
    /// Run only the jobs that did not succeed last time (same --out-dir, same job configs).
    #[arg(long)]
    pub resume: bool,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Where the per-job configs are written.
    #[arg(long, default_value = "wfs-plan")]
    pub out_dir: PathBuf,
    /// job-manager mode: the job-queue topic.
    #[arg(long)]
    pub job_topic: Option<String>,
    /// The model name: job-manager mode's message, and `--model` of each Spark job (default:
    /// the job config's "model").
    #[arg(long)]
    pub model: Option<String>,
    /// Start each job only once every date its queries read (startDate..endDate) is complete
    /// on its partitions, as the writer's completion markers say (needs --config and --topic:
    /// the storage and the topic's path). In via-partition mode each group starts as soon as
    /// its own partitions are complete; job-manager mode publishes once all are.
    #[arg(long, requires_all = ["config", "topic"])]
    pub wait_complete: bool,
    /// With --wait-complete: give up after this long (e.g. 90s, 30m, 6h); jobs whose
    /// partitions are still incomplete are not started and the plan exits 1. Default: wait.
    #[arg(long, requires = "wait_complete", value_name = "DURATION")]
    pub timeout: Option<String>,
    /// With --wait-complete: how often the markers are read.
    #[arg(long, requires = "wait_complete", value_name = "DURATION", default_value = "30s")]
    pub poll_interval: String,
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
    if let Some(c) = a.confs.iter().find(|c| !c.contains('=')) {
        return Err(usage(format!("--conf {c}: expected KEY=VALUE")));
    }
    let launcher = launcher(&a, &job)?;
    let gate = if a.wait_complete { Some(std::sync::Arc::new(waiter(&a, &job)?)) } else { None };
    // Everything a mode needs is checked before anything is written.
    let manager = match a.mode {
        Mode::JobManager => {
            let topic = a.job_topic.clone().ok_or_else(|| usage("job-manager mode needs --job-topic"))?;
            let kafka = kafka.clone().ok_or_else(|| usage("job-manager mode needs --brokers (or KAFKA_BROKERS) or --config"))?;
            let model = model(&a, &job).ok_or_else(|| usage("no --model and no \"model\" in the job config"))?;
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
    launch::remove_stale(&a.out_dir, a.resume)?;
    let mut jobs = Vec::new();
    for (parts, (name, config)) in plan.iter().zip(configs) {
        let path = a.out_dir.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        crate::outln!("planned {} partitions {:?}", path.display(), parts);
        jobs.push(Job { path, parts: parts.clone(), config });
    }

    if let (Some(_), Some(g)) = (&manager, &gate) {
        // Published jobs start at once wherever they are picked up: publish only when all are
        // complete.
        let all: Vec<i32> = (0..count).collect();
        g.wait(&all).await.map_err(|why| ExitError { code: 1, message: format!("nothing published: {why}") })?;
    }
    if let Some((topic, kafka, model)) = manager {
        let published =
            launch::publish(&kafka, &topic, &model, &jobs, |job| say(format_args!("published job for partitions {:?} to {topic}", job.parts))).await;
        return published.map_err(|e| match e {
            LaunchError::Settings(_) => usage(e.to_string()),
            e => ExitError { code: 1, message: e.to_string() }.into(),
        });
    }

    let Some(launcher) = launcher else {
        return Ok(());
    };
    let summary = launch::run_jobs(jobs, &launcher, a.concurrency, a.resume, gate, |f| {
        let (parts, took, log) = (&f.parts, f.took.as_secs_f64(), f.log.display());
        match &f.outcome {
            Outcome::Skipped => say(format_args!("job partitions {parts:?}: succeeded in an earlier run; skipped (--resume)")),
            Outcome::Succeeded => say(format_args!("job partitions {parts:?}: ok in {took:.1}s (log {log})")),
            Outcome::Failed(code) => {
                say(format_args!("job partitions {parts:?}: FAILED with {code} in {took:.1}s; log {log}; command: {}", f.command))
            }
            Outcome::NotStarted(why) => say(format_args!("job partitions {parts:?}: could not start {} ({why})", f.command)),
        }
    })
    .await?;
    crate::outln!("{} job(s) run, {} failed, {} skipped, in {:.1}s", summary.ran, summary.failed, summary.skipped, summary.took.as_secs_f64());
    if summary.failed > 0 {
        return Err(
            ExitError { code: 1, message: format!("{} job(s) failed; the same command with --resume runs only those", summary.failed) }.into()
        );
    }
    Ok(())
}

/// What `--wait-complete` waits on: the job config's dates, under the config topic's path.
fn waiter(a: &PlanArgs, job: &Value) -> anyhow::Result<crate::wfs::wait::Waiter> {
    use crate::wfs::wait::{job_dates, parse_duration, Waiter};
    let path = a.config.as_deref().expect("clap requires --config");
    let name = a.topic.as_deref().expect("clap requires --topic");
    let config = crate::config::Config::load(path).map_err(|e| usage(e.to_string()))?;
    let t = config.topic(name).ok_or_else(|| usage(format!("--wait-complete: topic `{name}` is not in {}", path.display())))?;
    if !t.markers() {
        return Err(usage(format!("--wait-complete: topic `{name}` writes no completion markers (completion_markers = false)")));
    }
    let crate::listing::request::Backup { storage, layout, .. } =
        crate::listing::request::Backup::of_topic(&config, name).map_err(|e| usage(e.to_string()))?;
    let dates = job_dates(job).map_err(|e| usage(e.to_string()))?;
    let timeout = a.timeout.as_deref().map(|t| parse_duration(t).map_err(|e| usage(format!("--timeout {e}")))).transpose()?;
    let poll = parse_duration(&a.poll_interval).map_err(|e| usage(format!("--poll-interval {e}")))?.max(std::time::Duration::from_millis(200));
    Ok(Waiter {
        store: storage.store.clone(),
        layout,
        dates,
        deadline: timeout.map(|t| std::time::Instant::now() + t),
        timeout: a.timeout.clone().unwrap_or_default(),
        poll,
    })
}

/// One line of the plan's progress (a closed stdout is noticed by the summary line's write).
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// `--model`, else the job config's `"model"`.
fn model(a: &PlanArgs, job: &Value) -> Option<String> {
    a.model.clone().or_else(|| job.get("model").and_then(Value::as_str).map(String::from))
}

/// The launcher the options ask for (none: only write the configs).
fn launcher(a: &PlanArgs, job: &Value) -> anyhow::Result<Option<Launcher>> {
    let app = match (&a.jar, &a.py_file) {
        (Some(j), _) => j,
        (None, Some(p)) => p,
        (None, None) => return Ok(a.exec.clone().map(Launcher::Exec)),
    };
    if !app.is_file() {
        return Err(usage(format!("{}: no such file", app.display())));
    }
    let submit = match &a.spark_submit {
        Some(p) => p.display().to_string(),
        None => match std::env::var_os("SPARK_HOME") {
            Some(home) => std::path::Path::new(&home).join("bin").join("spark-submit").display().to_string(),
            None => "spark-submit".to_string(),
        },
    };
    Ok(Some(Launcher::Spark(SparkJob {
        submit,
        master: a.spark_master.clone(),
        app: app.display().to_string(),
        main_class: a.class.clone(),
        model: model(a, job),
        confs: a.confs.clone(),
    })))
}
