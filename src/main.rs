//! The `kbackup` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kbackup::cmd::{self, ExitError};

/// Back up Kafka topics to Azure Blob Storage, S3 (and S3-compatible stores), Google Cloud
/// Storage or local files as per-partition, per-date NDJSON files (a drop-in for Secor).
#[derive(Debug, Parser)]
#[command(name = "kbackup", version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "KBACKUP_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the backup writer (consumer group → files in storage → offset commits).
    Run(cmd::run::RunArgs),
    /// Validate a config and check that the broker, topics and container are usable.
    Check(cmd::check::CheckArgs),
    /// List backup files by date and Kafka partition (new and old names).
    Ls(cmd::ls::LsArgs),
    /// Print the events of selected backup files, decompressed, in file order.
    Cat(cmd::cat::CatArgs),
    /// Replay backups into Kafka, keyed, into the partitions they came from (or hashed).
    Replay(cmd::replay::ReplayArgs),
    /// Plan (and run, or publish) per-partition WFS jobs.
    Plan(cmd::plan::PlanArgs),
    /// Split old <date>-<ts> files into new <date>-<p>-<ts> files by key, beside the originals.
    Repartition(cmd::repartition::RepartitionArgs),
    /// Audit backups against the topic: missing, doubled and misfiled events.
    Verify(cmd::verify::VerifyArgs),
    /// Take over a stopped Secor's position (its ZooKeeper offsets) for kbackup's group.
    Takeover(cmd::takeover::TakeoverArgs),
    /// Hand a stopped kbackup's position back to Secor (its ZooKeeper offsets).
    Handback(cmd::handback::HandbackArgs),
    /// Write synthetic Sunbird telemetry into a topic (for demos, tests and benchmarks).
    ProduceSample(cmd::produce_sample::ProduceSampleArgs),
    /// Ceiling measurements for scripts/bench.
    #[command(subcommand, hide = true)]
    Bench(cmd::bench::BenchCmd),
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter).with_filter(tracing_subscriber::filter::filter_fn(|m| !is_repeated_close(m))))
        .init();
}

/// The one error rdkafka's consumer module logs: its drop failing to close a consumer again
/// after kbackup closed it itself. Every consumer that names a group is closed by
/// `consumer::close_and_destroy` (directly, or through `consumer::Closing`), which reports its
/// own failures; anything librdkafka itself says comes through the client context instead.
fn is_repeated_close(m: &tracing::Metadata<'_>) -> bool {
    m.target() == "rdkafka::consumer::base_consumer" && *m.level() == tracing::Level::ERROR
}

/// Makes glibc return large buffers to the OS when they are freed.
///
/// glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, after which
/// file-sized buffers come from heap arenas that rarely shrink (one arena per thread that
/// compresses). RSS then stays far above what is in use. A fixed threshold keeps every buffer of
/// 1 MiB or more in its own mapping, unmapped on free.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// One JSON log line for the error that ends the process.
fn error_json(message: &str, exit_code: u8) -> serde_json::Value {
    serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": "ERROR",
        "target": "kbackup",
        "message": message.trim_end(),
        "exit_code": exit_code,
    })
}

/// `--log-format json` (or `=json`, or KBACKUP_LOG_FORMAT=json), read from the raw arguments
/// when clap could not parse them.
fn json_logs_requested() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let flag = args.windows(2).any(|w| w[0] == "--log-format" && w[1] == "json") || args.iter().any(|a| a == "--log-format=json");
    let env = std::env::var("KBACKUP_LOG_FORMAT").is_ok_and(|v| v == "json");
    flag || (env && !args.iter().any(|a| a.starts_with("--log-format")))
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && json_logs_requested() => {
            // A usage error in the log format asked for, like every other line.
            eprintln!("{}", error_json(&e.render().to_string(), 2));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let log_format = cli.log_format;
    init_logging(log_format);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = rt.block_on(async move {
        // Every command but `run` (which stops gracefully on its own) ends within a second of
        // SIGINT or SIGTERM, exit 130 or 143.
        let interrupt = match &cli.command {
            Command::Run(_) => None,
            _ => Some(kbackup::interrupt::Interrupt::install().map_err(|e| anyhow::anyhow!("installing the signal handlers: {e}"))?),
        };
        match cli.command {
            Command::Run(a) => cmd::run::run(a).await,
            Command::Check(a) => cmd::check::run(a).await,
            Command::ProduceSample(a) => cmd::produce_sample::run(a).await,
            Command::Bench(c) => cmd::bench::run(c).await,
            Command::Ls(a) => cmd::ls::run(a).await,
            Command::Verify(a) => cmd::verify::run(a).await,
            Command::Cat(a) => cmd::cat::run(a).await,
            Command::Replay(a) => cmd::replay::run(a, interrupt.expect("installed for every command but run")).await,
            Command::Plan(a) => cmd::plan::run(a).await,
            Command::Repartition(a) => cmd::repartition::run(a).await,
            Command::Takeover(a) => cmd::takeover::run(a).await,
            Command::Handback(a) => cmd::handback::run(a).await,
        }
    });
    // Uploads still retrying after a failed shutdown must not keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`kbackup ls | head`): stop quietly, as Unix tools do.
        Err(e) if cmd::is_broken_pipe(&e) => ExitCode::from(141),
        Err(e) => {
            let code = e.downcast_ref::<ExitError>().map_or(1, |x| x.code);
            match log_format {
                // One JSON object like every other line, so log pipelines keep the reason.
                LogFormat::Json => eprintln!("{}", error_json(&format!("{e:#}"), code)),
                LogFormat::Text => eprintln!("error: {e:#}"),
            }
            ExitCode::from(code)
        }
    }
}
