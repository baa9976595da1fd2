//! The ceilings `scripts/bench` measures the writer and `replay` against: a bare consumer
//! that does nothing with the messages, a plain producer, raw PUTs to the store. Each runs the
//! same clients (settings from `consumer.rs`, the store from `storage.rs`) as the tools do, so
//! the difference is what the tools do per message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{KafkaConfig, StorageConfig};
use crate::consumer::{client_config, Role};
use crate::storage::Storage;

/// What a ceiling run did: how many events (or bytes) in how many seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub events: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Retained messages of a topic: the sum of its partitions' watermark spans.
pub fn count(brokers: &str, topic: &str) -> anyhow::Result<i64> {
    let c: BaseConsumer = client_config(&KafkaConfig::for_brokers(brokers), Role::Admin, &[]).create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let t = md.topics().first().filter(|t| t.error().is_none()).ok_or_else(|| anyhow::anyhow!("no topic {topic}"))?;
    let mut n = 0;
    for p in t.partitions() {
        let (low, high) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(30))?;
        n += high - low;
    }
    Ok(n)
}

/// PUTs `bytes` to the store at `url` in blobs of `blob_bytes`, `concurrency` at once, then
/// deletes them. Seconds are the PUTs' alone.
pub async fn put(url: &str, bytes: u64, blob_bytes: u64, concurrency: usize) -> anyhow::Result<Measured> {
    let storage = Storage::open(&StorageConfig { url: url.to_string(), create_container: true, ..Default::default() })?;
    storage.ensure_container(true).await?;
    let body = PutPayload::from(vec![b'x'; blob_bytes as usize]);
    let blobs = bytes.div_ceil(blob_bytes);
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..blobs {
        let (store, body, permit) = (storage.store.clone(), body.clone(), sem.clone().acquire_owned().await?);
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            store.put(&ObjectPath::from(format!("_bench/put-{i}")), body).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    for i in 0..blobs {
        // Best effort: the benchmark clears the container between runs anyway.
        let _ = storage.store.delete(&ObjectPath::from(format!("_bench/put-{i}"))).await;
    }
    Ok(Measured { events: blobs, bytes: blobs * blob_bytes, seconds })
}

/// Deletes every blob under `url`; returns how many.
pub async fn clear(url: &str) -> anyhow::Result<usize> {
    let storage = Storage::open(&StorageConfig { url: url.to_string(), ..Default::default() })?;
    let locations = storage.store.list(None).map_ok(|m| m.location).boxed();
    let deleted: Vec<_> = storage.store.delete_stream(locations).try_collect().await?;
    Ok(deleted.len())
}

/// Drains `topic` from its log starts with a bare consumer, timed from the first message.
pub fn consume(brokers: &str, topic: &str) -> anyhow::Result<Measured> {
    // The writer's own fetch settings, so the two differ only in what they do per message.
    let c: BaseConsumer<crate::consumer::QuietEof> = client_config(&KafkaConfig::for_brokers(brokers), Role::Reader, &crate::consumer::FETCH_TUNING)
        .set("group.id", "kbackup-bench-ceiling")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(crate::consumer::QuietEof)?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let parts = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0) as i32;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0;
    for p in 0..parts {
        let (low, high) = c.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
            remaining += 1;
        }
    }
    c.assign(&tpl)?;
    // From the first message, as the writer's drain rate is measured.
    let mut started = None;
    let (mut events, mut bytes) = (0u64, 0u64);
    while remaining > 0 {
        match c.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                started.get_or_insert_with(Instant::now);
                events += 1;
                bytes += m.payload().map_or(0, <[u8]>::len) as u64;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => remaining -= 1,
            Some(Err(e)) => anyhow::bail!("consuming: {e}"),
            None => anyhow::bail!("no data for 10 s"),
        }
    }
    Ok(Measured { events, bytes, seconds: started.map_or(0.0, |t| t.elapsed().as_secs_f64()) })
}

/// Sends every line of the files under `dir` to `topic` (no keys, default partitioner).
pub fn produce(brokers: &str, topic: &str, dir: &std::path::Path) -> anyhow::Result<Measured> {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use std::io::BufRead;
    let p: ThreadedProducer<DefaultProducerContext> = client_config(
        &KafkaConfig::for_brokers(brokers),
        Role::Producer,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "20"),
            ("batch.size", "1000000"),
            ("compression.type", "lz4"),
            ("queue.buffering.max.kbytes", "262144"),
        ],
    )
    .create()?;
    let mut files: Vec<_> = walk(dir)?;
    files.sort();
    let started = Instant::now();
    let (mut events, mut bytes) = (0u64, 0u64);
    for f in files {
        let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&f)?);
        for line in reader.split(b'\n') {
            let line = line?;
            crate::producer::send_blocking(&p, BaseRecord::<(), [u8]>::to(topic).payload(&line[..]))?;
            events += 1;
            bytes += line.len() as u64;
        }
    }
    p.flush(Duration::from_secs(300))?;
    Ok(Measured { events, bytes, seconds: started.elapsed().as_secs_f64() })
}

fn walk(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else if p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The writer's per-event work without Kafka or storage, for counting instructions per event
/// (`scripts/bench` runs it under valgrind, whose counts do not move with the machine's load as
/// CPU seconds do): `events` generated Sunbird events, then as far as `stage` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PathStage {
    /// Generating the events only: the base the other stages are counted above.
    Gen,
    /// Routing each (validating the JSON, reading its date).
    Route,
    /// Routing and appending each to its file's buffer.
    Append,
    /// Routing, appending, and gzip-compressing the sealed buffers.
    Gzip,
    /// Routing, appending each message's record envelope (what a Parquet file is sealed from),
    /// and transcoding the sealed buffers into Parquet (zstd, Sunbird's shredded fields).
    Parquet,
}

/// Runs the per-event path to `stage` over `events` events; returns the seconds of the stage
/// part (not the generation) and a checksum that keeps the work from being optimized away.
pub fn path(events: u64, stage: PathStage) -> anyhow::Result<(f64, u64)> {
    use crate::buffer::Buffer;
    use crate::config::{Compression, ShredType};
    let mut g = crate::sample::TelemetryGen::new(7, 100_000, 1_580_472_000_000, 1_580_472_000_000 + 24 * 3_600_000);
    let batch: Vec<String> = (0..events).map(|i| g.next_event(i).1).collect();
    let cfg = crate::config::Config::parse(
        "[kafka]\nbrokers='x'\ngroup_id='g'\n[storage]\nurl='file:///tmp/x'\n[[topic]]\nname='t'\npath='p'\noutput_timezone='Asia/Kolkata'\n",
        "bench path",
    )?;
    let router = crate::routing::Router::new(&cfg.topics[0], 0)?;
    let started = Instant::now();
    let mut sum = 0u64;
    let mut files: Vec<(Arc<str>, Buffer)> = Vec::new();
    let mut envelope = Vec::new();
    if stage != PathStage::Gen {
        for (off, e) in batch.iter().enumerate() {
            let route = router.route(Some(e.as_bytes()), Some(0), off as i64);
            sum += route.date.len() as u64;
            if stage == PathStage::Route {
                continue;
            }
            // One partition: a buffer per date, as the writer keeps per (partition, date).
            let at = match files.iter().position(|(d, _)| *d == route.date) {
                Some(i) => i,
                None => {
                    files.push((route.date.clone(), Buffer::new(off as i64, started)));
                    files.len() - 1
                }
            };
            if stage == PathStage::Parquet {
                let view = crate::record::RecordView {
                    partition: Some(0),
                    offset: Some(off as i64),
                    timestamp: Some((1_580_472_000_000 + off as i64, crate::record::TimestampKind::Create)),
                    key: None,
                    value: Some(e.as_bytes()),
                    value_is_json: route.line_breaks.is_some(),
                };
                envelope.clear();
                crate::record::encode(&mut envelope, &view, std::iter::empty());
                files[at].1.append_checked(off as i64, &envelope, Some(false));
            } else {
                files[at].1.append_checked(off as i64, e.as_bytes(), route.line_breaks);
            }
        }
    }
    let shred = crate::columnar::Shred::new(
        &[
            ("eid", ShredType::String),
            ("mid", ShredType::String),
            ("syncts", ShredType::Int64),
            ("ets", ShredType::Int64),
            ("context.did", ShredType::String),
            ("actor.id", ShredType::String),
        ]
        .into_iter()
        .map(|(p, t)| (p.to_string(), t))
        .collect(),
    )
    .map_err(anyhow::Error::msg)?;
    for (_, buf) in files {
        sum += buf.len();
        match stage {
            PathStage::Gzip => sum += crate::seal::encode(buf.data, Compression::Gzip, crate::config::default_level()).len() as u64,
            PathStage::Parquet => {
                sum += crate::columnar::encode(buf.data.as_ref(), Compression::Zstd, crate::config::default_level(), &shred, false)?.file.len() as u64
            }
            _ => {}
        }
    }
    Ok((started.elapsed().as_secs_f64(), sum))
}

/// When a group's commits on `topic` first covered 90 % and all of `events` (seconds from the
/// start of this call, which the benchmark makes just before it starts the writer): the time a
/// one-shot run takes to make its backup count, beside its drain. `None` for a mark not reached
/// within `timeout`.
pub fn commits(brokers: &str, group: &str, topic: &str, events: i64, timeout: Duration) -> anyhow::Result<(Option<f64>, Option<f64>)> {
    let started = Instant::now();
    let c: BaseConsumer = client_config(&KafkaConfig::for_brokers(brokers), Role::Admin, &[]).set("group.id", group).create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let parts = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0) as i32;
    let mut tpl = TopicPartitionList::new();
    let mut low = Vec::new();
    for p in 0..parts {
        low.push(c.fetch_watermarks(topic, p, Duration::from_secs(30))?.0);
        tpl.add_partition(topic, p);
    }
    let (mut at_90, mut at_all) = (None, None);
    while at_all.is_none() && started.elapsed() < timeout {
        let committed = c.committed_offsets(tpl.clone(), Duration::from_secs(10))?;
        let done: i64 = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (o - low[e.partition() as usize]).max(0),
                _ => 0,
            })
            .sum();
        let t = started.elapsed().as_secs_f64();
        if done * 10 >= events * 9 {
            at_90.get_or_insert(t);
        }
        if done >= events {
            at_all = Some(t);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok((at_90, at_all))
}
