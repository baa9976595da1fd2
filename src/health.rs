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
    /// When the statistics last showed a broker holding requests unanswered (0: never), and
    /// which broker, for how long.
    silent_seq: AtomicI64,
    silent_what: std::sync::Mutex<String>,
    /// Set when Kafka deleted offsets before they were backed up; stays until the process
    /// restarts, so that someone looks.
    data_lost: std::sync::Mutex<Vec<String>>,
    /// Owned partitions whose backup stopped moving, with why (refreshed by the writer).
    stalled: std::sync::Mutex<Vec<String>>,
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
    /// A broker has held a request unanswered for `for_ms` (see [`BrokerSilence`]); true when
    /// this is news (readiness was not already saying so), so the caller logs it once.
    pub fn broker_silent(&self, broker: &str, for_ms: i64) -> bool {
        *self.silent_what.lock().unwrap_or_else(|e| e.into_inner()) = format!("broker {broker} has not answered a request for {} s", for_ms / 1000);
        let was = self.silent_seq.load(Ordering::Relaxed) > self.broker_ok_seq.load(Ordering::Relaxed);
        self.silent_seq.store(self.next(), Ordering::Relaxed);
        !was
    }
    /// The statistics show answers again and no silent broker. Clears only the silence: a commit
    /// still unanswered or all brokers down stay as they were.
    pub fn broker_answered(&self) {
        self.silent_seq.store(0, Ordering::Relaxed);
    }
    pub fn upload_attempt(&self, ok: bool) {
        self.upload_failing.store(!ok, Ordering::Relaxed);
    }

    /// The owned partitions whose backup stopped moving now (empty: all move).
    pub fn set_stalled(&self, what: Vec<String>) {
        *self.stalled.lock().unwrap_or_else(|e| e.into_inner()) = what;
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
        if self.silent_seq.load(Ordering::Relaxed) > ok {
            return Err(self.silent_what.lock().unwrap_or_else(|e| e.into_inner()).clone());
        }
        if self.commit_unanswered_seq.load(Ordering::Relaxed) > ok {
            return Err("the broker has stopped answering commits".into());
        }
        if self.upload_failing.load(Ordering::Relaxed) {
            return Err("the last upload attempt failed; uploads are being retried".into());
        }
        let stalled = self.stalled.lock().unwrap_or_else(|e| e.into_inner());
        if !stalled.is_empty() {
            return Err(format!("backup stalled: {}", stalled.join("; ")));
        }
        drop(stalled);
        let lost = self.data_lost.lock().unwrap_or_else(|e| e.into_inner());
        if !lost.is_empty() {
            return Err(format!("DATA LOST (restart once acknowledged, see the runbook): {}", lost.join("; ")));
        }
        Ok(())
    }
}

/// How long a broker may hold a request with nothing at all coming back before readiness says
/// it has stopped answering. Fetches are long polls of `fetch.wait.max.ms` (500 ms by default)
/// and heartbeats go out every 3 s, so a broker that answers anything is never silent this long.
pub const SILENT_MS: i64 = 10_000;

/// Notices, from librdkafka's periodic statistics, a broker that has stopped answering: one
/// that had requests waiting for a response while it sent back nothing at all for
/// [`SILENT_MS`]. A frozen broker (stopped process, dead network path) closes no connection,
/// so librdkafka reports no error for a minute (its socket timeout); a commit may not be in
/// flight to notice it either. Pure: the caller supplies the time.
#[derive(Debug, Default)]
pub struct BrokerSilence {
    brokers: std::collections::HashMap<String, Heard>,
}

#[derive(Debug)]
struct Heard {
    /// Responses received so far (librdkafka's `rx`).
    rx: u64,
    /// Since when requests have been waiting with no response received.
    waiting_since: Option<i64>,
}

impl BrokerSilence {
    /// One broker's figures from a snapshot taken at `now_ms`: responses received in total and
    /// requests now waiting for a response. Call [`BrokerSilence::verdict`] after the last.
    pub fn broker(&mut self, now_ms: i64, name: &str, rx: u64, waiting: i64) -> bool {
        let heard = self.brokers.entry(name.to_string()).or_insert(Heard { rx, waiting_since: None });
        let answered = heard.rx != rx;
        if answered {
            heard.rx = rx;
            heard.waiting_since = None;
        }
        heard.waiting_since = if waiting > 0 { Some(heard.waiting_since.unwrap_or(now_ms)) } else { None };
        answered
    }

    /// The broker silent longest, if any is past [`SILENT_MS`].
    pub fn silent(&self, now_ms: i64) -> Option<(String, i64)> {
        self.brokers
            .iter()
            .filter_map(|(name, h)| h.waiting_since.map(|since| (name.clone(), now_ms - since)))
            .filter(|(_, waited)| *waited >= SILENT_MS)
            .max_by_key(|(name, waited)| (*waited, std::cmp::Reverse(name.clone())))
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

    #[test]
    fn a_silent_broker_turns_readiness_red_until_it_answers() {
        let h = Health::default();
        h.loop_ran();
        h.joined(true);
        assert!(h.broker_silent("127.0.0.1:9092/1", 12_345), "news");
        assert!(!h.broker_silent("127.0.0.1:9092/1", 17_345), "not news");
        assert_eq!(h.ready().unwrap_err(), "broker 127.0.0.1:9092/1 has not answered a request for 17 s");
        h.broker_ok();
        assert!(h.ready().is_ok());
        assert!(h.broker_silent("127.0.0.1:9092/1", 10_000), "news again");
        h.commit_unanswered();
        h.broker_answered();
        assert!(h.ready().unwrap_err().contains("answering commits"), "answers clear the silence, not the commit");
    }

    #[test]
    fn silence_is_requests_waiting_with_nothing_received() {
        let mut s = BrokerSilence::default();
        // Answering every snapshot: never silent, however long requests keep waiting.
        for (i, t) in (0..100_000).step_by(5_000).enumerate() {
            assert!(s.broker(t, "b", i as u64, 1) || i == 0);
            assert_eq!(s.silent(t), None);
        }
        // Idle (nothing waiting, nothing received, e.g. paused with heartbeats elsewhere): not silent.
        let mut idle = BrokerSilence::default();
        for t in (0..60_000).step_by(5_000) {
            assert!(!idle.broker(t, "b", 7, 0));
            assert_eq!(idle.silent(t), None);
        }
        // A request sent after a long idle spell is not silence yet: waiting counts from the first
        // snapshot that saw it waiting, not from the last response.
        assert!(!idle.broker(60_000, "b", 7, 1));
        assert_eq!(idle.silent(60_000), None);
        assert!(!idle.broker(65_000, "b", 7, 1));
        assert_eq!(idle.silent(65_000), None, "5 s is under the threshold");
        assert!(!idle.broker(70_000, "b", 7, 2));
        assert_eq!(idle.silent(70_000), Some(("b".to_string(), SILENT_MS)));
        // An answer clears it; a request still waiting starts a new count.
        assert!(idle.broker(75_000, "b", 8, 1));
        assert_eq!(idle.silent(75_000), None);
        assert_eq!(idle.silent(75_000 + SILENT_MS - 1), None);
        assert_eq!(idle.silent(75_000 + SILENT_MS), Some(("b".to_string(), SILENT_MS)));
        // A request that stops waiting (timed out, connection closed) ends the silence too.
        idle.broker(90_000, "b", 8, 0);
        assert_eq!(idle.silent(90_000), None);
    }

    #[test]
    fn the_longest_silent_broker_is_named() {
        let mut s = BrokerSilence::default();
        s.broker(0, "a", 1, 1);
        s.broker(5_000, "b", 1, 1);
        s.broker(5_000, "c", 1, 0);
        assert_eq!(s.silent(14_999), Some(("a".to_string(), 14_999)));
        s.broker(20_000, "a", 2, 0);
        assert_eq!(s.silent(20_000), Some(("b".to_string(), 15_000)));
    }
}
