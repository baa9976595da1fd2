//! `kbackup replay`: push selected backups back into Kafka, keyed, into the right partitions,
//! resumable, rate-limited.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::cmd::ls::SelectArgs;
use crate::cmd::ExitError;
use crate::event_date::FieldValue;
use crate::partitioner::{java_hashcode_partition, murmur2_partition};
use crate::routing::find_fields;

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
    /// Fields whose first present value becomes the message key, e.g. context.did,mid. Without
    /// it events are sent unkeyed. Backups in Secor's format keep only each message's value:
    /// original keys, headers and record timestamps are not restored.
    #[arg(long, value_delimiter = ',')]
    pub key: Vec<String>,
    /// At most this many events per second (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Count events per target partition; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Progress file: finished files (and how far a stopped one got) are skipped on restart.
    /// Default: .kbackup-replay-<topic>.progress
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
}

/// How often (in events) finished files are looked for and recorded.
const PROGRESS_EVERY: u64 = 20_000;

/// Counts acknowledgements per file (the delivery opaque is the file's index), so a file is
/// recorded as done as soon as all its events are acknowledged, without draining the pipeline.
struct Ctx {
    failed: Arc<AtomicU64>,
    acked: Arc<Vec<AtomicU64>>,
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, file: usize) {
        match result {
            Ok(_) => {
                self.acked[file].fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "delivery failed");
            }
        }
    }
}

/// Sends the selected files' events; exits non-zero if any delivery failed.
pub async fn run(a: ReplayArgs) -> anyhow::Result<()> {
    let usage = |m: String| -> anyhow::Error { ExitError { code: 2, message: m }.into() };
    let (storage, listed, left_out) = a.select.resolve().await?;
    if left_out > 0 {
        eprintln!("note: {left_out} old-name file(s) were left out by --partitions; add --include-unpartitioned to replay them");
    }
    // The config's [kafka] section (security settings, message.max.bytes, ...) applies to the
    // producer too; --brokers only replaces the servers.
    let kafka = crate::cmd::kafka_for(a.select.config.as_deref(), a.brokers.as_deref())?
        .ok_or_else(|| usage("--brokers (or KAFKA_BROKERS) is needed without --config".into()))?;
    let brokers = kafka.brokers.clone();
    if a.partitioner != PartitionerArg::Same && a.key.is_empty() {
        return Err(usage(format!("--partitioner {:?} hashes the key: give --key (e.g. context.did,mid)", a.partitioner).to_lowercase()));
    }
    if listed.is_empty() {
        eprintln!("warning: no backup file matched the selection (dates, partitions, path): nothing to replay");
    }
    if a.key.is_empty() {
        eprintln!(
            "warning: no --key: events are sent without a key, so a later producer-side re-partitioning cannot keep devices together (Sunbird: --key context.did,mid)"
        );
    }
    let old = listed.iter().filter(|l| l.kafka_partition.is_none()).count();
    if a.partitioner == PartitionerArg::Same && old > 0 {
        return Err(usage(format!(
            "{old} selected file(s) have old names without a Kafka partition; use --partitioner murmur2 or java-hashcode with --key"
        )));
    }
    let target_parts = crate::consumer::lookup_partition_count(&kafka, &a.to_topic)
        .await?
        .ok_or_else(|| anyhow::anyhow!("topic {} not found on {brokers}", a.to_topic))?;
    if a.partitioner == PartitionerArg::Same {
        if let Some(max) = listed.iter().filter_map(|l| l.kafka_partition).max() {
            if max >= target_parts {
                return Err(usage(format!(
                    "{} has {target_parts} partitions but the files name partition {max}; --partitioner same needs at least {}",
                    a.to_topic,
                    max + 1
                )));
            }
        }
    }

    let checkpoint = a.checkpoint.clone().unwrap_or_else(|| PathBuf::from(format!(".kbackup-replay-{}.progress", a.to_topic)));
    // Each line: `<key>\tdone`, or `<key>\t<events acknowledged>`; the last line of a key wins.
    let mut progress: HashMap<String, Option<u64>> = HashMap::new();
    if !a.dry_run {
        for line in std::fs::read_to_string(&checkpoint).unwrap_or_default().lines() {
            if let Some((k, v)) = line.rsplit_once('\t') {
                progress.insert(k.to_string(), if v == "done" { None } else { v.parse().ok() });
            }
        }
    }
    let todo: Vec<_> = listed.iter().filter(|l| !matches!(progress.get(&l.key), Some(None))).collect();
    if todo.len() < listed.len() || !progress.is_empty() {
        eprintln!("resuming: {} of {} file(s) already replayed (per {})", listed.len() - todo.len(), listed.len(), checkpoint.display());
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            stop.store(true, Ordering::Relaxed);
        });
    }
    let failed = Arc::new(AtomicU64::new(0));
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..todo.len()).map(|_| AtomicU64::new(0)).collect());
    let producer: Option<ThreadedProducer<Ctx>> = if a.dry_run {
        None
    } else {
        Some(
            crate::consumer::client_config(
                &kafka,
                crate::consumer::Role::Producer,
                &[("linger.ms", "20"), ("batch.size", "1000000"), ("compression.type", "lz4"), ("queue.buffering.max.kbytes", "262144")],
            )
            // Idempotence is what makes a resumed replay send nothing twice: not negotiable.
            .set("enable.idempotence", "true")
            .create_with_context(Ctx { failed: failed.clone(), acked: acked.clone() })
            .map_err(|e| usage(format!("kafka.properties: {e}")))?,
        )
    };
    let mut ckpt = if a.dry_run {
        None
    } else {
        Some(std::fs::OpenOptions::new().create(true).append(true).open(&checkpoint).with_context(|| format!("opening {}", checkpoint.display()))?)
    };
    let paths: Vec<Vec<String>> = a.key.iter().map(|k| k.split('.').map(String::from).collect()).collect();

    let total: u64 = todo.iter().map(|l| l.size).sum();
    let mut bar =
        crate::progress::Progress::new(total, "{spinner} {bytes}/{total_bytes} stored bytes, {msg} [{elapsed_precise}, ETA {eta}]", "stored bytes");
    let started = Instant::now();
    let mut per_partition: BTreeMap<i32, u64> = BTreeMap::new();
    let (mut events, mut unkeyed) = (0u64, 0u64);
    let mut rr = 0i32;
    let check_failed = || -> anyhow::Result<()> {
        match failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => anyhow::bail!("{n} deliveries failed; unfinished files are not recorded as done, rerun to resend them"),
        }
    };
    // Files fully sent, with their event counts, not yet recorded as done.
    let mut pending: Vec<(usize, u64)> = Vec::new();
    let record_done = |pending: &mut Vec<(usize, u64)>, f: &mut std::fs::File| -> anyhow::Result<()> {
        let mut wrote = false;
        pending.retain(|&(i, n)| {
            if acked[i].load(Ordering::Relaxed) >= n {
                wrote |= writeln!(f, "{}\tdone", todo[i].key).is_ok();
                false
            } else {
                true
            }
        });
        if wrote {
            f.sync_data()?;
        }
        Ok(())
    };
    for (fi, l) in todo.iter().enumerate() {
        let skip = progress.get(&l.key).copied().flatten().unwrap_or(0);
        let raw = storage.store.get(&ObjectPath::from(l.key.as_str())).await?.bytes().await?;
        let reader = crate::seal::reader(&l.key, &raw);
        let mut in_file = 0u64;
        for line in BufReader::with_capacity(1 << 20, reader).split(b'\n') {
            let line = line.with_context(|| format!("{}: corrupt or truncated; not recorded as done, rerun to resend it", l.key))?;
            in_file += 1;
            if in_file <= skip {
                continue;
            }
            let key = if paths.is_empty() { None } else { key_of(&line, &paths) };
            let partition = match (a.partitioner, &key) {
                (PartitionerArg::Same, _) => l.kafka_partition.expect("checked: new names only"),
                (PartitionerArg::Murmur2, Some(k)) => murmur2_partition(k.as_bytes(), target_parts),
                (PartitionerArg::JavaHashcode, Some(k)) => java_hashcode_partition(k, target_parts),
                (_, None) => {
                    // No key field at all: spread evenly, as an unkeyed producer would.
                    unkeyed += 1;
                    rr = (rr + 1) % target_parts;
                    rr
                }
            };
            *per_partition.entry(partition).or_default() += 1;
            events += 1;
            if let Some(p) = &producer {
                let mut rec = BaseRecord::with_opaque_to(&a.to_topic, fi).partition(partition).payload(&line[..]);
                if let Some(k) = &key {
                    rec = rec.key(k.as_str());
                }
                crate::producer::send_blocking(p, rec).with_context(|| format!("producing to {}", a.to_topic))?;
            }
            if let Some(rate) = a.rate {
                if events % 100 == 0 {
                    let due = Duration::from_secs_f64(events as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            if events % 10_000 == 0 {
                bar.set_message(format!("{events} events, {:.0} events/s", events as f64 / started.elapsed().as_secs_f64()));
            }
            let stopping = stop.load(Ordering::Relaxed);
            if let (Some(p), Some(f)) = (&producer, &mut ckpt) {
                if events % PROGRESS_EVERY == 0 {
                    check_failed()?;
                    record_done(&mut pending, f)?;
                }
                if stopping {
                    // Everything sent so far is acknowledged before progress is recorded.
                    p.flush(Duration::from_secs(300)).context("waiting for deliveries")?;
                    check_failed()?;
                    record_done(&mut pending, f)?;
                    writeln!(f, "{}\t{in_file}", l.key)?;
                    f.sync_data()?;
                }
            }
            if stopping {
                bar.finish();
                return Err(ExitError {
                    code: 130,
                    message: format!(
                        "interrupted after {events} events; progress is in {}, run the same command again to resume",
                        checkpoint.display()
                    ),
                }
                .into());
            }
        }
        // Recorded as done once every event of it is acknowledged (checked as replay goes on).
        pending.push((fi, in_file - skip));
        bar.inc(l.size);
    }
    if let (Some(p), Some(f)) = (&producer, &mut ckpt) {
        p.flush(Duration::from_secs(300)).context("waiting for deliveries")?;
        check_failed()?;
        record_done(&mut pending, f)?;
    }
    bar.finish();
    let secs = started.elapsed().as_secs_f64();
    let verb = if a.dry_run { "would send" } else { "sent" };
    crate::outln!("{verb} {events} events to {} in {secs:.1}s ({:.0} events/s)", a.to_topic, events as f64 / secs.max(1e-9));
    for (p, n) in &per_partition {
        crate::outln!("  partition {p}: {n}");
    }
    if unkeyed > 0 {
        eprintln!("note: {unkeyed} event(s) had none of the --key fields and were spread round-robin");
    }
    Ok(())
}

/// The first present key field, as a string.
pub fn key_of(line: &[u8], paths: &[Vec<String>]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    find_fields(text, paths)?.into_iter().flatten().find_map(|v| match v {
        FieldValue::Str(s) => Some(s.into_owned()),
        FieldValue::Int(i) => Some(i.to_string()),
        _ => None,
    })
}
