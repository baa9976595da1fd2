//! Running a plan's jobs: each job's command with its output in a log, at most N at a time,
//! skipping what an earlier run finished (`--resume`); or publishing them to the job-manager
//! topic. `cmd/plan.rs` parses the options, writes the job configs and prints what happens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use super::{job_manager_message, render_exec, spark_submit_args, SparkJob};
use crate::config::KafkaConfig;

/// One planned job: its config file, its Kafka partitions, and the config itself.
#[derive(Debug, Clone)]
pub struct Job {
    pub path: PathBuf,
    pub parts: Vec<i32>,
    pub config: Value,
}

/// How each job is started: a shell template, or spark-submit.
#[derive(Debug, Clone)]
pub enum Launcher {
    Exec(String),
    Spark(SparkJob),
}

impl Launcher {
    /// The command line that runs the job whose config is at `config_path`.
    pub fn argv(&self, config_path: &Path, parts: &[i32], config_json: &str) -> Vec<String> {
        match self {
            Launcher::Exec(t) => vec!["sh".into(), "-c".into(), render_exec(t, &config_path.display().to_string(), parts)],
            Launcher::Spark(job) => {
                let name = format!("wfs-{}", config_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
                spark_submit_args(job, &name, config_json)
            }
        }
    }
}

/// How one job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    /// It ran and failed: its exit code, or the signal that killed it.
    Failed(String),
    /// It could not be started (the program is missing, the log cannot be written, ...).
    NotStarted(String),
    /// An earlier run succeeded with the same config (`--resume`).
    Skipped,
}

/// One job's end, as reported to the caller.
#[derive(Debug, Clone)]
pub struct Finished {
    pub parts: Vec<i32>,
    /// The command line, with the job config elided.
    pub command: String,
    pub log: PathBuf,
    pub outcome: Outcome,
    pub took: Duration,
}

/// What a run of the jobs did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub ran: usize,
    pub failed: usize,
    pub skipped: usize,
    pub took: Duration,
}

/// Why jobs could not be run or published at all.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("a job's task failed: {0}")]
    Task(String),
    #[error("job topic {topic} does not exist on {brokers}")]
    NoTopic { topic: String, brokers: String },
    #[error("cannot reach Kafka at {brokers} to publish to {topic}: {reason}")]
    Unreachable { topic: String, brokers: String, reason: String },
    #[error("kafka.properties: {0}")]
    Settings(String),
    #[error("publishing {}: {reason}", path.display())]
    Publish { path: PathBuf, reason: String },
}

/// Runs `jobs` with `launcher`, at most `concurrency` at a time; `each` hears of every job's
/// end (skipped ones first, then the others in plan order). With `resume`, a job whose
/// `.done` marker holds its config is skipped; every job that succeeds gets one.
///
/// With a `gate`, each job first waits for its partitions' dates to be complete (its own
/// wait: a group whose partitions complete early starts early); one that is not complete by
/// the gate's deadline is not started.
pub async fn run_jobs(
    jobs: Vec<Job>,
    launcher: &Launcher,
    concurrency: usize,
    resume: bool,
    gate: Option<Arc<super::wait::Waiter>>,
    mut each: impl FnMut(&Finished),
) -> Result<Summary, LaunchError> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    let mut summary = Summary::default();
    let started = Instant::now();
    for job in jobs {
        let text = serde_json::to_string(&job.config).expect("a JSON value serialises");
        let done = job.path.with_extension("done");
        let log = job.path.with_extension("log");
        let argv = launcher.argv(&job.path, &job.parts, &text);
        if resume && std::fs::read_to_string(&done).is_ok_and(|d| d == text) {
            summary.skipped += 1;
            each(&Finished { parts: job.parts, command: shown(&argv), log, outcome: Outcome::Skipped, took: Duration::ZERO });
            continue;
        }
        let _ = std::fs::remove_file(&done);
        let (sem, gate) = (sem.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            if let Some(g) = gate {
                if let Err(why) = g.wait(&job.parts).await {
                    let outcome = Outcome::NotStarted(why.to_string());
                    return Finished { parts: job.parts, command: shown(&argv), log, outcome, took: Duration::ZERO };
                }
            }
            let Ok(_permit) = sem.acquire_owned().await else {
                return Finished {
                    parts: job.parts,
                    command: shown(&argv),
                    log,
                    outcome: Outcome::NotStarted("closed".into()),
                    took: Duration::ZERO,
                };
            };
            let started = Instant::now();
            let outcome = match run_logged(&argv, &log).await {
                Ok(s) if s.success() => {
                    // What succeeded, so that --resume can tell an unchanged job from a new one.
                    let _ = std::fs::write(&done, &text);
                    Outcome::Succeeded
                }
                Ok(s) => Outcome::Failed(s.code().map_or_else(|| format!("killed by signal ({s})"), |c| format!("exit code {c}"))),
                Err(e) => Outcome::NotStarted(e.to_string()),
            };
            Finished { parts: job.parts, command: shown(&argv), log, outcome, took: started.elapsed() }
        }));
    }
    for t in tasks {
        let f = t.await.map_err(|e| LaunchError::Task(e.to_string()))?;
        summary.ran += 1;
        if f.outcome != Outcome::Succeeded {
            summary.failed += 1;
        }
        each(&f);
    }
    summary.took = started.elapsed();
    Ok(summary)
}

/// Publishes one `{"model","config"}` message per job to `topic`; `each` hears of each one.
pub async fn publish(kafka: &KafkaConfig, topic: &str, model: &str, jobs: &[Job], mut each: impl FnMut(&Job)) -> Result<(), LaunchError> {
    // The topic first: an unreachable broker or a missing topic fails here, within the
    // look-up's timeout and with the client's reason, not after librdkafka's retries.
    match crate::consumer::lookup_partition_count(kafka, topic).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(LaunchError::NoTopic { topic: topic.into(), brokers: kafka.brokers.clone() }),
        Err(e) => return Err(LaunchError::Unreachable { topic: topic.into(), brokers: kafka.brokers.clone(), reason: e.to_string() }),
    }
    // A publish that is not acknowledged within 30 s fails (librdkafka's default is 5 min).
    let defaults = [("enable.idempotence", "true"), ("message.timeout.ms", "30000")];
    let producer: FutureProducer = crate::consumer::client_config(kafka, crate::consumer::Role::Producer, &defaults)
        .create()
        .map_err(|e| LaunchError::Settings(crate::consumer::refusal(&e, kafka)))?;
    for job in jobs {
        let msg = serde_json::to_string(&job_manager_message(model, &job.config)).expect("a JSON value serialises");
        producer
            .send(FutureRecord::<(), str>::to(topic).payload(&msg), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| LaunchError::Publish { path: job.path.clone(), reason: e.to_string() })?;
        each(job);
    }
    Ok(())
}

/// A job that could not be started.
#[derive(Debug, thiserror::Error)]
enum NotStarted {
    #[error("creating {log}: {source}")]
    Log { log: String, source: std::io::Error },
    #[error("starting {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
}

/// Runs `argv` with stdout and stderr in `log`.
async fn run_logged(argv: &[String], log: &Path) -> Result<std::process::ExitStatus, NotStarted> {
    let log_err = |source| NotStarted::Log { log: log.display().to_string(), source };
    let out = std::fs::File::create(log).map_err(log_err)?;
    let err = out.try_clone().map_err(log_err)?;
    tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|source| NotStarted::Spawn { program: argv[0].clone(), source })
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
pub fn remove_stale(dir: &Path, resume: bool) -> Result<(), LaunchError> {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LaunchError {
        let path = path.to_path_buf();
        move |source| LaunchError::Io { what, path, source }
    }
    for entry in std::fs::read_dir(dir).map_err(io("reading", dir))? {
        let entry = entry.map_err(io("reading", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = name.ends_with(".json") || (!resume && (name.ends_with(".done") || name.ends_with(".log")));
        if name.starts_with("job-") && stale && entry.file_type().map_err(io("reading", dir))?.is_file() {
            std::fs::remove_file(entry.path()).map_err(io("removing stale", &entry.path()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_config_is_elided_from_shown_commands() {
        let argv: Vec<String> = ["spark-submit", "--class", "X", "--config", "{\"a\":1}", "--model", "wfs"].map(String::from).to_vec();
        assert_eq!(shown(&argv), "spark-submit --class X --config '<job config>' --model wfs");
        let plain: Vec<String> = ["sh", "-c", "run --config f.json"].map(String::from).to_vec();
        assert_eq!(shown(&plain), "sh -c run --config f.json");
    }
}
