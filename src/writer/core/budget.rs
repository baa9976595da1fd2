//! The memory budget's decisions, in one place: when to seal early, when sealing would not
//! help because uploads are behind, and when to pause and resume consumption.

/// The buffer budget: bytes in open files plus bytes in files being uploaded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    limit: u64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(super) fn new(limit: u64) -> Budget {
        Budget { limit }
    }

    /// Its size in bytes.
    #[cfg(test)]
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// Buffers and uploads together hold more than the budget.
    pub(super) fn over(&self, open: u64, inflight: u64) -> bool {
        open + inflight > self.limit
    }

    /// Uploads hold half the budget or more. Sealing then frees nothing (the bytes only move to
    /// the upload queue) and would cut files ever smaller, down to one event each: the polling
    /// loop waits for uploads instead.
    pub(super) fn uploads_behind(&self, inflight: u64) -> bool {
        inflight >= self.limit / 2
    }

    /// Whether consumption should be paused: from three quarters of the budget in uploads,
    /// until they are back to half (the gap keeps it from flapping).
    pub(super) fn pause(&self, paused: bool, inflight: u64) -> bool {
        if paused {
            inflight > self.limit / 2
        } else {
            inflight >= self.limit / 4 * 3
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let b = Budget { limit: 1000 };
        assert!(!b.over(600, 400) && b.over(601, 400));
        assert!(!b.uploads_behind(499) && b.uploads_behind(500));
        // Pausing starts at 3/4 and ends at 1/2: no flapping in between.
        assert!(!b.pause(false, 749) && b.pause(false, 750));
        assert!(b.pause(true, 501) && !b.pause(true, 500));
        assert!(!b.pause(false, 600) && b.pause(true, 600), "between the thresholds the state stays");
    }
}
