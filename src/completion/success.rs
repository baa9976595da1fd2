//! `_SUCCESS`, as Secor's `PartitionFinalizer` writes it: once every Kafka partition's
//! completion marker of a date exists, an empty `_SUCCESS` object lands in each of the topic's
//! folders of that date (stock Secor's `dt=<date>/`), create-only, so Hive and Spark jobs that
//! wait for it keep working. Partitions are registered in no Hive metastore.
//!
//! Whoever writes the last partition's marker writes it: every owner, after stating its
//! marker, lists the date's markers (listings are consistent on every supported store), so of
//! two owners marking the last two partitions at once, the later one sees both.

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use super::read;
use super::write::{MarkerJob, WriteError};

/// The name Hadoop's output committers and Secor's finalizer give the marker.
pub const SUCCESS: &str = "_SUCCESS";

/// Writes the date's `_SUCCESS` files if every one of `partitions` has a marker of it; returns
/// the keys written (or found written). `None` while some partition is unmarked.
pub async fn after_marker(store: &dyn ObjectStore, job: &MarkerJob, partitions: i32) -> Result<Option<Vec<String>>, WriteError> {
    let marked = read::newest(store, &job.layout.marker_path(), &job.date_str, None).await?;
    if partitions < 1 || (0..partitions).any(|p| !marked.contains_key(&p)) {
        return Ok(None);
    }
    let mut keys = Vec::new();
    for dir in job.layout.data_dirs() {
        let folder = job.layout.date_listing(&dir, &job.date_str);
        let key = format!("{}/{SUCCESS}", folder.trim_end_matches('/'));
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match store.put_opts(&ObjectPath::from(key.as_str()), PutPayload::new(), opts).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => keys.push(key),
            Err(source) => return Err(WriteError::Put { key, source }),
        }
    }
    Ok(Some(keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::{marker_key, Marker};
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;
    use std::sync::Arc;

    fn job(layout: &crate::naming::FileLayout, partition: i32) -> MarkerJob {
        MarkerJob {
            topic: 0,
            topic_name: "t".into(),
            layout: Arc::new(layout.clone()),
            partition,
            epoch: 1,
            date: "2026-12-04".parse().unwrap(),
            date_str: "dt=2026-12-04".into(),
            complete_below: 0,
            known: Vec::new(),
            late: false,
            success_files: true,
        }
    }

    async fn mark(store: &InMemory, layout: &crate::naming::FileLayout, partition: i32) {
        let m = Marker {
            version: 1,
            topic: "t".into(),
            date: "dt=2026-12-04".into(),
            partition,
            seq: 1,
            complete_below: 10,
            events: 0,
            files: Vec::new(),
            written_at_ms: 0,
            written_at: String::new(),
            supersedes: None,
        };
        let key = marker_key(&layout.marker_path(), "dt=2026-12-04", partition, 1);
        store.put(&ObjectPath::from(key), PutPayload::from(serde_json::to_vec(&m).unwrap())).await.unwrap();
    }

    /// `_SUCCESS` lands in the date's folder of every prefix once the last partition is
    /// marked, not before; a second time is no error and changes nothing.
    #[tokio::test]
    async fn success_lands_once_every_partition_is_marked() {
        let text = "[kafka]\nbrokers='x:1'\n[storage]\nurl='file:///tmp/x'\n[[topic]]\nname='t'\npath='backup'\nlayout='secor'\nprefix_field='eid'\nprefix_map={DEFAULT='raw',X='x'}\n";
        let layout = crate::config::Config::parse(text, "t").unwrap().topics[0].layout().unwrap();
        let store = InMemory::new();
        mark(&store, &layout, 0).await;
        assert_eq!(after_marker(&store, &job(&layout, 0), 2).await.unwrap(), None, "partition 1 is not marked");
        mark(&store, &layout, 1).await;
        let keys = after_marker(&store, &job(&layout, 1), 2).await.unwrap().unwrap();
        assert_eq!(keys, vec!["backup/t/raw/dt=2026-12-04/_SUCCESS", "backup/t/x/dt=2026-12-04/_SUCCESS"]);
        for k in &keys {
            assert!(store.get(&ObjectPath::from(k.as_str())).await.unwrap().bytes().await.unwrap().is_empty());
        }
        assert_eq!(after_marker(&store, &job(&layout, 0), 2).await.unwrap().unwrap(), keys, "again: found, not an error");
        assert_eq!(after_marker(&store, &job(&layout, 0), 3).await.unwrap(), None, "a third partition");
    }
}
