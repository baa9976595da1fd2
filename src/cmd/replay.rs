//! `kbackup replay`: push selected backups back into Kafka, keyed, into the right partitions,
//! resumable, rate-limited.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::cmd::ls::SelectArgs;
use crate::cmd::ExitError;
use crate::event_date::FieldValue;
use crate::listing::Listed;
use crate::partitioner::{java_hashcode_partition, murmur2_partition};
use crate::record::Record;
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
        tracing::warn!("{left_out} old-name file(s) were left out by --partitions; add --include-unpartitioned to replay them");
    }
    // The config's [kafka] section (security settings, message.max.bytes, ...) applies to the
    // producer too; --brokers only replaces the servers.
    let kafka = crate::cmd::kafka_for(a.select.config.as_deref(), a.brokers.as_deref())?
        .ok_or_else(|| usage("--brokers (or KAFKA_BROKERS) is needed without --config".into()))?;
    let brokers = kafka.brokers.clone();
    // Record files carry their keys; value files only have what --key finds in the value.
    let value_files = listed.iter().filter(|l| !l.name.records).count();
    if a.partitioner != PartitionerArg::Same && a.key.is_empty() && value_files > 0 {
        return Err(usage(format!("--partitioner {:?} hashes the key: give --key (e.g. context.did,mid)", a.partitioner).to_lowercase()));
    }
    if a.offset_order && value_files > 0 {
        return Err(usage(format!(
            "--offset-order needs record files (format = \"record\"): {value_files} selected file(s) hold values only, without offsets"
        )));
    }
    if listed.is_empty() {
        tracing::warn!("no backup file matched the selection (dates, partitions, path): nothing to replay");
    }
    if a.key.is_empty() && value_files > 0 {
        tracing::warn!(
            "no --key: events are sent without a key, so a later producer-side re-partitioning cannot keep devices together (Sunbird: --key context.did,mid)"
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
        tracing::info!("resuming: {} of {} file(s) already replayed (per {})", listed.len() - todo.len(), listed.len(), checkpoint.display());
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
            .map_err(|e| usage(format!("kafka.properties: {}", crate::consumer::refusal(&e, &kafka))))?,
        )
    };
    let mut ckpt = if a.dry_run {
        None
    } else {
        Some(std::fs::OpenOptions::new().create(true).append(true).open(&checkpoint).with_context(|| format!("opening {}", checkpoint.display()))?)
    };
    let paths: Vec<Vec<String>> = a.key.iter().map(|k| k.split('.').map(String::from).collect()).collect();

    let total: u64 = todo.iter().map(|l| l.size).sum();
    // Lines of each file a stopped run already had acknowledged (skipped now).
    let resumed: Vec<u64> = todo.iter().map(|l| progress.get(&l.key).copied().flatten().unwrap_or(0)).collect();
    let bar =
        crate::progress::Progress::new(total, "{spinner} {bytes}/{total_bytes} stored bytes, {msg} [{elapsed_precise}, ETA {eta}]", "stored bytes");
    let mut s = Sender {
        a: &a,
        producer: producer.as_ref(),
        paths,
        target_parts,
        started: Instant::now(),
        per_partition: BTreeMap::new(),
        events: 0,
        unkeyed: 0,
        tombstones: 0,
        rr: 0,
        sent_in_file: resumed.clone(),
        bar,
    };
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
    // After each event: progress, and on a signal everything acknowledged is recorded (`open`:
    // the files partly sent, asked for only then).
    let mut after_send = |s: &mut Sender<'_>, pending: &mut Vec<(usize, u64)>, open: &dyn Fn() -> Vec<usize>| -> anyhow::Result<()> {
        let stopping = stop.load(Ordering::Relaxed);
        if let (Some(p), Some(f)) = (&producer, &mut ckpt) {
            if s.events % PROGRESS_EVERY == 0 {
                check_failed()?;
                record_done(pending, f)?;
            }
            if stopping {
                // Everything sent so far is acknowledged before progress is recorded.
                p.flush(Duration::from_secs(300)).context("waiting for deliveries")?;
                check_failed()?;
                record_done(pending, f)?;
                for fi in open() {
                    writeln!(f, "{}\t{}", todo[fi].key, s.sent_in_file[fi])?;
                }
                f.sync_data()?;
            }
        }
        if stopping {
            s.bar.finish();
            return Err(ExitError {
                code: 130,
                message: format!(
                    "interrupted after {} events; progress is in {}, run the same command again to resume",
                    s.events,
                    checkpoint.display()
                ),
            }
            .into());
        }
        Ok(())
    };
    if a.offset_order {
        // One partition at a time: its files' records, merged by offset. Each file holds
        // ascending offsets, so what is sent of a file is always a prefix of it (resumable).
        let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (fi, l) in todo.iter().enumerate() {
            by_partition.entry(l.kafka_partition.unwrap_or(-1)).or_default().push(fi);
        }
        for files in by_partition.values() {
            let mut all: Vec<(i64, usize, Record)> = Vec::new();
            let mut left: HashMap<usize, u64> = HashMap::new();
            for &fi in files {
                let l = todo[fi];
                let skip = resumed[fi];
                let raw = storage.read(&l.key).await?;
                let mut n = 0u64;
                for (i, line) in crate::seal::lines(&l.key, &raw).enumerate() {
                    let line = line.with_context(|| format!("{}: corrupt or truncated; not recorded as done, rerun to resend it", l.key))?;
                    n += 1;
                    if (i as u64) < skip {
                        continue;
                    }
                    let r = decode_line(l, i, &line)?;
                    all.push((r.offset.unwrap_or(i64::MAX), fi, r));
                }
                left.insert(fi, n - skip);
                if n == skip {
                    pending.push((fi, 0));
                }
                s.bar.inc(l.size);
            }
            // Stable: equal offsets (none, in a healthy backup) keep file order.
            all.sort_by_key(|(o, ..)| *o);
            for (_, fi, r) in all {
                s.send_record(fi, todo[fi], r).await?;
                let n = left.get_mut(&fi).expect("counted");
                *n -= 1;
                if *n == 0 {
                    pending.push((fi, s.sent_in_file[fi] - resumed[fi]));
                }
                after_send(&mut s, &mut pending, &|| left.iter().filter(|(_, n)| **n > 0).map(|(fi, _)| *fi).collect())?;
            }
        }
    } else {
        for (fi, l) in todo.iter().enumerate() {
            let skip = resumed[fi];
            let raw = storage.read(&l.key).await?;
            for (i, line) in crate::seal::lines(&l.key, &raw).enumerate() {
                let line = line.with_context(|| format!("{}: corrupt or truncated; not recorded as done, rerun to resend it", l.key))?;
                if (i as u64) < skip {
                    continue;
                }
                if l.name.records {
                    let r = decode_line(l, i, &line)?;
                    s.send_record(fi, l, r).await?;
                } else {
                    s.send_value(fi, l, &line).await?;
                }
                after_send(&mut s, &mut pending, &|| vec![fi])?;
            }
            // Recorded as done once every event of it is acknowledged (checked as replay goes on).
            pending.push((fi, s.sent_in_file[fi] - resumed[fi]));
            s.bar.inc(l.size);
        }
    }
    if let (Some(p), Some(f)) = (&producer, &mut ckpt) {
        p.flush(Duration::from_secs(300)).context("waiting for deliveries")?;
        check_failed()?;
        record_done(&mut pending, f)?;
    }
    s.bar.finish();
    let secs = s.started.elapsed().as_secs_f64();
    let verb = if a.dry_run { "would send" } else { "sent" };
    crate::outln!("{verb} {} events to {} in {secs:.1}s ({:.0} events/s)", s.events, a.to_topic, s.events as f64 / secs.max(1e-9));
    for (p, n) in &s.per_partition {
        crate::outln!("  partition {p}: {n}");
    }
    if s.tombstones > 0 {
        crate::outln!("  of which tombstones: {}", s.tombstones);
    }
    if s.unkeyed > 0 {
        tracing::warn!("{} event(s) had no key (none of the --key fields) and were spread round-robin", s.unkeyed);
    }
    Ok(())
}

fn decode_line(l: &Listed, i: usize, line: &[u8]) -> anyhow::Result<Record> {
    crate::record::decode(line).with_context(|| format!("{} line {}: not recorded as done", l.key, i + 1))
}

/// Sends events one at a time: picks the partition, keeps the counts, honours `--rate`.
struct Sender<'a> {
    a: &'a ReplayArgs,
    producer: Option<&'a ThreadedProducer<Ctx>>,
    paths: Vec<Vec<String>>,
    target_parts: i32,
    started: Instant,
    per_partition: BTreeMap<i32, u64>,
    events: u64,
    unkeyed: u64,
    tombstones: u64,
    rr: i32,
    /// Lines of each file sent so far (from the checkpoint on a resumed run).
    sent_in_file: Vec<u64>,
    bar: crate::progress::Progress,
}

impl Sender<'_> {
    fn partition(&mut self, l: &Listed, recorded: Option<i32>, key: Option<&[u8]>) -> i32 {
        match (self.a.partitioner, key) {
            (PartitionerArg::Same, _) => recorded.or(l.kafka_partition).expect("checked: new names only"),
            (PartitionerArg::Murmur2, Some(k)) => murmur2_partition(k, self.target_parts),
            (PartitionerArg::JavaHashcode, Some(k)) => java_hashcode_partition(&String::from_utf8_lossy(k), self.target_parts),
            (_, None) => {
                // No key at all: spread evenly, as an unkeyed producer would.
                self.unkeyed += 1;
                self.rr = (self.rr + 1) % self.target_parts;
                self.rr
            }
        }
    }

    /// A line of a value file: keyed by `--key`, no headers, a new record time.
    async fn send_value(&mut self, fi: usize, l: &Listed, line: &[u8]) -> anyhow::Result<()> {
        let key = if self.paths.is_empty() { None } else { key_of(line, &self.paths) };
        let partition = self.partition(l, None, key.as_deref().map(str::as_bytes));
        if let Some(p) = self.producer {
            let mut rec = BaseRecord::with_opaque_to(&self.a.to_topic, fi).partition(partition).payload(line);
            if let Some(k) = &key {
                rec = rec.key(k.as_str());
            }
            crate::producer::send_blocking(p, rec).with_context(|| format!("producing to {}", self.a.to_topic))?;
        }
        self.sent(fi, partition).await;
        Ok(())
    }

    /// A record: its own key (unless `--key` picks one from the value), headers, timestamp
    /// and partition; a tombstone stays a tombstone.
    async fn send_record(&mut self, fi: usize, l: &Listed, r: Record) -> anyhow::Result<()> {
        let picked = match (&r.value, self.paths.is_empty()) {
            (Some(v), false) => key_of(v, &self.paths).map(String::into_bytes),
            _ => None,
        };
        let key = picked.or(r.key);
        let partition = self.partition(l, r.partition, key.as_deref());
        if r.value.is_none() {
            self.tombstones += 1;
        }
        if self.a.dry_run && self.a.show {
            crate::outln!(
                "partition {partition} offset {} key {} timestamp {} headers {} value {}",
                r.offset.map_or("-".into(), |o| o.to_string()),
                key.as_deref().map_or("-".into(), |k| String::from_utf8_lossy(k).into_owned()),
                r.timestamp.map_or("-".into(), |t| t.0.to_string()),
                r.headers.len(),
                r.value.as_ref().map_or("tombstone".into(), |v| format!("{} bytes", v.len()))
            );
        }
        if let Some(p) = self.producer {
            let mut headers = rdkafka::message::OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(rdkafka::message::Header { key: k, value: v.as_deref() });
            }
            let mut rec: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&self.a.to_topic, fi).partition(partition).headers(headers);
            if let Some(v) = &r.value {
                rec = rec.payload(&v[..]);
            }
            if let Some(k) = &key {
                rec = rec.key(&k[..]);
            }
            if let Some((ts, _)) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            crate::producer::send_blocking(p, rec).with_context(|| format!("producing to {}", self.a.to_topic))?;
        }
        self.sent(fi, partition).await;
        Ok(())
    }

    async fn sent(&mut self, fi: usize, partition: i32) {
        *self.per_partition.entry(partition).or_default() += 1;
        self.events += 1;
        self.sent_in_file[fi] += 1;
        if let Some(rate) = self.a.rate {
            if self.events % 100 == 0 {
                let due = Duration::from_secs_f64(self.events as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if self.events % 10_000 == 0 {
            self.bar.set_message(format!("{} events, {:.0} events/s", self.events, self.events as f64 / self.started.elapsed().as_secs_f64()));
        }
    }
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
