//! `format = "record"`: whole Kafka records (keys, binary keys, headers, timestamps,
//! tombstones, non-JSON values) are backed up, verified by offset, and replayed into empty
//! topics that then equal the sources record for record, in order.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Everything a record carries that a faithful restore must keep (the offset aside).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    key: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    value: Option<Vec<u8>>,
    timestamp: Option<i64>,
}

/// Every record of a topic, per partition, in offset order.
fn read_records(stack: &Stack, topic: &str, partitions: i32) -> BTreeMap<i32, Vec<Rec>> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &stack.brokers).set("group.id", unique("reader")).create().unwrap();
    let ends = stack.end_offsets(topic, partitions);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let total: i64 = ends.iter().sum();
    let mut out: BTreeMap<i32, Vec<(i64, Rec)>> = BTreeMap::new();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while n < total {
        assert!(Instant::now() < deadline, "read {n} of {total} records of {topic}");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let headers = m.headers().map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect()).unwrap_or_default();
            let rec = Rec { key: m.key().map(<[u8]>::to_vec), headers, value: m.payload().map(<[u8]>::to_vec), timestamp: m.timestamp().to_millis() };
            out.entry(m.partition()).or_default().push((m.offset(), rec));
            n += 1;
        }
    }
    out.into_iter()
        .map(|(p, mut v)| {
            v.sort_by_key(|(o, _)| *o);
            (p, v.into_iter().map(|(_, r)| r).collect())
        })
        .collect()
}

/// The i-th test record: every kind of key, value and header, at a current record time.
fn record(i: usize, now_ms: i64, compacted: bool) -> Rec {
    let day = 86_400_000;
    let key = match i % 5 {
        0 if !compacted => None, // a compacted topic refuses records without a key
        1 => Some(vec![0xff, i as u8, 0]),
        _ => Some(format!("device-{}", i % 17).into_bytes()),
    };
    let value = match i {
        _ if i % 11 == 0 => None,
        _ if i % 13 == 0 => Some(format!("not json {i}").into_bytes()),
        _ if i % 17 == 0 => Some(vec![0, 0xfe, i as u8, b'\n']),
        _ if i % 19 == 0 => Some(Vec::new()),
        _ if i % 23 == 0 => Some(format!("{{\"mid\":\"m-{i}\",\n \"syncts\":{}}}", now_ms).into_bytes()),
        _ => Some(format!(r#"{{"mid":"m-{i}","context":{{"did":"device-{}"}},"syncts":{}}}"#, i % 17, now_ms - (i as i64 % 2) * day).into_bytes()),
    };
    let headers = match i % 3 {
        0 => vec![],
        _ => vec![
            ("trace".to_string(), Some(format!("t-{i}").into_bytes())),
            ("bin".to_string(), Some(vec![0, 1, 0xfe])),
            ("nil".to_string(), None),
            ("trace".to_string(), Some(b"again".to_vec())),
        ],
    };
    Rec { key, headers, value, timestamp: Some(now_ms - 10_000 + i as i64) }
}

async fn produce(stack: &Stack, topic: &str, partitions: i32, n: usize, compacted: bool) -> BTreeMap<i32, Vec<Rec>> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let recs: Vec<Rec> = (0..n).map(|i| record(i, now_ms, compacted)).collect();
    produce_recs(stack, topic, partitions, recs).await
}

/// Sends record i to partition i % partitions.
async fn produce_recs(stack: &Stack, topic: &str, partitions: i32, recs: Vec<Rec>) -> BTreeMap<i32, Vec<Rec>> {
    let producer = stack.producer();
    let mut sent: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    for (i, r) in recs.into_iter().enumerate() {
        let p = (i % partitions as usize) as i32;
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header { key: k, value: v.as_deref() });
        }
        let mut fr = FutureRecord::<[u8], [u8]>::to(topic).partition(p).headers(headers).timestamp(r.timestamp.unwrap());
        if let Some(k) = &r.key {
            fr = fr.key(k);
        }
        if let Some(v) = &r.value {
            fr = fr.payload(v);
        }
        producer.send(fr, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        sent.entry(p).or_default().push(r);
    }
    sent
}

fn run_ok(stack: &Stack, args: &[&str]) -> String {
    let o = kbackup(stack, args).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "kbackup {}:\n{stdout}\n{stderr}", args.join(" "));
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn records_round_trip_exactly() {
    let Some(stack) = stack() else { return };
    let (src, compact) = (unique("rec"), unique("reccompact"));
    stack.create_topic(&src, 3).await;
    stack.create_topic_with(&compact, 2, &[("cleanup.policy", "compact")]).await;
    let sent = produce(&stack, &src, 3, 300, false).await;
    let sent_compact = produce(&stack, &compact, 2, 120, true).await;
    assert_eq!(read_records(&stack, &src, 3), sent, "the source holds what was produced");

    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    // Small files: each partition's records spread over several files and dates, so that
    // offset order has to be rebuilt across files.
    let topics = format!(
        "{}{}",
        topic_section(&src, "records/src", "format = \"record\"\nmax_file_bytes = 4000"),
        topic_section(&compact, "records/compact", "format = \"record\"\nmax_file_bytes = 3000")
    );
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topics, 3600));
    let cfg_s = cfg.to_str().unwrap();
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(120)), 0, "{}", run.log_text());
    assert_eq!(stack.committed(&group, &src, 3), stack.end_offsets(&src, 3));

    let blobs = read_all(&stack.storage(&container)).await;
    assert!(blobs.len() > 6, "several files per partition: {:?}", blobs.keys().collect::<Vec<_>>());
    for (key, data) in &blobs {
        assert!(key.ends_with(".records.json.gz"), "the name shows the format: {key}");
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| panic!("{key}: not JSON ({e})"));
            assert_eq!(v["v"], 1, "{key}");
        }
    }
    // Tombstones, empty and non-JSON values are dated by their record time (issue 28): none is
    // left under `invalid_date`, where no date range short of 1970 would find it.
    let undatable = sent
        .values()
        .chain(sent_compact.values())
        .flatten()
        .filter(|r| r.value.as_deref().is_none_or(|v| serde_json::from_slice::<serde_json::Value>(v).is_err()))
        .count();
    assert!(undatable > 50, "the test has tombstones and non-JSON values: {undatable}");
    let invalid: Vec<&String> = blobs.keys().filter(|k| k.contains("1970-01-01")).collect();
    assert!(invalid.is_empty(), "records filed under invalid_date: {invalid:?}");
    let stored: usize = blobs.values().map(|d| d.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count()).sum();
    assert_eq!(stored, 420, "every record once");
    // verify compares every retained record with its stored envelope by offset.
    for t in [&src, &compact] {
        let report = run_ok(&stack, &["verify", "--config", cfg_s, "--topic", t, "--to-end"]);
        assert!(report.trim_end().ends_with("clean"), "{report}");
    }

    // Replay into empty topics: the same records, partition by partition, in order.
    let (tgt, tgt_compact) = (unique("rectgt"), unique("rectgtc"));
    stack.create_topic(&tgt, 3).await;
    stack.create_topic_with(&tgt_compact, 2, &[("cleanup.policy", "compact")]).await;
    let all_dates = ["--from", "1970-01-01", "--to", "2099-12-31"];
    for (from, to, parts) in [(&src, &tgt, 3), (&compact, &tgt_compact, 2)] {
        let ckpt = dir.path().join(format!("{to}.progress"));
        let mut args = vec!["replay", "--config", cfg_s, "--topic", from, "--to-topic", to, "--offset-order", "--checkpoint", ckpt.to_str().unwrap()];
        args.extend_from_slice(&all_dates);
        let out = run_ok(&stack, &args);
        assert!(out.contains("tombstones"), "{out}");
        let got = read_records(&stack, to, parts);
        let want = if from == &src { &sent } else { &sent_compact };
        for (p, recs) in want {
            assert_eq!(got[p].len(), recs.len(), "{to} partition {p}");
            for (i, (g, w)) in got[p].iter().zip(recs).enumerate() {
                assert_eq!(g, w, "{to} partition {p}, record {i}");
            }
        }
    }

    // A window on record times, to the millisecond: [first + 100, first + 200) holds records
    // 100..199 (record i has time first + i), from whatever dates and files hold them. The
    // target gets exactly those, partition by partition in order; the rest is counted.
    let first = sent.values().flatten().filter_map(|r| r.timestamp).min().unwrap();
    let tgt_window = unique("rectgtw");
    stack.create_topic(&tgt_window, 3).await;
    let (from_time, to_time) = ((first + 100).to_string(), chrono::DateTime::from_timestamp_millis(first + 200).unwrap().to_rfc3339());
    let mut args = vec!["replay", "--config", cfg_s, "--topic", &src, "--to-topic", &tgt_window, "--offset-order"];
    args.extend_from_slice(&["--from-time", &from_time, "--to-time", &to_time, "--checkpoint"]);
    let ckpt = dir.path().join("window.progress");
    args.push(ckpt.to_str().unwrap());
    args.extend_from_slice(&all_dates);
    let out = run_ok(&stack, &args);
    assert!(out.contains("sent 100 events") && out.contains("left out 200 record(s)"), "{out}");
    let got = read_records(&stack, &tgt_window, 3);
    for (p, recs) in &sent {
        let want: Vec<&Rec> = recs.iter().filter(|r| (first + 100..first + 200).contains(&r.timestamp.unwrap())).collect();
        let got: Vec<&Rec> = got.get(p).map(|v| v.iter().collect()).unwrap_or_default();
        assert_eq!(got, want, "{tgt_window} partition {p}");
    }
    // The window needs record times: value files are refused before anything is sent.
    let o = kbackup(
        &stack,
        &["replay", "--url", "file:///nonexistent", "--path", "x", "--from", "2026-01-01", "--to-topic", &tgt_window, "--from-time", "yesterday"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("RFC 3339"), "{}", String::from_utf8_lossy(&o.stderr));

    // --create-topic recreates the compacted topic from the settings the writer recorded: its
    // partition count, its cleanup policy, and a setting asked to differ.
    let everything = read_all_with(&stack.storage(&container), true).await;
    let settings: Vec<(&String, &Vec<u8>)> = everything.iter().filter(|(k, _)| k.starts_with("records/compact/_kbackup/topic/")).collect();
    assert_eq!(settings.len(), 1, "the writer recorded the settings once: {:?}", everything.keys().collect::<Vec<_>>());
    eprintln!("recorded settings ({}):\n{}", settings[0].0, String::from_utf8_lossy(settings[0].1));
    let created = unique("reccreated");
    let ckpt = dir.path().join("created.progress");
    let mut args = vec!["replay", "--config", cfg_s, "--topic", &compact, "--to-topic", &created, "--offset-order", "--create-topic"];
    args.extend_from_slice(&["--topic-config", "delete.retention.ms=3600000", "--checkpoint", ckpt.to_str().unwrap()]);
    args.extend_from_slice(&all_dates);
    let out = run_ok(&stack, &args);
    assert!(out.contains(&format!("created topic {created} like {compact}: 2 partitions")) && out.contains("cleanup.policy=compact"), "{out}");
    let got = read_records(&stack, &created, 2);
    for (p, recs) in &sent_compact {
        assert_eq!(&got[p], recs, "{created} partition {p}");
    }
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &stack.brokers).create().unwrap();
    let described =
        admin.describe_configs(&[rdkafka::admin::ResourceSpecifier::Topic(&created)], &rdkafka::admin::AdminOptions::new()).await.unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    let value = |k: &str| resource.get(k).and_then(|e| e.value.clone()).unwrap_or_default();
    assert_eq!((value("cleanup.policy"), value("delete.retention.ms")), ("compact".to_string(), "3600000".to_string()));
    // A second run finds it there and says so.
    let out = run_ok(&stack, &args);
    assert!(out.contains(&format!("topic {created} exists: not created")), "{out}");

    // A dry run shows what it would send, and sends nothing.
    let mut args = vec!["replay", "--config", cfg_s, "--topic", &src, "--to-topic", &tgt, "--offset-order", "--dry-run", "--show"];
    args.extend_from_slice(&all_dates);
    let shown = run_ok(&stack, &args);
    assert_eq!(shown.lines().filter(|l| l.contains(" offset ")).count(), 300, "{shown}");
    assert!(shown.contains("tombstone") && shown.contains("partition 2 offset 99 "), "{shown}");
    assert_eq!(stack.end_offsets(&tgt, 3), vec![100, 100, 100]);

    // cat prints either form: the values as Secor would have stored them, or the envelopes.
    let mut args = vec!["cat", "--config", cfg_s, "--topic", &src, "--format", "value"];
    args.extend_from_slice(&all_dates);
    let values = run_ok(&stack, &args);
    let mut want_values: Vec<String> =
        sent.values().flatten().map(|r| String::from_utf8_lossy(&r.value.clone().unwrap_or_default()).replace(['\n', '\r'], " ")).collect();
    let mut got_values: Vec<String> = values.lines().map(String::from).collect();
    want_values.sort();
    got_values.sort();
    assert_eq!(got_values, want_values);
    let mut args = vec!["cat", "--config", cfg_s, "--topic", &src];
    args.extend_from_slice(&all_dates);
    let stored = run_ok(&stack, &args);
    assert_eq!(stored.lines().count(), 300);
    assert!(stored.lines().all(|l| l.starts_with("{\"v\":1,\"partition\":")), "{stored}");
}

/// verify is not fooled: a record stored with the wrong header is a missing offset plus an
/// unverifiable line, though its value is right.
/// `format = "record"` in Parquet files: the timestamp type and the headers are columns too,
/// and the files read back as the record lines a text record file holds, so `verify` compares
/// whole records and `replay` restores them, headers and all.
#[tokio::test(flavor = "multi_thread")]
async fn records_in_parquet_round_trip_exactly() {
    let Some(stack) = stack() else { return };
    let src = unique("recpq");
    stack.create_topic(&src, 3).await;
    let sent = produce(&stack, &src, 3, 150, false).await;
    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let topics = topic_section(&src, "records/pq", "format = \"record\"\nfile_format = \"parquet\"\nmax_file_bytes = 6000");
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topics, 3600));
    let cfg_s = cfg.to_str().unwrap();
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(120)), 0, "{}", run.log_text());
    assert_eq!(stack.committed(&group, &src, 3), stack.end_offsets(&src, 3));
    let blobs = read_all(&stack.storage(&container)).await;
    assert!(blobs.len() > 3, "several files per partition: {:?}", blobs.keys().collect::<Vec<_>>());
    for key in blobs.keys() {
        assert!(key.ends_with(".records.parquet"), "the name shows the format: {key}");
    }
    let report = run_ok(&stack, &["verify", "--config", cfg_s, "--topic", &src, "--to-end"]);
    assert!(report.trim_end().ends_with("clean") && report.contains("150 expected, 150 lines"), "{report}");
    // cat prints the record lines, one JSON object each.
    let printed = run_ok(&stack, &["cat", "--config", cfg_s, "--topic", &src, "--from", "1970-01-01", "--to", "2099-12-31"]);
    assert_eq!(printed.lines().count(), 150);
    let with_headers =
        printed.lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["headers"].as_array().is_some_and(|h| h.len() == 4));
    assert_eq!(with_headers.count(), 100, "every record's headers kept");
    let tgt = unique("recpqtgt");
    stack.create_topic(&tgt, 3).await;
    // Its progress file in the test's directory, not the working directory.
    let ckpt = dir.path().join(format!("{tgt}.progress"));
    let args = [
        "replay",
        "--config",
        cfg_s,
        "--topic",
        &src,
        "--to-topic",
        &tgt,
        "--offset-order",
        "--from",
        "1970-01-01",
        "--to",
        "2099-12-31",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    run_ok(&stack, &args);
    assert_eq!(read_records(&stack, &tgt, 3), sent, "the same records, partition by partition, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_compares_whole_records() {
    let Some(stack) = stack() else { return };
    let src = unique("recv");
    stack.create_topic(&src, 1).await;
    produce(&stack, &src, 1, 20, false).await;
    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&src, "records/v", "format = \"record\""), 3600));
    let cfg_s = cfg.to_str().unwrap();
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(120)), 0, "{}", run.log_text());
    let report = run_ok(&stack, &["verify", "--config", cfg_s, "--topic", &src]);
    assert!(report.trim_end().ends_with("clean"), "{report}");

    // Rewrite one file with a header value changed in one record.
    let storage = stack.storage(&container);
    let blobs = read_all(&storage).await;
    let (key, data) = blobs.iter().find(|(_, d)| d.windows(5).any(|w| w == b"\"t-1\"")).expect("a file with record 1");
    let text = String::from_utf8(data.clone()).unwrap().replacen("\"t-1\"", "\"t-X\"", 1);
    use object_store::ObjectStoreExt;
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    storage.store.put(&object_store::path::Path::from(key.as_str()), gz.into()).await.unwrap();
    let o = kbackup(&stack, &["verify", "--config", cfg_s, "--topic", &src, "--json"]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let p0: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(p0["missing_offsets"], serde_json::json!([1]), "{out}");
    assert_eq!(p0["unverifiable_lines"], 1, "{out}");
}

/// A crash after an upload, before its commit: the next writer rebuilds record files under
/// their recorded names from re-read records, which only works if encoding is deterministic
/// (a rebuilt file that differed would be refused as "exists with different content").
#[tokio::test(flavor = "multi_thread")]
async fn record_files_are_rebuilt_identically_after_a_crash() {
    let Some(stack) = stack() else { return };
    let src = unique("reccrash");
    stack.create_topic(&src, 3).await;
    produce(&stack, &src, 3, 150, false).await;
    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let section = topic_section(&src, "records/crash", "format = \"record\"\nmax_file_bytes = 1500");
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &section, 3600));
    let mut crashed =
        Running::start_with_env(&stack, &cfg, dir.path().join("crash.log"), &["--until-caught-up"], &[("KBACKUP_FAILPOINT", "uploaded:5")]);
    assert_ne!(crashed.wait(Duration::from_secs(90)), 0, "the failpoint was never reached:\n{}", crashed.log_text());
    produce(&stack, &src, 3, 30, false).await;
    let mut again = Running::start(&stack, &cfg, dir.path().join("recover.log"), &["--until-caught-up"]);
    assert_eq!(again.wait(Duration::from_secs(90)), 0, "{}", again.log_text());
    assert!(again.log_text().contains("resuming from recorded upload intents"), "{}", again.log_text());
    assert_eq!(stack.committed(&group, &src, 3), stack.end_offsets(&src, 3));
    // Every retained record stored exactly once, whole, in its place.
    let report = run_ok(&stack, &["verify", "--config", cfg.to_str().unwrap(), "--topic", &src, "--to-end"]);
    assert!(report.trim_end().ends_with("clean"), "{report}");
    assert!(report.contains("180 expected, 180 lines"), "{report}");
}

/// Issue 28: earlier builds filed tombstones and non-JSON records under `invalid_date`. This
/// version recovers a record topic from an earlier build that crashed with files uploaded but
/// not committed (its intents name those places, without `"r"`: recovery matches those records
/// there), stores every record once, and restores a
/// window of record times exactly: the records of the window under `invalid_date` are counted
/// without `--include-invalid-date` and sent with it.
#[tokio::test(flavor = "multi_thread")]
async fn records_of_an_earlier_build_are_recovered_and_restored_by_window() {
    let Some(previous) = previous_kbackup() else { return };
    let Some(stack) = stack() else { return };
    let src = unique("recup");
    stack.create_topic(&src, 3).await;
    let sent = produce(&stack, &src, 3, 300, false).await;
    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let topics = topic_section(&src, "records/up", "format = \"record\"\nmax_file_bytes = 3000");
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topics, 3600));
    let cfg_s = cfg.to_str().unwrap();

    // The earlier build crashes right after its third upload, before committing it. Its storage
    // answers every request after 1.5 s, so by then it has read every record and sealed and
    // recorded every full file, its invalid_date files among them: the crash record holds
    // intents of both places. (At full speed it could crash before any invalid_date file was
    // full, and the test would miss what it is about: CI saw that.)
    let (proxy, via) = stack.through_proxy(common::proxy::Faults { slow: 1.0, ..Default::default() }, 28).await;
    let old_dir = tempfile::tempdir().unwrap();
    let old_cfg = write_config(old_dir.path(), &config(&via, &container, &group, &topics, 3600));
    let mut old =
        Running::start_binary(&previous, &via, &old_cfg, dir.path().join("old.log"), &["--until-caught-up"], &[("KBACKUP_FAILPOINT", "uploaded:3")]);
    assert_ne!(old.wait(Duration::from_secs(120)), 0, "the failpoint was never reached:\n{}", old.log_text());
    drop(proxy);
    let mut new = Running::start(&stack, &cfg, dir.path().join("new.log"), &["--until-caught-up"]);
    assert_eq!(new.wait(Duration::from_secs(120)), 0, "{}", new.log_text());
    assert!(new.log_text().contains("resuming from recorded upload intents"), "{}", new.log_text());
    for line in new.log_text().lines().filter(|l| l.contains("recorded upload intents") || l.contains("rebuilding") || l.contains("writer stopped")) {
        eprintln!("{line}");
    }
    assert_eq!(stack.committed(&group, &src, 3), stack.end_offsets(&src, 3));

    // Every record once, in the earlier build's invalid bucket or under its record time.
    let blobs = read_all(&stack.storage(&container)).await;
    let lines = |k: &str| -> Vec<serde_json::Value> {
        blobs[k].split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
    };
    let mut seen: Vec<(i64, i64)> =
        blobs.keys().flat_map(|k| lines(k)).map(|v| (v["partition"].as_i64().unwrap(), v["offset"].as_i64().unwrap())).collect();
    seen.sort();
    let n = seen.len();
    seen.dedup();
    assert_eq!((n, seen.len()), (300, 300), "every record stored exactly once");
    let invalid_keys: Vec<&String> = blobs.keys().filter(|k| k.contains("/1970-01-01-")).collect();
    assert!(!invalid_keys.is_empty(), "the earlier build filed some records under invalid_date: {:?}", blobs.keys().collect::<Vec<_>>());
    let report = run_ok(&stack, &["verify", "--config", cfg_s, "--topic", &src, "--to-end"]);
    assert!(report.trim_end().ends_with("clean"), "{report}");

    // A window that cuts through the records: [first + 50, first + 250).
    let first = sent.values().flatten().filter_map(|r| r.timestamp).min().unwrap();
    let window = first + 50..first + 250;
    let under_invalid = invalid_keys.iter().flat_map(|k| lines(k)).filter(|v| window.contains(&v["timestamp"].as_i64().unwrap())).count();
    assert!(under_invalid > 0, "the window holds records under invalid_date");
    let today = chrono::Utc::now().date_naive();
    let (from_day, to_day) = ((today - chrono::Days::new(2)).to_string(), (today + chrono::Days::new(1)).to_string());
    let (from_time, to_time) = (window.start.to_string(), window.end.to_string());
    let window_args = ["--from", from_day.as_str(), "--to", to_day.as_str(), "--from-time", &from_time, "--to-time", &to_time];

    let tgt = unique("recupt");
    stack.create_topic(&tgt, 3).await;
    let ckpt = dir.path().join("dry.progress");
    let mut args =
        vec!["replay", "--config", cfg_s, "--topic", &src, "--to-topic", &tgt, "--offset-order", "--dry-run", "--checkpoint", ckpt.to_str().unwrap()];
    args.extend_from_slice(&window_args);
    let out = run_ok(&stack, &args);
    eprintln!("dry run:\n{out}");
    assert!(out.contains(&format!("would send {} events", 200 - under_invalid)), "{out}");
    assert!(out.contains(&format!("not sent: {under_invalid} record(s) of the window filed under invalid_date 1970-01-01")), "{out}");

    let ckpt = dir.path().join("window.progress");
    let mut args = vec![
        "replay",
        "--config",
        cfg_s,
        "--topic",
        &src,
        "--to-topic",
        &tgt,
        "--offset-order",
        "--include-invalid-date",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    args.extend_from_slice(&window_args);
    let out = run_ok(&stack, &args);
    eprintln!("window restore:\n{out}");
    assert!(out.contains("sent 200 events"), "{out}");
    let got = read_records(&stack, &tgt, 3);
    for (p, recs) in &sent {
        let want: Vec<&Rec> = recs.iter().filter(|r| window.contains(&r.timestamp.unwrap())).collect();
        let got: Vec<&Rec> = got.get(p).map(|v| v.iter().collect()).unwrap_or_default();
        assert_eq!(got, want, "{tgt} partition {p}: the window, record for record, in order");
    }
}

/// Issue 28's restore, as a user tries it: 600 records over three partitions (JSON values,
/// binary keys, headers, non-JSON values, tombstones) and a compacted topic, with record times
/// from 23:55 to 00:05 around the last IST midnight, backed up whole; then a window that cuts
/// through the day, 23:58:00.000 to 00:03:00.000, restored into topics that `--create-topic`
/// makes like the sources. Each target holds exactly the window's records, record for record,
/// in order, and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn a_window_across_midnight_is_restored_exactly_into_recreated_topics() {
    let Some(stack) = stack() else { return };
    let (src, compact) = (unique("recwin"), unique("recwinc"));
    stack.create_topic_with(&src, 3, &[("retention.ms", "1209600000")]).await;
    stack.create_topic_with(&compact, 2, &[("cleanup.policy", "compact")]).await;
    let ist = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
    let midnight =
        chrono::Utc::now().with_timezone(&ist).date_naive().and_hms_opt(0, 0, 0).unwrap().and_local_timezone(ist).unwrap().timestamp_millis();
    let recs = |n: usize, compacted: bool| -> Vec<Rec> {
        (0..n).map(|i| Rec { timestamp: Some(midnight - 300_000 + (i as i64) * 600_000 / n as i64), ..record(i, midnight, compacted) }).collect()
    };
    let sent = produce_recs(&stack, &src, 3, recs(600, false)).await;
    let sent_compact = produce_recs(&stack, &compact, 2, recs(200, true)).await;

    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let topics = format!(
        "{}{}",
        topic_section(&src, "win/src", "format = \"record\"\nmax_file_bytes = 6000"),
        topic_section(&compact, "win/compact", "format = \"record\"\nmax_file_bytes = 3000")
    );
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topics, 3600));
    let cfg_s = cfg.to_str().unwrap();
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(120)), 0, "{}", run.log_text());

    let (from_time, to_time) = (midnight - 120_000, midnight + 180_000);
    let day = chrono::DateTime::from_timestamp_millis(midnight).unwrap().with_timezone(&ist).date_naive();
    let (yesterday, today) = ((day - chrono::Days::new(1)).to_string(), day.to_string());
    let (from_s, to_s) = (chrono::DateTime::from_timestamp_millis(from_time).unwrap().with_timezone(&ist).to_rfc3339(), to_time.to_string());
    for (from, parts, sent) in [(&src, 3, &sent), (&compact, 2, &sent_compact)] {
        let target = unique("recwint");
        let ckpt = dir.path().join(format!("{target}.progress"));
        let args = [
            "replay",
            "--config",
            cfg_s,
            "--topic",
            from,
            "--to-topic",
            &target,
            "--offset-order",
            "--create-topic",
            "--from",
            &yesterday,
            "--to",
            &today,
            "--from-time",
            &from_s,
            "--to-time",
            &to_s,
            "--checkpoint",
            ckpt.to_str().unwrap(),
        ];
        let out = run_ok(&stack, &args);
        eprintln!("kbackup {}\n{out}", args.join(" "));
        assert!(out.contains(&format!("created topic {target} like {from}: {parts} partitions")), "{out}");
        let want: BTreeMap<i32, Vec<Rec>> = sent
            .iter()
            .map(|(p, recs)| (*p, recs.iter().filter(|r| (from_time..to_time).contains(&r.timestamp.unwrap())).cloned().collect()))
            .collect();
        let n: usize = want.values().map(Vec::len).sum();
        let outside: usize = sent.values().map(Vec::len).sum::<usize>() - n;
        assert!(out.contains(&format!("sent {n} events")) && out.contains(&format!("left out {outside} record(s)")), "{out}");
        assert!(
            want.values().flatten().any(|r| r.value.is_none()) && want.values().flatten().any(|r| r.timestamp.unwrap() < midnight),
            "the window holds tombstones and both days"
        );
        let got = read_records(&stack, &target, parts);
        for p in 0..parts {
            assert_eq!(got.get(&p).cloned().unwrap_or_default(), want[&p], "{target} partition {p}: the window, record for record");
        }
    }
}
