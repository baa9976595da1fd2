//! Selecting backup files by date range and Kafka partition, for the data team's tools.
//!
//! Mirrors Sunbird's fetcher (list `<path>/<date>` for each date, then keep names matching
//! `\d{4}-\d{2}-\d{2}-<p>-`), except that old names without a partition are never silently
//! lost: they are counted and can be included on request. Names are read with the topic's
//! [`FileLayout`], the same rule the writer names files with.

pub mod request;

use std::collections::BTreeSet;

use chrono::NaiveDate;
use object_store::path::Path as ObjectPath;

use crate::naming::{FileLayout, ParsedName};
use crate::storage::Storage;

/// The widest partition range accepted (Kafka clusters hold far fewer partitions per topic).
pub const MAX_PARTITIONS: i32 = 100_000;

/// A selection error (bad flag values).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectionError {
    #[error("--partitions: `{0}` is not a partition number or range like 0,3,5-7")]
    BadPartitions(String),
    #[error("--from {from} is after --to {to}")]
    EmptyRange { from: NaiveDate, to: NaiveDate },
    #[error("--partitions: `{0}` reaches past partition {max} (no topic has that many)", max = MAX_PARTITIONS - 1)]
    TooWide(String),
    #[error("--partitions: topic {topic} has {count} partitions (0-{last}); no partition {absent}", last = count - 1)]
    Absent { topic: String, count: i32, absent: String },
}

/// Parses `0,3,5-7` into a set of partitions.
pub fn parse_partitions(s: &str) -> Result<BTreeSet<i32>, SelectionError> {
    let bad = |p: &str| SelectionError::BadPartitions(p.to_string());
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (i32, i32) = (a.trim().parse().map_err(|_| bad(part))?, b.trim().parse().map_err(|_| bad(part))?);
                if a < 0 || b < a {
                    return Err(bad(part));
                }
                if b >= MAX_PARTITIONS {
                    return Err(SelectionError::TooWide(part.to_string()));
                }
                out.extend(a..=b);
            }
            None => {
                let p: i32 = part.parse().map_err(|_| bad(part))?;
                if p < 0 {
                    return Err(bad(part));
                }
                if p >= MAX_PARTITIONS {
                    return Err(SelectionError::TooWide(part.to_string()));
                }
                out.insert(p);
            }
        }
    }
    if out.is_empty() {
        return Err(bad(s));
    }
    Ok(out)
}

/// The partitions of shard `index` of `shards` over a topic of `count` partitions: contiguous,
/// as even as can be (sizes differ by at most one), together covering every partition once.
/// A shard past the partitions (more shards than partitions) is empty.
pub fn shard(count: i32, index: u32, shards: u32) -> std::ops::Range<i32> {
    let (count, index, shards) = (count.max(0) as i64, index as i64, shards.max(1) as i64);
    let start = index * count / shards;
    let end = (index + 1) * count / shards;
    (start.min(count) as i32)..(end.min(count) as i32)
}

/// A day given as a date, or relative to today: `today`, `yesterday`, or `-N` days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayArg {
    Date(NaiveDate),
    DaysAgo(u32),
}

impl std::str::FromStr for DayArg {
    type Err = String;
    fn from_str(s: &str) -> Result<DayArg, String> {
        match s {
            "today" => Ok(DayArg::DaysAgo(0)),
            "yesterday" => Ok(DayArg::DaysAgo(1)),
            _ => match s.strip_prefix('-').map(str::parse::<u32>) {
                Some(Ok(n)) => Ok(DayArg::DaysAgo(n)),
                _ => s.parse::<NaiveDate>().map(DayArg::Date).map_err(|_| format!("`{s}`: expected YYYY-MM-DD, today, yesterday or -N (days ago)")),
            },
        }
    }
}

impl DayArg {
    /// The day, `today` being the calendar day in the topic's output time zone.
    pub fn resolve(self, today: NaiveDate) -> NaiveDate {
        match self {
            DayArg::Date(d) => d,
            DayArg::DaysAgo(n) => today - chrono::Days::new(n as u64),
        }
    }
}

/// Refuses partitions a topic of `count` partitions does not have (a selection of them would
/// find nothing and look like an empty backup).
pub fn check_partitions(topic: &str, partitions: &BTreeSet<i32>, count: i32) -> Result<(), SelectionError> {
    let absent: Vec<String> = partitions.iter().filter(|p| **p >= count).map(i32::to_string).collect();
    if absent.is_empty() {
        return Ok(());
    }
    Err(SelectionError::Absent { topic: topic.to_string(), count, absent: absent.join(", ") })
}

/// Which files to keep.
#[derive(Debug, Clone)]
pub struct Selection {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub partitions: Option<BTreeSet<i32>>,
    /// Keep old-name files (no partition in the name) even when `partitions` is set.
    pub include_unpartitioned: bool,
}

/// What the selection says about one file.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Keep(ParsedName),
    /// An old-name file left out because `partitions` was given.
    UnpartitionedLeftOut,
    /// Outside the dates or partitions asked for.
    Skip,
    /// Not a backup file name at all.
    NotBackup,
}

impl Selection {
    /// A selection of `[from, to]`, all partitions.
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Selection, SelectionError> {
        if from > to {
            return Err(SelectionError::EmptyRange { from, to });
        }
        Ok(Selection { from, to, partitions: None, include_unpartitioned: false })
    }

    /// Every date of the range, in order.
    pub fn dates(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.from.iter_days().take_while(move |d| *d <= self.to)
    }

    /// Judges one file by its name, read with the topic's layout.
    pub fn judge(&self, layout: &FileLayout, key: &str) -> Verdict {
        let Some(n) = layout.parse(key) else {
            return Verdict::NotBackup;
        };
        // A file without a date (stock Secor's offset folders) may hold events of any date.
        if n.date != crate::naming::UNDATED && (n.date < self.from || n.date > self.to) {
            return Verdict::Skip;
        }
        match (&self.partitions, n.kafka_partition) {
            (None, _) => Verdict::Keep(n),
            (Some(set), Some(p)) if set.contains(&p) => Verdict::Keep(n),
            (Some(_), Some(_)) => Verdict::Skip,
            (Some(_), None) if self.include_unpartitioned => Verdict::Keep(n),
            (Some(_), None) => Verdict::UnpartitionedLeftOut,
        }
    }
}

/// One selected blob.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub key: String,
    pub date: String,
    pub kafka_partition: Option<i32>,
    pub timestamp: Option<i64>,
    pub size: u64,
    #[serde(skip)]
    pub name: ParsedName,
}

/// What a listing found.
#[derive(Debug, Default)]
pub struct Listing {
    /// In (date, partition, timestamp, key) order.
    pub files: Vec<Listed>,
    /// Files without a partition in their name left out by `partitions`.
    pub unpartitioned_left_out: usize,
    /// Objects that are not backup files (a name kbackup cannot read: a copy, a staging or
    /// temporary name) under a date of the range: date-prefix readers read them all the same.
    pub strays: Vec<Listed>,
}

/// Old-name files (`<date>-<ts>`) selected together with the new-name files `repartition`
/// split them into (`<date>-<p>-<ts>`, same date and timestamp, same directory): a reader of
/// both sees those events twice.
pub fn repartitioned_twice(files: &[Listed]) -> usize {
    let dir = |k: &str| k.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let copies: BTreeSet<(String, NaiveDate, i64)> =
        files.iter().filter(|f| f.kafka_partition.is_some()).filter_map(|f| Some((dir(&f.key), f.name.date, f.timestamp?))).collect();
    files
        .iter()
        .filter(|f| f.kafka_partition.is_none())
        .filter(|f| f.timestamp.is_some_and(|ts| copies.contains(&(dir(&f.key), f.name.date, ts))))
        .count()
}

/// A date as listings show it: `-` for a file without one.
pub fn date_label(d: NaiveDate) -> String {
    if d == crate::naming::UNDATED {
        "-".to_string()
    } else {
        d.format("%Y-%m-%d").to_string()
    }
}

/// Lists the files of a layout that the selection keeps: every directory the topic writes to,
/// each listed once (object stores list by prefix, so the date range is applied to the names).
pub async fn list(storage: &Storage, layout: &FileLayout, sel: &Selection) -> Result<Listing, object_store::Error> {
    use futures::TryStreamExt;
    let mut out = Listing::default();
    let in_range = |d: NaiveDate| (d >= sel.from && d <= sel.to) || d == crate::naming::UNDATED;
    let stray = |meta: &object_store::ObjectMeta, date: NaiveDate| {
        let key = meta.location.to_string();
        let name = ParsedName {
            date,
            kafka_partition: None,
            timestamp_ms: None,
            gzip: key.ends_with(".gz"),
            records: false,
            parquet: false,
            first_offset: None,
        };
        Listed { date: date_label(date), kafka_partition: None, timestamp: None, size: meta.size, key, name }
    };
    let listed = |key: String, size: u64, n: ParsedName| Listed {
        date: date_label(n.date),
        kafka_partition: n.kafka_partition,
        timestamp: n.timestamp_ms,
        size,
        key,
        name: n,
    };
    let mut dirs = layout.dirs();
    if layout.open_prefixes() {
        // Folders named by a field's value: every folder below the topic's that is neither a
        // date nor hidden.
        for dir in layout.dirs() {
            let listing = storage.store.list_with_delimiter(Some(&ObjectPath::from(dir.as_str()))).await?;
            for sub in &listing.common_prefixes {
                let Some(name) = sub.filename() else { continue };
                if layout.reader_date(name).is_none() && !crate::naming::is_hadoop_hidden(name) {
                    dirs.push(sub.to_string());
                }
            }
        }
    }
    for dir in dirs {
        let listing = storage.store.list_with_delimiter(Some(&ObjectPath::from(dir.as_str()))).await?;
        // A "directory" named like a date is read whole by a date-prefix reader; stock Secor's
        // date folders hold its files (in hour and minute folders too).
        for sub in &listing.common_prefixes {
            let Some(date) = sub.filename().and_then(|n| layout.reader_date(n)).filter(|d| in_range(*d)) else { continue };
            let nested: Vec<object_store::ObjectMeta> = storage.store.list(Some(sub)).try_collect().await?;
            if layout.secor().is_none() {
                out.strays.extend(nested.iter().map(|m| stray(m, date)));
                continue;
            }
            let folder = sub.as_ref().len();
            for meta in nested {
                let key = meta.location.to_string();
                // Hadoop's readers skip `_SUCCESS`, `.crc` files and `_temporary` folders.
                if key.get(folder..).unwrap_or_default().split('/').any(crate::naming::is_hadoop_hidden) {
                    continue;
                }
                match sel.judge(layout, &key) {
                    Verdict::Keep(n) => out.files.push(listed(key, meta.size, n)),
                    Verdict::UnpartitionedLeftOut => out.unpartitioned_left_out += 1,
                    Verdict::NotBackup => out.strays.push(stray(&meta, date)),
                    Verdict::Skip => {}
                }
            }
        }
        for meta in listing.objects {
            let key = meta.location.to_string();
            match sel.judge(layout, &key) {
                Verdict::Keep(n) => out.files.push(listed(key, meta.size, n)),
                Verdict::UnpartitionedLeftOut => out.unpartitioned_left_out += 1,
                Verdict::NotBackup => {
                    if let Some(date) = meta.location.filename().and_then(|n| layout.reader_date(n)).filter(|d| in_range(*d)) {
                        out.strays.push(stray(&meta, date));
                    }
                }
                Verdict::Skip => {}
            }
        }
    }
    out.files.sort_by(|a, b| (a.name.date, a.kafka_partition, a.timestamp, &a.key).cmp(&(b.name.date, b.kafka_partition, b.timestamp, &b.key)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn layout() -> FileLayout {
        FileLayout::bare("unique/raw")
    }

    #[test]
    fn shards_cover_every_partition_once() {
        for count in [0, 1, 3, 7, 16, 100] {
            for shards in [1, 2, 3, 5, 16, 20] {
                let mut seen = Vec::new();
                for i in 0..shards {
                    let r = shard(count, i, shards);
                    seen.extend(r.clone());
                    let (lo, hi) = (count / shards as i32, count / shards as i32 + 1);
                    assert!(r.len() as i32 == lo || r.len() as i32 == hi, "{count}/{shards}: shard {i} is {r:?}");
                }
                assert_eq!(seen, (0..count).collect::<Vec<_>>(), "{count} partitions in {shards} shards");
            }
        }
        assert_eq!(shard(16, 0, 4), 0..4);
        assert_eq!(shard(16, 3, 4), 12..16);
        assert_eq!(shard(3, 4, 5), 2..3);
        assert!(shard(3, 9, 5).is_empty());
    }

    #[test]
    fn relative_days() {
        let today = d("2020-02-01");
        assert_eq!("yesterday".parse::<DayArg>().unwrap().resolve(today), d("2020-01-31"));
        assert_eq!("today".parse::<DayArg>().unwrap().resolve(today), today);
        assert_eq!("-3".parse::<DayArg>().unwrap().resolve(today), d("2020-01-29"));
        assert_eq!("2019-12-31".parse::<DayArg>().unwrap().resolve(today), d("2019-12-31"));
        assert!("tomorrow".parse::<DayArg>().is_err());
    }

    #[test]
    fn partition_lists() {
        assert_eq!(parse_partitions("0,3,5-7").unwrap(), [0, 3, 5, 6, 7].into());
        assert_eq!(parse_partitions(" 2 ").unwrap(), [2].into());
        for bad in ["", "a", "3-1", "-1", "1-", "1,,x"] {
            assert!(parse_partitions(bad).is_err(), "{bad}");
        }
        // A range as wide as i32 once ran away in memory; it is refused at once.
        assert_eq!(parse_partitions("0-2147483647"), Err(SelectionError::TooWide("0-2147483647".into())));
        assert_eq!(parse_partitions("100000"), Err(SelectionError::TooWide("100000".into())));
        assert_eq!(parse_partitions("0-99999").unwrap().len(), 100_000);
    }

    #[test]
    fn partition_one_does_not_match_old_names_starting_with_one() {
        let l = layout();
        let mut s = Selection::new(d("2020-02-01"), d("2020-02-01")).unwrap();
        s.partitions = Some([1].into());
        // Old name: timestamp starts with 1. Sunbird's first regex (without the trailing `-`) took it for partition 1.
        assert_eq!(s.judge(&l, "2020-02-01-1580495403199.json.gz"), Verdict::UnpartitionedLeftOut);
        assert!(matches!(s.judge(&l, "2020-02-01-1-1580495403199.json.gz"), Verdict::Keep(_)));
        assert_eq!(s.judge(&l, "2020-02-01-11-1580495403199.json.gz"), Verdict::Skip, "11 is not 1");
        assert_eq!(s.judge(&l, "2020-02-01-0-1580495403199.json.gz"), Verdict::Skip);
        s.include_unpartitioned = true;
        assert!(matches!(s.judge(&l, "2020-02-01-1580495403199.json.gz"), Verdict::Keep(_)));
    }

    #[test]
    fn repartitioned_copies_beside_their_originals_are_found() {
        let l = layout();
        let s = Selection::new(d("2020-02-01"), d("2020-02-02")).unwrap();
        let listed = |keys: &[&str]| -> Vec<Listed> {
            keys.iter()
                .map(|k| match s.judge(&l, k) {
                    Verdict::Keep(n) => Listed {
                        key: k.to_string(),
                        date: n.date.to_string(),
                        kafka_partition: n.kafka_partition,
                        timestamp: n.timestamp_ms,
                        size: 1,
                        name: n,
                    },
                    v => panic!("{k}: {v:?}"),
                })
                .collect()
        };
        let both = listed(&[
            "unique/raw/2020-02-01-1580495403199.json.gz",
            "unique/raw/2020-02-01-3-1580495403199.json.gz",
            "unique/raw/2020-02-01-1580495409999.json.gz",
        ]);
        assert_eq!(repartitioned_twice(&both), 1, "one original has its copies selected too");
        assert_eq!(repartitioned_twice(&both[1..]), 0);
        assert_eq!(repartitioned_twice(&listed(&["unique/raw/2020-02-01-3-1.json.gz", "unique/raw/2020-02-02-1.json.gz"])), 0, "another date");
    }

    #[test]
    fn dates_outside_the_range_and_foreign_files() {
        let l = layout();
        let s = Selection::new(d("2020-02-01"), d("2020-02-02")).unwrap();
        assert!(matches!(s.judge(&l, "2020-02-02-3-1.json.gz"), Verdict::Keep(_)));
        assert_eq!(s.judge(&l, "2020-01-31-3-1.json.gz"), Verdict::Skip);
        assert_eq!(s.judge(&l, "2020-02-03-3-1.json.gz"), Verdict::Skip);
        assert_eq!(s.judge(&l, "_SUCCESS"), Verdict::NotBackup);
        assert_eq!(s.dates().count(), 2);
        assert!(Selection::new(d("2020-02-02"), d("2020-02-01")).is_err());
    }
}
