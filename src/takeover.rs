//! Moving between Secor and kbackup without losing or doubling an event.
//!
//! - [`takeover`] reads where Secor stopped *uploading* (its ZooKeeper offsets) and commits that
//!   position for kbackup's group, with a record saying where it came from. Secor's Kafka
//!   commits are not that position: Sunbird's fork auto-commits what it *consumed*.
//! - [`handback`] writes kbackup's committed position where Secor reads it (ZooKeeper, and
//!   Secor's Kafka group when it is another), for the way back.
//! - [`guard`] is `run`'s start-up check: with a `[secor]` section it refuses to resume from a
//!   position kbackup did not write.
//!
//! All three refuse while the groups have live members: positions move only between stopped
//! programs. The decisions themselves are pure ([`decide`]).

pub mod decide;

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{Config, SecorConfig};
use crate::consumer::LookupError;
use crate::group::{CommitEntry, GroupClient, Held, Member};
use crate::intent;
use crate::zookeeper::{Node, SecorZk, ZkError};
use decide::{Handback, HandbackRow, Observed, Row, Step, TakeoverRules, Totals};

/// Why a takeover, handback or `run`'s check could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("{who} is still running: group `{group}` has {} live member(s) ({}); stop it first (a member that crashed stays listed until its session times out)", members.len(), members.join(", "))]
    Running { who: &'static str, group: String, members: Vec<String> },
    #[error("kafka: {0}")]
    Kafka(#[from] LookupError),
    #[error("{0}")]
    Zookeeper(#[from] ZkError),
    #[error("topic(s) not found: {0}")]
    MissingTopics(String),
    #[error(
        "the config has no [secor] section (zookeeper.quorum in Secor's properties): nothing says where Secor kept its position; give --zookeeper"
    )]
    NoSecor,
    #[error("after the commit, group `{group}` holds {found} for {topic}/{partition}, not {expected}: another client wrote it meanwhile; nothing is certain, run the command again")]
    NotConfirmed { group: String, topic: String, partition: i32, expected: String, found: String },
    #[error("the groups' positions could not be read: {0}")]
    Blocking(String),
    #[error(
        "ZooKeeper {quorum} has no offset node of Secor's under {path} for any partition, yet {evidence}: this is not where Secor kept its position (a wrong kafka.zookeeper.path or group?). Found under ZooKeeper's root: {found}. Give the path and group Secor used (--zookeeper-path, --secor-group), or take Secor's position from its files (--from-storage) or set it (--offset TOPIC/PARTITION=N)"
    )]
    NoSecorNodes { quorum: String, path: String, evidence: String, found: String },
    #[error("{0}")]
    Storage(String),
    #[error("--offset {0}: no such partition in the config's topics")]
    UnknownPartition(String),
}

/// Which groups and which ZooKeeper a move is between.
#[derive(Debug, Clone)]
pub struct Between<'a> {
    pub config: &'a Config,
    pub secor: &'a SecorConfig,
}

impl Between<'_> {
    fn kbackup_group(&self) -> &str {
        &self.config.kafka.group_id
    }

    fn secor_group(&self) -> &str {
        self.secor.group(&self.config.kafka)
    }

    fn same_group(&self) -> bool {
        self.kbackup_group() == self.secor_group()
    }
}

/// What a takeover or handback found and did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: &'static str,
    pub kbackup_group: String,
    pub secor_group: String,
    /// ZooKeeper and the node under which Secor's offsets live.
    pub zookeeper: String,
    pub offsets_path: String,
    pub dry_run: bool,
    /// True once the changes are made (never for a dry run or a refusal).
    pub applied: bool,
    pub partitions: Vec<ReportRow>,
    pub totals: Totals,
    /// What else was found that the user should know (nodes of partitions the topic lacks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One partition as the table and `--json` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportRow {
    pub topic: String,
    pub partition: i32,
    pub zookeeper: Option<i64>,
    pub secor_kafka: Position,
    pub kbackup_kafka: Position,
    pub log_start: i64,
    pub log_end: i64,
    /// `commit`, `write` (handback), `keep` or `refuse`.
    pub action: &'static str,
    /// The offset the command sets (kbackup's group for a takeover, Secor's ZooKeeper node for a handback).
    pub sets: Option<i64>,
    pub retention_gap: u64,
    pub naive_lost: u64,
    pub naive_doubled: u64,
    pub note: String,
}

/// A group's commit of one partition, as shown.
#[derive(Debug, Clone, Serialize)]
pub struct Position {
    pub offset: Option<i64>,
    /// Who wrote it: `kbackup` (its writer), `takeover`, `other` (another client), or none.
    pub by: Option<&'static str>,
}

impl From<&Held> for Position {
    fn from(h: &Held) -> Position {
        match h {
            Held::Nothing => Position { offset: None, by: None },
            Held::Kbackup { offset, adopted, .. } => {
                Position { offset: Some(*offset), by: Some(if adopted.is_some() { "takeover" } else { "kbackup" }) }
            }
            Held::Foreign { offset } => Position { offset: Some(*offset), by: Some("other") },
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.offset, self.by) {
            (Some(o), Some("kbackup")) | (Some(o), None) => write!(f, "{o}"),
            (Some(o), Some(by)) => write!(f, "{o} ({by})"),
            (None, _) => f.write_str("-"),
        }
    }
}

fn report_row(o: &Observed, action: &'static str, sets: Option<i64>, note: &str) -> ReportRow {
    ReportRow {
        topic: o.topic.clone(),
        partition: o.partition,
        zookeeper: o.zookeeper,
        secor_kafka: (&o.secor_kafka).into(),
        kbackup_kafka: (&o.kbackup).into(),
        log_start: o.log_start,
        log_end: o.log_end,
        action,
        sets,
        retention_gap: 0,
        naive_lost: 0,
        naive_doubled: 0,
        note: note.to_string(),
    }
}

impl From<&Row> for ReportRow {
    fn from(r: &Row) -> ReportRow {
        let action = match r.step {
            Step::Commit { .. } => "commit",
            Step::Keep => "keep",
            Step::Refuse => "refuse",
        };
        ReportRow {
            retention_gap: r.retention_gap,
            naive_lost: r.naive_lost,
            naive_doubled: r.naive_doubled,
            ..report_row(&r.observed, action, r.commit(), &r.note)
        }
    }
}

impl From<&HandbackRow> for ReportRow {
    fn from(r: &HandbackRow) -> ReportRow {
        let (action, sets) = match r.step {
            Handback::Write { offset } => ("write", Some(offset)),
            Handback::Keep => ("keep", None),
            Handback::Refuse => ("refuse", None),
        };
        report_row(&r.observed, action, sets, &r.note)
    }
}

impl Report {
    /// True when some partition refused: nothing was changed, and the command fails.
    pub fn refused(&self) -> bool {
        self.totals.refused > 0
    }

    /// The table, one row per partition, and a summary line.
    pub fn text(&self) -> String {
        let takeover = self.command == "takeover";
        let mut head = vec!["TOPIC", "PARTITION", "ZOOKEEPER", "SECOR-KAFKA", "KBACKUP-KAFKA", "LOG-START", "LOG-END", "ACTION"];
        if takeover {
            head.extend(["NAIVE-LOST", "NAIVE-DOUBLED"]);
        }
        head.push("NOTE");
        let dash = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
        let rows: Vec<Vec<String>> = self
            .partitions
            .iter()
            .map(|r| {
                let action = match r.sets {
                    Some(o) => format!("{} {o}", r.action),
                    None => r.action.to_string(),
                };
                let mut cells = vec![
                    r.topic.clone(),
                    r.partition.to_string(),
                    dash(r.zookeeper),
                    r.secor_kafka.to_string(),
                    r.kbackup_kafka.to_string(),
                    r.log_start.to_string(),
                    r.log_end.to_string(),
                    action,
                ];
                if takeover {
                    cells.extend([r.naive_lost.to_string(), r.naive_doubled.to_string()]);
                }
                cells.push(r.note.clone());
                cells
            })
            .collect();
        let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.len());
            }
        }
        let mut out = String::new();
        let state = match (self.dry_run, self.applied, self.refused()) {
            (true, _, _) => "dry run: nothing changed",
            (_, _, true) => "refused: nothing changed",
            (_, true, _) => "applied",
            _ => "nothing to change",
        };
        let _ = writeln!(
            out,
            "{} between Secor group `{}` (ZooKeeper {}, {}) and kbackup group `{}` [{state}]",
            self.command, self.secor_group, self.zookeeper, self.offsets_path, self.kbackup_group
        );
        let mut line = |cells: &[String]| {
            let last = cells.len() - 1;
            let text: Vec<String> =
                cells.iter().enumerate().map(|(i, c)| if i == last { c.clone() } else { format!("{c:<w$}", w = widths[i]) }).collect();
            let _ = writeln!(out, "{}", text.join("  ").trim_end());
        };
        line(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>());
        for row in &rows {
            line(row);
        }
        let t = &self.totals;
        let _ = write!(out, "{} partition(s): {} to change, {} refused", t.partitions, t.to_change, t.refused);
        if takeover {
            let _ = write!(
                out,
                "; the naive switch (resuming kbackup's group as it stands) would have lost {} event(s) and stored {} twice",
                t.naive_lost, t.naive_doubled
            );
            if t.retention_gap > 0 {
                let _ = write!(out, "; retention gap {} event(s)", t.retention_gap);
            }
        }
        out.push('\n');
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
}

/// Options of `takeover`.
#[derive(Debug, Clone, Default)]
pub struct TakeoverOptions {
    pub dry_run: bool,
    pub accept_retention_gap: bool,
    /// Read where Secor's files end (stock Secor's layout names carry first offsets).
    pub from_storage: bool,
    /// Offsets the user gives, by (topic, partition).
    pub offsets: std::collections::BTreeMap<(String, i32), i64>,
    /// How long live members may take to leave before the command refuses.
    pub wait_for_stop: std::time::Duration,
}

/// Options of `handback`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HandbackOptions {
    pub dry_run: bool,
    /// Move Secor's position backwards although it stored past kbackup's.
    pub allow_rewind: bool,
    /// How long live members may take to leave before the command refuses.
    pub wait_for_stop: std::time::Duration,
}

/// Partitions of every configured topic, in config order.
fn partitions_of(client: &GroupClient, config: &Config) -> Result<Vec<(String, i32)>, TakeoverError> {
    let names = config.topic_names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let counts = client.partition_counts(&names)?;
    let missing: Vec<String> = counts.iter().filter(|(_, n)| n.is_none()).map(|(t, _)| t.clone()).collect();
    if !missing.is_empty() {
        return Err(TakeoverError::MissingTopics(missing.join(", ")));
    }
    Ok(counts.into_iter().flat_map(|(t, n)| (0..n.unwrap_or(0) as i32).map(move |p| (t.clone(), p))).collect())
}

/// What Kafka says: members of both groups, and per partition its watermarks and both commits.
struct KafkaView {
    secor_members: Vec<Member>,
    kbackup_members: Vec<Member>,
    /// (topic, partition, log start, log end, Secor's group's commit, kbackup's group's commit).
    partitions: Vec<(String, i32, i64, i64, Held, Held)>,
}

fn read_kafka(config: &Config, secor_group: &str) -> Result<KafkaView, TakeoverError> {
    let kbackup = GroupClient::new(&config.kafka, &config.kafka.group_id)?;
    let parts = partitions_of(&kbackup, config)?;
    let kbackup_held = kbackup.committed(&parts)?;
    let kbackup_members = kbackup.members()?;
    let (secor_held, secor_members) = if secor_group == config.kafka.group_id {
        (kbackup_held.clone(), kbackup_members.clone())
    } else {
        let secor = GroupClient::new(&config.kafka, secor_group)?;
        (secor.committed(&parts)?, secor.members()?)
    };
    let mut partitions = Vec::with_capacity(parts.len());
    for (((t, p), s), k) in parts.into_iter().zip(secor_held).zip(kbackup_held) {
        let (low, high) = kbackup.watermarks(&t, p)?;
        partitions.push((t, p, low, high, s, k));
    }
    Ok(KafkaView { secor_members, kbackup_members, partitions })
}

/// The members of Secor's group and of kbackup's (one group: the same list twice).
fn read_members(config: &Config, secor_group: &str) -> Result<(Vec<Member>, Vec<Member>), TakeoverError> {
    let kbackup = GroupClient::new(&config.kafka, &config.kafka.group_id)?.members()?;
    let secor = if secor_group == config.kafka.group_id { kbackup.clone() } else { GroupClient::new(&config.kafka, secor_group)?.members()? };
    Ok((secor, kbackup))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, TakeoverError> + Send + 'static) -> Result<T, TakeoverError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| TakeoverError::Blocking(e.to_string()))?
}

/// Everything both directions read, after checking that nobody runs. A member may take a
/// moment to leave after its program stopped (`run --until-caught-up && handback`), and one
/// that crashed stays until its session times out: the check is repeated for up to `wait`.
async fn observe(between: &Between<'_>, wait: std::time::Duration) -> Result<(SecorZk, Vec<Observed>), TakeoverError> {
    let zk = SecorZk::connect(between.secor, between.secor_group()).await?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut said = false;
    let running = |secor: &[Member], kbackup: &[Member], registered: &[String]| {
        refuse_while_running(between.kbackup_group(), between.secor_group(), secor, kbackup, registered)
    };
    let (config, secor_group) = (between.config.clone(), between.secor_group().to_string());
    let read_view = || {
        let (config, secor_group) = (config.clone(), secor_group.clone());
        blocking(move || read_kafka(&config, &secor_group))
    };
    let read_members = || {
        let (config, secor_group) = (config.clone(), secor_group.clone());
        blocking(move || read_members(&config, &secor_group))
    };
    let mut view = read_view().await?;
    while let Err(e) = running(&view.secor_members, &view.kbackup_members, &zk.registered_consumers().await?) {
        if tokio::time::Instant::now() >= deadline {
            return Err(e);
        }
        if !said {
            tracing::info!("{e}; waiting up to {} s for it to leave (--wait-for-stop)", wait.as_secs());
            said = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        // While members remain only they are read; the commits and watermarks again once they
        // have left (and the loop checks that view once more).
        let (secor, kbackup) = read_members().await?;
        if running(&secor, &kbackup, &zk.registered_consumers().await?).is_ok() {
            view = read_view().await?;
        } else {
            (view.secor_members, view.kbackup_members) = (secor, kbackup);
        }
    }
    let mut observed = Vec::with_capacity(view.partitions.len());
    for (topic, partition, log_start, log_end, secor_kafka, kbackup) in view.partitions {
        let (zookeeper, zookeeper_unreadable) = match zk.node(&topic, partition).await? {
            Node::Absent => (None, None),
            Node::Offset(o) => (Some(o), None),
            Node::Unreadable(data) => (None, Some(data)),
        };
        observed.push(Observed {
            topic,
            partition,
            log_start,
            log_end,
            zookeeper,
            zookeeper_unreadable,
            stored: None,
            given: None,
            file_at_zookeeper: None,
            secor_kafka,
            kbackup,
        });
    }
    Ok((zk, observed))
}

/// Refuses while anything consumes as either group: positions move only between stopped programs.
fn refuse_while_running(
    kbackup_group: &str,
    secor_group: &str,
    secor: &[Member],
    kbackup: &[Member],
    zk_registered: &[String],
) -> Result<(), TakeoverError> {
    let names = |m: &[Member]| m.iter().map(Member::to_string).collect::<Vec<_>>();
    let same = kbackup_group == secor_group;
    if !zk_registered.is_empty() {
        return Err(TakeoverError::Running {
            who: "Secor (its ZooKeeper-registered consumer)",
            group: secor_group.into(),
            members: zk_registered.to_vec(),
        });
    }
    if !same && !secor.is_empty() {
        return Err(TakeoverError::Running { who: "Secor", group: secor_group.into(), members: names(secor) });
    }
    if !kbackup.is_empty() {
        let who = if same { "Secor or kbackup" } else { "kbackup" };
        return Err(TakeoverError::Running { who, group: kbackup_group.into(), members: names(kbackup) });
    }
    Ok(())
}

fn report(between: &Between<'_>, zk: &SecorZk, command: &'static str, dry_run: bool, partitions: Vec<ReportRow>, mut totals: Totals) -> Report {
    // What this command changes: the plan, unless it only shows it or refuses it whole.
    totals.changed = if dry_run || totals.refused > 0 { 0 } else { totals.to_change };
    Report {
        command,
        kbackup_group: between.kbackup_group().into(),
        secor_group: between.secor_group().into(),
        zookeeper: zk.quorum().to_string(),
        offsets_path: zk.layout.offset("<topic>", 0).replace("/<topic>/0", ""),
        dry_run,
        applied: false,
        partitions,
        totals,
        warnings: Vec::new(),
    }
}

/// Nodes under Secor's offsets for partitions the topics do not have: the topic was
/// recreated smaller, or the path is another Secor's.
async fn stray_nodes(zk: &SecorZk, observed: &[Observed]) -> Result<Vec<String>, TakeoverError> {
    let mut out = Vec::new();
    let mut topics: Vec<&str> = observed.iter().map(|o| o.topic.as_str()).collect();
    topics.dedup();
    for t in topics {
        let count = observed.iter().filter(|o| o.topic == t).count() as i64;
        let path = zk.layout.topic(t);
        let extra: Vec<String> = zk.children(&path).await?.into_iter().filter(|c| c.parse::<i64>().map_or(true, |p| p < 0 || p >= count)).collect();
        if !extra.is_empty() {
            out.push(format!(
                "{path} holds nodes for partition(s) {} that topic {t} (with {count} partitions) does not have: the topic was recreated with fewer partitions, or this is another Secor's path; they are left alone",
                extra.join(", ")
            ));
        }
    }
    Ok(out)
}

/// Per (topic, partition) of the config's topics, where the backup files in storage end
/// (stock Secor's layout only: its names carry first offsets). Within a partition's folder
/// files follow one another, so only each folder's last file can end last. A SequenceFile says
/// its last offset; a text file does not (a date's folder holds every other offset), so its
/// lines are found in Kafka from its first offset on, in order: its end is after the last one.
async fn stored_positions(config: &Config, observed: &[Observed]) -> Result<std::collections::BTreeMap<(String, i32), i64>, TakeoverError> {
    use std::collections::BTreeMap;
    let fail = TakeoverError::Storage;
    let storage = crate::storage::Storage::open(&config.storage).map_err(|e| fail(e.to_string()))?;
    let everything = crate::listing::Selection::new(chrono::NaiveDate::MIN, chrono::NaiveDate::MAX).map_err(|e| fail(e.to_string()))?;
    let mut out = BTreeMap::new();
    for t in &config.topics {
        let layout = t.layout().map_err(|e| fail(format!("topic {}: {e}", t.name)))?;
        if layout.secor().is_none() {
            return Err(fail(format!(
                "--from-storage: topic {}'s file names (layout = \"pattern\") carry no offsets; only stock Secor's layout tells where its files end",
                t.name
            )));
        }
        let listed = crate::listing::list(&storage, &layout, &everything)
            .await
            .map_err(|e| fail(format!("listing {} in {}: {e}", layout.dirs().join(", "), storage.describe)))?;
        // (partition, folder) → (first offset, key) of the folder's last file.
        let mut last: BTreeMap<(i32, String), (i64, String)> = BTreeMap::new();
        for f in &listed.files {
            let (Some(p), Some(first)) = (f.kafka_partition, f.name.first_offset) else { continue };
            let folder = f.key.rsplit_once('/').map_or("", |(d, _)| d).to_string();
            let e = last.entry((p, folder)).or_insert((first, f.key.clone()));
            if first > e.0 {
                *e = (first, f.key.clone());
            }
        }
        for ((p, _), (first, key)) in last {
            let raw = storage.read(&key).await.map_err(|e| fail(format!("reading {key}: {e}")))?;
            let end = if crate::seqfile::is_sequence_file(&raw) {
                let mut end = first;
                for r in crate::seqfile::Reader::new(&raw).map_err(|e| fail(format!("{key}: {e}")))? {
                    let r = r.map_err(|e| fail(format!("{key}: {e}")))?;
                    end = end.max(r.offset.map_or(end, |o| o + 1));
                }
                end
            } else {
                let lines: Vec<u64> = crate::seal::lines(&key, &raw)
                    .map(|l| l.map(|l| crate::audit::fingerprint(&l)))
                    .collect::<Result<_, _>>()
                    .map_err(|e| fail(format!("{key}: {e}")))?;
                let o = observed
                    .iter()
                    .find(|o| o.topic == t.name && o.partition == p)
                    .ok_or_else(|| fail(format!("{key}: partition {p} of {} is not in Kafka", t.name)))?;
                let (kafka, topic, log_end) = (config.kafka.clone(), t.name.clone(), o.log_end);
                let key2 = key.clone();
                blocking(move || {
                    match_in_kafka(&kafka, &topic, p, first, log_end, &lines).map_err(|e| TakeoverError::Storage(format!("{key2}: {e}")))
                })
                .await?
            };
            let e = out.entry((t.name.clone(), p)).or_insert(end);
            *e = (*e).max(end);
        }
    }
    Ok(out)
}

/// Why where a stored file ends could not be told from Kafka.
#[derive(Debug, thiserror::Error)]
enum Unmatched {
    #[error(transparent)]
    Kafka(#[from] crate::consumer::ClientError),
    #[error("{found} of its {lines} lines are in {topic}/{partition} from offset {first} on (Kafka deleted them, or it is not this partition's file): where it ends is unknown; give --offset {topic}/{partition}=N")]
    Partly { found: usize, lines: usize, topic: String, partition: i32, first: i64 },
}

/// The places ZooKeeper's survey found, those holding Secor's `group` first (stable otherwise):
/// when only the chroot is wrong they are where Secor kept its position, and the message lists
/// twelve places at most, in ZooKeeper's order, which left them out on a busy ensemble.
fn holding_group_first(mut found: Vec<String>, group: &str) -> Vec<String> {
    let holds = |entry: &String| entry.split_once(": ").is_some_and(|(_, groups)| groups.split(", ").any(|g| g == group));
    found.sort_by_key(|entry| !holds(entry));
    found
}

/// Where a text file that starts at `first` ends: its lines (fingerprints), found in order in
/// the partition from `first` on; the offset after the last one.
fn match_in_kafka(kafka: &crate::config::KafkaConfig, topic: &str, p: i32, first: i64, log_end: i64, lines: &[u64]) -> Result<i64, Unmatched> {
    use rdkafka::message::Message;
    if lines.is_empty() {
        return Ok(first);
    }
    let mut c = crate::consumer::client_config(kafka, crate::consumer::Role::Reader, &[]);
    c.set("group.id", "kbackup-takeover-reader").set("enable.auto.commit", "false").set("enable.partition.eof", "true");
    let consumer =
        crate::consumer::Closing::<crate::consumer::Diagnosing>::new(crate::consumer::create_client(&c, crate::consumer::Diagnosing::default())?);
    let (mut next, mut end) = (0usize, None);
    crate::consumer::read_range(&consumer, topic, p, first, log_end, |m| {
        if crate::audit::fingerprint(m.payload().unwrap_or_default()) == lines[next] {
            next += 1;
            if next == lines.len() {
                end = Some(m.offset() + 1);
                return false;
            }
        }
        true
    })?;
    end.ok_or_else(|| Unmatched::Partly { found: next, lines: lines.len(), topic: topic.to_string(), partition: p, first })
}

/// For stock Secor's layout: whether a file starts at a partition's ZooKeeper offset — the
/// name Secor gives the file of the message there (its folder, its offset). One message read
/// and one request per partition; finds the usual crash between an upload and the node's write.
async fn probe_files_at_zookeeper(config: &Config, observed: &mut [Observed]) -> Result<(), TakeoverError> {
    use object_store::ObjectStoreExt;
    let fail = TakeoverError::Storage;
    let mut storage = None;
    for (index, t) in config.topics.iter().enumerate() {
        let layout = t.layout().map_err(|e| fail(format!("topic {}: {e}", t.name)))?;
        let Some(secor) = layout.secor().cloned() else { continue };
        let router = crate::routing::Router::new(t, index).map_err(|e| fail(e.to_string()))?;
        for o in observed.iter_mut().filter(|o| o.topic == t.name) {
            let Some(z) = o.zookeeper.filter(|z| *z >= o.log_start && *z < o.log_end) else { continue };
            let (kafka, topic, p) = (config.kafka.clone(), t.name.clone(), o.partition);
            let message = blocking(move || read_one(&kafka, &topic, p, z).map_err(|e| TakeoverError::Storage(e.to_string()))).await?;
            let Some((payload, record_ms)) = message else { continue };
            let route = router.route(Some(&payload), record_ms, z);
            let ctx = crate::naming::NameContext {
                date: &route.date,
                kafka_partition: o.partition,
                current_ms: 0,
                topic: &t.name,
                generation: secor.generation,
                first_offset: z,
                random: 0,
            };
            let key = layout.key(route.prefix.as_deref(), route.to_error_path, &ctx);
            let st = match &storage {
                Some(s) => s,
                None => storage.insert(crate::storage::Storage::open(&config.storage).map_err(|e| fail(e.to_string()))?),
            };
            match st.store.head(&object_store::path::Path::from(key.as_str())).await {
                Ok(_) => o.file_at_zookeeper = Some(key),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(fail(format!("looking for {key} in {}: {e}", st.describe))),
            }
        }
    }
    Ok(())
}

/// A message read back: its value and record time.
type Stored = (Vec<u8>, Option<i64>);

/// The message at `offset` (value, record time), if the partition still has it.
fn read_one(kafka: &crate::config::KafkaConfig, topic: &str, p: i32, offset: i64) -> Result<Option<Stored>, crate::consumer::ClientError> {
    use rdkafka::message::Message;
    let mut c = crate::consumer::client_config(kafka, crate::consumer::Role::Reader, &[]);
    c.set("group.id", "kbackup-takeover-reader").set("enable.auto.commit", "false").set("enable.partition.eof", "true");
    let consumer =
        crate::consumer::Closing::<crate::consumer::Diagnosing>::new(crate::consumer::create_client(&c, crate::consumer::Diagnosing::default())?);
    let mut found = None;
    crate::consumer::read_range(&consumer, topic, p, offset, offset + 1, |m| {
        if m.offset() == offset {
            found = Some((m.payload().unwrap_or_default().to_vec(), m.timestamp().to_millis()));
        }
        false
    })?;
    Ok(found)
}

/// True if any of the config's topics has a backup file in storage (cheap: the first listing
/// page of each directory).
async fn files_exist(config: &Config) -> Result<Option<String>, TakeoverError> {
    use futures::TryStreamExt;
    let storage = crate::storage::Storage::open(&config.storage).map_err(|e| TakeoverError::Storage(e.to_string()))?;
    for t in &config.topics {
        let layout = t.layout().map_err(|e| TakeoverError::Storage(format!("topic {}: {e}", t.name)))?;
        for dir in layout.data_dirs() {
            let mut stream = storage.store.list(Some(&object_store::path::Path::from(dir.as_str())));
            while let Some(m) = stream.try_next().await.map_err(|e| TakeoverError::Storage(format!("listing {dir} in {}: {e}", storage.describe)))? {
                let key = m.location.to_string();
                if layout.parse(&key).is_some() {
                    return Ok(Some(format!("backup files of {} are in {} ({key})", t.name, storage.describe)));
                }
            }
        }
    }
    Ok(None)
}

/// `kbackup takeover`: commits, for kbackup's group, the position Secor had uploaded to.
/// Partitions kbackup already holds are left alone, so running it again changes nothing.
/// Returns the report; `report.refused()` means nothing was changed.
pub async fn takeover(between: &Between<'_>, opts: TakeoverOptions) -> Result<Report, TakeoverError> {
    let rules = TakeoverRules {
        storage: between.secor.offsets_storage,
        reset_to_end: crate::consumer::resets_to_end(&between.config.kafka),
        accept_gap: opts.accept_retention_gap,
        from_storage: opts.from_storage,
    };
    let (zk, mut observed) = observe(between, opts.wait_for_stop).await?;
    for (t, p) in opts.offsets.keys() {
        if !observed.iter().any(|o| o.topic == *t && o.partition == *p) {
            return Err(TakeoverError::UnknownPartition(format!("{t}/{p}")));
        }
    }
    let stored = if opts.from_storage { stored_positions(between.config, &observed).await? } else { Default::default() };
    for o in &mut observed {
        let key = (o.topic.clone(), o.partition);
        o.stored = stored.get(&key).copied();
        o.given = opts.offsets.get(&key).copied();
    }
    // No node at all while Secor's traces are elsewhere: this is not Secor's ZooKeeper path or
    // group, and "no node" must not read as "Secor uploaded nothing".
    let no_nodes = observed.iter().all(|o| o.zookeeper.is_none() && o.zookeeper_unreadable.is_none());
    let kbackup_held = observed.iter().any(|o| matches!(o.kbackup, Held::Kbackup { .. }));
    let positioned = opts.from_storage || observed.iter().all(|o| o.given.is_some());
    if no_nodes && !kbackup_held && !positioned {
        let kafka_commits = observed.iter().filter(|o| o.secor_kafka.offset().is_some()).count();
        let evidence = if kafka_commits > 0 {
            Some(format!("Secor's group `{}` has Kafka commits for {kafka_commits} partition(s)", between.secor_group()))
        } else {
            files_exist(between.config).await?
        };
        if let Some(evidence) = evidence {
            let found = holding_group_first(zk.survey().await?, between.secor_group());
            return Err(TakeoverError::NoSecorNodes {
                quorum: zk.quorum().to_string(),
                path: zk.layout.offset("<topic>", 0).replace("/<topic>/0", ""),
                evidence,
                found: match found.len() {
                    0 => "nothing".into(),
                    n if n > 12 => format!("{} (and {} more)", found[..12].join("; "), n - 12),
                    _ => found.join("; "),
                },
            });
        }
    }
    if !opts.from_storage {
        probe_files_at_zookeeper(between.config, &mut observed).await?;
    }
    let warnings = stray_nodes(&zk, &observed).await?;
    let rows: Vec<Row> = observed.into_iter().map(|o| decide::takeover(o, &rules)).collect();
    let totals = decide::totals(&rows);
    let mut rep = report(between, &zk, "takeover", opts.dry_run, rows.iter().map(ReportRow::from).collect(), totals);
    rep.warnings = warnings;
    let entries: Vec<CommitEntry> = rows
        .iter()
        .filter_map(|r| match &r.step {
            Step::Commit { offset, adopted } => Some(CommitEntry {
                topic: r.observed.topic.clone(),
                partition: r.observed.partition,
                offset: *offset,
                metadata: intent::adopted_record(adopted),
            }),
            _ => None,
        })
        .collect();
    if opts.dry_run || rep.refused() || entries.is_empty() {
        return Ok(rep);
    }
    let (config, secor_group) = (between.config.clone(), between.secor_group().to_string());
    let same = between.same_group();
    blocking(move || {
        // Once more right before writing: a Secor or kbackup started meanwhile would be overwritten.
        let kbackup = GroupClient::new(&config.kafka, &config.kafka.group_id)?;
        let secor_members = if same { Vec::new() } else { GroupClient::new(&config.kafka, &secor_group)?.members()? };
        let kbackup_members = kbackup.members()?;
        refuse_while_running(&config.kafka.group_id, &secor_group, &secor_members, &kbackup_members, &[])?;
        kbackup.commit(&entries)?;
        // Read back: the broker took it, and took it as ours.
        let parts: Vec<(String, i32)> = entries.iter().map(|e| (e.topic.clone(), e.partition)).collect();
        for (e, held) in entries.iter().zip(kbackup.committed(&parts)?) {
            let ok = matches!(&held, Held::Kbackup { offset, adopted: Some(_), .. } if *offset == e.offset);
            if !ok {
                return Err(TakeoverError::NotConfirmed {
                    group: config.kafka.group_id.clone(),
                    topic: e.topic.clone(),
                    partition: e.partition,
                    expected: format!("a takeover record at {}", e.offset),
                    found: Position::from(&held).to_string(),
                });
            }
        }
        Ok(())
    })
    .await?;
    rep.applied = true;
    Ok(rep)
}

/// `kbackup handback`: writes kbackup's committed position where Secor reads it.
pub async fn handback(between: &Between<'_>, opts: HandbackOptions) -> Result<Report, TakeoverError> {
    let dry_run = opts.dry_run;
    let (zk, observed) = observe(between, opts.wait_for_stop).await?;
    let same = between.same_group();
    let rules = decide::HandbackRules { same_group: same, storage: between.secor.offsets_storage, allow_rewind: opts.allow_rewind };
    let warnings = stray_nodes(&zk, &observed).await?;
    let rows: Vec<HandbackRow> = observed.into_iter().map(|o| decide::handback(o, &rules)).collect();
    let totals = Totals {
        partitions: rows.len(),
        to_change: rows.iter().filter(|r| matches!(r.step, Handback::Write { .. })).count(),
        refused: rows.iter().filter(|r| r.step == Handback::Refuse).count(),
        ..Default::default()
    };
    let mut rep = report(between, &zk, "handback", dry_run, rows.iter().map(ReportRow::from).collect(), totals);
    rep.warnings = warnings;
    let writes: Vec<(String, i32, i64)> = rows
        .iter()
        .filter_map(|r| match r.step {
            Handback::Write { offset } => Some((r.observed.topic.clone(), r.observed.partition, offset)),
            _ => None,
        })
        .collect();
    if dry_run || rep.refused() || writes.is_empty() {
        return Ok(rep);
    }
    // Secor's Kafka group first (when it is another): Secor in kafka-offsets mode reads it.
    if !same {
        let (config, secor_group) = (between.config.clone(), between.secor_group().to_string());
        let entries: Vec<CommitEntry> =
            writes.iter().map(|(t, p, o)| CommitEntry { topic: t.clone(), partition: *p, offset: *o, metadata: String::new() }).collect();
        blocking(move || {
            let secor = GroupClient::new(&config.kafka, &secor_group)?;
            let members = secor.members()?;
            if !members.is_empty() {
                return Err(TakeoverError::Running { who: "Secor", group: secor_group, members: members.iter().map(Member::to_string).collect() });
            }
            Ok(secor.commit(&entries)?)
        })
        .await?;
    }
    for (t, p, o) in &writes {
        zk.set_offset(t, *p, *o).await?;
        let back = zk.offset(t, *p).await?;
        if back != Some(*o) {
            return Err(TakeoverError::NotConfirmed {
                group: between.secor_group().into(),
                topic: t.clone(),
                partition: *p,
                expected: format!("ZooKeeper offset {o}"),
                found: back.map_or_else(|| "no node".into(), |b| b.to_string()),
            });
        }
    }
    rep.applied = true;
    Ok(rep)
}

/// Why `run` will not start with a `[secor]` section.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// Some partitions hold a position kbackup did not write (the naive switch): exit 2.
    #[error(
        "kbackup cannot resume group `{group}` where it stands: {}. Secor's Kafka commits follow what it consumed, not what it uploaded, so resuming from them skips events it never uploaded; starting afresh, or behind where Secor uploaded to, stores its uploads again. Run `kbackup takeover` with the same config first (docs/runbook.md, \"Moving from Secor\")",
        partitions.join(", ")
    )]
    NaiveSwitch { group: String, partitions: Vec<String> },
    /// What the check needs could not be read: exit 1.
    #[error("cannot check where Secor stopped before consuming ({0}); kbackup does not resume a Secor group it has not checked")]
    Unreadable(TakeoverError),
}

/// `run`'s start-up check with a `[secor]` section: every partition must hold a commit kbackup
/// wrote that Secor's ZooKeeper offset is not ahead of, or hold nothing while Secor's
/// ZooKeeper has no node for it either (then it starts where Secor would have).
pub async fn guard(config: &Config) -> Result<(), GuardError> {
    let Some(secor) = &config.secor else { return Ok(()) };
    let cfg = config.clone();
    let held = blocking(move || {
        let client = GroupClient::new(&cfg.kafka, &cfg.kafka.group_id)?;
        let parts = partitions_of(&client, &cfg)?;
        let held = client.committed(&parts)?;
        Ok(parts.into_iter().zip(held).collect::<Vec<_>>())
    })
    .await
    .map_err(GuardError::Unreadable)?;
    let mut bad = Vec::new();
    let all_kbackup = held.iter().all(|(_, h)| matches!(h, Held::Kbackup { .. }));
    let zk = match SecorZk::connect(secor, secor.group(&config.kafka)).await {
        Ok(zk) => zk,
        // kbackup's own commits everywhere: a ZooKeeper that is gone (Secor retired) or down
        // must not stop the backup; what it could have said is a double, never a loss.
        Err(e) if all_kbackup => {
            tracing::warn!(error = %e, "cannot read Secor's ZooKeeper: resuming from kbackup's own commits; if a Secor ran since the last handback, what it uploaded is stored again (remove [secor] once the switch is final)");
            return Ok(());
        }
        Err(e) => return Err(GuardError::Unreadable(e.into())),
    };
    for ((t, p), h) in held {
        let node = zk.node(&t, p).await.map_err(|e| GuardError::Unreadable(e.into()))?;
        match (h, node) {
            // Secor ran after kbackup (after a handback, or without one): it stored past
            // kbackup's position, and resuming there stores that again.
            (Held::Kbackup { offset, .. }, Node::Offset(z)) if z > offset => {
                bad.push(format!("{t}/{p} (Secor's ZooKeeper offset {z} is ahead of kbackup's commit {offset}: Secor stored [{offset}, {z}) since)"))
            }
            (Held::Kbackup { .. }, _) => {}
            (Held::Foreign { offset }, _) => bad.push(format!("{t}/{p} (offset {offset} committed by another client: Secor's auto-commit?)")),
            (Held::Nothing, Node::Offset(z)) => bad.push(format!("{t}/{p} (no commit, but Secor's ZooKeeper offset is {z})")),
            (Held::Nothing, Node::Unreadable(data)) => bad.push(format!("{t}/{p} (Secor's ZooKeeper node holds {data:?}, not an offset)")),
            (Held::Nothing, Node::Absent) => {}
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(GuardError::NaiveSwitch { group: config.kafka.group_id.clone(), partitions: bad })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn places_holding_the_group_come_first() {
        let found: Vec<String> = ["/a/consumers: x, y", "/b", "/c/consumers: secor", "/consumers: z, secor"].iter().map(|s| s.to_string()).collect();
        assert_eq!(super::holding_group_first(found, "secor"), ["/c/consumers: secor", "/consumers: z, secor", "/a/consumers: x, y", "/b"]);
    }
}
