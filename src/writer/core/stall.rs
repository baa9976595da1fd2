//! Notices a partition whose backup stopped moving: consumed ahead of its commit while the
//! commit stays put for longer than its files can legitimately take, or a sealed file that
//! waits for its intent record far longer than a commit takes. Either way nothing of the
//! partition reaches storage any more, although consumption may go on; before, such a stall
//! went unnoticed for minutes with readiness green (issue 34). Pure: the caller supplies the
//! time and the partition's figures.

use std::time::{Duration, Instant};

/// Added to a topic's `max_file_age_secs`: a file is sealed at that age at the latest, then
/// uploaded (retried while storage fails, which readiness reports on its own) and committed
/// within a commit interval; a minute covers both with room.
pub(crate) const STALL_MARGIN: Duration = Duration::from_secs(60);

/// One owned partition's commit progress.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct CommitWatch {
    /// The commit when `since` was set.
    committed: i64,
    /// Since when the partition has been ahead of an unmoving commit (`None`: not ahead).
    since: Option<Instant>,
}

/// Why a partition counts as stalled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stall {
    /// Consumed to `position`, committed at `committed` and not moved for `for_`.
    CommitStill { position: i64, committed: i64, for_: Duration },
    /// A sealed file has waited `for_` for its intent record (commits are failing or refused).
    IntentWaiting { for_: Duration },
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stall::CommitStill { position, committed, for_ } => write!(
                f,
                "consumed to offset {position} but the commit has stayed at {committed} for {} s: nothing of it reaches storage",
                for_.as_secs()
            ),
            Stall::IntentWaiting { for_ } => {
                write!(f, "a sealed file has waited {} s for its upload intent to be committed: nothing of it reaches storage", for_.as_secs())
            }
        }
    }
}

impl CommitWatch {
    /// Notes the partition's next offset to consume and its last commit at `now`.
    pub(super) fn observe(&mut self, now: Instant, position: i64, committed: i64) {
        if position <= committed {
            self.since = None;
        } else if self.since.is_none() || committed != self.committed {
            self.since = Some(now);
            self.committed = committed;
        }
    }

    /// Since when the commit has stood still with the partition ahead of it, if it has.
    #[cfg(test)]
    pub(super) fn still_since(&self) -> Option<Instant> {
        self.since
    }

    /// The partition's stall at `now`, if any: ahead of a commit that has not moved for
    /// `limit` (the topic's file age plus [`STALL_MARGIN`]), or a file sealed at
    /// `oldest_awaiting` still waiting for its intent after [`STALL_MARGIN`].
    pub(super) fn stall(&self, now: Instant, position: i64, limit: Duration, oldest_awaiting: Option<Instant>) -> Option<Stall> {
        if let Some(since) = self.since {
            let for_ = now.saturating_duration_since(since);
            if for_ >= limit {
                return Some(Stall::CommitStill { position, committed: self.committed, for_ });
            }
        }
        let waited = now.saturating_duration_since(oldest_awaiting?);
        (waited >= STALL_MARGIN).then_some(Stall::IntentWaiting { for_: waited })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(120);

    #[test]
    fn a_commit_that_keeps_moving_is_never_a_stall() {
        let t0 = Instant::now();
        let mut w = CommitWatch::default();
        for i in 0..100u64 {
            let now = t0 + Duration::from_secs(60 * i);
            // Always ahead, but the commit moves every minute.
            w.observe(now, 1_000 * i as i64 + 500, 1_000 * i as i64);
            assert_eq!(w.stall(now, 0, LIMIT, None), None, "at {i} min");
        }
    }

    #[test]
    fn caught_up_is_never_a_stall_however_long_the_commit_stays() {
        let t0 = Instant::now();
        let mut w = CommitWatch::default();
        for s in 0..10_000u64 {
            w.observe(t0 + Duration::from_secs(s), 42, 42);
        }
        assert_eq!(w.still_since(), None);
        assert_eq!(w.stall(t0 + Duration::from_secs(10_000), 42, LIMIT, None), None);
    }

    #[test]
    fn ahead_of_a_still_commit_past_the_limit_is_a_stall_counted_from_when_it_got_ahead() {
        let t0 = Instant::now();
        let mut w = CommitWatch::default();
        w.observe(t0, 90, 90);
        // Consumption goes on; the commit stays at 90.
        let ahead = t0 + Duration::from_secs(5);
        w.observe(ahead, 200, 90);
        for s in 6..125 {
            let now = t0 + Duration::from_secs(s);
            w.observe(now, 200 + s as i64, 90);
            assert_eq!(w.stall(now, 200 + s as i64, LIMIT, None), None, "{s} s: under the limit");
        }
        let now = ahead + LIMIT;
        w.observe(now, 900, 90);
        assert_eq!(w.stall(now, 900, LIMIT, None), Some(Stall::CommitStill { position: 900, committed: 90, for_: LIMIT }));
        assert_eq!(w.still_since(), Some(ahead));
        // The commit moves: the count starts again.
        let later = now + Duration::from_secs(1);
        w.observe(later, 950, 400);
        assert_eq!(w.stall(later, 950, LIMIT, None), None);
        assert_eq!(w.still_since(), Some(later));
        // Caught up with the commit: no longer ahead.
        w.observe(later, 950, 950);
        assert_eq!(w.still_since(), None);
    }

    #[test]
    fn a_file_waiting_for_its_intent_is_a_stall_after_the_margin_whatever_the_file_age() {
        let t0 = Instant::now();
        let mut w = CommitWatch::default();
        w.observe(t0, 10, 0);
        let hours = Duration::from_secs(4 * 3600 + 60);
        assert_eq!(w.stall(t0 + STALL_MARGIN - Duration::from_millis(1), 10, hours, Some(t0)), None);
        assert_eq!(w.stall(t0 + STALL_MARGIN, 10, hours, Some(t0)), Some(Stall::IntentWaiting { for_: STALL_MARGIN }));
        assert!(Stall::IntentWaiting { for_: STALL_MARGIN }.to_string().contains("60 s"));
    }
}
