//! Reading markers back: the newest marker of each partition of a date.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{marker_dir, parse_marker_name, Marker, VERSION};

/// Why markers could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("listing {dir}: {source}")]
    List { dir: String, source: object_store::Error },
    #[error("reading {key}: {source}")]
    Get { key: String, source: object_store::Error },
    #[error("{key} is not a completion marker this build reads: {message}")]
    Invalid { key: String, message: String },
}

/// The newest marker of each partition (or only of `partition`) of a date under a topic path.
pub async fn newest(store: &dyn ObjectStore, path: &str, date: &str, partition: Option<i32>) -> Result<BTreeMap<i32, Marker>, ReadError> {
    let dir = marker_dir(path, date);
    let metas: Vec<object_store::ObjectMeta> =
        store.list(Some(&ObjectPath::from(dir.as_str()))).try_collect().await.map_err(|source| ReadError::List { dir: dir.clone(), source })?;
    let mut newest: BTreeMap<i32, (u32, String)> = BTreeMap::new();
    for m in metas {
        let key = m.location.to_string();
        let Some((p, seq)) = m.location.filename().and_then(parse_marker_name) else { continue };
        if partition.is_some_and(|want| want != p) {
            continue;
        }
        let e = newest.entry(p).or_insert((seq, key.clone()));
        if seq > e.0 {
            *e = (seq, key);
        }
    }
    let mut out = BTreeMap::new();
    for (p, (seq, key)) in newest {
        let m = get(store, &key).await?;
        // The name is what readers select by: a content that says otherwise is not a statement
        // about this date and partition (a copied or edited marker).
        let contradiction = if m.partition != p {
            Some(format!("it says partition {}, its name partition {p}", m.partition))
        } else if m.seq != seq {
            Some(format!("it says marker {}, its name marker {seq}", m.seq))
        } else if m.date != date {
            Some(format!("it says date {}, its folder {date}", m.date))
        } else {
            None
        };
        if let Some(message) = contradiction {
            return Err(ReadError::Invalid { key, message });
        }
        out.insert(p, m);
    }
    Ok(out)
}

/// One marker, by key.
pub async fn get(store: &dyn ObjectStore, key: &str) -> Result<Marker, ReadError> {
    let body = store
        .get(&ObjectPath::from(key))
        .await
        .map_err(|source| ReadError::Get { key: key.to_string(), source })?
        .bytes()
        .await
        .map_err(|source| ReadError::Get { key: key.to_string(), source })?;
    let m: Marker = serde_json::from_slice(&body).map_err(|e| ReadError::Invalid { key: key.to_string(), message: e.to_string() })?;
    if m.version > VERSION {
        return Err(ReadError::Invalid {
            key: key.to_string(),
            message: format!("format version {} is newer than this kbackup reads; upgrade", m.version),
        });
    }
    Ok(m)
}

/// What the markers say about one date of a topic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DateStatus {
    pub date: String,
    /// Partitions with a marker.
    pub complete: Vec<i32>,
    /// Partitions without a marker: those with files of the date, and every other partition
    /// of the topic when its partition count is known.
    pub incomplete: Vec<i32>,
    /// Partitions whose newest marker supersedes an earlier one (late events came in after
    /// the date was first declared complete).
    pub changed_after_complete: Vec<i32>,
    /// The newest marker of each complete partition.
    pub markers: Vec<Marker>,
}

/// The status of `date` under `path`: its markers, against the topic's partitions
/// (`partition_count`, when known) and those that have files of it (`with_files`); `only`
/// keeps some partitions.
pub async fn status(
    store: &dyn ObjectStore,
    path: &str,
    date: &str,
    with_files: &std::collections::BTreeSet<i32>,
    partition_count: Option<i32>,
    only: Option<&std::collections::BTreeSet<i32>>,
) -> Result<DateStatus, ReadError> {
    let keep = |p: &i32| only.is_none_or(|o| o.contains(p));
    let markers: Vec<Marker> = newest(store, path, date, None).await?.into_values().filter(|m| keep(&m.partition)).collect();
    let complete: Vec<i32> = markers.iter().map(|m| m.partition).collect();
    // A partition without files of the date is as incomplete as one with: `plan --wait-complete`
    // waits for its marker too.
    let all: std::collections::BTreeSet<i32> = with_files.iter().copied().chain(0..partition_count.unwrap_or(0)).collect();
    Ok(DateStatus {
        date: date.to_string(),
        incomplete: all.into_iter().filter(|p| keep(p) && !complete.contains(p)).collect(),
        changed_after_complete: markers.iter().filter(|m| m.supersedes.is_some()).map(|m| m.partition).collect(),
        complete,
        markers,
    })
}
