//! The writer's I/O shell for markers: list the date's files of the partition, learn what each
//! holds, and write the next marker create-only.
//!
//! The files come from a storage listing, not from the writer's memory: a date's files may have
//! been uploaded by earlier owners (another member, an earlier run, Secor before a takeover).
//! What this owner uploaded it knows; any other file is read and its lines counted (record
//! files also say their offsets).

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{marker_key, read, statement, MarkedFile, Marker, Statement, VERSION};
use crate::naming::FileLayout;

/// How often a marker is tried again when another owner wrote the same sequence number first.
const RACES: u32 = 5;

/// A date of a partition whose marker is due: what the core hands the shell.
#[derive(Debug, Clone)]
pub struct MarkerJob {
    /// The topic's index in the config.
    pub topic: usize,
    pub topic_name: String,
    pub layout: Arc<FileLayout>,
    pub partition: i32,
    /// The assignment it belongs to; a result for an earlier one is ignored.
    pub epoch: u64,
    pub date: NaiveDate,
    /// `date` as the topic's names write it.
    pub date_str: String,
    pub complete_below: i64,
    /// Files of the date this owner uploaded, with what they hold (not read again).
    pub known: Vec<MarkedFile>,
    /// A superseding marker for late events.
    pub late: bool,
    /// Write the date's `_SUCCESS` once every partition is marked (`success_files`).
    pub success_files: bool,
}

/// What writing a marker did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stated {
    pub key: String,
    pub seq: u32,
    pub events: u64,
    pub files: usize,
    /// False when the newest marker already listed these files.
    pub written: bool,
    /// The events the newest marker before did not list (late events another owner took in).
    pub added_events: u64,
}

/// A marker job's result, back to the core.
#[derive(Debug)]
pub struct MarkerDone {
    pub job: MarkerJob,
    pub result: Result<Stated, WriteError>,
}

/// Why a marker was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("listing {dir}: {source}")]
    List { dir: String, source: object_store::Error },
    #[error("reading {key}: {message}")]
    Read { key: String, message: String },
    #[error(transparent)]
    Markers(#[from] read::ReadError),
    #[error("writing {key}: {source}")]
    Put { key: String, source: object_store::Error },
    #[error("{key}: other owners kept writing markers first ({RACES} tries)")]
    Raced { key: String },
}

/// What a marker job comes to, given the date's files and the newest marker: pure, so the
/// real shell and the simulation's marker port decide with the same code.
#[derive(Debug, Clone, PartialEq)]
pub enum Composed {
    /// The newest marker already lists these files: nothing to write.
    Stated(Stated),
    /// Write `marker` under `stated.key`, create-only; `stated` is the result once it is written.
    Write { marker: Box<Marker>, stated: Stated },
}

/// The marker `job` needs, from the date's `files` (sorted by key) and the `newest` marker of
/// the partition for the date, written at `now_ms`.
pub fn compose(job: &MarkerJob, files: Vec<MarkedFile>, newest: Option<&Marker>, now_ms: i64) -> Composed {
    let path = job.layout.marker_path();
    let listed_before = |f: &MarkedFile| newest.is_some_and(|m| m.files.iter().any(|g| g.key == f.key));
    let added_events = files.iter().filter(|f| !listed_before(f)).map(|f| f.events).sum::<u64>();
    let events = files.iter().map(|f| f.events).sum();
    let (seq, supersedes) = match statement(newest, &files) {
        Statement::Stated { seq } => {
            let key = marker_key(&path, &job.date_str, job.partition, seq);
            return Composed::Stated(Stated { key, seq, events, files: files.len(), written: false, added_events: 0 });
        }
        Statement::Write { seq, supersedes } => (seq, supersedes),
    };
    let key = marker_key(&path, &job.date_str, job.partition, seq);
    let stated = Stated {
        key: key.clone(),
        seq,
        events,
        files: files.len(),
        written: true,
        added_events: if supersedes.is_some() { added_events } else { 0 },
    };
    let marker = Marker {
        version: VERSION,
        topic: job.topic_name.clone(),
        date: job.date_str.clone(),
        partition: job.partition,
        seq,
        complete_below: job.complete_below,
        events,
        files,
        written_at_ms: now_ms,
        written_at: DateTime::<Utc>::from_timestamp_millis(now_ms).map(|t| t.to_rfc3339()).unwrap_or_default(),
        supersedes: supersedes.map(|s| marker_key(&path, &job.date_str, job.partition, s)),
    };
    Composed::Write { marker: Box::new(marker), stated }
}

/// True if `key`, listed under the topic's data directory `dir`, is a file of the job's date
/// and partition (the rule both the shell and the simulation list by).
pub fn is_date_file(job: &MarkerJob, dir: &str, key: &str) -> bool {
    let layout = &job.layout;
    layout.route_dir_of(key) == dir.trim_matches('/')
        && layout.parse(key).is_some_and(|n| n.date == job.date && n.kafka_partition == Some(job.partition))
}

/// Writes the marker `job` asks for, unless the newest one already says the same.
pub async fn state(store: &dyn ObjectStore, job: &MarkerJob, now_ms: i64, mode: PutMode) -> Result<Stated, WriteError> {
    let path = job.layout.marker_path();
    let mut key = String::new();
    for _ in 0..RACES {
        let files = date_files(store, job).await?;
        let newest = read::newest(store, &path, &job.date_str, Some(job.partition)).await?.remove(&job.partition);
        let (marker, stated) = match compose(job, files, newest.as_ref(), now_ms) {
            Composed::Stated(stated) => return Ok(stated),
            Composed::Write { marker, stated } => {
                key = stated.key.clone();
                (marker, stated)
            }
        };
        let body = serde_json::to_vec_pretty(&*marker).expect("a marker serializes");
        let opts = PutOptions { mode: mode.clone(), ..Default::default() };
        match store.put_opts(&ObjectPath::from(key.as_str()), PutPayload::from(body), opts).await {
            Ok(_) => return Ok(stated),
            // Another owner wrote this number first: read again and decide again.
            Err(object_store::Error::AlreadyExists { .. }) => continue,
            Err(source) => return Err(WriteError::Put { key, source }),
        }
    }
    Err(WriteError::Raced { key })
}

/// The date's files of the job's partition, under every directory of the topic but its error
/// path, with what each holds.
async fn date_files(store: &dyn ObjectStore, job: &MarkerJob) -> Result<Vec<MarkedFile>, WriteError> {
    let layout = &job.layout;
    let mut out = Vec::new();
    for dir in layout.data_dirs() {
        // Names start with the date (stock Secor's: are in the date's folder): list from it (S3
        // and GCS start there; others filter).
        let from = layout.date_listing(&dir, &job.date_str);
        let listed = match layout.secor() {
            Some(_) => store.list(Some(&ObjectPath::from(from.as_str()))),
            None => store.list_with_offset(Some(&ObjectPath::from(dir.as_str())), &ObjectPath::from(from.as_str())),
        };
        let metas: Vec<object_store::ObjectMeta> = listed.try_collect().await.map_err(|source| WriteError::List { dir: dir.clone(), source })?;
        for m in metas {
            let key = m.location.to_string();
            if is_date_file(job, &dir, &key) {
                out.push(key);
            }
        }
    }
    out.sort();
    let mut files = Vec::with_capacity(out.len());
    for key in out {
        match job.known.iter().find(|f| f.key == key) {
            Some(f) => files.push(f.clone()),
            None => files.push(count(store, &key).await?),
        }
    }
    Ok(files)
}

/// Reads a file another writer uploaded: its lines, and for a record file or a SequenceFile
/// its offsets.
async fn count(store: &dyn ObjectStore, key: &str) -> Result<MarkedFile, WriteError> {
    let err = |e: &dyn std::fmt::Display| WriteError::Read { key: key.to_string(), message: e.to_string() };
    let body = store.get(&ObjectPath::from(key)).await.map_err(|e| err(&e))?.bytes().await.map_err(|e| err(&e))?;
    let records = crate::naming::parse_name(key).is_some_and(|n| n.records);
    let key_owned = key.to_string();
    tokio::task::spawn_blocking(move || {
        let err = |e: &dyn std::fmt::Display| WriteError::Read { key: key_owned.clone(), message: e.to_string() };
        let mut f = MarkedFile { key: key_owned.clone(), events: 0, first_offset: None, last_offset: None };
        if crate::seqfile::is_sequence_file(&body) {
            // Keyed by offset: what it holds is known exactly.
            for r in crate::seqfile::Reader::new(&body).map_err(|e| err(&e))? {
                let r = r.map_err(|e| err(&e))?;
                f.events += 1;
                if let Some(o) = r.offset {
                    f.first_offset = Some(f.first_offset.map_or(o, |a| a.min(o)));
                    f.last_offset = Some(f.last_offset.map_or(o, |a| a.max(o)));
                }
            }
            return Ok(f);
        }
        for line in crate::seal::lines(&key_owned, &body) {
            let line = line.map_err(|e| err(&e))?;
            f.events += 1;
            if records {
                if let Some(o) = crate::record::decode(&line).ok().and_then(|r| r.offset) {
                    f.first_offset = Some(f.first_offset.map_or(o, |a| a.min(o)));
                    f.last_offset = Some(f.last_offset.map_or(o, |a| a.max(o)));
                }
            }
        }
        Ok(f)
    })
    .await
    .expect("counting lines does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(late: bool) -> MarkerJob {
        MarkerJob {
            topic: 0,
            topic_name: "unique".into(),
            layout: Arc::new(FileLayout::bare("unique/raw")),
            partition: 3,
            epoch: 1,
            date: "2026-12-01".parse().unwrap(),
            date_str: "2026-12-01".into(),
            complete_below: 10,
            known: Vec::new(),
            late,
            success_files: false,
        }
    }

    fn file(key: &str, events: u64) -> MarkedFile {
        MarkedFile { key: format!("unique/raw/{key}"), events, first_offset: None, last_offset: None }
    }

    #[test]
    fn the_first_marker_is_written_then_stated_then_superseded_by_a_late_file() {
        let files = vec![file("2026-12-01-3-1.json.gz", 4), file("2026-12-01-3-2.json.gz", 6)];
        let Composed::Write { marker, stated } = compose(&job(false), files.clone(), None, 1_764_547_200_000) else {
            panic!("nothing was written yet")
        };
        assert_eq!((marker.seq, marker.events, stated.events, stated.files, stated.written), (1, 10, 10, 2, true));
        let key = stated.key.clone();
        assert_eq!(key, marker_key("unique/raw", "2026-12-01", 3, 1));
        assert_eq!(marker.written_at, "2025-12-01T00:00:00+00:00");
        assert!(
            matches!(compose(&job(false), files.clone(), Some(&marker), 0), Composed::Stated(s) if !s.written && s.key == key),
            "the same files: already stated"
        );
        let mut more = files;
        more.push(file("2026-12-01-3-3.json.gz", 1));
        let Composed::Write { marker: next, stated, .. } = compose(&job(true), more, Some(&marker), 0) else { panic!("a late file supersedes") };
        assert_eq!((next.seq, next.supersedes.as_deref(), stated.added_events), (2, Some(key.as_str()), 1));
    }

    #[test]
    fn only_the_dates_files_of_the_partition_under_the_directory_count() {
        let j = job(false);
        assert!(is_date_file(&j, "unique/raw", "unique/raw/2026-12-01-3-1.json.gz"));
        assert!(!is_date_file(&j, "unique/raw", "unique/raw/2026-12-01-4-1.json.gz"), "another partition");
        assert!(!is_date_file(&j, "unique/raw", "unique/raw/2026-12-02-3-1.json.gz"), "another date");
        assert!(!is_date_file(&j, "unique/raw", "unique/raw/not-a-backup"), "not a backup name");
    }
}
