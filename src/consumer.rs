//! The Kafka side: librdkafka settings kbackup relies on, and metadata look-ups.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::KafkaConfig;

/// librdkafka settings for the writer's group consumer. User properties override the tuning
/// defaults; the correctness settings (`enable.auto.commit`) cannot be overridden (config
/// validation refuses them).
pub fn group_config(k: &KafkaConfig) -> ClientConfig {
    let mut props: BTreeMap<&str, String> = BTreeMap::new();
    props.insert("auto.offset.reset", "earliest".into());
    props.insert("partition.assignment.strategy", "cooperative-sticky".into());
    // Cap librdkafka's prefetch: without it a large lag is buffered until the process runs out
    // of memory (a known failure of other writers).
    props.insert("queued.max.messages.kbytes", "32768".into());
    props.insert("fetch.max.bytes", "16777216".into());
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
pub fn partition_counts(
    client: &BaseConsumer,
    topics: &[&str],
    timeout: Duration,
) -> rdkafka::error::KafkaResult<Vec<(String, Option<usize>)>> {
    let md = client.fetch_metadata(None, timeout)?;
    Ok(topics
        .iter()
        .map(|&t| {
            let n = md.topics().iter().find(|mt| mt.name() == t && mt.error().is_none()).map(|mt| mt.partitions().len());
            (t.to_string(), n)
        })
        .collect())
}
