//! The Kafka side: librdkafka settings kbackup relies on, and metadata look-ups.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// A context for tools that read partitions to their end: end-of-partition is expected there,
/// not an error worth a log line.
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(error = %error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for QuietEof {}

use crate::config::KafkaConfig;

/// How the writer fetches (shared with the benchmark's bare consumer, so the two differ only in
/// what they do per message).
pub const FETCH_TUNING: [(&str, &str); 4] = [
    // Cap librdkafka's prefetch: without it a large lag is buffered until the process runs out
    // of memory (a known failure of other writers).
    ("queued.max.messages.kbytes", "8192"),
    // Responses under 1 MiB: librdkafka reads each into one allocation, and below glibc's mmap
    // threshold (1 MiB, see main.rs) those come from the heap and are reused. At 4 MiB every
    // response was mapped, faulted in and unmapped again: ~9% of the polling thread's CPU (TLB
    // shootdowns included) and 15-25% of throughput. Larger messages are still fetched whole.
    ("fetch.max.bytes", "1000000"),
    ("max.partition.fetch.bytes", "1000000"),
    // When the prefetch queue is full librdkafka waits this long before fetching that partition
    // again (default 1000 ms): with a writer that works on every message the queue is often full,
    // and a second-long pause per partition caps throughput at a fraction of the broker's.
    ("fetch.queue.backoff.ms", "10"),
];

/// librdkafka settings for the writer's group consumer. User properties override the tuning
/// defaults; the correctness settings (`enable.auto.commit`) cannot be overridden (config
/// validation refuses them).
pub fn group_config(k: &KafkaConfig) -> ClientConfig {
    let mut props: BTreeMap<&str, String> = BTreeMap::new();
    props.insert("auto.offset.reset", "earliest".into());
    props.insert("partition.assignment.strategy", "cooperative-sticky".into());
    for (key, value) in FETCH_TUNING {
        props.insert(key, value.to_string());
    }
    props.insert("enable.auto.offset.store", "false".into());
    props.insert("client.id", "kbackup".into());
    // End-of-partition events: logged at debug level, so operators (and tests) can see when a
    // partition has been read to its end.
    props.insert("enable.partition.eof", "true".into());
    // Statistics feed the lag gauges and the readiness probe.
    props.insert("statistics.interval.ms", "5000".into());
    for (key, value) in &k.properties {
        props.insert(key.as_str(), value.clone());
    }
    let mut c = ClientConfig::new();
    for (key, value) in props {
        c.set(key, value);
    }
    c.set("bootstrap.servers", &k.brokers);
    c.set("group.id", &k.group_id);
    c.set("enable.auto.commit", "false");
    c
}

/// What librdkafka's prefetch really costs under these settings, which the writer's memory
/// budget reserves: its consumer queue (`queued.max.messages.kbytes`) plus one fetch response
/// (`fetch.max.bytes`), times 3 — measured with scripts/bench, fetch buffers stay alive while
/// any of their messages is queued, and each queued message carries its own bookkeeping.
pub fn prefetch_bytes(k: &KafkaConfig) -> u64 {
    let cfg = group_config(k);
    let num = |key: &str, default: u64| cfg.get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(default);
    3 * (num("queued.max.messages.kbytes", 65_536) * 1024 + num("fetch.max.bytes", 52_428_800))
}

/// A consumer for metadata and watermark queries only (no group membership).
pub fn metadata_client(k: &KafkaConfig) -> rdkafka::error::KafkaResult<BaseConsumer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, value) in &k.properties {
        if key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.") {
            c.set(key, value);
        }
    }
    c.create()
}

/// Partition counts of `topics`; a missing topic maps to `None`.
pub fn partition_counts(client: &BaseConsumer, topics: &[&str], timeout: Duration) -> rdkafka::error::KafkaResult<Vec<(String, Option<usize>)>> {
    let md = client.fetch_metadata(None, timeout)?;
    Ok(topics
        .iter()
        .map(|&t| {
            let n = md.topics().iter().find(|mt| mt.name() == t && mt.error().is_none()).map(|mt| mt.partitions().len());
            (t.to_string(), n)
        })
        .collect())
}

/// [`partition_counts`] from async code: connects and looks up on the blocking pool.
pub async fn lookup_partition_counts(
    k: &KafkaConfig,
    topics: &[String],
    timeout: Duration,
) -> rdkafka::error::KafkaResult<Vec<(String, Option<usize>)>> {
    let (k, topics) = (k.clone(), topics.to_vec());
    tokio::task::spawn_blocking(move || {
        let client = metadata_client(&k)?;
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        partition_counts(&client, &refs, timeout)
    })
    .await
    .expect("a metadata lookup does not panic")
}

/// The partition count of one topic (`None` if it does not exist).
pub async fn lookup_partition_count(k: &KafkaConfig, topic: &str) -> rdkafka::error::KafkaResult<Option<i32>> {
    let mut counts = lookup_partition_counts(k, &[topic.to_string()], Duration::from_secs(30)).await?;
    Ok(counts.pop().and_then(|(_, n)| n).map(|n| n as i32))
}

/// `retention.ms` of each topic that has a finite time retention (absent: unknown, infinite or
/// not readable). Feeds the retention headroom gauge; a failure here only loses that gauge.
pub async fn lookup_retention_ms(k: &KafkaConfig, topics: &[String]) -> HashMap<String, i64> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, value) in &k.properties {
        if key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.") {
            c.set(key, value);
        }
    }
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = match c.create() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read topic retention; kbackup_retention_headroom_seconds stays unset");
            return HashMap::new();
        }
    };
    let specs: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let mut out = HashMap::new();
    match admin.describe_configs(&specs, &opts).await {
        Ok(results) => {
            for (t, r) in topics.iter().zip(results) {
                let ms = r.ok().and_then(|res| res.get("retention.ms").and_then(|e| e.value.as_deref()?.parse::<i64>().ok()));
                if let Some(ms) = ms.filter(|ms| *ms > 0) {
                    out.insert(t.clone(), ms);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read topic retention; kbackup_retention_headroom_seconds stays unset"),
    }
    out
}
