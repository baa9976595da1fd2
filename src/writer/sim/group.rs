//! The simulated group: writer instances (members), their polling, rebalances, crashes,
//! zombies and graceful stops, and the producer. One [`Sim`] per seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{OwnedMessage, Timestamp};

use super::world::{lock, Faults, Shared, SimBroker, SimClock, SimUploads};
use super::{Stats, PARTITIONS};
use crate::config::Config;
use crate::health::Health;
use crate::routing::Router;
use crate::writer::{RunOptions, Writer};

const TOPIC: &str = "t";
/// A member that is not heard from for this long is expelled.
const SESSION_TIMEOUT_MS: u64 = 6_000;
/// Messages one poll takes at most.
const BATCH: usize = 8;

/// One writer instance (a process) and what its consumer knows.
pub(super) struct Member {
    pub(super) id: usize,
    writer: Writer,
    broker: SimBroker,
    /// Partitions its consumer believes it owns.
    assigned: BTreeSet<i32>,
    /// Fetch positions.
    positions: BTreeMap<i32, i64>,
    /// Rebalance callbacks so far (the consumer context's generation counter).
    callbacks: u64,
    /// Polled but not yet applied, with the callback count when polled.
    polled: Vec<(OwnedMessage, u64)>,
    /// Frozen (a long GC pause, a stopped VM) until then.
    frozen_until: Option<u64>,
    /// When the freeze began.
    frozen_since: u64,
    /// The group expelled it; it learns so after this many more steps.
    expelled_notice: Option<u32>,
}

pub(super) struct Sim {
    world: Shared,
    config: Config,
    router: Router,
    pub(super) members: Vec<Member>,
    /// Crashed members still in the group until their session expires: (id, since ms).
    gone: Vec<(usize, u64)>,
    pub(super) stats: Stats,
}

fn parts(ps: impl IntoIterator<Item = i32>) -> Vec<(String, i32)> {
    ps.into_iter().map(|p| (TOPIC.to_string(), p)).collect()
}

impl Sim {
    pub(super) fn new(world: Shared, config: Config) -> Sim {
        let router = Router::new(&config.topics[0], 0).expect("router");
        Sim { world, config, router, members: Vec::new(), gone: Vec::new(), stats: Stats::default() }
    }

    pub(super) fn below(&self, n: u64) -> u64 {
        lock(&self.world).rng.below(n)
    }

    fn chance(&self, p: f64) -> bool {
        lock(&self.world).rng.chance(p)
    }

    fn now_ms(&self) -> u64 {
        lock(&self.world).now_ms
    }

    fn note(&mut self, what: String) {
        lock(&self.world).note(what);
    }

    /// The violation with the seed's recent history.
    pub(super) fn report(&self, violation: &str) -> String {
        let mut s = format!("{violation}\nlast steps:\n");
        for h in &lock(&self.world).journal {
            s.push_str("  ");
            s.push_str(h);
            s.push('\n');
        }
        s
    }

    /// A new process joins the group (the rebalance is the caller's).
    pub(super) fn start_member(&mut self) {
        let id = lock(&self.world).add_member();
        let world = self.world.clone();
        let writer = Writer::new(
            &self.config,
            super::BUDGET,
            Box::new(SimUploads { world: world.clone(), member: id }),
            Box::new(SimClock { world: world.clone(), member: id }),
            Arc::new(Health::default()),
            RunOptions::default(),
        )
        .expect("writer");
        self.members.push(Member {
            id,
            writer,
            broker: SimBroker { world, member: id },
            assigned: BTreeSet::new(),
            positions: BTreeMap::new(),
            callbacks: 0,
            polled: Vec::new(),
            frozen_until: None,
            frozen_since: 0,
            expelled_notice: None,
        });
        self.note(format!("member {id} starts"));
    }

    /// Members that take part in a rebalance: awake and not expelled.
    fn in_group(&self) -> Vec<usize> {
        let now = self.now_ms();
        (0..self.members.len())
            .filter(|&i| self.members[i].expelled_notice.is_none() && self.members[i].frozen_until.is_none_or(|t| t <= now))
            .collect()
    }

    /// A cooperative-sticky rebalance: members that miss it are expelled; partitions whose
    /// owner changes are revoked from the old owner, then assigned to the new one.
    pub(super) fn rebalance(&mut self) {
        self.stats.rebalances += 1;
        let now = self.now_ms();
        // Frozen members miss it: expelled, zombies from now on (they do not know yet).
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            if m.expelled_notice.is_none() && m.frozen_until.is_some_and(|t| t > now) {
                let notice = 1 + lock(&self.world).rng.below(3) as u32;
                m.expelled_notice = Some(notice);
                lock(&self.world).member_gen[m.id] = 0;
                self.stats.zombies += 1;
                let id = m.id;
                self.note(format!("member {id} misses a rebalance: expelled (a zombie)"));
            }
        }
        self.gone.clear();
        let group = self.in_group();
        // Sticky target: an owner in the group keeps up to its fair share; the rest is dealt out.
        let mut owner: BTreeMap<i32, usize> = BTreeMap::new();
        if !group.is_empty() {
            let share = PARTITIONS.div_ceil(group.len());
            let mut load: BTreeMap<usize, usize> = group.iter().map(|&i| (i, 0)).collect();
            for &i in &group {
                for &p in &self.members[i].assigned {
                    if load[&i] < share && self.chance(0.8) {
                        owner.insert(p, i);
                        *load.get_mut(&i).unwrap() += 1;
                    }
                }
            }
            for p in 0..PARTITIONS as i32 {
                if let std::collections::btree_map::Entry::Vacant(e) = owner.entry(p) {
                    let (&i, _) = load.iter().min_by_key(|(i, l)| (**l, **i)).expect("a member");
                    e.insert(i);
                    *load.get_mut(&i).unwrap() += 1;
                }
            }
        }
        // Revoke what moves (the old generation still commits).
        for &i in &group {
            let moving: Vec<i32> = self.members[i].assigned.iter().copied().filter(|p| owner.get(p) != Some(&i)).collect();
            if !moving.is_empty() {
                let m = &mut self.members[i];
                m.callbacks += 1;
                m.writer.on_revoke(&m.broker, &parts(moving.clone()), false);
                for p in &moving {
                    m.assigned.remove(p);
                    m.positions.remove(p);
                }
                let id = m.id;
                self.note(format!("member {id} revokes {moving:?}"));
            }
        }
        // The new generation: assign what arrives.
        let generation = {
            let mut w = lock(&self.world);
            w.generation += 1;
            for &i in &group {
                w.member_gen[self.members[i].id] = w.generation;
            }
            w.generation
        };
        for &i in &group {
            let arriving: Vec<i32> = owner.iter().filter(|(p, o)| **o == i && !self.members[i].assigned.contains(p)).map(|(p, _)| *p).collect();
            if arriving.is_empty() {
                continue;
            }
            let m = &mut self.members[i];
            m.callbacks += 1;
            m.writer.on_assign(&m.broker, &parts(arriving.clone()), m.callbacks);
            let w = lock(&self.world);
            for &p in &arriving {
                m.assigned.insert(p);
                m.positions.insert(p, w.committed[p as usize].as_ref().map_or(0, |c| c.0));
            }
            drop(w);
            let id = m.id;
            self.note(format!("generation {generation}: member {id} is assigned {arriving:?}"));
        }
    }

    /// Appends `n` messages to random partitions: Sunbird-like events over three IST days,
    /// one in ten invalid.
    pub(super) fn produce(&mut self, n: u64) {
        let mut w = lock(&self.world);
        for _ in 0..n {
            let p = w.rng.below(PARTITIONS as u64) as usize;
            let o = w.log[p].len();
            let syncts = w.wall_ms() - (w.rng.below(3 * 86_400_000) as i64);
            let payload = if w.rng.chance(0.1) {
                format!("garbage p={p} o={o}").into_bytes()
            } else {
                format!(r#"{{"eid":"IMPRESSION","p":{p},"o":{o},"syncts":{syncts}}}"#).into_bytes()
            };
            let timestamp_ms = w.wall_ms();
            w.log[p].push(super::world::Record { payload, timestamp_ms });
        }
        drop(w);
        self.stats.produced += n;
    }

    /// One turn of member `i`: apply the previous poll, do the periodic work, poll again.
    pub(super) fn step_member(&mut self, i: usize) {
        let now = lock(&self.world).instant();
        let m = &mut self.members[i];
        let batch = std::mem::take(&mut m.polled);
        for (msg, stamp) in batch {
            use rdkafka::message::Message;
            let route = self.router.route(msg.payload(), msg.timestamp().to_millis());
            m.writer.on_message(&msg, 0, route, stamp, now);
        }
        m.writer.housekeeping(&m.broker, now);
        let w = lock(&self.world);
        if w.paused[m.id] {
            return;
        }
        let owned: Vec<i32> = m.assigned.iter().copied().collect();
        let mut w = w;
        for _ in 0..1 + w.rng.below(BATCH as u64) {
            if owned.is_empty() {
                break;
            }
            let p = owned[w.rng.below(owned.len() as u64) as usize];
            let pos = m.positions.get_mut(&p).expect("a position per assigned partition");
            let Some(r) = w.log[p as usize].get(*pos as usize) else { continue };
            let msg = OwnedMessage::new(Some(r.payload.clone()), None, TOPIC.into(), Timestamp::CreateTime(r.timestamp_ms), p, *pos, None);
            *pos += 1;
            m.polled.push((msg, m.callbacks));
        }
    }

    /// Kills member `i` like `kill -9`: no flush, no commit; its uploads in flight still land.
    fn crash(&mut self, i: usize) {
        let m = self.members.remove(i);
        let now = self.now_ms();
        lock(&self.world).crashed(m.id);
        if m.expelled_notice.is_none() {
            self.gone.push((m.id, now));
        }
        self.stats.crashes += 1;
        self.note(format!("member {} crashes", m.id));
    }

    /// A graceful stop of member `i` (SIGTERM): seal, upload, commit, leave — within the
    /// shutdown bound whatever is frozen. Returns how long it took.
    pub(super) fn stop_member(&mut self, i: usize) -> Result<Duration, String> {
        let timeout = Duration::from_secs(self.config.writer.shutdown_timeout_secs);
        let started = lock(&self.world).instant();
        let deadline = started + timeout;
        let mut m = self.members.remove(i);
        m.polled.clear();
        m.writer.begin_stop(deadline);
        m.writer.finish(&m.broker, deadline.checked_sub(crate::writer::commit_reserve(timeout)).unwrap_or(deadline));
        if !m.assigned.is_empty() {
            m.callbacks += 1;
            m.writer.on_revoke(&m.broker, &parts(m.assigned.iter().copied()), false);
        }
        let took = lock(&self.world).instant() - started;
        self.stats.stops += 1;
        self.note(format!("member {} stops gracefully in {} ms", m.id, took.as_millis()));
        if took > timeout {
            return Err(format!("a graceful stop took {took:?}, over its bound of {timeout:?}"));
        }
        if m.expelled_notice.is_none() {
            self.rebalance();
        }
        Ok(took)
    }

    /// One random event.
    pub(super) fn random_step(&mut self) {
        let roll = self.below(100);
        let n = self.members.len();
        match roll {
            0..=24 => {
                let k = 1 + self.below(12);
                self.produce(k);
            }
            25..=64 if n > 0 => {
                let i = self.below(n as u64) as usize;
                self.turn(i);
            }
            65..=79 => {
                let ms = self.below(800);
                self.advance(ms);
            }
            80..=82 if n > 0 => {
                let i = self.below(n as u64) as usize;
                self.crash(i);
            }
            83..=85 if n < 4 => {
                self.start_member();
                self.rebalance();
            }
            86..=87 if n > 0 => {
                let i = self.below(n as u64) as usize;
                let until = self.now_ms() + 2_000 + self.below(12_000);
                let id = self.members[i].id;
                self.members[i].frozen_until = Some(until);
                self.members[i].frozen_since = self.now_ms();
                self.note(format!("member {id} freezes until t={until}ms"));
            }
            88..=89 if n > 0 => {
                let i = self.below(n as u64) as usize;
                if self.members[i].frozen_until.is_none() {
                    // Bounds are checked inside; a broken bound is a violation.
                    if let Err(e) = self.stop_member(i) {
                        lock(&self.world).ledger.violations.push(e);
                    }
                }
            }
            90..=94 => {
                let mut f = Faults::default();
                if self.chance(0.5) {
                    f.put_error = 0.3;
                    f.lost_response = 0.2;
                }
                if self.chance(0.3) {
                    f.storage_frozen_until_ms = self.now_ms() + self.below(10_000);
                }
                if self.chance(0.4) {
                    f.broker_error = 0.2;
                }
                self.note(format!(
                    "faults: put errors {}, lost responses {}, storage frozen until {}, broker errors {}",
                    f.put_error, f.lost_response, f.storage_frozen_until_ms, f.broker_error
                ));
                lock(&self.world).faults = f;
            }
            _ => {
                let ms = self.below(100);
                self.advance(ms);
            }
        }
        self.expire_sessions();
    }

    /// Member `i` acts, if awake; a zombie that learns it was expelled loses its partitions
    /// and joins again.
    fn turn(&mut self, i: usize) {
        let now = self.now_ms();
        if self.members[i].frozen_until.is_some_and(|t| t > now) {
            return;
        }
        self.members[i].frozen_until = None;
        self.step_member(i);
        let m = &mut self.members[i];
        if let Some(why) = m.writer.fatal().map(String::from) {
            let id = m.id;
            self.note(format!("member {id} stops on a fatal error: {why}"));
            if let Err(e) = self.stop_member(i) {
                lock(&self.world).ledger.violations.push(e);
            }
            return;
        }
        if let Some(k) = m.expelled_notice {
            if k > 1 {
                m.expelled_notice = Some(k - 1);
                return;
            }
            m.callbacks += 1;
            let lost: Vec<i32> = m.assigned.iter().copied().collect();
            m.writer.on_revoke(&m.broker, &parts(lost.clone()), true);
            m.assigned.clear();
            m.positions.clear();
            m.polled.clear();
            m.expelled_notice = None;
            let id = m.id;
            self.note(format!("member {id} learns it was expelled: {lost:?} lost; it joins again"));
            self.rebalance();
        }
    }

    fn advance(&mut self, ms: u64) {
        let mut w = lock(&self.world);
        let until = w.now_ms + ms;
        w.advance(until, None);
    }

    /// Crashed members and frozen ones are expelled once their session times out.
    fn expire_sessions(&mut self) {
        let now = self.now_ms();
        let crashed_expired = self.gone.iter().any(|(_, since)| now >= since + SESSION_TIMEOUT_MS);
        let frozen_expired = self
            .members
            .iter()
            .any(|m| m.expelled_notice.is_none() && m.frozen_until.is_some_and(|t| t > now) && now >= m.frozen_since + SESSION_TIMEOUT_MS);
        if crashed_expired || frozen_expired {
            self.rebalance();
        }
    }

    /// Checks after every step: the byte ledgers, and what the store and commits saw.
    pub(super) fn check(&self) -> Result<(), String> {
        for m in &self.members {
            if !m.writer.books_balance() {
                return Err(self.report(&format!("member {}: the byte ledger is out of step with its files", m.id)));
            }
        }
        let violation = lock(&self.world).ledger.violations.first().cloned();
        match violation {
            Some(v) => Err(self.report(&v)),
            None => Ok(()),
        }
    }

    /// Ends every fault, wakes every zombie, and brings the group back to three members.
    pub(super) fn calm(&mut self) {
        lock(&self.world).faults = Faults::default();
        for m in &mut self.members {
            m.frozen_until = None;
        }
        while self.members.len() < 2 {
            self.start_member();
        }
        self.note("calm: faults end, everyone wakes".into());
        self.rebalance();
    }

    /// Runs every member until each partition's commit reaches its end; returns the ends.
    pub(super) fn run_until_committed(&mut self) -> Result<Vec<i64>, String> {
        let ends: Vec<i64> = lock(&self.world).log.iter().map(|l| l.len() as i64).collect();
        for _ in 0..5_000 {
            if self.members.is_empty() {
                self.start_member();
                self.rebalance();
            }
            for i in 0..self.members.len() {
                if i < self.members.len() {
                    self.turn(i);
                }
            }
            self.advance(100);
            self.check()?;
            let done = {
                let w = lock(&self.world);
                ends.iter().enumerate().all(|(p, &end)| w.committed[p].as_ref().map_or(end == 0, |c| c.0 >= end)) && w.pending_puts() == 0
            };
            if done {
                return Ok(ends);
            }
        }
        let committed: Vec<Option<i64>> = lock(&self.world).committed.iter().map(|c| c.as_ref().map(|c| c.0)).collect();
        Err(self.report(&format!("no progress: after the faults ended, commits are {committed:?}, the ends {ends:?}")))
    }
}
