//! The simulated world every writer instance shares: a clock, a partitioned log with the
//! group's committed offsets and generations, and an object store with conditional creates,
//! latency, failed attempts and lost responses. All randomness comes from one seeded
//! generator, so a seed replays exactly.
//!
//! The writers reach it only through the core's ports: [`SimBroker`], [`SimUploads`] and
//! [`SimClock`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::PutMode;

use super::check::Ledger;
use super::slot;
use super::Record;
use crate::completion::write::{self, Composed, MarkerDone, MarkerJob, Stated, WriteError};
use crate::completion::{self, MarkedFile, Marker};
use crate::upload::{self, Existing, Outcome, UploadDone, UploadJob};
use crate::writer::ports::{
    Broker, BrokerError, Clock, CommitEntry, CommitGate, Committed, MarkerQueue, TopicPartition, UploadQueue, WatermarksAnswer, COMMIT_WAIT,
};

/// splitmix64: small, fast, and the same on every platform and crate version.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `p`.
    pub(super) fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// An upload the store has not answered yet.
struct Put {
    member: usize,
    id: u64,
    key: String,
    body: Bytes,
    existing: Existing,
    due_ms: u64,
    attempts: u32,
    started_ms: u64,
}

/// Faults currently in force.
#[derive(Default, Clone)]
pub(super) struct Faults {
    /// Chance that an upload attempt fails before writing.
    pub(super) put_error: f64,
    /// Chance that an upload attempt writes but its response is lost.
    pub(super) lost_response: f64,
    /// Every upload attempt fails until then.
    pub(super) storage_frozen_until_ms: u64,
    /// Chance that a broker call fails.
    pub(super) broker_error: f64,
    /// Chance that the broker holds a commit unanswered past the writer's wait (a frozen or
    /// overloaded coordinator); it is applied or refused later, when the broker gets to it.
    pub(super) commit_held: f64,
    /// The group coordinator is away (its broker restarts; the next one loads the group) until
    /// then: commits wait for it and are sent when it is back, with the generation the member
    /// has then (librdkafka defers them); reads of committed offsets time out.
    pub(super) coordinator_away_until_ms: u64,
    /// Chance that a held commit is never answered (a response lost with a connection that
    /// died, a client that never hears back): its member must give up on its consumer.
    pub(super) commit_never_answered: f64,
    /// The broker is frozen (a stopped process, a dead network path) until then: it holds every
    /// call — commits until it thaws, reads until their timeout or the thaw.
    pub(super) broker_frozen_until_ms: u64,
}

/// A held commit's due time that never comes.
const NEVER: u64 = u64::MAX;

/// A commit the broker holds: the writer stopped waiting, the broker has not decided yet.
struct Held {
    id: u64,
    member: usize,
    due_ms: u64,
    entries: Vec<(usize, i64, String)>,
}

pub(super) struct World {
    pub(super) rng: Rng,
    /// A second stream for held commits, so that the schedules the other faults give a seed
    /// stay as they were until a commit is actually held.
    pub(super) held_rng: Rng,
    base: Instant,
    /// Simulated time since `base`.
    pub(super) now_ms: u64,
    /// Wall-clock epoch ms at `base`.
    pub(super) wall_base_ms: i64,
    pub(super) faults: Faults,
    /// Every partition of every topic, by slot ([`super::slot`]).
    pub(super) log: Vec<Vec<Record>>,
    /// The group's committed offset and metadata per slot.
    pub(super) committed: Vec<Option<(i64, String)>>,
    /// The group generation; members in another one are fenced.
    pub(super) generation: u64,
    /// Each member's generation (by member id), `0` once expelled.
    pub(super) member_gen: Vec<u64>,
    /// Each member's clock skew, ms.
    pub(super) skew_ms: Vec<i64>,
    /// Wall clocks tick in whole seconds (coarse clocks make names collide across owners).
    coarse_clock: bool,
    /// Whether each member paused fetching.
    pub(super) paused: Vec<bool>,
    /// Whether each member's consumer is closing (its broker requests time out).
    pub(super) closing: Vec<bool>,
    blobs: BTreeMap<String, Bytes>,
    puts: Vec<Put>,
    held: Vec<Held>,
    next_held: u64,
    /// Each member's port rule: no commit while its previous one is held.
    gates: Vec<CommitGate<u64>>,
    done: Vec<VecDeque<UploadDone>>,
    /// What is stored, checked as it is written.
    pub(super) ledger: Ledger,
    /// Rebuilt files that found their earlier upload and matched it byte for byte.
    pub(super) rebuilt_identical: u64,
    /// The last things that happened, for a failure's report.
    pub(super) journal: VecDeque<String>,
    /// A stream of its own for marker faults, so that the other faults' schedules stay.
    marker_rng: Rng,
    /// Completion markers written, and superseding ones among them.
    pub(super) markers: u64,
    pub(super) markers_superseding: u64,
    /// Lines per blob, counted once (blobs are never replaced unless a broken rule does it).
    line_counts: BTreeMap<String, u64>,
    /// Watermark reads asked and not answered yet.
    reads: Vec<Read>,
    /// A stream of its own for broker calls' latency, so that the other faults' schedules stay.
    call_rng: Rng,
}

/// A watermark read on its way: answered at `due_ms`, failed if `fails`.
struct Read {
    member: usize,
    topic: String,
    partition: i32,
    due_ms: u64,
    fails: bool,
}

pub(super) type Shared = Arc<Mutex<World>>;

pub(super) fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

impl World {
    pub(super) fn new(seed: u64, slots: usize, ledger: Ledger) -> World {
        let mut rng = Rng::new(seed);
        let coarse_clock = rng.below(3) == 0;
        World {
            coarse_clock,
            rng,
            held_rng: Rng::new(seed ^ 0x5EED_C0FF_EE00_0001),
            base: Instant::now(),
            now_ms: 0,
            wall_base_ms: 1_764_633_600_000, // 2025-12-02T00:00:00Z
            faults: Faults::default(),
            log: (0..slots).map(|_| Vec::new()).collect(),
            committed: vec![None; slots],
            generation: 0,
            member_gen: Vec::new(),
            skew_ms: Vec::new(),
            paused: Vec::new(),
            closing: Vec::new(),
            blobs: BTreeMap::new(),
            puts: Vec::new(),
            held: Vec::new(),
            next_held: 0,
            gates: Vec::new(),
            done: Vec::new(),
            ledger,
            rebuilt_identical: 0,
            journal: VecDeque::new(),
            marker_rng: Rng::new(seed ^ 0x5EED_C0FF_EE00_0002),
            markers: 0,
            markers_superseding: 0,
            line_counts: BTreeMap::new(),
            reads: Vec::new(),
            call_rng: Rng::new(seed ^ 0x5EED_C0FF_EE00_0003),
        }
    }

    /// Records an event in the journal (the last 60 are kept).
    pub(super) fn note(&mut self, what: String) {
        let line = format!("t={}ms {what}", self.now_ms);
        self.journal.push_back(line);
        if self.journal.len() > 400 {
            self.journal.pop_front();
        }
    }

    pub(super) fn instant(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    pub(super) fn wall_ms(&self) -> i64 {
        self.wall_base_ms + self.now_ms as i64
    }

    /// Registers a new member; returns its id.
    pub(super) fn add_member(&mut self) -> usize {
        let skew = if self.coarse_clock { 0 } else { self.rng.below(2001) as i64 - 1000 };
        self.member_gen.push(0);
        self.skew_ms.push(skew);
        self.paused.push(false);
        self.closing.push(false);
        self.done.push(VecDeque::new());
        self.gates.push(CommitGate::default());
        self.member_gen.len() - 1
    }

    /// Moves time forward to `until_ms`, answering the uploads that fall due; stops early once
    /// `member` has an answer waiting (when given).
    pub(super) fn advance(&mut self, until_ms: u64, member: Option<usize>) {
        loop {
            if member.is_some_and(|m| !self.done[m].is_empty()) {
                return;
            }
            let next = self.puts.iter().enumerate().filter(|(_, p)| p.due_ms <= until_ms).min_by_key(|(i, p)| (p.due_ms, *i)).map(|(i, _)| i);
            let held = self.held.iter().enumerate().filter(|(_, h)| h.due_ms <= until_ms).min_by_key(|(i, h)| (h.due_ms, *i)).map(|(i, _)| i);
            match (next, held) {
                (_, Some(h)) if next.is_none_or(|i| self.held[h].due_ms <= self.puts[i].due_ms) => {
                    self.now_ms = self.now_ms.max(self.held[h].due_ms);
                    let held = self.held.remove(h);
                    self.decide_held(held);
                }
                (Some(i), _) => {
                    self.now_ms = self.now_ms.max(self.puts[i].due_ms);
                    self.attempt(i);
                }
                (None, _) => {
                    self.now_ms = self.now_ms.max(until_ms);
                    return;
                }
            }
        }
    }

    /// A member rejoins or leaves the group on the connection its commits went out on: the
    /// coordinator handles its held commits first, so none can land after its partitions moved.
    /// (One never answered is never applied either: it is dropped with the member's process.)
    pub(super) fn decide_held_of(&mut self, member: usize) {
        while let Some(i) = self.held.iter().position(|h| h.member == member && h.due_ms != NEVER) {
            let h = self.held.remove(i);
            self.decide_held(h);
        }
    }

    /// The member's process is gone: commits it never heard back about are gone with it.
    pub(super) fn forget_unanswered_of(&mut self, member: usize) {
        self.held.retain(|h| h.member != member || h.due_ms != NEVER);
    }

    /// The broker gets to a commit it held: a member fenced meanwhile is refused, as the
    /// coordinator checks the generation when it handles the request.
    fn decide_held(&mut self, h: Held) {
        if self.member_gen[h.member] != self.generation {
            self.note(format!("member {}'s held commit is refused (fenced meanwhile)", h.member));
            return;
        }
        let what: Vec<String> = h.entries.iter().map(|(p, o, md)| format!("{p}@{o} [{md}]")).collect();
        self.note(format!("member {}'s held commit is applied: {}", h.member, what.join(" ")));
        for (p, o, md) in h.entries {
            self.ledger.committing(p, o);
            self.committed[p] = Some((o, md));
        }
    }

    /// One attempt of the upload at `i`, with the real uploader's rules: create only if
    /// absent, compare or accept what is there, retry with backoff until answered.
    fn attempt(&mut self, i: usize) {
        let now = self.now_ms;
        let p = &mut self.puts[i];
        p.attempts += 1;
        let f = &self.faults;
        let fails = now < f.storage_frozen_until_ms || self.rng.chance(f.put_error);
        if fails {
            let p = &mut self.puts[i];
            p.due_ms = now + (200u64 << p.attempts.min(6)) + self.rng.below(100);
            return;
        }
        let lost = self.rng.chance(self.faults.lost_response);
        let p = &self.puts[i];
        let outcome = match self.blobs.get(&p.key) {
            Some(theirs) if upload::put_mode() == PutMode::Create => {
                let outcome = upload::when_taken(p.existing, &p.key, theirs, &p.body);
                if p.existing == Existing::Rebuilt && outcome == Outcome::AlreadyThere {
                    // Nothing is deleted from the simulated log, so a rebuilt file is the whole
                    // earlier upload again: the same lines, compressed the same way.
                    if *theirs != p.body {
                        let v = format!(
                            "rebuilt file {} differs from the upload it rebuilds ({} bytes there, {} rebuilt)",
                            p.key,
                            theirs.len(),
                            p.body.len()
                        );
                        self.ledger.violations.push(v);
                    } else {
                        self.rebuilt_identical += 1;
                    }
                }
                outcome
            }
            theirs => {
                let replaced = theirs.cloned();
                let lines = p.body.iter().filter(|b| **b == b'\n').count();
                let line = format!("member {} stores {} ({lines} lines{})", p.member, p.key, if replaced.is_some() { ", replacing" } else { "" });
                self.note(line);
                let p = &self.puts[i];
                self.ledger.stored(&p.key, &p.body, replaced.as_deref());
                self.blobs.insert(p.key.clone(), p.body.clone());
                Outcome::Stored
            }
        };
        if lost {
            let line = format!("the store's answer to member {} for {} is lost ({outcome:?})", self.puts[i].member, self.puts[i].key);
            self.note(line);
            let p = &mut self.puts[i];
            p.due_ms = now + 200 + self.rng.below(2000);
            return;
        }
        let p = self.puts.swap_remove(i);
        self.done[p.member].push_back(UploadDone {
            id: p.id,
            outcome,
            stored_bytes: p.body.len() as u64,
            attempts: p.attempts,
            elapsed: Duration::from_millis(now - p.started_ms),
        });
    }

    /// A broker call's round trip: a few milliseconds, or, while the broker is frozen, until it
    /// thaws or `timeout` passes, whichever is first. Returns whether the broker answered.
    fn call(&mut self, timeout: Duration) -> bool {
        let rtt = 1 + self.call_rng.below(5);
        let frozen_until = self.faults.broker_frozen_until_ms;
        let answered_at = if self.now_ms < frozen_until { frozen_until + rtt } else { self.now_ms + rtt };
        let give_up = self.now_ms + timeout.as_millis() as u64;
        self.advance(answered_at.min(give_up), None);
        answered_at <= give_up
    }

    /// Forgets the answers a crashed member will never read (its requests still land).
    pub(super) fn crashed(&mut self, member: usize) {
        self.reads.retain(|r| r.member != member);
        self.forget_unanswered_of(member);
        self.done[member].clear();
        self.member_gen[member] = 0;
    }

    pub(super) fn blobs(&self) -> &BTreeMap<String, Bytes> {
        &self.blobs
    }

    /// Uploads not answered yet.
    pub(super) fn pending_puts(&self) -> usize {
        self.puts.len()
    }
}

/// A member's view of the group coordinator and the partition leaders.
pub(super) struct SimBroker {
    pub(super) world: Shared,
    pub(super) member: usize,
}

impl SimBroker {
    fn flaky(&self, w: &mut World, what: &str) -> Result<(), BrokerError> {
        let p = w.faults.broker_error;
        if w.rng.chance(p) {
            return Err(BrokerError::new(format!("simulated broker failure: {what}")));
        }
        Ok(())
    }
}

impl Broker for SimBroker {
    fn commit(&self, entries: &[CommitEntry<'_>], wait: Duration) -> Result<(), BrokerError> {
        let mut guard = lock(&self.world);
        let w = &mut *guard;
        // The port's rule (as `kafka.rs` applies it): nothing is sent while one is held.
        let held = &w.held;
        if !w.gates[self.member].may_start(|id| !held.iter().any(|h| h.id == *id)) {
            return Err(BrokerError::new("an earlier commit is still unanswered by the broker"));
        }
        self.flaky(w, "commit")?;
        if w.member_gen[self.member] != w.generation {
            w.note(format!("member {} is fenced (a commit in an old generation)", self.member));
            return Err(BrokerError::kafka(rdkafka::types::RDKafkaErrorCode::IllegalGeneration, "ILLEGAL_GENERATION: the member was fenced"));
        }
        let what: Vec<String> = entries.iter().map(|e| format!("{}/{}@{} [{}]", e.topic, e.partition, e.offset, e.metadata)).collect();
        let p = w.faults.commit_held;
        let away = w.now_ms < w.faults.coordinator_away_until_ms;
        let frozen = w.now_ms < w.faults.broker_frozen_until_ms;
        if away || frozen || (p > 0.0 && w.held_rng.chance(p)) {
            // The writer waits `wait` and gives up; the broker decides later.
            let id = w.next_held;
            w.next_held += 1;
            let due_ms = if w.faults.commit_never_answered > 0.0 && w.held_rng.chance(w.faults.commit_never_answered) {
                NEVER
            } else if away || frozen {
                // Deferred until the next coordinator has loaded the group; held by a frozen
                // broker until it thaws.
                w.faults.coordinator_away_until_ms.max(w.faults.broker_frozen_until_ms) + w.held_rng.below(500)
            } else {
                w.now_ms + COMMIT_WAIT.as_millis() as u64 + w.held_rng.below(8_000)
            };
            let entries = entries.iter().map(|e| (slot(e.topic, e.partition), e.offset, e.metadata.to_string())).collect();
            w.held.push(Held { id, member: self.member, due_ms, entries });
            let since = w.instant();
            w.gates[self.member].unanswered(id, since);
            let when = if due_ms == NEVER { "never answered".to_string() } else { format!("held by the broker until t={due_ms}ms") };
            w.note(format!("member {} commits {}, {when}", self.member, what.join(" ")));
            let until = w.now_ms + wait.as_millis() as u64;
            w.advance(until, None);
            return Err(BrokerError::new("the broker did not answer the commit in time (it may still be applied)"));
        }
        w.call(wait);
        w.note(format!("member {} commits {}", self.member, what.join(" ")));
        for e in entries {
            let p = slot(e.topic, e.partition);
            w.ledger.committing(p, e.offset);
            w.committed[p] = Some((e.offset, e.metadata.to_string()));
        }
        // A commit the broker stored may still look failed to the writer.
        let p = w.faults.broker_error;
        if w.rng.chance(p) {
            return Err(BrokerError::new("simulated lost commit response"));
        }
        Ok(())
    }

    fn committed(&self, partitions: &[TopicPartition], timeout: Duration) -> Result<Vec<Committed>, BrokerError> {
        let mut w = lock(&self.world);
        if w.now_ms < w.faults.coordinator_away_until_ms {
            // Asked of a coordinator that is not there: librdkafka waits out the timeout.
            let until = (w.now_ms + timeout.as_millis() as u64).min(w.faults.coordinator_away_until_ms);
            w.advance(until, None);
            return Err(BrokerError::kafka(rdkafka::types::RDKafkaErrorCode::OperationTimedOut, "Local: Timed out: no group coordinator"));
        }
        if w.closing[self.member] {
            let until = w.now_ms + timeout.as_millis() as u64;
            w.advance(until, None);
            return Err(BrokerError::new("OperationTimedOut: the consumer is closing"));
        }
        if !w.call(timeout) {
            return Err(BrokerError::kafka(rdkafka::types::RDKafkaErrorCode::OperationTimedOut, "Local: Timed out: the broker did not answer"));
        }
        self.flaky(&mut w, "committed offsets")?;
        Ok(partitions
            .iter()
            .map(|TopicPartition { topic: t, partition: p }| match &w.committed[slot(t, *p)] {
                Some((o, md)) => Committed { offset: Some(*o), metadata: md.clone() },
                None => Committed::default(),
            })
            .collect())
    }

    fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> Result<(i64, i64), BrokerError> {
        let mut w = lock(&self.world);
        if !w.call(timeout) {
            return Err(BrokerError::kafka(rdkafka::types::RDKafkaErrorCode::OperationTimedOut, "Local: Timed out: the broker did not answer"));
        }
        self.flaky(&mut w, "watermarks")?;
        Ok((0, w.log[slot(topic, partition)].len() as i64))
    }

    fn ask_watermarks(&self, topic: &str, partition: i32) {
        let mut w = lock(&self.world);
        let rtt = 1 + w.call_rng.below(50);
        let frozen_until = w.faults.broker_frozen_until_ms;
        let answer_at = if w.now_ms < frozen_until { frozen_until + rtt } else { w.now_ms + rtt };
        let give_up = w.now_ms + crate::writer::ports::WATERMARKS_TIMEOUT.as_millis() as u64;
        let p = w.faults.broker_error;
        let fails = answer_at > give_up || w.call_rng.chance(p);
        let read = Read { member: self.member, topic: topic.to_string(), partition, due_ms: answer_at.min(give_up), fails };
        w.reads.push(read);
    }

    fn watermarks_answered(&self) -> Vec<WatermarksAnswer> {
        let mut w = lock(&self.world);
        let now = w.now_ms;
        let (due, later): (Vec<Read>, Vec<Read>) = std::mem::take(&mut w.reads).into_iter().partition(|r| r.member == self.member && r.due_ms <= now);
        w.reads = later;
        due.into_iter()
            .map(|r| {
                let read = if r.fails {
                    Err(BrokerError::kafka(rdkafka::types::RDKafkaErrorCode::RequestTimedOut, "simulated broker failure: watermarks"))
                } else {
                    Ok((0, w.log[slot(&r.topic, r.partition)].len() as i64))
                };
                WatermarksAnswer { topic: r.topic, partition: r.partition, read }
            })
            .collect()
    }

    fn pause_all(&self) -> Result<(), BrokerError> {
        lock(&self.world).paused[self.member] = true;
        Ok(())
    }

    fn resume_all(&self) -> Result<(), BrokerError> {
        lock(&self.world).paused[self.member] = false;
        Ok(())
    }

    fn unanswered_since(&self) -> Option<Instant> {
        let mut guard = lock(&self.world);
        let w = &mut *guard;
        let held = &w.held;
        let gate = &mut w.gates[self.member];
        if gate.may_start(|id| !held.iter().any(|h| h.id == *id)) {
            return None;
        }
        gate.since()
    }
}

/// A member's uploads: jobs become store requests answered as simulated time passes.
pub(super) struct SimUploads {
    pub(super) world: Shared,
    pub(super) member: usize,
}

impl UploadQueue for SimUploads {
    fn submit(&mut self, job: UploadJob) {
        let body = crate::seal::encode_file(job.data, &job.sealing).body;
        let mut w = lock(&self.world);
        let due_ms = w.now_ms + 1 + w.rng.below(300);
        let started_ms = w.now_ms;
        w.puts.push(Put { member: self.member, id: job.id, key: job.key, body, existing: job.existing, due_ms, attempts: 0, started_ms });
    }

    fn next(&mut self) -> Option<UploadDone> {
        lock(&self.world).done[self.member].pop_front()
    }

    fn next_within(&mut self, timeout: Duration) -> Option<UploadDone> {
        let mut w = lock(&self.world);
        let until = w.now_ms + timeout.as_millis() as u64;
        w.advance(until, Some(self.member));
        w.done[self.member].pop_front()
    }
}

/// A member's marker jobs, done against the simulated store when submitted (the store's
/// faults fail some), with the real shell's rules: list the date's files of the partition,
/// take the newest marker, write the next one create-only unless it says the same.
pub(super) struct SimMarkers {
    pub(super) world: Shared,
    pub(super) member: usize,
    pub(super) done: VecDeque<MarkerDone>,
}

impl MarkerQueue for SimMarkers {
    fn submit(&mut self, job: MarkerJob) {
        let result = lock(&self.world).state_marker(&job, self.member);
        self.done.push_back(MarkerDone { job, result });
    }

    fn next(&mut self) -> Option<MarkerDone> {
        self.done.pop_front()
    }
}

impl World {
    fn state_marker(&mut self, job: &MarkerJob, member: usize) -> Result<Stated, WriteError> {
        let path = job.layout.marker_path();
        let fault = self.now_ms < self.faults.storage_frozen_until_ms || self.marker_rng.chance(self.faults.put_error);
        if fault {
            let key = completion::marker_key(&path, &job.date_str, job.partition, 0);
            return Err(WriteError::Put {
                key,
                source: object_store::Error::Generic { store: "simulation", source: "a simulated storage fault".into() },
            });
        }
        // The listing is the store's (a map here); what is listed, how the marker is decided
        // and what it says are the real shell's (`completion::write`).
        let mut files = Vec::new();
        for dir in job.layout.data_dirs() {
            // Names start with their date (or are in its folder): only that range is looked at.
            let from = job.layout.date_listing(&dir, &job.date_str);
            for (key, body) in self.blobs.range(from.clone()..).take_while(|(k, _)| k.starts_with(&from)) {
                if !write::is_date_file(job, &dir, key) {
                    continue;
                }
                files.push(match job.known.iter().find(|f| &f.key == key) {
                    Some(f) => f.clone(),
                    None => {
                        let events = *self.line_counts.entry(key.clone()).or_insert_with(|| crate::seal::lines(key, body).count() as u64);
                        MarkedFile { key: key.clone(), events, first_offset: None, last_offset: None }
                    }
                });
            }
        }
        files.sort_by(|a, b| a.key.cmp(&b.key));
        let mine = format!("{}/{}-", completion::marker_dir(&path, &job.date_str), job.partition);
        let newest = self
            .blobs
            .range(mine.clone()..)
            .take_while(|(k, _)| k.starts_with(&mine))
            .last()
            .map(|(_, b)| serde_json::from_slice::<Marker>(b).expect("the simulation's markers parse"));
        let (marker, stated) = match write::compose(job, files, newest.as_ref(), self.wall_ms()) {
            Composed::Stated(stated) => return Ok(stated),
            Composed::Write { marker, stated } => (marker, stated),
        };
        let key = stated.key.clone();
        let slot = job.topic * super::PARTITIONS + job.partition as usize;
        self.ledger.marker_written(slot, &marker, &self.log[slot]);
        self.note(format!(
            "member {member} marks {} of slot {slot} complete below {}: {} events in {} files ({key})",
            job.date_str, job.complete_below, stated.events, stated.files
        ));
        self.markers += 1;
        if marker.supersedes.is_some() {
            self.markers_superseding += 1;
        }
        self.blobs.insert(key, Bytes::from(serde_json::to_vec(&*marker).expect("a marker serializes")));
        Ok(stated)
    }
}

/// A member's clock: the world's, with the member's skew on the wall clock.
pub(super) struct SimClock {
    pub(super) world: Shared,
    pub(super) member: usize,
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        lock(&self.world).instant()
    }

    fn wall_ms(&self) -> i64 {
        let w = lock(&self.world);
        let ms = w.wall_ms() + w.skew_ms[self.member];
        if w.coarse_clock {
            ms - ms % 1000
        } else {
            ms
        }
    }

    fn sleep(&self, d: Duration) {
        let mut w = lock(&self.world);
        let until = w.now_ms + d.as_millis() as u64;
        w.advance(until, None);
    }

    fn random(&self) -> u64 {
        lock(&self.world).rng.next()
    }
}
