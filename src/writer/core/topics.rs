//! The configured topics as the core uses them: each topic's config parsed once (layout, time
//! zone, completion settings, rotation, framing), its counters, and what the core learns about
//! it while it runs (the earliest date its partitions judge from, timestamps it could not read),
//! and the names of its files.

use std::collections::HashMap as StdHashMap;
use std::time::Duration;

use chrono::NaiveDate;
use rustc_hash::FxHashMap as HashMap;
use tracing::{info, warn};

use super::files::Shape;
use super::marking::Seen;
use super::summary::Summary;
use super::SetupError;
use crate::buffer::{BufferKey, Framing, RotationPolicy};
use crate::config::{Config, TopicConfig};
use crate::metrics as m;
use crate::naming::{FileLayout, NameContext, UploadClock};
use crate::upload::{Existing, UploadJob};
use crate::writer::ports::Clock;

/// Every configured topic, by its index in the config.
///
/// A Kafka topic listed in several `[[topic]]` entries has as many outputs: the first entry
/// (its index is the topic's, in partition keys) routes and tracks its partitions, and each
/// entry names, fills and uploads its own files (`BufferKey::output`).
pub(super) struct Topics {
    list: Vec<Topic>,
    /// Each Kafka topic's first entry.
    index: HashMap<String, usize>,
    /// Per entry: the entries of its topic's outputs, in config order (empty for later outputs).
    outputs: Vec<Vec<usize>>,
    /// Keeps `{currentTimestamp}` strictly increasing within this process.
    name_clock: UploadClock,
}

/// One configured topic.
pub(super) struct Topic {
    cfg: TopicConfig,
    layout: FileLayout,
    /// The topic's `retention.ms`, when finite and known.
    retention_ms: Option<i64>,
    policy: RotationPolicy,
    events: metrics::Counter,
    bytes: metrics::Counter,
    /// Per timestamp field: messages whose string there the pattern could not read.
    unparsed: Vec<u64>,
    /// Completion markers are written for the topic.
    markers: bool,
    /// The output time zone dates are in, and `completion_grace_secs` in ms.
    tz: chrono_tz::Tz,
    grace_ms: i64,
    /// `completion_start_date`.
    completion_start: Option<NaiveDate>,
    /// The earliest first date to judge of the topic's partitions this writer owned: a
    /// partition never marked judges from it too (an idle or empty partition is complete for
    /// every date its siblings are judged for).
    first_date: Option<NaiveDate>,
    /// How its files frame messages (`file_format`).
    framing: Framing,
    /// How its files are sealed.
    sealing: std::sync::Arc<crate::seal::Sealing>,
}

impl Topics {
    /// The config's topics, each parsed once; `retention_ms` as the brokers told it.
    pub(super) fn new(config: &Config, retention_ms: &StdHashMap<String, i64>) -> Result<Topics, SetupError> {
        let mut list = Vec::new();
        for t in &config.topics {
            let layout = t.layout()?;
            if layout.secor().is_none() && !layout.pattern().is_partition_filterable() {
                warn!(topic = %t.name, pattern = %t.file_pattern, "file_pattern has no -{{kafkaPartition}}- after the date; Sunbird's per-partition fetcher cannot select these files (kbackup's tools can)");
            }
            list.push(Topic {
                events: metrics::counter!(m::EVENTS_CONSUMED, "topic" => t.name.clone()),
                bytes: metrics::counter!(m::BYTES_CONSUMED, "topic" => t.name.clone()),
                layout,
                unparsed: vec![0; t.timestamp_fields.len()],
                markers: t.markers(),
                tz: t.output_tz()?,
                grace_ms: t.completion_grace_secs as i64 * 1000,
                completion_start: t.completion_start()?,
                first_date: None,
                retention_ms: retention_ms.get(&t.name).copied(),
                policy: RotationPolicy { max_bytes: t.max_file_bytes, max_age: Duration::from_secs(t.max_file_age_secs) },
                framing: match t.file_format {
                    // A Parquet file is buffered as record envelope lines (see `columnar`).
                    crate::config::FileFormat::Text | crate::config::FileFormat::Parquet => Framing::Lines,
                    crate::config::FileFormat::SequenceFile => Framing::SequenceFile,
                },
                sealing: std::sync::Arc::new(crate::seal::Sealing::of(t)),
                cfg: t.clone(),
            });
        }
        let index: HashMap<String, usize> = config.first_entries().into_iter().map(|(n, i)| (n.to_string(), i)).collect();
        let mut outputs = vec![Vec::new(); list.len()];
        for (i, t) in config.topics.iter().enumerate() {
            let first = index[&t.name];
            outputs[first].push(i);
            if first != i {
                // Markers list the files of one layout: the first output's (config refuses more).
                list[i].markers = false;
            }
        }
        Ok(Topics { list, index, outputs, name_clock: UploadClock::default() })
    }

    /// The index of topic `name` (its first entry), if it is configured.
    pub(super) fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// How many outputs topic `t` (a first entry) has.
    pub(super) fn outputs(&self, t: usize) -> u8 {
        self.outputs[t].len() as u8
    }

    /// Output `o` of topic `t` (a first entry): the entry whose files it writes.
    pub(super) fn output(&self, t: usize, o: u8) -> &Topic {
        &self.list[self.outputs[t][usize::from(o)]]
    }

    /// The output of topic `t` that writes under `key`, when another than `o` does: an intent
    /// recorded for output `o` whose file another output names means the outputs were
    /// reordered in the config (their paths are distinct and never nested).
    pub(super) fn other_output_of(&self, t: usize, o: u8, key: &str) -> Option<u8> {
        let under = |i: usize| {
            let cfg = &self.list[i].cfg;
            std::iter::once(&cfg.path).chain(&cfg.error_path).any(|dir| {
                let dir = dir.trim_matches('/');
                dir.is_empty() || key.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
            })
        };
        if self.outputs[t].len() < 2 {
            return None;
        }
        let mine = self.outputs[t].get(usize::from(o)).is_some_and(|&i| under(i));
        (!mine).then(|| self.outputs[t].iter().position(|&i| under(i)).map(|p| p as u8)).flatten()
    }

    /// The name of a file of route `key` whose first offset is `first_offset`, at the clock's
    /// time. A name `taken` (one the partition's record already holds: an earlier owner's
    /// file, with a clock ahead of ours) would collide for certain: the next one is taken.
    /// Bounded, for patterns whose names do not move with time.
    pub(super) fn name_file(&mut self, key: &BufferKey, first_offset: i64, clock: &dyn Clock, taken: impl Fn(&str) -> bool) -> String {
        let Topics { list, name_clock, outputs, .. } = self;
        let topic = &list[outputs[key.topic][usize::from(key.output)]];
        let mut tries = 0;
        loop {
            let name = NameContext {
                date: &key.date,
                kafka_partition: key.partition,
                current_ms: name_clock.next(clock.wall_ms()),
                topic: topic.name(),
                generation: topic.cfg.generation,
                first_offset,
                random: clock.random() as u16,
            };
            let file = topic.layout.key(key.prefix.as_deref(), key.error, &name);
            tries += 1;
            if tries >= 8 || !taken(&file) {
                return file;
            }
        }
    }

    /// Every Kafka topic with its index (its first entry).
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Topic)> {
        self.list.iter().enumerate().filter(|(i, _)| !self.outputs[*i].is_empty())
    }

    /// Writes no completion markers (the simulation's release before markers).
    #[cfg(test)]
    pub(super) fn stop_marking(&mut self) {
        for t in &mut self.list {
            t.markers = false;
        }
    }
}

impl std::ops::Index<usize> for Topics {
    type Output = Topic;
    fn index(&self, t: usize) -> &Topic {
        &self.list[t]
    }
}

impl std::ops::IndexMut<usize> for Topics {
    fn index_mut(&mut self, t: usize) -> &mut Topic {
        &mut self.list[t]
    }
}

impl Topic {
    pub(super) fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Its config, as validated.
    pub(super) fn cfg(&self) -> &TopicConfig {
        &self.cfg
    }

    pub(super) fn layout(&self) -> &FileLayout {
        &self.layout
    }

    pub(super) fn retention_ms(&self) -> Option<i64> {
        self.retention_ms
    }

    pub(super) fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// How its files are opened: their framing, and the memory sealing one holds besides it.
    pub(super) fn shape(&self) -> Shape {
        let seal_cost = match self.sealing.format {
            crate::config::FileFormat::Parquet => crate::columnar::working_set,
            crate::config::FileFormat::Text | crate::config::FileFormat::SequenceFile => crate::buffer::no_seal_cost,
        };
        Shape { framing: self.framing, seal_cost }
    }

    /// Completion markers are written for it.
    pub(super) fn markers(&self) -> bool {
        self.markers
    }

    /// The output time zone its dates are in.
    pub(super) fn tz(&self) -> chrono_tz::Tz {
        self.tz
    }

    /// `completion_grace_secs`, in ms.
    pub(super) fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// `completion_start_date`.
    pub(super) fn completion_start(&self) -> Option<NaiveDate> {
        self.completion_start
    }

    /// Counts a consumed message of `bytes` bytes.
    pub(super) fn consumed(&self, bytes: usize) {
        self.events.increment(1);
        self.bytes.increment(bytes as u64);
    }

    /// Counts a message whose timestamp field `f` the pattern could not read; returns how many
    /// so far.
    pub(super) fn unparsed(&mut self, f: usize) -> u64 {
        self.unparsed[f] += 1;
        self.unparsed[f]
    }

    /// Takes a never-marked partition's start into the topic's first date; returns the first
    /// date now (what partitions at their log end judge from).
    pub(super) fn offer_first_date(&mut self, offered: NaiveDate) -> NaiveDate {
        let first = self.first_date.map_or(offered, |a| a.min(offered));
        self.first_date = Some(first);
        first
    }

    /// Counts a late event (and says so for the first of its date).
    pub(super) fn note_late(&self, summary: &mut Summary, p: i32, date: &str, seen: Seen) {
        let Seen::Late { first } = seen else { return };
        if first {
            info!(topic = %self.cfg.name, partition = p, date, "late event: its date is already marked complete; a new marker will list its file");
        }
        summary.late_event();
        metrics::counter!(m::LATE_EVENTS, "topic" => self.cfg.name.clone()).increment(1);
    }

    /// The newest date marked on a partition, as the start of that day in epoch seconds.
    pub(super) fn report_complete_date(&self, partition: i32, marked: NaiveDate) {
        if let Some(ms) = crate::completion::local_midnight_ms(self.tz, marked) {
            metrics::gauge!(m::COMPLETE_DATE, "topic" => self.cfg.name.clone(), "partition" => partition.to_string()).set(ms as f64 / 1000.0);
        }
    }

    /// The upload of one of the topic's files, compressed as the topic says. The one place a
    /// job is made: new files once their intent is recorded, rebuilt files once complete.
    pub(super) fn upload_job(&self, id: u64, key: &str, data: crate::buffer::Memory, existing: Existing) -> UploadJob {
        UploadJob { id, key: key.to_string(), topic: self.cfg.name.clone(), data, sealing: self.sealing.clone(), existing }
    }
}
