//! The decisions of `takeover` and `handback`, per partition, from what was read: pure, so
//! every case is a unit test.
//!
//! Secor's uploader writes the next offset to ZooKeeper after every upload, whatever
//! `kafka.offsets.storage` says; that node is the one position that proves what Secor stored.
//! Its Kafka commits prove nothing: Sunbird's fork auto-commits what it *consumed*.

use serde::Serialize;

use crate::config::OffsetsStorage;
use crate::group::Held;
use crate::intent::{Adopted, AdoptedFrom};

/// What was read for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub topic: String,
    pub partition: i32,
    /// Log start and end (Kafka's low and high watermarks).
    pub log_start: i64,
    pub log_end: i64,
    /// Secor's ZooKeeper offset; `None` when the node does not exist or holds no offset.
    pub zookeeper: Option<i64>,
    /// What the node holds when it exists but holds no offset (Curator's default data: the
    /// creating host's address, left by a Secor that stopped before its first offset write).
    pub zookeeper_unreadable: Option<String>,
    /// Where Secor's files in storage end (`--from-storage`), when it was read.
    pub stored: Option<i64>,
    /// The offset the user gave (`--offset`).
    pub given: Option<i64>,
    /// A stock Secor file that starts at the ZooKeeper offset (the name Secor gives the file
    /// of the message there): Secor uploaded past its node and stopped before writing it.
    pub file_at_zookeeper: Option<String>,
    /// What Secor's group holds in Kafka.
    pub secor_kafka: Held,
    /// What kbackup's group holds (the same as `secor_kafka` when both use one group).
    pub kbackup: Held,
}

/// The settings a takeover decides by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeoverRules {
    /// Where Secor read its position from on restart.
    pub storage: OffsetsStorage,
    /// `auto.offset.reset` is latest: a partition without any position starts at its end.
    pub reset_to_end: bool,
    /// The user accepts that offsets Kafka deleted before Secor uploaded them are lost.
    pub accept_gap: bool,
    /// Secor's files in storage were read (`stored`): a partition without files has none.
    pub from_storage: bool,
}

/// What to do with one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Commit `offset` (with a record of where it came from) for kbackup's group.
    Commit { offset: i64, adopted: Adopted },
    /// Leave the partition as it is.
    Keep,
    /// Nothing may change while this holds (the whole command refuses).
    Refuse,
}

/// One partition's decision, with the figures the table shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub observed: Observed,
    pub step: Step,
    /// Events in `[secor position, log start)`: deleted by Kafka before Secor uploaded them.
    pub retention_gap: u64,
    /// Events the naive switch (resuming kbackup's group as it stands) would never back up.
    pub naive_lost: u64,
    /// Events the naive switch would back up a second time (Secor already stored them).
    pub naive_doubled: u64,
    /// Why, in words.
    pub note: String,
}

impl Row {
    /// The offset the row will leave kbackup's group at, if it changes it.
    pub fn commit(&self) -> Option<i64> {
        match &self.step {
            Step::Commit { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// Where Secor would resume the partition, and from which source. An offset the user gave
/// wins; Secor's files in storage, when read, win over a ZooKeeper offset below where they end
/// (Secor uploaded and stopped before writing the node: restarted, it would upload again).
fn secor_position(o: &Observed, rules: &TakeoverRules) -> Adopted {
    if let Some(g) = o.given {
        return Adopted { source: AdoptedFrom::Given, offset: g };
    }
    match (o.zookeeper, o.stored) {
        (Some(z), Some(s)) if s > z => return Adopted { source: AdoptedFrom::Storage, offset: s },
        (Some(z), _) => return Adopted { source: AdoptedFrom::Zookeeper, offset: z },
        (None, Some(s)) => return Adopted { source: AdoptedFrom::Storage, offset: s },
        (None, None) => {}
    }
    match (rules.storage, o.secor_kafka.offset()) {
        // Secor read its Kafka commit in this mode; with no ZooKeeper node it is all there is.
        (OffsetsStorage::Kafka, Some(k)) => Adopted { source: AdoptedFrom::Kafka, offset: k },
        _ => Adopted { source: AdoptedFrom::Reset, offset: if rules.reset_to_end { o.log_end } else { o.log_start } },
    }
}

/// Where the naive switch would have started kbackup: its group's commit, whoever wrote it,
/// else `auto.offset.reset`.
fn naive_start(o: &Observed, rules: &TakeoverRules) -> i64 {
    let start = o.kbackup.offset().unwrap_or(if rules.reset_to_end { o.log_end } else { o.log_start });
    // A commit below the log start is reset by the consumer.
    start.clamp(o.log_start, o.log_end.max(o.log_start))
}

/// Decides one partition of a takeover.
pub fn takeover(o: Observed, rules: &TakeoverRules) -> Row {
    let secor = secor_position(&o, rules);
    let mut row = Row { step: Step::Keep, retention_gap: 0, naive_lost: 0, naive_doubled: 0, note: String::new(), observed: o };
    let o = &row.observed;
    if let (Some(data), false, None) = (&o.zookeeper_unreadable, rules.from_storage, o.given) {
        row.step = Step::Refuse;
        row.note = format!(
            "ZooKeeper's node holds {data:?}, not an offset: Curator's default node data (the creating host's address), left by a Secor that stopped after creating the node and before writing its first offset. How far it uploaded is in its files: --from-storage derives it from stock Secor's file names, or --offset {}/{}=N sets it",
            o.topic, o.partition
        );
        return row;
    }
    if let (Some(key), false, None, Some(z)) = (&o.file_at_zookeeper, rules.from_storage, o.given, o.zookeeper) {
        if secor.source == AdoptedFrom::Zookeeper && !matches!(o.kbackup, Held::Kbackup { adopted: None, .. }) {
            row.step = Step::Refuse;
            row.note = format!(
                "Secor's file {key} starts at its ZooKeeper offset {z}: Secor uploaded past the node and stopped before writing it (restarted, it would overwrite the file; kbackup never overwrites). --from-storage takes over from where its files end"
            );
            return row;
        }
    }
    if let Held::Kbackup { offset, adopted, .. } = &o.kbackup {
        match adopted {
            // Secor stored past kbackup's position (a Secor ran after a handback, or after
            // kbackup without one): what it uploaded must not be stored again.
            None if secor.source != AdoptedFrom::Reset && secor.offset > *offset => {
                row.note = format!(
                    "{} ({}) is ahead of kbackup's commit {offset}: Secor stored [{offset}, {}) after kbackup stopped; ",
                    secor.source, secor.offset, secor.offset
                );
                row.naive_doubled = (secor.offset.min(o.log_end) - (*offset).max(o.log_start)).max(0) as u64;
            }
            // kbackup's writer has committed since: its record, not Secor's, is the position now.
            None => {
                row.note = "kbackup has committed since: unchanged".into();
                return row;
            }
            Some(a) if *a == secor => {
                row.note = format!("taken over before (from {}): unchanged", a.source);
                return row;
            }
            // Taken over, never run since, and Secor's position moved (Secor ran again): adopt anew.
            Some(a) => row.note = format!("Secor's position moved since the last takeover ({} {} → {}); ", a.source, a.offset, secor.offset),
        }
    }
    if secor.offset > o.log_end {
        row.step = Step::Refuse;
        row.note.push_str(&format!(
            "{} {} is past the log end {}: the topic was recreated, or this is not Secor's ZooKeeper path or group",
            secor.source, secor.offset, o.log_end
        ));
        return row;
    }
    let naive = naive_start(o, rules);
    // Secor's position, or the log start when retention already deleted what Secor had not uploaded.
    let target = secor.offset.max(o.log_start);
    row.naive_lost = (naive - target).max(0) as u64;
    row.naive_doubled = row.naive_doubled.max((target - naive).max(0) as u64);
    if secor.offset < o.log_start {
        row.retention_gap = (o.log_start - secor.offset) as u64;
        if !rules.accept_gap {
            row.step = Step::Refuse;
            row.note.push_str(&format!(
                "RETENTION GAP: Kafka deleted offsets [{}, {}) before Secor uploaded them ({} events); --accept-retention-gap takes over from the log start",
                secor.offset, o.log_start, row.retention_gap
            ));
            return row;
        }
        row.note.push_str(&format!("retention gap of {} events accepted: [{}, {}) is lost; ", row.retention_gap, secor.offset, o.log_start));
    }
    // With one group for both, Secor's Kafka commit may already be the position: the commit
    // only marks it as taken over.
    let there = if o.kbackup.offset() == Some(target) { "the position stays, marked as taken over" } else { "kbackup starts there" };
    row.note.push_str(&match secor.source {
        AdoptedFrom::Zookeeper => match (rules.storage, o.secor_kafka.offset()) {
            (OffsetsStorage::Kafka, Some(k)) if k == secor.offset => {
                format!("Secor kept its offsets in Kafka and ZooKeeper agrees: {there}")
            }
            (OffsetsStorage::Kafka, Some(k)) => {
                format!("ZooKeeper (written after each upload) differs from Secor's Kafka commit {k}: ZooKeeper wins")
            }
            _ => "from Secor's ZooKeeper offset".to_string(),
        },
        AdoptedFrom::Kafka => format!("Secor kept its offsets in Kafka (no ZooKeeper node): {there}"),
        AdoptedFrom::Storage => match o.zookeeper {
            Some(z) => format!(
                "Secor's files end at {} past its ZooKeeper offset {z} (it uploaded, then stopped before writing the node): from where its files end",
                secor.offset
            ),
            None => "from where Secor's files in storage end".to_string(),
        },
        AdoptedFrom::Given => "from the offset given".to_string(),
        AdoptedFrom::Reset => format!(
            "no ZooKeeper node: where Secor would have started (auto.offset.reset={})",
            if rules.reset_to_end { "latest" } else { "earliest" }
        ),
    });
    row.step = Step::Commit { offset: target, adopted: secor };
    row
}

/// What a handback does with one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handback {
    /// Write `offset` to Secor's ZooKeeper node (and Secor's Kafka group when it is another).
    Write {
        offset: i64,
    },
    Keep,
    Refuse,
}

/// One partition's handback decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandbackRow {
    pub observed: Observed,
    pub step: Handback,
    pub note: String,
}

/// What a handback may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandbackRules {
    /// Secor and kbackup use one group.
    pub same_group: bool,
    /// Where Secor reads its position from.
    pub storage: OffsetsStorage,
    /// The user accepts moving Secor's position backwards (`--allow-rewind`).
    pub allow_rewind: bool,
}

/// Decides one partition of a handback.
pub fn handback(o: Observed, rules: &HandbackRules) -> HandbackRow {
    let same_group = rules.same_group;
    // Where Secor stands, as it would read it: ZooKeeper (written after every upload), or its
    // own Kafka group when it keeps its offsets there and has no node.
    let secor_at = match (o.zookeeper, rules.storage, same_group) {
        (Some(z), _, _) => Some((z, "ZooKeeper")),
        (None, OffsetsStorage::Kafka, false) => o.secor_kafka.offset().map(|k| (k, "Secor's Kafka group")),
        _ => None,
    };
    let (step, note) = match &o.kbackup {
        Held::Kbackup { unfinished, .. } if *unfinished > 0 => (
            Handback::Refuse,
            format!("kbackup's commit record holds {unfinished} file(s) that may not be uploaded yet; Secor would upload their events again: run `kbackup run --until-caught-up` first"),
        ),
        Held::Kbackup { offset, .. } if secor_at.is_some_and(|(s, _)| s > *offset) && !rules.allow_rewind => {
            let (s, source) = secor_at.expect("checked");
            (
                Handback::Refuse,
                format!(
                    "REWIND: {source} holds {s}, ahead of kbackup's commit {offset}: Secor stored past it, and handing back would make it upload [{offset}, {s}) again; `kbackup takeover` adopts Secor's position instead, or --allow-rewind accepts the rewind"
                ),
            )
        }
        Held::Kbackup { offset, .. } => {
            let secor_kafka_agrees = same_group || o.secor_kafka.offset() == Some(*offset);
            if o.zookeeper == Some(*offset) && secor_kafka_agrees {
                (Handback::Keep, format!("ZooKeeper already holds kbackup's commit {offset}: unchanged"))
            } else {
                let mut note = match o.zookeeper {
                    Some(z) => format!("ZooKeeper {z} → {offset}"),
                    None => format!("ZooKeeper node created at {offset}"),
                };
                if *offset < o.log_start {
                    note.push_str(&format!("; below the log start {}: Secor will start at its auto.offset.reset", o.log_start));
                }
                (Handback::Write { offset: *offset }, note)
            }
        }
        Held::Foreign { .. } | Held::Nothing => (Handback::Keep, "kbackup holds no position for it: left as it is".to_string()),
    };
    HandbackRow { observed: o, step, note }
}

/// The figures of a whole takeover, for its summary line and `--json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub partitions: usize,
    /// Partitions the plan changes.
    pub to_change: usize,
    /// Partitions this command changed: none in a dry run or when any partition refused.
    pub changed: usize,
    pub refused: usize,
    pub retention_gap: u64,
    pub naive_lost: u64,
    pub naive_doubled: u64,
}

/// Sums the rows.
pub fn totals(rows: &[Row]) -> Totals {
    let mut t = Totals { partitions: rows.len(), ..Default::default() };
    for r in rows {
        match r.step {
            Step::Commit { .. } => t.to_change += 1,
            Step::Refuse => t.refused += 1,
            Step::Keep => {}
        }
        t.retention_gap += r.retention_gap;
        t.naive_lost += r.naive_lost;
        t.naive_doubled += r.naive_doubled;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZK: TakeoverRules = TakeoverRules { storage: OffsetsStorage::Zookeeper, reset_to_end: false, accept_gap: false, from_storage: false };

    fn observed(zookeeper: Option<i64>, secor_kafka: Held, kbackup: Held) -> Observed {
        Observed {
            topic: "t".into(),
            partition: 0,
            log_start: 100,
            log_end: 1000,
            zookeeper,
            zookeeper_unreadable: None,
            stored: None,
            given: None,
            file_at_zookeeper: None,
            secor_kafka,
            kbackup,
        }
    }

    fn foreign(offset: i64) -> Held {
        Held::Foreign { offset }
    }

    fn adopted(source: AdoptedFrom, offset: i64) -> Adopted {
        Adopted { source, offset }
    }

    /// The case: Secor's fork auto-committed what it consumed (the end), ZooKeeper
    /// holds what it uploaded; one group for both.
    #[test]
    fn the_zookeeper_offset_wins_over_secors_auto_commit() {
        let r = takeover(observed(Some(400), foreign(1000), foreign(1000)), &ZK);
        assert_eq!(r.step, Step::Commit { offset: 400, adopted: adopted(AdoptedFrom::Zookeeper, 400) });
        assert_eq!((r.naive_lost, r.naive_doubled, r.retention_gap), (600, 0, 0));
        assert!(r.note.contains("ZooKeeper"), "{}", r.note);
    }

    /// Stock Secor commits nothing to Kafka: the naive switch starts at the log start and
    /// stores everything Secor stored again.
    #[test]
    fn stock_secor_without_kafka_commits_is_doubled_by_the_naive_switch() {
        let r = takeover(observed(Some(1000), Held::Nothing, Held::Nothing), &ZK);
        assert_eq!(r.commit(), Some(1000));
        assert_eq!((r.naive_lost, r.naive_doubled), (0, 900));
        // A new kbackup group with auto.offset.reset=latest instead loses nothing here...
        let latest = TakeoverRules { reset_to_end: true, ..ZK };
        let r = takeover(observed(Some(400), Held::Nothing, Held::Nothing), &latest);
        // ...but skips what Secor had not uploaded.
        assert_eq!((r.commit(), r.naive_lost, r.naive_doubled), (Some(400), 600, 0));
    }

    #[test]
    fn no_node_starts_where_secor_would_have_started() {
        let r = takeover(observed(None, foreign(1000), foreign(1000)), &ZK);
        assert_eq!(r.step, Step::Commit { offset: 100, adopted: adopted(AdoptedFrom::Reset, 100) });
        assert_eq!(r.naive_lost, 900);
        assert!(r.note.contains("auto.offset.reset=earliest"), "{}", r.note);
        let r = takeover(observed(None, foreign(1000), Held::Nothing), &TakeoverRules { reset_to_end: true, ..ZK });
        assert_eq!(r.step, Step::Commit { offset: 1000, adopted: adopted(AdoptedFrom::Reset, 1000) });
        assert!(r.note.contains("latest"), "{}", r.note);
    }

    #[test]
    fn secor_with_kafka_offsets() {
        let kafka = TakeoverRules { storage: OffsetsStorage::Kafka, ..ZK };
        // Stock Secor: the Kafka commit is the uploaded position, and ZooKeeper agrees.
        let r = takeover(observed(Some(700), foreign(700), foreign(700)), &kafka);
        assert_eq!((r.commit(), r.naive_lost, r.naive_doubled), (Some(700), 0, 0));
        assert!(r.note.contains("ZooKeeper agrees: the position stays, marked as taken over"), "{}", r.note);
        // Sunbird's fork auto-commits in this mode too: ZooKeeper, written after uploads, wins.
        let r = takeover(observed(Some(700), foreign(900), foreign(900)), &kafka);
        assert_eq!((r.commit(), r.naive_lost), (Some(700), 200));
        assert!(r.note.contains("ZooKeeper wins"), "{}", r.note);
        // No node: the Kafka commit is what Secor would resume from.
        let r = takeover(observed(None, foreign(650), Held::Nothing), &kafka);
        assert_eq!(r.step, Step::Commit { offset: 650, adopted: adopted(AdoptedFrom::Kafka, 650) });
        assert_eq!(r.naive_doubled, 550, "a new kbackup group would start at the log start");
        // In ZooKeeper mode Secor never read its Kafka commit: it is not a position.
        let r = takeover(observed(None, foreign(650), Held::Nothing), &ZK);
        assert_eq!(r.commit(), Some(100));
    }

    #[test]
    fn a_retention_gap_refuses_unless_accepted() {
        let r = takeover(observed(Some(40), foreign(1000), foreign(1000)), &ZK);
        assert_eq!((r.step.clone(), r.retention_gap), (Step::Refuse, 60));
        assert!(r.note.contains("RETENTION GAP") && r.note.contains("[40, 100)"), "{}", r.note);
        let r = takeover(observed(Some(40), foreign(1000), foreign(1000)), &TakeoverRules { accept_gap: true, ..ZK });
        assert_eq!(r.step, Step::Commit { offset: 100, adopted: adopted(AdoptedFrom::Zookeeper, 40) });
        assert_eq!((r.retention_gap, r.naive_lost), (60, 900));
        assert!(r.note.contains("accepted"), "{}", r.note);
    }

    #[test]
    fn a_position_past_the_log_end_is_refused() {
        let r = takeover(observed(Some(5000), Held::Nothing, Held::Nothing), &ZK);
        assert_eq!(r.step, Step::Refuse);
        assert!(r.note.contains("past the log end"), "{}", r.note);
        // The log end itself is fine: Secor uploaded everything.
        assert_eq!(takeover(observed(Some(1000), Held::Nothing, Held::Nothing), &ZK).commit(), Some(1000));
    }

    #[test]
    fn twice_is_harmless() {
        let done = Held::Kbackup { offset: 400, adopted: Some(adopted(AdoptedFrom::Zookeeper, 400)), unfinished: 0 };
        let r = takeover(observed(Some(400), foreign(1000), done.clone()), &ZK);
        assert_eq!(r.step, Step::Keep);
        assert!(r.note.contains("taken over before"), "{}", r.note);
        assert_eq!((r.naive_lost, r.naive_doubled), (0, 0));
        // After the writer committed, its record is the position, whatever Secor's says.
        let ran = Held::Kbackup { offset: 900, adopted: None, unfinished: 1 };
        let r = takeover(observed(Some(400), foreign(1000), ran), &ZK);
        assert_eq!(r.step, Step::Keep);
        assert!(r.note.contains("committed since"), "{}", r.note);
        // A Secor that ran again after the takeover (before kbackup did): adopt its new position.
        let r = takeover(observed(Some(600), foreign(1000), done), &ZK);
        assert_eq!(r.commit(), Some(600));
        assert!(r.note.contains("moved since the last takeover"), "{}", r.note);
    }

    /// The second switch: takeover, run, handback, Secor again (ZooKeeper 12500, and
    /// stock Secor commits nothing to Kafka, so the group stays at kbackup's 12000). Secor
    /// stored past kbackup's position: takeover adopts it, and the summary counts what the
    /// naive path (resuming the group) would store twice.
    #[test]
    fn secor_ahead_of_kbackups_commit_is_adopted() {
        let o = Observed {
            log_start: 0,
            log_end: 13000,
            ..observed(Some(12500), Held::Nothing, Held::Kbackup { offset: 12000, adopted: None, unfinished: 0 })
        };
        let r = takeover(o, &ZK);
        assert_eq!(r.step, Step::Commit { offset: 12500, adopted: adopted(AdoptedFrom::Zookeeper, 12500) });
        assert_eq!((r.naive_doubled, r.naive_lost), (500, 0));
        assert!(r.note.contains("ahead of kbackup's commit 12000") && r.note.contains("[12000, 12500)"), "{}", r.note);
        assert_eq!(totals(std::slice::from_ref(&r)).naive_doubled, 500);
        // Behind or equal: kbackup's commit stands.
        let r = takeover(observed(Some(12000), Held::Nothing, Held::Kbackup { offset: 12000, adopted: None, unfinished: 0 }), &ZK);
        assert_eq!((r.step, r.naive_doubled), (Step::Keep, 0));
    }

    /// Secor killed between an upload and its ZooKeeper write: its file starts at the node's
    /// offset. Taking over there would meet the file's name again; its files decide.
    #[test]
    fn a_file_at_the_zookeeper_offset_needs_storage() {
        let o = Observed {
            file_at_zookeeper: Some("p/t/dt=2020-02-01/1_0_00000000000000000400".into()),
            ..observed(Some(400), Held::Nothing, Held::Nothing)
        };
        let r = takeover(o.clone(), &ZK);
        assert_eq!(r.step, Step::Refuse);
        assert!(r.note.contains("1_0_00000000000000000400") && r.note.contains("--from-storage"), "{}", r.note);
        let r = takeover(Observed { stored: Some(450), ..o }, &TakeoverRules { from_storage: true, ..ZK });
        assert_eq!(r.commit(), Some(450));
    }

    /// A node Secor created and never wrote an offset to (a kill during its first upload):
    /// refused with what it is and the ways forward; Secor's files or a given offset decide.
    #[test]
    fn a_node_without_an_offset_needs_storage_or_a_given_offset() {
        let half = Observed { zookeeper_unreadable: Some("127.0.0.1".into()), ..observed(None, Held::Nothing, Held::Nothing) };
        let r = takeover(half.clone(), &ZK);
        assert_eq!(r.step, Step::Refuse);
        assert!(
            r.note.contains("Curator's default node data") && r.note.contains("--from-storage") && r.note.contains("--offset t/0=N"),
            "{}",
            r.note
        );
        let storage = TakeoverRules { from_storage: true, ..ZK };
        let r = takeover(Observed { stored: Some(950), ..half.clone() }, &storage);
        assert_eq!(r.step, Step::Commit { offset: 950, adopted: adopted(AdoptedFrom::Storage, 950) });
        assert_eq!(r.naive_doubled, 850, "the naive path starts at the log start 100");
        // No files at all: Secor uploaded nothing, it would start at auto.offset.reset.
        assert_eq!(takeover(half.clone(), &storage).step, Step::Commit { offset: 100, adopted: adopted(AdoptedFrom::Reset, 100) });
        let r = takeover(Observed { given: Some(700), ..half }, &ZK);
        assert_eq!(r.step, Step::Commit { offset: 700, adopted: adopted(AdoptedFrom::Given, 700) });
        // Files past the node: Secor uploaded and stopped before writing it.
        let r = takeover(Observed { stored: Some(900), ..observed(Some(800), Held::Nothing, Held::Nothing) }, &storage);
        assert_eq!(r.commit(), Some(900));
        assert!(r.note.contains("past its ZooKeeper offset 800"), "{}", r.note);
        assert_eq!(takeover(Observed { stored: Some(700), ..observed(Some(800), Held::Nothing, Held::Nothing) }, &storage).commit(), Some(800));
    }

    #[test]
    fn another_group_for_kbackup() {
        // kbackup's own group never committed: the naive switch would start at the log start.
        let r = takeover(observed(Some(400), foreign(1000), Held::Nothing), &ZK);
        assert_eq!((r.commit(), r.naive_lost, r.naive_doubled), (Some(400), 0, 300));
    }

    #[test]
    fn totals_add_up() {
        let rows = vec![
            takeover(observed(Some(400), foreign(1000), foreign(1000)), &ZK),
            takeover(observed(None, foreign(1000), foreign(1000)), &ZK),
            takeover(observed(Some(40), foreign(1000), foreign(1000)), &ZK),
        ];
        let t = totals(&rows);
        assert_eq!(
            t,
            Totals { partitions: 3, to_change: 2, changed: 0, refused: 1, retention_gap: 60, naive_lost: 600 + 900 + 900, naive_doubled: 0 }
        );
    }

    const SAME: HandbackRules = HandbackRules { same_group: true, storage: OffsetsStorage::Zookeeper, allow_rewind: false };
    const OTHER: HandbackRules = HandbackRules { same_group: false, storage: OffsetsStorage::Zookeeper, allow_rewind: false };

    fn kbackup_at(offset: i64, unfinished: usize) -> Held {
        Held::Kbackup { offset, adopted: None, unfinished }
    }

    #[test]
    fn handback_writes_kbackups_position() {
        let r = handback(observed(Some(400), foreign(1000), kbackup_at(1000, 0)), &SAME);
        assert_eq!(r.step, Handback::Write { offset: 1000 });
        assert!(r.note.contains("400 → 1000"), "{}", r.note);
        let r = handback(observed(None, Held::Nothing, kbackup_at(1000, 0)), &OTHER);
        assert_eq!(r.step, Handback::Write { offset: 1000 });
        assert!(r.note.contains("created"), "{}", r.note);
        // Twice: unchanged once ZooKeeper (and Secor's other group) hold it.
        assert_eq!(handback(observed(Some(1000), foreign(1000), kbackup_at(1000, 0)), &OTHER).step, Handback::Keep);
        assert_eq!(handback(observed(Some(1000), foreign(1000), kbackup_at(1000, 0)), &SAME).step, Handback::Keep);
        // Secor's other group still behind: write again.
        assert_eq!(handback(observed(Some(1000), foreign(500), kbackup_at(1000, 0)), &OTHER).step, Handback::Write { offset: 1000 });
    }

    /// kbackup's commit 130, Secor's ZooKeeper 150: handing back would make Secor upload
    /// [130, 150) again; refused, naming it, unless the user accepts the rewind.
    #[test]
    fn handback_refuses_to_move_secor_backwards() {
        let o = observed(Some(150), Held::Nothing, kbackup_at(130, 0));
        let r = handback(o.clone(), &OTHER);
        assert_eq!(r.step, Handback::Refuse);
        assert!(r.note.contains("REWIND") && r.note.contains("[130, 150)") && r.note.contains("--allow-rewind"), "{}", r.note);
        assert_eq!(handback(o, &HandbackRules { allow_rewind: true, ..OTHER }).step, Handback::Write { offset: 130 });
        // Secor keeping its offsets in its own Kafka group, without a node.
        let kafka = HandbackRules { storage: OffsetsStorage::Kafka, ..OTHER };
        assert_eq!(handback(observed(None, foreign(150), kbackup_at(130, 0)), &kafka).step, Handback::Refuse);
        assert_eq!(handback(observed(None, foreign(120), kbackup_at(130, 0)), &kafka).step, Handback::Write { offset: 130 });
        // The fork's auto-commit ahead while ZooKeeper (what it uploaded) is behind: no rewind.
        assert_eq!(handback(observed(Some(100), foreign(150), kbackup_at(130, 0)), &kafka).step, Handback::Write { offset: 130 });
    }

    #[test]
    fn handback_refuses_unfinished_uploads() {
        let r = handback(observed(Some(400), foreign(1000), kbackup_at(900, 2)), &SAME);
        assert_eq!(r.step, Handback::Refuse);
        assert!(r.note.contains("--until-caught-up"), "{}", r.note);
    }

    #[test]
    fn handback_leaves_what_kbackup_never_held() {
        assert_eq!(handback(observed(Some(400), foreign(1000), foreign(1000)), &SAME).step, Handback::Keep);
        assert_eq!(handback(observed(Some(400), Held::Nothing, Held::Nothing), &OTHER).step, Handback::Keep);
    }
}
