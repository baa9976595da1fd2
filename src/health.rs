//! Liveness and readiness, as Kubernetes probes see them.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Shared health signals, updated by the writer and the uploader.
#[derive(Debug, Default)]
pub struct Health {
    /// Last time the writer loop ran, epoch ms.
    last_loop_ms: AtomicI64,
    /// The consumer has joined its group (received an assignment, possibly empty).
    joined: AtomicBool,
    /// Orders the broker signals below: a counter, not the clock, so that two signals in one
    /// millisecond still have an order.
    seq: AtomicI64,
    /// When (in `seq`) librdkafka last reported all brokers down (0: never).
    brokers_down_seq: AtomicI64,
    /// When a message, assignment or commit last proved the broker reachable.
    broker_ok_seq: AtomicI64,
    /// Whether the last upload attempt failed.
    upload_failing: AtomicBool,
    /// When a commit last went unanswered past the writer's wait (0: never).
    commit_unanswered_seq: AtomicI64,
    /// Set when Kafka deleted offsets before they were backed up; stays until the process
    /// restarts, so that someone looks.
    data_lost: std::sync::Mutex<Vec<String>>,
}

/// How long the loop may stall before liveness fails.
pub const LIVE_WINDOW_MS: i64 = 60_000;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Health {
    fn next(&self) -> i64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }
    pub fn loop_ran(&self) {
        self.last_loop_ms.store(now_ms(), Ordering::Relaxed);
    }
    pub fn joined(&self, v: bool) {
        self.joined.store(v, Ordering::Relaxed);
    }
    pub fn brokers_down(&self) {
        self.brokers_down_seq.store(self.next(), Ordering::Relaxed);
    }
    pub fn broker_ok(&self) {
        self.broker_ok_seq.store(self.next(), Ordering::Relaxed);
    }
    /// The broker did not answer a commit in time.
    pub fn commit_unanswered(&self) {
        self.commit_unanswered_seq.store(self.next(), Ordering::Relaxed);
    }
    pub fn upload_attempt(&self, ok: bool) {
        self.upload_failing.store(!ok, Ordering::Relaxed);
    }

    pub fn data_lost(&self, what: String) {
        self.data_lost.lock().unwrap_or_else(|e| e.into_inner()).push(what);
    }

    /// `Ok` while the writer loop keeps running.
    pub fn live(&self) -> Result<(), String> {
        let last = self.last_loop_ms.load(Ordering::Relaxed);
        let age = now_ms() - last;
        if last == 0 {
            return Err("the writer has not started".into());
        }
        if age > LIVE_WINDOW_MS {
            return Err(format!("writer loop has not run for {} ms", age));
        }
        Ok(())
    }

    /// `Ok` when joined, the broker is reachable, and uploads are not failing.
    pub fn ready(&self) -> Result<(), String> {
        self.live()?;
        if !self.joined.load(Ordering::Relaxed) {
            return Err("not yet joined the consumer group".into());
        }
        let ok = self.broker_ok_seq.load(Ordering::Relaxed);
        if self.brokers_down_seq.load(Ordering::Relaxed) > ok {
            return Err("all brokers are down".into());
        }
        if self.commit_unanswered_seq.load(Ordering::Relaxed) > ok {
            return Err("the broker has stopped answering commits".into());
        }
        if self.upload_failing.load(Ordering::Relaxed) {
            return Err("the last upload attempt failed; uploads are being retried".into());
        }
        let lost = self.data_lost.lock().unwrap_or_else(|e| e.into_inner());
        if !lost.is_empty() {
            return Err(format!("DATA LOST (restart once acknowledged, see the runbook): {}", lost.join("; ")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_signals() {
        let h = Health::default();
        assert!(h.live().is_err(), "the loop has not run yet");
        h.loop_ran();
        assert!(h.live().is_ok());
        assert!(h.ready().unwrap_err().contains("joined"));
        h.joined(true);
        assert!(h.ready().is_ok());
        h.upload_attempt(false);
        assert!(h.ready().unwrap_err().contains("upload"));
        h.upload_attempt(true);
        assert!(h.ready().is_ok());
        h.brokers_down();
        assert!(h.ready().unwrap_err().contains("brokers"));
        h.broker_ok();
        assert!(h.ready().is_ok());
        h.commit_unanswered();
        assert!(h.ready().unwrap_err().contains("answering commits"));
        h.broker_ok();
        assert!(h.ready().is_ok(), "an answered commit clears it, in the same millisecond too");
        h.data_lost("t/3: 5 offset(s) [0, 5) were deleted".into());
        assert!(h.ready().unwrap_err().contains("DATA LOST"), "and it stays so");
        assert!(h.live().is_ok(), "the writer itself is fine");
    }
}
