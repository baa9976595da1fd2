//! A stand-in for Sunbird's Secor (0.29 fork), written from how it behaves, independently of
//! kbackup's code: it leaves in Kafka, ZooKeeper and storage exactly the state a real Secor
//! leaves, so the switch between the two can be tested end to end.
//!
//! - Its consumer auto-commits what it *consumed* to Kafka (`enable.auto.commit=true`, empty
//!   metadata, as the Java client commits).
//! - It uploads `<path>/<IST date of syncts>-<kafkaPartition>-<uploadMillis>.json.gz` (gzip of
//!   the values, one per line), then writes the next offset, as ASCII decimal, to
//!   `/<kafka.zookeeper.path>/consumers/<group>/offsets/<topic>/<partition>` (Curator creates
//!   missing parents).
//! - After a restart it seeks each partition to its ZooKeeper offset (no node: earliest).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use kbackup::storage::Storage;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use zookeeper_client as zk;

use super::Stack;

pub struct SecorStandIn {
    pub brokers: String,
    pub zookeeper: String,
    /// `kafka.zookeeper.path` (chroot segment of the offset nodes).
    pub zk_path: String,
    pub group: String,
    /// `secor.azure.path` / `secor.s3.path`.
    pub path: String,
    pub storage: Storage,
}

/// The IST date of an event's `syncts` (every test event carries one), as Secor's parsers in
/// Asia/Kolkata format it.
pub fn ist_date(value: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(value).expect("test events are JSON");
    let ms = v["syncts"].as_i64().expect("test events carry syncts");
    let ist = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
    chrono::DateTime::from_timestamp_millis(ms).unwrap().with_timezone(&ist).format("%Y-%m-%d").to_string()
}

impl SecorStandIn {
    pub fn new(stack: &Stack, zookeeper: &str, zk_path: &str, group: &str, path: &str, storage: Storage) -> SecorStandIn {
        SecorStandIn {
            brokers: stack.brokers.clone(),
            zookeeper: zookeeper.to_string(),
            zk_path: zk_path.to_string(),
            group: group.to_string(),
            path: path.to_string(),
            storage,
        }
    }

    /// The offset node of a partition, where Secor's `ZookeeperConnector` keeps it.
    pub fn node(&self, topic: &str, partition: i32) -> String {
        let root = self.zk_path.trim_matches('/');
        let prefix = if root.is_empty() { String::new() } else { format!("/{root}") };
        format!("{prefix}/consumers/{}/offsets/{topic}/{partition}", self.group)
    }

    pub async fn zk(&self) -> zk::Client {
        zk::Client::connect(&self.zookeeper).await.expect("connect to the dev stack's ZooKeeper")
    }

    /// Secor's ZooKeeper offset of a partition (None: no node).
    pub async fn zk_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        match self.zk().await.get_data(&self.node(topic, partition)).await {
            Ok((data, _)) => Some(String::from_utf8(data).unwrap().parse().unwrap()),
            Err(zk::Error::NoNode) => None,
            Err(e) => panic!("zookeeper get: {e}"),
        }
    }

    /// What Secor's uploader does after an upload.
    pub async fn set_zk_offset(&self, topic: &str, partition: i32, offset: i64) {
        let client = self.zk().await;
        let path = self.node(topic, partition);
        let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let mut prefix = String::new();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            prefix.push('/');
            prefix.push_str(seg);
            match client.create(&prefix, b"", &opts).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => panic!("zookeeper create {prefix}: {e}"),
            }
        }
        client.set_data(&path, offset.to_string().as_bytes(), None).await.unwrap();
    }

    /// Where Secor starts a partition it has no node for: the log start.
    pub fn log_start(&self, topic: &str, p: i32) -> i64 {
        let c = self.consumer();
        super::wait_for("a partition's log start", Duration::from_secs(60), || c.fetch_watermarks(topic, p, Duration::from_secs(10)).ok()).0
    }

    fn consumer(&self) -> BaseConsumer {
        ClientConfig::new().set("bootstrap.servers", &self.brokers).set("group.id", &self.group).set("enable.auto.commit", "false").create().unwrap()
    }

    /// The auto-commit of what was consumed: `offsets[p]` for every partition, no metadata.
    pub fn auto_commit(&self, topic: &str, offsets: &[i64]) {
        let c = self.consumer();
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets.iter().enumerate() {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(*o)).unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).unwrap();
    }

    /// Reads `[from, to)` of a partition: (offset, value).
    pub fn read(&self, topic: &str, partition: i32, from: i64, to: i64) -> Vec<(i64, Vec<u8>)> {
        let c: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).set("group.id", format!("{}-reader", self.group)).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from)).unwrap();
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while (out.len() as i64) < to - from {
            assert!(std::time::Instant::now() < deadline, "stand-in read {} of {} messages", out.len(), to - from);
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                if m.offset() >= to {
                    break;
                }
                out.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
            }
        }
        out
    }

    /// Uploads `[from, to)` of a partition as Secor does, one file per date, then (unless it
    /// "dies" first) writes `to` to ZooKeeper. Returns the keys written.
    pub async fn upload(&self, topic: &str, partition: i32, from: i64, to: i64, write_zookeeper: bool) -> Vec<String> {
        let mut by_date: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (_, v) in self.read(topic, partition, from, to) {
            let file = by_date.entry(ist_date(&v)).or_default();
            file.extend_from_slice(&v);
            file.push(b'\n');
        }
        let mut keys = Vec::new();
        for (date, lines) in by_date {
            // {currentTimestamp}: Secor's upload time, distinct per file.
            std::thread::sleep(Duration::from_millis(2));
            let ms = chrono::Utc::now().timestamp_millis();
            let key = format!("{}/{date}-{partition}-{ms}.json.gz", self.path);
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&lines).unwrap();
            self.storage.store.put(&ObjectPath::from(key.as_str()), gz.finish().unwrap().into()).await.unwrap();
            keys.push(key);
        }
        if write_zookeeper {
            self.set_zk_offset(topic, partition, to).await;
        }
        keys
    }

    /// Secor restarted: every partition from its ZooKeeper offset (no node: the log start) to
    /// the end, uploaded and recorded.
    pub async fn resume(&self, stack: &Stack, topic: &str, partitions: i32) {
        let ends = stack.end_offsets(topic, partitions);
        for p in 0..partitions {
            let from = match self.zk_offset(topic, p).await {
                Some(o) => o,
                None => self.log_start(topic, p),
            };
            if from < ends[p as usize] {
                self.upload(topic, p, from, ends[p as usize], true).await;
            }
        }
    }
}
