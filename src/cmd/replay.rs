//! `kbackup replay`: push selected backups back into Kafka, keyed, into the right partitions,
//! resumable, rate-limited.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cmd::{ExitError, SelectArgs};
use crate::replay::restore::{self, CreateTopic, Created, Request};
use crate::replay::{Options, Partitioner, ReplayError, Window};

/// How each event's target partition is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PartitionerArg {
    /// The Kafka partition named in the file: exact, no hashing (new-name files only).
    Same,
    /// The Java client's default for keyed records (librdkafka's `murmur2_random`).
    Murmur2,
    /// Samza's `abs(key.hashCode()) % partitions`, as Sunbird's dedup job placed events.
    JavaHashcode,
}

/// Arguments of `kbackup replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Topic to write into.
    #[arg(long)]
    pub to_topic: String,
    /// Bootstrap servers (default: the config's kafka.brokers; without --config, env
    /// KAFKA_BROKERS). The environment never overrides a config.
    #[arg(long)]
    pub brokers: Option<String>,
    #[arg(long, value_enum, default_value_t = PartitionerArg::Same)]
    pub partitioner: PartitionerArg,
    /// Fields whose first present value becomes the message key, e.g. context.did,mid. Record
    /// files (format = "record") restore their original keys, headers, timestamps and
    /// partitions without it (given, it replaces the key). Value files (Secor's format) keep only
    /// each message's value: without --key their events are sent unkeyed.
    #[arg(long, value_delimiter = ',')]
    pub key: Vec<String>,
    /// At most this many events per second (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Count events per target partition; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print one line per record that would be sent (partition, offset, key,
    /// timestamp, headers, value size). Record files only.
    #[arg(long, requires = "dry_run")]
    pub show: bool,
    /// Send each partition's records in their original offset order, merging the partition's
    /// files across dates (record files only; holds one partition's selected records in
    /// memory). Needed to restore a compacted topic, where the last value of a key wins.
    #[arg(long)]
    pub offset_order: bool,
    /// Only records whose Kafka record timestamp is at or after this time (inclusive): RFC 3339
    /// (2026-12-01T18:30:00Z, 2026-12-02T00:00:00+05:30) or epoch milliseconds. Record files
    /// only. Without --from, it selects the files too: every date (an event's date says nothing
    /// of its record time) but none uploaded more than a day before the window opened.
    #[arg(long, value_parser = crate::replay::parse_time)]
    pub from_time: Option<i64>,
    /// Only records whose record timestamp is before this time (exclusive); as --from-time.
    #[arg(long, value_parser = crate::replay::parse_time)]
    pub to_time: Option<i64>,
    /// With --from-time/--to-time: also send the window's records found in the topic's
    /// `invalid_date` files (tombstones and non-JSON records that earlier builds filed there).
    /// Without it they are counted and reported, not sent.
    #[arg(long)]
    pub include_invalid_date: bool,
    /// Create the target topic if it does not exist, with the partition count and settings the
    /// writer recorded for the backed-up topic (`<path>/_kbackup/topic/`). With --dry-run:
    /// says what would be created, and counts as if it were.
    #[arg(long)]
    pub create_topic: bool,
    /// With --create-topic: a setting that must differ from the source's, `key=value`
    /// (repeatable), e.g. `retention.ms=-1`.
    #[arg(long, value_name = "KEY=VALUE", requires = "create_topic", value_parser = parse_setting)]
    pub topic_config: Vec<(String, String)>,
    /// With --create-topic: the replication factor (default: the source's).
    #[arg(long, requires = "create_topic", value_parser = clap::value_parser!(i32).range(1..))]
    pub replication_factor: Option<i32>,
    /// Progress file: finished files (and how far a stopped one got) are skipped on restart.
    /// Default: .kbackup-replay-<topic>.progress, or with a time window
    /// .kbackup-replay-<topic>-<from-time>-<to-time>.progress (so that another window does not
    /// take files as done).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{s}: expected KEY=VALUE, e.g. retention.ms=-1")),
    }
}

impl From<PartitionerArg> for Partitioner {
    fn from(p: PartitionerArg) -> Partitioner {
        match p {
            PartitionerArg::Same => Partitioner::Same,
            PartitionerArg::Murmur2 => Partitioner::Murmur2,
            PartitionerArg::JavaHashcode => Partitioner::JavaHashcode,
        }
    }
}

/// Sends the selected files' events; exits non-zero if any was not delivered.
pub async fn run(a: ReplayArgs, interrupt: Arc<crate::interrupt::Interrupt>) -> anyhow::Result<()> {
    let window = Window { from: a.from_time, to: a.to_time };
    let (source, left_out) = a.select.source(a.from_time).await?;
    if left_out > 0 {
        tracing::warn!("{left_out} old-name file(s) were left out by --partitions; add --include-unpartitioned to replay them");
    }
    // The config's [kafka] section (security settings, message.max.bytes, ...) applies to the
    // producer too; --brokers only replaces the servers.
    let kafka = crate::cmd::kafka_for(a.select.config.as_deref(), a.brokers.as_deref())?
        .ok_or_else(|| ExitError { code: 2, message: "--brokers (or KAFKA_BROKERS) is needed without --config".into() })?;
    let req = Request {
        opts: Options {
            to_topic: a.to_topic.clone(),
            partitioner: a.partitioner.into(),
            key: a.key.clone(),
            rate: a.rate,
            dry_run: a.dry_run,
            offset_order: a.offset_order,
            checkpoint: a.checkpoint.clone().unwrap_or_else(|| restore::default_checkpoint(&a.to_topic, window)),
            window,
            would_create_partitions: None,
        },
        include_invalid_date: a.include_invalid_date,
        create_topic: a
            .create_topic
            .then(|| CreateTopic { overrides: a.topic_config.iter().cloned().collect(), replication_factor: a.replication_factor }),
    };
    // A signal stops the sending where it is; the checkpoint records what was acknowledged
    // (within the grace the process has, crate::interrupt).
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            interrupt.wait().await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut stdout = std::io::stdout();
    let show: Option<&mut dyn std::io::Write> = if a.show { Some(&mut stdout) } else { None };
    let report = restore::restore(source, &req, &kafka, stop, show).await.map_err(|e| -> anyhow::Error {
        match e {
            ReplayError::Usage(message) => ExitError { code: 2, message }.into(),
            e @ ReplayError::Interrupted { .. } => ExitError { code: interrupt.asked().unwrap_or(130) as u8, message: e.to_string() }.into(),
            ReplayError::Output(io) => io.into(),
            e => e.into(),
        }
    })?;
    print(&report, &a.to_topic, a.dry_run)
}

fn print(report: &restore::Report, to_topic: &str, dry_run: bool) -> anyhow::Result<()> {
    match &report.created {
        Some(Created::New { like, partitions, config }) => {
            let shown: Vec<String> = config.iter().map(|(k, v)| format!("{k}={v}")).collect();
            crate::outln!("created topic {to_topic} like {like}: {partitions} partitions, {}", shown.join(", "));
        }
        Some(Created::Existed) => crate::outln!("topic {to_topic} exists: not created"),
        Some(Created::WouldCreate { like, partitions, config }) => {
            let shown: Vec<String> = config.iter().map(|(k, v)| format!("{k}={v}")).collect();
            crate::outln!("would create topic {to_topic} like {like}: {partitions} partitions, {}", shown.join(", "));
        }
        None => {}
    }
    let s = &report.summary;
    let secs = s.elapsed.as_secs_f64();
    let verb = if dry_run { "would send" } else { "sent" };
    crate::outln!("{verb} {} events to {to_topic} in {secs:.1}s ({:.0} events/s)", s.events, s.events as f64 / secs.max(1e-9));
    for (p, n) in &s.per_partition {
        crate::outln!("  partition {p}: {n}");
    }
    if s.tombstones > 0 {
        crate::outln!("  of which tombstones: {}", s.tombstones);
    }
    if !s.outside_window.is_empty() {
        let total: u64 = s.outside_window.values().sum();
        crate::outln!("left out {total} record(s) of the selected files whose record time is outside --from-time/--to-time:");
        for (p, n) in &s.outside_window {
            crate::outln!("  source partition {p}: {n}");
        }
    }
    if !report.not_sent_invalid.is_empty() {
        crate::outln!(
            "not sent: {} record(s) of the window filed under invalid_date {} (add --include-invalid-date):",
            report.not_sent_invalid.values().sum::<u64>(),
            report.invalid_date
        );
        for (p, n) in &report.not_sent_invalid {
            crate::outln!("  source partition {p}: {n}");
        }
    }
    if s.unkeyed > 0 {
        tracing::warn!("{} event(s) had no key (none of the --key fields) and were spread round-robin", s.unkeyed);
    }
    Ok(())
}
