//! When the core's periodic work is due: the tick (liveness, file ages, gauges), commits,
//! retries of intents and of watermark reads, and the note that the group has not assigned
//! anything yet. Pure bookkeeping over the core's clock; the work itself is the writer's.

use std::time::{Duration, Instant};

/// How often the periodic work runs.
const TICK: Duration = Duration::from_millis(500);
/// How long recording intents waits after it failed.
const INTENTS_RETRY: Duration = Duration::from_secs(1);
/// How often watermarks that could not be read at assignment are tried again.
const WATERMARKS_RETRY: Duration = Duration::from_secs(5);
/// How often the writer says it still waits for an assignment.
const ASSIGNMENT_WAIT_NOTE: Duration = Duration::from_secs(10);
/// How often a caught-up `--until-caught-up` run commits while its last files and markers land.
const ENDING_COMMIT_INTERVAL: Duration = Duration::from_millis(50);

pub(super) struct Cadence {
    /// `writer.commit_interval_ms`.
    commit_interval: Duration,
    last_tick: Instant,
    last_commit: Instant,
    intents_at: Instant,
    watermarks_at: Instant,
    assignment_wait_said: Instant,
}

impl Cadence {
    /// Periodic work starting at `now`: the first tick is due at once (liveness, ages).
    pub(super) fn new(now: Instant, commit_interval: Duration) -> Cadence {
        Cadence {
            commit_interval,
            last_tick: now.checked_sub(TICK * 2).unwrap_or(now),
            last_commit: now,
            intents_at: now,
            watermarks_at: now,
            assignment_wait_said: now,
        }
    }

    /// True (once) when the tick is due at `now`.
    pub(super) fn tick(&mut self, now: Instant) -> bool {
        if now.duration_since(self.last_tick) < TICK {
            return false;
        }
        self.last_tick = now;
        true
    }

    /// True when a commit is due: every `commit_interval`, or every 50 ms while a caught-up
    /// one-shot run is `ending` (each last file committed as it lands, yet a broker refusing
    /// commits is not asked in a tight loop).
    pub(super) fn commit_due(&self, now: Instant, ending: bool) -> bool {
        now.duration_since(self.last_commit) >= if ending { ENDING_COMMIT_INTERVAL } else { self.commit_interval }
    }

    /// A commit was made at `now`.
    pub(super) fn committed(&mut self, now: Instant) {
        self.last_commit = now;
    }

    /// True when sealed files' intents may be recorded (not while a failure's retry waits).
    pub(super) fn intents_due(&self, now: Instant) -> bool {
        now >= self.intents_at
    }

    /// Recording intents failed at `now`: tried again a second later.
    pub(super) fn intents_failed(&mut self, now: Instant) {
        self.intents_at = now + INTENTS_RETRY;
    }

    /// True (at most every 5 s) when failed watermark reads are asked again.
    pub(super) fn watermarks_due(&mut self, now: Instant) -> bool {
        if now < self.watermarks_at {
            return false;
        }
        self.watermarks_at = now + WATERMARKS_RETRY;
        true
    }

    /// True (at most every 10 s) when the writer says again that it waits for an assignment.
    pub(super) fn note_assignment_wait(&mut self, now: Instant) -> bool {
        if now.duration_since(self.assignment_wait_said) < ASSIGNMENT_WAIT_NOTE {
            return false;
        }
        self.assignment_wait_said = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_work_comes_at_its_own_pace() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = Cadence::new(t0, Duration::from_secs(5));
        assert!(c.tick(t0), "the first tick is due at once");
        assert!(!c.tick(ms(499)) && c.tick(ms(500)) && !c.tick(ms(600)));
        assert!(!c.commit_due(ms(4_999), false) && c.commit_due(ms(5_000), false));
        assert!(c.commit_due(ms(50), true), "an ending run commits every 50 ms");
        c.committed(ms(5_000));
        assert!(!c.commit_due(ms(5_049), true) && c.commit_due(ms(5_050), true));
        assert!(c.intents_due(t0));
        c.intents_failed(t0);
        assert!(!c.intents_due(ms(999)) && c.intents_due(ms(1_000)));
        assert!(c.watermarks_due(t0) && !c.watermarks_due(ms(4_999)) && c.watermarks_due(ms(5_000)));
        assert!(!c.note_assignment_wait(ms(9_999)) && c.note_assignment_wait(ms(10_000)) && !c.note_assignment_wait(ms(10_001)));
    }
}
