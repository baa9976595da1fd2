//! `kbackup run` end to end on the real stack: every message in exactly one blob, in the blob
//! named for its own Kafka partition and IST date, and committed offsets equal to end offsets.

mod common;

use std::time::Duration;

use common::*;

use rdkafka::producer::FutureRecord;

const IST_MIDNIGHT: i64 = 1_580_495_400_000; // 2020-02-01T00:00+05:30 = 2020-01-31T18:30Z

#[tokio::test(flavor = "multi_thread")]
async fn dates_partitions_and_bad_input_land_exactly_once() {
    let Some(stack) = stack() else { return };
    let topic = unique("unique");
    let partitions = 4;
    stack.create_topic(&topic, partitions).await;
    let producer = stack.producer();
    let mut expected = Vec::new();
    let mut n = 0;
    let send = |key: Option<String>, value: Vec<u8>, record_ts: Option<i64>, date: &str| {
        let (topic, producer, date) = (topic.clone(), producer.clone(), date.to_string());
        async move {
            let mut rec = FutureRecord::<str, [u8]>::to(&topic).payload(&value[..]);
            if let Some(k) = &key {
                rec = rec.key(k.as_str());
            }
            if let Some(ts) = record_ts {
                rec = rec.timestamp(ts);
            }
            let d = producer.send(rec, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
            Expect { line: value, partition: d.partition, date, dir: String::new() }
        }
    };
    for i in 0..40 {
        n += 1;
        let did = format!("device-{}", i % 13);
        // Just before and just after IST midnight: different files for the same partition.
        let (syncts, date) = if i % 2 == 0 { (IST_MIDNIGHT - 1 - i, "2020-01-31") } else { (IST_MIDNIGHT + i, "2020-02-01") };
        let v = format!(r#"{{"eid":"IMPRESSION","mid":"m-{n}","context":{{"did":"{did}"}},"syncts":{syncts},"@timestamp":"2020-01-01T00:00:00Z"}}"#);
        expected.push(send(Some(did), v.into_bytes(), None, date).await);
    }
    // @timestamp only: read as a full RFC 3339 instant, 20:00Z Jan 31 is 01:30 IST Feb 1.
    for i in 0..5 {
        let v = format!(r#"{{"eid":"LOG","mid":"ts-{i}","context":{{"did":"d{i}"}},"@timestamp":"2020-01-31T20:00:00.000Z"}}"#);
        expected.push(send(Some(format!("d{i}")), v.into_bytes(), None, "2020-02-01").await);
    }
    // No usable timestamp: the Kafka record time decides (deterministic, unlike Secor's clock).
    for i in 0..5 {
        let v = format!(r#"{{"eid":"LOG","mid":"nots-{i}","context":{{"did":"e{i}"}}}}"#);
        expected.push(send(Some(format!("e{i}")), v.into_bytes(), Some(IST_MIDNIGHT + 3_600_000), "2020-02-01").await);
    }
    // Not JSON, not UTF-8, and an empty value: the invalid date, never dropped.
    expected.push(send(Some("x".into()), b"this is not json".to_vec(), None, "1970-01-01").await);
    expected.push(send(Some("y".into()), b"\xff\xfe binary \x00".to_vec(), None, "1970-01-01").await);
    expected.push(send(Some("z".into()), Vec::new(), None, "1970-01-01").await);
    // Pretty-printed JSON: its newlines are written as spaces so it stays one line.
    let pretty = b"{\n  \"mid\": \"pretty\",\n  \"syncts\": 1580495400000\n}".to_vec();
    let mut e = send(Some("p".into()), pretty, None, "2020-02-01").await;
    e.line = b"{   \"mid\": \"pretty\",   \"syncts\": 1580495400000 }".to_vec();
    expected.push(e);

    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "unique/raw", ""), 1));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &[]);
    wait_committed(&stack, &group, &topic, partitions, &mut run);
    let log = run.log.clone();
    let code = run.terminate(Duration::from_secs(60));
    let log = std::fs::read_to_string(log).unwrap();
    assert_eq!(code, 0, "{log}");

    let blobs = read_all(&stack.storage(&container)).await;
    assert_exactly_once(&blobs, "unique/raw", &expected);
    // Both dates of one partition were open at once and went to different files.
    let dates: std::collections::HashSet<_> = blobs.keys().filter_map(|k| kbackup::naming::parse_name(k)).map(|n| n.date).collect();
    assert!(dates.len() >= 3, "{:?}", blobs.keys());
    assert_eq!(stack.committed(&group, &topic, partitions), stack.end_offsets(&topic, partitions));
}

#[tokio::test(flavor = "multi_thread")]
async fn denorm_events_are_routed_by_eid() {
    let Some(stack) = stack() else { return };
    let topic = unique("denorm");
    stack.create_topic(&topic, 2).await;
    let producer = stack.producer();
    let mut expected = Vec::new();
    for i in 0..30 {
        let eid = if i % 3 == 0 { "ME_WORKFLOW_SUMMARY" } else { "INTERACT" };
        let v = format!(r#"{{"eid":"{eid}","mid":"d-{i}","syncts":{}}}"#, IST_MIDNIGHT + i);
        let p = (i % 2) as i32;
        stack.produce(&producer, &topic, p, Some("k"), v.as_bytes()).await;
        let dir = if eid == "ME_WORKFLOW_SUMMARY" { "summary" } else { "raw" };
        expected.push(Expect { line: v.into_bytes(), partition: p, date: "2020-02-01".into(), dir: dir.into() });
    }
    // Invalid messages follow the DEFAULT prefix, as Secor's prefix mapping does.
    stack.produce(&producer, &topic, 0, None, b"garbage").await;
    expected.push(Expect { line: b"garbage".to_vec(), partition: 0, date: "1970-01-01".into(), dir: "raw".into() });

    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let section = topic_section(
        &topic,
        "telemetry-denormalized",
        "prefix_field = \"eid\"\nprefix_map = { ME_WORKFLOW_SUMMARY = \"summary\", DEFAULT = \"raw\" }",
    );
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &section, 3600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    let code = run.wait(Duration::from_secs(90));
    assert_eq!(code, 0, "{}", run.log_text());
    // It left the group before exiting (it closes the consumer itself, in short steps), and
    // the close's aftermath logs no error (rdkafka's drop trying to close it again is filtered).
    assert_eq!(stack.group_members(&group), 0, "a member outlived the run");
    assert!(!run.log_text().contains(" ERROR "), "{}", run.log_text());
    let blobs = read_all(&stack.storage(&container)).await;
    assert!(blobs.keys().any(|k| k.starts_with("telemetry-denormalized/summary/2020-02-01-")), "{:?}", blobs.keys());
    assert!(blobs.keys().any(|k| k.starts_with("telemetry-denormalized/raw/2020-02-01-")), "{:?}", blobs.keys());
    assert_exactly_once(&blobs, "telemetry-denormalized", &expected);
    assert_eq!(stack.committed(&group, &topic, 2), stack.end_offsets(&topic, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_writers_split_partitions_and_a_graceful_stop_loses_nothing() {
    let Some(stack) = stack() else { return };
    let topic = unique("scale");
    let partitions = 6;
    stack.create_topic(&topic, partitions).await;
    let producer = stack.producer();
    let mut expected = Vec::new();
    let mut seq = 0;
    let mut produce_batch = |count: usize| {
        let (stack, producer, topic) = (stack.clone(), producer.clone(), topic.clone());
        let start = seq;
        seq += count;
        async move {
            let mut out = Vec::new();
            for i in start..start + count {
                let did = format!("did-{}", i % 50);
                let v = format!(r#"{{"eid":"LOG","mid":"s-{i}","context":{{"did":"{did}"}},"syncts":{}}}"#, IST_MIDNIGHT + 1000);
                let rec = FutureRecord::to(&topic).key(&did).payload(&v);
                let d = producer.send(rec, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
                out.push(Expect { line: v.into_bytes(), partition: d.partition, date: "2020-02-01".into(), dir: String::new() });
            }
            let _ = stack;
            out
        }
    };
    expected.extend(produce_batch(600).await);

    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "unique/raw", ""), 1));
    let mut a = Running::start(&stack, &cfg, dir.path().join("a.log"), &[]);
    wait_committed(&stack, &group, &topic, partitions, &mut a);
    let mut b = Running::start(&stack, &cfg, dir.path().join("b.log"), &[]);
    // B gets a share of the partitions through the cooperative-sticky rebalance.
    wait_for("the second writer to be assigned partitions", Duration::from_secs(60), || {
        (metric_with(&b.metrics_page()?, "kbackup_assigned_partitions", &[])? >= 1.0).then_some(())
    });
    expected.extend(produce_batch(600).await);
    wait_committed(&stack, &group, &topic, partitions, &mut a);
    let a_log_path = a.log.clone();
    assert_eq!(a.terminate(Duration::from_secs(60)), 0);
    // A's partitions move to B; what A had buffered was uploaded and committed before it left.
    expected.extend(produce_batch(600).await);
    wait_committed(&stack, &group, &topic, partitions, &mut b);
    let b_log = b.log.clone();
    assert_eq!(b.terminate(Duration::from_secs(60)), 0);

    let (a_log, b_log) = (std::fs::read_to_string(a_log_path).unwrap(), std::fs::read_to_string(b_log).unwrap());
    assert!(a_log.contains("uploaded"), "A uploaded nothing:\n{a_log}");
    assert!(b_log.contains("uploaded"), "B uploaded nothing:\n{b_log}");
    let blobs = read_all(&stack.storage(&container)).await;
    assert_exactly_once(&blobs, "unique/raw", &expected);
    assert_eq!(stack.committed(&group, &topic, partitions), stack.end_offsets(&topic, partitions));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_uploads_open_buffers_before_exiting() {
    let Some(stack) = stack() else { return };
    let topic = unique("term");
    stack.create_topic(&topic, 2).await;
    let producer = stack.producer();
    let mut expected = Vec::new();
    for i in 0..20 {
        let v = format!(r#"{{"mid":"t-{i}","syncts":{}}}"#, IST_MIDNIGHT + i);
        let p = (i % 2) as i32;
        stack.produce(&producer, &topic, p, None, v.as_bytes()).await;
        expected.push(Expect { line: v.into_bytes(), partition: p, date: "2020-02-01".into(), dir: String::new() });
    }
    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    // Files would only roll after an hour: everything reaches storage because of the SIGTERM.
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "unique/raw", ""), 3600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &[]);
    run.wait_consumed_to(&topic, 0..2, 10, "both partitions consumed to their end");
    let log = run.log.clone();
    let code = run.terminate(Duration::from_secs(60));
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("reason=\"shutdown\"") || text.contains("\"reason\":\"shutdown\""), "{text}");
    let blobs = read_all(&stack.storage(&container)).await;
    assert_exactly_once(&blobs, "unique/raw", &expected);
    assert_eq!(stack.committed(&group, &topic, 2), vec![10, 10]);
}

/// `--log-format json`: every stderr line is a JSON object with typed fields — the fatal error
/// and a multi-line TOML error included (they were plain text, and `committed` was the text
/// "None", the summary a Rust debug string).
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_json_on_every_line() {
    let Some(stack) = stack() else { return };
    let parse_all = |stderr: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(stderr).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(
        dir.path(),
        "[kafka]\nbrokers = \"x:1\"\n[storage]\nurl = \"file:///tmp/x\"\n[[topic]]\nname = \"t\"\npath = \"p\"\nmax_file_bytes = \"lots\"\n",
    );
    let out = kbackup(&stack, &["--log-format", "json", "run", "--config", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = parse_all(&out.stderr);
    let last = lines.last().unwrap();
    assert_eq!((last["level"].as_str(), last["exit_code"].as_i64()), (Some("ERROR"), Some(2)), "{last}");
    assert!(last["message"].as_str().unwrap().contains("max_file_bytes"), "{last}");

    let topic = unique("jsonlog");
    stack.create_topic(&topic, 2).await;
    let producer = stack.producer();
    for i in 0..20 {
        let v = format!(r#"{{"mid":"j-{i}","syncts":{}}}"#, 1_580_495_400_000i64 + i);
        stack.produce(&producer, &topic, (i % 2) as i32, None, v.as_bytes()).await;
    }
    let (container, group) = (unique("c"), unique("g"));
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "unique/raw", ""), 3600));
    let out = kbackup(&stack, &["--log-format", "json", "run", "--config", cfg.to_str().unwrap(), "--until-caught-up", "--metrics-addr", "off"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = parse_all(&out.stderr);
    for l in &lines {
        for (k, v) in l.as_object().unwrap() {
            let s = v.as_str().unwrap_or_default();
            assert!(s != "None" && !s.starts_with("Some(") && !s.contains("RunSummary {"), "field {k} is a Rust debug string: {l}");
        }
    }
    let stopped = lines.iter().find(|l| l["message"] == "writer stopped").expect("a summary line");
    assert_eq!(stopped["events"].as_u64(), Some(20), "{stopped}");
    assert_eq!(stopped["lost_offsets"].as_u64(), Some(0), "{stopped}");
}

/// A stop asked for while the writer is still starting (here: its broker never answers) ends the
/// process cleanly and at once; it used to die by the signal's default action (no exit code).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_startup_exits_cleanly() {
    let Some(stack) = stack() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (container, group) = (unique("c"), unique("g"));
    let silent = free_local_addr();
    let text = config(&stack, &container, &group, &topic_section(&unique("never"), "unique/raw", ""), 3600)
        .replace(&format!("brokers = \"{}\"", stack.brokers), &format!("brokers = \"{silent}\""));
    assert!(text.contains(&silent), "the config names the silent broker:\n{text}");
    let cfg = write_config(dir.path(), &text);
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &[]);
    run.wait_live(Duration::from_secs(30));
    let started = std::time::Instant::now();
    let log = run.log.clone();
    let code = run.terminate(Duration::from_secs(20));
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("stopped before consuming anything"), "{text}");
    eprintln!("stopped {:?} after SIGTERM", started.elapsed());
}

/// The gzip files the writer stores (ISA-L by default) are standard: `gzip -t` accepts them and
/// `gzip -dc` and Python's gzip module read back exactly the events (Spark's Hadoop codec reads
/// them in tests/spark.rs).
#[tokio::test(flavor = "multi_thread")]
async fn gzip_files_are_read_by_gzip_and_python() {
    let Some(stack) = stack() else { return };
    let topic = unique("gz");
    stack.create_topic(&topic, 2).await;
    let producer = stack.producer();
    let mut lines = Vec::new();
    for i in 0..3000 {
        let v = format!(r#"{{"mid":"gz-{i}","syncts":{},"edata":{{"pad":"{}"}}}}"#, IST_MIDNIGHT + i, "x".repeat(i as usize % 97));
        stack.produce(&producer, &topic, (i % 2) as i32, None, v.as_bytes()).await;
        lines.push(v);
    }
    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "unique/raw", "max_file_bytes = 100000"), 3600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(90)), 0, "{}", run.log_text());

    let storage = stack.storage(&container);
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let metas: Vec<_> = storage.store.list(None).try_collect().await.unwrap();
    // Backup files only: not kbackup's bookkeeping (`<path>/_kbackup/topic/*.json`).
    let metas: Vec<_> = metas.into_iter().filter(|m| !m.location.as_ref().contains("_kbackup/")).collect();
    assert!(metas.len() >= 4, "several files");
    let mut from_gzip: Vec<String> = Vec::new();
    let mut from_python: Vec<String> = Vec::new();
    for m in metas {
        let raw = storage.store.get(&m.location).await.unwrap().bytes().await.unwrap();
        let path = dir.path().join(m.location.filename().unwrap());
        std::fs::write(&path, &raw).unwrap();
        let t = std::process::Command::new("gzip").arg("-t").arg(&path).output().unwrap();
        assert!(t.status.success(), "gzip -t {}: {}", m.location, String::from_utf8_lossy(&t.stderr));
        let d = std::process::Command::new("gzip").arg("-dc").arg(&path).output().unwrap();
        from_gzip.extend(String::from_utf8(d.stdout).unwrap().lines().map(String::from));
        let py = std::process::Command::new("python3")
            .args(["-c", "import gzip, sys; sys.stdout.buffer.write(gzip.open(sys.argv[1]).read())"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
        from_python.extend(String::from_utf8(py.stdout).unwrap().lines().map(String::from));
    }
    lines.sort();
    from_gzip.sort();
    from_python.sort();
    assert_eq!(from_gzip, lines);
    assert_eq!(from_python, lines);
}
