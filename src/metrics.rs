//! Prometheus metrics: names, help texts and the recorder. Labels stay bounded: topic,
//! partition, reason — never dates or file names.

use metrics::{describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const EVENTS_CONSUMED: &str = "kbackup_events_consumed_total";
pub const BYTES_CONSUMED: &str = "kbackup_bytes_consumed_total";
pub const INVALID_MESSAGES: &str = "kbackup_invalid_messages_total";
pub const PARQUET_EVENTS_WITHOUT_VARIANT: &str = "kbackup_parquet_events_without_variant_total";
pub const RECORD_TIME_DATED: &str = "kbackup_record_time_dated_total";
pub const FILES_UPLOADED: &str = "kbackup_files_uploaded_total";
pub const BYTES_UPLOADED: &str = "kbackup_bytes_uploaded_total";
pub const UPLOAD_SECONDS: &str = "kbackup_upload_duration_seconds";
pub const UPLOAD_RETRIES: &str = "kbackup_upload_retries_total";
pub const UPLOAD_FAILURES: &str = "kbackup_upload_failures_total";
pub const BUFFERED_BYTES: &str = "kbackup_buffered_bytes";
pub const INFLIGHT_BYTES: &str = "kbackup_inflight_bytes";
pub const POOLED_BYTES: &str = "kbackup_buffer_pool_bytes";
pub const OLDEST_BUFFER_AGE: &str = "kbackup_oldest_buffer_age_seconds";
pub const COMMITS: &str = "kbackup_commits_total";
pub const COMMIT_FAILURES: &str = "kbackup_commit_failures_total";
pub const COMMIT_SECONDS: &str = "kbackup_commit_duration_seconds";
pub const REBALANCES: &str = "kbackup_rebalances_total";
pub const CONSUMER_LAG: &str = "kbackup_consumer_lag";
pub const CONSUMED_OFFSET: &str = "kbackup_consumed_offset";
pub const ASSIGNED_PARTITIONS: &str = "kbackup_assigned_partitions";
pub const LOST_PARTITION_EVENTS: &str = "kbackup_lost_partition_events_total";
pub const PAUSED: &str = "kbackup_consumption_paused";
pub const SKIPPED_RECOVERED: &str = "kbackup_recovered_skipped_events_total";
pub const FILES_REBUILT: &str = "kbackup_recovered_rebuilt_files_total";
pub const OFFSETS_LOST: &str = "kbackup_offsets_lost_total";
pub const RETENTION_HEADROOM: &str = "kbackup_retention_headroom_seconds";
pub const BUILD_INFO: &str = "kbackup_build_info";
pub const FOREIGN_COMMITS: &str = "kbackup_foreign_commits_resumed_total";
pub const TIMESTAMPS_UNPARSED: &str = "kbackup_timestamps_unparsed_total";
pub const STORE_CREATE_ONLY: &str = "kbackup_storage_create_only";
pub const OLDEST_UNBACKED_AGE: &str = "kbackup_oldest_unbacked_event_age_seconds";
pub const MAX_FILE_AGE: &str = "kbackup_max_file_age_seconds";
pub const TOPIC_PARTITIONS: &str = "kbackup_topic_partitions";
pub const READY: &str = "kbackup_ready";
pub const LATE_EVENTS: &str = "kbackup_late_events_total";
pub const MARKERS_WRITTEN: &str = "kbackup_completion_markers_written_total";
pub const MARKER_FAILURES: &str = "kbackup_completion_marker_failures_total";
pub const COMPLETE_DATE: &str = "kbackup_complete_date_seconds";
pub const PARTITION_STALLED_SINCE: &str = "kbackup_partition_stalled_since_seconds";

/// Exports every counter the writer keeps at zero for the label sets it knows before its first
/// event, so that `increase(...)` alerts see the first increment (a counter that first appears at
/// 50 has not increased, to Prometheus). Per-partition series start at assignment
/// ([`zero_partition_counters`]).
pub fn zero_counters(topics: &[crate::config::TopicConfig]) {
    use metrics::counter;
    for c in [COMMITS, COMMIT_FAILURES, LOST_PARTITION_EVENTS, SKIPPED_RECOVERED, FILES_REBUILT] {
        counter!(c).increment(0);
    }
    gauge!(READY).set(0.0);
    for kind in ["assign", "revoke", "lost"] {
        counter!(REBALANCES, "kind" => kind).increment(0);
    }
    for t in topics {
        for c in [
            EVENTS_CONSUMED,
            BYTES_CONSUMED,
            FILES_UPLOADED,
            BYTES_UPLOADED,
            UPLOAD_RETRIES,
            UPLOAD_FAILURES,
            FOREIGN_COMMITS,
            LATE_EVENTS,
            MARKERS_WRITTEN,
            MARKER_FAILURES,
        ] {
            counter!(c, "topic" => t.name.clone()).increment(0);
        }
        for reason in crate::routing::InvalidReason::ALL {
            counter!(INVALID_MESSAGES, "topic" => t.name.clone(), "reason" => reason.as_str()).increment(0);
        }
        if t.file_format == crate::config::FileFormat::Parquet {
            counter!(PARQUET_EVENTS_WITHOUT_VARIANT, "topic" => t.name.clone()).increment(0);
        }
        if t.format == crate::config::Format::Record {
            for value in crate::routing::InvalidReason::UNDATABLE_VALUES {
                counter!(RECORD_TIME_DATED, "topic" => t.name.clone(), "value" => value.as_str()).increment(0);
            }
        }
        gauge!(MAX_FILE_AGE, "topic" => t.name.clone()).set(t.max_file_age_secs as f64);
        gauge!(OLDEST_UNBACKED_AGE, "topic" => t.name.clone()).set(0.0);
        for field in &t.timestamp_fields {
            counter!(TIMESTAMPS_UNPARSED, "topic" => t.name.clone(), "field" => field.clone()).increment(0);
        }
    }
}

/// The per-partition counters of a newly assigned partition, at zero.
pub fn zero_partition_counters(topic: &str, partition: i32) {
    metrics::counter!(OFFSETS_LOST, "topic" => topic.to_string(), "partition" => partition.to_string()).increment(0);
}

/// Installs the global recorder and returns the handle that renders `/metrics`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0],
        )?
        .install_recorder()?;
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

fn describe() {
    describe_counter!(EVENTS_CONSUMED, "Messages consumed from Kafka");
    describe_counter!(LATE_EVENTS, "Events of a date already marked complete on their partition (each leads to a superseding marker)");
    describe_counter!(MARKERS_WRITTEN, "Completion markers written");
    describe_counter!(MARKER_FAILURES, "Completion markers that could not be written (tried again)");
    describe_gauge!(
        COMPLETE_DATE,
        Unit::Seconds,
        "Per partition: start (epoch seconds, output time zone) of the newest date marked complete; min by (topic) is the newest date complete on all partitions"
    );
    describe_gauge!(
        PARTITION_STALLED_SINCE,
        Unit::Seconds,
        "Per owned partition, when (epoch seconds) its backup stopped moving: consumed ahead of a commit that has not moved for max_file_age_secs plus a minute, or a sealed file waiting a minute for its intent record; 0 while it moves"
    );
    describe_counter!(BYTES_CONSUMED, Unit::Bytes, "Message value bytes consumed from Kafka");
    describe_counter!(INVALID_MESSAGES, "Messages written to the invalid bucket, by reason");
    describe_counter!(
        PARQUET_EVENTS_WITHOUT_VARIANT,
        "Messages of file_format = \"parquet\" topics whose value is not JSON a Variant holds: their event column is null, their value column keeps the bytes"
    );
    describe_counter!(
        RECORD_TIME_DATED,
        "Records of format = \"record\" topics dated by their Kafka record time because the value gives no event time (empty: tombstones and empty values; not_json; not_utf8)"
    );
    describe_counter!(FILES_UPLOADED, "Files durably uploaded");
    describe_counter!(BYTES_UPLOADED, Unit::Bytes, "Bytes stored (after compression)");
    describe_histogram!(UPLOAD_SECONDS, Unit::Seconds, "Time from seal to durable upload, per file");
    describe_counter!(UPLOAD_RETRIES, "Upload attempts that failed and were retried");
    describe_counter!(UPLOAD_FAILURES, "Uploads refused for good (name conflicts)");
    describe_gauge!(BUFFERED_BYTES, Unit::Bytes, "Bytes in open buffers");
    describe_gauge!(INFLIGHT_BYTES, Unit::Bytes, "Bytes of sealed files not yet uploaded");
    describe_gauge!(POOLED_BYTES, Unit::Bytes, "Buffer memory kept for new files (within the memory budget; released after 30 s unused)");
    describe_gauge!(OLDEST_BUFFER_AGE, Unit::Seconds, "Age of the oldest open buffer");
    describe_counter!(COMMITS, "Offset commits (including upload-intent records)");
    describe_counter!(COMMIT_FAILURES, "Offset commits that failed");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Offset commit latency");
    describe_counter!(REBALANCES, "Rebalance events, by kind (assign, revoke, lost)");
    describe_gauge!(CONSUMER_LAG, "Messages between the committed offset and the end of the partition (this process's partitions)");
    describe_gauge!(PAUSED, "1 while consumption is paused because uploads are behind");
    describe_gauge!(
        CONSUMED_OFFSET,
        "Per owned partition, the next offset to consume: every message below it is in a buffer or file (updated every 0.5 s)"
    );
    describe_gauge!(ASSIGNED_PARTITIONS, "Partitions this process owns");
    describe_counter!(
        LOST_PARTITION_EVENTS,
        "Buffered events dropped uncommitted because their partitions were lost (session timeout); their new owner reads them again"
    );
    describe_counter!(SKIPPED_RECOVERED, "Re-read messages skipped because an uploaded file holds them");
    describe_counter!(FILES_REBUILT, "Files rebuilt under a name recorded by an earlier run");
    describe_gauge!(BUILD_INFO, "Build information");
    describe_gauge!(
        OLDEST_UNBACKED_AGE,
        Unit::Seconds,
        "Per topic, the record-time age of the oldest event this process holds that is not yet uploaded (0 when it holds none): backup freshness"
    );
    describe_gauge!(MAX_FILE_AGE, Unit::Seconds, "Per topic, the configured max_file_age_secs (what freshness alerts compare with)");
    describe_gauge!(TOPIC_PARTITIONS, "Per topic, its partition count at start-up (what every replica together should own)");
    describe_gauge!(READY, "1 while /health/ready answers 200, else 0");
    describe_gauge!(
        STORE_CREATE_ONLY,
        "1 when the start-up probe proved the store refuses a second create of a name; 0 when it overwrites and storage.accept_overwriting_store let the writer run anyway"
    );
    describe_counter!(
        TIMESTAMPS_UNPARSED,
        "Messages whose timestamp field held a string the topic's pattern could not read (dated by a later field or the record time), by field"
    );
    describe_counter!(
        FOREIGN_COMMITS,
        "Partitions resumed from an offset another client committed (no kbackup record: nothing says what below it was stored)"
    );
}
