//! Completion markers in the writer: which dates each owned partition passed, when the files
//! of a date are settled, and the marker jobs (`crate::completion` holds the pure rules).
//!
//! A date's marker is asked for once the partition passed the date and every file of it that
//! this owner holds is uploaded, its intent committed, and the partition's offset committed:
//! what a marker lists is then in storage, and recovery keeps it so after a crash. The
//! progress (newest date marked, late dates) rides in the partition's commit record, so the
//! next owner goes on from it; a date marked but not yet recorded is judged again, and its
//! marker found already written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tracing::{info, warn};

use super::files::InFlight;
use super::partition::PartKey;
use super::Writer;
use crate::buffer::{BufferKey, SealReason};
use crate::completion::write::{MarkerDone, MarkerJob};
use crate::completion::{self, Due, MarkedFile, Progress};
use crate::failpoint;
use crate::metrics as m;
use crate::naming::FileLayout;
use crate::routing::Route;
use crate::sabotage;
use crate::upload::{Existing, Outcome};
use crate::writer::ports::Broker;

/// How long a failed marker waits before it is tried again.
const MARKER_RETRY: Duration = Duration::from_secs(5);
/// How long a caught-up `--until-caught-up` run goes on for the markers then due.
pub(crate) const MARKERS_WAIT: Duration = Duration::from_secs(120);
/// How often an idle partition's log end is read to tell whether it is caught up.
const IDLE_CHECK: Duration = Duration::from_secs(10);
/// The same while a caught-up `--until-caught-up` run waits for its markers: a read from
/// before it caught up (not at the end then) must not end the wait.
const CAUGHT_UP_CHECK: Duration = Duration::from_secs(1);
/// Date strings a partition remembers parsed.
const DATES_KEPT: usize = 4;
/// How far before the date at assignment a partition never marked starts judging dates (a
/// backlog that old is older than Kafka's default retention).
const START_FLOOR_DAYS: u64 = 7;

/// One owned partition's completion state.
#[derive(Debug, Default)]
pub(super) struct Marking {
    /// From the commit record; carried by every commit.
    pub(super) progress: Progress,
    /// The first date to judge while nothing was ever marked on the partition: the date in
    /// progress at assignment, or an earlier date of an event consumed since.
    pub(super) start: Option<NaiveDate>,
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

/// Counts a late event (and says so for the first of its date).
pub(super) fn note_late(topic: &super::TopicRuntime, summary: &mut crate::writer::RunSummary, p: i32, date: &str, seen: Seen) {
    let Seen::Late { first } = seen else { return };
    if first {
        info!(topic = %topic.cfg.name, partition = p, date, "late event: its date is already marked complete; a new marker will list its file");
    }
    summary.late_events += 1;
    metrics::counter!(m::LATE_EVENTS, "topic" => topic.cfg.name.clone()).increment(1);
}

/// The newest date marked on a partition, as the start of that day in epoch seconds.
pub(super) fn report_complete_date(topic: &super::TopicRuntime, partition: i32, marked: NaiveDate) {
    if let Some(ms) = crate::completion::local_midnight_ms(topic.tz, marked) {
        metrics::gauge!(m::COMPLETE_DATE, "topic" => topic.cfg.name.clone(), "partition" => partition.to_string()).set(ms as f64 / 1000.0);
    }
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

impl Marking {
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
    pub(super) fn saw(&mut self, date: NaiveDate, passing_ms: i64) -> Seen {
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
}

impl Writer {
    /// Remembers what an uploaded file of a dated route holds, for its date's marker.
    pub(super) fn note_uploaded_for_completion(&mut self, f: &InFlight, outcome: Outcome) {
        // A rebuilt file found already there may hold more events than the rebuild (retention
        // took the first ones before it): its marker reads it instead.
        if f.intent.error || (f.existing == Existing::Rebuilt && outcome == Outcome::AlreadyThere) || !self.topics[f.topic].markers {
            return;
        }
        let Some(date) = self.topics[f.topic].layout.dates().leading_date(&f.intent.date) else { return };
        if let Some(st) = self.parts.get_mut(&f.part()) {
            let file = MarkedFile { key: f.intent.key.clone(), events: f.events, first_offset: Some(f.intent.from), last_offset: Some(f.intent.to) };
            st.marking.known.entry(date).or_default().push(file);
        }
    }

    /// Asks for the markers that are due: per partition, the dates it passed whose files are
    /// settled; open files of a passed date are sealed so that it settles.
    pub(super) fn judge_completion(&mut self, broker: &dyn Broker) {
        if self.fatal.is_some() {
            // A writer that cannot go on (a file of a date found its name taken, say) holds
            // events it did not store: it declares nothing.
            return;
        }
        let now = self.clock.now();
        let wall_ms = self.clock.wall_ms();
        let mut keys: Vec<PartKey> = self.parts.keys().copied().filter(|k| self.topics[k.topic].markers).collect();
        keys.sort_unstable();
        for key in &keys {
            self.share_start(*key);
        }
        // A caught-up `--until-caught-up` run is about to stop: a late date's file need not
        // wait for its age, its superseding marker is written before the run ends.
        let ending = self.opts.until_caught_up && self.caught_up_at.is_some();
        for key in keys {
            let mk = &self.parts[&key].marking;
            if mk.job.is_some() || mk.retry_at.is_some_and(|r| now < r) {
                continue;
            }
            for due in self.dues(broker, key, now, wall_ms, IDLE_CHECK) {
                let date_str = self.topics[key.topic].layout.dates().format(due.date());
                if self.settled(key, &date_str) || sabotage::on(sabotage::Rule::MarkUnsettled) {
                    self.submit_marker(key, due, date_str);
                    break;
                }
                if matches!(due, Due::Next(_)) || ending {
                    // Passed but not settled: its open files need not wait for their age. (A
                    // late date's file does: late events trickle, and each would be a file.)
                    let open: Vec<BufferKey> = self
                        .files
                        .open_keys()
                        .filter(|k| k.topic == key.topic && k.partition == key.partition && !k.error && of_day(&k.date, &date_str))
                        .cloned()
                        .collect();
                    for k in &open {
                        self.seal(k, SealReason::DatePassed);
                    }
                    // Dates are marked in order.
                    break;
                }
            }
        }
    }

    /// A partition never marked judges dates from the earliest first date of its topic's
    /// partitions this writer owns (an empty partition's own start is the day it was
    /// assigned, yet it is complete for every date its siblings are judged for). Not with
    /// `completion_start_date`, which every partition shares already.
    fn share_start(&mut self, key: PartKey) {
        let Some(mk) = self.parts.get(&key).map(|st| &st.marking) else { return };
        if mk.progress.marked.is_some() || mk.floor.is_none() {
            return;
        }
        let topic = &mut self.topics[key.topic];
        topic.first_date = match (topic.first_date, mk.start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Only a partition at its log end (by the last watermark read) takes it: one still
        // reading has events ahead that may be of those dates, and finds its own start.
        if !self.at_log_end(key) {
            return;
        }
        let (Some(first), Some(st)) = (self.topics[key.topic].first_date, self.parts.get_mut(&key)) else { return };
        let mk = &mut st.marking;
        if mk.start.is_none_or(|s| first < s) {
            mk.start = Some(first);
            // Recorded with the commits, for the next owner.
            mk.progress.start = Some(first);
            st.record_stale = true;
        }
    }

    /// The dates the partition passed and has not marked (late ones first): passed by its
    /// events, or, once it is caught up with its log end, by the wall clock.
    fn dues(&mut self, broker: &dyn Broker, key: PartKey, now: Instant, wall_ms: i64, fresh: Duration) -> Vec<Due> {
        let (tz, grace) = (self.topics[key.topic].tz, self.topics[key.topic].grace_ms);
        let mk = &self.parts[&key].marking;
        let by_events = mk.newest_ms.and_then(|ms| completion::first_unpassed(tz, ms, grace));
        let dues = completion::due(&mk.progress, mk.start, by_events);
        if !dues.is_empty() {
            return dues;
        }
        let by_wall = completion::due(&mk.progress, mk.start, completion::first_unpassed(tz, wall_ms, grace));
        if by_wall.is_empty() || !self.caught_up_now(broker, key, now, fresh) {
            return dues;
        }
        by_wall
    }

    /// The owned partitions whose marker is being written, or with a passed date not yet
    /// marked or a late date not yet marked again: a caught-up `--until-caught-up` run writes
    /// them before it stops (a backfill's passed dates get their markers, a late event's date
    /// its superseding one). A partition whose marker failed in this assignment is not waited
    /// for: the next run writes it, from the progress in the commit record.
    pub(super) fn markers_outstanding(&mut self, broker: &dyn Broker) -> Vec<PartKey> {
        if self.fatal.is_some() {
            return Vec::new();
        }
        let (now, wall_ms) = (self.clock.now(), self.clock.wall_ms());
        let mut keys: Vec<PartKey> = self.parts.keys().copied().filter(|k| self.topics[k.topic].markers).collect();
        keys.sort_unstable();
        let mut out = Vec::new();
        for key in keys {
            let mk = &self.parts[&key].marking;
            let (writing, failed) = (mk.job.is_some(), mk.retry_at.is_some());
            if writing || (!failed && !self.dues(broker, key, now, wall_ms, CAUGHT_UP_CHECK).is_empty()) {
                out.push(key);
            }
        }
        out
    }

    /// True when every file of the date this owner holds on the partition is uploaded, its
    /// recovery is over, and its offset is committed.
    fn settled(&self, key: PartKey, date: &str) -> bool {
        let Some(st) = self.parts.get(&key) else { return false };
        let same = |t: usize, p: i32| t == key.topic && p == key.partition;
        st.recovery.is_empty()
            && st.commit_due().is_none()
            && !self.files.open_keys().any(|k| same(k.topic, k.partition) && !k.error && of_day(&k.date, date))
            && !self.files.in_flight().any(|f| same(f.topic, f.partition) && !f.intent.error && of_day(&f.intent.date, date))
            && !self.files.rebuilding().any(|(p, _)| p == key)
    }

    /// True if the last watermark read shows the partition consumed to its log end (no new
    /// read). Against the position now, not the one at the read: a partition that reached the
    /// end read a moment before it got there is caught up.
    fn at_log_end(&self, key: PartKey) -> bool {
        let Some(st) = self.parts.get(&key) else { return false };
        match (st.reads.last, &st.offsets) {
            (Some((_, Some((_, high)))), Some(o)) => o.position() >= high,
            (Some((_, Some((low, high)))), None) => low >= high,
            _ => false,
        }
    }

    /// True if the partition's consumption reached its log end (read again once the last read
    /// is `fresh` old): an idle partition passes a date by the wall clock.
    fn caught_up_now(&mut self, broker: &dyn Broker, key: PartKey, now: Instant, fresh: Duration) -> bool {
        let last = self.parts[&key].reads.last;
        if last.is_none_or(|(at, _)| now.duration_since(at) >= fresh) {
            // Asked off the loop; until the answer comes, the last one stands.
            self.ask_watermarks(broker, key);
        }
        self.at_log_end(key)
    }

    fn submit_marker(&mut self, key: PartKey, due: Due, date_str: String) {
        let topic = &self.topics[key.topic];
        let Some(st) = self.parts.get_mut(&key) else { return };
        let complete_below = st.offsets.as_ref().map_or(0, |o| o.position());
        let date = due.date();
        st.marking.job = Some(date);
        failpoint::hit(failpoint::MARKER_DUE);
        let job = MarkerJob {
            topic: key.topic,
            topic_name: topic.cfg.name.clone(),
            layout: Arc::new(topic.layout.clone()),
            partition: key.partition,
            epoch: st.epoch,
            date,
            date_str,
            complete_below,
            known: st.marking.known.get(&date).cloned().unwrap_or_default(),
            late: matches!(due, Due::Late(_)),
            success_files: topic.cfg.success_files(),
        };
        self.markers.submit(job);
    }

    /// Takes every marker result that is ready.
    pub(crate) fn drain_markers(&mut self) {
        while let Some(done) = self.markers.next() {
            self.on_marker(done);
        }
    }

    fn on_marker(&mut self, done: MarkerDone) {
        let job = done.job;
        let key = PartKey::new(job.topic, job.partition);
        let topic = &self.topics[job.topic];
        let Some(st) = self.parts.get_mut(&key).filter(|st| st.epoch == job.epoch) else { return };
        st.marking.job = None;
        match done.result {
            Ok(stated) => {
                if job.late {
                    st.marking.progress.late.remove(&job.date);
                } else {
                    st.marking.progress.marked = Some(st.marking.progress.marked.map_or(job.date, |m| m.max(job.date)));
                    // Marked dates go on from `marked`.
                    st.marking.progress.start = None;
                }
                // Older dates' facts are not needed again (a late file is counted by its upload).
                st.marking.known.retain(|d, _| *d > job.date || st.marking.progress.late.contains(d));
                // The next commit carries the progress, even if the offset did not move.
                st.record_stale = true;
                if stated.written {
                    metrics::counter!(m::MARKERS_WRITTEN, "topic" => topic.cfg.name.clone()).increment(1);
                    self.summary.markers_written += 1;
                }
                if let Some(marked) = st.marking.progress.marked {
                    report_complete_date(topic, job.partition, marked);
                }
                info!(
                    topic = %topic.cfg.name,
                    partition = job.partition,
                    date = %job.date_str,
                    marker = %stated.key,
                    files = stated.files,
                    events = stated.events,
                    complete_below = job.complete_below,
                    written = stated.written,
                    late = job.late,
                    "date complete"
                );
                failpoint::hit(failpoint::MARKER_WRITTEN);
            }
            Err(e) => {
                metrics::counter!(m::MARKER_FAILURES, "topic" => topic.cfg.name.clone()).increment(1);
                warn!(topic = %topic.cfg.name, partition = job.partition, date = %job.date_str, error = %e, "writing a completion marker failed; will retry");
                st.marking.retry_at = Some(self.clock.now() + MARKER_RETRY);
            }
        }
    }
}

/// True if a route's date string is of the day `day` (as the topic's names write it): the day
/// itself, or a folder below it (stock Secor's `dt=<day>/offset=<N>`), so that no file of the
/// day is overlooked when the day is declared complete.
fn of_day(route_date: &str, day: &str) -> bool {
    route_date.strip_prefix(day).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
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
    }
}
