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
    /// Since when (epoch ms) the broker has left a commit unanswered (0: none is).
    commit_unanswered_since: AtomicI64,
    /// When the statistics last showed a broker holding requests unanswered (0: never), and
    /// which broker, for how long.
    silent_seq: AtomicI64,
    silent_what: std::sync::Mutex<String>,
    /// Set when Kafka deleted offsets before they were backed up; stays until the process
    /// restarts, so that someone looks.
    data_lost: std::sync::Mutex<Vec<String>>,
    /// Owned partitions whose backup stopped moving, with why (refreshed by the writer).
    stalled: std::sync::Mutex<Vec<String>>,
    /// Owned partitions without a reachable leader for [`UNSERVED_MS`] (from the statistics).
    unserved: std::sync::Mutex<Vec<String>>,
}

/// How long the loop may stall before liveness fails.
pub const LIVE_WINDOW_MS: i64 = 60_000;

/// How long the broker may leave a commit unanswered before readiness says so. A group
/// coordinator that moves (its broker restarted) holds commits for a few seconds until the
/// next one has loaded the group; that is a rolling restart, not a writer that cannot back up.
pub const COMMIT_STUCK_MS: i64 = 15_000;

/// How long an owned partition may be without a reachable leader before readiness says so: a
/// leader that is stopped hands its partitions over at once, one that dies is replaced once
/// the controller notices (`broker.session.timeout.ms`, 9 s by default).
pub const UNSERVED_MS: i64 = 15_000;

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
    /// A commit succeeded: the broker answers commits, and the cluster is reachable.
    pub fn committed(&self) {
        self.broker_ok();
        self.commit_answered();
    }
    /// The broker did not answer a commit in time (counted from the first such commit).
    pub fn commit_unanswered(&self) {
        self.commit_unanswered_at(now_ms());
    }
    fn commit_unanswered_at(&self, ms: i64) {
        let _ = self.commit_unanswered_since.compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed);
    }
    /// The commit the broker held is answered (applied or refused).
    pub fn commit_answered(&self) {
        self.commit_unanswered_since.store(0, Ordering::Relaxed);
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

    /// The owned partitions without a reachable leader now (empty: all are served).
    pub fn set_unserved(&self, what: Vec<String>) {
        *self.unserved.lock().unwrap_or_else(|e| e.into_inner()) = what;
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

    /// `Ok` when this writer can back up: joined, every owned partition served and moving,
    /// commits answered, uploads not failing, nothing lost.
    pub fn ready(&self) -> Result<(), String> {
        self.ready_at(now_ms())
    }

    fn ready_at(&self, now: i64) -> Result<(), String> {
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
        let since = self.commit_unanswered_since.load(Ordering::Relaxed);
        if since > 0 && now - since >= COMMIT_STUCK_MS {
            return Err(format!("the broker has not answered a commit for {} s", (now - since) / 1000));
        }
        let unserved = self.unserved.lock().unwrap_or_else(|e| e.into_inner());
        if !unserved.is_empty() {
            return Err(format!("partitions without a reachable leader: {}", unserved.join("; ")));
        }
        drop(unserved);
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
    /// requests now waiting for a response. Call [`BrokerSilence::silent`] after the last.
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

    /// Forgets the brokers `keep` rejects: librdkafka's snapshots leave out a broker whose
    /// connection is gone, and a last "waiting" kept for it would count on as silence.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.brokers.retain(|name, _| keep(name));
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

/// One broker of librdkafka's statistics, as readiness reads it.
#[derive(Debug, Clone)]
pub struct BrokerStat<'a> {
    /// librdkafka's name for it (`host:port/id`, or `GroupCoordinator` for the logical one).
    pub name: &'a str,
    pub nodeid: i32,
    /// `host:port`; the logical coordinator's names the broker it stands for.
    pub nodename: &'a str,
    /// A broker the client learned from metadata (not a bootstrap address or a logical one).
    pub learned: bool,
    /// The coordinator's logical connection.
    pub coordinator: bool,
    /// Connected (state `UP`).
    pub up: bool,
    /// Responses received in total, requests waiting for one now.
    pub rx: u64,
    pub waiting: i64,
}

/// One partition of librdkafka's statistics.
#[derive(Debug, Clone)]
pub struct PartitionStat<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// Assigned to this consumer (its fetch state is not `none`).
    pub owned: bool,
    /// The leader's node id, -1 when there is none.
    pub leader: i32,
}

/// What readiness concludes from one statistics snapshot.
#[derive(Debug, Default, PartialEq)]
pub struct ClusterVerdict {
    /// A broker this writer depends on, connected, holding requests with nothing coming back.
    pub silent: Option<(String, i64)>,
    /// Owned partitions without a reachable leader for [`UNSERVED_MS`], described.
    pub unserved: Vec<String>,
    /// Some broker answered since the last snapshot.
    pub answered: bool,
    /// Brokers that are down (not connected), newly so since the last snapshot.
    pub newly_down: Vec<String>,
}

/// Readiness from the cluster's side: red only when a partition this writer owns cannot make
/// progress, never because one broker of a cluster that serves everything is down. A broker
/// counts only while it matters here (it leads an owned partition, or coordinates the group)
/// and only while connected: a stopped broker refuses connections (its partitions move to
/// others), which is not a broker holding requests unanswered. Pure: the caller supplies the
/// time and the snapshot.
#[derive(Debug, Default)]
pub struct ClusterWatch {
    silence: BrokerSilence,
    /// Owned partitions without a reachable leader, since when.
    leaderless: std::collections::HashMap<(String, i32), i64>,
    /// Learned brokers seen down at the last snapshot.
    down: std::collections::HashSet<String>,
}

impl ClusterWatch {
    pub fn observe(&mut self, now_ms: i64, brokers: &[BrokerStat<'_>], partitions: &[PartitionStat<'_>]) -> ClusterVerdict {
        let coordinator = brokers.iter().find(|b| b.coordinator && !b.nodename.is_empty()).map(|b| b.nodename);
        let leaders: std::collections::HashSet<i32> = partitions.iter().filter(|p| p.owned && p.leader >= 0).map(|p| p.leader).collect();
        let mut verdict = ClusterVerdict::default();
        let mut down = std::collections::HashSet::new();
        for b in brokers.iter().filter(|b| b.learned) {
            let matters = leaders.contains(&b.nodeid) || Some(b.nodename) == coordinator;
            let waiting = if b.up && matters { b.waiting } else { 0 };
            verdict.answered |= self.silence.broker(now_ms, b.name, b.rx, waiting);
            if !b.up {
                if !self.down.contains(b.name) {
                    verdict.newly_down.push(b.name.to_string());
                }
                down.insert(b.name.to_string());
            }
        }
        self.down = down;
        self.silence.retain(|name| brokers.iter().any(|b| b.learned && b.name == name));
        verdict.silent = self.silence.silent(now_ms);
        let reachable = |leader: i32| brokers.iter().any(|b| b.learned && b.nodeid == leader && b.up);
        let mut still = std::collections::HashMap::new();
        for p in partitions.iter().filter(|p| p.owned) {
            if p.leader >= 0 && reachable(p.leader) {
                continue;
            }
            let key = (p.topic.to_string(), p.partition);
            let since = self.leaderless.get(&key).copied().unwrap_or(now_ms);
            if now_ms - since >= UNSERVED_MS {
                verdict.unserved.push(format!("{}/{}: no reachable leader for {} s", p.topic, p.partition, (now_ms - since) / 1000));
            }
            still.insert(key, since);
        }
        self.leaderless = still;
        verdict.unserved.sort();
        verdict
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
        let t0 = now_ms();
        h.commit_unanswered_at(t0);
        assert!(h.ready_at(t0 + COMMIT_STUCK_MS - 1).is_ok(), "a coordinator that moves holds commits for seconds");
        assert!(h.ready_at(t0 + COMMIT_STUCK_MS).unwrap_err().contains("has not answered a commit for 15 s"));
        h.commit_unanswered_at(t0 + 10_000);
        assert!(h.ready_at(t0 + COMMIT_STUCK_MS).is_err(), "counted from the first unanswered commit");
        h.committed();
        assert!(h.ready_at(t0 + COMMIT_STUCK_MS).is_ok(), "an answered commit clears it");
        h.commit_unanswered_at(t0);
        h.commit_answered();
        assert!(h.ready_at(t0 + COMMIT_STUCK_MS).is_ok(), "so does a refused one (the broker answers again)");
        h.set_unserved(vec!["t/3: no reachable leader for 15 s".into()]);
        assert_eq!(h.ready().unwrap_err(), "partitions without a reachable leader: t/3: no reachable leader for 15 s");
        h.set_unserved(Vec::new());
        h.set_stalled(vec!["t/0: consumed to offset 9".into()]);
        assert_eq!(h.ready().unwrap_err(), "backup stalled: t/0: consumed to offset 9");
        h.set_stalled(Vec::new());
        assert!(h.ready().is_ok());
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
        h.commit_unanswered_at(now_ms() - COMMIT_STUCK_MS);
        h.broker_answered();
        assert!(h.ready().unwrap_err().contains("has not answered a commit"), "answers clear the silence, not the commit");
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

    fn broker(id: i32, up: bool, rx: u64, waiting: i64) -> (String, String, i32, bool, u64, i64) {
        (format!("127.0.0.1:{}/{id}", 29091 + id), format!("127.0.0.1:{}", 29091 + id), id, up, rx, waiting)
    }

    fn stats(bs: &[(String, String, i32, bool, u64, i64)], coordinator: Option<i32>) -> Vec<BrokerStat<'_>> {
        let mut out: Vec<BrokerStat<'_>> = bs
            .iter()
            .map(|(name, nodename, id, up, rx, waiting)| BrokerStat {
                name,
                nodeid: *id,
                nodename,
                learned: true,
                coordinator: false,
                up: *up,
                rx: *rx,
                waiting: *waiting,
            })
            .collect();
        if let Some(c) = coordinator {
            let nodename = bs.iter().find(|b| b.2 == c).map(|b| b.1.as_str()).unwrap_or_default();
            out.push(BrokerStat { name: "GroupCoordinator", nodeid: -1, nodename, learned: false, coordinator: true, up: true, rx: 0, waiting: 1 });
        }
        out
    }

    fn part(p: i32, leader: i32) -> PartitionStat<'static> {
        PartitionStat { topic: "t", partition: p, owned: true, leader }
    }

    #[test]
    fn a_stopped_broker_is_down_not_silent_and_is_told_once() {
        let mut w = ClusterWatch::default();
        let parts = [part(0, 1), part(1, 2)];
        let b = [broker(1, true, 10, 1), broker(2, true, 10, 1), broker(3, true, 10, 0)];
        assert_eq!(w.observe(0, &stats(&b, Some(2)), &parts), ClusterVerdict { answered: false, ..Default::default() });
        // Broker 2 is stopped: its connection is refused; librdkafka still counts a request
        // waiting for it. Not silence, and its partition moves to broker 3 at the next refresh.
        let b = [broker(1, true, 11, 1), broker(2, false, 10, 1), broker(3, true, 10, 0)];
        let v = w.observe(5_000, &stats(&b, Some(1)), &parts);
        assert_eq!(v.newly_down, vec!["127.0.0.1:29093/2".to_string()]);
        assert!(v.answered);
        let moved = [part(0, 1), part(1, 3)];
        for t in (10_000..60_000).step_by(5_000) {
            let b = [broker(1, true, 11 + t as u64, 1), broker(2, false, 10, 1), broker(3, true, 10 + t as u64, 1)];
            let v = w.observe(t, &stats(&b, Some(1)), &moved);
            assert_eq!((v.silent, v.unserved.len(), v.newly_down.len()), (None, 0, 0), "at {t} ms");
        }
    }

    #[test]
    fn a_broker_left_out_of_a_snapshot_is_not_silent() {
        let mut w = ClusterWatch::default();
        let parts = [part(0, 2)];
        // Waiting on broker 2, then its connection closes (a controlled shutdown) and
        // librdkafka's snapshots leave it out while it restarts.
        w.observe(0, &stats(&[broker(1, true, 5, 0), broker(2, true, 46, 1)], Some(1)), &parts);
        for t in (5_000..=20_000).step_by(5_000) {
            let v = w.observe(t, &stats(&[broker(1, true, 5 + t as u64, 1)], Some(1)), &parts);
            assert_eq!(v.silent, None, "at {t} ms");
        }
    }

    #[test]
    fn only_a_broker_this_writer_depends_on_can_be_silent() {
        let mut w = ClusterWatch::default();
        let parts = [part(0, 1)];
        // Broker 3 leads nothing owned here and does not coordinate: its silence is not ours.
        for t in (0..60_000).step_by(5_000) {
            let b = [broker(1, true, t as u64, 1), broker(3, true, 5, 2)];
            assert_eq!(w.observe(t, &stats(&b, Some(1)), &parts).silent, None, "at {t} ms");
        }
        // The coordinator's broker holding requests is.
        let mut w = ClusterWatch::default();
        for t in (0..=SILENT_MS).step_by(5_000) {
            let b = [broker(1, true, t as u64, 1), broker(3, true, 5, 2)];
            let v = w.observe(t, &stats(&b, Some(3)), &parts);
            assert_eq!(v.silent, (t == SILENT_MS).then(|| ("127.0.0.1:29094/3".to_string(), SILENT_MS)), "at {t} ms");
        }
        // And the leader of an owned partition.
        let mut w = ClusterWatch::default();
        for t in (0..=SILENT_MS).step_by(5_000) {
            let b = [broker(1, true, 7, 1), broker(3, true, t as u64, 0)];
            let v = w.observe(t, &stats(&b, Some(3)), &parts);
            assert_eq!(v.silent.is_some(), t == SILENT_MS, "at {t} ms");
        }
    }

    #[test]
    fn an_owned_partition_without_a_reachable_leader_is_unserved_until_one_serves_it() {
        let mut w = ClusterWatch::default();
        let b = [broker(1, true, 1, 0), broker(2, false, 1, 0)];
        // Led by a broker that is down, then by none.
        assert!(w.observe(0, &stats(&b, None), &[part(0, 2), part(1, 1)]).unserved.is_empty());
        assert!(w.observe(10_000, &stats(&b, None), &[part(0, -1), part(1, 1)]).unserved.is_empty(), "under the grace");
        assert_eq!(w.observe(UNSERVED_MS, &stats(&b, None), &[part(0, -1), part(1, 1)]).unserved, vec!["t/0: no reachable leader for 15 s"]);
        // A partition no longer owned is forgotten; a served one clears.
        assert!(w.observe(20_000, &stats(&b, None), &[part(0, 1)]).unserved.is_empty());
        let unowned = PartitionStat { topic: "t", partition: 5, owned: false, leader: -1 };
        assert!(w.observe(60_000, &stats(&b, None), &[part(0, 1), unowned]).unserved.is_empty());
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
