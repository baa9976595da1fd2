//! A stand-in for stock Secor (pinterest/secor 0.29+), written from how it behaves,
//! independently of kbackup's code, configured as its own defaults and a deployment's file set
//! it up: `JsonMessageParser` on `syncts` (epoch milliseconds) in `secor.parser.timezone`
//! Asia/Kolkata, `SequenceFileReaderWriterFactory` without a codec, daily folders. Checked once
//! against a real stock Secor (7b92117, built from source, against this stack's Kafka,
//! ZooKeeper and S3 server), which is how its files came to be record-compressed here.
//!
//! - It uploads `<path>/<topic>/dt=<date>/<generation>_<kafkaPartition>_<firstOffset:%020d>`:
//!   one SequenceFile per date folder per upload, keyed by offset (`LongWritable`), the values
//!   as `BytesWritable`, each compressed with `DefaultCodec` (Hadoop's default compression type
//!   is RECORD, codec or not); the first offset of each file is its first message's.
//! - After an upload it writes the next offset to
//!   `/<kafka.zookeeper.path>/consumers/<group>/offsets/<topic>/<partition>` as Curator does:
//!   `create().creatingParentsIfNeeded()` first (a new node holds Curator's default data, the
//!   host's address), then `setData`. A kill between the two leaves the address in the node.
//! - It commits nothing to Kafka (its position lives in ZooKeeper).
//! - Restarted, it reads each partition from its ZooKeeper offset (no node: the log start).

use std::collections::BTreeMap;

use kbackup::storage::Storage;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use zookeeper_client as zk;

use super::secor_standin::{ist_date, SecorStandIn};
use super::Stack;

/// Curator's default node data: the creating host's address.
pub const CURATOR_DEFAULT_DATA: &[u8] = b"127.0.0.1";

/// What the stand-in does with ZooKeeper after an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterUpload {
    /// Creates the node if needed, then writes the offset.
    WriteOffset,
    /// Killed after creating the node, before writing the offset.
    KilledAfterCreate,
}

/// Stock Secor: the fork's stand-in's Kafka, ZooKeeper and storage handles, stock habits.
pub struct StockSecor {
    pub base: SecorStandIn,
}

impl StockSecor {
    pub fn new(stack: &Stack, zookeeper: &str, zk_path: &str, group: &str, path: &str, storage: Storage) -> StockSecor {
        StockSecor { base: SecorStandIn::new(stack, zookeeper, zk_path, group, path, storage) }
    }

    /// The node's data: `None` without a node.
    pub async fn zk_data(&self, topic: &str, partition: i32) -> Option<Vec<u8>> {
        match self.base.zk().await.get_data(&self.base.node(topic, partition)).await {
            Ok((data, _)) => Some(data),
            Err(zk::Error::NoNode) => None,
            Err(e) => panic!("zookeeper get: {e}"),
        }
    }

    /// The node's offset: `None` without a node or without an offset in it.
    pub async fn zk_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.zk_data(topic, partition).await.and_then(|d| String::from_utf8(d).ok()?.parse().ok())
    }

    /// Curator's `create().creatingParentsIfNeeded().forPath(path)` (the default data on the
    /// leaf), then, unless killed, `setData(offset)`.
    pub async fn set_zk_offset(&self, topic: &str, partition: i32, offset: i64, after: AfterUpload) {
        let client = self.base.zk().await;
        let path = self.base.node(topic, partition);
        let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let mut prefix = String::new();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for (i, seg) in segments.iter().enumerate() {
            prefix.push('/');
            prefix.push_str(seg);
            let data: &[u8] = if i + 1 == segments.len() { CURATOR_DEFAULT_DATA } else { b"" };
            match client.create(&prefix, data, &opts).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => panic!("zookeeper create {prefix}: {e}"),
            }
        }
        if after == AfterUpload::WriteOffset {
            client.set_data(&path, offset.to_string().as_bytes(), None).await.unwrap();
        }
    }

    /// Uploads `[from, to)` of a partition as stock Secor does (one SequenceFile per date
    /// folder, named by its first offset), then records `to` in ZooKeeper (or is killed
    /// half-way). Returns the keys written.
    pub async fn upload(&self, topic: &str, partition: i32, from: i64, to: i64, after: AfterUpload) -> Vec<String> {
        let mut by_date: BTreeMap<String, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
        for (o, v) in self.base.read(topic, partition, from, to) {
            by_date.entry(ist_date(&v)).or_default().push((o, v));
        }
        let mut keys = Vec::new();
        for (date, records) in by_date {
            let key = format!("{}/{topic}/dt={date}/1_{partition}_{:020}", self.base.path, records[0].0);
            self.base.storage.store.put(&ObjectPath::from(key.as_str()), super::hadoop_seq::write(&records).into()).await.unwrap();
            keys.push(key);
        }
        self.set_zk_offset(topic, partition, to, after).await;
        keys
    }

    /// Restarted: every partition from its ZooKeeper offset (no node: the log start) to the end.
    pub async fn resume(&self, stack: &Stack, topic: &str, partitions: i32) {
        let ends = stack.end_offsets(topic, partitions);
        for p in 0..partitions {
            let from = match self.zk_offset(topic, p).await {
                Some(o) => o,
                None => self.base.log_start(topic, p),
            };
            if from < ends[p as usize] {
                self.upload(topic, p, from, ends[p as usize], AfterUpload::WriteOffset).await;
            }
        }
    }
}

/// Every message of `expected` exactly once across the topic's files under `<path>/<topic>/`
/// (stock Secor's and kbackup's alike): each file a SequenceFile named for its partition,
/// date and first offset, holding its partition's messages of that date in offset order.
/// Hidden objects (`_SUCCESS`, `_kbackup/`) are skipped; returns the `_SUCCESS` keys seen.
pub fn assert_stock_exactly_once(blobs: &BTreeMap<String, Vec<u8>>, path: &str, topic: &str, expected: &[super::Expect]) -> Vec<String> {
    use std::collections::HashMap;
    let want: HashMap<&[u8], &super::Expect> = expected.iter().map(|e| (e.line.as_slice(), e)).collect();
    assert_eq!(want.len(), expected.len(), "test bug: duplicate expected lines");
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    let mut success = Vec::new();
    let base = format!("{path}/{topic}/");
    for (key, data) in blobs {
        let Some(rest) = key.strip_prefix(&base) else { continue };
        if rest.split('/').any(|c| c.starts_with('_')) {
            if rest.ends_with("/_SUCCESS") {
                assert!(data.is_empty(), "{key} is not empty");
                success.push(key.clone());
            }
            continue;
        }
        let (folder, file) = rest.rsplit_once('/').unwrap_or_else(|| panic!("{key}: not in a date folder"));
        let date = folder.strip_prefix("dt=").unwrap_or_else(|| panic!("{key}: not in a dt= folder"));
        let parts: Vec<&str> = file.split('_').collect();
        assert!(parts.len() == 3 && parts[2].len() == 20, "{key}: not <gen>_<partition>_<offset:%020d>");
        let (partition, first): (i32, i64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        let records = super::hadoop_seq::read(data);
        assert_eq!(records.first().map(|r| r.0), Some(first), "{key}: named for its first offset");
        assert!(records.windows(2).all(|w| w[0].0 < w[1].0), "{key}: offsets in order");
        for (_, value) in records.iter() {
            let e = want.get(value.as_slice()).unwrap_or_else(|| panic!("unexpected message in {key}: {}", String::from_utf8_lossy(value)));
            assert_eq!((e.partition, e.date.as_str()), (partition, date), "{key} holds {}", String::from_utf8_lossy(value));
        }
        for (_, value) in records {
            let line = want.get_key_value(value.as_slice()).unwrap().0;
            *seen.entry(line).or_default() += 1;
        }
    }
    for e in expected {
        let n = seen.get(e.line.as_slice()).copied().unwrap_or(0);
        assert_eq!(n, 1, "message {} found {n} times", String::from_utf8_lossy(&e.line));
    }
    success
}
