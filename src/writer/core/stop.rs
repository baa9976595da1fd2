//! The stop: when the writer must have stopped, whether a `--until-caught-up` run has caught
//! up, and why the writer cannot go on, once it cannot. Every wait the core makes asks it how
//! long it may last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::decision::Fatal;
use crate::writer::StopRequest;

pub(super) struct Stop {
    /// `writer.shutdown_timeout_secs`: how long a stop may take, from its signal.
    shutdown_timeout: Duration,
    /// Set when a graceful stop begins: every later wait (a revocation's included) ends by it.
    begun: Option<Instant>,
    /// The stop asked for from outside (a signal), if the writer runs in a process: a wait that
    /// is under way when it comes (a rebalance's) ends by the stop's deadline too.
    signal: Option<Arc<StopRequest>>,
    /// When a `--until-caught-up` run caught up (it may go on for the markers then due).
    caught_up_at: Option<Instant>,
    /// Set when the writer cannot go on safely (e.g. committed offsets unreadable).
    fatal: Option<Fatal>,
}

impl Stop {
    pub(super) fn new(shutdown_timeout: Duration) -> Stop {
        Stop { shutdown_timeout, begun: None, signal: None, caught_up_at: None, fatal: None }
    }

    /// A graceful stop begins; it must end by `deadline`.
    pub(super) fn begin(&mut self, deadline: Instant) {
        self.begun = Some(deadline);
    }

    /// The deadline of the stop begun, if one was.
    pub(super) fn begun(&self) -> Option<Instant> {
        self.begun
    }

    /// Hears the process's stop request.
    pub(super) fn listen(&mut self, signal: Arc<StopRequest>) {
        self.signal = Some(signal);
    }

    /// By when the writer must have stopped: the deadline of a stop begun, or of one asked for.
    pub(super) fn deadline(&self, now: Instant) -> Option<Instant> {
        self.begun.or_else(|| {
            let signal = self.signal.as_ref().filter(|s| s.asked())?;
            Some(signal.deadline(now, self.shutdown_timeout))
        })
    }

    /// How long a call may wait now: `own`, or less before a stop's deadline.
    pub(super) fn call_wait(&self, now: Instant, own: Duration) -> Duration {
        match self.deadline(now) {
            Some(d) => own.min(d.saturating_duration_since(now)),
            None => own,
        }
    }

    /// Why the writer cannot go on, once it cannot.
    pub(super) fn fatal(&self) -> Option<&Fatal> {
        self.fatal.as_ref()
    }

    /// The writer cannot go on, for `why` (a later reason replaces an earlier one).
    pub(super) fn fail(&mut self, why: Fatal) {
        self.fatal = Some(why);
    }

    /// When the run caught up, if it has and is still caught up.
    pub(super) fn caught_up_at(&self) -> Option<Instant> {
        self.caught_up_at
    }

    /// The run is caught up at `now`: returns since when.
    pub(super) fn caught_up(&mut self, now: Instant) -> Instant {
        *self.caught_up_at.get_or_insert(now)
    }

    /// The run is no longer caught up (a rebalance brought new partitions).
    pub(super) fn behind(&mut self) {
        self.caught_up_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_begun_stop_bounds_every_wait_and_a_signal_starts_the_bound_when_heard() {
        let t0 = Instant::now();
        let mut s = Stop::new(Duration::from_secs(30));
        assert_eq!(s.deadline(t0), None);
        assert_eq!(s.call_wait(t0, Duration::from_secs(5)), Duration::from_secs(5), "no stop: a call's own wait");
        let signal = Arc::new(StopRequest::default());
        s.listen(signal.clone());
        assert_eq!(s.deadline(t0), None, "a signal not yet asked");
        signal.ask();
        let d = s.deadline(t0).expect("a stop asked for has a deadline");
        assert!(d > t0, "the shutdown bound from the signal");
        s.begin(t0 + Duration::from_secs(2));
        assert_eq!(s.deadline(t0), Some(t0 + Duration::from_secs(2)), "a stop begun wins");
        assert_eq!(s.call_wait(t0 + Duration::from_secs(1), Duration::from_secs(5)), Duration::from_secs(1), "less before the deadline");
        assert_eq!(s.call_wait(t0 + Duration::from_secs(3), Duration::from_secs(5)), Duration::ZERO, "none past it");
    }

    #[test]
    fn caught_up_is_remembered_from_the_first_time_until_behind() {
        let t0 = Instant::now();
        let mut s = Stop::new(Duration::from_secs(30));
        assert_eq!(s.caught_up(t0), t0);
        assert_eq!(s.caught_up(t0 + Duration::from_secs(1)), t0, "since the first time");
        s.behind();
        assert_eq!(s.caught_up_at(), None);
        s.fail(Fatal::CommitUnanswered { secs: 3 });
        assert!(matches!(s.fatal(), Some(Fatal::CommitUnanswered { secs: 3 })));
    }
}
