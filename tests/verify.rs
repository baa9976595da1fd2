//! `kbackup verify` finds missing, doubled and misfiled events, and passes a clean backup.

mod common;

use std::time::Duration;

use common::*;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

const IST_MIDNIGHT: i64 = 1_580_495_400_000;

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_clean_then_missing_and_duplicated() {
    let Some(stack) = stack() else { return };
    let topic = unique("verify");
    stack.create_topic(&topic, 2).await;
    let producer = stack.producer();
    for i in 0..100 {
        let v = format!(r#"{{"mid":"v-{i}","syncts":{}}}"#, IST_MIDNIGHT + (i % 2) * 1000 - 500);
        stack.produce(&producer, &topic, (i % 2) as i32, None, v.as_bytes()).await;
    }
    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "unique/raw", "max_file_bytes = 800"), 3600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(90)), 0, "{}", run.log_text());

    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--config", cfg.to_str().unwrap(), "--topic", topic.as_str()];
        args.extend_from_slice(extra);
        let out = kbackup(&stack, &args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("100 expected, 100 lines"), "{out}");
    assert!(out.trim_end().ends_with("clean"), "{out}");

    // Double one file under another name and delete another: both must be reported.
    let storage = stack.storage(&container);
    let blobs = read_all(&storage).await;
    let mut keys = blobs.keys().filter(|k| k.contains("-0-"));
    let doubled = keys.next().unwrap().clone();
    let deleted = keys.next().unwrap().clone();
    let copy = doubled.replace(".json.gz", "").rsplit_once('-').map(|(a, _)| format!("{a}-1.json.gz")).unwrap();
    let raw = storage.store.get(&ObjectPath::from(doubled.as_str())).await.unwrap().bytes().await.unwrap();
    storage.store.put(&ObjectPath::from(copy.as_str()), raw.to_vec().into()).await.unwrap();
    storage.store.delete(&ObjectPath::from(deleted.as_str())).await.unwrap();
    let doubled_lines = blobs[&doubled].iter().filter(|&&b| b == b'\n').count();
    let deleted_lines = blobs[&deleted].iter().filter(|&&b| b == b'\n').count();

    let (code, out) = verify(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("missing {deleted_lines} (offsets")), "{out}");
    assert!(out.contains(&format!("duplicated {doubled_lines} (offsets")), "{out}");
    assert!(out.contains(&format!("duplicated mids {doubled_lines}")), "{out}");
    // Partition 1 is untouched and stays clean.
    let (code, out) = verify(&["--partitions", "1", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let r: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(r["expected"], 50);
    assert_eq!(r["missing_offsets"].as_array().unwrap().len(), 0);
}

fn verify_cmd(stack: &Stack, cfg: &std::path::Path, topic: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["verify", "--config", cfg.to_str().unwrap(), "--topic", topic];
    args.extend_from_slice(extra);
    let out = kbackup(stack, &args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Every case that once printed "clean" (or a false alarm), on one backup: each must now be
/// reported, with exit 1 (or 2 for bad arguments), and the untouched backup stays clean.
#[tokio::test(flavor = "multi_thread")]
async fn verify_is_never_wrongly_clean() {
    let Some(stack) = stack() else { return };
    let topic = unique("verify-false");
    stack.create_topic(&topic, 4).await;
    let producer = stack.producer();
    for i in 0..200 {
        let v = format!(r#"{{"mid":"f-{i}","eid":"IMPRESSION","syncts":{}}}"#, IST_MIDNIGHT + (i % 3) * 1000 - 1500);
        stack.produce(&producer, &topic, (i % 4) as i32, None, v.as_bytes()).await;
    }
    // A raw newline inside a string: invalid JSON, filed under the invalid date; its stored
    // copy (newline written as a space) is valid JSON, and verify must not call it misdated.
    stack.produce(&producer, &topic, 1, None, b"{\"mid\":\"nl\",\"syncts\":1580495403199,\"x\":\"a\nb\"}").await;
    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "unique/raw", "max_file_bytes = 2000"), 3600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(90)), 0, "{}", run.log_text());

    let (code, out, err) = verify_cmd(&stack, &cfg, &topic, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("201 expected, 201 lines"), "{out}");
    assert!(out.contains("misplaced 0, unverifiable 0"), "{out}");
    assert!(out.trim_end().ends_with("clean"), "{out}");

    // Bad ranges and partitions are usage errors, not an empty (clean) audit.
    let (code, _, err) = verify_cmd(&stack, &cfg, &topic, &["--from", "2020-02-03", "--to", "2020-02-01"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--from 2020-02-03 is after --to 2020-02-01"), "{err}");
    let (code, _, err) = verify_cmd(&stack, &cfg, &topic, &["--partitions", "9"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("has 4 partitions") && err.contains("no partition 9"), "{err}");
    let (code, _, err) = verify_cmd(&stack, &cfg, &topic, &["--partitions", "0-2147483647"]);
    assert_eq!(code, Some(2), "{err}");

    let storage = stack.storage(&container);
    let blobs = read_all(&storage).await;
    let put = |key: String, data: Vec<u8>| {
        let s = &storage;
        async move { s.store.put(&ObjectPath::from(key.as_str()), data.into()).await.unwrap() }
    };
    let del = |key: String| {
        let s = &storage;
        async move { s.store.delete(&ObjectPath::from(key.as_str())).await.unwrap() }
    };
    let p2 = blobs.keys().find(|k| k.contains("/2020-02-01-2-")).unwrap().clone();
    let raw = storage.store.get(&ObjectPath::from(p2.as_str())).await.unwrap().bytes().await.unwrap().to_vec();

    // A partition-2 file copied under a partition-3 name: Kafka holds partition 3 from offset
    // 0, so its lines are from another partition.
    let moved = "unique/raw/2020-02-01-3-1.json.gz".to_string();
    put(moved.clone(), raw.clone()).await;
    let (code, out, _) = verify_cmd(&stack, &cfg, &topic, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not from this partition"), "{out}");
    del(moved).await;

    // A copy under an old-style <date>-<ts> name is a duplicate.
    let old = "unique/raw/2020-02-01-1580495403199.json.gz".to_string();
    put(old.clone(), raw.clone()).await;
    let (code, out, _) = verify_cmd(&stack, &cfg, &topic, &[]);
    assert_eq!(code, Some(1), "{out}");
    let lines = blobs[&p2].iter().filter(|&&b| b == b'\n').count();
    assert!(out.contains(&format!("duplicated {lines} (offsets")), "{out}");
    // Only partition 2 is audited: still a duplicate there.
    let (code, out, _) = verify_cmd(&stack, &cfg, &topic, &["--partitions", "2"]);
    assert_eq!(code, Some(1), "{out}");
    del(old).await;

    // The same file under another date: misplaced (and its own date's lines doubled).
    let misdated = p2.replace("2020-02-01-2-", "2020-02-02-2-");
    put(misdated.clone(), raw.clone()).await;
    let (code, out, _) = verify_cmd(&stack, &cfg, &topic, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("misplaced {lines}")), "{out}");
    del(misdated).await;

    // A group that never committed proves nothing.
    std::fs::create_dir_all(dir.path().join("g2")).unwrap();
    let cfg2 = write_config(&dir.path().join("g2"), &std::fs::read_to_string(&cfg).unwrap().replace(&group, "never-committed-group"));
    let (code, out, _) = verify_cmd(&stack, &cfg2, &topic, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("never committed"), "{out}");
    let (code, out, _) = verify_cmd(&stack, &cfg2, &topic, &["--to-end"]);
    assert_eq!(code, Some(0), "--to-end audits without a commit: {out}");

    // A corrupt file: named, and with --skip-corrupt the audit goes on but is not clean.
    let corrupt = "unique/raw/2020-02-01-0-2.json.gz".to_string();
    put(corrupt.clone(), raw[..raw.len() / 2].to_vec()).await;
    let (code, _, err) = verify_cmd(&stack, &cfg, &topic, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&corrupt) && err.contains("--skip-corrupt"), "{err}");
    let (code, out, _) = verify_cmd(&stack, &cfg, &topic, &["--skip-corrupt", "--json"]);
    assert_eq!(code, Some(1), "{out}");
    let total: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(total["clean"], false, "{out}");
    assert_eq!(total["report"]["corrupt_files"][0], corrupt.as_str(), "{out}");
    del(corrupt).await;

    // Its reader going away ends verify quietly (it panicked on the broken pipe).
    let mut child = kbackup(&stack, &["verify", "--config", cfg.to_str().unwrap(), "--topic", &topic])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(first.starts_with("partition 0"), "{first}");
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");

    // And the backup itself is still clean.
    let (code, out, _) = verify_cmd(&stack, &cfg, &topic, &[]);
    assert_eq!(code, Some(0), "{out}");
}

/// Every accepted `file_pattern` / `date_format`: what `run` writes, `ls` lists and `verify`
/// finds clean (each once listed 0 files and reported "missing 1000"), `error_path` files
/// included; a pattern that would give every file the same name is refused before anything runs.
#[tokio::test(flavor = "multi_thread")]
async fn every_accepted_layout_is_listed_and_verified() {
    let Some(stack) = stack() else { return };
    let layouts = [
        ("{partition}-{kafkaPartition}-{currentTimestamp}-{randomHex}.json", "%Y-%m-%d", ""),
        ("{partition}-{topic}-{currentTimestamp}.json", "%Y-%m-%d", ""),
        ("{partition}_{kafkaPartition}_{currentTimestamp}.json", "%Y-%m-%d", ""),
        ("{partition}-{kafkaPartition}-{currentTimestamp}.json", "%Y%m%d", ""),
        ("{partition}-{kafkaPartition}-{currentTimestamp}.json", "%d-%m-%Y", "error_path = \"errors/@N\""),
        (
            "{partition}-{kafkaPartition}-{fmOffset}.json",
            "%Y-%m-%d",
            "prefix_field = \"eid\"\nprefix_map = { ME_WORKFLOW_SUMMARY = \"summary\", DEFAULT = \"raw\" }",
        ),
    ];
    let producer = stack.producer();
    let mut sections = String::new();
    let mut topics = Vec::new();
    for (i, (pattern, date_format, extra)) in layouts.iter().enumerate() {
        let topic = unique(&format!("layout{i}"));
        stack.create_topic(&topic, 3).await;
        for n in 0..120 {
            let eid = if n % 5 == 0 { "ME_WORKFLOW_SUMMARY" } else { "IMPRESSION" };
            let v = format!(r#"{{"mid":"{i}-{n}","eid":"{eid}","syncts":{}}}"#, IST_MIDNIGHT + (n % 2) * 1000 - 500);
            stack.produce(&producer, &topic, (n % 3) as i32, None, v.as_bytes()).await;
        }
        // Two invalid events (not JSON) per topic, for the invalid bucket / error_path.
        stack.produce(&producer, &topic, 0, None, b"not json").await;
        stack.produce(&producer, &topic, 2, None, b"{broken").await;
        let extra = extra.replace("@N", &i.to_string());
        sections.push_str(&topic_section(
            &topic,
            &format!("layout{i}"),
            &format!("file_pattern = \"{pattern}\"\ndate_format = \"{date_format}\"\nmax_file_bytes = 1500\n{extra}"),
        ));
        topics.push(topic);
    }
    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &sections, 3600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(120)), 0, "{}", run.log_text());
    let blobs = read_all(&stack.storage(&container)).await;

    for (i, topic) in topics.iter().enumerate() {
        let stored: usize = blobs
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("layout{i}/")) || k.starts_with(&format!("errors/{i}/")))
            .map(|(_, d)| d.iter().filter(|&&b| b == b'\n').count())
            .sum();
        assert_eq!(stored, 122, "layout {i}: {:?}", blobs.keys().collect::<Vec<_>>());
        // ls: every file of the topic, the invalid bucket's included (1970-01-01).
        let ls = kbackup(&stack, &["ls", "--config", cfg.to_str().unwrap(), "--topic", topic, "--from", "1970-01-01", "--to", "2020-12-31"])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&ls.stdout).lines().count();
        let written = blobs.keys().filter(|k| k.starts_with(&format!("layout{i}/")) || k.starts_with(&format!("errors/{i}/"))).count();
        assert_eq!(listed, written, "layout {i} ({}): ls listed {listed} of {written}: {}", layouts[i].0, String::from_utf8_lossy(&ls.stdout));
        let out = kbackup(&stack, &["verify", "--config", cfg.to_str().unwrap(), "--topic", topic, "--to-end"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "layout {i} ({}):\n{text}{}", layouts[i].0, String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("122 expected, 122 lines"), "layout {i}: {text}");
    }
    assert!(
        blobs.keys().any(|k| k.starts_with("errors/4/01-01-1970-")),
        "the invalid bucket in the topic's date format: {:?}",
        blobs.keys().collect::<Vec<_>>()
    );

    // `{partition}.json` could never give a second file a new name: refused, exit 2, naming it.
    std::fs::create_dir_all(dir.path().join("bad")).unwrap();
    let bad = write_config(
        &dir.path().join("bad"),
        &config(&stack, &container, &group, &topic_section(&topics[0], "x", "file_pattern = \"{partition}.json\""), 3600),
    );
    for cmd in ["check", "run"] {
        let o = kbackup(
            &stack,
            &[cmd, "--config", bad.to_str().unwrap(), "--metrics-addr", "off"]
                .into_iter()
                .take(if cmd == "check" { 3 } else { 5 })
                .collect::<Vec<_>>(),
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("topic[0].file_pattern"), "{cmd}: {err}");
    }
}

/// A writer that stalls leaves its group's commit behind the log end. Before, `verify` (without
/// `--to-end`) audited only up to the commit and said clean over a partition 19,000 events
/// behind; now it says how far behind each partition's commit is and how old the oldest message
/// above it is, and is not clean past the topic's file age plus its completion grace (or
/// `--max-lag`), so the daily audit catches a stalled writer (issue 34).
#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_a_commit_far_behind_the_log_end() {
    let Some(stack) = stack() else { return };
    let topic = unique("verify-lag");
    stack.create_topic(&topic, 2).await;
    let producer = stack.producer();
    let now = chrono::Utc::now().timestamp_millis();
    let send = |p: i32, i: i64, record_ms: i64| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            let v = format!(r#"{{"mid":"lag-{p}-{i}","syncts":{}}}"#, now + i);
            let rec = rdkafka::producer::FutureRecord::<str, [u8]>::to(&topic).partition(p).payload(v.as_bytes()).timestamp(record_ms);
            producer.send(rec, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        }
    };
    for i in 0..10 {
        send(0, i, now).await;
        send(1, i, now).await;
    }
    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "unique/raw", ""), 600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(90)), 0, "{}", run.log_text());
    // After the writer: partition 0 gets messages two hours old (a writer that stopped long
    // ago), partition 1 fresh ones (a writer that is a moment behind).
    for i in 10..15 {
        send(0, i, now - 7_200_000).await;
        send(1, i, now).await;
    }
    let (code, out, err) = verify_cmd(&stack, &cfg, &topic, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("partition 0: kafka [0, 15) committed 10 (5 behind the end, the oldest 72"), "{out}");
    assert!(out.contains("BEHIND: 5 message(s) above the group's commit"), "{out}");
    assert!(out.contains("partition 1: kafka [0, 15) committed 10 (5 behind the end, the oldest "), "{out}");
    assert_eq!(out.matches("BEHIND").count(), 1, "a partition a moment behind is not flagged:\n{out}");
    assert!(out.contains("behind the commit 10"), "{out}");
    // The operator's own limit: a day is fine, a minute is not (for either, once they age).
    let (code, out, _) = verify_cmd(&stack, &cfg, &topic, &["--max-lag", "1d"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out, _) = verify_cmd(&stack, &cfg, &topic, &["--max-lag", "1m", "--partitions", "0", "--json"]);
    assert_eq!(code, Some(1), "{out}");
    let r: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!((r["behind"].as_u64(), r["lagging"].as_bool(), r["clean"].as_bool()), (Some(5), Some(true), Some(false)), "{out}");
    assert!(r["behind_secs"].as_u64().unwrap() >= 7_200, "{out}");
    let (code, _, err) = verify_cmd(&stack, &cfg, &topic, &["--max-lag", "soon"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--max-lag"), "{err}");
}
