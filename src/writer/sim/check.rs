//! The simulation's invariants, checked as blobs are written and offsets committed, and once
//! more at the end.
//!
//! - every blob name parses, decompresses and holds whole lines (record envelopes for record
//!   topics), and every line belongs there: its topic, partition and date are the ones the path
//!   and name say, under the directory its route says (prefix or error path), and a record's
//!   envelope names its own partition and offset;
//! - no message is ever stored twice, and no blob is ever replaced by different content;
//! - no commit passes a message that is not stored exactly once;
//! - at the end, every message produced is stored exactly once.

use std::collections::BTreeMap;

use std::io::Read;

use super::{unslot, PARTITIONS, TOPICS};
use crate::config::{Format, TopicConfig};
use crate::naming::FileLayout;
use crate::routing::Router;
use crate::writer::Next;
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
    // Per partition: four dates and the invalid bucket of `t`; two prefixes of four dates and
    // the invalid bucket of `u`.
    const OPEN_FILES_MAX: u64 = super::PARTITIONS as u64 * (5 + 9);
    (super::BATCH as u64 + OPEN_FILES_MAX) * PAGE
}

/// The invariants of a per-batch decision, checked right after the core made it.
///
/// - the consumer is paused exactly when the core says so;
/// - a pause is lifted once uploads drain below the resume threshold (half the budget);
/// - the loop never polls more while buffers and uploads fill the budget with uploads behind;
/// - buffers and uploads never run over the budget by more than [`budget_slack`].
pub(super) fn after_decision(w: &Writer, next: &Next, consumer_paused: bool) -> Result<(), String> {
    let (open, inflight, limit) = w.memory();
    if consumer_paused != w.paused() {
        return Err(format!(
            "the consumer is {}paused but the core says it is {}",
            if consumer_paused { "" } else { "not " },
            if w.paused() { "paused" } else { "running" }
        ));
    }
    if w.paused() && inflight < limit / 2 {
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

/// What the ledger knows of one topic's output (a `[[topic]]` entry), to check where its lines
/// belong.
struct TopicCheck {
    /// The simulated topic's index in `TOPICS`.
    kafka: usize,
    path: String,
    error_path: String,
    layout: FileLayout,
    router: Router,
    /// `format = "record"`: each line is a record envelope around the value.
    record: bool,
}

pub(super) struct Ledger {
    topics: Vec<TopicCheck>,
    /// Blobs of each output (config entry) holding each (slot, offset).
    copies: BTreeMap<(usize, usize, i64), u32>,
    /// Per slot: offsets below this were checked when a commit passed them.
    checked: Vec<i64>,
    /// Per slot: the group's committed offset, which must never move back (an earlier commit
    /// landing after a later one would re-read what was committed).
    committed: Vec<i64>,
    pub(super) violations: Vec<String>,
    /// Records found where the release before record dating put them (the invalid bucket).
    pub(super) earlier_placed: u64,
    /// The world has members of the release before record dating.
    pub(super) mixed_releases: bool,
    pub(super) markers_checked: u64,
    /// Per slot: the date each message is counted under by markers (none: not dated).
    dates: Vec<Vec<Option<std::sync::Arc<str>>>>,
}

/// The (slot, offset) a simulated message's value names itself by.
pub(super) fn identify(value: &[u8]) -> Option<(usize, i64)> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(value) {
        return Some((v.get("p")?.as_u64()? as usize, v.get("o")?.as_i64()?));
    }
    // Invalid messages: `garbage p=<slot> o=<o>`.
    let text = std::str::from_utf8(value).ok()?;
    let mut it = text.split_whitespace().skip(1);
    let p = it.next()?.strip_prefix("p=")?.parse().ok()?;
    let o = it.next()?.strip_prefix("o=")?.parse().ok()?;
    Some((p, o))
}

/// A blob's lines: its bytes, inflated for a `.gz` name.
fn inflate(key: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    crate::seal::reader(key, body).read_to_end(&mut out).map_err(|e| format!("blob {key} does not decompress: {e}"))?;
    Ok(out)
}

impl Ledger {
    pub(super) fn new(topics: &[TopicConfig]) -> Ledger {
        let topics: Vec<TopicCheck> = topics
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let layout = t.layout().expect("layout");
                TopicCheck {
                    kafka: TOPICS.iter().position(|n| *n == t.name).expect("a simulated topic"),
                    path: format!("{}/", layout.dir(None, false)),
                    error_path: format!("{}/", layout.dir(None, true)),
                    layout,
                    router: Router::new(t, i).expect("router"),
                    record: t.format == Format::Record,
                }
            })
            .collect();
        // The world's topics, each once whatever its outputs.
        let slots = topics.iter().map(|t| t.kafka + 1).max().unwrap_or(0) * PARTITIONS;
        Ledger {
            topics,
            copies: BTreeMap::new(),
            checked: vec![0; slots],
            committed: vec![0; slots],
            violations: Vec::new(),
            earlier_placed: 0,
            mixed_releases: false,
            markers_checked: 0,
            dates: vec![Vec::new(); slots],
        }
    }

    fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
        body.split(|b| *b == b'\n').filter(|l| !l.is_empty())
    }

    /// The messages a blob of topic `t` holds, by (slot, offset), each checked against where
    /// it belongs: the blob's topic, partition, date and directory, and for records the
    /// envelope's own partition and offset.
    fn messages(&mut self, t: usize, key: &str, body: &[u8]) -> Vec<(usize, i64)> {
        let body = match inflate(key, body) {
            Ok(b) => b,
            Err(e) => {
                self.violations.push(e);
                return Vec::new();
            }
        };
        let topic = &self.topics[t];
        let Some(name) = topic.layout.parse(key) else {
            self.violations.push(format!("blob {key}: the name does not parse"));
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut bad = Vec::new();
        for line in Self::lines(&body) {
            let (value, envelope) = if topic.record {
                match crate::record::decode(line) {
                    Ok(r) => (r.value.clone(), Some(r)),
                    Err(e) => {
                        bad.push(format!("blob {key}: a line that is no record ({e}): {}", String::from_utf8_lossy(line)));
                        continue;
                    }
                }
            } else {
                (Some(line.to_vec()), None)
            };
            let Some((s, o)) = value.as_deref().and_then(identify) else {
                bad.push(format!("blob {key}: a line that is no simulated message: {}", String::from_utf8_lossy(line)));
                continue;
            };
            let (owner, p) = unslot(s);
            if owner != TOPICS[topic.kafka] {
                bad.push(format!("blob {key}: message {s}/{o} of topic {owner} is under topic {}'s path", TOPICS[topic.kafka]));
            }
            if let Some(r) = &envelope {
                if r.partition != Some(p) || r.offset != Some(o) {
                    bad.push(format!("blob {key}: the record of {s}/{o} says partition {:?}, offset {:?}", r.partition, r.offset));
                }
            }
            let record_ms = envelope.as_ref().and_then(|r| r.timestamp.map(|t| t.0));
            let route = topic.router.route(value.as_deref(), record_ms, o);
            let at = |prefix: Option<&str>, error: bool, date: &str| {
                let dir = topic.layout.dir(prefix, error);
                let place = key.starts_with(&dir) && key[dir.len()..].starts_with('/') && topic.layout.dates().format(name.date) == date;
                (place, dir)
            };
            let (here, dir) = at(route.prefix.as_deref(), route.to_error_path, &route.date);
            // Or where the release before record dating put it.
            let earlier = route.earlier.as_deref().is_some_and(|e| at(e.prefix.as_deref(), e.to_error_path, &e.date).0);
            if name.kafka_partition != Some(p) || !(here || earlier) {
                bad.push(format!("blob {key}: message {s}/{o} belongs under {dir} dated {} in partition {p}", route.date));
            }
            if earlier {
                self.earlier_placed += 1;
            }
            found.push((s, o));
        }
        self.violations.extend(bad);
        found
    }

    /// A blob was written at `key`, replacing `replaced` if the store overwrote one.
    pub(super) fn stored(&mut self, key: &str, body: &[u8], replaced: Option<&[u8]>) {
        if key.contains("/_kbackup/") {
            return;
        }
        let Some(t) = self.topics.iter().position(|t| key.starts_with(&t.path) || key.starts_with(&t.error_path)) else {
            self.violations.push(format!("blob {key} is under no topic's path"));
            return;
        };
        if let Some(old) = replaced {
            if old != body {
                self.violations.push(format!("blob {key} was overwritten with different content"));
            }
            for (s, o) in self.messages(t, key, old) {
                *self.copies.entry((t, s, o)).or_default() -= 1;
            }
        }
        for (s, o) in self.messages(t, key, body) {
            let n = self.copies.entry((t, s, o)).or_default();
            *n += 1;
            if *n > 1 {
                let n = *n;
                self.violations.push(format!("message {s}/{o} is stored {n} times in output {t} (again in {key})"));
            }
        }
    }

    /// Partition `p`'s commit moves to `offset`: every message below must be stored once.
    pub(super) fn committing(&mut self, p: usize, offset: i64) {
        if offset < self.committed[p] {
            self.violations.push(format!("slot {p}'s committed offset moves back from {} to {offset}", self.committed[p]));
        }
        self.committed[p] = offset;
        for t in self.outputs_of(p) {
            for o in self.checked[p]..offset {
                let n = self.copies.get(&(t, p, o)).copied().unwrap_or(0);
                if n != 1 {
                    self.violations.push(format!("a commit of slot {p} at {offset} passes offset {o}, which output {t} stores {n} times"));
                    break;
                }
            }
        }
        self.checked[p] = self.checked[p].max(offset);
    }

    /// A completion marker is written for slot `slot`: it must list at least every message of
    /// its date below its `complete_below` (`log` is the slot's whole log). Records without an
    /// event time are left out of the count in worlds with members of the release before
    /// record dating, which filed them under `invalid_date` (mixed versions during an upgrade
    /// are documented to leave such markers short).
    pub(super) fn marker_written(&mut self, slot: usize, marker: &crate::completion::Marker, log: &[super::Record]) {
        // Markers list the topic's first output's files.
        let t = self.outputs_of(slot)[0];
        let topic = &self.topics[t];
        let below = marker.complete_below.clamp(0, log.len() as i64) as usize;
        // Each message's date is routed once (markers of a slot are many).
        let dates = &mut self.dates[slot];
        let first = dates.len();
        for (i, r) in log[first..below.max(first)].iter().enumerate() {
            let route = topic.router.route(Some(&r.payload), Some(r.timestamp_ms), (first + i) as i64);
            let counted = !(route.to_error_path || (self.mixed_releases && route.earlier.is_some()));
            dates.push(counted.then_some(route.date));
        }
        let held = dates[..below].iter().filter(|d| d.as_deref() == Some(marker.date.as_str())).count() as u64;
        if marker.events < held {
            self.violations.push(format!(
                "marker {} of slot {slot} lists {} events of {} below offset {}, where the log holds {held}",
                marker.seq, marker.events, marker.date, marker.complete_below
            ));
        }
        self.markers_checked += 1;
    }

    /// After the run: every message of each partition (`ends[p]` of them) stored exactly once.
    pub(super) fn all_stored_once(&mut self, ends: &[i64]) {
        for (p, &end) in ends.iter().enumerate() {
            for t in self.outputs_of(p) {
                let missing: Vec<i64> = (0..end).filter(|o| self.copies.get(&(t, p, *o)).copied().unwrap_or(0) != 1).collect();
                if let Some(first) = missing.first() {
                    let n = self.copies.get(&(t, p, *first)).copied().unwrap_or(0);
                    self.violations.push(format!(
                        "slot {p}: {} of {end} messages are not stored exactly once in output {t} (offset {first} is stored {n} times)",
                        missing.len()
                    ));
                }
            }
        }
    }

    /// The outputs (config entries) of slot `p`'s topic, first output first.
    fn outputs_of(&self, p: usize) -> Vec<usize> {
        (0..self.topics.len()).filter(|&t| self.topics[t].kafka == p / PARTITIONS).collect()
    }
}
