//! Completion markers in the writer: the marker port, and what it takes for a partition's date
//! to be settled (`crate::completion` holds the pure rules, `marking.rs` one partition's state).
//!
//! A date's marker is asked for once the partition passed the date and every file of it that
//! this owner holds is uploaded, its intent committed, and the partition's offset committed:
//! what a marker lists is then in storage, and recovery keeps it so after a crash. The
//! progress (newest date marked, late dates) rides in the partition's commit record, so the
//! next owner goes on from it; a date marked but not yet recorded is judged again, and its
//! marker found already written.

use std::sync::Arc;
use std::time::Duration;

use super::files::{Files, InFlight};
use super::partition::{PartKey, Partition};
use super::topics::Topic;
use crate::buffer::BufferKey;
use crate::completion::write::{MarkerDone, MarkerJob};
use crate::completion::{Due, MarkedFile};
use crate::failpoint;
use crate::upload::{Existing, Outcome};
use crate::writer::ports::MarkerQueue;

/// How long a failed marker waits before it is tried again.
pub(super) const MARKER_RETRY: Duration = Duration::from_secs(5);
/// How long a caught-up `--until-caught-up` run goes on for the markers then due.
pub(crate) const MARKERS_WAIT: Duration = Duration::from_secs(120);
/// How often an idle partition's log end is read to tell whether it is caught up.
pub(super) const IDLE_CHECK: Duration = Duration::from_secs(10);
/// The same while a caught-up `--until-caught-up` run waits for its markers: a read from
/// before it caught up (not at the end then) must not end the wait.
pub(super) const CAUGHT_UP_CHECK: Duration = Duration::from_secs(1);

/// The marker jobs: submitted to the port, their results taken back.
pub(super) struct Completion {
    markers: Box<dyn MarkerQueue>,
}

impl Completion {
    pub(super) fn new(markers: Box<dyn MarkerQueue>) -> Completion {
        Completion { markers }
    }

    /// Starts the marker job of `due` (written `date_str` in the topic's names) on the
    /// partition `key`: it lists what the partition holds below its position now.
    pub(super) fn submit(&mut self, key: PartKey, st: &mut Partition, topic: &Topic, due: Due, date_str: String) {
        let complete_below = st.offsets().map_or(0, |o| o.position());
        let date = due.date();
        st.marking_mut().job_started(date);
        failpoint::hit(failpoint::MARKER_DUE);
        let job = MarkerJob {
            topic: key.topic,
            topic_name: topic.name().to_string(),
            layout: Arc::new(topic.layout().clone()),
            partition: key.partition,
            epoch: st.epoch(),
            date,
            date_str,
            complete_below,
            known: st.marking().known(date),
            late: matches!(due, Due::Late(_)),
            success_files: topic.cfg().success_files(),
        };
        self.markers.submit(job);
    }

    /// The next marker result that is ready, if any.
    pub(super) fn next(&mut self) -> Option<MarkerDone> {
        self.markers.next()
    }
}

/// Remembers what an uploaded file of a dated route holds, for its date's marker.
pub(super) fn note_uploaded(st: &mut Partition, topic: &Topic, f: &InFlight, outcome: Outcome) {
    // A rebuilt file found already there may hold more events than the rebuild (retention
    // took the first ones before it): its marker reads it instead.
    // Markers list the first output's files (`topic`'s); the other outputs write none.
    if f.output != 0 || f.intent.error || (f.existing == Existing::Rebuilt && outcome == Outcome::AlreadyThere) || !topic.markers() {
        return;
    }
    let Some(date) = topic.layout().dates().leading_date(&f.intent.date) else { return };
    let file = MarkedFile { key: f.intent.key.clone(), events: f.events, first_offset: Some(f.intent.from), last_offset: Some(f.intent.to) };
    st.marking_mut().uploaded(date, file);
}

/// True when every file of `date` this owner holds on the partition `key` is uploaded, its
/// recovery is over, and its offset is committed.
pub(super) fn settled(st: &Partition, files: &Files, key: PartKey, date: &str) -> bool {
    let same = |t: usize, p: i32| t == key.topic && p == key.partition;
    st.recovery().is_empty()
        && st.commit_due().is_none()
        && !files.open_keys().any(|k| same(k.topic, k.partition) && !k.error && of_day(&k.date, date))
        && !files.in_flight().any(|f| same(f.topic, f.partition) && !f.intent.error && of_day(&f.intent.date, date))
        && !files.rebuilding().any(|(p, _)| p == key)
}

/// The open files of `date` on the partition `key` (sealed so that a passed date settles).
pub(super) fn open_of_day(files: &Files, key: PartKey, date: &str) -> Vec<BufferKey> {
    files.open_keys().filter(|k| k.topic == key.topic && k.partition == key.partition && !k.error && of_day(&k.date, date)).cloned().collect()
}

/// True if a route's date string is of the day `day` (as the topic's names write it): the day
/// itself, or a folder below it (stock Secor's `dt=<day>/offset=<N>`), so that no file of the
/// day is overlooked when the day is declared complete.
fn of_day(route_date: &str, day: &str) -> bool {
    route_date.strip_prefix(day).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::of_day;

    #[test]
    fn a_day_holds_itself_and_its_folders_only() {
        assert!(of_day("2026-12-05", "2026-12-05"));
        assert!(of_day("dt=2026-12-05/offset=40", "dt=2026-12-05"));
        assert!(!of_day("2026-12-051", "2026-12-05"), "another string with the same start");
        assert!(!of_day("2026-12-04", "2026-12-05"));
    }
}
