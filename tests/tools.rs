//! The data team's and ops' tools on the real stack: `ls`, `cat`, `replay`, `plan`, over new and
//! old file names.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

const IST_MIDNIGHT: i64 = 1_580_495_400_000;

fn gz(text: &str) -> Vec<u8> {
    kbackup::seal::encode(text.as_bytes().to_vec(), kbackup::config::Compression::Gzip, 1).to_vec()
}

fn out(stack: &Stack, args: &[&str]) -> (i32, String, String) {
    let o = kbackup(stack, args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[tokio::test]
async fn ls_and_cat_over_new_and_old_names() {
    let Some(stack) = stack() else { return };
    let container = unique("c");
    let storage = stack.storage(&container);
    storage.ensure_container(true).await.unwrap();
    let corrupt = {
        let g = gz(&"x".repeat(5000));
        g[..g.len() / 2].to_vec()
    };
    let blobs: Vec<(&str, Vec<u8>)> = vec![
        ("unique/raw/2020-02-01-1-1580495403199.json.gz", gz("a1\n")),
        ("unique/raw/2020-02-01-11-1580495403300.json.gz", gz("a11\n")),
        // Old name whose timestamp starts with 1: not partition 1.
        ("unique/raw/2020-02-01-1580495403199.json.gz", gz("old1\n")),
        ("unique/raw/2020-02-02-0-1580581803199.json.gz", gz("b0\n")),
        ("unique/raw/2020-01-31-1-1580409003199.json.gz", gz("outside\n")),
        ("unique/raw/2020-02-02-2-1580581803999.json.gz", corrupt),
    ];
    for (k, v) in &blobs {
        storage.store.put(&ObjectPath::from(*k), v.clone().into()).await.unwrap();
    }
    let url = stack.url(&container);
    let sel = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> =
            ["--url", &url, "--path", "unique/raw", "--from", "2020-02-01", "--to", "2020-02-02"].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |cmd: &str, extra: &[&str]| {
        let mut args = vec![cmd.to_string()];
        args.extend(sel(extra));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        out(&stack, &refs)
    };

    let (code, stdout, _) = run("ls", &[]);
    assert_eq!(code, 0);
    let keys: Vec<&str> = stdout.lines().collect();
    assert_eq!(keys.len(), 5, "{stdout}");
    assert!(!stdout.contains("2020-01-31"), "outside the range: {stdout}");

    let (code, stdout, stderr) = run("ls", &["--partitions", "1"]);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "unique/raw/2020-02-01-1-1580495403199.json.gz");
    assert!(stderr.contains("1 old-name file(s)"), "{stderr}");
    let (_, stdout, _) = run("ls", &["--partitions", "1", "--include-unpartitioned"]);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let (_, stdout, _) = run("ls", &["--partitions", "0-1,11", "--json"]);
    let rows: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["kafka_partition"], 1);
    assert_eq!(rows[0]["date"], "2020-02-01");
    assert_eq!(rows[0]["timestamp"], 1580495403199i64);
    assert!(rows[0]["size"].as_u64().unwrap() > 0);
    let (_, stdout, _) = run("ls", &["--include-unpartitioned", "--partitions", "5", "--json"]);
    let old: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(old["kafka_partition"], serde_json::Value::Null);

    let (code, stdout, _) = run("cat", &["--partitions", "0,1", "--include-unpartitioned"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "old1\na1\nb0\n", "date, then partition (old names first), then timestamp");
    let (code, _, stderr) = run("cat", &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("2020-02-02-2-1580581803999.json.gz") && stderr.contains("corrupt"), "{stderr}");
    let (code, stdout, stderr) = run("cat", &["--skip-corrupt"]);
    // Everything readable is printed, but a skipped file is not success.
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("1 corrupt file(s) skipped"), "{stderr}");
    assert!(stdout.contains("a11\n") && stdout.contains("b0\n"));
    assert!(stderr.contains("2020-02-02-2-1580581803999.json.gz"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_and_plan() {
    let Some(stack) = stack() else { return };
    let src = unique("src");
    stack.create_topic(&src, 4).await;
    let producer = stack.producer();
    // did -> partition as the Java-compatible producer placed them.
    let mut placed: HashMap<Vec<u8>, i32> = HashMap::new();
    for i in 0..400 {
        let did = format!("device-{}", i % 37);
        let line = format!(r#"{{"mid":"r-{i}","context":{{"did":"{did}"}},"syncts":{}}}"#, IST_MIDNIGHT + (i % 2) * 1000 - 500);
        let rec = rdkafka::producer::FutureRecord::to(&src).key(&did).payload(&line);
        let d = producer.send(rec, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        placed.insert(line.into_bytes(), d.partition);
    }
    let container = unique("c");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &unique("g"), &topic_section(&src, "unique/raw", "max_file_bytes = 4000"), 3600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(90)), 0, "{}", run.log_text());
    let cfg_s = cfg.to_str().unwrap().to_string();
    let replay = |to: &str, extra: &[&str]| {
        let progress = dir.path().join(format!("{to}.progress"));
        let mut args = vec![
            "replay",
            "--config",
            &cfg_s,
            "--topic",
            &src,
            "--from",
            "2020-01-31",
            "--to",
            "2020-02-01",
            "--to-topic",
            to,
            "--checkpoint",
            progress.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        out(&stack, &refs)
    };

    // same: every event back in the partition its file names.
    let t1 = unique("same");
    stack.create_topic(&t1, 4).await;
    let (code, stdout, stderr) = replay(&t1, &["--key", "context.did"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("sent 400 events"), "{stdout}");
    let got = read_topic(&stack, &t1);
    assert_eq!(got.len(), 400);
    for (p, key, v) in &got {
        assert_eq!(placed[v], *p, "{}", String::from_utf8_lossy(v));
        assert!(key.as_deref().unwrap().starts_with(b"device-"));
    }

    // murmur2 over the same key reproduces the Java client's placement exactly.
    let t2 = unique("murmur");
    stack.create_topic(&t2, 4).await;
    let (code, _, stderr) = replay(&t2, &["--partitioner", "murmur2", "--key", "context.did"]);
    assert_eq!(code, 0, "{stderr}");
    for (p, _, v) in read_topic(&stack, &t2) {
        assert_eq!(placed[&v], p);
    }

    // java-hashcode: Samza's placement.
    let t3 = unique("samza");
    stack.create_topic(&t3, 5).await;
    let (code, _, stderr) = replay(&t3, &["--partitioner", "java-hashcode", "--key", "context.did"]);
    assert_eq!(code, 0, "{stderr}");
    for (p, key, _) in read_topic(&stack, &t3) {
        let k = String::from_utf8(key.unwrap()).unwrap();
        assert_eq!(p, kbackup::partitioner::java_hashcode_partition(&k, 5));
    }

    // Guard rails: fewer target partitions, a hashing partitioner without a key; dry run.
    let small = unique("small");
    stack.create_topic(&small, 2).await;
    let (code, _, stderr) = replay(&small, &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("needs at least 4"), "{stderr}");
    assert!(stderr.contains("no --key"), "a keyless replay breaks device affinity and says so: {stderr}");
    let empty = format!("file://{}", dir.path().display());
    let (code, _, stderr) = out(
        &stack,
        &[
            "replay",
            "--url",
            &empty,
            "--path",
            "nowhere",
            "--from",
            "2020-01-31",
            "--to-topic",
            &small,
            "--brokers",
            &stack.brokers,
            "--key",
            "context.did",
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("no backup file matched"), "{stderr}");
    let (code, _, stderr) = replay(&small, &["--partitioner", "murmur2"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--key"), "{stderr}");
    let (code, stdout, _) = replay(&small, &["--partitioner", "murmur2", "--key", "context.did", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("would send 400 events") && stdout.contains("partition 0:"), "{stdout}");
    assert!(read_topic(&stack, &small).is_empty(), "dry run sent nothing");

    // Interrupted half way (SIGTERM), then resumed: every event exactly once.
    let t4 = unique("resume");
    stack.create_topic(&t4, 4).await;
    let progress = dir.path().join(format!("{t4}.progress"));
    let mut child = kbackup(
        &stack,
        &[
            "replay",
            "--config",
            &cfg_s,
            "--topic",
            &src,
            "--from",
            "2020-01-31",
            "--to",
            "2020-02-01",
            "--to-topic",
            &t4,
            "--checkpoint",
            progress.to_str().unwrap(),
            "--rate",
            "150",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    wait_for("some events to be replayed", Duration::from_secs(30), || (stack.end_offsets(&t4, 4).iter().sum::<i64>() >= 100).then_some(()));
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "SIGTERM: 128 + 15");
    let sent_before: i64 = stack.end_offsets(&t4, 4).iter().sum();
    assert!(sent_before < 400, "interrupted before the end ({sent_before})");
    let (code, stdout, stderr) = replay(&t4, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    assert!(stdout.contains(&format!("sent {} events", 400 - sent_before)), "{stdout}");
    let got = read_topic(&stack, &t4);
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for (_, _, v) in got {
        *seen.entry(v).or_default() += 1;
    }
    assert_eq!(seen.len(), 400);
    assert!(seen.values().all(|&n| n == 1), "a resumed replay sent something twice");

    // plan: via-partition (runs), run-mode, job-manager (publishes), count from topic metadata.
    let job = dir.path().join("wfs.json");
    std::fs::write(&job, r#"{"search":{"type":"azure","queries":[{"bucket":"telemetry-data-store","prefix":"unique/raw/","endDate":"2020-02-01","delta":0}]},"model":"org.ekstep.analytics.model.WorkflowSummary","appName":"Workflow Summarizer"}"#).unwrap();
    let plan_dir = dir.path().join("plan");
    let ran = dir.path().join("ran");
    std::fs::create_dir_all(&ran).unwrap();
    let exec = format!("cp {{config}} {}/p-{{partitions}}.json", ran.display());
    let (code, stdout, stderr) = out(
        &stack,
        &[
            "plan",
            "--job-config",
            job.to_str().unwrap(),
            "--mode",
            "via-partition",
            "--parallelisation",
            "3",
            "--topic",
            &src,
            "--brokers",
            &stack.brokers,
            "--out-dir",
            plan_dir.to_str().unwrap(),
            "--exec",
            &exec,
            "--concurrency",
            "2",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.matches(": ok in").count(), 2, "{stdout}");
    let first: serde_json::Value = serde_json::from_slice(&std::fs::read(ran.join("p-0,1,2.json")).unwrap()).unwrap();
    assert_eq!(first["search"]["queries"][0]["partitions"], serde_json::json!([0, 1, 2]));
    let second: serde_json::Value = serde_json::from_slice(&std::fs::read(ran.join("p-3.json")).unwrap()).unwrap();
    assert_eq!(second["search"]["queries"][0]["partitions"], serde_json::json!([3]));
    let (code, stdout, _) = out(
        &stack,
        &[
            "plan",
            "--job-config",
            job.to_str().unwrap(),
            "--mode",
            "via-partition",
            "--partitions",
            "4",
            "--parallelisation",
            "2",
            "--out-dir",
            plan_dir.to_str().unwrap(),
            "--exec",
            "exit 3",
        ],
    );
    assert_eq!(code, 1, "failing jobs are reported: {stdout}");
    assert_eq!(stdout.matches("FAILED").count(), 2);
    let (code, stdout, _) = out(
        &stack,
        &["plan", "--job-config", job.to_str().unwrap(), "--mode", "run-mode", "--partitions", "4", "--out-dir", plan_dir.to_str().unwrap()],
    );
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    // The earlier via-partition plans' configs are gone: the directory holds this plan only.
    let names = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&plan_dir), vec!["job-all.json"]);
    // A job-manager plan missing its topic fails before it writes anything.
    let (code, _, stderr) = out(
        &stack,
        &["plan", "--job-config", job.to_str().unwrap(), "--mode", "job-manager", "--partitions", "4", "--out-dir", plan_dir.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--job-topic"), "{stderr}");
    assert_eq!(names(&plan_dir), vec!["job-all.json"], "nothing written or removed by a refused plan");
    let jobs_topic = unique("jobs");
    stack.create_topic(&jobs_topic, 1).await;
    let (code, stdout, stderr) = out(
        &stack,
        &[
            "plan",
            "--job-config",
            job.to_str().unwrap(),
            "--mode",
            "job-manager",
            "--partitions",
            "4",
            "--parallelisation",
            "2",
            "--brokers",
            &stack.brokers,
            "--job-topic",
            &jobs_topic,
            "--out-dir",
            plan_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let msgs = read_topic(&stack, &jobs_topic);
    assert_eq!(msgs.len(), 2);
    let m: serde_json::Value = serde_json::from_slice(&msgs[0].2).unwrap();
    assert_eq!(m["model"], "org.ekstep.analytics.model.WorkflowSummary");
    assert_eq!(m["config"]["search"]["queries"][0]["partitions"], serde_json::json!([0, 1]));
}

#[tokio::test]
async fn repartition_splits_old_files_by_key_beside_the_originals() {
    let Some(stack) = stack() else { return };
    let container = unique("c");
    let storage = stack.storage(&container);
    storage.ensure_container(true).await.unwrap();
    let mut lines = Vec::new();
    for (file, n) in [("unique/raw/2020-02-01-1580495403199.json.gz", 0), ("unique/raw/2020-02-01-1580499003199.json.gz", 1)] {
        let mut text = String::new();
        for i in 0..60 {
            let line = format!(r#"{{"mid":"h-{n}-{i}","context":{{"did":"dev-{}"}}}}"#, i % 17);
            text.push_str(&line);
            text.push('\n');
            lines.push(line);
        }
        storage.store.put(&ObjectPath::from(file), gz(&text).into()).await.unwrap();
    }
    let url = stack.url(&container);
    let args = [
        "repartition",
        "--url",
        &url,
        "--path",
        "unique/raw",
        "--from",
        "2020-02-01",
        "--partitioner",
        "murmur2",
        "--key",
        "context.did",
        "--partition-count",
        "4",
    ];
    let (code, stdout, stderr) = out(&stack, &args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("120 events"), "{stdout}");

    // Every event in exactly one new-name file, in the partition murmur2 gives its device.
    let blobs = read_all(&storage).await;
    assert!(blobs.contains_key("unique/raw/2020-02-01-1580495403199.json.gz"), "originals stay");
    let mut seen = HashMap::new();
    for (key, data) in &blobs {
        let n = kbackup::naming::parse_name(key).unwrap();
        let Some(p) = n.kafka_partition else { continue };
        assert!(n.timestamp_ms == Some(1580495403199) || n.timestamp_ms == Some(1580499003199), "{key} keeps the original timestamp");
        for line in String::from_utf8_lossy(data).lines() {
            let did = line.split("\"did\":\"").nth(1).unwrap().split('"').next().unwrap();
            assert_eq!(p, kbackup::partitioner::murmur2_partition(did.as_bytes(), 4), "{key}: {line}");
            *seen.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 120);
    assert!(seen.values().all(|&n| n == 1));

    // A rerun writes nothing new; ls --partitions now finds the history.
    let (code, stdout, _) = out(&stack, &args);
    assert_eq!(code, 0);
    assert!(stdout.contains("0 file(s) written"), "{stdout}");
    // A dry run says which names exist already instead of claiming it would write them.
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let (code, stdout, _) = out(&stack, &dry);
    assert_eq!(code, 0);
    assert!(!stdout.contains("would write"), "{stdout}");
    assert!(stdout.contains("exists already unique/raw/2020-02-01-"), "{stdout}");
    assert!(stdout.contains("0 file(s) would be written"), "{stdout}");
    let (_, stdout, _) = out(&stack, &["ls", "--url", &url, "--path", "unique/raw", "--from", "2020-02-01", "--partitions", "0-3"]);
    assert!(stdout.lines().count() >= 4, "{stdout}");
}

/// Argument mistakes are usage errors (exit 2) with a message, never a panic (exit 101); the
/// help lists only what a command accepts. No services needed.
#[test]
fn argument_mistakes_are_usage_errors() {
    let bin = env!("CARGO_BIN_EXE_kbackup");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
    };
    let (code, text) = run(&[
        "replay",
        "--url",
        "file:///tmp/none",
        "--path",
        "x",
        "--from",
        "2020-02-01",
        "--to-topic",
        "t",
        "--brokers",
        "127.0.0.1:1",
        "--rate",
        "0",
        "--dry-run",
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--rate"), "{text}");
    let (code, text) = run(&["repartition", "--help"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("murmur2") && text.contains("java-hashcode"), "{text}");
    assert!(!text.contains("same"), "repartition rejects `same`, so its help must not offer it: {text}");
    let (code, text) = run(&["ls", "--url", "file:///tmp/none", "--path", "x", "--from", "2020-02-01", "--partitions", "0-2147483647"]);
    assert_eq!(code, Some(2), "{text}");
}

/// A failed job is named with its exit code and log; `--resume` runs only the jobs that did not
/// succeed, and a partition count that is not a multiple of the group size still covers each
/// partition once.
#[test]
fn plan_reports_failed_jobs_and_resumes_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("wfs.json");
    std::fs::write(&job, r#"{"search":{"type":"local","queries":[{"bucket":"/data","prefix":"unique/raw/","endDate":"2020-02-01","delta":0}]}}"#)
        .unwrap();
    let plan_dir = dir.path().join("plan");
    let ran = dir.path().join("ran");
    std::fs::create_dir_all(&ran).unwrap();
    let fixed = dir.path().join("fixed");
    let exec = format!(
        "echo ran >> {ran}/{{partitions}}; echo 'job {{partitions}} says hello'; test -f {fixed} || test {{partitions}} != 3,4 || {{ echo boom >&2; exit 7; }}",
        ran = ran.display(),
        fixed = fixed.display()
    );
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--job-config",
            job.to_str().unwrap(),
            "--mode",
            "via-partition",
            "--partitions",
            "5",
            "--parallelisation",
            "3",
            "--out-dir",
            plan_dir.to_str().unwrap(),
            "--exec",
            &exec,
        ];
        args.extend_from_slice(extra);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_kbackup")).args(&args).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (code, stdout, stderr) = plan(&[]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let log = plan_dir.join("job-3-4.log");
    assert!(stdout.contains("job partitions [3, 4]: FAILED with exit code 7") && stdout.contains(&log.display().to_string()), "{stdout}");
    assert!(stderr.contains("--resume"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "job 3,4 says hello\nboom\n", "the job's own output is in its log");
    assert_eq!(std::fs::read_to_string(plan_dir.join("job-0-2.log")).unwrap(), "job 0,1,2 says hello\n");

    std::fs::write(&fixed, "").unwrap();
    let (code, stdout, stderr) = plan(&["--resume"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("job partitions [0, 1, 2]: succeeded in an earlier run; skipped"), "{stdout}");
    assert!(stdout.contains("1 job(s) run, 0 failed, 1 skipped"), "{stdout}");
    assert_eq!(std::fs::read_to_string(ran.join("0,1,2")).unwrap(), "ran\n", "the good job ran once");
    assert_eq!(std::fs::read_to_string(ran.join("3,4")).unwrap(), "ran\nran\n", "the failed job ran again");

    // Without --resume everything runs again.
    let (code, stdout, _) = plan(&[]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("2 job(s) run, 0 failed, 0 skipped"), "{stdout}");
}

/// Issue 28, item 0: a replay that stops on a refused record records what was acknowledged,
/// so a rerun sends nothing twice, and the error names the file, the line and the settings.
/// (Before: the checkpoint stayed empty and every rerun sent the records before the big one
/// again; the error named neither the file nor `message.max.bytes`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_replay_stopped_by_a_refused_record_resumes_without_sending_twice() {
    let Some(stack) = stack() else { return };
    let container = unique("c");
    let storage = stack.storage(&container);
    storage.ensure_container(true).await.unwrap();
    // 31 events, one of 2.5 MB that lz4 cannot shrink (base64-like noise), 10 more.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let noise: String = (0..2_500_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(seed % 64) as usize] as char
        })
        .collect();
    let lines: Vec<String> = (0..42)
        .map(|i| if i == 31 { format!(r#"{{"mid":"big","pad":"{noise}"}}"#) } else { format!(r#"{{"mid":"m-{i}","syncts":{IST_MIDNIGHT}}}"#) })
        .collect();
    let key = "raw/2020-02-01-0-1580500000000.json";
    storage.store.put(&ObjectPath::from(key), (lines.join("\n") + "\n").into_bytes().into()).await.unwrap();
    let target = unique("refusing");
    stack.create_topic_with(&target, 1, &[("max.message.bytes", "1000000")]).await;

    let dir = tempfile::tempdir().unwrap();
    let config = |props: &str| {
        let text = format!(
            "[kafka]\nbrokers = \"{}\"\n[kafka.properties]\n{props}\n{}[[topic]]\nname = \"src\"\npath = \"raw\"\n",
            stack.brokers,
            stack.storage_section(&container)
        );
        let p = dir.path().join(format!("{}.toml", props.len()));
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let small = config("");
    let large = config("\"message.max.bytes\" = \"4000000\"");
    let checkpoint = dir.path().join("rp.progress");
    let ckpt = checkpoint.to_str().unwrap();
    let replay = |cfg: &str| {
        let o = kbackup(&stack, &["replay", "--config", cfg, "--topic", "src", "--from", "2020-02-01", "--to-topic", &target, "--checkpoint", ckpt])
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned(), std::fs::read_to_string(&checkpoint).unwrap_or_default())
    };

    // The producer refuses it (its message.max.bytes): the 31 before it are recorded.
    let (code, err, progress) = replay(&small);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(key) && err.contains("line 32") && err.contains("message.max.bytes"), "names file, line and setting: {err}");
    assert!(progress.ends_with(&format!("{key}\t31\n")), "{progress}");
    assert_eq!(stack.end_offsets(&target, 1), [31]);
    let (code, err, _) = replay(&small);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(stack.end_offsets(&target, 1), [31], "the rerun sent nothing twice");

    // The producer lets it through, the broker refuses it (the topic's max.message.bytes):
    // the 10 after it are delivered and recorded, the big one is to be sent again.
    let (code, err, progress) = replay(&large);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(key) && err.contains("line 32") && err.contains("max.message.bytes"), "names file, line and setting: {err}");
    assert!(progress.ends_with(&format!("{key}\t42\tresend=31\n")), "{progress}");
    assert_eq!(stack.end_offsets(&target, 1), [41]);
    let (code, err, _) = replay(&large);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(stack.end_offsets(&target, 1), [41], "the rerun sent only the refused record");

    // With the topic's limit raised, the rerun sends the one record left; then nothing at all.
    stack.alter_topic(&target, &[("max.message.bytes", "4000000")]).await;
    let (code, err, progress) = replay(&large);
    assert_eq!(code, Some(0), "{err}");
    assert!(progress.ends_with(&format!("{key}\tdone\n")), "{progress}");
    let (code, err, _) = replay(&large);
    assert_eq!(code, Some(0), "{err}");
    let mut got: Vec<Vec<u8>> = read_topic(&stack, &target).into_iter().map(|(_, _, v)| v).collect();
    let mut want: Vec<Vec<u8>> = lines.into_iter().map(String::into_bytes).collect();
    got.sort();
    want.sort();
    assert!(got == want, "every event exactly once: {} sent, {} in the file", got.len(), want.len());
}
