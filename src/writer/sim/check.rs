//! The simulation's invariants, checked as blobs are written and offsets committed, and once
//! more at the end.
//!
//! - every blob name parses, and every line in it belongs there: its partition and date are the
//!   ones the name says, under the directory its route says;
//! - no message is ever stored twice, and no blob is ever replaced by different content;
//! - no commit passes a message that is not stored exactly once;
//! - at the end, every message produced is stored exactly once.

use std::collections::BTreeMap;

use crate::naming::FileLayout;
use crate::routing::Router;
use crate::writer::decision::Next;
use crate::writer::Writer;

/// How far buffers and uploads may run over the budget. The loop stops polling once uploads
/// hold half of it and the whole is full; until then each message over the budget seals the
/// largest open file (which moves its bytes to the uploads, freeing nothing). So the overshoot
/// is at most the batch polled before the decision plus one message per open file sealed that
/// way (a partition's dates and its invalid bucket, over the simulation's partitions), and one
/// message adds at most a page to what the budget counts (a new file's first page, or the
/// next page of one).
pub(super) fn budget_slack() -> u64 {
    const PAGE: u64 = 4096;
    const OPEN_FILES_MAX: u64 = super::PARTITIONS as u64 * 5;
    (super::group::BATCH as u64 + OPEN_FILES_MAX) * PAGE
}

/// The invariants of a per-batch decision, checked right after the core made it.
///
/// - the consumer is paused exactly when the core says so;
/// - a pause is lifted once uploads drain below the resume threshold (half the budget);
/// - the loop never polls more while buffers and uploads fill the budget with uploads behind;
/// - buffers and uploads never run over the budget by more than [`budget_slack`].
pub(super) fn after_decision(w: &Writer, next: &Next, consumer_paused: bool) -> Result<(), String> {
    let (open, inflight, limit) = (w.files.open_bytes(), w.files.inflight_bytes(), w.budget.limit);
    if consumer_paused != w.paused {
        return Err(format!(
            "the consumer is {}paused but the core says it is {}",
            if consumer_paused { "" } else { "not " },
            if w.paused { "paused" } else { "running" }
        ));
    }
    if w.paused && inflight < limit / 2 {
        return Err(format!("consumption stays paused with {inflight} bytes in uploads, below the resume threshold of {}", limit / 2));
    }
    if *next == (Next::Poll { paused: false }) && w.waiting_for_uploads() {
        return Err(format!(
            "the loop polls more with {open} bytes buffered and {inflight} uploading, over the budget of {limit} with uploads behind"
        ));
    }
    if open + inflight > limit + budget_slack() {
        return Err(format!("{open} bytes buffered and {inflight} uploading: over the budget of {limit} by more than {}", budget_slack()));
    }
    Ok(())
}

pub(super) struct Ledger {
    layout: FileLayout,
    router: Router,
    /// Blobs holding each (partition, offset).
    copies: BTreeMap<(i32, i64), u32>,
    /// Per partition: offsets below this were checked when a commit passed them.
    checked: Vec<i64>,
    /// Per partition: the group's committed offset, which must never move back (an earlier
    /// commit landing after a later one would re-read what was committed).
    committed: Vec<i64>,
    pub(super) violations: Vec<String>,
}

/// The (partition, offset) a simulated message names itself by.
pub(super) fn identify(line: &[u8]) -> Option<(i32, i64)> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
        return Some((v.get("p")?.as_i64()? as i32, v.get("o")?.as_i64()?));
    }
    // Invalid messages: `garbage p=<p> o=<o>`.
    let text = std::str::from_utf8(line).ok()?;
    let mut it = text.split_whitespace().skip(1);
    let p = it.next()?.strip_prefix("p=")?.parse().ok()?;
    let o = it.next()?.strip_prefix("o=")?.parse().ok()?;
    Some((p, o))
}

impl Ledger {
    pub(super) fn new(layout: FileLayout, router: Router, partitions: usize) -> Ledger {
        Ledger { layout, router, copies: BTreeMap::new(), checked: vec![0; partitions], committed: vec![0; partitions], violations: Vec::new() }
    }

    fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
        body.split(|b| *b == b'\n').filter(|l| !l.is_empty())
    }

    /// A blob was written at `key`, replacing `replaced` if the store overwrote one.
    pub(super) fn stored(&mut self, key: &str, body: &[u8], replaced: Option<&[u8]>) {
        if let Some(old) = replaced {
            if old != body {
                self.violations.push(format!("blob {key} was overwritten with different content"));
            }
            for line in Self::lines(old) {
                if let Some(id) = identify(line) {
                    *self.copies.entry(id).or_default() -= 1;
                }
            }
        }
        let Some(name) = self.layout.parse(key) else {
            self.violations.push(format!("blob {key}: the name does not parse"));
            return;
        };
        for line in Self::lines(body) {
            let Some((p, o)) = identify(line) else {
                self.violations.push(format!("blob {key}: a line that is no simulated message: {}", String::from_utf8_lossy(line)));
                continue;
            };
            let route = self.router.route(Some(line), None);
            let dir = self.layout.dir(route.prefix.as_deref(), route.to_error_path);
            if name.kafka_partition != Some(p) || self.layout.dates().format(name.date) != *route.date || !key.starts_with(&dir) {
                self.violations.push(format!("blob {key}: message {p}/{o} belongs under {dir} dated {}", route.date));
            }
            let n = self.copies.entry((p, o)).or_default();
            *n += 1;
            if *n > 1 {
                self.violations.push(format!("message {p}/{o} is stored {n} times (again in {key})"));
            }
        }
    }

    /// Partition `p`'s commit moves to `offset`: every message below must be stored once.
    pub(super) fn committing(&mut self, p: usize, offset: i64) {
        if offset < self.committed[p] {
            self.violations.push(format!("partition {p}'s committed offset moves back from {} to {offset}", self.committed[p]));
        }
        self.committed[p] = offset;
        for o in self.checked[p]..offset {
            let n = self.copies.get(&(p as i32, o)).copied().unwrap_or(0);
            if n != 1 {
                self.violations.push(format!("a commit of partition {p} at {offset} passes offset {o}, which is stored {n} times"));
                break;
            }
        }
        self.checked[p] = self.checked[p].max(offset);
    }

    /// After the run: every message of each partition (`ends[p]` of them) stored exactly once.
    pub(super) fn all_stored_once(&mut self, ends: &[i64]) {
        for (p, &end) in ends.iter().enumerate() {
            let missing: Vec<i64> = (0..end).filter(|o| self.copies.get(&(p as i32, *o)).copied().unwrap_or(0) != 1).collect();
            if let Some(first) = missing.first() {
                let n = self.copies.get(&(p as i32, *first)).copied().unwrap_or(0);
                self.violations.push(format!(
                    "partition {p}: {} of {end} messages are not stored exactly once (offset {first} is stored {n} times)",
                    missing.len()
                ));
            }
        }
    }
}
