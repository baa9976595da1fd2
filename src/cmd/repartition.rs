//! `kbackup repartition`: split old `<date>-<ts>` files into new `<date>-<p>-<ts>` files by key,
//! beside the originals, so WFS can run per partition over history too.

use std::collections::BTreeMap;

use anyhow::Context;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::cmd::ExitError;
use crate::cmd::SelectArgs;
use crate::config::Compression;
use crate::partitioner::{java_hashcode_partition, murmur2, murmur2_partition};
use crate::replay::key_of;
use crate::upload::{put_new, Existing, Outcome};

/// Arguments of `kbackup repartition`.
#[derive(Debug, clap::Args)]
pub struct RepartitionArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// murmur2 (Java client, Flink) or java-hashcode (Samza), as the topic was produced.
    #[arg(long, value_enum)]
    pub partitioner: HashPartitioner,
    /// Fields whose first present value is the key, e.g. context.did,mid.
    #[arg(long, value_delimiter = ',', required = true)]
    pub key: Vec<String>,
    /// The topic's partition count (default: from the config's brokers and --topic).
    #[arg(long)]
    pub partition_count: Option<i32>,
    /// Say what would be written; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// How the topic placed keys (old-name files carry no partition, so `same` has no meaning here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HashPartitioner {
    /// The Java client's default for keyed records (and Flink's).
    Murmur2,
    /// Samza's `abs(key.hashCode()) % partitions`, as Sunbird's dedup job placed events.
    JavaHashcode,
}

/// Writes the new-name files; originals are never touched.
pub async fn run(a: RepartitionArgs) -> anyhow::Result<()> {
    let usage = |m: String| -> anyhow::Error { ExitError { code: 2, message: m }.into() };
    let count = match (a.partition_count, &a.select.config, &a.select.topic) {
        (Some(n), _, _) if n > 0 => n,
        (Some(_), _, _) => return Err(usage("--partition-count must be at least 1".into())),
        (None, Some(cfg), Some(topic)) => {
            let kafka = crate::config::Config::load(cfg).map_err(|e| usage(e.to_string()))?.kafka;
            crate::consumer::lookup_partition_count(&kafka, topic).await?.ok_or_else(|| anyhow::anyhow!("topic {topic} not found"))?
        }
        _ => return Err(usage("give --partition-count (or --config with --topic to read it from Kafka)".into())),
    };
    let (storage, listed, _) = a.select.resolve().await?;
    let old: Vec<_> = listed.iter().filter(|l| l.kafka_partition.is_none()).collect();
    if old.is_empty() {
        crate::outln!("no old-name files in the selection");
        return Ok(());
    }
    let paths: Vec<Vec<String>> = a.key.iter().map(|k| k.split('.').map(String::from).collect()).collect();
    let (mut written, mut existing, mut unkeyed, mut events) = (0, 0, 0u64, 0u64);
    for l in old {
        let raw = storage.read(&l.key).await?;
        let gz = l.key.ends_with(".gz");
        // Lines keep their order within each new file.
        let mut by_part: BTreeMap<i32, Vec<u8>> = BTreeMap::new();
        for line in crate::seal::lines(&l.key, &raw) {
            let line = line.with_context(|| format!("{}: corrupt or truncated", l.key))?;
            let p = match key_of(&line, &paths) {
                Some(k) if a.partitioner == HashPartitioner::Murmur2 => murmur2_partition(k.as_bytes(), count),
                Some(k) => java_hashcode_partition(&k, count),
                None => {
                    // No key: placed by the whole line, so a rerun places it the same way.
                    unkeyed += 1;
                    (murmur2(&line) & 0x7fff_ffff) % count
                }
            };
            let buf = by_part.entry(p).or_default();
            buf.extend_from_slice(&line);
            buf.push(b'\n');
            events += 1;
        }
        let dir = l.key.rsplit_once('/').map_or("", |(d, _)| d);
        // Same date, same timestamp, the partition added: a rerun produces the same names and
        // finds them already written. Sunbird's readers want `yyyy-MM-dd` dates.
        let date = l.name.date.format("%Y-%m-%d");
        let ts = l.name.timestamp_ms.context("an old-name file without a timestamp")?;
        let ext = if gz { ".json.gz" } else { ".json" };
        for (p, data) in by_part {
            let key = if dir.is_empty() { format!("{date}-{p}-{ts}{ext}") } else { format!("{dir}/{date}-{p}-{ts}{ext}") };
            if a.dry_run {
                match storage.store.head(&ObjectPath::from(key.as_str())).await {
                    Ok(_) => {
                        existing += 1;
                        crate::outln!("exists already {key}");
                    }
                    Err(object_store::Error::NotFound { .. }) => {
                        written += 1;
                        crate::outln!("would write {key} ({} bytes uncompressed)", data.len());
                    }
                    Err(e) => return Err(e).with_context(|| format!("looking up {key}")),
                }
                continue;
            }
            let body = crate::seal::encode(data, if gz { Compression::Gzip } else { Compression::None }, 1);
            match put_new(storage.store.as_ref(), &key, body, Existing::Compare, |_| {}).await.0 {
                Outcome::Stored => {
                    written += 1;
                    crate::outln!("wrote {key}");
                }
                Outcome::AlreadyThere => existing += 1,
                Outcome::Conflict => {
                    anyhow::bail!("{key} exists with different content; not overwritten")
                }
            }
        }
    }
    let verb = if a.dry_run { "would be written" } else { "written" };
    crate::outln!("{events} events: {written} file(s) {verb}, {existing} already there; originals untouched");
    if unkeyed > 0 {
        tracing::warn!("{unkeyed} event(s) had none of the --key fields; placed by a hash of the whole event");
    }
    Ok(())
}
