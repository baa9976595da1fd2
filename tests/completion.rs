//! Completion markers end to end on the real stack: a date of a partition is declared complete
//! once the partition passed it and its files are stored and committed; an idle partition
//! completes too; a late event supersedes the marker; a crash on either side of the marker
//! leaves nothing false; two writers with a rebalance in the middle of a date mark it once,
//! with every file; `plan --wait-complete` starts a partition's job only after its marker.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use common::*;
use kbackup::completion::{read, Marker};

const IST_OFFSET_MS: i64 = 19_800_000;
const GRACE_SECS: i64 = 5;

/// Today's date in IST and the epoch ms of a date's IST midnight.
fn ist_today() -> NaiveDate {
    (Utc::now() + chrono::Duration::milliseconds(IST_OFFSET_MS)).date_naive()
}

fn ist_midnight(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis() - IST_OFFSET_MS
}

fn event(mid: &str, syncts: i64) -> Vec<u8> {
    format!(r#"{{"eid":"IMPRESSION","mid":"{mid}","syncts":{syncts}}}"#).into_bytes()
}

fn topic_config(topic: &str, start: NaiveDate) -> String {
    topic_section(topic, "unique/raw", &format!("completion_grace_secs = {GRACE_SECS}\ncompletion_start_date = \"{start}\""))
}

/// The newest markers of `date`, by partition.
async fn markers(stack: &Stack, container: &str, date: NaiveDate) -> BTreeMap<i32, Marker> {
    read::newest(stack.storage(container).store.as_ref(), "unique/raw", &date.to_string(), None).await.unwrap()
}

/// Waits until `date` has a marker on every partition of `parts` for which `ok` holds.
async fn wait_markers(
    stack: &Stack,
    container: &str,
    date: NaiveDate,
    parts: &[i32],
    run: &mut Running,
    ok: impl Fn(&Marker) -> bool,
) -> BTreeMap<i32, Marker> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(s)) = run.child.try_wait() {
            panic!("kbackup exited ({s}) before the markers of {date}; log:\n{}", run.log_text());
        }
        // The writer creates the container when it starts: until then there is nothing.
        let m = read::newest(stack.storage(container).store.as_ref(), "unique/raw", &date.to_string(), None).await.unwrap_or_default();
        if parts.iter().all(|p| m.get(p).is_some_and(&ok)) {
            return m;
        }
        assert!(Instant::now() < deadline, "no markers of {date} on partitions {parts:?} within 90 s: {m:#?}\nlog:\n{}", run.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The data files of `date` on partition `p`, with their lines.
fn files_of(blobs: &BTreeMap<String, Vec<u8>>, date: NaiveDate, p: i32) -> BTreeMap<String, u64> {
    blobs
        .iter()
        .filter_map(|(k, v)| {
            let n = kbackup::naming::parse_name(k)?;
            (n.date == date && n.kafka_partition == Some(p)).then(|| (k.clone(), v.iter().filter(|b| **b == b'\n').count() as u64))
        })
        .collect()
}

/// Waits until partitions 0 and 1 are committed to their ends (partition 2 is idle: never
/// committed).
fn wait_busy_committed(stack: &Stack, group: &str, topic: &str) {
    wait_for("partitions 0 and 1 committed to their ends", Duration::from_secs(90), || {
        (stack.committed(group, topic, 3)[..2] == stack.end_offsets(topic, 3)[..2]).then_some(())
    });
}

/// A marker lists exactly the stored files of its date and partition, with their counts.
fn assert_lists_what_is_stored(m: &Marker, blobs: &BTreeMap<String, Vec<u8>>, date: NaiveDate) {
    let listed: BTreeMap<String, u64> = m.files.iter().map(|f| (f.key.clone(), f.events)).collect();
    assert_eq!(listed, files_of(blobs, date, m.partition), "marker {} of {date} partition {}", m.seq, m.partition);
    assert_eq!(m.events, listed.values().sum::<u64>());
}

#[tokio::test(flavor = "multi_thread")]
async fn dates_complete_per_partition_idle_ones_too_and_late_events_supersede() {
    let Some(stack) = stack() else { return };
    let topic = unique("complete");
    stack.create_topic(&topic, 3).await;
    let (today, p) = (ist_today(), stack.producer());
    let (d1, d2) = (today - chrono::Days::new(2), today - chrono::Days::new(1));
    let end_d1 = ist_midnight(d2);
    let mut expected = Vec::new();
    let mut send = |partition: i32, mid: String, syncts: i64, date: NaiveDate| {
        expected.push(Expect { line: event(&mid, syncts), partition, date: date.to_string(), dir: String::new() });
        (partition, event(&mid, syncts))
    };
    // Around the IST midnight that ends d1: partition 0 passes d1 by its events (d2 events more
    // than the grace after midnight); partition 1 has d1 and d2 events; partition 2 is idle.
    let mut batch = Vec::new();
    for i in 0..3 {
        batch.push(send(0, format!("a{i}"), end_d1 - 10_000 + i, d1));
    }
    batch.push(send(0, "a-mid".into(), end_d1 - 1, d1));
    batch.push(send(0, "b0".into(), end_d1 + 1, d2));
    batch.push(send(0, "b1".into(), end_d1 + 30_000, d2));
    batch.push(send(1, "c0".into(), end_d1 - 43_200_000, d1));
    batch.push(send(1, "c1".into(), end_d1 - 1_000, d1));
    batch.push(send(1, "c2".into(), end_d1 + 600_000, d2));
    let mut passing_sent_ms = 0;
    for (part, v) in &batch {
        stack.produce(&p, &topic, *part, None, v).await;
        passing_sent_ms = Utc::now().timestamp_millis();
    }

    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    // Files would stay open for an hour: a passed date seals its own.
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_config(&topic, d1), 3600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &[]);
    let m1 = wait_markers(&stack, &container, d1, &[0, 1, 2], &mut run, |_| true).await;
    let m2 = wait_markers(&stack, &container, d2, &[0, 1, 2], &mut run, |_| true).await;
    let blobs = read_all(&stack.storage(&container)).await;
    for (d, ms) in [(d1, &m1), (d2, &m2)] {
        for m in ms.values() {
            assert_eq!(m.seq, 1, "{m:#?}");
            assert!(m.supersedes.is_none());
            assert_lists_what_is_stored(m, &blobs, d);
        }
    }
    assert_eq!([m1[&0].events, m1[&1].events, m1[&2].events], [4, 2, 0], "d1 events per partition");
    assert_eq!([m2[&0].events, m2[&1].events, m2[&2].events], [2, 1, 0], "d2 events per partition");
    assert!(m1[&2].files.is_empty() && m2[&2].files.is_empty(), "the idle partition's dates complete with no files");
    assert!(m1[&0].complete_below <= 6 && m1[&0].complete_below >= 4, "{:#?}", m1[&0]);
    assert!(markers(&stack, &container, today).await.is_empty(), "today is not over");
    println!("a marker from this test: {}", serde_json::to_string_pretty(&m1[&0]).unwrap());
    println!(
        "from the passing event's produce to partition 0's marker of {d1}: {} ms (grace {GRACE_SECS} s, commit interval 200 ms); written {} ms after the date's end",
        m1[&0].written_at_ms - passing_sent_ms,
        m1[&0].written_at_ms - end_d1
    );

    // A late event of d1 on partition 0: its own file, counted, and a marker that supersedes.
    // Late events go into files as any other (no early seal: they trickle), so this part runs
    // with files that rotate after 2 s.
    wait_busy_committed(&stack, &group, &topic);
    assert_eq!(run.terminate(Duration::from_secs(60)), 0);
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_config(&topic, d1), 2));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run2.log"), &[]);
    let (part, v) = send(0, "late".into(), end_d1 - 5_000, d1);
    stack.produce(&p, &topic, part, None, &v).await;
    let late = wait_markers(&stack, &container, d1, &[0], &mut run, |m| m.seq == 2).await;
    assert_eq!(late[&0].events, 5);
    assert_eq!(late[&0].supersedes.as_deref(), Some(format!("unique/raw/_kbackup/complete/{d1}/0-000001.json").as_str()));
    let page = run.metrics_page().unwrap();
    assert_eq!(metric_with(&page, "kbackup_late_events_total", &[("topic", &topic)]), Some(1.0), "{page}");
    let complete_date = metric_with(&page, "kbackup_complete_date_seconds", &[("topic", &topic), ("partition", "2")]);
    assert_eq!(complete_date, Some((ist_midnight(d2) / 1000) as f64), "the idle partition's newest complete date is d2");

    // Readers: ls shows which partitions are complete and where a date changed after it.
    let o = kbackup(
        &stack,
        &["ls", "--config", cfg.to_str().unwrap(), "--topic", &topic, "--from", &d1.to_string(), "--to", &d2.to_string(), "--completion", "--json"],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["complete"], serde_json::json!([0, 1, 2]));
    assert_eq!(rows[0]["changed_after_complete"], serde_json::json!([0]));
    assert_eq!(rows[1]["incomplete"], serde_json::json!([]));

    wait_busy_committed(&stack, &group, &topic);
    let v = kbackup(&stack, &["verify", "--config", cfg.to_str().unwrap(), "--topic", &topic, "--from", &d1.to_string(), "--to", &d2.to_string()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "{out}{}", String::from_utf8_lossy(&v.stderr));
    assert!(out.contains("completion markers: 2 checked, 0 error(s)"), "{out}");
    // A marker that misses a file and miscounts another is an error.
    let mut wrong = late[&0].clone();
    wrong.seq = 3;
    let dropped = wrong.files.pop().unwrap();
    wrong.files[0].events += 1;
    let key = kbackup::completion::marker_key("unique/raw", &d1.to_string(), 0, 3);
    use object_store::ObjectStoreExt;
    let store = stack.storage(&container).store.clone();
    store.put(&object_store::path::Path::from(key.as_str()), serde_json::to_vec(&wrong).unwrap().into()).await.unwrap();
    let v = kbackup(&stack, &["verify", "--config", cfg.to_str().unwrap(), "--topic", &topic, "--from", &d1.to_string(), "--to", &d1.to_string()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("MARKER: marker 3 of {d1} partition 0 misses file {}", dropped.key)), "{out}");
    assert!(out.contains("MARKER: marker 3 of") && out.contains("event(s) in"), "{out}");
    store.delete(&object_store::path::Path::from(key.as_str())).await.unwrap();

    let code = run.terminate(Duration::from_secs(60));
    assert_eq!(code, 0);
    assert_exactly_once(&read_all(&stack.storage(&container)).await, "unique/raw", &expected);
}

/// A backfill with `run --until-caught-up`: once caught up it writes the markers then due
/// (dates passed by its events, and by the wall clock since it reached each log end, the idle
/// partition's too) before it stops, so a data team's `plan --wait-complete` is not left
/// waiting for a writer that already exited.
#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_until_caught_up_marks_its_passed_dates_before_it_stops() {
    let Some(stack) = stack() else { return };
    let topic = unique("backfill");
    stack.create_topic(&topic, 3).await;
    let (today, p) = (ist_today(), stack.producer());
    let (d1, d2) = (today - chrono::Days::new(3), today - chrono::Days::new(2));
    let mut expected = Vec::new();
    // Partition 0 has events of both dates, partition 1 of d1 only, partition 2 none.
    for (i, (part, d)) in [(0, d1), (0, d1), (0, d2), (1, d1), (1, d1), (1, d1)].into_iter().enumerate() {
        let v = event(&format!("bf-{i}"), ist_midnight(d) + 3_600_000 + i as i64);
        stack.produce(&p, &topic, part, None, &v).await;
        expected.push(Expect { line: v, partition: part, date: d.to_string(), dir: String::new() });
    }
    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    // Files would stay open for an hour: the stop, not their age, ends them.
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_config(&topic, d1), 3600));
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &["--until-caught-up"]);
    let code = run.wait(Duration::from_secs(120));
    assert_eq!(code, 0, "{}", run.log_text());
    assert_eq!(stack.committed(&group, &topic, 3)[..2], stack.end_offsets(&topic, 3)[..2], "busy partitions committed to their ends");
    let blobs = read_all(&stack.storage(&container)).await;
    let m1 = markers(&stack, &container, d1).await;
    let m2 = markers(&stack, &container, d2).await;
    assert_eq!(m1.keys().copied().collect::<Vec<_>>(), [0, 1, 2], "d1 marked on every partition before the exit: {m1:#?}\n{}", run.log_text());
    assert_eq!(m2.keys().copied().collect::<Vec<_>>(), [0, 1, 2], "d2 marked on every partition before the exit: {m2:#?}");
    assert_eq!([m1[&0].events, m1[&1].events, m1[&2].events], [2, 3, 0]);
    assert_eq!([m2[&0].events, m2[&1].events, m2[&2].events], [1, 0, 0]);
    for (d, ms) in [(d1, &m1), (d2, &m2)] {
        for m in ms.values() {
            assert_lists_what_is_stored(m, &blobs, d);
        }
    }
    assert!(markers(&stack, &container, today).await.is_empty(), "today is not over");
    assert_exactly_once(&blobs, "unique/raw", &expected);
}

/// A crash just before a marker, and one just after it (before the commit that records it):
/// the restarted writer writes the marker, or finds it already written; nothing is doubled.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_or_after_the_marker_leaves_nothing_false() {
    let Some(stack) = stack() else { return };
    for failpoint in ["marker-due", "marker-written"] {
        let topic = unique("crash");
        stack.create_topic(&topic, 1).await;
        let (today, p) = (ist_today(), stack.producer());
        let (d1, d2) = (today - chrono::Days::new(2), today - chrono::Days::new(1));
        let end_d1 = ist_midnight(d2);
        let mut expected = Vec::new();
        for (i, (syncts, d)) in [(end_d1 - 3_000, d1), (end_d1 - 2_000, d1), (end_d1 + 60_000, d2)].into_iter().enumerate() {
            let v = event(&format!("{failpoint}-{i}"), syncts);
            stack.produce(&p, &topic, 0, None, &v).await;
            expected.push(Expect { line: v, partition: 0, date: d.to_string(), dir: String::new() });
        }
        let container = unique("c");
        let group = unique("g");
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_config(&topic, d1), 3600));
        let mut crashing = Running::start_with_env(&stack, &cfg, dir.path().join("crash.log"), &[], &[("KBACKUP_FAILPOINT", failpoint)]);
        let code = crashing.wait(Duration::from_secs(90));
        assert_ne!(code, 0, "{failpoint}: the failpoint was not reached:\n{}", crashing.log_text());
        let before = markers(&stack, &container, d1).await;
        match failpoint {
            "marker-due" => assert!(before.is_empty(), "a marker before the crash point: {before:#?}"),
            _ => assert_eq!(before.get(&0).map(|m| m.seq), Some(1), "the marker was written before the crash"),
        }
        let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &[]);
        let m = wait_markers(&stack, &container, d2, &[0], &mut run, |_| true).await;
        assert_eq!(m[&0].events, 1);
        let m1 = markers(&stack, &container, d1).await;
        assert_eq!(m1[&0].seq, 1, "{failpoint}: the restart found the same files, so no second marker: {m1:#?}");
        assert_eq!(m1[&0].events, 2);
        wait_committed(&stack, &group, &topic, 1, &mut run);
        assert_eq!(run.terminate(Duration::from_secs(60)), 0);
        let blobs = read_all(&stack.storage(&container)).await;
        assert_lists_what_is_stored(&m1[&0], &blobs, d1);
        assert_exactly_once(&blobs, "unique/raw", &expected);
    }
}

/// Two writers, the second joining in the middle of a date: each partition's marker lists the
/// files both owners uploaded, and counts every event once.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebalance_in_the_middle_of_a_date() {
    let Some(stack) = stack() else { return };
    let topic = unique("rebal");
    stack.create_topic(&topic, 2).await;
    let (today, p) = (ist_today(), stack.producer());
    let (d1, d2) = (today - chrono::Days::new(2), today - chrono::Days::new(1));
    let end_d1 = ist_midnight(d2);
    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    // Files rotate every 2 s, so the first writer uploads some of d1 before the second joins.
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_config(&topic, d1), 2));
    let mut expected = Vec::new();
    let mut produce = |mid: String, part: i32, syncts: i64, d: NaiveDate| {
        let v = event(&mid, syncts);
        expected.push(Expect { line: v.clone(), partition: part, date: d.to_string(), dir: String::new() });
        (part, v)
    };
    let first: Vec<_> = (0..6).map(|i| produce(format!("early{i}"), i % 2, end_d1 - 3_600_000 + i as i64, d1)).collect();
    for (part, v) in &first {
        stack.produce(&p, &topic, *part, None, v).await;
    }
    let mut a = Running::start(&stack, &cfg, dir.path().join("a.log"), &[]);
    wait_committed(&stack, &group, &topic, 2, &mut a);
    let b = Running::start(&stack, &cfg, dir.path().join("b.log"), &[]);
    // Both members in the group: the second one's assignment moved a partition.
    wait_for("the second writer to be assigned a partition", Duration::from_secs(60), || {
        let page = b.metrics_page()?;
        (metric_with(&page, "kbackup_assigned_partitions", &[]).unwrap_or(0.0) >= 1.0).then_some(())
    });
    let mut second: Vec<_> = (0..6).map(|i| produce(format!("late-in-day{i}"), i % 2, end_d1 - 60_000 + i as i64, d1)).collect();
    second.extend((0..2).map(|i| produce(format!("next{i}"), i, end_d1 + 120_000, d2)));
    for (part, v) in &second {
        stack.produce(&p, &topic, *part, None, v).await;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let m = loop {
        let m = read::newest(stack.storage(&container).store.as_ref(), "unique/raw", &d1.to_string(), None).await.unwrap_or_default();
        if m.len() == 2 && m.values().all(|m| m.events == 6) {
            break m;
        }
        assert!(Instant::now() < deadline, "markers of {d1}: {m:#?}\nA:\n{}\nB:\n{}", a.log_text(), b.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_committed(&stack, &group, &topic, 2, &mut a);
    assert_eq!(a.terminate(Duration::from_secs(60)), 0);
    assert_eq!(b.terminate(Duration::from_secs(60)), 0);
    let blobs = read_all(&stack.storage(&container)).await;
    for marker in m.values() {
        // The newest marker lists every file of the date, whoever uploaded it.
        let newest = markers(&stack, &container, d1).await.remove(&marker.partition).unwrap();
        assert_lists_what_is_stored(&newest, &blobs, d1);
        assert!(newest.files.len() >= 2, "files from both owners: {newest:#?}");
    }
    assert_exactly_once(&blobs, "unique/raw", &expected);
}

/// `plan --wait-complete` starts a partition's job only once its marker is there, and gives up
/// with a message naming what is missing.
#[tokio::test(flavor = "multi_thread")]
async fn plan_waits_for_each_partitions_marker() {
    let Some(stack) = stack() else { return };
    let topic = unique("plan");
    stack.create_topic(&topic, 2).await;
    let (today, p) = (ist_today(), stack.producer());
    let (d1, d2) = (today - chrono::Days::new(2), today - chrono::Days::new(1));
    let end_d1 = ist_midnight(d2);
    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(&stack, &container, &group, &topic_config(&topic, d1), 3600));
    // Partition 0 has passed d1; partition 1 has a d1 event and nothing after it yet, and is not
    // idle (caught up, it still passes d1 by the wall clock, so the job must wait for that).
    stack.produce(&p, &topic, 0, None, &event("p0-a", end_d1 - 1_000)).await;
    stack.produce(&p, &topic, 0, None, &event("p0-b", end_d1 + 60_000)).await;
    let job = serde_json::json!({"search": {"type": "local", "queries": [{"prefix": "unique/raw/", "startDate": d1.to_string(), "endDate": d1.to_string()}]}, "model": "wfs"});
    let job_path = dir.path().join("job.json");
    std::fs::write(&job_path, job.to_string()).unwrap();
    let out_dir = dir.path().join("plan");
    let started = dir.path().join("started");
    std::fs::create_dir_all(&started).unwrap();
    let exec = format!("date +%s%3N > {}/{{partitions}}", started.display());
    let plan = |timeout: &str| {
        kbackup(
            &stack,
            &[
                "plan",
                "--job-config",
                job_path.to_str().unwrap(),
                "--mode",
                "via-partition",
                "--partitions",
                "2",
                "--config",
                cfg.to_str().unwrap(),
                "--topic",
                &topic,
                "--wait-complete",
                "--timeout",
                timeout,
                "--poll-interval",
                "1s",
                "--concurrency",
                "2",
                "--out-dir",
                out_dir.to_str().unwrap(),
                "--exec",
                &exec,
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    // No writer yet: nothing is complete, and the plan says so when it gives up.
    stack.storage(&container).ensure_container(true).await.unwrap();
    let o = plan("2s").wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("not complete: {d1}: partitions [0]")) && text.contains("after --timeout 2s"), "{text}");
    assert!(std::fs::read_dir(&started).unwrap().next().is_none(), "a job started without its marker");

    let waiting = plan("120s");
    // Partition 1's d1 event goes in only now: its marker cannot come before the writer reads it.
    stack.produce(&p, &topic, 1, None, &event("p1-a", end_d1 - 2_000)).await;
    let mut run = Running::start(&stack, &cfg, dir.path().join("run.log"), &[]);
    let m = wait_markers(&stack, &container, d1, &[0, 1], &mut run, |_| true).await;
    let o = waiting.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    for part in [0, 1] {
        let at: i64 = std::fs::read_to_string(started.join(part.to_string())).unwrap().trim().parse().unwrap();
        assert!(at >= m[&part].written_at_ms, "partition {part}'s job started at {at}, before its marker at {}", m[&part].written_at_ms);
    }
    assert_eq!(run.terminate(Duration::from_secs(60)), 0);
}
