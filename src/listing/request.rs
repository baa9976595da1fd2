//! What the reading tools (`ls`, `cat`, `repartition`, `replay`) ask of a backup: where it is,
//! which dates and partitions, and, once storage is opened, the files that answer, the files a
//! restore reads, and what the completion markers say.
//!
//! The commands only translate their flags into a [`Request`]; everything here is library
//! logic with typed errors, so a test (or another front end) can select files the same way.

use std::collections::BTreeSet;

use chrono::NaiveDate;

use super::{check_partitions, DayArg, Listed, Selection};
use crate::config::{Config, StorageConfig};
use crate::naming::FileLayout;
use crate::storage::Storage;

/// Where the backup is.
pub enum Place {
    /// A topic of a config: its storage, path, prefixes, date format and time zone. `path`, when
    /// given, replaces the topic's path (a backup moved, or another prefix's files).
    Topic { config: Box<Config>, topic: String, path: Option<String> },
    /// A storage URL and a path inside it, without a config: the default layout, UTC dates and
    /// Secor's fixed `invalid_date` fallback.
    Url { url: String, path: String },
}

/// Which files of a backup.
pub struct Request {
    pub place: Place,
    /// First date, inclusive. Required, except by a restore selected by a time window.
    pub from: Option<DayArg>,
    /// Last date, inclusive (default: `from`).
    pub to: Option<DayArg>,
    /// Only these Kafka partitions; checked against the topic's partition count in Kafka when
    /// the place is a config's topic.
    pub partitions: Option<BTreeSet<i32>>,
    /// With `partitions`, also keep old-name files that carry no partition.
    pub include_unpartitioned: bool,
}

/// Why a selection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request cannot be met as given (a usage error: exit code 2 at the command edge).
    #[error("{0}")]
    Usage(String),
    #[error("listing {dirs} in {storage}: {source}")]
    List {
        dirs: String,
        storage: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("reading the completion markers of {date} in {storage}: {source}")]
    Markers {
        date: String,
        storage: String,
        #[source]
        source: Box<crate::completion::read::ReadError>,
    },
}

/// The backup to restore from, as selected.
pub struct Source {
    pub storage: Storage,
    /// The selected files, in the order to send them.
    pub listed: Vec<Listed>,
    /// The backup's base path: the writer records the topic's settings under it.
    pub path: String,
    /// The topic's `invalid_date`, and its record files when that date is not among the
    /// selected ones: earlier builds filed tombstones and non-JSON records there, so they are
    /// outside every date range a window is selected by.
    pub invalid_date: NaiveDate,
    pub invalid_files: Vec<Listed>,
}

/// A topic's backup, opened once from its config: where it is, how its files are named, and
/// the dates that depend on the topic (its `invalid_date`, today in its time zone). The one way
/// the reading tools (`ls`, `cat`, `replay`, `verify`, `plan --wait-complete`) open a backup.
pub struct Backup {
    pub storage: Storage,
    pub layout: FileLayout,
    /// The topic's `invalid_date`.
    pub invalid_date: NaiveDate,
    /// Today in the topic's output time zone, for `today`, `-N`.
    pub today: NaiveDate,
}

impl Backup {
    /// Opens topic `name`'s backup; a topic the config lacks, or settings that cannot be used,
    /// are usage errors naming it.
    pub fn of_topic(config: &Config, name: &str) -> Result<Backup, RequestError> {
        let t = config.topic(name).ok_or_else(|| usage(format!("topic `{name}` is not in the config")))?;
        let layout = t.layout().map_err(|e| usage(format!("topic `{name}`: {e}")))?;
        let invalid_date = t.invalid_day().map_err(|e| usage(e.to_string()))?;
        let today = t.today().map_err(|e| usage(e.to_string()))?;
        let storage = Storage::open(&config.storage).map_err(|e| usage(e.to_string()))?;
        Ok(Backup { storage, layout, invalid_date, today })
    }
}

/// The selected files of a backup.
pub struct Selected {
    pub storage: Storage,
    /// In (date, partition, timestamp) order.
    pub files: Vec<Listed>,
    /// Old-name files left out because `partitions` was given.
    pub unpartitioned_left_out: usize,
}

/// How long before a time window's start a file may have been uploaded and still hold one of
/// its records: a day, far more than the hour of clock skew brokers allow.
const WINDOW_UPLOAD_SLACK_MS: i64 = 24 * 3600 * 1000;

/// A request's storage and layout, opened once.
struct Opened {
    storage: Storage,
    layout: FileLayout,
    /// The topic's `invalid_date`.
    invalid_date: NaiveDate,
    /// Today in the topic's output time zone (UTC with a URL), for `today`, `-N`.
    today: NaiveDate,
    /// The topic's partition count in Kafka, when looked up and found.
    partition_count: Option<i32>,
}

fn usage(m: impl Into<String>) -> RequestError {
    RequestError::Usage(m.into())
}

impl Request {
    /// Opens storage and lists the selected files.
    pub async fn files(&self) -> Result<Selected, RequestError> {
        let opened = self.open(false).await?;
        let (from, to) = self.days(&opened)?;
        let (files, unpartitioned_left_out) = self.list(&opened, from, to).await?;
        Ok(Selected { storage: opened.storage, files, unpartitioned_left_out })
    }

    /// What a restore reads: the selected files, the backup's path (where the writer records
    /// the topic's settings) and the topic's `invalid_date` record files when that date is not
    /// among the selected ones (a time window may have records there); with the number of
    /// old-name files left out by `partitions`.
    ///
    /// Without `from`, a window's start selects the files: every date (an event's date says
    /// nothing of when Kafka stamped it), but no file uploaded more than a day before the window
    /// opened; a record is written after the broker stamps it, and brokers refuse timestamps
    /// more than an hour ahead (`log.message.timestamp.after.max.ms`), so such a file cannot
    /// hold one of the window's records.
    pub async fn restore_source(&self, window_from: Option<i64>) -> Result<(Source, usize), RequestError> {
        let opened = self.open(false).await?;
        let (from, to, uploaded_from) = match (self.from, window_from) {
            (None, Some(start)) => (NaiveDate::MIN, NaiveDate::MAX, Some(start - WINDOW_UPLOAD_SLACK_MS)),
            _ => {
                let (from, to) = self.days(&opened).map_err(|e| usage(format!("{e} (or --from-time to select by a time window)")))?;
                (from, to, None)
            }
        };
        let (mut listed, left_out) = self.list(&opened, from, to).await?;
        let invalid_files = if let Some(min) = uploaded_from {
            let before = listed.len();
            listed.retain(|l| l.timestamp.is_none_or(|t| t >= min));
            tracing::info!(
                "no --from: {} file(s) of every date selected, {} uploaded more than a day before --from-time left out",
                listed.len(),
                before - listed.len()
            );
            // The invalid_date's record files are restored only when asked, as with dates.
            let (invalid, dated): (Vec<_>, Vec<_>) = listed.into_iter().partition(|l| l.name.date == opened.invalid_date && l.name.records);
            listed = dated;
            invalid
        } else if (from..=to).contains(&opened.invalid_date) {
            Vec::new()
        } else {
            let (files, _) = self.list(&opened, opened.invalid_date, opened.invalid_date).await?;
            files.into_iter().filter(|l| l.name.records).collect()
        };
        let source = Source { storage: opened.storage, listed, path: opened.layout.marker_path(), invalid_date: opened.invalid_date, invalid_files };
        Ok((source, left_out))
    }

    /// Per selected date: which partitions its completion markers declare complete. The
    /// topic's partition count is looked up even without `partitions`, to name the partitions
    /// with no file and no marker.
    pub async fn completion(&self) -> Result<Vec<crate::completion::read::DateStatus>, RequestError> {
        let opened = self.open(true).await?;
        let (from, to) = self.days(&opened)?;
        let (listed, _) = self.list(&opened, from, to).await?;
        let sel = Selection::new(from, to).map_err(|e| usage(e.to_string()))?;
        let mut out = Vec::new();
        for date in sel.dates() {
            let with_files = listed.iter().filter(|l| l.name.date == date).filter_map(|l| l.kafka_partition).collect();
            let date_str = opened.layout.dates().format(date);
            let status = crate::completion::read::status(
                opened.storage.store.as_ref(),
                &opened.layout.marker_path(),
                &date_str,
                &with_files,
                opened.partition_count,
                self.partitions.as_ref(),
            )
            .await
            .map_err(|e| RequestError::Markers {
                date: date_str.clone(),
                storage: opened.storage.describe.clone(),
                source: Box::new(e),
            })?;
            out.push(status);
        }
        Ok(out)
    }

    /// The selected dates: `from` and `to` resolved in the topic's time zone.
    fn days(&self, opened: &Opened) -> Result<(NaiveDate, NaiveDate), RequestError> {
        let from = self.from.ok_or_else(|| usage("--from is required: a date (YYYY-MM-DD, today, yesterday or -N days ago)"))?;
        let from = from.resolve(opened.today);
        Ok((from, self.to.map_or(from, |t| t.resolve(opened.today))))
    }

    /// Reads the topic's settings (or takes the URL), checks `partitions` against the topic,
    /// and opens storage. With `count`, the topic's partition count is looked up in Kafka even
    /// without `partitions`.
    async fn open(&self, count: bool) -> Result<Opened, RequestError> {
        match &self.place {
            Place::Topic { config, topic: name, path } => {
                let Backup { storage, mut layout, invalid_date, today } = Backup::of_topic(config, name)?;
                let mut partition_count = None;
                if self.partitions.is_some() || count {
                    // Partitions the topic does not have would list nothing, like an empty backup.
                    let counts =
                        crate::consumer::lookup_partition_counts(&config.kafka, &[name.to_string()], std::time::Duration::from_secs(10)).await;
                    let what =
                        if self.partitions.is_some() { "--partitions is not checked against it" } else { "partitions without files are not named" };
                    match counts.map(|mut c| c.pop().and_then(|(_, n)| n)) {
                        Ok(Some(n)) => partition_count = Some(n as i32),
                        Ok(None) => tracing::warn!("topic {name} is not on {}: {what}", config.kafka.brokers),
                        Err(e) => tracing::warn!("cannot read topic {name}'s partition count ({e}): {what}"),
                    }
                }
                if let (Some(set), Some(n)) = (&self.partitions, partition_count) {
                    check_partitions(name, set, n).map_err(|e| usage(e.to_string()))?;
                }
                if let Some(p) = path {
                    layout = layout.with_path(p);
                }
                Ok(Opened { storage, layout, invalid_date, today, partition_count })
            }
            Place::Url { url, path } => {
                if count {
                    tracing::warn!("with --url the topic's partition count is unknown: partitions without files are not named");
                }
                let cfg = StorageConfig { url: url.clone(), ..Default::default() };
                let storage = Storage::open(&cfg).map_err(|e| usage(e.to_string()))?;
                // Secor's fixed fallback without a config.
                let invalid_date = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
                Ok(Opened { storage, layout: FileLayout::bare(path), invalid_date, today: chrono::Utc::now().date_naive(), partition_count: None })
            }
        }
    }

    /// Lists the backup files of `from..=to` (the selected partitions), warning about objects
    /// that are not backup files.
    async fn list(&self, opened: &Opened, from: NaiveDate, to: NaiveDate) -> Result<(Vec<Listed>, usize), RequestError> {
        let mut sel = Selection::new(from, to).map_err(|e| usage(e.to_string()))?;
        sel.partitions = self.partitions.clone();
        sel.include_unpartitioned = self.include_unpartitioned;
        let (storage, layout) = (&opened.storage, &opened.layout);
        let listing = super::list(storage, layout, &sel).await.map_err(|source| RequestError::List {
            dirs: layout.dirs().join(", "),
            storage: storage.describe.clone(),
            source: Box::new(source),
        })?;
        if !listing.strays.is_empty() {
            let keys: Vec<&str> = listing.strays.iter().take(10).map(|l| l.key.as_str()).collect();
            tracing::warn!(
                "{} object(s) under the selected dates are not backup files ({}{}): readers that read every object of a date (Sunbird's fetcher, Spark) read them, this command does not; `kbackup verify` audits them",
                listing.strays.len(),
                keys.join(", "),
                if listing.strays.len() > keys.len() { ", …" } else { "" }
            );
        }
        Ok((listing.files, listing.unpartitioned_left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(dir: &std::path::Path, from: Option<&str>, partitions: Option<&str>) -> Request {
        Request {
            place: Place::Url { url: format!("file://{}", dir.display()), path: "unique/raw".into() },
            from: from.map(|d| d.parse().unwrap()),
            to: None,
            partitions: partitions.map(|p| super::super::parse_partitions(p).unwrap()),
            include_unpartitioned: false,
        }
    }

    fn touch(dir: &std::path::Path, name: &str) {
        let d = dir.join("unique/raw");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), b"x").unwrap();
    }

    #[tokio::test]
    async fn selects_by_date_and_partition_and_counts_old_names_left_out() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "2026-12-01-3-1764547200000.json.gz",
            "2026-12-01-4-1764547200001.json.gz",
            "2026-12-02-3-1764633600000.json.gz",
            "2026-12-01-1764547200002.json.gz",
        ] {
            touch(dir.path(), name);
        }
        let all = request(dir.path(), Some("2026-12-01"), None).files().await.unwrap();
        assert_eq!(all.files.len(), 3, "the date's three files, the old name included");
        let three = request(dir.path(), Some("2026-12-01"), Some("3")).files().await.unwrap();
        assert_eq!(three.files.iter().map(|l| l.kafka_partition).collect::<Vec<_>>(), [Some(3)]);
        assert_eq!(three.unpartitioned_left_out, 1, "the old name is counted, not silently lost");
    }

    #[tokio::test]
    async fn a_missing_from_is_a_usage_error_unless_a_window_selects() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "2026-12-01-3-1764547200000.json.gz");
        let r = request(dir.path(), None, None);
        assert!(matches!(r.files().await, Err(RequestError::Usage(m)) if m.contains("--from is required")));
        let (source, _) = r.restore_source(Some(1_764_547_200_000)).await.unwrap();
        assert_eq!(source.listed.len(), 1, "a window's start selects the files of every date");
        let (late, _) = r.restore_source(Some(1_764_547_200_000 + 2 * WINDOW_UPLOAD_SLACK_MS)).await.unwrap();
        assert!(late.listed.is_empty(), "a file uploaded more than a day before the window cannot hold its records");
    }

    #[tokio::test]
    async fn a_topic_the_config_lacks_is_a_usage_error() {
        let config: Config = toml::from_str("[kafka]\nbrokers = \"127.0.0.1:1\"\ngroup_id = \"g\"\n[storage]\nurl = \"file:///tmp\"\n").unwrap();
        let r = Request {
            place: Place::Topic { config: Box::new(config), topic: "nope".into(), path: None },
            from: Some("today".parse().unwrap()),
            to: None,
            partitions: None,
            include_unpartitioned: false,
        };
        assert!(matches!(r.files().await, Err(RequestError::Usage(m)) if m.contains("`nope`")));
    }
}
