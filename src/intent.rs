//! Upload intents: the durable record that makes Sunbird's wall-clock names exactly-once.
//!
//! A name like `2020-02-01-3-1580495403199.json.gz` says nothing about which offsets the file
//! holds, so a crash between an upload and the offset commit would upload the same events again
//! under a new name. kbackup closes that window by recording, **before** a file is uploaded, its
//! name, route (prefix, date) and offset range in the Kafka commit metadata of its partition —
//! committed atomically with the offset and fenced by the group generation, so a writer that
//! lost its partitions cannot record anything.
//!
//! A file holds exactly the messages in `[from, to]` of its partition whose route is its route
//! (one file per route is open at a time). So on assignment, with committed offset `C`:
//! - an intent with `to < C` is finished (its messages are committed) and is dropped;
//! - an intent with `from < C <= to` was certainly uploaded (the commit could not pass `from`
//!   otherwise): re-read messages in `[C, to]` on its route are **skipped**;
//! - an intent with `from >= C` may or may not have been uploaded: its file is **rebuilt** from
//!   the re-read messages under the recorded name, and uploaded only if it is not already there.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// What a partition's commit record carries about completion markers (the `completion` module), so
/// that its next owner goes on where this one stopped (a new owner never re-reads events below the commit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The newest date marked complete; every date after it is still to mark.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub marked: Option<NaiveDate>,
    /// Dates already marked that received late events: each needs a marker that lists their
    /// files. Recorded no later than the commit that passes the late event.
    #[serde(rename = "l", default, skip_serializing_if = "BTreeSet::is_empty")]
    pub late: BTreeSet<NaiveDate>,
    /// Before the first marker: the first date to judge (the earliest date read so far), so
    /// that a writer that stops before marking anything does not lose its backlog's dates.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub start: Option<NaiveDate>,
}

impl Progress {
    /// True if nothing is recorded (the record then leaves the field out).
    pub fn is_empty(&self) -> bool {
        self.marked.is_none() && self.late.is_empty() && self.start.is_none()
    }

    /// True if an event of `date` is late: its date is already marked complete.
    pub fn is_late(&self, date: NaiveDate) -> bool {
        self.marked.is_some_and(|m| date <= m)
    }
}

/// The broker's default `offset.metadata.max.bytes` is 4096; stay under it.
pub const DEFAULT_METADATA_LIMIT: usize = 4000;

/// One file recorded before its upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Full blob key.
    #[serde(rename = "k")]
    pub key: String,
    /// Route: prefix (sub-path), if any.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Route: the formatted date.
    #[serde(rename = "d")]
    pub date: String,
    /// Route: true for the error-path bucket.
    #[serde(rename = "e", default, skip_serializing_if = "is_false")]
    pub error: bool,
    /// First and last offset in the file.
    #[serde(rename = "a")]
    pub from: i64,
    #[serde(rename = "b")]
    pub to: i64,
    /// Recorded by a build that dates a record-format record without an event time by its
    /// record time (`routing::DateSource::RecordTimeInstead`); without it, the file was filled
    /// by a build that filed such records under `invalid_date`, and recovery matches them
    /// there ([`Recovery::action_by_build`]). Older readers ignore the field.
    #[serde(rename = "r", default, skip_serializing_if = "is_false")]
    pub record_dated: bool,
    /// Which of its topic's outputs the file is of (`0`: the topic's first `[[topic]]` entry;
    /// see `config` on outputs). Intents of later outputs ride in the record's `x` list, which
    /// a release without outputs ignores, so it never takes them for its own files.
    #[serde(rename = "o", default, skip_serializing_if = "is_zero")]
    pub output: u8,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(o: &u8) -> bool {
    *o == 0
}

#[derive(Serialize, Deserialize)]
struct Record {
    v: u32,
    /// The intents of the topic's first output.
    f: Vec<Intent>,
    /// The intents of its other outputs, each naming its output (older readers ignore it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    x: Vec<Intent>,
    /// Set only by `kbackup takeover` (older readers ignore it: serde skips unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<Adopted>,
    /// Completion markers written so far and late dates (older readers ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<Progress>,
}

/// A position `kbackup takeover` adopted from Secor. It stays in the partition's record until
/// the writer's first commit of that partition replaces the record, so a second takeover can
/// tell "taken over, not run yet" from "kbackup has committed since".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopted {
    /// Where the position was read.
    #[serde(rename = "from")]
    pub source: AdoptedFrom,
    /// The position read there (the commit is above it when a retention gap was accepted).
    #[serde(rename = "o")]
    pub offset: i64,
}

/// Where an adopted position came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdoptedFrom {
    /// Secor's ZooKeeper node: the next offset after its last upload.
    Zookeeper,
    /// Secor's Kafka commit (`kafka.offsets.storage=kafka`, no ZooKeeper node).
    Kafka,
    /// Neither: where Secor itself would have started (`auto.offset.reset`).
    Reset,
    /// Where Secor's files in storage end (stock Secor's names carry first offsets), when its
    /// ZooKeeper node holds no offset (`takeover --from-storage`).
    Storage,
    /// Given by the user (`takeover --offset`).
    Given,
}

impl std::fmt::Display for AdoptedFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdoptedFrom::Zookeeper => "Secor's ZooKeeper offset",
            AdoptedFrom::Kafka => "Secor's Kafka commit",
            AdoptedFrom::Reset => "auto.offset.reset",
            AdoptedFrom::Storage => "where Secor's files end",
            AdoptedFrom::Given => "the offset given",
        })
    }
}

/// A commit record read back: the intents, and the position `takeover` adopted, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    pub intents: Vec<Intent>,
    pub adopted: Option<Adopted>,
    /// What the partition's writer marked complete.
    pub progress: Progress,
}

/// Why commit metadata could not be read back.
#[cfg(test)]
#[derive(Debug, thiserror::Error)]
#[error("commit metadata is not a kbackup intent record: {0}")]
pub struct DecodeError(String);

/// Serializes intents for the commit metadata.
#[cfg(test)]
pub fn encode(intents: &[Intent]) -> String {
    encode_with(intents, &Progress::default())
}

/// Serializes intents and the partition's completion progress for the commit metadata.
pub fn encode_with(intents: &[Intent], progress: &Progress) -> String {
    let c = (!progress.is_empty()).then(|| progress.clone());
    let (f, x) = intents.iter().cloned().partition(|i| i.output == 0);
    serde_json::to_string(&Record { v: 1, f, x, t: None, c }).expect("intents serialize")
}

/// The record `kbackup takeover` commits: no intents, and where the position came from.
pub fn adopted_record(adopted: &Adopted) -> String {
    serde_json::to_string(&Record { v: 1, f: Vec::new(), x: Vec::new(), t: Some(adopted.clone()), c: None }).expect("a record serializes")
}

/// The record of a commit kbackup made; `None` for any other commit metadata, empty included
/// (the Java client's auto-commit, `kafka-consumer-groups` and most tools write none).
pub fn read_record(metadata: &str) -> Option<CommitRecord> {
    let r: Record = serde_json::from_str(metadata).ok()?;
    if r.v != 1 {
        return None;
    }
    // An intent of `f` is the first output's whatever it says (a reader ignoring `o` wrote it).
    let first = r.f.into_iter().map(|i| Intent { output: 0, ..i });
    // Outputs never share a file, so the order between outputs decides nothing (`Recovery`).
    let intents = first.chain(r.x.into_iter().filter(|i| i.output != 0)).collect();
    Some(CommitRecord { intents, adopted: r.t, progress: r.c.unwrap_or_default() })
}

/// Reads intents back; empty metadata (a commit by another tool, or none) means no intents.
#[cfg(test)]
pub fn decode(metadata: &str) -> Result<Vec<Intent>, DecodeError> {
    if metadata.trim().is_empty() {
        return Ok(Vec::new());
    }
    let r: Record = serde_json::from_str(metadata).map_err(|e| DecodeError(e.to_string()))?;
    if r.v != 1 {
        return Err(DecodeError(format!("unknown version {}", r.v)));
    }
    Ok(r.f.into_iter().chain(r.x).collect())
}

impl Intent {
    /// True if a message with this route belongs to the intent's file.
    pub fn route_matches(&self, prefix: Option<&str>, date: &str, error: bool) -> bool {
        self.error == error && self.date == date && self.prefix.as_deref() == prefix
    }

    /// True if the file's range spans `offset` and its output and route are `place`'s: where a
    /// file holds the message, unless an earlier-recorded one does.
    fn spans(&self, offset: i64, place: Place<'_>) -> bool {
        self.from <= offset
            && offset <= self.to
            && (self.output == place.output || crate::sabotage::on(crate::sabotage::Rule::OutputsShareIntents))
            && self.route_matches(place.prefix, place.date, place.error)
    }
}

/// Where a message is filed: the route an intent records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    pub prefix: Option<&'a str>,
    pub date: &'a str,
    pub error: bool,
    /// The output whose file it is (each output of a topic files every message once).
    pub output: u8,
}

/// What to do with one re-read message of a partition being recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Already in an uploaded file: do not write it again.
    Skip,
    /// Belongs in the file being rebuilt for `intents[i]` of the recovery.
    Rebuild(usize),
    /// Not covered by any intent: buffer it normally.
    Normal,
}

/// How a newly assigned partition is recovered from its last commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Intents whose messages from the committed offset on are skipped.
    pub skip: Vec<Intent>,
    /// Intents whose files are rebuilt under their recorded names.
    pub rebuild: Vec<Intent>,
    /// Both, in the order they were recorded: (is a skip, index).
    recorded: Vec<(bool, usize)>,
}

impl Recovery {
    /// Sorts recorded intents (in the order they were recorded) by the committed offset.
    pub fn new(committed: i64, intents: Vec<Intent>) -> Recovery {
        let mut recovery = Recovery::default();
        for i in intents {
            if i.to < committed {
                continue;
            } else if i.from < committed {
                recovery.recorded.push((true, recovery.skip.len()));
                recovery.skip.push(i);
            } else {
                recovery.recorded.push((false, recovery.rebuild.len()));
                recovery.rebuild.push(i);
            }
        }
        recovery
    }

    /// The recovery's intents in the order they were recorded (the order to record them again).
    pub fn pending(&self) -> impl Iterator<Item = &Intent> {
        self.recorded.iter().map(|&(skip, i)| if skip { &self.skip[i] } else { &self.rebuild[i] })
    }

    /// Decides where the message at `offset` with the given route goes.
    #[cfg(test)]
    pub fn action(&self, offset: i64, prefix: Option<&str>, date: &str, error: bool) -> Action {
        self.action_by_build(offset, Place { prefix, date, error, output: 0 }, None)
    }

    /// Decides where the message at `offset` goes, each intent judged by the rule of the build
    /// that recorded it: `place` is where this build files the message; `earlier`, where a build
    /// before record dating filed it, if elsewhere (a record without an event time: that build
    /// put it under `invalid_date`). An intent without [`Intent::record_dated`] was filled by
    /// such a build, so it holds the message only on its `earlier` place; one with it, only on
    /// `place`. (Trying one place and then the other, for every intent, files a record twice or
    /// loses it when an intent of the other place spans its offset without holding it.)
    ///
    /// Ranges of one route can overlap: a file opened while an earlier one was being rebuilt
    /// spans that file's offsets without holding them. The earlier-recorded intent owns them,
    /// as it did when the later file was filled.
    pub fn action_by_build(&self, offset: i64, place: Place<'_>, earlier: Option<Place<'_>>) -> Action {
        let ignore_earlier = crate::sabotage::on(crate::sabotage::Rule::IgnoreEarlierPlacement);
        let covers = |i: &Intent| {
            let p = match earlier {
                Some(e) if !i.record_dated && !ignore_earlier => e,
                _ => place,
            };
            i.spans(offset, p)
        };
        if let Some(e) = earlier.filter(|_| crate::sabotage::on(crate::sabotage::Rule::PlaceBeforeBuild)) {
            // Any intent on this build's place, then any on the earlier one, whichever build recorded it.
            return match self.first_holding(|i| i.spans(offset, place)) {
                Action::Normal => self.first_holding(|i| i.spans(offset, e)),
                a => a,
            };
        }
        if crate::sabotage::on(crate::sabotage::Rule::PlanByFirstOffset) {
            // The rule before the simulation: skips first, then rebuilds by first offset.
            if self.skip.iter().any(covers) {
                return Action::Skip;
            }
            let mut by_from: Vec<usize> = (0..self.rebuild.len()).collect();
            by_from.sort_by_key(|&i| self.rebuild[i].from);
            return by_from.into_iter().find(|&i| covers(&self.rebuild[i])).map_or(Action::Normal, Action::Rebuild);
        }
        self.first_holding(covers)
    }

    /// The first intent, in recorded order, that `covers` the message.
    fn first_holding(&self, covers: impl Fn(&Intent) -> bool) -> Action {
        for &(skip, i) in &self.recorded {
            match skip {
                true if covers(&self.skip[i]) => return Action::Skip,
                false if covers(&self.rebuild[i]) => return Action::Rebuild(i),
                _ => {}
            }
        }
        Action::Normal
    }

    /// The highest offset any intent of the recovery reaches; past it the recovery has nothing to say.
    pub fn end(&self) -> Option<i64> {
        self.skip.iter().chain(&self.rebuild).map(|i| i.to).max()
    }

    /// True if there is nothing to skip or rebuild.
    pub fn is_empty(&self) -> bool {
        self.skip.is_empty() && self.rebuild.is_empty()
    }
}

/// The intents of one partition still to be carried in its commits.
#[derive(Debug, Clone, Default)]
pub struct IntentLog {
    entries: Vec<Arc<Intent>>,
}

impl IntentLog {
    /// Adds an intent (a sealed file about to be recorded).
    pub fn push(&mut self, i: Arc<Intent>) {
        self.entries.push(i);
    }

    /// Removes one intent (its record failed, or its name turned out to be taken). Matched by
    /// name and range: another intent may carry the same name (a recorded file whose name a
    /// new file collided with), and it must stay.
    pub fn remove(&mut self, i: &Intent) {
        self.entries.retain(|e| !(e.key == i.key && e.from == i.from && e.to == i.to));
    }

    /// True if some intent names a file `key`.
    pub fn names(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    /// Drops intents wholly below `committed`; they need no record any more.
    pub fn prune(&mut self, committed: i64) {
        self.entries.retain(|e| e.to >= committed);
    }

    /// The metadata to commit along with offset `offset`, or `None` if it would exceed `limit`.
    pub fn metadata(&self, offset: i64, limit: usize, progress: &Progress) -> Option<String> {
        let live: Vec<Intent> = self.entries.iter().filter(|e| e.to >= offset).map(|e| (**e).clone()).collect();
        let m = encode_with(&live, progress);
        (m.len() <= limit).then_some(m)
    }

    /// Number of intents held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no intent is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(key: &str, date: &str, from: i64, to: i64) -> Intent {
        Intent { key: key.into(), prefix: None, date: date.into(), error: false, from, to, record_dated: false, output: 0 }
    }

    #[test]
    fn round_trip_and_size() {
        let v = vec![
            intent("unique/raw/2020-02-01-3-1580495403199.json.gz", "2020-02-01", 10, 20),
            Intent { prefix: Some("summary".into()), error: true, ..intent("x", "1970-01-01", 5, 5) },
        ];
        let m = encode(&v);
        assert_eq!(decode(&m).unwrap(), v);
        assert!(m.len() < 220, "{} bytes: {m}", m.len());
        assert_eq!(decode("").unwrap(), vec![]);
        assert!(decode("{\"v\":2,\"f\":[]}").is_err());
        assert!(decode("written by someone else").is_err());
    }

    #[test]
    fn only_kbackups_own_records_are_read_as_records() {
        assert_eq!(read_record(&encode(&[])), Some(CommitRecord { intents: vec![], adopted: None, progress: Progress::default() }));
        let one = vec![intent("k", "2020-02-01", 3, 9)];
        assert_eq!(read_record(&encode(&one)).unwrap().intents, one);
        for foreign in ["", " ", "{}", "{\"v\":2,\"f\":[]}", "null", "secor"] {
            assert_eq!(read_record(foreign), None, "{foreign:?}");
        }
        let adopted = Adopted { source: AdoptedFrom::Zookeeper, offset: 1200 };
        let md = adopted_record(&adopted);
        assert_eq!(read_record(&md), Some(CommitRecord { intents: vec![], adopted: Some(adopted), progress: Progress::default() }));
        // A writer that knows nothing of takeovers (the previous release) reads it as no intents.
        assert_eq!(decode(&md).unwrap(), vec![]);
        assert!(md.len() < 60, "{md}");
    }

    #[test]
    fn later_outputs_ride_where_a_release_without_outputs_does_not_look() {
        let first = intent("backup/t/2026-12-06-0-1.json", "2026-12-06", 10, 20);
        let second = Intent { output: 1, ..intent("columns/t/2026-12-06-0-2.parquet", "2026-12-06", 12, 30) };
        let md = encode(&[first.clone(), second.clone()]);
        assert!(md.contains("\"x\":[") && md.contains("\"o\":1"), "{md}");
        assert_eq!(read_record(&md).unwrap().intents, [first.clone(), second.clone()]);
        // What a release without outputs reads: the first output's intents only.
        #[derive(Deserialize)]
        struct Before {
            f: Vec<serde_json::Value>,
        }
        let before: Before = serde_json::from_str(&md).unwrap();
        assert_eq!(before.f.len(), 1);
        assert_eq!(before.f[0]["k"], "backup/t/2026-12-06-0-1.json");
        // A one-output record is unchanged (no `x`, no `o`).
        assert_eq!(encode(std::slice::from_ref(&first)), r#"{"v":1,"f":[{"k":"backup/t/2026-12-06-0-1.json","d":"2026-12-06","a":10,"b":20}]}"#);
        // An intent of `f` is the first output's, whatever it says; one of `x` never is.
        let odd = r#"{"v":1,"f":[{"k":"a","d":"D","a":1,"b":2,"o":3}],"x":[{"k":"b","d":"D","a":1,"b":2}]}"#;
        assert_eq!(read_record(odd).unwrap().intents.iter().map(|i| (i.key.as_str(), i.output)).collect::<Vec<_>>(), [("a", 0)]);
        // Each output's intent decides its own output's messages only.
        let recovery = Recovery::new(12, vec![first, second]);
        let at = |output| Place { prefix: None, date: "2026-12-06", error: false, output };
        assert_eq!(recovery.action_by_build(15, at(0), None), Action::Skip);
        assert_eq!(recovery.action_by_build(15, at(1), None), Action::Rebuild(0));
        assert_eq!(recovery.action_by_build(25, at(0), None), Action::Normal);
        assert_eq!(recovery.action_by_build(15, at(2), None), Action::Normal);
        let _broken = crate::sabotage::break_rule(crate::sabotage::Rule::OutputsShareIntents);
        assert_eq!(recovery.action_by_build(15, at(1), None), Action::Skip, "the broken rule skips what output 1 never stored");
    }

    #[test]
    fn recovery_sorts_intents_by_the_committed_offset() {
        let recovery = Recovery::new(
            100,
            vec![
                intent("done", "A", 10, 99),      // wholly committed
                intent("straddle", "B", 50, 150), // uploaded: skip 100..=150 on route B
                intent("pending", "A", 100, 180), // unknown: rebuild
                intent("later", "B", 160, 200),   // unknown: rebuild
            ],
        );
        assert_eq!(recovery.skip.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["straddle"]);
        assert_eq!(recovery.rebuild.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["pending", "later"]);
        assert_eq!(recovery.end(), Some(200));

        assert_eq!(recovery.action(100, None, "B", false), Action::Skip);
        assert_eq!(recovery.action(150, None, "B", false), Action::Skip);
        assert_eq!(recovery.action(155, None, "B", false), Action::Normal, "between B's files");
        assert_eq!(recovery.action(160, None, "B", false), Action::Rebuild(1));
        assert_eq!(recovery.action(100, None, "A", false), Action::Rebuild(0));
        assert_eq!(recovery.action(180, None, "A", false), Action::Rebuild(0));
        assert_eq!(recovery.action(181, None, "A", false), Action::Normal);
        assert_eq!(recovery.action(120, None, "C", false), Action::Normal, "other routes are untouched");
        assert_eq!(recovery.action(120, Some("raw"), "B", false), Action::Normal, "prefix is part of the route");
        assert_eq!(recovery.action(120, None, "B", true), Action::Normal, "error bucket is part of the route");
    }

    #[test]
    fn overlapping_ranges_of_one_route_belong_to_the_earlier_intent() {
        // `a` (recorded first) holds 9; `b`, filled while `a` was rebuilt, spans 6..=41 without 9.
        let recovery = Recovery::new(6, vec![intent("a", "A", 9, 9), intent("b", "A", 6, 41)]);
        assert_eq!(recovery.action(9, None, "A", false), Action::Rebuild(0));
        assert_eq!(recovery.action(6, None, "A", false), Action::Rebuild(1));
        assert_eq!(recovery.pending().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["a", "b"], "recorded order is kept");
        // The same when the earlier one is uploaded for certain and the later one is not.
        let recovery = Recovery::new(8, vec![intent("b", "A", 10, 10), intent("s", "A", 7, 30)]);
        assert_eq!(recovery.action(10, None, "A", false), Action::Rebuild(0), "b was recorded first");
        assert_eq!(recovery.action(11, None, "A", false), Action::Skip);
    }

    #[test]
    fn each_intent_is_judged_by_the_rule_of_the_build_that_recorded_it() {
        // A record without an event time at offset 15: this build files it on its record-time
        // date D; the build before record dating filed it under the invalid date 1970-01-01.
        let here = Place { prefix: None, date: "D", error: false, output: 0 };
        let invalid = Place { prefix: None, date: "1970-01-01", error: false, output: 0 };
        let new = |key, date, from, to| Intent { record_dated: true, ..intent(key, date, from, to) };

        // Both files by the earlier build: `d` spans 15 without holding it, `i` holds it. Trying
        // D first, for every intent, put the record into `d` as well: twice when `i` was
        // uploaded, and `d`'s rebuild differed from its upload.
        let recovery = Recovery::new(8, vec![intent("d", "D", 8, 22), intent("i", "1970-01-01", 15, 30)]);
        assert_eq!(recovery.action_by_build(15, here, Some(invalid)), Action::Rebuild(1));
        assert_eq!(recovery.action_by_build(16, here, None), Action::Rebuild(0), "a dated message: its place in both builds");
        {
            let _broken = crate::sabotage::break_rule(crate::sabotage::Rule::PlaceBeforeBuild);
            assert_eq!(recovery.action_by_build(15, here, Some(invalid)), Action::Rebuild(0), "the broken rule puts it into `d`");
        }
        let recovery = Recovery::new(20, vec![intent("d", "D", 8, 22), intent("i", "1970-01-01", 15, 30)]);
        assert_eq!(recovery.action_by_build(21, here, Some(invalid)), Action::Skip, "in `i`, uploaded for certain");

        // Both files by this build: the record is in `d`, whatever spans it on the invalid date.
        let recovery = Recovery::new(8, vec![new("i", "1970-01-01", 10, 30), new("d", "D", 8, 22)]);
        assert_eq!(recovery.action_by_build(15, here, Some(invalid)), Action::Rebuild(1));

        // Upgraded after a crash: the earlier build's `i` (being rebuilt) still owns the records
        // it spans; this build's `d`, filled meanwhile, the ones past it.
        let recovery = Recovery::new(8, vec![intent("i", "1970-01-01", 10, 16), new("d", "D", 12, 40)]);
        assert_eq!(recovery.action_by_build(15, here, Some(invalid)), Action::Rebuild(0));
        assert_eq!(recovery.action_by_build(17, here, Some(invalid)), Action::Rebuild(1));
        // Nothing recorded on either place: buffered normally, on this build's place.
        assert_eq!(recovery.action_by_build(41, here, Some(invalid)), Action::Normal);

        // Value-format topics never set `record_dated` and never have an earlier place.
        let recovery = Recovery::new(8, vec![intent("d", "D", 8, 22)]);
        assert_eq!(recovery.action_by_build(15, here, None), recovery.action(15, None, "D", false));
    }

    #[test]
    fn empty_recovery() {
        let recovery = Recovery::new(5, vec![intent("old", "A", 0, 4)]);
        assert!(recovery.is_empty());
        assert_eq!(recovery.action(5, None, "A", false), Action::Normal);
    }

    #[test]
    fn log_prunes_and_limits_metadata() {
        let mut log = IntentLog::default();
        log.push(Arc::new(intent("a", "A", 0, 9)));
        log.push(Arc::new(intent("b", "B", 5, 30)));
        assert_eq!(decode(&log.metadata(10, 4000, &Progress::default()).unwrap()).unwrap().len(), 1, "a is below 10");
        assert_eq!(decode(&log.metadata(0, 4000, &Progress::default()).unwrap()).unwrap().len(), 2);
        assert!(log.metadata(0, 20, &Progress::default()).is_none());
        log.prune(10);
        assert_eq!(log.len(), 1);
        log.remove(&intent("b", "B", 5, 30));
        assert!(log.is_empty());
    }

    #[test]
    fn removing_an_intent_keeps_another_of_the_same_name() {
        // A recorded file and a new one that collided with its name: only the new one goes.
        let mut log = IntentLog::default();
        log.push(Arc::new(intent("x", "A", 20, 20)));
        log.push(Arc::new(intent("x", "A", 13, 14)));
        assert!(log.names("x") && !log.names("y"));
        log.remove(&intent("x", "A", 13, 14));
        assert_eq!(log.len(), 1);
        assert_eq!(decode(&log.metadata(0, 4000, &Progress::default()).unwrap()).unwrap()[0].from, 20);
    }
}
