//! The schedule: what may happen at each step of a seed, the checks after every step, and the
//! calm phase that must end with everything stored exactly once.

use super::group::{parts, Sim, SESSION_TIMEOUT_MS};
use super::world::{lock, Faults};
use crate::writer::core::MARKERS_WAIT;
use crate::writer::RunOptions;
use crate::writer::StopReason;

impl Sim {
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
                {
                    // Its own stream: the other faults' schedules stay as they were.
                    let mut w = lock(&self.world);
                    if w.held_rng.chance(0.3) {
                        f.commit_held = 0.3;
                    }
                    // The group coordinator moves (its broker restarts) for up to 8 s.
                    if w.held_rng.chance(0.3) {
                        f.coordinator_away_until_ms = w.now_ms + 500 + w.held_rng.below(8_000);
                    }
                    // Rarely, a held commit is never answered at all.
                    if w.held_rng.chance(0.1) {
                        f.commit_never_answered = 0.1;
                    }
                    // The broker freezes for up to 15 s: every call waits for it.
                    if w.held_rng.chance(0.2) {
                        f.broker_frozen_until_ms = w.now_ms + 500 + w.held_rng.below(15_000);
                    }
                }
                self.note(format!(
                    "faults: put errors {}, lost responses {}, storage frozen until {}, broker errors {}, commits held {}, coordinator away until {}, commits never answered {}, broker frozen until {}",
                    f.put_error, f.lost_response, f.storage_frozen_until_ms, f.broker_error, f.commit_held, f.coordinator_away_until_ms, f.commit_never_answered, f.broker_frozen_until_ms
                ));
                lock(&self.world).faults = f;
            }
            96 if !self.upgraded => {
                self.upgrade();
                self.start_member();
                self.rebalance();
            }
            95 if n < 4 => {
                self.start_member_with(RunOptions { until_caught_up: true, ..Default::default() });
                self.rebalance();
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
        if let Some(why) = self.step_member(i) {
            let m = &self.members[i];
            let id = m.id;
            match &why {
                StopReason::Fatal(f) => self.note(format!("member {id} stops on a fatal error: {f}")),
                StopReason::CaughtUp => {
                    // Caught up only when every owned partition reached the end it had when assigned.
                    let targets = m.targets.as_ref();
                    let short: Vec<String> = m
                        .assigned
                        .iter()
                        .filter_map(|p| {
                            let (pos, end) = (m.positions[p], *targets?.get(p)?);
                            (pos < end).then(|| format!("{p} at {pos} of {end}"))
                        })
                        .collect();
                    if targets.is_none() || m.assigned.is_empty() || !short.is_empty() {
                        let v = format!("member {id} says it caught up with partitions {:?}, short: {short:?}", m.assigned);
                        lock(&self.world).ledger.violations.push(v);
                    }
                    self.note(format!("member {id} caught up: it stops"));
                    self.stats.caught_up += 1;
                }
                StopReason::Requested => unreachable!("the simulation stops members through stop_member"),
            }
            let now = lock(&self.world).instant();
            if let Err(e) = self.finish_member(i, now) {
                lock(&self.world).ledger.violations.push(e);
            }
            return;
        }
        let m = &mut self.members[i];
        if let Some(k) = m.expelled_notice {
            if k > 1 {
                m.expelled_notice = Some(k - 1);
                return;
            }
            m.callbacks += 1;
            let lost: Vec<usize> = m.assigned.iter().copied().collect();
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
    /// Once everything is committed, every member running with `--until-caught-up` that owns
    /// partitions stops within a bounded time: a minute, after the markers then due (at most
    /// `MARKERS_WAIT`). (A watermark read that failed at assignment left such a member without
    /// an end to reach: it ran forever.)
    fn caught_up_members_stop(&mut self) -> Result<(), String> {
        let waiting =
            |sim: &Self| -> Vec<usize> { sim.members.iter().filter(|m| m.targets.is_some() && !m.assigned.is_empty()).map(|m| m.id).collect() };
        let turns = 600 + MARKERS_WAIT.as_millis() as usize / 100;
        for _ in 0..turns {
            if waiting(self).is_empty() {
                return Ok(());
            }
            for i in 0..self.members.len() {
                if i < self.members.len() {
                    self.turn(i);
                }
            }
            self.advance(100);
            self.check()?;
        }
        Err(self.report(&format!(
            "members {:?} run with --until-caught-up and own partitions, everything is committed, and a minute after the markers' wait they have not stopped",
            waiting(self)
        )))
    }

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
                self.caught_up_members_stop()?;
                return Ok(ends);
            }
        }
        let committed: Vec<Option<i64>> = lock(&self.world).committed.iter().map(|c| c.as_ref().map(|c| c.0)).collect();
        let holds: String = self.members.iter().map(|m| format!("member {}:\n{}", m.id, m.writer.describe_holds())).collect();
        Err(self.report(&format!("no progress: after the faults ended, commits are {committed:?}, the ends {ends:?}\n{holds}")))
    }
}
