//! The simulated group: writer instances (members), their polling, rebalances, crashes,
//! zombies and graceful stops, and the producer. One [`Sim`] per seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{OwnedMessage, Timestamp};

use super::check;
use super::world::{lock, Shared, SimBroker, SimClock, SimMarkers, SimUploads};
use super::{unslot, Stats, PARTITIONS, TOPICS};
use crate::config::Config;
use crate::health::Health;
use crate::routing::Router;
use crate::writer::ports::{FetchStart, TopicPartition};
use crate::writer::{Next, StopReason};
use crate::writer::{Routed, RunOptions, Writer};

/// A member that is not heard from for this long is expelled.
pub(super) const SESSION_TIMEOUT_MS: u64 = 6_000;
/// One writer instance (a process) and what its consumer knows.
pub(super) struct Member {
    pub(super) id: usize,
    pub(super) writer: Writer,
    pub(super) broker: SimBroker,
    /// Partitions (slots) its consumer believes it owns.
    pub(super) assigned: BTreeSet<usize>,
    /// Fetch positions, by slot.
    pub(super) positions: BTreeMap<usize, i64>,
    /// Rebalance callbacks so far (the consumer context's generation counter).
    pub(super) callbacks: u64,
    /// Polled but not yet applied, with the callback count when polled.
    pub(super) polled: Vec<(OwnedMessage, u64)>,
    /// Frozen (a long GC pause, a stopped VM) until then.
    pub(super) frozen_until: Option<u64>,
    /// When the freeze began.
    pub(super) frozen_since: u64,
    /// The group expelled it; it learns so after this many more steps.
    pub(super) expelled_notice: Option<u32>,
    /// Run with `--until-caught-up`: the end offset of each partition when it was assigned.
    pub(super) targets: Option<BTreeMap<usize, i64>>,
    /// Runs the release before record dating (wide worlds): its record topic files undatable
    /// values under `invalid_date`, as during a rolling upgrade.
    pub(super) earlier_release: bool,
}

pub(super) struct Sim {
    pub(super) world: Shared,
    pub(super) config: Config,
    /// Each topic's router, by topic index.
    pub(super) routers: Vec<Router>,
    /// The same of the release before record dating.
    pub(super) routers_before: Vec<Router>,
    /// New members run the current release. Before, they run the release before record
    /// dating; the upgrade ([`Sim::upgrade`]) replaces them all at once, as a `Recreate`
    /// deployment does (docs/runbook.md, "Upgrades": the earlier release cannot read what the
    /// current one files by record time, so the two never share a group).
    pub(super) upgraded: bool,
    /// Members write completion markers. Worlds without them (a topic with
    /// `completion_markers = false`) keep the schedules markers change — a passed date's files
    /// are sealed early — which some broken rules need to be reached soon.
    pub(super) markers: bool,
    pub(super) members: Vec<Member>,
    /// Crashed members still in the group until their session expires: (id, since ms).
    pub(super) gone: Vec<(usize, u64)>,
    pub(super) stats: Stats,
}

/// The (topic, partition) pairs of slots, as rebalance callbacks name them.
pub(super) fn parts(slots: impl IntoIterator<Item = usize>) -> Vec<TopicPartition> {
    slots.into_iter().map(unslot).map(|(t, p)| TopicPartition { topic: t.to_string(), partition: p }).collect()
}

impl Sim {
    pub(super) fn new(world: Shared, config: Config) -> Sim {
        let routers = config.topics.iter().enumerate().map(|(i, t)| Router::new(t, i).expect("router")).collect();
        let routers_before = config.topics.iter().enumerate().map(|(i, t)| Router::before_record_dating(t, i).expect("router")).collect();
        // Half the wide worlds begin on the release before record dating and upgrade once.
        let upgraded = config.topic_names().len() < 2 || lock(&world).rng.chance(0.5);
        Sim { world, config, routers, routers_before, upgraded, markers: true, members: Vec::new(), gone: Vec::new(), stats: Stats::default() }
    }

    /// Every partition of every topic in this world.
    pub(super) fn slots(&self) -> usize {
        self.config.topic_names().len() * PARTITIONS
    }

    pub(super) fn below(&self, n: u64) -> u64 {
        lock(&self.world).rng.below(n)
    }

    pub(super) fn chance(&self, p: f64) -> bool {
        lock(&self.world).rng.chance(p)
    }

    pub(super) fn now_ms(&self) -> u64 {
        lock(&self.world).now_ms
    }

    pub(super) fn note(&mut self, what: String) {
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
        self.start_member_with(RunOptions::default());
    }

    /// A new process joins the group with `opts` (the rebalance is the caller's).
    pub(super) fn start_member_with(&mut self, opts: RunOptions) {
        let until_caught_up = opts.until_caught_up;
        let (id, earlier_release) = (lock(&self.world).add_member(), !self.upgraded);
        let world = self.world.clone();
        let mut writer = Writer::new(
            &self.config,
            super::BUDGET,
            Box::new(SimUploads { world: world.clone(), member: id }),
            Box::new(SimMarkers { world: world.clone(), member: id, done: Default::default() }),
            Box::new(SimClock { world: world.clone(), member: id }),
            Arc::new(Health::default()),
            opts,
        )
        .expect("writer");
        if !self.markers {
            writer.act_as_release_before_markers();
        }
        if earlier_release {
            writer.act_as_release_before_record_dating();
            writer.act_as_release_before_markers();
            lock(&self.world).ledger.mixed_releases = true;
        }
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
            targets: until_caught_up.then(BTreeMap::new),
            earlier_release,
        });
        self.note(format!(
            "member {id} starts{}{}",
            if earlier_release { " as the release before record dating" } else { "" },
            if until_caught_up { " with --until-caught-up" } else { "" }
        ));
    }

    /// Members that take part in a rebalance: awake and not expelled.
    pub(super) fn in_group(&self) -> Vec<usize> {
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
        let mut owner: BTreeMap<usize, usize> = BTreeMap::new();
        if !group.is_empty() {
            let share = self.slots().div_ceil(group.len());
            let mut load: BTreeMap<usize, usize> = group.iter().map(|&i| (i, 0)).collect();
            for &i in &group {
                for &p in &self.members[i].assigned {
                    if load[&i] < share && self.chance(0.8) {
                        owner.insert(p, i);
                        *load.get_mut(&i).unwrap() += 1;
                    }
                }
            }
            for p in 0..self.slots() {
                if let std::collections::btree_map::Entry::Vacant(e) = owner.entry(p) {
                    let (&i, _) = load.iter().min_by_key(|(i, l)| (**l, **i)).expect("a member");
                    e.insert(i);
                    *load.get_mut(&i).unwrap() += 1;
                }
            }
        }
        // Revoke what moves (the old generation still commits).
        for &i in &group {
            let moving: Vec<usize> = self.members[i].assigned.iter().copied().filter(|p| owner.get(p) != Some(&i)).collect();
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
        // The new generation: assign what arrives. Members rejoin behind the commits they sent,
        // so the broker decides those first.
        let generation = {
            let mut w = lock(&self.world);
            for &i in &group {
                w.decide_held_of(self.members[i].id);
            }
            w.generation += 1;
            for &i in &group {
                w.member_gen[self.members[i].id] = w.generation;
            }
            w.generation
        };
        for &i in &group {
            let arriving: Vec<usize> = owner.iter().filter(|(p, o)| **o == i && !self.members[i].assigned.contains(p)).map(|(p, _)| *p).collect();
            if arriving.is_empty() {
                continue;
            }
            let m = &mut self.members[i];
            m.callbacks += 1;
            let starts = m.writer.on_assign(&m.broker, &parts(arriving.clone()), m.callbacks);
            let mut w = lock(&self.world);
            for (&p, start) in arriving.iter().zip(starts) {
                m.assigned.insert(p);
                // The consumer fetches from where the core read the commit (nothing is deleted
                // from the simulated log: a partition without one starts at 0).
                let position = match start {
                    _ if crate::sabotage::on(crate::sabotage::Rule::FetchFromCommitted) => {
                        // librdkafka reading the commit again for itself: when that read fails
                        // the partition stays assigned and is never fetched (its
                        // `rd_kafka_assignment_apply_offsets`), silently.
                        let p_fail = w.faults.broker_error.max(0.05);
                        if w.rng.chance(p_fail) {
                            w.note(format!("member {}'s consumer fails to read the commit of slot {p}: never fetched", m.id));
                            continue;
                        }
                        w.committed[p].as_ref().map_or(0, |c| c.0)
                    }
                    FetchStart::At(o) => o,
                    FetchStart::Reset => 0,
                };
                m.positions.insert(p, position);
                if let Some(t) = &mut m.targets {
                    t.insert(p, w.log[p].len() as i64);
                }
            }
            drop(w);
            let id = m.id;
            self.note(format!("generation {generation}: member {id} is assigned {arriving:?}"));
        }
    }

    /// Appends `n` messages to random partitions of random topics: Sunbird-like events over
    /// three IST days (some routed by their `eid`), one in ten invalid. Each names its slot
    /// and offset.
    pub(super) fn produce(&mut self, n: u64) {
        let wide = self.config.topic_names().len() > 1;
        let mut w = lock(&self.world);
        for _ in 0..n {
            // Three in four to `t`: one topic's partitions still get the traffic that makes
            // one route's files overlap (the rare schedules some broken rules need).
            let topic = if wide { usize::from(w.rng.chance(0.25)) } else { 0 };
            let p = topic * PARTITIONS + w.rng.below(PARTITIONS as u64) as usize;
            let o = w.log[p].len();
            let syncts = w.wall_ms() - (w.rng.below(3 * 86_400_000) as i64);
            let eid = ["IMPRESSION", "LOG", "INTERACT"][w.rng.below(3) as usize];
            let payload = if w.rng.chance(0.1) {
                format!("garbage p={p} o={o}").into_bytes()
            } else {
                format!(r#"{{"eid":"{eid}","p":{p},"o":{o},"syncts":{syncts}}}"#).into_bytes()
            };
            let timestamp_ms = w.wall_ms();
            w.log[p].push(super::Record { payload, timestamp_ms });
        }
        drop(w);
        self.stats.produced += n;
    }

    /// One turn of member `i`, as the polling loop takes it: apply the previous poll, let the
    /// core decide (periodic work, the budget's wait and pause, stop or poll), poll again.
    /// Returns why the member must stop, if it must.
    pub(super) fn step_member(&mut self, i: usize) -> Option<StopReason> {
        let batch = std::mem::take(&mut self.members[i].polled);
        self.apply(i, batch);
        let m = &mut self.members[i];
        let next = m.writer.after_batch(&m.broker, false);
        let m = &self.members[i];
        let consumer_paused = lock(&self.world).paused[m.id];
        if let Err(v) = check::after_decision(&m.writer, &next, consumer_paused) {
            let v = format!("member {}: {v}", m.id);
            lock(&self.world).ledger.violations.push(v);
        }
        let paused = match next {
            Next::Poll { paused } => paused,
            Next::Stop(why) => return Some(why),
        };
        let m = &mut self.members[i];
        if paused {
            self.stats.paused_turns += 1;
            return None;
        }
        let owned: Vec<usize> = m.assigned.iter().copied().collect();
        let mut w = lock(&self.world);
        for _ in 0..1 + w.rng.below(super::BATCH as u64) {
            if owned.is_empty() {
                break;
            }
            let p = owned[w.rng.below(owned.len() as u64) as usize];
            // A partition its consumer never started (see `rebalance`) is never fetched.
            let Some(pos) = m.positions.get_mut(&p) else { continue };
            let Some(r) = w.log[p].get(*pos as usize) else { continue };
            let (topic, partition) = unslot(p);
            let msg = OwnedMessage::new(Some(r.payload.clone()), None, topic.into(), Timestamp::CreateTime(r.timestamp_ms), partition, *pos, None);
            *pos += 1;
            m.polled.push((msg, m.callbacks));
        }
        None
    }

    /// Applies a polled batch to member `i`, as the polling loop does: routed, then applied
    /// through the core's one entry for messages.
    fn apply(&mut self, i: usize, batch: Vec<(OwnedMessage, u64)>) {
        use rdkafka::message::Message;
        let m = &mut self.members[i];
        let routers = if m.earlier_release { &self.routers_before } else { &self.routers };
        let routed = batch.into_iter().map(|(message, generation)| {
            let topic = TOPICS.iter().position(|n| *n == message.topic()).expect("a simulated topic");
            let route = routers[topic].route(message.payload(), message.timestamp().to_millis(), message.offset());
            Routed { message, topic, route, generation }
        });
        m.writer.apply_batch(routed);
    }

    /// The upgrade: every member of the earlier release goes, by a graceful stop or a crash
    /// (its files in flight are then recorded by the earlier release, for the current one to
    /// recover), and every member from now on runs the current release.
    pub(super) fn upgrade(&mut self) {
        self.note("upgrade: the members of the release before record dating go".to_string());
        self.upgraded = true;
        while let Some(i) = self.members.iter().position(|m| m.earlier_release) {
            if self.members[i].frozen_until.is_some() || self.chance(0.5) {
                self.crash(i);
            } else if let Err(e) = self.stop_member(i) {
                lock(&self.world).ledger.violations.push(e);
            }
        }
    }

    /// Kills member `i` like `kill -9`: no flush, no commit; its uploads in flight still land.
    pub(super) fn crash(&mut self, i: usize) {
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
    /// shutdown bound whatever is frozen, counted from the signal. The polling loop notices the
    /// signal after the step it is in: the batch it applies and the periodic work, with every
    /// call they make, count against the bound. Returns how long it took.
    pub(super) fn stop_member(&mut self, i: usize) -> Result<Duration, String> {
        let started = lock(&self.world).instant();
        // The loop's last step: it applies the batch it routed, then its decision sees the signal.
        let m = &mut self.members[i];
        let batch = std::mem::take(&mut m.polled);
        self.apply(i, batch);
        let m = &mut self.members[i];
        let _ = m.writer.after_batch(&m.broker, true);
        self.finish_member(i, started)
    }

    /// Member `i` stops (on a signal at `started`, or on its own: a fatal error, caught up).
    pub(super) fn finish_member(&mut self, i: usize, started: std::time::Instant) -> Result<Duration, String> {
        let timeout = Duration::from_secs(self.config.writer.shutdown_timeout_secs);
        let deadline = started + timeout;
        let mut m = self.members.remove(i);
        m.polled.clear();
        m.writer.begin_stop(deadline);
        let caught_up = m.targets.is_some() && m.writer.caught_up();
        m.writer.finish(&m.broker, deadline.checked_sub(crate::writer::commit_reserve(timeout)).unwrap_or(deadline));
        let s = m.writer.summary();
        if caught_up && s.abandoned_files == 0 && s.uncommitted_partitions == 0 && m.writer.fatal().is_none() {
            // An `--until-caught-up` run that exits cleanly (exit 0) has committed every owned partition
            // up to the end it had when assigned.
            let w = lock(&self.world);
            let targets = m.targets.as_ref().expect("checked above");
            for p in &m.assigned {
                let committed = w.committed[*p].as_ref().map_or(0, |c| c.0);
                if targets.get(p).is_some_and(|&end| committed < end) {
                    let v = format!(
                        "member {} caught up and stopped cleanly, but partition {p} is committed at {committed}, below its end {}",
                        m.id, targets[p]
                    );
                    drop(w);
                    return Err(v);
                }
            }
        }
        // Leaving the group: the consumer is closing, and its requests time out. A rebalance
        // may still hand it partitions (another member left just before): it must not wait
        // for their offsets past its bound.
        lock(&self.world).closing[m.id] = true;
        let mut leaving: BTreeSet<usize> = m.assigned.clone();
        if self.chance(0.3) {
            let p = self.below(self.slots() as u64) as usize;
            if leaving.insert(p) {
                m.callbacks += 1;
                m.writer.on_assign(&m.broker, &parts([p]), m.callbacks);
                self.note(format!("member {} is assigned [{p}] while it stops", m.id));
            }
        }
        if !leaving.is_empty() {
            m.callbacks += 1;
            m.writer.on_revoke(&m.broker, &parts(leaving.iter().copied()), false);
        }
        // Its leave request goes out behind its commits.
        lock(&self.world).decide_held_of(m.id);
        lock(&self.world).forget_unanswered_of(m.id);
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
}
