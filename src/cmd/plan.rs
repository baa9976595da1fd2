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
    /// spark-submit's --master: local[*], or a cluster URL.
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
    remove_stale(&a.out_dir, a.resume)?;
    let mut jobs = Vec::new();
    for (parts, (name, config)) in plan.iter().zip(configs) {
        let path = a.out_dir.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        crate::outln!("planned {} partitions {:?}", path.display(), parts);
        jobs.push((path, parts.clone(), config));
    }

    if let Some((topic, kafka, model)) = manager {
        // The topic first: an unreachable broker or a missing topic fails here, within the
        // look-up's timeout and with the client's reason, not after librdkafka's retries.
        match crate::consumer::lookup_partition_count(&kafka, &topic).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(ExitError { code: 1, message: format!("job topic {topic} does not exist on {}", kafka.brokers) }.into()),
            Err(e) => {
                return Err(ExitError { code: 1, message: format!("cannot reach Kafka at {} to publish to {topic}: {e}", kafka.brokers) }.into())
            }
        }
        // A publish that is not acknowledged within 30 s fails (librdkafka's default is 5 min).
        let defaults = [("enable.idempotence", "true"), ("message.timeout.ms", "30000")];
        let producer: FutureProducer = crate::consumer::client_config(&kafka, crate::consumer::Role::Producer, &defaults)
            .create()
            .map_err(|e| usage(format!("kafka.properties: {}", crate::consumer::refusal(&e, &kafka))))?;
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

    let Some(launcher) = launcher else {
        return Ok(());
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency));
    let mut tasks = Vec::new();
    let mut skipped = 0;
    let all_started = Instant::now();
    for (path, parts, config) in jobs {
        let text = serde_json::to_string(&config)?;
        let done = path.with_extension("done");
        if a.resume && std::fs::read_to_string(&done).is_ok_and(|d| d == text) {
            crate::outln!("job partitions {parts:?}: succeeded in an earlier run; skipped (--resume)");
            skipped += 1;
            continue;
        }
        let _ = std::fs::remove_file(&done);
        let log_path = path.with_extension("log");
        let argv = launcher.argv(&path, &parts, &text);
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let status = run_logged(&argv, &log_path).await;
            if matches!(&status, Ok(s) if s.success()) {
                // What succeeded, so that --resume can tell an unchanged job from a new one.
                let _ = std::fs::write(&done, &text);
            }
            (parts, argv, log_path, status, started.elapsed())
        }));
    }
    let (mut failed, ran) = (0, tasks.len());
    for t in tasks {
        let (parts, argv, log, status, took) = t.await?;
        let took = took.as_secs_f64();
        match status {
            Ok(s) if s.success() => crate::outln!("job partitions {parts:?}: ok in {took:.1}s (log {})", log.display()),
            Ok(s) => {
                failed += 1;
                let code = s.code().map_or_else(|| format!("killed by signal ({s})"), |c| format!("exit code {c}"));
                crate::outln!("job partitions {parts:?}: FAILED with {code} in {took:.1}s; log {}; command: {}", log.display(), shown(&argv));
            }
            Err(e) => {
                failed += 1;
                crate::outln!("job partitions {parts:?}: could not start {} ({e:#})", shown(&argv));
            }
        }
    }
    crate::outln!("{} job(s) run, {failed} failed, {skipped} skipped, in {:.1}s", ran, all_started.elapsed().as_secs_f64());
    if failed > 0 {
        return Err(ExitError { code: 1, message: format!("{failed} job(s) failed; the same command with --resume runs only those") }.into());
    }
    Ok(())
}

/// How each job is started: a shell template, or spark-submit built from the options.
enum Launcher {
    Exec(String),
    Spark(crate::plan::SparkJob),
}

impl Launcher {
    fn argv(&self, config_path: &std::path::Path, parts: &[i32], config_json: &str) -> Vec<String> {
        match self {
            Launcher::Exec(t) => vec!["sh".into(), "-c".into(), render_exec(t, &config_path.display().to_string(), parts)],
            Launcher::Spark(job) => {
                let name = format!("wfs-{}", config_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
                crate::plan::spark_submit_args(job, &name, config_json)
            }
        }
    }
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
    Ok(Some(Launcher::Spark(crate::plan::SparkJob {
        submit,
        master: a.spark_master.clone(),
        app: app.display().to_string(),
        main_class: a.class.clone(),
        model: model(a, job),
        confs: a.confs.clone(),
    })))
}

/// Runs `argv` with stdout and stderr in `log`.
async fn run_logged(argv: &[String], log: &std::path::Path) -> anyhow::Result<std::process::ExitStatus> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let status = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("starting {}", argv[0]))?;
    Ok(status)
}

/// A command line for messages, with the (long) job config elided.
fn shown(argv: &[String]) -> String {
    let mut out = Vec::new();
    let mut it = argv.iter().peekable();
    while let Some(a) = it.next() {
        out.push(a.clone());
        if a == "--config" && it.peek().is_some_and(|c| c.starts_with('{')) {
            it.next();
            out.push("'<job config>'".into());
        }
    }
    out.join(" ")
}

/// Removes what an earlier plan wrote — job configs (`job-*.json`) and, unless resuming, the
/// jobs' logs and success markers (`job-*.log`, `job-*.done`) — so the directory holds exactly
/// this plan's jobs; other files are left alone.
fn remove_stale(dir: &std::path::Path, resume: bool) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = name.ends_with(".json") || (!resume && (name.ends_with(".done") || name.ends_with(".log")));
        if name.starts_with("job-") && stale && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path()).with_context(|| format!("removing stale {}", entry.path().display()))?;
        }
    }
    Ok(())
}
