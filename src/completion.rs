//! Completion markers: when a date of one Kafka partition is complete.
//!
//! A marker `<path>/_kbackup/complete/<date>/<partition>-<seq>.json` states that every event
//! of `date` on `partition` below offset `complete_below` is in the files it lists, with their
//! event counts and offset ranges. The partition's owner writes one once the partition has
//! passed the date (it consumed an event dated after the date's end plus the topic's
//! `completion_grace_secs`, or it is caught up and the wall clock is that far past it) and
//! every event of the date it consumed is in an uploaded file whose intent is committed.
//!
//! Markers are written create-only under increasing sequence numbers: the newest one is the
//! statement, and an event of the date that arrives later (a late event) leads to a new one
//! that lists its file too, so a reader can tell the date changed after it was declared
//! complete. Two owners never write different markers under one name, and a crash never
//! leaves one behind for files that are not all stored (docs/completion.md).
//!
//! This module holds the pure parts: the marker's form and names, the progress a partition's
//! commit record carries, and which date is due. `write` is the writer's I/O shell, `read`
//! the readers'.

pub mod read;
pub mod success;
pub mod write;

/// The progress a partition's commit record carries (defined with the record).
pub use crate::intent::Progress;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Where markers live under a topic's path. Sunbird's fetcher lists `<path>/<yyyy-MM-dd>`
/// prefixes and never reads here; kbackup's readers skip `_kbackup/`.
pub const MARKER_DIR: &str = "_kbackup/complete";

/// The format version of markers this build writes and reads.
pub const VERSION: u32 = 1;

/// One marker: the statement that a date of a partition is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub version: u32,
    pub topic: String,
    /// The date, as the topic's file names write it.
    pub date: String,
    pub partition: i32,
    /// Markers of a date and partition are numbered from 1; the highest is the statement.
    pub seq: u32,
    /// Every event of the date on the partition below this offset is in `files`; events of
    /// the date at or above it are late (a later marker lists their files).
    pub complete_below: i64,
    /// The events in `files`, summed.
    pub events: u64,
    pub files: Vec<MarkedFile>,
    pub written_at_ms: i64,
    pub written_at: String,
    /// The earlier marker this one replaces (late events came in after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
}

/// One listed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedFile {
    pub key: String,
    pub events: u64,
    /// The first and last offset in the file; absent when the file does not say (a value
    /// file another writer uploaded: Secor's, or one of a build without markers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offset: Option<i64>,
}

/// The directory of a date's markers under a topic path.
pub fn marker_dir(path: &str, date: &str) -> String {
    let path = path.trim_matches('/');
    if path.is_empty() {
        format!("{MARKER_DIR}/{date}")
    } else {
        format!("{path}/{MARKER_DIR}/{date}")
    }
}

/// The key of marker `seq` of a date and partition.
pub fn marker_key(path: &str, date: &str, partition: i32, seq: u32) -> String {
    format!("{}/{partition}-{seq:06}.json", marker_dir(path, date))
}

/// (partition, seq) of a marker's file name.
pub fn parse_marker_name(file: &str) -> Option<(i32, u32)> {
    let stem = file.strip_suffix(".json")?;
    let (p, seq) = stem.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (all_digits(p) && all_digits(seq)).then(|| Some((p.parse().ok()?, seq.parse().ok()?))).flatten()
}

impl Marker {
    /// True if `other` states the same files with the same counts (what a new marker would
    /// add nothing to).
    pub fn same_files(&self, files: &[MarkedFile]) -> bool {
        let mut a: Vec<(&str, u64)> = self.files.iter().map(|f| (f.key.as_str(), f.events)).collect();
        let mut b: Vec<(&str, u64)> = files.iter().map(|f| (f.key.as_str(), f.events)).collect();
        a.sort_unstable();
        b.sort_unstable();
        a == b
    }
}

/// The output-zone date of `ms`.
pub fn local_date(tz: Tz, ms: i64) -> Option<NaiveDate> {
    Some(DateTime::<Utc>::from_timestamp_millis(ms)?.with_timezone(&tz).date_naive())
}

/// Epoch milliseconds of the start of `date` in `tz` (its first instant, around a DST gap).
pub fn local_midnight_ms(tz: Tz, date: NaiveDate) -> Option<i64> {
    use chrono::TimeZone;
    let t = date.and_hms_opt(0, 0, 0)?;
    tz.from_local_datetime(&t)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(t + chrono::Duration::hours(1))).earliest())
        .map(|d| d.timestamp_millis())
}

/// The first date a partition has not passed when the newest time it saw is `ms`: every
/// earlier date ended at least `grace_ms` before `ms`.
pub fn first_unpassed(tz: Tz, ms: i64, grace_ms: i64) -> Option<NaiveDate> {
    local_date(tz, ms.checked_sub(grace_ms)?)
}

/// A date whose marker is due once the partition's files of it are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// A marked date that got late events: a superseding marker.
    Late(NaiveDate),
    /// The date after the newest marked one (or the first date to judge).
    Next(NaiveDate),
}

impl Due {
    pub fn date(self) -> NaiveDate {
        match self {
            Due::Late(d) | Due::Next(d) => d,
        }
    }
}

/// The dates whose markers are due, in the order to write them: late dates first, then the
/// next date, provided the partition passed them. `start` is the first date to judge when
/// nothing was ever marked on the partition (the earliest date this owner saw).
pub fn due(progress: &Progress, start: Option<NaiveDate>, first_unpassed: Option<NaiveDate>) -> Vec<Due> {
    let Some(fu) = first_unpassed else {
        return Vec::new();
    };
    let mut out: Vec<Due> = progress.late.iter().filter(|d| **d < fu).map(|d| Due::Late(*d)).collect();
    let next = match progress.marked {
        Some(m) => m.succ_opt(),
        None => start,
    };
    if let Some(n) = next.filter(|n| *n < fu) {
        out.push(Due::Next(n));
    }
    out
}

/// What the writer does about a date whose files are settled, given the newest marker already
/// stored and the files stored now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// The newest marker already lists these files: nothing to write.
    Stated { seq: u32 },
    /// Write marker `seq` (superseding `supersedes`, if any).
    Write { seq: u32, supersedes: Option<u32> },
}

/// Decides the marker to write over `newest` for `files`.
pub fn statement(newest: Option<&Marker>, files: &[MarkedFile]) -> Statement {
    match newest {
        Some(m) if m.same_files(files) => Statement::Stated { seq: m.seq },
        Some(m) => Statement::Write { seq: m.seq + 1, supersedes: Some(m.seq) },
        None => Statement::Write { seq: 1, supersedes: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn file(key: &str, events: u64) -> MarkedFile {
        MarkedFile { key: key.into(), events, first_offset: None, last_offset: None }
    }

    #[test]
    fn names_round_trip_and_stay_out_of_date_prefixes() {
        let k = marker_key("unique/raw", "2026-12-03", 7, 12);
        assert_eq!(k, "unique/raw/_kbackup/complete/2026-12-03/7-000012.json");
        assert_eq!(parse_marker_name("7-000012.json"), Some((7, 12)));
        assert_eq!(marker_key("", "2026-12-03", 0, 1), "_kbackup/complete/2026-12-03/0-000001.json");
        for bad in ["7.json", "-1-000001.json", "a-1.json", "7-1.json.tmp", "7-.json"] {
            assert_eq!(parse_marker_name(bad), None, "{bad}");
        }
        // Sunbird's fetcher lists `<path>/<yyyy-MM-dd>`: a marker key never starts with a date.
        assert!(!k.trim_start_matches("unique/raw/").starts_with("2026"));
    }

    #[test]
    fn a_date_is_passed_by_an_event_grace_after_its_end_in_the_output_zone() {
        let ist: Tz = "Asia/Kolkata".parse().unwrap();
        // 2026-12-03 ends at 2026-12-03T18:30:00Z in IST.
        let end = DateTime::parse_from_rfc3339("2026-12-03T18:30:00Z").unwrap().timestamp_millis();
        let grace = 600_000;
        assert_eq!(first_unpassed(ist, end + grace - 1, grace), Some(d("2026-12-03")), "one ms short of the grace");
        assert_eq!(first_unpassed(ist, end + grace, grace), Some(d("2026-12-04")));
        assert_eq!(first_unpassed(Tz::UTC, end + grace, grace), Some(d("2026-12-03")), "UTC's day ends 5.5 h later");
    }

    #[test]
    fn late_dates_come_first_then_the_next_date_once_passed() {
        let mut p = Progress::default();
        assert_eq!(due(&p, None, Some(d("2026-12-04"))), vec![], "nothing seen, nothing marked");
        assert_eq!(due(&p, Some(d("2026-12-02")), Some(d("2026-12-04"))), vec![Due::Next(d("2026-12-02"))]);
        assert_eq!(due(&p, Some(d("2026-12-04")), Some(d("2026-12-04"))), vec![], "not passed yet");
        assert_eq!(due(&p, Some(d("2026-12-02")), None), vec![], "no time seen");
        p.marked = Some(d("2026-12-02"));
        assert_eq!(due(&p, Some(d("2026-11-01")), Some(d("2026-12-04"))), vec![Due::Next(d("2026-12-03"))], "start only counts before any marker");
        p.late.insert(d("2026-12-01"));
        assert_eq!(due(&p, None, Some(d("2026-12-03"))), vec![Due::Late(d("2026-12-01"))]);
        assert_eq!(due(&p, None, Some(d("2026-12-04"))), vec![Due::Late(d("2026-12-01")), Due::Next(d("2026-12-03"))]);
        assert!(p.is_late(d("2026-12-02")) && p.is_late(d("2026-11-30")) && !p.is_late(d("2026-12-03")));
        assert!(!Progress::default().is_late(d("2000-01-01")));
    }

    #[test]
    fn progress_is_small_and_round_trips() {
        use std::collections::BTreeSet;
        let mut p = Progress { marked: Some(d("2026-12-03")), late: BTreeSet::new(), start: None };
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"m":"2026-12-03"}"#);
        p.late.insert(d("2026-12-01"));
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Progress>(&s).unwrap(), p);
        assert_eq!(serde_json::from_str::<Progress>("{}").unwrap(), Progress::default());
        assert!(Progress::default().is_empty());
    }

    #[test]
    fn a_new_marker_only_when_the_files_changed() {
        let m = Marker {
            version: VERSION,
            topic: "t".into(),
            date: "2026-12-03".into(),
            partition: 0,
            seq: 2,
            complete_below: 10,
            events: 3,
            files: vec![file("a", 1), file("b", 2)],
            written_at_ms: 0,
            written_at: String::new(),
            supersedes: None,
        };
        assert_eq!(statement(Some(&m), &[file("b", 2), file("a", 1)]), Statement::Stated { seq: 2 }, "order does not matter");
        assert_eq!(statement(Some(&m), &[file("a", 1), file("b", 2), file("c", 1)]), Statement::Write { seq: 3, supersedes: Some(2) });
        assert_eq!(statement(Some(&m), &[file("a", 1), file("b", 3)]), Statement::Write { seq: 3, supersedes: Some(2) }, "a count changed");
        assert_eq!(statement(None, &[]), Statement::Write { seq: 1, supersedes: None }, "an idle partition's date");
    }
}
