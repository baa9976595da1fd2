//! Crash at every point of the seal → record → upload → commit sequence (the process aborts
//! like `kill -9`), restart, and prove every message is stored exactly once.

mod common;

use std::time::Duration;

use common::*;

const IST_MIDNIGHT: i64 = 1_580_495_400_000;

/// Produces events over three partitions, two dates and the invalid bucket, so files of several
/// routes are open at once and interleave their offsets.
async fn produce(stack: &Stack, topic: &str, n: usize) -> Vec<Expect> {
    let producer = stack.producer();
    let mut out = Vec::new();
    for i in 0..n {
        let p = (i % 3) as i32;
        let (line, date) = match i % 7 {
            0 => (format!("not json {i}"), "1970-01-01"),
            1 | 3 => (format!(r#"{{"mid":"x-{i}","syncts":{},"pad":"{}"}}"#, IST_MIDNIGHT - 1000 - i as i64, "a".repeat(i % 50)), "2020-01-31"),
            _ => (format!(r#"{{"mid":"x-{i}","syncts":{},"pad":"{}"}}"#, IST_MIDNIGHT + i as i64, "b".repeat(i % 40)), "2020-02-01"),
        };
        stack.produce(&producer, topic, p, None, line.as_bytes()).await;
        out.push(Expect { line: line.into_bytes(), partition: p, date: date.into(), dir: String::new() });
    }
    out
}

/// A 3-partition topic holding `produce`'s 210 events (70 per partition), and a container,
/// group and directory of its own; `None` without the services (outside CI).
struct Case {
    stack: Stack,
    topic: String,
    expected: Vec<Expect>,
    container: String,
    group: String,
    dir: tempfile::TempDir,
}

async fn case(topic_prefix: &str) -> Option<Case> {
    let stack = stack()?;
    let topic = unique(topic_prefix);
    stack.create_topic(&topic, 3).await;
    let expected = produce(&stack, &topic, 210).await;
    Some(Case { stack, topic, expected, container: unique("c"), group: unique("g"), dir: tempfile::tempdir().unwrap() })
}

async fn crash_then_recover(failpoint: &str) {
    let this = std::path::Path::new(env!("CARGO_BIN_EXE_kbackup"));
    crash_then_recover_with(failpoint, this, this).await;
}

/// `crash` writes until the failpoint aborts it; `recover` takes over the partitions.
async fn crash_then_recover_with(failpoint: &str, crash: &std::path::Path, recover: &std::path::Path) {
    let Some(Case { stack, topic, mut expected, container, group, dir }) = case("eo").await else {
        return;
    };
    // Small files: many seals, records and uploads per partition.
    let section = topic_section(&topic, "unique/raw", "max_file_bytes = 1500");
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &section, 3600));

    let mut crashed =
        Running::start_binary(crash, &stack, &cfg, dir.path().join("crash.log"), &["--until-caught-up"], &[("KBACKUP_FAILPOINT", failpoint)]);
    let code = crashed.wait(Duration::from_secs(90));
    let crash_log = crashed.log_text();
    assert_ne!(code, 0, "the failpoint {failpoint} was never reached:\n{crash_log}");
    assert!(crash_log.contains(&format!("failpoint {}", failpoint.split(':').next().unwrap())), "{crash_log}");

    // More traffic arrives while the writer is down.
    expected.extend(produce_late(&stack, &topic).await);

    let mut again = Running::start_binary(recover, &stack, &cfg, dir.path().join("recover.log"), &["--until-caught-up"], &[]);
    let code = again.wait(Duration::from_secs(90));
    let log = again.log_text();
    assert_eq!(code, 0, "{log}");
    if failpoint.starts_with("intent-recorded") || failpoint.starts_with("uploaded") {
        // The crash left a recorded intent above the committed offset: recovery must use it.
        assert!(log.contains("resuming from recorded upload intents"), "{log}");
    }
    let blobs = read_all(&stack.storage(&container)).await;
    assert_exactly_once_allowing(&blobs, "unique/raw", &expected, &log);
    assert_eq!(stack.committed(&group, &topic, 3), stack.end_offsets(&topic, 3), "{log}");
}

async fn produce_late(stack: &Stack, topic: &str) -> Vec<Expect> {
    let producer = stack.producer();
    let mut out = Vec::new();
    for i in 0..30 {
        let p = i % 3;
        let line = format!(r#"{{"mid":"late-{i}","syncts":{}}}"#, IST_MIDNIGHT + 5000 + i as i64);
        stack.produce(&producer, topic, p, None, line.as_bytes()).await;
        out.push(Expect { line: line.into_bytes(), partition: p, date: "2020-02-01".into(), dir: String::new() });
    }
    out
}

fn assert_exactly_once_allowing(blobs: &std::collections::BTreeMap<String, Vec<u8>>, path: &str, expected: &[Expect], log: &str) {
    let result = std::panic::catch_unwind(|| assert_exactly_once(blobs, path, expected));
    if let Err(e) = result {
        eprintln!("recovery log:\n{log}");
        std::panic::resume_unwind(e);
    }
}

/// A writer of this version takes over from one of the previous release that crashed with an
/// upload intent recorded (and a file maybe uploaded), and the other way round: the intent
/// record, the names and the files are the same on both sides.
#[tokio::test(flavor = "multi_thread")]
async fn this_version_takes_over_from_the_previous_release() {
    let Some(previous) = previous_kbackup() else { return };
    let this = std::path::Path::new(env!("CARGO_BIN_EXE_kbackup"));
    crash_then_recover_with("intent-recorded:2", &previous, this).await;
    crash_then_recover_with("uploaded:3", &previous, this).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_previous_release_takes_over_from_this_version() {
    let Some(previous) = previous_kbackup() else { return };
    let this = std::path::Path::new(env!("CARGO_BIN_EXE_kbackup"));
    crash_then_recover_with("intent-recorded:2", this, &previous).await;
    crash_then_recover_with("uploaded:3", this, &previous).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_seal_before_the_intent_is_recorded() {
    crash_then_recover("sealed:4").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_the_intent_is_recorded_before_upload() {
    crash_then_recover("intent-recorded:4").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_upload_before_commit() {
    crash_then_recover("uploaded:5").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_right_after_a_commit() {
    crash_then_recover("committed:3").await;
}

/// A writer frozen past its session timeout while its files are still open: when it wakes its
/// partitions belong to nobody it knows of, so it drops those files (nothing of them was
/// recorded or committed), rejoins, reads the events again and stores each exactly once. Debug
/// builds also check the memory budget's books at every tick, so dropping open files must leave
/// them balanced for the writer to finish cleanly.
#[tokio::test]
async fn a_writer_frozen_with_open_files_drops_them_and_stores_each_event_once() {
    let Some(Case { stack, topic, mut expected, container, group, dir }) = case("zombie").await else {
        return;
    };
    // Files roll only after an hour: the freeze finds them open.
    let text = config(&stack, &container, &group, &topic_section(&topic, "unique/raw", ""), 3600)
        .replace("\"session.timeout.ms\" = \"10000\"", "\"session.timeout.ms\" = \"6000\"");
    let cfg = write_config(dir.path(), &text);
    let mut run = Running::start(&stack, &cfg, dir.path().join("zombie.log"), &[]);
    run.wait_consumed_to(&topic, 0..3, 70, "every partition consumed to its end");
    let pid = run.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_secs(9));
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let dropped = wait_for("the writer to notice its partitions were lost", Duration::from_secs(60), || {
        let page = run.metrics_page()?;
        metric_with(&page, "kbackup_lost_partition_events_total", &[]).filter(|n| *n > 0.0)
    });
    assert!(dropped > 0.0, "the lost partitions had open files:\n{}", run.log_text());

    // It carries on: it reads everything again plus new traffic, and a stop stores and commits it.
    expected.extend(produce_late(&stack, &topic).await);
    run.wait_consumed_to(&topic, 0..3, 80, "every partition read again to its new end");
    let log = run.log.clone();
    assert_eq!(run.terminate(Duration::from_secs(60)), 0, "{}", std::fs::read_to_string(&log).unwrap());
    let log = std::fs::read_to_string(log).unwrap();
    assert!(!log.contains("panicked at"), "{log}");
    let blobs = read_all(&stack.storage(&container)).await;
    assert_exactly_once_allowing(&blobs, "unique/raw", &expected, &log);
    assert_eq!(stack.committed(&group, &topic, 3), stack.end_offsets(&topic, 3), "{log}");
}
