//! `kbackup replay`: push selected backups back into Kafka, keyed, into the right partitions,
//! resumable, rate-limited.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cmd::{ExitError, SelectArgs};
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
    /// only. Files are still selected by --from/--to (their event dates): choose dates that
    /// cover the window.
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
    /// writer recorded for the backed-up topic (`<path>/_kbackup/topic/`). Not with --dry-run,
    /// which changes nothing.
    #[arg(long, conflicts_with = "dry_run")]
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
pub async fn run(a: ReplayArgs) -> anyhow::Result<()> {
    let usage = |m: String| -> anyhow::Error { ExitError { code: 2, message: m }.into() };
    let window = Window { from: a.from_time, to: a.to_time };
    if a.include_invalid_date && !window.is_set() {
        return Err(usage("--include-invalid-date needs --from-time and/or --to-time: the window picks the records of those files".into()));
    }
    let (storage, mut listed, left_out) = a.select.resolve().await?;
    // Records that earlier builds filed under `invalid_date` (record files: tombstones and
    // non-JSON values) are outside every date range: a window restore says what they hold.
    let invalid = a.select.invalid_date()?;
    let mut missed = std::collections::BTreeMap::new();
    if !(a.select.from..=a.select.to.unwrap_or(a.select.from)).contains(&invalid) {
        let (_, extra, _) = a.select.resolve_dates(invalid, invalid).await?;
        let extra: Vec<_> = extra.into_iter().filter(|l| l.name.records).collect();
        if !extra.is_empty() && !window.is_set() {
            tracing::warn!(
                "{} record file(s) under invalid_date {invalid} may hold tombstones or non-JSON records of these dates (earlier builds filed them there): give --from-time/--to-time to count them, and --include-invalid-date to restore them",
                extra.len()
            );
        } else if a.include_invalid_date {
            listed.extend(extra);
        } else if !extra.is_empty() {
            missed = crate::replay::count_in_window(&storage, &extra, window).await?;
            if !missed.is_empty() {
                tracing::warn!(
                    "{} record(s) of the window are filed under invalid_date {invalid} and will not be sent: add --include-invalid-date to restore them too",
                    missed.values().sum::<u64>()
                );
            }
        }
    }
    if left_out > 0 {
        tracing::warn!("{left_out} old-name file(s) were left out by --partitions; add --include-unpartitioned to replay them");
    }
    // The config's [kafka] section (security settings, message.max.bytes, ...) applies to the
    // producer too; --brokers only replaces the servers.
    let kafka = crate::cmd::kafka_for(a.select.config.as_deref(), a.brokers.as_deref())?
        .ok_or_else(|| usage("--brokers (or KAFKA_BROKERS) is needed without --config".into()))?;
    if a.create_topic {
        let path = a.select.backup_path()?;
        let settings = crate::topic_settings::latest(&storage, &path).await?.ok_or_else(|| {
            usage(format!(
                "--create-topic: no topic settings are recorded under {} (a writer of this version records them at start); create {} yourself",
                crate::topic_settings::dir(&path),
                a.to_topic
            ))
        })?;
        let extra = a.topic_config.iter().cloned().collect();
        if crate::topic_settings::create_topic(&kafka, &a.to_topic, &settings, a.replication_factor, &extra).await? {
            let config = settings.create_config(&extra);
            let shown: Vec<String> = config.iter().map(|(k, v)| format!("{k}={v}")).collect();
            crate::outln!("created topic {} like {}: {} partitions, {}", a.to_topic, settings.topic, settings.partitions, shown.join(", "));
        } else {
            crate::outln!("topic {} exists: not created", a.to_topic);
        }
        if a.partitioner == PartitionerArg::Same {
            let target = crate::consumer::lookup_partition_count(&kafka, &a.to_topic).await?.unwrap_or(0);
            if target < settings.partitions {
                return Err(usage(format!(
                    "{} has {target} partitions, fewer than {}'s {}: --partitioner same would refuse some files; choose another --partitioner or a target with enough partitions",
                    a.to_topic, settings.topic, settings.partitions
                )));
            }
        }
    }
    if listed.is_empty() {
        tracing::warn!("no backup file matched the selection (dates, partitions, path): nothing to replay");
    }
    if a.key.is_empty() && listed.iter().any(|l| !l.name.records) {
        tracing::warn!(
            "no --key: events are sent without a key, so a later producer-side re-partitioning cannot keep devices together (Sunbird: --key context.did,mid)"
        );
    }
    let default_checkpoint = match window {
        Window { from: None, to: None } => format!(".kbackup-replay-{}.progress", a.to_topic),
        Window { from, to } => {
            let ms = |t: Option<i64>| t.map_or("open".to_string(), |t| t.to_string());
            format!(".kbackup-replay-{}-{}-{}.progress", a.to_topic, ms(from), ms(to))
        }
    };
    let opts = Options {
        to_topic: a.to_topic.clone(),
        partitioner: a.partitioner.into(),
        key: a.key.clone(),
        rate: a.rate,
        dry_run: a.dry_run,
        offset_order: a.offset_order,
        checkpoint: a.checkpoint.clone().unwrap_or_else(|| PathBuf::from(default_checkpoint)),
        window,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut stdout = std::io::stdout();
    let show: Option<&mut dyn std::io::Write> = if a.show { Some(&mut stdout) } else { None };
    let s = crate::replay::replay(&storage, &listed, &kafka, &opts, stop, show).await.map_err(|e| -> anyhow::Error {
        match e {
            ReplayError::Usage(message) => ExitError { code: 2, message }.into(),
            e @ ReplayError::Interrupted { .. } => ExitError { code: 130, message: e.to_string() }.into(),
            ReplayError::Output(io) => io.into(),
            e => e.into(),
        }
    })?;
    let secs = s.elapsed.as_secs_f64();
    let verb = if a.dry_run { "would send" } else { "sent" };
    crate::outln!("{verb} {} events to {} in {secs:.1}s ({:.0} events/s)", s.events, a.to_topic, s.events as f64 / secs.max(1e-9));
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
    if !missed.is_empty() {
        crate::outln!(
            "not sent: {} record(s) of the window filed under invalid_date {invalid} (add --include-invalid-date):",
            missed.values().sum::<u64>()
        );
        for (p, n) in &missed {
            crate::outln!("  source partition {p}: {n}");
        }
    }
    if s.unkeyed > 0 {
        tracing::warn!("{} event(s) had no key (none of the --key fields) and were spread round-robin", s.unkeyed);
    }
    Ok(())
}
