//! Storage faults cost retries and latency, never data, and never a commit past a message that
//! is not in storage. kbackup talks to Azurite through a seeded fault-injecting proxy.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::proxy::{Faults, Forced};
use common::*;

const IST_MIDNIGHT: i64 = 1_580_495_400_000;

fn seed() -> u64 {
    let s = std::env::var("KBACKUP_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("fault seed: {s} (replay with KBACKUP_TEST_SEED={s})");
    s
}

/// Checks that every message below each committed offset is in storage right now.
fn assert_commits_are_backed(blobs: &BTreeMap<String, Vec<u8>>, committed: &[i64], sent: &[(Expect, i64)]) {
    let stored: HashSet<&[u8]> = blobs.values().flat_map(|d| d.split(|&b| b == b'\n')).collect();
    for (e, offset) in sent {
        if *offset < committed[e.partition as usize] {
            assert!(
                stored.contains(&e.line[..]),
                "offset {offset} of partition {} is committed but not in storage: {}",
                e.partition,
                String::from_utf8_lossy(&e.line)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_faults_cost_retries_not_data() {
    let Some(stack) = stack() else { return };
    let seed = seed();
    let faults = Faults {
        p500: 0.08,
        p503: 0.08,
        reset: 0.05,
        slow: 0.03,
        applied_then_500: 0.08,
        stall_once: Some(Duration::from_secs(60)),
        // Whatever the seed, each kind happens at least once (with ~30 requests per run, a
        // seed without an applied-then-500 came up about one run in twenty).
        forced: [Forced::AppliedThen500, Forced::E503, Forced::E500].into(),
        frozen: false,
        accept_second_create: false,
    };
    let (proxy, via_proxy) = stack.through_proxy(faults, seed).await;

    let topic = unique("faults");
    let partitions = 3;
    stack.create_topic(&topic, partitions).await;
    let producer = stack.producer();
    let mut sent: Vec<(Expect, i64)> = Vec::new();
    for i in 0..300 {
        let p = (i % partitions as usize) as i32;
        let line = format!(r#"{{"mid":"f-{i}","syncts":{},"pad":"{}"}}"#, IST_MIDNIGHT + (i as i64 % 2) * 2000 - 1000, "x".repeat(i % 60));
        let date = if i % 2 == 0 { "2020-01-31" } else { "2020-02-01" };
        let off = stack.produce(&producer, &topic, p, None, line.as_bytes()).await;
        sent.push((Expect { line: line.into_bytes(), partition: p, date: date.into(), dir: String::new() }, off));
    }

    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let text = config(&via_proxy, &container, &group, &topic_section(&topic, "unique/raw", "max_file_bytes = 1200"), 2)
        .replace("create_container = true", "create_container = true\nrequest_timeout_secs = 5");
    let cfg = write_config(dir.path(), &text);
    let mut run = Running::start(&via_proxy, &cfg, dir.path().join("run.log"), &[]);

    // While it works through the faults, every committed offset must already be backed.
    let direct = stack.storage(&container);
    direct.ensure_container(true).await.unwrap();
    let end = stack.end_offsets(&topic, partitions);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut checks = 0;
    loop {
        let committed = stack.committed(&group, &topic, partitions);
        let blobs = read_all(&direct).await;
        assert_commits_are_backed(&blobs, &committed, &sent);
        checks += 1;
        if committed == end {
            break;
        }
        if let Ok(Some(s)) = run.child.try_wait() {
            panic!("kbackup exited early ({s}):\n{}", run.log_text());
        }
        assert!(Instant::now() < deadline, "not caught up in time ({}):\n{}", proxy.stats.summary(), run.log_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log_path = run.log.clone();
    assert_eq!(run.terminate(Duration::from_secs(120)), 0);
    let log = std::fs::read_to_string(log_path).unwrap();
    eprintln!("faults injected: {}; commit checks: {checks}", proxy.stats.summary());

    let expected: Vec<Expect> = sent.into_iter().map(|(e, _)| e).collect();
    assert_exactly_once(&read_all(&direct).await, "unique/raw", &expected);
    let s = &proxy.stats;
    use std::sync::atomic::Ordering::Relaxed;
    assert!(s.e500.load(Relaxed) + s.e503.load(Relaxed) > 0, "{}", s.summary());
    assert!(s.applied_then_500.load(Relaxed) > 0, "{}", s.summary());
    assert_eq!(s.stalls.load(Relaxed), 1, "{}", s.summary());
    assert!(log.contains("backing off"), "{log}");
    // The stalled upload was abandoned after the 5 s request timeout and retried by the upload
    // stage: the run did not wait out the minute.
    assert!(log.contains("upload failed; retrying"), "{log}");
}

/// Uploads stuck while the memory budget is full: the writer pauses instead of sealing ever
/// smaller files (it once cut thousands of one-event files here), and loses or doubles nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stuck_uploads_with_a_full_budget_pause_instead_of_cutting_tiny_files() {
    let Some(stack) = stack() else { return };
    let faults = Faults { stall_once: Some(Duration::from_secs(4)), ..Default::default() };
    let (_proxy, via_proxy) = stack.through_proxy(faults, 1).await;
    let topic = unique("budget");
    stack.create_topic(&topic, 2).await;
    let producer = stack.producer();
    let mut sent = Vec::new();
    // 3,000 events of ~1 KB: about ten times the smallest budget's buffer share.
    for i in 0..3000 {
        let p = i % 2;
        let line = format!(r#"{{"mid":"m-{i}","syncts":{},"pad":"{}"}}"#, IST_MIDNIGHT + 1000, "y".repeat(1000));
        stack.produce(&producer, &topic, p, None, line.as_bytes()).await;
        sent.push(Expect { line: line.into_bytes(), partition: p, date: "2020-02-01".into(), dir: String::new() });
    }
    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let text = config(&via_proxy, &container, &group, &topic_section(&topic, "unique/raw", ""), 3600)
        .replace("[writer]", "[writer]\nmemory_limit_bytes = 1048576");
    let cfg = write_config(dir.path(), &text);
    let mut run = Running::start(&via_proxy, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    let code = run.wait(Duration::from_secs(120));
    let log = run.log_text();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("consumption paused"), "the stalled upload should have paused consumption:\n{log}");

    let blobs = read_all(&stack.storage(&container)).await;
    assert_exactly_once(&blobs, "unique/raw", &sent);
    let tiny = blobs.values().filter(|b| b.iter().filter(|&&c| c == b'\n').count() < 20).count();
    // Only the last file of each partition may be small (sealed at shutdown).
    assert!(tiny <= 2, "{tiny} of {} files hold fewer than 20 events:\n{log}", blobs.len());
    assert_eq!(stack.committed(&group, &topic, 2), stack.end_offsets(&topic, 2), "{log}");
}
