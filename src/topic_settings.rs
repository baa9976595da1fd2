//! A backed-up topic's own settings — partition count, replication and the configuration that
//! decides what a restore must reproduce (cleanup policy, retention, compaction, message size) —
//! recorded next to its files, so that `replay --create-topic` can recreate the topic as it was.
//!
//! The writer records them at start and whenever they change, as create-only objects
//! `<path>/_kbackup/topic/<recordedMillis>.json` (a history: nothing is overwritten). Readers take
//! the newest. `_kbackup/` is no date, so no date-prefix reader (Sunbird's fetcher, Spark) and no
//! kbackup listing picks these objects up as backup files.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::config::KafkaConfig;
use crate::consumer::{client_config, Role};
use crate::storage::Storage;

/// Effective settings a restore reproduces even where the source broker's default set them:
/// another cluster's defaults may differ.
pub const RESTORED_KEYS: [&str; 10] = [
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "max.message.bytes",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "delete.retention.ms",
    "min.cleanable.dirty.ratio",
    "message.timestamp.type",
    "compression.type",
];

/// What is recorded of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSettings {
    /// Schema version, 1.
    pub v: u32,
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// The topic's own overrides (set on the topic, not inherited), sensitive ones left out.
    pub overrides: BTreeMap<String, String>,
    /// The effective value of each of [`RESTORED_KEYS`] the broker reported.
    pub effective: BTreeMap<String, String>,
    /// When it was read (epoch ms); not part of the comparison.
    pub recorded_ms: i64,
}

impl TopicSettings {
    /// The same settings, whenever read.
    pub fn same_as(&self, other: &TopicSettings) -> bool {
        TopicSettings { recorded_ms: 0, ..self.clone() } == TopicSettings { recorded_ms: 0, ..other.clone() }
    }

    /// The configuration a new topic gets: the effective restored keys, the overrides over
    /// them, then `extra` (the caller's `key=value` overrides) over both.
    pub fn create_config(&self, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut c = self.effective.clone();
        c.extend(self.overrides.clone());
        c.extend(extra.clone());
        c
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading topic {topic}'s settings from Kafka: {message}")]
    Kafka { topic: String, message: String },
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error("storage: {0}")]
    Storage(#[from] object_store::Error),
    #[error("{key}: not a kbackup topic settings record: {message}")]
    Unreadable { key: String, message: String },
}

/// Where a topic's settings records live under its backup path.
pub fn dir(path: &str) -> String {
    let path = path.trim_matches('/');
    if path.is_empty() {
        "_kbackup/topic".to_string()
    } else {
        format!("{path}/_kbackup/topic")
    }
}

/// Reads `topic`'s settings from the cluster.
pub async fn read_live(cluster: &crate::consumer::Cluster, topic: &str) -> Result<TopicSettings, SettingsError> {
    use rdkafka::admin::ConfigSource;
    let fail = |message: String| SettingsError::Kafka { topic: topic.to_string(), message };
    let (partitions, replication_factor) =
        cluster.partitions_and_replication(topic).await.map_err(|e| fail(e.to_string()))?.ok_or_else(|| SettingsError::NoTopic(topic.to_string()))?;
    let results = cluster.describe_configs(&[topic.to_string()]).await.map_err(|e| fail(e.to_string()))?;
    let resource = results.into_iter().next().ok_or_else(|| fail("no answer".into()))?.map_err(|e| fail(format!("{e:?}")))?;
    let mut overrides = BTreeMap::new();
    let mut effective = BTreeMap::new();
    for e in &resource.entries {
        let Some(value) = e.value.clone() else { continue };
        if e.is_sensitive {
            continue;
        }
        if e.source == ConfigSource::DynamicTopic {
            overrides.insert(e.name.clone(), value.clone());
        }
        if RESTORED_KEYS.contains(&e.name.as_str()) {
            effective.insert(e.name.clone(), value);
        }
    }
    Ok(TopicSettings {
        v: 1,
        topic: topic.to_string(),
        partitions,
        replication_factor,
        overrides,
        effective,
        recorded_ms: chrono::Utc::now().timestamp_millis(),
    })
}

/// The newest settings recorded under `path`, if any.
pub async fn latest(storage: &Storage, path: &str) -> Result<Option<TopicSettings>, SettingsError> {
    let prefix = ObjectPath::from(dir(path));
    let metas: Vec<object_store::ObjectMeta> = storage.store.list(Some(&prefix)).try_collect().await?;
    // Names are the recording time in ms: the longest, then greatest, name is the newest.
    let Some(newest) = metas
        .iter()
        .filter_map(|m| Some((m.location.filename()?.strip_suffix(".json")?.parse::<i64>().ok()?, m)))
        .max_by_key(|(ms, _)| *ms)
        .map(|(_, m)| m.location.clone())
    else {
        return Ok(None);
    };
    let body = storage.read(newest.as_ref()).await?;
    let s: TopicSettings =
        serde_json::from_slice(&body).map_err(|e| SettingsError::Unreadable { key: newest.to_string(), message: e.to_string() })?;
    if s.v != 1 {
        return Err(SettingsError::Unreadable { key: newest.to_string(), message: format!("version {} (upgrade kbackup)", s.v) });
    }
    Ok(Some(s))
}

/// Records `s` under `path` unless the newest record says the same. Returns whether it wrote.
/// Create-only: two writers recording at the same millisecond write one object.
pub async fn record(storage: &Storage, path: &str, s: &TopicSettings) -> Result<bool, SettingsError> {
    if latest(storage, path).await?.is_some_and(|l| l.same_as(s)) {
        return Ok(false);
    }
    let key = ObjectPath::from(format!("{}/{}.json", dir(path), s.recorded_ms));
    let body = serde_json::to_vec_pretty(s).expect("settings serialize");
    let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
    match storage.store.put_opts(&key, PutPayload::from(body), opts).await {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Reads each configured topic's settings and records those that changed; failures are
/// warned about (the backup itself does not depend on them).
pub async fn record_all(cluster: &crate::consumer::Cluster, storage: &Storage, topics: &[(String, String)]) {
    for (topic, path) in topics {
        let result = match read_live(cluster, topic).await {
            Ok(s) => record(storage, path, &s).await.map(|wrote| (wrote, s)),
            Err(e) => Err(e),
        };
        match result {
            Ok((true, s)) => tracing::info!(
                topic = %topic,
                partitions = s.partitions,
                overrides = s.overrides.len(),
                "recorded the topic's settings under {}/ (for replay --create-topic)",
                dir(path)
            ),
            Ok((false, _)) => {}
            Err(e) => tracing::warn!(topic = %topic, error = %e, "cannot record the topic's settings; replay --create-topic will not find them"),
        }
    }
}

/// Creates `name` with `s`'s partition count and configuration (`extra` over it). Returns
/// false, creating nothing, if it exists already.
pub async fn create_topic(
    k: &KafkaConfig,
    name: &str,
    s: &TopicSettings,
    replication_factor: Option<i32>,
    extra: &BTreeMap<String, String>,
) -> Result<bool, SettingsError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let fail = |message: String| SettingsError::Kafka { topic: name.to_string(), message };
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(k, Role::Admin, &[]).create().map_err(|e| fail(crate::consumer::kafka_error_text(&e)))?;
    let config = s.create_config(extra);
    let mut topic = NewTopic::new(name, s.partitions, TopicReplication::Fixed(replication_factor.unwrap_or(s.replication_factor)));
    for (key, value) in &config {
        topic = topic.set(key, value);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&[topic], &opts).await.map_err(|e| fail(e.to_string()))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, code))) => Err(fail(format!("creating it: {code}"))),
        None => Err(fail("creating it: no answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TopicSettings {
        TopicSettings {
            v: 1,
            topic: "t".into(),
            partitions: 3,
            replication_factor: 1,
            overrides: BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
            effective: BTreeMap::from([("cleanup.policy".into(), "compact".into()), ("retention.ms".into(), "604800000".into())]),
            recorded_ms: 5,
        }
    }

    #[test]
    fn the_recording_time_is_not_a_change() {
        let a = settings();
        assert!(a.same_as(&TopicSettings { recorded_ms: 99, ..a.clone() }));
        assert!(!a.same_as(&TopicSettings { partitions: 4, ..a.clone() }));
    }

    #[test]
    fn a_new_topic_gets_the_effective_settings_then_overrides_then_the_callers() {
        let extra = BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]);
        let c = settings().create_config(&extra);
        assert_eq!(c["cleanup.policy"], "compact");
        assert_eq!(c["retention.ms"], "-1", "the caller's override wins");
    }

    #[test]
    fn records_live_under_the_path() {
        assert_eq!(dir("unique/raw/"), "unique/raw/_kbackup/topic");
        assert_eq!(dir(""), "_kbackup/topic");
    }
}
