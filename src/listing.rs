//! Selecting backup files by date range and Kafka partition, for the data team's tools.
//!
//! Mirrors Sunbird's fetcher (list `<path>/<date>` for each date, then keep names matching
//! `\d{4}-\d{2}-\d{2}-<p>-`), except that old names without a partition are never silently
//! lost: they are counted and can be included on request.

use std::collections::BTreeSet;

use chrono::NaiveDate;

use crate::naming::{parse_name, ParsedName};

/// A selection error (bad flag values).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectionError {
    #[error("--partitions: `{0}` is not a partition number or range like 0,3,5-7")]
    BadPartitions(String),
    #[error("--from {from} is after --to {to}")]
    EmptyRange { from: NaiveDate, to: NaiveDate },
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
                out.extend(a..=b);
            }
            None => {
                let p: i32 = part.parse().map_err(|_| bad(part))?;
                if p < 0 {
                    return Err(bad(part));
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

    /// Judges one file by its name (the part after the last `/`).
    pub fn judge(&self, file_name: &str) -> Verdict {
        let Some(n) = parse_name(file_name) else { return Verdict::NotBackup };
        if n.date < self.from || n.date > self.to {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn partition_lists() {
        assert_eq!(parse_partitions("0,3,5-7").unwrap(), [0, 3, 5, 6, 7].into());
        assert_eq!(parse_partitions(" 2 ").unwrap(), [2].into());
        for bad in ["", "a", "3-1", "-1", "1-", "1,,x"] {
            assert!(parse_partitions(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn partition_one_does_not_match_old_names_starting_with_one() {
        let mut s = Selection::new(d("2020-02-01"), d("2020-02-01")).unwrap();
        s.partitions = Some([1].into());
        // Old name: timestamp starts with 1. Sunbird's first regex (without the trailing `-`) took it for partition 1.
        assert_eq!(s.judge("2020-02-01-1580495403199.json.gz"), Verdict::UnpartitionedLeftOut);
        assert!(matches!(s.judge("2020-02-01-1-1580495403199.json.gz"), Verdict::Keep(_)));
        assert_eq!(s.judge("2020-02-01-11-1580495403199.json.gz"), Verdict::Skip, "11 is not 1");
        assert_eq!(s.judge("2020-02-01-0-1580495403199.json.gz"), Verdict::Skip);
        s.include_unpartitioned = true;
        assert!(matches!(s.judge("2020-02-01-1580495403199.json.gz"), Verdict::Keep(_)));
    }

    #[test]
    fn dates_outside_the_range_and_foreign_files() {
        let s = Selection::new(d("2020-02-01"), d("2020-02-02")).unwrap();
        assert!(matches!(s.judge("2020-02-02-3-1.json.gz"), Verdict::Keep(_)));
        assert_eq!(s.judge("2020-01-31-3-1.json.gz"), Verdict::Skip);
        assert_eq!(s.judge("2020-02-03-3-1.json.gz"), Verdict::Skip);
        assert_eq!(s.judge("_SUCCESS"), Verdict::NotBackup);
        assert_eq!(s.dates().count(), 2);
        assert!(Selection::new(d("2020-02-02"), d("2020-02-01")).is_err());
    }
}
