//! `kbackup verify`: audit the backups of a topic against what Kafka still retains.
//!
//! Per partition: every retained message is routed exactly as the writer routes it (so its
//! expected date and directory come from the writer's rule, not from a fresh parse of the
//! stored copy), then every backup file of the partition is read, and the files whose names
//! carry no partition (old `<date>-<ts>` names, or a pattern without `{kafkaPartition}`) are
//! read for every partition. Anything that is not proven backed up exactly once makes the
//! result not clean: missing, doubled, misplaced or unverifiable lines, offsets Kafka deleted
//! before the group committed them, a group that never committed, unreadable files.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use xxhash_rust::xxh3::xxh3_64;

use crate::audit::{fingerprint, Place, Report, Tally};
use crate::cmd::{load_config, ConfigArg, ExitError};
use crate::listing::{parse_partitions, DayArg, Listed, Selection};
use crate::naming::FileLayout;
use crate::outln;
use crate::progress::Progress;
use crate::routing::{extract, DateSource, Route, Router};
use crate::storage::Storage;

/// Arguments of `kbackup verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Topic to audit.
    #[arg(long)]
    pub topic: String,
    /// Only events dated on or after this day: YYYY-MM-DD, `today`, `yesterday` or `-N` days
    /// (in the topic's output time zone).
    #[arg(long)]
    pub from: Option<DayArg>,
    /// Only events dated on or before this day (same forms).
    #[arg(long)]
    pub to: Option<DayArg>,
    /// Only these Kafka partitions, e.g. 0,3,5-7.
    #[arg(long, conflicts_with = "shards")]
    pub partitions: Option<String>,
    /// Audit one of this many shards of the topic's partitions (contiguous ranges): the one
    /// `--shard-index` names, else the Kubernetes Indexed Job's JOB_COMPLETION_INDEX.
    #[arg(long, value_name = "COUNT")]
    pub shards: Option<u32>,
    /// Which shard (0-based) with --shards.
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    pub shard_index: Option<u32>,
    /// Require every retained message up to the end of the partition, not only up to the
    /// group's committed offset.
    #[arg(long)]
    pub to_end: bool,
    /// Skip files that cannot be read to the end (named in the report; the result is then not
    /// clean) instead of stopping at the first one.
    #[arg(long)]
    pub skip_corrupt: bool,
    /// One JSON object per partition on stdout, then one with the totals.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct PartitionReport<'a> {
    topic: &'a str,
    partition: i32,
    low: i64,
    committed: Option<i64>,
    high: i64,
    clean: bool,
    #[serde(flatten)]
    report: &'a Report,
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
    fn of_route(&mut self, layout: &FileLayout, r: &Route) -> (Place, Option<NaiveDate>) {
        let key = (r.prefix.clone(), r.to_error_path, r.date.clone());
        if let Some(found) = self.routes.get(&key) {
            return *found;
        }
        let id = self.id(&layout.dir(r.prefix.as_deref(), r.to_error_path), &r.date);
        let day = NaiveDate::parse_from_str(&r.date, layout.dates().as_str()).ok();
        self.routes.insert(key, (id, day));
        (id, day)
    }

    /// Where a stored file is.
    fn of_file(&mut self, layout: &FileLayout, l: &Listed) -> Place {
        let dir = l.key.rsplit_once('/').map_or("", |(d, _)| d);
        self.id(dir, &layout.dates().format(l.name.date))
    }
}

/// Audits every selected partition; exits 1 unless all are clean.
pub async fn run(a: VerifyArgs) -> anyhow::Result<()> {
    let usage = |m: String| anyhow::Error::from(ExitError { code: 2, message: m });
    let config = load_config(&a.config)?;
    let (index, topic) = config
        .topics
        .iter()
        .enumerate()
        .find(|(_, t)| t.name == a.topic)
        .ok_or_else(|| usage(format!("topic `{}` is not in the config", a.topic)))?;
    // `today` is the calendar day where the topic dates its files.
    let tz: chrono_tz::Tz = topic.output_timezone.parse().map_err(|_| usage(format!("topic `{}`: bad output_timezone", topic.name)))?;
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let (day_from, day_to) = (a.from.map(|d| d.resolve(today)), a.to.map(|d| d.resolve(today)));
    if let (Some(f), Some(t)) = (day_from, day_to) {
        Selection::new(f, t).map_err(|e| usage(e.to_string()))?;
    }
    let shard = match (a.shards, a.shard_index) {
        (Some(0), _) => return Err(usage("--shards must be at least 1".into())),
        (Some(n), Some(i)) if i >= n => return Err(usage(format!("shard index {i} is not below --shards {n}"))),
        (Some(n), Some(i)) => Some((i, n)),
        (Some(_), None) => return Err(usage("--shards needs --shard-index (or JOB_COMPLETION_INDEX, as an Indexed Job sets it)".into())),
        (None, _) => None,
    };
    let wanted = a.partitions.as_deref().map(parse_partitions).transpose().map_err(|e| usage(e.to_string()))?;
    let router = Router::new(topic, index)?;
    let layout = topic.layout()?;
    let storage = Storage::open(&config.storage).map_err(|e| usage(e.to_string()))?;
    let from = day_from.unwrap_or(NaiveDate::MIN);
    let to = day_to.unwrap_or(NaiveDate::MAX);
    let invalid_date = NaiveDate::parse_from_str(&topic.invalid_date, "%Y-%m-%d").ok();
    let in_range = |d: NaiveDate| (d >= from && d <= to) || Some(d) == invalid_date;

    // Every backup file of the topic in the dates audited (the invalid bucket always), grouped
    // by the partition in its name.
    let all = crate::listing::list(&storage, &layout, &Selection::new(NaiveDate::MIN, NaiveDate::MAX)?)
        .await
        .with_context(|| format!("listing {} in {}", layout.dirs().join(", "), storage.describe))?;
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
    let kafka = config.kafka.clone();
    let name = topic.name.clone();
    let consumer: BaseConsumer<crate::consumer::Diagnosing> = {
        let mut c = crate::consumer::client_config(&kafka, crate::consumer::Role::Reader, &[]);
        // The group only names whose committed offsets are read; verify never joins or commits.
        c.set("group.id", &kafka.group_id).set("enable.auto.commit", "false").set("enable.partition.eof", "true");
        crate::consumer::create_client(&c, crate::consumer::Diagnosing::default()).map_err(anyhow::Error::msg)?
    };
    let md = crate::consumer::with_reason(&consumer, |c| c.fetch_metadata(Some(&name), Duration::from_secs(30)))
        .with_context(|| format!("reading metadata from {}", kafka.brokers))?;
    let count = md.topics().first().filter(|t| t.error().is_none()).map(|t| t.partitions().len()).unwrap_or(0) as i32;
    if count == 0 {
        anyhow::bail!("topic {name} not found on {}", kafka.brokers);
    }
    let selected: Vec<i32> = match &wanted {
        Some(set) => {
            crate::listing::check_partitions(&name, set, count).map_err(usage)?;
            set.iter().copied().collect()
        }
        None => match shard {
            Some((i, n)) => crate::listing::shard(count, i, n).collect(),
            None => (0..count).collect(),
        },
    };
    if let Some((i, n)) = shard {
        tracing::info!("shard {i} of {n}: partitions {:?} of {count}", selected.first().zip(selected.last()).map(|(a, b)| a..=b));
    }
    if let Some(p) = files.keys().find(|p| **p >= count) {
        // Files named for a partition the topic does not have: nobody audits them.
        return Err(ExitError {
            code: 1,
            message: format!("{} file(s) are named for partition {p}, which topic {name} does not have (it has {count})", files[p].len()),
        }
        .into());
    }
    let mut tpl = TopicPartitionList::new();
    for p in &selected {
        tpl.add_partition(&name, *p);
    }
    let committed = crate::consumer::with_reason(&consumer, |c| c.committed_offsets(tpl, Duration::from_secs(30)))?;

    let records = topic.format == crate::config::Format::Record;
    let mut scratch = Vec::new();
    let mut bar = Progress::new(selected.len() as u64, "{spinner} verify {pos}/{len} partitions {msg} [{elapsed_precise}]", "partitions");
    let mut places = Places::default();
    // Per unpartitioned file, which of its lines some partition claimed.
    let mut claimed: Vec<Vec<bool>> = unpartitioned.iter().map(|_| Vec::new()).collect();
    let mut dirty = 0;
    let mut total = Report::default();
    for &p in &selected {
        let (low, high) = consumer.fetch_watermarks(&name, p, Duration::from_secs(30))?;
        let c = match committed.find_partition(&name, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        let required_below = if a.to_end { high } else { c.unwrap_or(low) };
        let mut tally = Tally::default();
        bar.set_message(format!("partition {p}: reading Kafka [{low}, {high})"));
        read_partition(&consumer, &name, p, low, high, |m| {
            let (offset, value) = (m.offset(), m.payload().unwrap_or_default());
            let route = router.route(Some(value), m.timestamp().to_millis());
            let (place, day) = places.of_route(&layout, &route);
            let date_ok = day.is_none_or(in_range);
            let required = offset < required_below && (date_ok || matches!(route.source, DateSource::Invalid(_)));
            if records {
                // The exact line the writer stores: partition, offset, timestamp, key,
                // headers and value all have to match, and no `mid` is needed.
                scratch.clear();
                crate::consumer::encode_record(&mut scratch, m, route.line_breaks.is_some());
                tally.kafka(offset, xxh3_64(&scratch), None, place, required);
            } else {
                tally.kafka(offset, fingerprint(value), mid_hash(value), place, required);
            }
        })?;
        let mut corrupt = Vec::new();
        for l in files.get(&p).map(Vec::as_slice).unwrap_or_default() {
            bar.set_message(format!("partition {p}: reading {}", l.key));
            tally.files += 1;
            let place = places.of_file(&layout, l);
            let read =
                read_lines(&storage, &l.key, |line| tally.stored(xxh3_64(line), if l.name.records { None } else { mid_hash(line) }, place)).await;
            if let Err(e) = read {
                corrupt.push(corrupt_or_fail(&a, &l.key, e)?);
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
                let key = corrupt_or_fail(&a, &l.key, e)?;
                if !corrupt.contains(&key) {
                    corrupt.push(key);
                }
            }
        }
        let mut report = tally.report();
        report.files += unpartitioned.len() as u64;
        report.corrupt_files = corrupt;
        if let Some(c) = c {
            // Kafka deleted [c, low) before the group committed past it: never backed up.
            report.lost_offsets = (low - c).max(0) as u64;
        }
        report.never_committed = c.is_none() && high > low && !a.to_end;
        if !report.is_clean() {
            dirty += 1;
        }
        total.add(&report);
        bar.inc(1);
        if a.json {
            let r = PartitionReport { topic: &name, partition: p, low, committed: c, high, clean: report.is_clean(), report: &report };
            let line = serde_json::to_string(&r)?;
            bar.suspend(|| -> anyhow::Result<()> {
                outln!("{line}");
                Ok(())
            })?;
        } else {
            bar.suspend(|| print_partition(p, low, c, high, &report))?;
        }
    }
    bar.finish();

    // Lines of unpartitioned files that no partition claimed. With every partition audited
    // they belong to none; with a subset they may belong to another one, and are not judged.
    let unclaimed: u64 = claimed.iter().map(|c| c.iter().filter(|x| !**x).count() as u64).sum();
    let all_partitions = selected.len() as i32 == count;
    total.corrupt_files.sort();
    total.corrupt_files.dedup();
    // Each partition's report counts the unpartitioned files it read; the total counts them once.
    total.files = total.files.saturating_sub(unpartitioned.len() as u64 * (selected.len() as u64).saturating_sub(1));
    if all_partitions {
        total.unverifiable_lines += unclaimed;
        if unclaimed > 0 {
            dirty += 1;
        }
    }
    if !strays.is_empty() {
        dirty += 1;
    }
    if a.json {
        let summary = serde_json::json!({
            "topic": name, "total": true, "clean": dirty == 0, "partitions": selected.len(),
            "unpartitioned_files": unpartitioned.len() - strays.len(),
            "stray_files": strays,
            "unpartitioned_lines_unclaimed": unclaimed, "report": total,
        });
        outln!("{summary}");
    } else {
        outln!(
            "total: {} expected, {} lines in {} files; missing {}, duplicated {}, duplicated mids {}, misplaced {}, unverifiable {}, lost {}, corrupt files {}",
            total.expected,
            total.found_lines,
            total.files,
            total.missing_offsets.len(),
            total.duplicated_offsets.len(),
            total.duplicated_mids,
            total.misplaced_lines,
            total.unverifiable_lines,
            total.lost_offsets,
            total.corrupt_files.len()
        );
        if !unpartitioned.is_empty() {
            outln!(
                "note: {} file(s) without a Kafka partition in their name were read for every partition audited{}",
                unpartitioned.len(),
                match (unclaimed, all_partitions) {
                    (0, _) => String::new(),
                    (n, true) => format!("; {n} of their lines match no retained message of any partition (unverifiable)"),
                    (n, false) => format!("; {n} of their lines match none of the partitions audited (not judged: they may belong to others)"),
                }
            );
        }
        for key in &strays {
            outln!("  STRAY: {key}: not a backup file name, but under a date that readers of the date read whole; its lines were audited with the files without a partition (remove it, or rename it to what it holds)");
        }
    }
    if dirty > 0 {
        return Err(ExitError { code: 1, message: format!("not clean: {dirty} problem(s); see the report above") }.into());
    }
    if !a.json {
        outln!("clean");
    }
    Ok(())
}

/// A file that could not be read: with `--skip-corrupt` its key (counted as not clean), else
/// the error that stops the audit.
fn corrupt_or_fail(a: &VerifyArgs, key: &str, e: anyhow::Error) -> anyhow::Result<String> {
    if a.skip_corrupt {
        tracing::warn!("{key}: {e:#}; skipped the rest of it (the result will not be clean)");
        Ok(key.to_string())
    } else {
        Err(ExitError { code: 1, message: format!("{key}: {e:#}; the partitions before it were reported; --skip-corrupt goes on past it") }.into())
    }
}

/// Calls `f` on every line of a stored file (decompressed, without its `\n`).
async fn read_lines(storage: &Storage, key: &str, mut f: impl FnMut(&[u8])) -> anyhow::Result<()> {
    let raw = storage.read(key).await.with_context(|| format!("reading {key}"))?;
    // A stray copy of a gzip file under another name (`….json.gz.tmp`) is read as what it holds.
    let gzip_inside = !key.ends_with(".gz") && raw.starts_with(&[0x1f, 0x8b]) && crate::naming::parse_name(key).is_none();
    let codec_key = if gzip_inside { format!("{key}.gz") } else { key.to_string() };
    for line in crate::seal::lines(&codec_key, &raw) {
        let line = line.context("corrupt or truncated")?;
        f(&line);
    }
    Ok(())
}

fn print_partition(p: i32, low: i64, c: Option<i64>, high: i64, r: &Report) -> anyhow::Result<()> {
    let show = |v: &[i64]| {
        let head: Vec<String> = v.iter().take(10).map(i64::to_string).collect();
        if v.len() > 10 {
            format!("{} …", head.join(","))
        } else {
            head.join(",")
        }
    };
    let committed = c.map_or_else(|| "none".to_string(), |c| c.to_string());
    outln!(
        "partition {p}: kafka [{low}, {high}) committed {committed}; {} expected, {} lines in {} files; missing {}{}; duplicated {}{}; duplicated mids {}; misplaced {}; unverifiable {}",
        r.expected,
        r.found_lines,
        r.files,
        r.missing_offsets.len(),
        if r.missing_offsets.is_empty() { String::new() } else { format!(" (offsets {})", show(&r.missing_offsets)) },
        r.duplicated_offsets.len(),
        if r.duplicated_offsets.is_empty() { String::new() } else { format!(" (offsets {})", show(&r.duplicated_offsets)) },
        r.duplicated_mids,
        r.misplaced_lines,
        r.unverifiable_lines,
    );
    if r.unverifiable_lines > 0 {
        if low == 0 {
            outln!("  {} stored line(s) match no message of partition {p}, although Kafka still holds it from offset 0: they are not from this partition", r.unverifiable_lines);
        } else {
            outln!("  {} stored line(s) match no message Kafka still holds (it deleted offsets below {low}): older than retention, or not from this partition; narrow --from/--to to retained dates", r.unverifiable_lines);
        }
    }
    if r.lost_offsets > 0 {
        outln!(
            "  LOST: {} offset(s) [{}, {low}) were deleted by Kafka before the group committed them: never backed up",
            r.lost_offsets,
            low - r.lost_offsets as i64
        );
    }
    if r.never_committed {
        outln!("  the group has never committed an offset for partition {p}: nothing is proven backed up (wrong group_id? or use --to-end)");
    }
    for k in &r.corrupt_files {
        outln!("  corrupt: {k}");
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
    consumer: &BaseConsumer<crate::consumer::Diagnosing>,
    topic: &str,
    p: i32,
    low: i64,
    high: i64,
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    if high <= low {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    let mut idle = 0;
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                f(&m);
                if m.offset() + 1 >= high {
                    break;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => anyhow::bail!("reading {topic}/{p}: {e}"),
            None => {
                idle += 1;
                if idle > 120 {
                    anyhow::bail!("reading {topic}/{p}: no data for 60 s before offset {high}");
                }
            }
        }
    }
    consumer.unassign()?;
    Ok(())
}
