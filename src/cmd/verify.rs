//! `kbackup verify`: audit the backups of a topic against what Kafka still retains.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use xxhash_rust::xxh3::xxh3_64;

use crate::audit::{fingerprint, Report, Tally};
use crate::cmd::{load_config, ConfigArg, ExitError};
use crate::listing::parse_partitions;
use crate::naming::parse_name;
use crate::routing::{extract, DateSource, InvalidReason, Router};
use crate::storage::Storage;

/// Arguments of `kbackup verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Topic to audit.
    #[arg(long)]
    pub topic: String,
    /// Only events dated on or after this day (YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Only events dated on or before this day.
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Only these Kafka partitions, e.g. 0,3,5-7.
    #[arg(long)]
    pub partitions: Option<String>,
    /// Require every retained message up to the end of the partition, not only up to the
    /// group's committed offset.
    #[arg(long)]
    pub to_end: bool,
    /// One JSON object per partition on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct PartitionReport<'a> {
    topic: &'a str,
    partition: i32,
    low: i64,
    committed: i64,
    high: i64,
    #[serde(flatten)]
    report: Report,
}

/// Audits every selected partition; exits 1 unless all are clean.
pub async fn run(a: VerifyArgs) -> anyhow::Result<()> {
    let config = load_config(&a.config)?;
    let (index, topic) = config
        .topics
        .iter()
        .enumerate()
        .find(|(_, t)| t.name == a.topic)
        .ok_or_else(|| ExitError { code: 2, message: format!("topic `{}` is not in the config", a.topic) })?;
    let router = Router::new(topic, index)?;
    let storage = Storage::open(&config.storage).map_err(|e| ExitError { code: 2, message: e.to_string() })?;
    let in_range = |d: &str| {
        let Ok(d) = NaiveDate::parse_from_str(d, "%Y-%m-%d") else { return true };
        a.from.is_none_or(|f| d >= f) && a.to.is_none_or(|t| d <= t)
    };

    // Every backup file of the topic, grouped by the partition in its name.
    let mut roots = vec![topic.path.trim_matches('/').to_string()];
    if let Some(e) = &topic.error_path {
        roots.push(e.trim_matches('/').to_string());
    }
    let mut files: BTreeMap<i32, Vec<(String, NaiveDate)>> = BTreeMap::new();
    let mut unpartitioned = 0u64;
    for root in &roots {
        let metas: Vec<_> = storage
            .store
            .list(Some(&ObjectPath::from(root.as_str())))
            .try_collect()
            .await
            .with_context(|| format!("listing {root}/"))?;
        for m in metas {
            let key = m.location.to_string();
            let Some(n) = parse_name(&key) else { continue };
            if !in_range(&n.date.format("%Y-%m-%d").to_string()) && n.date != invalid_date(topic) {
                continue;
            }
            match n.kafka_partition {
                Some(p) => files.entry(p).or_default().push((key, n.date)),
                None => unpartitioned += 1,
            }
        }
    }

    // Partitions, watermarks and the group's committed offsets.
    let kafka = config.kafka.clone();
    let name = topic.name.clone();
    let consumer: BaseConsumer<crate::consumer::QuietEof> = {
        let mut c = ClientConfig::new();
        for (k, v) in &kafka.properties {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &kafka.brokers)
            .set("group.id", &kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create_with_context(crate::consumer::QuietEof)?
    };
    let md = consumer.fetch_metadata(Some(&name), Duration::from_secs(30))?;
    let count = md.topics().first().filter(|t| t.error().is_none()).map(|t| t.partitions().len()).unwrap_or(0);
    if count == 0 {
        anyhow::bail!("topic {name} not found on {}", kafka.brokers);
    }
    let selected: Vec<i32> = match &a.partitions {
        Some(p) => parse_partitions(p).map_err(|e| ExitError { code: 2, message: e.to_string() })?.into_iter().filter(|p| (*p as usize) < count).collect(),
        None => (0..count as i32).collect(),
    };
    let mut tpl = TopicPartitionList::new();
    for p in &selected {
        tpl.add_partition(&name, *p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(30))?;

    let bar = indicatif::ProgressBar::new(selected.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} verify {pos}/{len} partitions {msg} [{elapsed_precise}]").unwrap());
    let mut dirty = 0;
    let mut total = Report::default();
    for &p in &selected {
        let (low, high) = consumer.fetch_watermarks(&name, p, Duration::from_secs(30))?;
        let c = match committed.find_partition(&name, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        let required_below = if a.to_end { high } else { c };
        let mut tally = Tally::default();
        bar.set_message(format!("partition {p}: reading Kafka [{low}, {high})"));
        read_partition(&consumer, &name, p, low, high, |offset, value, record_ms| {
            let route = router.route(Some(value), record_ms);
            if !in_range(&route.date) && !matches!(route.source, DateSource::Invalid(_)) {
                return;
            }
            tally.kafka(offset, fingerprint(value), mid_hash(value), offset < required_below);
        })?;
        for (key, date) in files.get(&p).map(Vec::as_slice).unwrap_or_default() {
            bar.set_message(format!("partition {p}: reading {key}"));
            tally.files += 1;
            let raw = storage.store.get(&ObjectPath::from(key.as_str())).await?.bytes().await?;
            let reader = crate::seal::reader(key, &raw);
            let want = date.format("%Y-%m-%d").to_string();
            for line in BufReader::with_capacity(1 << 20, reader).split(b'\n') {
                let line = line.with_context(|| format!("reading {key} (corrupt or truncated?)"))?;
                let route = router.route(Some(&line), None);
                // A line dated by its record time cannot be re-dated from its content.
                let date_ok = route.date.as_ref() == want || route.source == DateSource::Invalid(InvalidReason::NoTimestamp);
                tally.stored(xxh3_64(&line), mid_hash(&line), date_ok);
            }
        }
        let report = tally.report();
        if !report.is_clean() {
            dirty += 1;
        }
        total.expected += report.expected;
        total.found_lines += report.found_lines;
        total.files += report.files;
        total.missing_offsets.extend(&report.missing_offsets);
        total.duplicated_offsets.extend(&report.duplicated_offsets);
        total.duplicated_mids += report.duplicated_mids;
        total.misdated_lines += report.misdated_lines;
        total.unknown_lines += report.unknown_lines;
        bar.inc(1);
        if a.json {
            let r = PartitionReport { topic: &name, partition: p, low, committed: c, high, report };
            println!("{}", serde_json::to_string(&r)?);
        } else {
            bar.suspend(|| print_partition(p, low, c, high, &report));
        }
    }
    bar.finish_and_clear();
    if !a.json {
        println!(
            "total: {} expected, {} lines in {} files; missing {}, duplicated {}, duplicated mids {}, misdated {}, unknown {}",
            total.expected,
            total.found_lines,
            total.files,
            total.missing_offsets.len(),
            total.duplicated_offsets.len(),
            total.duplicated_mids,
            total.misdated_lines,
            total.unknown_lines
        );
        if unpartitioned > 0 {
            println!("note: {unpartitioned} old-name file(s) without a Kafka partition were not audited");
        }
    }
    if dirty > 0 {
        return Err(ExitError { code: 1, message: format!("{dirty} partition(s) are not clean") }.into());
    }
    if !a.json {
        println!("clean");
    }
    Ok(())
}

fn invalid_date(t: &crate::config::TopicConfig) -> NaiveDate {
    NaiveDate::parse_from_str(&t.invalid_date, "%Y-%m-%d").unwrap_or_default()
}

fn print_partition(p: i32, low: i64, c: i64, high: i64, r: &Report) {
    let show = |v: &[i64]| {
        let head: Vec<String> = v.iter().take(10).map(i64::to_string).collect();
        if v.len() > 10 { format!("{} …", head.join(",")) } else { head.join(",") }
    };
    println!(
        "partition {p}: kafka [{low}, {high}) committed {c}; {} expected, {} lines in {} files; missing {}{}; duplicated {}{}; duplicated mids {}; misdated {}; unknown {}",
        r.expected,
        r.found_lines,
        r.files,
        r.missing_offsets.len(),
        if r.missing_offsets.is_empty() { String::new() } else { format!(" (offsets {})", show(&r.missing_offsets)) },
        r.duplicated_offsets.len(),
        if r.duplicated_offsets.is_empty() { String::new() } else { format!(" (offsets {})", show(&r.duplicated_offsets)) },
        r.duplicated_mids,
        r.misdated_lines,
        r.unknown_lines,
    );
}

fn mid_hash(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    match extract(text, &[vec!["mid".to_string()]]).ok()?.pop()?? {
        crate::event_date::FieldValue::Str(s) => Some(xxh3_64(s.as_bytes())),
        _ => None,
    }
}

/// Reads `[low, high)` of one partition, calling `f(offset, value, record_ms)` per message.
fn read_partition(
    consumer: &BaseConsumer<crate::consumer::QuietEof>,
    topic: &str,
    p: i32,
    low: i64,
    high: i64,
    mut f: impl FnMut(i64, &[u8], Option<i64>),
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
                f(m.offset(), m.payload().unwrap_or_default(), m.timestamp().to_millis());
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
