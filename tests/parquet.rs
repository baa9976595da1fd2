//! `file_format = "parquet"` (issue 40): the writer stores each message once, as a row of a
//! Parquet file per Kafka partition and date, with its envelope in typed columns, its value's
//! bytes, and its value as a Variant; the tools read those files as they read text files.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, RowAccessor};
use rdkafka::producer::FutureRecord;

/// The i-th value: Sunbird-shaped JSON mostly, and every kind of value that is not.
fn value(i: usize, now_ms: i64) -> Option<Vec<u8>> {
    match i {
        _ if i % 11 == 0 => None,
        _ if i % 13 == 0 => Some(format!("not json {i}").into_bytes()),
        _ if i % 17 == 0 => Some(vec![0, 0xfe, i as u8]),
        _ if i % 23 == 0 => Some(format!("{{\"eid\":\"LOG\",\"mid\":\"m-{i}\",\n \"syncts\":{now_ms}}}").into_bytes()),
        _ => Some(
            format!(
                r#"{{"eid":"{}","mid":"m-{i}","ets":{now_ms},"context":{{"did":"device-{}"}},"edata":{{"n":{i}.5}},"syncts":{now_ms}}}"#,
                ["START", "END", "IMPRESSION"][i % 3],
                i % 17
            )
            .into_bytes(),
        ),
    }
}

/// A message's key and value (`None`: absent).
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// One stored row: partition, offset, key, value, and whether the event column is set.
#[derive(Debug)]
struct Stored {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    has_event: bool,
}

fn rows_of(key: &str, data: &[u8]) -> Vec<(i32, i64, Stored)> {
    let r = SerializedFileReader::new(Bytes::copy_from_slice(data)).unwrap_or_else(|e| panic!("{key}: not Parquet ({e})"));
    let schema = r.metadata().file_metadata().schema_descr().root_schema().clone();
    let event = schema.get_fields().iter().find(|f| f.name() == "event").unwrap_or_else(|| panic!("{key}: no event column"));
    assert_eq!(
        event.get_basic_info().logical_type_ref(),
        Some(&parquet::basic::LogicalType::variant(Some(1))),
        "{key}: the event column is annotated VARIANT(1), which Spark 4.1 reads"
    );
    r.get_row_iter(None)
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            let bytes = |i: usize| match &row.get_column_iter().nth(i).unwrap().1 {
                Field::Null => None,
                Field::Bytes(b) => Some(b.data().to_vec()),
                other => panic!("{key}: column {i} is {other:?}"),
            };
            let has_event = !matches!(row.get_column_iter().nth(5).unwrap().1, Field::Null);
            (row.get_int(0).unwrap(), row.get_long(1).unwrap(), Stored { key: bytes(3), value: bytes(4), has_event })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_files_hold_every_message_once_and_the_tools_read_them() {
    let Some(stack) = stack() else { return };
    let topic = unique("pq");
    stack.create_topic(&topic, 3).await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let producer = stack.producer();
    let mut sent: BTreeMap<(i32, i64), KeyValue> = BTreeMap::new();
    for i in 0..300 {
        let p = (i % 3) as i32;
        let key = format!("device-{}", i % 17).into_bytes();
        let v = value(i, now_ms);
        let mut r = FutureRecord::<[u8], [u8]>::to(&topic).partition(p).key(&key);
        if let Some(v) = &v {
            r = r.payload(v);
        }
        let offset = producer.send(r, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap().offset;
        sent.insert((p, offset), (Some(key), v));
    }

    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    // Small files: each partition's messages spread over several files.
    let topics = topic_section(&topic, "pq/raw", "file_format = \"parquet\"\nmax_file_bytes = 20000");
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topics, 3600));
    let cfg_s = cfg.to_str().unwrap();
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(120)), 0, "{}", run.log_text());
    assert_eq!(stack.committed(&group, &topic, 3), stack.end_offsets(&topic, 3));

    let blobs = read_all(&stack.storage(&container)).await;
    assert!(blobs.len() > 3, "several files per partition: {:?}", blobs.keys().collect::<Vec<_>>());
    let mut stored: BTreeMap<(i32, i64), Stored> = BTreeMap::new();
    for (key, data) in &blobs {
        let name = key.rsplit('/').next().unwrap();
        assert!(name.ends_with(".parquet") && !name.contains(".json"), "the name shows the format: {key}");
        let kp: i32 = name.split('-').nth(3).unwrap().parse().unwrap();
        for (p, o, row) in rows_of(key, data) {
            assert_eq!(p, kp, "{key}: row of partition {p} in a file named for {kp}");
            assert!(stored.insert((p, o), row).is_none(), "partition {p} offset {o} stored twice");
        }
    }
    assert_eq!(stored.len(), sent.len(), "every message once");
    for ((p, o), (k, v)) in &sent {
        let s = &stored[&(*p, *o)];
        assert_eq!((&s.key, &s.value), (k, v), "partition {p} offset {o}: key and value bytes as sent");
        let json = v.as_deref().is_some_and(|v| serde_json::from_slice::<serde_json::Value>(v).is_ok());
        assert_eq!(s.has_event, json, "partition {p} offset {o}: a Variant exactly where the value is JSON");
    }
    let without = sent.values().filter(|(_, v)| v.as_deref().is_none_or(|v| serde_json::from_slice::<serde_json::Value>(v).is_err())).count();
    assert!(without > 40, "the test has values that are not JSON: {without}");
    let metrics = std::fs::read_to_string(dir.path().join("run.log")).unwrap();
    assert!(!metrics.contains(" ERROR "), "{metrics}");

    // verify reads the files as the value lines a text file would hold, against Kafka.
    let report = run_ok(&stack, &["verify", "--config", cfg_s, "--topic", &topic, "--to-end"]);
    assert!(report.trim_end().ends_with("clean"), "{report}");
    // cat prints the values, line breaks as spaces, as Secor's text files hold them.
    let all_dates = ["--from", "1970-01-01", "--to", "2099-12-31"];
    let mut args = vec!["cat", "--config", cfg_s, "--topic", &topic];
    args.extend_from_slice(&all_dates);
    let printed = run_ok(&stack, &args);
    let mut want: Vec<String> =
        sent.values().map(|(_, v)| String::from_utf8_lossy(&v.clone().unwrap_or_default()).replace(['\n', '\r'], " ")).collect();
    let mut got: Vec<String> = printed.lines().map(String::from).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // ls names each file's Kafka partition.
    let mut args = vec!["ls", "--config", cfg_s, "--topic", &topic];
    args.extend_from_slice(&all_dates);
    let listed = run_ok(&stack, &args);
    for key in blobs.keys() {
        assert!(listed.contains(key.rsplit('/').next().unwrap()), "ls shows {key}:\n{listed}");
    }
}

/// A writer crashes after uploading files whose offsets it has not committed; the next run
/// rebuilds those files under their recorded names from the same messages, and the uploads find
/// the same rows there: every message once, verify clean.
#[tokio::test(flavor = "multi_thread")]
async fn parquet_files_are_rebuilt_identically_after_a_crash() {
    let Some(stack) = stack() else { return };
    let topic = unique("pqcrash");
    stack.create_topic(&topic, 3).await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let producer = stack.producer();
    let send = |from: usize, to: usize| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            for i in from..to {
                let v = value(i, now_ms).unwrap_or_default();
                let r = FutureRecord::<[u8], [u8]>::to(&topic).partition((i % 3) as i32).payload(&v);
                producer.send(r, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
            }
        }
    };
    send(0, 150).await;
    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let section = topic_section(&topic, "pq/crash", "file_format = \"parquet\"\nmax_file_bytes = 4000");
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &section, 3600));
    let mut crashed =
        Running::start_with_env(&stack, &cfg, dir.path().join("crash.log"), &["--until-caught-up"], &[("KBACKUP_FAILPOINT", "uploaded:5")]);
    assert_ne!(crashed.wait(Duration::from_secs(90)), 0, "the failpoint was never reached:\n{}", crashed.log_text());
    send(150, 180).await;
    let mut again = Running::start(&stack, &cfg, dir.path().join("recover.log"), &["--until-caught-up"]);
    assert_eq!(again.wait(Duration::from_secs(90)), 0, "{}", again.log_text());
    assert!(again.log_text().contains("resuming from recorded upload intents"), "{}", again.log_text());
    assert_eq!(stack.committed(&group, &topic, 3), stack.end_offsets(&topic, 3));
    let report = run_ok(&stack, &["verify", "--config", cfg.to_str().unwrap(), "--topic", &topic, "--to-end"]);
    assert!(report.trim_end().ends_with("clean"), "{report}");
    assert!(report.contains("180 expected, 180 lines"), "{report}");
    let blobs = read_all(&stack.storage(&container)).await;
    let rows: usize = blobs.iter().map(|(k, d)| rows_of(k, d).len()).sum();
    assert_eq!(rows, 180, "every message once");
}

/// One consumer group backs a topic up twice in one read (issue 40's one pass, two outputs):
/// gzip JSON for Secor's readers and Parquet for queries, two `[[topic]]` entries of the same
/// name. A crash between uploads leaves the outputs at different points; the next run rebuilds
/// or skips each output's files by that output's own intents, so each holds every message once,
/// and the group's commit never passed a message either output had not stored.
#[tokio::test(flavor = "multi_thread")]
async fn one_read_backs_a_topic_up_as_json_and_parquet_each_exactly_once_through_a_crash() {
    let Some(stack) = stack() else { return };
    let topic = unique("pqtwo");
    stack.create_topic(&topic, 3).await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let date = chrono::DateTime::from_timestamp_millis(now_ms + 19_800_000).unwrap().date_naive().to_string();
    let producer = stack.producer();
    let mut expected = Vec::new();
    let mut send = async |from: usize, to: usize| {
        for i in from..to {
            let line = format!(r#"{{"eid":"{}","mid":"two-{i}","context":{{"did":"d-{}"}},"syncts":{now_ms}}}"#, ["START", "END"][i % 2], i % 7);
            let r = FutureRecord::<[u8], [u8]>::to(&topic).partition((i % 3) as i32).payload(line.as_bytes());
            let d = producer.send(r, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
            expected.push(Expect { line: line.into_bytes(), partition: d.partition, date: date.clone(), dir: String::new() });
        }
    };
    send(0, 240).await;
    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    // Sizes of their own: the two outputs' files of one range are sealed and uploaded apart.
    let sections = format!(
        "{}{}",
        topic_section(&topic, "two/json", "max_file_bytes = 3000"),
        topic_section(&topic, "two/parquet", "file_format = \"parquet\"\nmax_file_bytes = 5000")
    );
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &sections, 3600));
    let mut crashed =
        Running::start_with_env(&stack, &cfg, dir.path().join("crash.log"), &["--until-caught-up"], &[("KBACKUP_FAILPOINT", "uploaded:7")]);
    assert_ne!(crashed.wait(Duration::from_secs(90)), 0, "the failpoint was never reached:\n{}", crashed.log_text());
    let before = read_all(&stack.storage(&container)).await;
    let parquet_before: usize = before.iter().filter(|(k, _)| k.starts_with("two/parquet/")).map(|(k, d)| rows_of(k, d).len()).sum();
    assert!(before.len() >= 7 && parquet_before < 240, "the crash left a backup to finish: {:?}", before.keys().collect::<Vec<_>>());
    send(240, 300).await;
    // The entries swapped: the record names the outputs by position, so this writer would
    // take one output's files for the other's. It stops before consuming anything.
    let swapped =
        std::fs::read_to_string(&cfg).unwrap().replace("two/json", "two/SWAP").replace("two/parquet", "two/json").replace("two/SWAP", "two/parquet");
    std::fs::create_dir_all(dir.path().join("swapped")).unwrap();
    let swapped_cfg = write_config(&dir.path().join("swapped"), &swapped);
    let mut refused = Running::start(&stack, &swapped_cfg, dir.path().join("swapped.log"), &["--until-caught-up"]);
    assert_ne!(refused.wait(Duration::from_secs(90)), 0, "{}", refused.log_text());
    assert!(refused.log_text().contains("entries were reordered"), "{}", refused.log_text());
    assert_eq!(read_all(&stack.storage(&container)).await.len(), before.len(), "nothing written by the refused run");
    let mut again = Running::start(&stack, &cfg, dir.path().join("recover.log"), &["--until-caught-up"]);
    assert_eq!(again.wait(Duration::from_secs(90)), 0, "{}", again.log_text());
    let log = again.log_text();
    assert!(log.contains("resuming from recorded upload intents") && !log.contains(" ERROR "), "{log}");
    assert_eq!(stack.committed(&group, &topic, 3), stack.end_offsets(&topic, 3));

    let blobs = read_all(&stack.storage(&container)).await;
    // The JSON output: Secor's lines, each once, in its partition's and date's files.
    assert_exactly_once(&blobs, "two/json", &expected);
    // The Parquet output: every (partition, offset) once, with the value sent.
    let mut rows: BTreeMap<(i32, i64), Stored> = BTreeMap::new();
    for (key, data) in blobs.iter().filter(|(k, _)| k.starts_with("two/parquet/")) {
        assert!(key.ends_with(".parquet"), "{key}");
        for (p, o, row) in rows_of(key, data) {
            assert!(row.has_event, "{key}: {p}/{o} has its Variant");
            assert!(rows.insert((p, o), row).is_none(), "{key}: partition {p} offset {o} stored twice in Parquet");
        }
    }
    let mut values: Vec<Vec<u8>> = rows.into_values().map(|r| r.value.unwrap()).collect();
    let mut sent: Vec<Vec<u8>> = expected.iter().map(|e| e.line.clone()).collect();
    values.sort();
    sent.sort();
    assert_eq!(values.len(), 300, "every message once in Parquet");
    assert_eq!(values, sent);
    assert_eq!(blobs.keys().filter(|k| !k.starts_with("two/json/") && !k.starts_with("two/parquet/")).count(), 0, "{:?}", blobs.keys());
    // verify, ls and cat answer for the topic's first output, or the one --output names.
    let cfg_s = cfg.to_str().unwrap();
    for output in ["0", "1"] {
        let report = run_ok(&stack, &["verify", "--config", cfg_s, "--topic", &topic, "--to-end", "--output", output]);
        assert!(report.trim_end().ends_with("clean") && report.contains("300 expected, 300 lines"), "output {output}: {report}");
        let listed = run_ok(&stack, &["ls", "--config", cfg_s, "--topic", &topic, "--from", &date, "--output", output]);
        let dir = if output == "0" { "two/json/" } else { "two/parquet/" };
        let files = blobs.keys().filter(|k| k.starts_with(dir)).count();
        assert_eq!(listed.lines().filter(|l| l.contains(if output == "0" { ".json.gz" } else { ".parquet" })).count(), files, "{listed}");
        let printed = run_ok(&stack, &["cat", "--config", cfg_s, "--topic", &topic, "--from", &date, "--output", output]);
        let mut lines: Vec<&[u8]> = printed.lines().map(str::as_bytes).collect();
        lines.sort();
        assert_eq!(lines, sent.iter().map(Vec::as_slice).collect::<Vec<_>>(), "cat --output {output}");
    }
    let o = kbackup(&stack, &["verify", "--config", cfg_s, "--topic", &topic, "--output", "2"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(2) && stderr.contains("has 2 output(s)"), "{stderr}");
}

fn run_ok(stack: &Stack, args: &[&str]) -> String {
    let o = kbackup(stack, args).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "kbackup {}:\n{stdout}\n{stderr}", args.join(" "));
    stdout.into_owned()
}
