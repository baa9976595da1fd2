//! `kbackup produce-sample`: write synthetic Sunbird telemetry into a topic (demo, tests, bench).

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::config::KafkaConfig;
use crate::consumer::{client_config, Role};

use crate::sample::TelemetryGen;

/// Arguments of `kbackup produce-sample`.
#[derive(Debug, clap::Args)]
pub struct ProduceSampleArgs {
    /// Bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic to write to.
    #[arg(long)]
    pub topic: String,
    /// Number of events.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long)]
    pub create_partitions: Option<i32>,
    /// Distinct device ids (message keys).
    #[arg(long, default_value_t = 1_000)]
    pub devices: u64,
    /// Random seed; the same seed writes the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First `syncts`, epoch ms (default: 2020-01-31T12:00Z, so events straddle an IST midnight).
    #[arg(long, default_value_t = 1_580_472_000_000)]
    pub syncts_from: i64,
    /// Span of `syncts` values in hours.
    #[arg(long, default_value_t = 24)]
    pub hours: i64,
    /// Events per second (0: as fast as the producer goes): a steady load, as the benchmark's
    /// steady-state row needs.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<_> = client_config(&KafkaConfig::for_brokers(brokers), Role::Admin, &[]).create()?;
    let res = admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new()).await?;
    for r in res {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Produces the events, keyed by device id, placed as the Java client would (murmur2).
pub async fn run(a: ProduceSampleArgs) -> anyhow::Result<()> {
    if let Some(n) = a.create_partitions {
        ensure_topic(&a.brokers, &a.topic, n).await?;
    }
    let started = Instant::now();
    let (count, bytes) = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, u64)> {
        let producer: ThreadedProducer<DefaultProducerContext> = client_config(
            &KafkaConfig::for_brokers(a.brokers.clone()),
            Role::Producer,
            &[
                ("partitioner", "murmur2_random"),
                ("linger.ms", "20"),
                ("batch.size", "1000000"),
                ("compression.type", "lz4"),
                ("queue.buffering.max.kbytes", "262144"),
            ],
        )
        .create()
        .context("creating producer")?;
        let mut gen = TelemetryGen::new(a.seed, a.devices, a.syncts_from, a.syncts_from + a.hours * 3_600_000);
        let mut bytes = 0u64;
        let paced = Instant::now();
        for i in 0..a.count {
            if a.rate > 0 && i % 100 == 0 {
                // Event i goes out no earlier than i / rate seconds in: paced in steps of 100.
                let due = paced + Duration::from_secs_f64(i as f64 / a.rate as f64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            let (key, value, _) = gen.next_event(i);
            bytes += value.len() as u64;
            crate::producer::send_blocking(&producer, BaseRecord::to(&a.topic).key(&key).payload(&value)).context("producing")?;
        }
        producer.flush(Duration::from_secs(120)).context("flushing producer")?;
        Ok((a.count, bytes))
    })
    .await??;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!("produced {count} events ({:.1} MB) in {secs:.1}s ({:.0} events/s)", bytes as f64 / 1e6, count as f64 / secs);
    Ok(())
}
