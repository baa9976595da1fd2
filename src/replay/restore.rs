//! A restore as `kbackup replay` runs it: the selected files, what a time window needs from the
//! topic's `invalid_date` files, and a target topic created like the source when asked.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use chrono::NaiveDate;

use super::{count_in_window, replay, Options, Partitioner, ReplayError, Summary};
use crate::config::KafkaConfig;
use crate::storage::Storage;
use crate::topic_settings;

pub use crate::listing::request::Source;

/// Creating a missing target like the backed-up topic.
#[derive(Debug, Clone, Default)]
pub struct CreateTopic {
    /// Settings that must differ from the source's.
    pub overrides: BTreeMap<String, String>,
    /// Default: the source's.
    pub replication_factor: Option<i32>,
}

/// What to restore, and how.
pub struct Request {
    pub opts: Options,
    /// With a window: also send the window's records under `invalid_date`.
    pub include_invalid_date: bool,
    pub create_topic: Option<CreateTopic>,
}

/// What `--create-topic` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// Created like `like`, with these settings.
    New { like: String, partitions: i32, config: BTreeMap<String, String> },
    /// The target existed: nothing was created.
    Existed,
    /// A dry run: the target does not exist and would be created like this.
    WouldCreate { like: String, partitions: i32, config: BTreeMap<String, String> },
}

/// What a restore did.
#[derive(Debug)]
pub struct Report {
    pub summary: Summary,
    pub created: Option<Created>,
    pub invalid_date: NaiveDate,
    /// Per source partition: records of the window under `invalid_date` that were not sent
    /// (without `include_invalid_date`).
    pub not_sent_invalid: BTreeMap<i32, u64>,
}

/// The default progress file: one per target, and per window, so that another window does not
/// take files as done.
pub fn default_checkpoint(to_topic: &str, window: super::Window) -> std::path::PathBuf {
    let ms = |t: Option<i64>| t.map_or("open".to_string(), |t| t.to_string());
    std::path::PathBuf::from(match window.is_set() {
        false => format!(".kbackup-replay-{to_topic}.progress"),
        true => format!(".kbackup-replay-{to_topic}-{}-{}.progress", ms(window.from), ms(window.to)),
    })
}

/// Restores `source` as `req` says: creates the target if asked, accounts for the window's
/// records under `invalid_date`, and sends. `stop` and `show` as for [`replay`].
pub async fn restore(
    source: Source,
    req: &Request,
    kafka: &KafkaConfig,
    stop: Arc<AtomicBool>,
    show: Option<&mut dyn Write>,
) -> Result<Report, ReplayError> {
    let opts = &req.opts;
    let window = opts.window;
    if req.include_invalid_date && !window.is_set() {
        return Err(ReplayError::Usage(
            "--include-invalid-date needs --from-time and/or --to-time: the window picks the records of those files".into(),
        ));
    }
    let Source { storage, mut listed, path, invalid_date, invalid_files } = source;
    let mut not_sent_invalid = BTreeMap::new();
    if !invalid_files.is_empty() {
        if !window.is_set() {
            tracing::warn!(
                "{} record file(s) under invalid_date {invalid_date} may hold tombstones or non-JSON records of these dates (earlier builds filed them there): give --from-time/--to-time to count them, and --include-invalid-date to restore them",
                invalid_files.len()
            );
        } else if req.include_invalid_date {
            listed.extend(invalid_files);
        } else {
            not_sent_invalid = count_in_window(&storage, &invalid_files, window).await?;
            if !not_sent_invalid.is_empty() {
                tracing::warn!(
                    "{} record(s) of the window are filed under invalid_date {invalid_date} and will not be sent: add --include-invalid-date to restore them too",
                    not_sent_invalid.values().sum::<u64>()
                );
            }
        }
    }
    let mut opts = opts.clone();
    let created = match &req.create_topic {
        Some(create) => Some(create_like_source(&storage, &path, create, kafka, &opts).await?),
        None => None,
    };
    if let Some(Created::WouldCreate { partitions, .. }) = &created {
        opts.would_create_partitions = Some(*partitions);
    }
    let opts = &opts;
    if listed.is_empty() {
        tracing::warn!("no backup file matched the selection (dates, partitions, path): nothing to replay");
    }
    if opts.key.is_empty() && listed.iter().any(|l| !l.name.records) {
        tracing::warn!(
            "no --key: events are sent without a key, so a later producer-side re-partitioning cannot keep devices together (Sunbird: --key context.did,mid)"
        );
    }
    let summary = replay(&storage, &listed, kafka, opts, stop, show).await?;
    Ok(Report { summary, created, invalid_date, not_sent_invalid })
}

/// Creates the target with the settings recorded under `path`, and refuses "same partition"
/// into a target with fewer partitions than the source had.
async fn create_like_source(
    storage: &Storage,
    path: &str,
    create: &CreateTopic,
    kafka: &KafkaConfig,
    opts: &Options,
) -> Result<Created, ReplayError> {
    let failed = |e: topic_settings::SettingsError| ReplayError::Failed(e.to_string());
    let settings = topic_settings::latest(storage, path).await.map_err(failed)?.ok_or_else(|| {
        ReplayError::Usage(format!(
            "--create-topic: no topic settings are recorded under {} (a writer of this version records them at start); create {} yourself",
            topic_settings::dir(path),
            opts.to_topic
        ))
    })?;
    if opts.dry_run {
        // Nothing is created: what would be, if the target is missing.
        let exists = crate::consumer::lookup_partition_count(kafka, &opts.to_topic).await.map_err(|e| ReplayError::Failed(e.to_string()))?.is_some();
        return Ok(if exists {
            Created::Existed
        } else {
            Created::WouldCreate { like: settings.topic.clone(), partitions: settings.partitions, config: settings.create_config(&create.overrides) }
        });
    }
    let created =
        if topic_settings::create_topic(kafka, &opts.to_topic, &settings, create.replication_factor, &create.overrides).await.map_err(failed)? {
            Created::New { like: settings.topic.clone(), partitions: settings.partitions, config: settings.create_config(&create.overrides) }
        } else {
            Created::Existed
        };
    if opts.partitioner == Partitioner::Same {
        let target =
            crate::consumer::lookup_partition_count(kafka, &opts.to_topic).await.map_err(|e| ReplayError::Failed(e.to_string()))?.unwrap_or(0);
        if target < settings.partitions {
            return Err(ReplayError::Usage(format!(
                "{} has {target} partitions, fewer than {}'s {}: --partitioner same would refuse some files; choose another --partitioner or a target with enough partitions",
                opts.to_topic, settings.topic, settings.partitions
            )));
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::Window;

    #[test]
    fn each_window_has_its_own_default_progress_file() {
        assert_eq!(default_checkpoint("t", Window::default()), std::path::PathBuf::from(".kbackup-replay-t.progress"));
        assert_eq!(default_checkpoint("t", Window { from: Some(5), to: None }), std::path::PathBuf::from(".kbackup-replay-t-5-open.progress"));
        assert_eq!(default_checkpoint("t", Window { from: None, to: Some(9) }), std::path::PathBuf::from(".kbackup-replay-t-open-9.progress"));
    }
}
