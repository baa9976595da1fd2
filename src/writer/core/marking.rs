//! One owned partition's completion state: the dates its events passed, the files of each date
//! it uploaded, the progress its commits carry, and the marker job under way. The writer asks
//! it questions and tells it what happened; it never reaches into it (`core.rs` decides
//! when a marker is due, `completion.rs` submits the job).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;

use crate::completion::{self, Due, MarkedFile, Progress};
use crate::naming::FileLayout;
use crate::routing::Route;

/// Date strings a partition remembers parsed.
const DATES_KEPT: usize = 4;
/// How far before the date at assignment a partition never marked starts judging dates (a
/// backlog that old is older than Kafka's default retention).
const START_FLOOR_DAYS: u64 = 7;

/// One owned partition's completion state.
#[derive(Debug, Default)]
pub(super) struct Marking {
    /// From the commit record; carried by every commit.
    progress: Progress,
    /// The first date to judge while nothing was ever marked on the partition: the date in
    /// progress at assignment, or an earlier date of an event consumed since.
    start: Option<NaiveDate>,
    /// Events do not move `start` below this; `None` when the config fixed `start`.
    floor: Option<NaiveDate>,
    /// The newest event time consumed, capped by its record time (an event dated in the
    /// future would otherwise pass days that have not begun).
    newest_ms: Option<i64>,
    /// The date whose marker job is running.
    job: Option<NaiveDate>,
    retry_at: Option<Instant>,
    /// Files of each date this owner uploaded, with what they hold.
    known: BTreeMap<NaiveDate, Vec<MarkedFile>>,
    /// The last date strings seen and their days: a partition's events straddle a midnight or
    /// two at a time, and parsing a date per message cost 5 % of the writer's CPU.
    dates: Vec<(Arc<str>, Option<NaiveDate>)>,
}

/// What an event's date means for completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    OnTime,
    /// Its date is already marked; `first` for the first such event of the date since its
    /// last marker.
    Late {
        first: bool,
    },
}

/// What a marker result changed.
pub(super) struct Outcome {
    /// The newest date marked on the partition, after the result.
    pub(super) marked: Option<NaiveDate>,
}

impl Marking {
    /// The state of a partition assigned at `wall_ms` whose commit record says `progress`.
    /// `configured` is the topic's `completion_start_date`, which wins.
    pub(super) fn assigned(progress: Progress, today: Option<NaiveDate>, configured: Option<NaiveDate>) -> Marking {
        if configured.is_some() {
            return Marking { progress, start: configured, floor: None, ..Default::default() };
        }
        let floor = today.and_then(|d| d.checked_sub_days(chrono::Days::new(START_FLOOR_DAYS)));
        // An earlier owner's start (its backlog) wins over today.
        let start = match (progress.start, today) {
            (Some(s), Some(t)) => Some(s.min(t)),
            (s, t) => s.or(t),
        };
        Marking { progress, start, floor, ..Default::default() }
    }

    /// What the partition's commits carry.
    pub(super) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Notes a message put in a file of `route` (cheap: the date is parsed only when it
    /// changes on the partition).
    pub(super) fn saw_event(&mut self, layout: &FileLayout, route: &Route, record_ms: Option<i64>) -> Seen {
        let (Some(ms), false) = (route.event_ms, route.to_error_path) else { return Seen::OnTime };
        let date = match self.dates.iter().find(|(s, _)| Arc::ptr_eq(s, &route.date) || **s == *route.date) {
            Some((_, d)) => *d,
            None => {
                let d = layout.dates().leading_date(&route.date);
                if self.dates.len() == DATES_KEPT {
                    self.dates.remove(0);
                }
                self.dates.push((route.date.clone(), d));
                d
            }
        };
        match date {
            Some(date) => self.saw(date, record_ms.map_or(ms, |r| ms.min(r))),
            None => Seen::OnTime,
        }
    }

    /// Notes an event of `date` whose time counts as `passing_ms` (its event time, at most its
    /// record time).
    fn saw(&mut self, date: NaiveDate, passing_ms: i64) -> Seen {
        self.newest_ms = Some(self.newest_ms.map_or(passing_ms, |n| n.max(passing_ms)));
        if self.progress.marked.is_none() {
            // A backlog's dates are marked too, back to the floor (none if the config fixed
            // the start); older events are before markers began.
            if self.floor.is_some_and(|f| date >= f) && self.start.is_none_or(|s| date < s) {
                self.start = Some(date);
                // Recorded with the commits, for the next owner.
                self.progress.start = Some(date);
            }
            return Seen::OnTime;
        }
        if self.progress.is_late(date) {
            return Seen::Late { first: self.progress.late.insert(date) };
        }
        Seen::OnTime
    }

    /// Remembers a file of `date` this owner uploaded, for the date's marker.
    pub(super) fn uploaded(&mut self, date: NaiveDate, file: MarkedFile) {
        self.known.entry(date).or_default().push(file);
    }

    /// The files of `date` this owner uploaded.
    pub(super) fn known(&self, date: NaiveDate) -> Vec<MarkedFile> {
        self.known.get(&date).cloned().unwrap_or_default()
    }

    /// A marker job is running.
    pub(super) fn writing(&self) -> bool {
        self.job.is_some()
    }

    /// A marker failed in this assignment (it is retried; a stopping run does not wait for it).
    pub(super) fn failed(&self) -> bool {
        self.retry_at.is_some()
    }

    /// Nothing may be asked now: a job runs, or a failed one waits for its retry.
    pub(super) fn busy(&self, now: Instant) -> bool {
        self.job.is_some() || self.retry_at.is_some_and(|r| now < r)
    }

    /// The start this never-marked partition offers its siblings: `None` once a marker was
    /// written, or when the config fixed the start (every partition shares it already).
    pub(super) fn offered_start(&self) -> Option<NaiveDate> {
        self.start.filter(|_| self.progress.marked.is_none() && self.floor.is_some())
    }

    /// Takes a sibling's earlier start (an empty partition is complete for every date its
    /// siblings are judged for). True if it moved the start (the commit record must say so).
    pub(super) fn take_start(&mut self, first: NaiveDate) -> bool {
        if self.start.is_some_and(|s| first >= s) {
            return false;
        }
        self.start = Some(first);
        // Recorded with the commits, for the next owner.
        self.progress.start = Some(first);
        true
    }

    /// The dates the events consumed passed and that are not marked (late ones first).
    pub(super) fn dues_by_events(&self, tz: chrono_tz::Tz, grace_ms: i64) -> Vec<Due> {
        completion::due(&self.progress, self.start, self.newest_ms.and_then(|ms| completion::first_unpassed(tz, ms, grace_ms)))
    }

    /// The dates the wall clock passed and that are not marked: passed for a partition at its
    /// log end (the caller knows whether it is).
    pub(super) fn dues_by_wall(&self, tz: chrono_tz::Tz, grace_ms: i64, wall_ms: i64) -> Vec<Due> {
        completion::due(&self.progress, self.start, completion::first_unpassed(tz, wall_ms, grace_ms))
    }

    /// A marker job for `date` starts.
    pub(super) fn job_started(&mut self, date: NaiveDate) {
        self.job = Some(date);
    }

    /// The marker of `date` is in storage (written now or found written).
    pub(super) fn job_done(&mut self, date: NaiveDate, late: bool) -> Outcome {
        self.job = None;
        if late {
            self.progress.late.remove(&date);
        } else {
            self.progress.marked = Some(self.progress.marked.map_or(date, |m| m.max(date)));
            // Marked dates go on from `marked`.
            self.progress.start = None;
        }
        // Older dates' facts are not needed again (a late file is counted by its upload).
        let late_dates = &self.progress.late;
        self.known.retain(|d, _| *d > date || late_dates.contains(d));
        Outcome { marked: self.progress.marked }
    }

    /// The marker job failed: it is tried again at `retry_at`.
    pub(super) fn job_failed(&mut self, retry_at: Instant) {
        self.job = None;
        self.retry_at = Some(retry_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn a_backlog_moves_the_start_back_at_most_a_week() {
        let mut m = Marking::assigned(Progress::default(), Some(d("2026-12-04")), None);
        assert_eq!(m.start, Some(d("2026-12-04")), "the date in progress at assignment");
        assert_eq!(m.saw(d("2026-12-01"), 0), Seen::OnTime);
        assert_eq!(m.start, Some(d("2026-12-01")), "a backlog's date");
        m.saw(d("2026-11-20"), 0);
        assert_eq!(m.start, Some(d("2026-12-01")), "older than the floor (7 days): before markers began");
        m.saw(d("2026-11-27"), 0);
        assert_eq!(m.start, Some(d("2026-11-27")), "the floor itself");
        assert_eq!(m.newest_ms, Some(0));
        assert_eq!(m.progress.start, Some(d("2026-11-27")), "recorded for the next owner");
        let next = Marking::assigned(m.progress.clone(), Some(d("2026-12-05")), None);
        assert_eq!(next.start, Some(d("2026-11-27")), "a next owner that reads none of those events still marks them");
    }

    #[test]
    fn a_configured_start_is_kept() {
        let mut m = Marking::assigned(Progress::default(), Some(d("2026-12-04")), Some(d("2026-11-01")));
        m.saw(d("2026-10-01"), 5);
        m.saw(d("2026-11-30"), 3);
        assert_eq!(m.start, Some(d("2026-11-01")));
        assert_eq!(m.newest_ms, Some(5), "the newest time, not the last");
        assert_eq!(m.offered_start(), None, "a configured start is shared already");
    }

    #[test]
    fn events_of_marked_dates_are_late_and_the_first_is_told() {
        let progress = Progress { marked: Some(d("2026-12-02")), ..Default::default() };
        let mut m = Marking::assigned(progress, Some(d("2026-12-04")), None);
        assert_eq!(m.saw(d("2026-12-03"), 0), Seen::OnTime);
        assert_eq!(m.saw(d("2026-12-02"), 0), Seen::Late { first: true });
        assert_eq!(m.saw(d("2026-12-02"), 0), Seen::Late { first: false });
        assert_eq!(m.saw(d("2026-11-02"), 0), Seen::Late { first: true }, "any marked date, however old");
        assert_eq!(m.progress.late.len(), 2, "recorded for the commit record");
        assert_eq!(m.start, Some(d("2026-12-04")), "the start only matters before any marker");
        assert_eq!(m.offered_start(), None, "a marked partition offers no start");
    }

    #[test]
    fn a_job_moves_the_progress_and_forgets_older_files() {
        let mut m = Marking::assigned(Progress::default(), Some(d("2026-12-04")), None);
        let file = |k: &str| MarkedFile { key: k.into(), events: 1, first_offset: None, last_offset: None };
        m.uploaded(d("2026-12-04"), file("a"));
        m.uploaded(d("2026-12-05"), file("b"));
        let t0 = Instant::now();
        m.job_started(d("2026-12-04"));
        assert!(m.writing() && m.busy(t0));
        m.job_failed(t0 + std::time::Duration::from_secs(5));
        assert!(!m.writing() && m.failed() && m.busy(t0) && !m.busy(t0 + std::time::Duration::from_secs(5)));
        m.job_started(d("2026-12-04"));
        assert_eq!(m.job_done(d("2026-12-04"), false).marked, Some(d("2026-12-04")));
        assert!(m.known(d("2026-12-04")).is_empty() && m.known(d("2026-12-05")).len() == 1);
        assert_eq!(m.progress().start, None, "marked dates go on from `marked`");
        assert_eq!(m.offered_start(), None, "a marked partition judges from its marker");
    }

    #[test]
    fn a_siblings_earlier_start_is_taken_once() {
        let mut m = Marking::assigned(Progress::default(), Some(d("2026-12-04")), None);
        assert_eq!(m.offered_start(), Some(d("2026-12-04")));
        assert!(m.take_start(d("2026-12-02")));
        assert!(!m.take_start(d("2026-12-02")), "the same start again changes nothing");
        assert!(!m.take_start(d("2026-12-03")), "a later one neither");
        assert_eq!(m.progress().start, Some(d("2026-12-02")), "recorded for the next owner");
    }
}
