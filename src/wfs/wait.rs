//! `plan --wait-complete`: a job starts only once its partitions' dates are complete, as their
//! completion markers say (`crate::completion`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use object_store::ObjectStore;
use serde_json::Value;

use crate::naming::FileLayout;

/// Why the dates to wait for could not be read from a job config.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DatesError {
    #[error("--wait-complete needs \"startDate\" and \"endDate\" (YYYY-MM-DD) in every search.queries entry; query {0} has {1}")]
    Query(usize, String),
    #[error("the job config has no fetcher queries (search.queries)")]
    NoQueries,
}

/// The dates a WFS job config reads: every day from each query's `startDate` to its `endDate`.
pub fn job_dates(job: &Value) -> Result<BTreeSet<NaiveDate>, DatesError> {
    let queries = job.pointer("/search/queries").and_then(Value::as_array).filter(|q| !q.is_empty()).ok_or(DatesError::NoQueries)?;
    let mut dates = BTreeSet::new();
    for (i, q) in queries.iter().enumerate() {
        let day = |k: &str| q.get(k).and_then(Value::as_str).and_then(|s| s.parse::<NaiveDate>().ok());
        match (day("startDate"), day("endDate")) {
            (Some(a), Some(b)) if a <= b => dates.extend(a.iter_days().take_while(|d| *d <= b)),
            (Some(a), Some(b)) => return Err(DatesError::Query(i, format!("startDate {a} after endDate {b}"))),
            _ => return Err(DatesError::Query(i, q.get("startDate").map_or("no startDate", |_| "no endDate (or not a date)").to_string())),
        }
    }
    Ok(dates)
}

/// A duration such as `90s`, `30m`, `2h` or `1d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a duration such as 90s, 30m or 2h"))?;
    let unit_secs: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h or d)")),
    };
    // Beyond a century is a typo, and would overflow a deadline (`Instant + Duration` panics).
    match n.checked_mul(unit_secs) {
        Some(secs) if secs <= MAX_DURATION_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{s:?}: too long (at most 36500d)")),
    }
}

const MAX_DURATION_SECS: u64 = 36_500 * 86_400;

/// Waits for partitions' dates to be complete.
pub struct Waiter {
    pub store: Arc<dyn ObjectStore>,
    pub layout: FileLayout,
    pub dates: BTreeSet<NaiveDate>,
    /// When to give up (none: never).
    pub deadline: Option<Instant>,
    /// How `--timeout` was given, for the message.
    pub timeout: String,
    pub poll: Duration,
}

/// The dates a job waits for were not complete by `--timeout`.
#[derive(Debug, thiserror::Error)]
#[error("{why} after --timeout {timeout} (the job was not started)")]
pub struct TimedOut {
    /// What was still missing (or why the markers could not be read), last time they were read.
    pub why: String,
    /// `--timeout` as given.
    pub timeout: String,
}

impl Waiter {
    /// The (date, partitions) of `parts` that have no marker yet.
    pub async fn missing(&self, parts: &[i32]) -> Result<Vec<(String, Vec<i32>)>, crate::completion::read::ReadError> {
        let mut out = Vec::new();
        for d in &self.dates {
            let date = self.layout.dates().format(*d);
            let marked = crate::completion::read::newest(self.store.as_ref(), &self.layout.marker_path(), &date, None).await?;
            let absent: Vec<i32> = parts.iter().copied().filter(|p| !marked.contains_key(p)).collect();
            if !absent.is_empty() {
                out.push((date, absent));
            }
        }
        Ok(out)
    }

    /// Returns once every date of `parts` is complete, or why not before the deadline.
    pub async fn wait(&self, parts: &[i32]) -> Result<(), TimedOut> {
        let said = |m: &[(String, Vec<i32>)]| m.iter().map(|(d, ps)| format!("{d}: partitions {ps:?}")).collect::<Vec<_>>().join("; ");
        let mut last = String::new();
        loop {
            let why = match self.missing(parts).await {
                Ok(m) if m.is_empty() => return Ok(()),
                Ok(m) => format!("not complete: {}", said(&m)),
                Err(e) => format!("completion markers unreadable: {e}"),
            };
            if why != last {
                tracing::info!("waiting for partitions {parts:?}: {why}");
                last = why.clone();
            }
            let now = Instant::now();
            let left = match self.deadline {
                Some(d) if d <= now => return Err(TimedOut { why, timeout: self.timeout.clone() }),
                Some(d) => d - now,
                None => self.poll,
            };
            tokio::time::sleep(self.poll.min(left)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("36500d").unwrap(), Duration::from_secs(36_500 * 86_400));
        for bad in ["", "m", "10x", "1.5h", "-3s", "18446744073709551615s", "18446744073709551615d", "36501d", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_dates_of_every_query() {
        let job = json!({"search": {"queries": [
            {"startDate": "2026-12-01", "endDate": "2026-12-02"},
            {"startDate": "2026-12-04", "endDate": "2026-12-04"}
        ]}});
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(job_dates(&job).unwrap(), [d("2026-12-01"), d("2026-12-02"), d("2026-12-04")].into());
        assert!(matches!(job_dates(&json!({"search": {"queries": [{"startDate": "2026-12-01"}]}})), Err(DatesError::Query(0, _))));
        assert!(matches!(
            job_dates(&json!({"search": {"queries": [{"startDate": "2026-12-03", "endDate": "2026-12-01"}]}})),
            Err(DatesError::Query(0, _))
        ));
        assert_eq!(job_dates(&json!({})), Err(DatesError::NoQueries));
    }
}
