//! Audits one topic's backups against what Kafka still retains (the I/O around [`Tally`]).
//!
//! Per partition: every retained message is routed exactly as the writer routes it (so its
//! expected date and directory come from the writer's rule, not from a fresh parse of the
//! stored copy), then every backup file of the partition is read, and the files whose names
//! carry no partition (old `<date>-<ts>` names, or a pattern without `{kafkaPartition}`) are
//! read for every partition. Anything that is not proven backed up exactly once makes the
//! result not clean: missing, doubled, misplaced or unverifiable lines, offsets Kafka deleted
//! before the group committed them, a group that never committed, unreadable files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use xxhash_rust::xxh3::xxh3_64;

use super::{fingerprint, Place, Report, Tally};
use crate::config::Config;
use crate::consumer::Diagnosing;
use crate::listing::request::Backup;
use crate::listing::{Listed, Selection};
use crate::naming::FileLayout;
use crate::progress::Progress;
use crate::routing::{extract, DateSource, Placement, Route, Router};
use crate::storage::Storage;

/// What to audit.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub topic: String,
    /// Only events dated in these days (inclusive; the `invalid_date` bucket always).
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Only these partitions (checked against the topic's count).
    pub partitions: Option<BTreeSet<i32>>,
    /// (index, count): one of `count` contiguous shards of the partitions.
    pub shard: Option<(u32, u32)>,
    /// Require every retained message up to the end, not only up to the committed offset.
    pub to_end: bool,
    /// Go on past files that cannot be read to the end (they make the result not clean).
    pub skip_corrupt: bool,
    /// How old the oldest message above the group's commit may be (default: the topic's
    /// `max_file_age_secs` plus `completion_grace_secs`) before the partition is not clean.
    pub max_lag: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The options or the config cannot work (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The audit could not be done (exit 1).
    #[error("{0}")]
    Failed(String),
    /// Reporting a partition.
    #[error(transparent)]
    Output(#[from] std::io::Error),
}

fn failed(what: impl std::fmt::Display) -> AuditError {
    AuditError::Failed(what.to_string())
}

/// One partition's verdict.
#[derive(Debug, serde::Serialize)]
pub struct PartitionAudit {
    pub topic: String,
    pub partition: i32,
    pub low: i64,
    pub committed: Option<i64>,
    pub high: i64,
    pub clean: bool,
    #[serde(flatten)]
    pub report: Report,
}

/// The whole audit's verdict.
#[derive(Debug)]
pub struct TopicAudit {
    pub topic: String,
    /// Partitions audited, of `count`.
    pub partitions: usize,
    pub count: i32,
    /// The partitions' reports added up (files without a partition counted once).
    pub total: Report,
    /// Files without a Kafka partition in their name (strays included).
    pub unpartitioned_files: usize,
    /// Objects under an audited date that are not backup files.
    pub strays: Vec<String>,
    /// Lines of files without a partition that no audited partition claimed.
    pub unclaimed: u64,
    /// Problems found: partitions not clean, unclaimed lines (all partitions audited), strays.
    pub problems: usize,
}

impl TopicAudit {
    pub fn all_partitions(&self) -> bool {
        self.partitions as i32 == self.count
    }
}

/// A route's (prefix, error bucket, date).
type RouteKey = (Option<Arc<str>>, bool, Arc<str>);

/// Interns (directory, date) pairs so that each line's place is one integer.
#[derive(Default)]
struct Places {
    ids: HashMap<(String, String), Place>,
    /// Routes already interned, with their date read back, so the hot Kafka loop allocates and
    /// parses nothing per message.
    routes: HashMap<RouteKey, (Place, Option<NaiveDate>)>,
}

impl Places {
    fn id(&mut self, dir: &str, date: &str) -> Place {
        let n = self.ids.len() as Place;
        *self.ids.entry((dir.to_string(), date.to_string())).or_insert(n)
    }

    /// Where the writer puts a message with this route, and the route's day (`None` if its date
    /// string is not one, e.g. an `invalid_date` in another form).
    fn of_placement(&mut self, layout: &FileLayout, p: &Placement) -> Place {
        self.id(&layout.dir(p.prefix.as_deref(), p.to_error_path), &p.date)
    }

    fn of_route(&mut self, layout: &FileLayout, r: &Route) -> (Place, Option<NaiveDate>) {
        let key = (r.prefix.clone(), r.to_error_path, r.date.clone());
        if let Some(found) = self.routes.get(&key) {
            return *found;
        }
        let id = self.id(&layout.dir(r.prefix.as_deref(), r.to_error_path), &r.date);
        let day = layout.dates().leading_date(&r.date);
        self.routes.insert(key, (id, day));
        (id, day)
    }

    /// Where a stored file is.
    fn of_file(&mut self, layout: &FileLayout, l: &Listed) -> Place {
        match layout.place_of(&l.key) {
            Some((dir, date)) => self.id(&dir, &date),
            // A stray: where it lies, under its date.
            None => self.id(l.key.rsplit_once('/').map_or("", |(d, _)| d), &layout.dates().format(l.name.date)),
        }
    }
}

/// Audits the selected partitions of `opts.topic`, handing each partition's verdict to
/// `report` as soon as it is known (with the progress bar out of the way).
pub async fn audit(
    config: &Config,
    opts: &Options,
    mut report: impl FnMut(&PartitionAudit) -> Result<(), AuditError>,
) -> Result<TopicAudit, AuditError> {
    let usage = AuditError::Usage;
    let (index, topic) = config
        .topics
        .iter()
        .enumerate()
        .find(|(_, t)| t.name == opts.topic)
        .ok_or_else(|| usage(format!("topic `{}` is not in the config", opts.topic)))?;
    if let (Some(f), Some(t)) = (opts.from, opts.to) {
        Selection::new(f, t).map_err(|e| usage(e.to_string()))?;
    }
    if let Some((i, n)) = opts.shard {
        if n == 0 {
            return Err(usage("--shards must be at least 1".into()));
        }
        if i >= n {
            return Err(usage(format!("shard index {i} is not below --shards {n}")));
        }
    }
    let router = Router::new(topic, index).map_err(|e| usage(e.to_string()))?;
    let Backup { storage, layout, invalid_date, .. } = Backup::of_topic(config, &topic.name).map_err(|e| usage(e.to_string()))?;
    let from = opts.from.unwrap_or(NaiveDate::MIN);
    let to = opts.to.unwrap_or(NaiveDate::MAX);
    // Files without a date (offset folders) may hold events of any date.
    let in_range = |d: NaiveDate| (d >= from && d <= to) || d == invalid_date || d == crate::naming::UNDATED;

    // Every backup file of the topic in the dates audited (the invalid bucket always), grouped
    // by the partition in its name.
    let everything = Selection::new(NaiveDate::MIN, NaiveDate::MAX).map_err(failed)?;
    let all = crate::listing::list(&storage, &layout, &everything)
        .await
        .map_err(|e| failed(format!("listing {} in {}: {e}", layout.dirs().join(", "), storage.describe)))?;
    let mut files: BTreeMap<i32, Vec<Listed>> = BTreeMap::new();
    let mut unpartitioned: Vec<Listed> = Vec::new();
    for l in all.files.into_iter().filter(|l| in_range(l.name.date)) {
        match l.kafka_partition {
            Some(p) => files.entry(p).or_default().push(l),
            None => unpartitioned.push(l),
        }
    }
    // Objects a date-prefix reader reads although they are not backup files (a copy, a staging
    // or temporary name): read like files without a partition, and never clean.
    let strays: Vec<String> = all.strays.iter().filter(|l| in_range(l.name.date)).map(|l| l.key.clone()).collect();
    unpartitioned.extend(all.strays.into_iter().filter(|l| in_range(l.name.date)));

    // Partitions, watermarks and the group's committed offsets.
    let kafka = &config.kafka;
    let name = topic.name.clone();
    let consumer = {
        let mut c = crate::consumer::client_config(kafka, crate::consumer::Role::Reader, &[]);
        // The group only names whose committed offsets are read; verify never joins or commits.
        c.set("group.id", &kafka.group_id).set("enable.auto.commit", "false").set("enable.partition.eof", "true");
        crate::consumer::Closing::<Diagnosing>::new(crate::consumer::create_client(&c, Diagnosing::default()).map_err(failed)?)
    };
    let md = crate::consumer::with_reason(&consumer, |c| crate::consumer::fetch_metadata(c, Some(&name), Duration::from_secs(30)))
        .map_err(|e| failed(format!("reading metadata from {}: {e}", kafka.brokers)))?;
    let count = md.topics().first().filter(|t| t.error().is_none()).map(|t| t.partitions().len()).unwrap_or(0) as i32;
    if count == 0 {
        return Err(failed(format!("topic {name} not found on {}", kafka.brokers)));
    }
    let selected: Vec<i32> = match &opts.partitions {
        Some(set) => {
            crate::listing::check_partitions(&name, set, count).map_err(|e| usage(e.to_string()))?;
            set.iter().copied().collect()
        }
        None => match opts.shard {
            Some((i, n)) => crate::listing::shard(count, i, n).collect(),
            None => (0..count).collect(),
        },
    };
    if let Some((i, n)) = opts.shard {
        tracing::info!("shard {i} of {n}: partitions {:?} of {count}", selected.first().zip(selected.last()).map(|(a, b)| a..=b));
    }
    if let Some(p) = files.keys().find(|p| **p >= count) {
        // Files named for a partition the topic does not have: nobody audits them.
        return Err(failed(format!("{} file(s) are named for partition {p}, which topic {name} does not have (it has {count})", files[p].len())));
    }
    let mut tpl = TopicPartitionList::new();
    for p in &selected {
        tpl.add_partition(&name, *p);
    }
    let committed = crate::consumer::with_reason(&consumer, |c| c.committed_offsets(tpl, Duration::from_secs(30))).map_err(failed)?;

    let records = topic.format == crate::config::Format::Record;
    // A writer that works commits within a file's age; the grace covers a slow day.
    let max_lag = opts.max_lag.unwrap_or(Duration::from_secs(topic.max_file_age_secs + topic.completion_grace_secs));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut scratch = Vec::new();
    let mut bar = Progress::new(selected.len() as u64, "{spinner} verify {pos}/{len} partitions {msg} [{elapsed_precise}]", "partitions");
    let mut places = Places::default();
    // Per unpartitioned file, which of its lines some partition claimed.
    let mut claimed: Vec<Vec<bool>> = unpartitioned.iter().map(|_| Vec::new()).collect();
    let mut problems = 0;
    let mut total = Report::default();
    for &p in &selected {
        let (low, high) =
            consumer.fetch_watermarks(&name, p, Duration::from_secs(30)).map_err(|e| failed(format!("reading {name}/{p}'s offsets: {e}")))?;
        let c = match committed.find_partition(&name, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        let required_below = if opts.to_end { high } else { c.unwrap_or(low) };
        let mut tally = Tally::default();
        // The partition's completion markers of the dates audited: what Kafka must not refute.
        let marker_dates: BTreeSet<NaiveDate> = match (opts.from, opts.to) {
            (Some(f), Some(t)) if (t - f).num_days() <= 366 => f.iter_days().take_while(|d| *d <= t).collect(),
            _ => files.get(&p).map(|fs| fs.iter().map(|l| l.name.date).filter(|d| *d != invalid_date).collect()).unwrap_or_default(),
        };
        let mut markers: BTreeMap<NaiveDate, crate::completion::Marker> = BTreeMap::new();
        if topic.markers() {
            for d in &marker_dates {
                let date_str = layout.dates().format(*d);
                let found =
                    crate::completion::read::newest(storage.store.as_ref(), &layout.marker_path(), &date_str, Some(p)).await.map_err(failed)?;
                if let Some(m) = found.into_values().next() {
                    markers.insert(*d, m);
                }
            }
        }
        // Per marked date: Kafka's retained messages of it below the marker's bound.
        let mut kafka_below: BTreeMap<NaiveDate, u64> = BTreeMap::new();
        // The record time of the oldest message the group has not committed past.
        let mut oldest_behind_ms: Option<i64> = None;
        bar.set_message(format!("partition {p}: reading Kafka [{low}, {high})"));
        read_partition(&consumer, &name, p, low, high, |m| {
            let (offset, value) = (m.offset(), m.payload().unwrap_or_default());
            if oldest_behind_ms.is_none() && c.is_some_and(|c| offset >= c) {
                oldest_behind_ms = Some(m.timestamp().to_millis().unwrap_or(now_ms));
            }
            let route = router.route(Some(value), m.timestamp().to_millis(), offset);
            let (place, day) = places.of_route(&layout, &route);
            if let Some(m) = day.filter(|_| !route.to_error_path).and_then(|d| markers.get(&d)) {
                if offset < m.complete_below {
                    *kafka_below.entry(day.expect("filtered")).or_default() += 1;
                }
            }
            let date_ok = day.is_none_or(in_range);
            let required = offset < required_below && (date_ok || matches!(route.source, DateSource::Invalid(_)));
            if records {
                // The exact line the writer stores: partition, offset, timestamp, key,
                // headers and value all have to match, and no `mid` is needed.
                scratch.clear();
                crate::consumer::encode_record(&mut scratch, m, route.line_breaks.is_some());
                let fp = xxh3_64(&scratch);
                tally.kafka(offset, fp, None, place, required);
                if let Some(e) = route.earlier.as_deref() {
                    // Written before record dating: under `invalid_date`, where it stays.
                    let earlier = places.of_placement(&layout, e);
                    tally.also_at(fp, earlier);
                }
            } else {
                tally.kafka(offset, fingerprint(value), mid_hash(value), place, required);
            }
        })?;
        let mut corrupt = Vec::new();
        let mut lines_of: BTreeMap<&str, u64> = BTreeMap::new();
        // The offsets a record file holds (each line carries its own), against its marker entry.
        let mut offsets_of: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for l in files.get(&p).map(Vec::as_slice).unwrap_or_default() {
            bar.set_message(format!("partition {p}: reading {}", l.key));
            tally.files += 1;
            let place = places.of_file(&layout, l);
            let mut n = 0;
            let mut span: Option<(i64, i64)> = None;
            let read = read_lines(&storage, &l.key, |line| {
                n += 1;
                if l.name.records {
                    if let Some(o) = crate::record::decode(line).ok().and_then(|r| r.offset) {
                        span = Some(span.map_or((o, o), |(a, b)| (a.min(o), b.max(o))));
                    }
                }
                tally.stored(xxh3_64(line), if l.name.records { None } else { mid_hash(line) }, place)
            })
            .await;
            lines_of.insert(&l.key, n);
            if let Some(span) = span {
                offsets_of.insert(&l.key, span);
            }
            if let Err(e) = read {
                corrupt.push(corrupt_or_fail(opts, &l.key, e)?);
            }
        }
        for (i, l) in unpartitioned.iter().enumerate() {
            bar.set_message(format!("partition {p}: reading {}", l.key));
            let place = places.of_file(&layout, l);
            let mut n = 0;
            let seen = &mut claimed[i];
            let read = read_lines(&storage, &l.key, |line| {
                if seen.len() <= n {
                    seen.push(false);
                }
                if tally.stored_if_known(xxh3_64(line), mid_hash(line), place) {
                    seen[n] = true;
                    tally.found_lines += 1;
                }
                n += 1;
            })
            .await;
            if let Err(e) = read {
                let key = corrupt_or_fail(opts, &l.key, e)?;
                if !corrupt.contains(&key) {
                    corrupt.push(key);
                }
            }
        }
        let mut r = tally.report();
        let data_dirs = layout.data_dirs();
        for (d, m) in &markers {
            let stored: BTreeSet<&str> = files
                .get(&p)
                .map(|fs| {
                    fs.iter()
                        .filter(|l| l.name.date == *d && data_dirs.iter().any(|dir| layout.route_dir_of(&l.key) == dir))
                        // A file that starts at or above the marker's bound is a late file its
                        // statement does not cover (stock Secor's names say where they start).
                        .filter(|l| l.name.first_offset.is_none_or(|f| f < m.complete_below) || m.files.iter().any(|f| f.key == l.key))
                        .map(|l| l.key.as_str())
                        .collect()
                })
                .unwrap_or_default();
            r.markers += 1;
            let held = Held { stored: &stored, lines_of: &lines_of, offsets_of: &offsets_of };
            r.marker_errors.extend(check_marker(m, &name, &held, kafka_below.get(d).copied().unwrap_or(0), high));
        }
        r.files += unpartitioned.len() as u64;
        r.corrupt_files = corrupt;
        if let Some(c) = c {
            // Kafka deleted [c, low) before the group committed past it: never backed up.
            r.lost_offsets = (low - c).max(0) as u64;
        }
        r.never_committed = c.is_none() && high > low && !opts.to_end;
        if let Some(c) = c.filter(|c| *c < high) {
            r.behind = (high - c.max(low)) as u64;
            r.oldest_behind_ms = oldest_behind_ms;
            let age = oldest_behind_ms.map_or(0, |ms| (now_ms - ms).max(0) / 1000) as u64;
            r.behind_secs = Some(age);
            r.lagging = age > max_lag.as_secs();
        }
        if !r.is_clean() {
            problems += 1;
        }
        total.add(&r);
        bar.inc(1);
        let audited = PartitionAudit { topic: name.clone(), partition: p, low, committed: c, high, clean: r.is_clean(), report: r };
        bar.suspend(|| report(&audited))?;
    }
    bar.finish();

    // Lines of unpartitioned files that no partition claimed. With every partition audited
    // they belong to none; with a subset they may belong to another one, and are not judged.
    let unclaimed: u64 = claimed.iter().map(|c| c.iter().filter(|x| !**x).count() as u64).sum();
    total.corrupt_files.sort();
    total.corrupt_files.dedup();
    // Each partition's report counts the unpartitioned files it read; the total counts them once.
    total.files = total.files.saturating_sub(unpartitioned.len() as u64 * (selected.len() as u64).saturating_sub(1));
    if selected.len() as i32 == count {
        total.unverifiable_lines += unclaimed;
        if unclaimed > 0 {
            problems += 1;
        }
    }
    if !strays.is_empty() {
        problems += 1;
    }
    Ok(TopicAudit { topic: name, partitions: selected.len(), count, total, unpartitioned_files: unpartitioned.len(), strays, unclaimed, problems })
}

/// What the audit found stored: a date's files of a partition, their lines, and the offsets of
/// those that carry them.
struct Held<'a> {
    stored: &'a BTreeSet<&'a str>,
    lines_of: &'a BTreeMap<&'a str, u64>,
    offsets_of: &'a BTreeMap<&'a str, (i64, i64)>,
}

/// What is wrong with a partition's marker of a date (of `topic`), against what is `held`;
/// `kafka_below` is the retained messages of the date below the marker's bound, `high` the
/// partition's end. Its name's date, partition and number were checked when it was read.
fn check_marker(m: &crate::completion::Marker, topic: &str, held: &Held<'_>, kafka_below: u64, high: i64) -> Vec<String> {
    let Held { stored, lines_of, offsets_of } = held;
    let name = format!("marker {} of {} partition {}", m.seq, m.date, m.partition);
    let mut errors = Vec::new();
    if m.topic != topic {
        errors.push(format!("{name} is about topic {}, not {topic}", m.topic));
    }
    let listed: BTreeSet<&str> = m.files.iter().map(|f| f.key.as_str()).collect();
    for k in stored.difference(&listed) {
        errors.push(format!("{name} misses file {k}"));
    }
    for f in &m.files {
        match (stored.contains(f.key.as_str()), lines_of.get(f.key.as_str())) {
            (false, _) => errors.push(format!("{name} lists {}, which is not stored", f.key)),
            (true, Some(n)) if *n != f.events => errors.push(format!("{name} counts {} event(s) in {}, which holds {n}", f.events, f.key)),
            _ => {}
        }
        if let Some((first, last)) = offsets_of.get(f.key.as_str()) {
            if (f.first_offset, f.last_offset) != (Some(*first), Some(*last)) {
                let say = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
                errors.push(format!("{name} gives {} offsets {}..{}, which holds {first}..{last}", f.key, say(f.first_offset), say(f.last_offset)));
            }
        }
    }
    if m.complete_below < 0 {
        errors.push(format!("{name} has a negative bound {}", m.complete_below));
    }
    let sum: u64 = m.files.iter().map(|f| f.events).sum();
    if sum != m.events {
        errors.push(format!("{name} says {} event(s) but its files add up to {sum}", m.events));
    }
    if m.complete_below > high {
        errors.push(format!("{name} claims offsets up to {} of a partition that ends at {high}", m.complete_below));
    }
    if kafka_below > m.events {
        errors.push(format!("{name} lists {} event(s), but Kafka holds {kafka_below} of that date below offset {}", m.events, m.complete_below));
    }
    errors
}

/// A file that could not be read: with `skip_corrupt` its key (counted as not clean), else
/// the error that stops the audit.
fn corrupt_or_fail(opts: &Options, key: &str, e: Unreadable) -> Result<String, AuditError> {
    if opts.skip_corrupt {
        tracing::warn!("{key}: {e}; skipped the rest of it (the result will not be clean)");
        Ok(key.to_string())
    } else {
        Err(failed(format!("{key}: {e}; the partitions before it were reported; --skip-corrupt goes on past it")))
    }
}

/// Why a stored file's lines could not be read.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("reading {key}: {source}")]
    Get { key: String, source: object_store::Error },
    #[error("corrupt or truncated: {0}")]
    Corrupt(String),
}

/// Calls `f` on every line of a stored file (decompressed, without its `\n`).
async fn read_lines(storage: &Storage, key: &str, mut f: impl FnMut(&[u8])) -> Result<(), Unreadable> {
    let raw = storage.read(key).await.map_err(|source| Unreadable::Get { key: key.to_string(), source })?;
    // A stray copy of a gzip file under another name (`….json.gz.tmp`) is read as what it holds.
    let gzip_inside = !key.ends_with(".gz") && raw.starts_with(&[0x1f, 0x8b]) && crate::naming::parse_name(key).is_none();
    let codec_key = if gzip_inside { format!("{key}.gz") } else { key.to_string() };
    for line in crate::seal::lines(&codec_key, &raw) {
        let line = line.map_err(|e| Unreadable::Corrupt(e.to_string()))?;
        f(&line);
    }
    Ok(())
}

fn mid_hash(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    match extract(text, &[vec!["mid".to_string()]]).ok()?.pop()?? {
        crate::event_date::FieldValue::Str(s) => Some(xxh3_64(s.as_bytes())),
        _ => None,
    }
}

/// Reads `[low, high)` of one partition, calling `f` per message.
fn read_partition(
    consumer: &BaseConsumer<Diagnosing>,
    topic: &str,
    p: i32,
    low: i64,
    high: i64,
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<(), AuditError> {
    crate::consumer::read_range(consumer, topic, p, low, high, |m| {
        f(m);
        true
    })
    .map_err(failed)
}
