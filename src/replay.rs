//! Replay: backup files back into Kafka, keyed, into the right partitions, resumable and
//! rate-limited.
//!
//! Resuming sends nothing twice. Each record's delivery is acknowledged or refused per file and
//! line (the delivery opaque carries both), and the checkpoint file records, per backup file,
//! either that it is done or how far it got and which lines before that were not delivered.
//! It is written on every way out — success, a signal, a refused record, a failed read — after
//! waiting for the deliveries in flight, so that a rerun sends exactly what is missing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::config::KafkaConfig;
use crate::event_date::FieldValue;
use crate::listing::Listed;
use crate::partitioner::{java_hashcode_partition, murmur2_partition};
use crate::record::Record;
use crate::routing::find_fields;
use crate::storage::Storage;

pub mod restore;

/// How each event's target partition is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// The Kafka partition named in the file (or recorded with the record): exact.
    Same,
    /// The Java client's default for keyed records (librdkafka's `murmur2_random`).
    Murmur2,
    /// Samza's `abs(key.hashCode()) % partitions`, as Sunbird's dedup job placed events.
    JavaHashcode,
}

/// What to replay into where, and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub to_topic: String,
    pub partitioner: Partitioner,
    /// Fields (dotted paths) whose first present value becomes the key.
    pub key: Vec<String>,
    /// At most this many events per second.
    pub rate: Option<u64>,
    /// Count per target partition; send nothing, record nothing.
    pub dry_run: bool,
    /// Each partition's records in offset order across its files (record files only).
    pub offset_order: bool,
    pub checkpoint: PathBuf,
    /// Only records whose record timestamp (epoch ms) is in `[from, to)` (record files only).
    pub window: Window,
    /// A dry run's target that `--create-topic` would create: its partition count, as the
    /// topic is not there to ask.
    pub would_create_partitions: Option<i32>,
}

/// A window on record timestamps, epoch milliseconds: `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl Window {
    /// True when a bound is set.
    pub fn is_set(&self) -> bool {
        self.from.is_some() || self.to.is_some()
    }

    /// Whether a record with this timestamp is in the window (one without is in no window).
    pub fn holds(&self, timestamp: Option<i64>) -> bool {
        if !self.is_set() {
            return true;
        }
        timestamp.is_some_and(|t| self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|e| t < e))
    }
}

/// Reads a time bound: RFC 3339 (`2026-12-01T18:30:00Z`, `2026-12-02T00:00:00+05:30`) or epoch
/// milliseconds (`1796169600000`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|e| format!("{s}: {e}"));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{s}: not RFC 3339 (e.g. 2026-12-01T18:30:00Z or 2026-12-02T00:00:00+05:30) or epoch milliseconds ({e})"))
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Summary {
    pub events: u64,
    pub per_partition: BTreeMap<i32, u64>,
    pub tombstones: u64,
    /// Events without any of the key fields, spread round-robin.
    pub unkeyed: u64,
    /// Per source partition (as the files name it; -1 for none): records left out because
    /// their record timestamp is outside `--from-time/--to-time`.
    pub outside_window: BTreeMap<i32, u64>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The selection or options cannot work (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Stopped by a signal; progress is recorded (exit 130).
    #[error("interrupted after {events} events; progress is in {checkpoint}, run the same command again to resume")]
    Interrupted { events: u64, checkpoint: String },
    /// Anything else (exit 1); the message says what was recorded.
    #[error("{0}")]
    Failed(String),
    /// Writing the `--show` lines.
    #[error(transparent)]
    Output(#[from] std::io::Error),
}

/// How far one backup file got in earlier runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileProgress {
    Done,
    /// Lines below `next` were handled, except `resend`: refused, to be sent again.
    Partial {
        next: u64,
        resend: BTreeSet<u64>,
    },
}

/// Reads a checkpoint: one line per change, `<key>\tdone`, `<key>\t<next>` or
/// `<key>\t<next>\tresend=<line>,<line>,…`; the last line of a key wins. Lines it cannot read
/// are ignored (the file is then replayed from its start: never skipped by mistake).
pub fn parse_checkpoint(text: &str) -> HashMap<String, FileProgress> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let progress = match fields.as_slice() {
            [_, "done"] => Some(FileProgress::Done),
            [_, n] => n.parse().ok().map(|next| FileProgress::Partial { next, resend: BTreeSet::new() }),
            [_, n, resend] => match (n.parse(), resend.strip_prefix("resend=")) {
                (Ok(next), Some(list)) => list
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<BTreeSet<u64>, _>>()
                    .ok()
                    .map(|resend| FileProgress::Partial { next, resend }),
                _ => None,
            },
            _ => None,
        };
        if let Some(p) = progress {
            out.insert(fields[0].to_string(), p);
        }
    }
    out
}

/// One checkpoint line (without the newline).
pub fn checkpoint_line(key: &str, p: &FileProgress) -> String {
    match p {
        FileProgress::Done => format!("{key}\tdone"),
        FileProgress::Partial { next, resend } if resend.is_empty() => format!("{key}\t{next}"),
        FileProgress::Partial { next, resend } => {
            format!("{key}\t{next}\tresend={}", resend.iter().map(u64::to_string).collect::<Vec<_>>().join(","))
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

/// Per source partition, the records of `files` (record files) whose record time is in
/// `window`: what a restore of the window would miss without them.
pub async fn count_in_window(storage: &Storage, files: &[Listed], window: Window) -> Result<BTreeMap<i32, u64>, ReplayError> {
    let mut counts = BTreeMap::new();
    for l in files.iter().filter(|l| l.name.records) {
        let raw = read(storage, l).await?;
        for (i, line) in crate::seal::lines(&l.key, &raw).enumerate() {
            let line = line.map_err(|e| ReplayError::Failed(format!("{}: corrupt or truncated ({e})", l.key)))?;
            let r = decode_line(l, i, &line)?;
            if window.holds(r.timestamp.map(|t| t.0)) {
                *counts.entry(r.partition.or(l.kafka_partition).unwrap_or(-1)).or_default() += 1;
            }
        }
    }
    Ok(counts)
}

/// Checks the selection against the options and the target before anything is sent.
fn check(listed: &[Listed], opts: &Options, target_parts: i32) -> Result<(), ReplayError> {
    let usage = |m: String| Err(ReplayError::Usage(m));
    // Record files carry their keys; value files only have what --key finds in the value.
    let value_files = listed.iter().filter(|l| !l.name.records).count();
    if opts.partitioner != Partitioner::Same && opts.key.is_empty() && value_files > 0 {
        return usage(format!("--partitioner {:?} hashes the key: give --key (e.g. context.did,mid)", opts.partitioner).to_lowercase());
    }
    if opts.window.is_set() && value_files > 0 {
        return usage(format!(
            "--from-time/--to-time select records by their record time, which only record files (format = \"record\") keep: {value_files} selected file(s) hold values only"
        ));
    }
    if let Window { from: Some(f), to: Some(t) } = opts.window {
        if t <= f {
            return usage(format!("--to-time ({t}) must be after --from-time ({f}): the window is [from, to)"));
        }
    }
    if opts.offset_order && value_files > 0 {
        return usage(format!(
            "--offset-order needs record files (format = \"record\"): {value_files} selected file(s) hold values only, without offsets"
        ));
    }
    let old = listed.iter().filter(|l| l.kafka_partition.is_none()).count();
    if opts.partitioner == Partitioner::Same && old > 0 {
        return usage(format!(
            "{old} selected file(s) have old names without a Kafka partition; use --partitioner murmur2 or java-hashcode with --key"
        ));
    }
    if opts.partitioner == Partitioner::Same {
        if let Some(max) = listed.iter().filter_map(|l| l.kafka_partition).max() {
            if max >= target_parts {
                return usage(format!(
                    "{} has {target_parts} partitions but the files name partition {max}; --partitioner same needs at least {}",
                    opts.to_topic,
                    max + 1
                ));
            }
        }
    }
    Ok(())
}

/// A record the producer or the broker refused.
#[derive(Debug, Clone)]
struct Refusal {
    file: usize,
    line: u64,
    error: KafkaError,
}

/// Delivery reports, per file: acknowledged counts and the refused lines.
struct Ctx {
    acked: Vec<AtomicU64>,
    refused: Mutex<Vec<Refusal>>,
}

impl ClientContext for Ctx {}

/// The delivery opaque: file index and line, so a refusal names both.
fn opaque(file: usize, line: u64) -> usize {
    ((file as u64) << 32 | line) as usize
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (file, line) = ((opaque as u64 >> 32) as usize, opaque as u64 & 0xffff_ffff);
        match result {
            Ok(_) => {
                self.acked[file].fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => self.refused.lock().unwrap_or_else(|p| p.into_inner()).push(Refusal { file, line, error: e.clone() }),
        }
    }
}

/// `--offset-order`: how many records of a partition may be in flight before the sending waits
/// for their answers. A refusal found there halts the partition; a smaller barrier means fewer
/// records to send again after it, a larger one a faster restore.
const ORDER_BARRIER: usize = 1000;

/// How often (in events) finished files are looked for and recorded, and refusals noticed.
const PROGRESS_EVERY: u64 = 20_000;
/// How long the deliveries in flight are waited for before progress is recorded.
const FLUSH_WAIT: Duration = Duration::from_secs(300);

/// Replays `listed` (in its order) from `storage` into `opts.to_topic`. `stop` set (by a signal)
/// ends it after recording progress. `show`, in a dry run of record files, gets one line per
/// record that would be sent.
pub async fn replay(
    storage: &Storage,
    listed: &[Listed],
    kafka: &KafkaConfig,
    opts: &Options,
    stop: Arc<AtomicBool>,
    show: Option<&mut dyn Write>,
) -> Result<Summary, ReplayError> {
    // Usage mistakes before any broker is asked; the target's partition count is checked below.
    check(listed, opts, i32::MAX)?;
    let target_parts = crate::consumer::lookup_partition_count(kafka, &opts.to_topic)
        .await
        .map_err(|e| ReplayError::Failed(e.to_string()))?
        .or(opts.would_create_partitions.filter(|_| opts.dry_run))
        .ok_or_else(|| ReplayError::Failed(format!("topic {} not found on {}", opts.to_topic, kafka.brokers)))?;
    check(listed, opts, target_parts)?;

    let earlier = if opts.dry_run { HashMap::new() } else { parse_checkpoint(&std::fs::read_to_string(&opts.checkpoint).unwrap_or_default()) };
    let todo: Vec<&Listed> = listed.iter().filter(|l| earlier.get(&l.key) != Some(&FileProgress::Done)).collect();
    if todo.len() < listed.len() || !earlier.is_empty() {
        tracing::info!("resuming: {} of {} file(s) already replayed (per {})", listed.len() - todo.len(), listed.len(), opts.checkpoint.display());
    }
    let before: Vec<(u64, BTreeSet<u64>)> = todo
        .iter()
        .map(|l| match earlier.get(&l.key) {
            Some(FileProgress::Partial { next, resend }) => (*next, resend.clone()),
            _ => (0, BTreeSet::new()),
        })
        .collect();
    let (producer, checkpoint) = if opts.dry_run {
        (None, None)
    } else {
        let producer = crate::consumer::client_config(
            kafka,
            crate::consumer::Role::Producer,
            &[("linger.ms", "20"), ("batch.size", "1000000"), ("compression.type", "lz4"), ("queue.buffering.max.kbytes", "262144")],
        )
        // Idempotence is what makes a resumed replay send nothing twice: not negotiable.
        .set("enable.idempotence", "true")
        .create_with_context(Ctx { acked: (0..todo.len()).map(|_| AtomicU64::new(0)).collect(), refused: Mutex::new(Vec::new()) })
        .map_err(|e| ReplayError::Usage(format!("kafka.properties: {}", crate::consumer::refusal(&e, kafka))))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&opts.checkpoint)
            .map_err(|e| ReplayError::Failed(format!("opening {}: {e}", opts.checkpoint.display())))?;
        (Some(producer), Some(file))
    };
    let total: u64 = todo.iter().map(|l| l.size).sum();
    let mut r = Replay {
        opts,
        producer,
        checkpoint,
        keys: todo.iter().map(|l| l.key.clone()).collect(),
        paths: opts.key.iter().map(|k| k.split('.').map(String::from).collect()).collect(),
        target_parts,
        stop,
        show,
        started: Instant::now(),
        pacer: opts.rate.map(Pacer::new),
        summary: Summary::default(),
        rr: 0,
        before,
        reached: vec![0; todo.len()],
        sent: vec![0; todo.len()],
        complete: vec![false; todo.len()],
        rewind: HashMap::new(),
        recorded_done: vec![false; todo.len()],
        bar: crate::progress::Progress::new(
            total,
            "{spinner} {bytes}/{total_bytes} stored bytes, {msg} [{elapsed_precise}, ETA {eta}]",
            "stored bytes",
        ),
    };
    let sent = if opts.offset_order { r.send_by_offset(storage, &todo).await } else { r.send_in_file_order(storage, &todo).await };
    // Whatever ended the sending, what was acknowledged is recorded before returning.
    let recorded = r.record();
    r.bar.finish();
    let saved = format!("everything acknowledged is recorded in {}: a rerun sends only what is missing", opts.checkpoint.display());
    match (sent, recorded) {
        (Ok(()), Ok(())) => match r.refusals_error() {
            Some(ReplayError::Failed(m)) => Err(ReplayError::Failed(format!("{m}; {saved}"))),
            Some(e) => Err(e),
            None => {
                r.summary.elapsed = r.started.elapsed();
                Ok(r.summary)
            }
        },
        (Err(ReplayError::Failed(m)), Ok(())) if !opts.dry_run => Err(ReplayError::Failed(format!("{m}; {saved}"))),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Err(e)) => Err(e),
        (Err(e), Err(rec)) => Err(ReplayError::Failed(format!("{e}; {rec}"))),
    }
}

/// Spaces sends `1 / rate` apart: never more than the rate in any second, however the sends
/// before went (a pause is not made up by a burst). Before, a hundred were sent at once and then
/// the rate's pause taken in one piece.
#[derive(Debug)]
struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    fn new(rate: u64) -> Pacer {
        Pacer { interval: Duration::from_secs_f64(1.0 / rate.max(1) as f64), next: None }
    }

    /// How long the next send must wait at `now`.
    fn wait(&mut self, now: Instant) -> Duration {
        let at = self.next.map_or(now, |n| n.max(now));
        self.next = Some(at + self.interval);
        at - now
    }
}

/// One replay's state: per file (index into the files to do) what this run reached.
struct Replay<'a, 'w> {
    opts: &'a Options,
    /// None in a dry run; its context holds the delivery reports.
    producer: Option<ThreadedProducer<Ctx>>,
    checkpoint: Option<std::fs::File>,
    /// The files to do, by index.
    keys: Vec<String>,
    paths: Vec<Vec<String>>,
    target_parts: i32,
    stop: Arc<AtomicBool>,
    show: Option<&'w mut dyn Write>,
    started: Instant,
    /// `--rate`: spaces the sends.
    pacer: Option<Pacer>,
    summary: Summary,
    rr: i32,
    /// From the checkpoint: (next, resend) per file.
    before: Vec<(u64, BTreeSet<u64>)>,
    /// One past the last line handed to the producer in this run (0: none).
    reached: Vec<u64>,
    /// Records handed to the producer in this run.
    sent: Vec<u64>,
    /// Every line of the file was read and handled in this run.
    complete: Vec<bool>,
    /// `--offset-order` after a refusal: per file of the halted partition, the first line at or
    /// past the refused offset. A rerun sends from there, in order, the records after the refused
    /// one that were already delivered included, so a key's newest value still lands last.
    rewind: HashMap<usize, u64>,
    recorded_done: Vec<bool>,
    bar: crate::progress::Progress,
}

/// A line of a file, decoded as far as the file's format says.
enum Item<'l> {
    Value(&'l [u8]),
    Record(Record),
}

impl Replay<'_, '_> {
    fn wanted(&self, fi: usize, line: u64) -> bool {
        let (next, resend) = &self.before[fi];
        line >= *next || resend.contains(&line)
    }

    async fn send_in_file_order(&mut self, storage: &Storage, todo: &[&Listed]) -> Result<(), ReplayError> {
        for (fi, l) in todo.iter().enumerate() {
            let raw = read(storage, l).await?;
            for (i, line) in crate::seal::lines(&l.key, &raw).enumerate() {
                let line = line
                    .map_err(|e| ReplayError::Failed(format!("{}: corrupt or truncated ({e}); not recorded as done, rerun to resend it", l.key)))?;
                if !self.wanted(fi, i as u64) {
                    continue;
                }
                let item = if l.name.records { Item::Record(decode_line(l, i, &line)?) } else { Item::Value(&line) };
                if let Item::Record(r) = &item {
                    if !self.in_window(l, r) {
                        continue;
                    }
                }
                self.send(fi, l, i as u64, item).await?;
            }
            self.complete[fi] = true;
            self.bar.inc(l.size);
        }
        Ok(())
    }

    /// One partition at a time: its files' records, merged by offset. Each file holds
    /// ascending offsets, so each file is still sent in its own line order.
    async fn send_by_offset(&mut self, storage: &Storage, todo: &[&Listed]) -> Result<(), ReplayError> {
        let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (fi, l) in todo.iter().enumerate() {
            by_partition.entry(l.kafka_partition.unwrap_or(-1)).or_default().push(fi);
        }
        for files in by_partition.values() {
            self.send_partition_by_offset(storage, todo, files).await?;
        }
        Ok(())
    }

    /// One partition's records by offset, with a barrier every [`ORDER_BARRIER`] records: the
    /// deliveries so far are awaited, and a refusal halts the partition (see `rewind`).
    async fn send_partition_by_offset(&mut self, storage: &Storage, todo: &[&Listed], files: &[usize]) -> Result<(), ReplayError> {
        let mut all: Vec<(i64, usize, u64, Record)> = Vec::new();
        let mut left: HashMap<usize, u64> = HashMap::new();
        for &fi in files {
            let l = todo[fi];
            let raw = read(storage, l).await?;
            let mut n = 0;
            for (i, line) in crate::seal::lines(&l.key, &raw).enumerate() {
                let line = line
                    .map_err(|e| ReplayError::Failed(format!("{}: corrupt or truncated ({e}); not recorded as done, rerun to resend it", l.key)))?;
                if self.wanted(fi, i as u64) {
                    let r = decode_line(l, i, &line)?;
                    if self.in_window(l, &r) {
                        all.push((r.offset.unwrap_or(i64::MAX), fi, i as u64, r));
                        n += 1;
                    }
                }
            }
            left.insert(fi, n);
            self.complete[fi] = n == 0;
            self.bar.inc(l.size);
        }
        // Stable: equal offsets (none, in a healthy backup) keep file order.
        all.sort_by_key(|(o, ..)| *o);
        let order: Vec<(i64, usize, u64)> = all.iter().map(|(o, fi, i, _)| (*o, *fi, *i)).collect();
        for (n_sent, (_, fi, i, r)) in all.into_iter().enumerate() {
            let sent = self.send(fi, todo[fi], i, Item::Record(r)).await;
            let barrier = (n_sent + 1) % ORDER_BARRIER == 0 || n_sent + 1 == order.len();
            if sent.is_err() || barrier {
                if let Some(e) = self.halt_on_refusal(&order) {
                    return Err(e);
                }
            }
            sent?;
            let n = left.get_mut(&fi).expect("counted");
            *n -= 1;
            self.complete[fi] = *n == 0;
        }
        // The partition passed its last barrier: its files are done.
        self.record_done()
    }

    /// After the partition's deliveries so far are answered: if any record of it was refused,
    /// the partition halts at the lowest refused offset (`rewind`) and the replay stops.
    fn halt_on_refusal(&mut self, order: &[(i64, usize, u64)]) -> Option<ReplayError> {
        let p = self.producer.as_ref()?;
        // Every record handed over is acknowledged or refused once this returns.
        let _ = p.flush(FLUSH_WAIT);
        let refused = self.refused();
        if refused.is_empty() {
            // The common case, at every barrier: no index of the partition's records is built.
            return None;
        }
        let at: HashMap<(usize, u64), i64> = order.iter().map(|(o, fi, i)| ((*fi, *i), *o)).collect();
        let lowest = refused.iter().filter_map(|r| at.get(&(r.file, r.line)).copied()).min()?;
        for (o, fi, i) in order {
            if *o >= lowest {
                self.rewind.entry(*fi).or_insert(*i);
            }
        }
        let e = self.refusals_error()?;
        Some(match e {
            ReplayError::Failed(m) => ReplayError::Failed(format!(
                "{m}; --offset-order: the partition halted at offset {lowest}; the rerun sends from there in order, records after it that were already delivered included, so each key's newest value lands last"
            )),
            other => other,
        })
    }

    /// Whether a record is in `--from-time/--to-time`; one left out is counted by partition.
    fn in_window(&mut self, l: &Listed, r: &Record) -> bool {
        let holds = self.opts.window.holds(r.timestamp.map(|t| t.0));
        if !holds {
            *self.summary.outside_window.entry(r.partition.or(l.kafka_partition).unwrap_or(-1)).or_default() += 1;
        }
        holds
    }

    fn partition(&mut self, l: &Listed, recorded: Option<i32>, key: Option<&[u8]>) -> i32 {
        match (self.opts.partitioner, key) {
            (Partitioner::Same, _) => recorded.or(l.kafka_partition).expect("checked: new names only"),
            (Partitioner::Murmur2, Some(k)) => murmur2_partition(k, self.target_parts),
            (Partitioner::JavaHashcode, Some(k)) => java_hashcode_partition(&String::from_utf8_lossy(k), self.target_parts),
            (_, None) => {
                // No key at all: spread evenly, as an unkeyed producer would.
                self.summary.unkeyed += 1;
                self.rr = (self.rr + 1) % self.target_parts;
                self.rr
            }
        }
    }

    /// Sends one line: a value keyed by the key fields, or a record with its own key (unless
    /// the key fields pick one from its value), headers, timestamp and partition.
    async fn send(&mut self, fi: usize, l: &Listed, line: u64, item: Item<'_>) -> Result<(), ReplayError> {
        let (key, value, headers, timestamp, recorded, offset) = match item {
            Item::Value(v) => {
                let key = if self.paths.is_empty() { None } else { key_of(v, &self.paths).map(String::into_bytes) };
                (key, Some(v.to_vec()), Vec::new(), None, None, None)
            }
            Item::Record(r) => {
                let picked = match (&r.value, self.paths.is_empty()) {
                    (Some(v), false) => key_of(v, &self.paths).map(String::into_bytes),
                    _ => None,
                };
                (picked.or(r.key), r.value, r.headers, r.timestamp.map(|t| t.0), r.partition, r.offset)
            }
        };
        // `--rate`: wait for this record's turn, in slices, so that a signal is heard.
        if let Some(pacer) = &mut self.pacer {
            let until = Instant::now() + pacer.wait(Instant::now());
            while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(ReplayError::Interrupted { events: self.summary.events, checkpoint: self.opts.checkpoint.display().to_string() });
                }
                tokio::time::sleep(left.min(Duration::from_millis(50))).await;
            }
        }
        let partition = self.partition(l, recorded, key.as_deref());
        if value.is_none() {
            self.summary.tombstones += 1;
        }
        if let Some(out) = self.show.as_deref_mut() {
            writeln!(
                out,
                "partition {partition} offset {} key {} timestamp {} headers {} value {}",
                offset.map_or("-".into(), |o| o.to_string()),
                key.as_deref().map_or("-".into(), |k| String::from_utf8_lossy(k).into_owned()),
                timestamp.map_or("-".into(), |t| t.to_string()),
                headers.len(),
                value.as_ref().map_or("tombstone".into(), |v| format!("{} bytes", v.len()))
            )?;
        }
        if let Some(p) = &self.producer {
            let mut h = rdkafka::message::OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in &headers {
                h = h.insert(rdkafka::message::Header { key: k, value: v.as_deref() });
            }
            let mut rec: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&self.opts.to_topic, opaque(fi, line)).partition(partition);
            if !headers.is_empty() {
                rec = rec.headers(h);
            }
            if let Some(v) = &value {
                rec = rec.payload(&v[..]);
            }
            if let Some(k) = &key {
                rec = rec.key(&k[..]);
            }
            if let Some(ts) = timestamp {
                rec = rec.timestamp(ts);
            }
            if let Err(e) = crate::producer::send_blocking(p, rec) {
                return Err(ReplayError::Failed(refused_text(&self.opts.to_topic, l, line, offset, &e)));
            }
        }
        self.reached[fi] = self.reached[fi].max(line + 1);
        self.sent[fi] += 1;
        *self.summary.per_partition.entry(partition).or_default() += 1;
        self.summary.events += 1;
        let events = self.summary.events;
        if events % 10_000 == 0 {
            self.bar.set_message(format!("{events} events, {:.0} events/s", events as f64 / self.started.elapsed().as_secs_f64()));
        }
        if events % PROGRESS_EVERY == 0 {
            if let Some(e) = self.refusals_error() {
                return Err(e);
            }
            // In offset order a file is done only past a barrier with no refusal before it
            // (a later refusal of a lower offset sends its records again).
            if !self.opts.offset_order {
                self.record_done()?;
            }
        }
        if self.stop.load(Ordering::Relaxed) {
            return Err(ReplayError::Interrupted { events, checkpoint: self.opts.checkpoint.display().to_string() });
        }
        Ok(())
    }

    /// The records refused so far.
    fn refused(&self) -> Vec<Refusal> {
        match &self.producer {
            Some(p) => p.context().refused.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            None => Vec::new(),
        }
    }

    /// Stops the sending once a record was refused (the rest would be sent for nothing if the
    /// cause is the target's; it is recorded either way).
    fn refusals_error(&self) -> Option<ReplayError> {
        let refused = self.refused();
        let first = refused.first()?;
        Some(ReplayError::Failed(format!(
            "{} record(s) were refused, first {}",
            refused.len(),
            first_refusal(&self.opts.to_topic, first, &self.keys[first.file])
        )))
    }

    /// Records the files complete and fully acknowledged as done, as the replay goes on.
    fn record_done(&mut self) -> Result<(), ReplayError> {
        let (Some(p), Some(f)) = (&self.producer, self.checkpoint.as_mut()) else { return Ok(()) };
        let mut lines = String::new();
        for fi in 0..self.keys.len() {
            if !self.recorded_done[fi] && done(p.context(), fi, self.complete[fi], self.sent[fi]) {
                self.recorded_done[fi] = true;
                lines.push_str(&checkpoint_line(&self.keys[fi], &FileProgress::Done));
                lines.push('\n');
            }
        }
        if lines.is_empty() {
            return Ok(());
        }
        append(f, &self.opts.checkpoint, &lines)
    }

    /// After the sending ended (however): waits for the deliveries in flight, then records each
    /// touched file as done or as how far it got with the lines to send again.
    fn record(&mut self) -> Result<(), ReplayError> {
        let (Some(p), Some(f)) = (&self.producer, self.checkpoint.as_mut()) else { return Ok(()) };
        if let Err(e) = p.flush(FLUSH_WAIT) {
            return Err(ReplayError::Failed(format!(
                "deliveries still unanswered after {} s ({}): progress of the files being sent is not recorded, a rerun sends them again from where the checkpoint {} says",
                FLUSH_WAIT.as_secs(),
                crate::consumer::kafka_error_text(&e),
                self.opts.checkpoint.display()
            )));
        }
        let refused = p.context().refused.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut lines = String::new();
        for fi in 0..self.keys.len() {
            if self.recorded_done[fi] || (self.sent[fi] == 0 && !self.complete[fi] && !self.rewind.contains_key(&fi)) {
                continue;
            }
            let refused_here: BTreeSet<u64> = refused.iter().filter(|r| r.file == fi).map(|r| r.line).collect();
            let progress = if let Some(&from) = self.rewind.get(&fi) {
                // Everything below it was acknowledged (the barrier waited for it).
                FileProgress::Partial { next: from, resend: BTreeSet::new() }
            } else if done(p.context(), fi, self.complete[fi], self.sent[fi]) {
                FileProgress::Done
            } else {
                let (next, resend) = &self.before[fi];
                let reached = self.reached[fi];
                // Lines to send again: those of earlier runs this run did not reach, and those
                // refused now.
                let resend = resend.iter().copied().filter(|&r| r >= reached).chain(refused_here).collect();
                FileProgress::Partial { next: (*next).max(reached), resend }
            };
            if progress == FileProgress::Done {
                self.recorded_done[fi] = true;
            }
            lines.push_str(&checkpoint_line(&self.keys[fi], &progress));
            lines.push('\n');
        }
        append(f, &self.opts.checkpoint, &lines)
    }
}

/// A file is done when every line was handled and every record sent of it was acknowledged
/// (a refused record is never acknowledged, so this also means none was refused).
fn done(ctx: &Ctx, fi: usize, complete: bool, sent: u64) -> bool {
    complete && ctx.acked[fi].load(Ordering::Relaxed) == sent
}

/// Appends checkpoint lines and makes them durable.
fn append(f: &mut std::fs::File, path: &std::path::Path, lines: &str) -> Result<(), ReplayError> {
    f.write_all(lines.as_bytes())
        .and_then(|()| f.sync_data())
        .map_err(|e| ReplayError::Failed(format!("recording progress in {}: {e}", path.display())))
}

async fn read(storage: &Storage, l: &Listed) -> Result<bytes::Bytes, ReplayError> {
    storage.read(&l.key).await.map_err(|e| ReplayError::Failed(format!("reading {}: {e}", l.key)))
}

fn decode_line(l: &Listed, i: usize, line: &[u8]) -> Result<Record, ReplayError> {
    crate::record::decode(line).map_err(|e| ReplayError::Failed(format!("{} line {}: {e}; not recorded as done", l.key, i + 1)))
}

/// What to change when a record is too large, or nothing.
fn hint(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
            " (the record is larger than the producer's message.max.bytes, which [kafka.properties] sets, or the target topic's max.message.bytes, which kafka-configs --alter raises)"
        }
        _ => "",
    }
}

fn refused_text(topic: &str, l: &Listed, line: u64, offset: Option<i64>, e: &KafkaError) -> String {
    let at = offset.map_or(String::new(), |o| format!(", offset {o}"));
    format!("producing {} line {}{at} to {topic}: {}{}", l.key, line + 1, crate::consumer::kafka_error_text(e), hint(e))
}

fn first_refusal(topic: &str, r: &Refusal, key: &str) -> String {
    format!("{key} line {} by {topic}: {}{}", r.line + 1, crate::consumer::kafka_error_text(&r.error), hint(&r.error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_never_exceeds_the_rate_in_any_second() {
        for rate in [1u64, 5, 7, 100, 1000] {
            let mut p = Pacer::new(rate);
            let t0 = Instant::now();
            let mut now = t0;
            let mut sent = Vec::new();
            for i in 0..(rate * 5) {
                // The caller is slow at times (a pause of 3 s after the first tenth): no burst after.
                if i == rate / 2 {
                    now += Duration::from_secs(3);
                }
                now += p.wait(now);
                sent.push(now - t0);
            }
            for (i, at) in sent.iter().enumerate() {
                let in_second = sent[i..].iter().take_while(|b| **b < *at + Duration::from_secs(1)).count() as u64;
                assert!(in_second <= rate, "rate {rate}: {in_second} sends in the second from {at:?}");
            }
            assert!(sent.last().unwrap() < &Duration::from_secs(9), "rate {rate}: kept up ({:?})", sent.last());
        }
    }

    #[test]
    fn checkpoint_lines_round_trip() {
        let cases = [
            ("raw/2020-02-01-0-1.json", FileProgress::Done),
            ("raw/2020-02-01-0-2.json", FileProgress::Partial { next: 31, resend: BTreeSet::new() }),
            ("raw/2020-02-01-0-3.json", FileProgress::Partial { next: 42, resend: BTreeSet::from([31, 35]) }),
        ];
        let text: String = cases.iter().map(|(k, p)| checkpoint_line(k, p) + "\n").collect();
        let read = parse_checkpoint(&text);
        for (k, p) in &cases {
            assert_eq!(read.get(*k), Some(p), "{text}");
        }
    }

    #[test]
    fn the_last_line_of_a_key_wins_and_unreadable_lines_are_ignored() {
        let text = "a\t5\na\tdone\nb\t7\tresend=1\nb\t9\nc\tdone?\nd\t3\tresend=x\ne\n";
        let read = parse_checkpoint(text);
        assert_eq!(read["a"], FileProgress::Done);
        assert_eq!(read["b"], FileProgress::Partial { next: 9, resend: BTreeSet::new() });
        assert!(!read.contains_key("c") && !read.contains_key("d") && !read.contains_key("e"), "{read:?}");
    }

    #[test]
    fn opaque_carries_file_and_line() {
        let o = opaque(7, 123_456);
        assert_eq!(((o as u64 >> 32) as usize, o as u64 & 0xffff_ffff), (7, 123_456));
    }

    #[test]
    fn a_window_holds_from_inclusive_to_exclusive() {
        let w = Window { from: Some(100), to: Some(200) };
        assert!(!w.holds(Some(99)) && w.holds(Some(100)) && w.holds(Some(199)) && !w.holds(Some(200)));
        assert!(!w.holds(None), "a record without a time is in no window");
        assert!(Window::default().holds(None), "no window: everything");
        assert!(Window { from: None, to: Some(5) }.holds(Some(-3)));
        assert!(Window { from: Some(5), to: None }.holds(Some(i64::MAX)));
    }

    #[test]
    fn time_bounds_read_rfc3339_and_epoch_millis() {
        assert_eq!(parse_time("1796169600000"), Ok(1_796_169_600_000));
        assert_eq!(parse_time("2026-12-01T18:30:00Z"), Ok(1_796_149_800_000));
        assert_eq!(parse_time("2026-12-02T00:00:00+05:30"), Ok(1_796_149_800_000));
        assert_eq!(parse_time("2026-12-01T18:30:00.250Z"), Ok(1_796_149_800_250));
        let e = parse_time("2026-12-01").unwrap_err();
        assert!(e.contains("RFC 3339") && e.contains("epoch milliseconds"), "{e}");
    }
}
