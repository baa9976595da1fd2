//! A partition's backup never stops for good (issue 34): the commit record that must precede
//! every upload has a size limit (Kafka's `offset.metadata.max.bytes`), and it has to list
//! every file whose range reaches past the partition's commit. A file of one route that stays
//! open (a rare prefix, a date in progress) while files of another route roll holds the commit
//! back, so the other files' intents pile up in the record. Before, once the record was full
//! the open file, when sealed, could never be recorded: the commit stayed where it was, every
//! later file waited for a record that could not take it, and nothing of the partition reached
//! storage again, with no error, no retry and readiness green.

mod common;

use std::time::Duration;

use common::*;

/// A file of a rare route (`summary`, one event) stays open for its age while `raw` files of a
/// few events each roll by size: Sunbird's denorm backup, with the sizes scaled down.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_held_open_while_others_roll_never_stalls_its_partition() {
    let Some(stack) = stack() else { return };
    let topic = unique("stall");
    stack.create_topic(&topic, 1).await;
    let producer = stack.producer();
    let now = chrono::Utc::now().timestamp_millis();
    let date = chrono::DateTime::from_timestamp_millis(now + 19_800_000).unwrap().format("%Y-%m-%d").to_string();
    let mut expected = Vec::new();
    let summary = format!(r#"{{"eid":"ME_WORKFLOW_SUMMARY","mid":"s-0","syncts":{now}}}"#);
    stack.produce(&producer, &topic, 0, None, summary.as_bytes()).await;
    expected.push(Expect { line: summary.into_bytes(), partition: 0, date: date.clone(), dir: "summary".into() });
    // 300 raw events of ~500 bytes in files of about four: some 75 files, each needing a place in
    // the partition's commit record while the summary file holds the commit at offset 0.
    for i in 0..300 {
        let v = format!(r#"{{"eid":"IMPRESSION","mid":"r-{i}","syncts":{},"edata":{{"pad":"{}"}}}}"#, now + i, "p".repeat(450));
        stack.produce(&producer, &topic, 0, None, v.as_bytes()).await;
        expected.push(Expect { line: v.into_bytes(), partition: 0, date: date.clone(), dir: "raw".into() });
    }
    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let extra = "max_file_bytes = 2000\nprefix_field = \"eid\"\nprefix_map = { ME_WORKFLOW_SUMMARY = \"summary\", DEFAULT = \"raw\" }";
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "denorm", extra), 10));
    let run = Running::start(&stack, &cfg, dir.path().join("run.log"), &[]);
    // The summary file is sealed by its age (10 s) and must then find room in the record.
    let end = stack.end_offsets(&topic, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while stack.committed(&group, &topic, 1) != end {
        if std::time::Instant::now() > deadline {
            let ready = http_get(&run.metrics_addr(), "/health/ready");
            panic!(
                "committed {:?}, log end {end:?}: the partition's backup stopped; readiness {ready:?}\n{}",
                stack.committed(&group, &topic, 1),
                run.log_text().lines().filter(|l| !l.contains("uploaded key")).collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = dir.path().join("run.log");
    assert_eq!(run.terminate(Duration::from_secs(60)), 0, "{}", std::fs::read_to_string(log).unwrap_or_default());
    let blobs = read_all(&stack.storage(&container)).await;
    assert_exactly_once(&blobs, "denorm", &expected);
    let raw = blobs.keys().filter(|k| k.starts_with("denorm/raw/")).count();
    eprintln!("{} raw files and the summary file stored, committed = log end", raw);
    assert!(raw > 45, "the raw files must outnumber what one commit record can list ({raw})");
}

/// A writer crashes after recording a file's intent, before uploading it; retention then
/// deletes the file's first messages. The next owner rebuilds the file from what is left, so
/// its first message is not the recorded first offset. (Before: the rebuild held the offset of
/// its first message and released the recorded one when it landed, so the held offset stayed
/// held and the partition's commit never moved again; a debug build stopped on its assertion.)
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_whose_first_messages_retention_deleted_releases_what_it_held() {
    let Some(stack) = stack() else { return };
    let topic = unique("stallret");
    stack.create_topic(&topic, 1).await;
    let producer = stack.producer();
    let now = chrono::Utc::now().timestamp_millis();
    let date = chrono::DateTime::from_timestamp_millis(now + 19_800_000).unwrap().format("%Y-%m-%d").to_string();
    let mut lines = Vec::new();
    for i in 0..20 {
        let v = format!(r#"{{"eid":"LOG","mid":"ret-{i}","syncts":{}}}"#, now + i);
        stack.produce(&producer, &topic, 0, None, v.as_bytes()).await;
        lines.push(v.into_bytes());
    }
    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_section(&topic, "unique/raw", ""), 1));
    // The file of offsets 0-19 is sealed by its age, its intent committed, and the process
    // dies before the upload.
    let mut crashing = Running::start_with_env(&stack, &cfg, dir.path().join("crash.log"), &[], &[("KBACKUP_FAILPOINT", "intent-recorded")]);
    assert_ne!(crashing.wait(Duration::from_secs(60)), 0, "the failpoint aborts the writer:\n{}", crashing.log_text());
    assert_eq!(stack.committed(&group, &topic, 1), vec![0], "the intent's commit holds the file's first offset");
    stack.delete_records(&topic, 0, 5).await;

    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    let code = run.wait(Duration::from_secs(120));
    let log = run.log_text();
    assert!(!log.contains("panicked at"), "{log}");
    assert!(log.contains("DATA LOST"), "the deleted offsets are reported:\n{log}");
    assert_eq!(code, 1, "a run that lost offsets to retention says so in its exit code:\n{log}");
    assert_eq!(stack.committed(&group, &topic, 1), vec![20], "{log}");
    let blobs = read_all(&stack.storage(&container)).await;
    let expected: Vec<Expect> = lines[5..].iter().map(|l| Expect { line: l.clone(), partition: 0, date: date.clone(), dir: String::new() }).collect();
    assert_exactly_once(&blobs, "unique/raw", &expected);
}
