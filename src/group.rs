//! A consumer group seen from outside: its live members, and its committed offsets read back
//! with their metadata — which tells a commit kbackup's writer made (an upload-intent record)
//! from one another client made (Secor's auto-commit, `kafka-consumer-groups`). Also the commits
//! a tool makes for a group it is not a member of (`takeover`, `handback`). Blocking calls:
//! run them on a blocking thread.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::consumer::{client_config, with_reason, Diagnosing, LookupError, Role};
use crate::intent::{self, Adopted};

/// How long one look-up may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One live member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub client_id: String,
    pub host: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}", self.client_id, self.host.trim_start_matches('/'))
    }
}

/// What a group's commit of one partition says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// No committed offset.
    Nothing,
    /// A commit kbackup made: its offset, whether `takeover` adopted it from Secor (and not
    /// written by the writer since), and how many of the files its record names may still be
    /// uploaded by the next owner (unfinished: the writer crashed or was cut short).
    Kbackup { offset: i64, adopted: Option<Adopted>, unfinished: usize },
    /// A commit another client made: nothing says what below it was stored.
    Foreign { offset: i64 },
}

impl Held {
    /// Reads a committed offset and its metadata.
    pub fn of(offset: Option<i64>, metadata: &str) -> Held {
        let Some(offset) = offset else { return Held::Nothing };
        match intent::read_record(metadata) {
            Some(record) => {
                Held::Kbackup { offset, unfinished: intent::Recovery::new(offset, record.intents).pending().count(), adopted: record.adopted }
            }
            None => Held::Foreign { offset },
        }
    }

    /// The committed offset, whoever wrote it.
    pub fn offset(&self) -> Option<i64> {
        match self {
            Held::Nothing => None,
            Held::Kbackup { offset, .. } | Held::Foreign { offset } => Some(*offset),
        }
    }
}

/// A client that looks at (and, for the tools that move positions, commits for) one group
/// without joining it.
pub struct GroupClient {
    consumer: crate::consumer::Closing<Diagnosing>,
    group: String,
}

/// A commit for one partition: offset and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: String,
}

impl GroupClient {
    /// A client of the `[kafka]` section (its security settings included) naming `group`.
    pub fn new(k: &KafkaConfig, group: &str) -> Result<GroupClient, LookupError> {
        let mut cfg = client_config(k, Role::Reader, &[]);
        cfg.set("group.id", group).set("enable.auto.commit", "false");
        let consumer = crate::consumer::Closing::new(cfg.create_with_context(Diagnosing::default()).map_err(LookupError::bare)?);
        Ok(GroupClient { consumer, group: group.to_string() })
    }

    /// The group's live members (none when it is empty or unknown).
    pub fn members(&self) -> Result<Vec<Member>, LookupError> {
        let list = with_reason(&self.consumer, |c| c.fetch_group_list(Some(&self.group), TIMEOUT))?;
        Ok(list
            .groups()
            .iter()
            .filter(|g| g.name() == self.group)
            .flat_map(|g| g.members())
            .map(|m| Member { client_id: m.client_id().to_string(), host: m.client_host().to_string() })
            .collect())
    }

    /// The committed offset and metadata of each partition, in order.
    pub fn committed(&self, partitions: &[(String, i32)]) -> Result<Vec<Held>, LookupError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let got = with_reason(&self.consumer, |c| c.committed_offsets(tpl, TIMEOUT))?;
        Ok(partitions
            .iter()
            .map(|(t, p)| match got.find_partition(t, *p) {
                Some(e) => Held::of(if let Offset::Offset(o) = e.offset() { Some(o) } else { None }, e.metadata()),
                None => Held::Nothing,
            })
            .collect())
    }

    /// Commits offsets with metadata for the group, as a tool that is not a member (accepted by
    /// the broker only while the group has no members).
    pub fn commit(&self, entries: &[CommitEntry]) -> Result<(), LookupError> {
        let mut tpl = TopicPartitionList::new();
        for c in entries {
            let mut e = tpl.add_partition(&c.topic, c.partition);
            e.set_offset(Offset::Offset(c.offset)).map_err(LookupError::bare)?;
            e.set_metadata(&c.metadata);
        }
        with_reason(&self.consumer, |c| c.commit(&tpl, CommitMode::Sync))
    }

    /// Log start and end of a partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), LookupError> {
        with_reason(&self.consumer, |c| c.fetch_watermarks(topic, partition, TIMEOUT))
    }

    /// Partition counts of `topics` (`None`: no such topic).
    pub fn partition_counts(&self, topics: &[&str]) -> Result<Vec<(String, Option<usize>)>, LookupError> {
        with_reason(&self.consumer, |c| crate::consumer::partition_counts(c, topics, TIMEOUT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::Intent;

    #[test]
    fn a_commit_is_kbackups_only_with_its_record() {
        assert_eq!(Held::of(None, ""), Held::Nothing);
        assert_eq!(Held::of(None, "{\"v\":1,\"f\":[]}"), Held::Nothing);
        // The Java client's auto-commit and kafka-consumer-groups write empty metadata.
        assert_eq!(Held::of(Some(40), ""), Held::Foreign { offset: 40 });
        assert_eq!(Held::of(Some(40), "some other tool"), Held::Foreign { offset: 40 });
        assert_eq!(Held::of(Some(40), "{\"v\":1,\"f\":[]}"), Held::Kbackup { offset: 40, adopted: None, unfinished: 0 });
        let i = |from, to| Intent { key: "k".into(), prefix: None, date: "d".into(), error: false, from, to, record_dated: false, output: 0 };
        let md = intent::encode(&[i(10, 39), i(35, 60), i(61, 70)]);
        assert_eq!(Held::of(Some(40), &md), Held::Kbackup { offset: 40, adopted: None, unfinished: 2 }, "one wholly committed, two not");
        let adopted = intent::adopted_record(&Adopted { source: crate::intent::AdoptedFrom::Zookeeper, offset: 1200 });
        assert_eq!(
            Held::of(Some(1200), &adopted),
            Held::Kbackup { offset: 1200, adopted: Some(Adopted { source: crate::intent::AdoptedFrom::Zookeeper, offset: 1200 }), unfinished: 0 }
        );
        assert_eq!(Held::of(Some(1200), &adopted).offset(), Some(1200));
    }
}
