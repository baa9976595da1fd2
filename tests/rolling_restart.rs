//! A rolling restart of a three-broker cluster (issue 34): brokers stopped with SIGTERM one at a
//! time and started again once the previous one is back in sync, twice around, then a kill -9
//! of one broker, a restart of the controller leader and a kill -9 of the group coordinator,
//! while two writers back up a topic a producer keeps writing to. Every partition must keep
//! moving: at the end every event is stored exactly once, the group's commits equal the log
//! ends, readiness was red only for moments, and every stop ends within its bound.
//!
//! (Before: 1–5 s after the second broker of the first round exited, one writer stopped
//! uploading some of its partitions for good, while readiness said all was well.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const PARTITIONS: i32 = 8;
const BOUND_SECS: u64 = 10;

/// What one writer's readiness said over the run: the red periods, with what it said.
#[derive(Default)]
struct Readiness {
    red: Vec<(Duration, Duration, String)>,
}

/// Polls a writer's readiness every 200 ms until `done`, recording its red periods.
fn watch_readiness(addr: String, started: Instant, done: Arc<AtomicBool>) -> std::thread::JoinHandle<Readiness> {
    std::thread::spawn(move || {
        let mut r = Readiness::default();
        let mut red_since: Option<(Duration, String)> = None;
        while !done.load(Ordering::Relaxed) {
            let now = started.elapsed();
            match http_get(&addr, "/health/ready") {
                Some((200, _)) => {
                    if let Some((since, why)) = red_since.take() {
                        r.red.push((since, now, why));
                    }
                }
                Some((_, body)) => {
                    red_since.get_or_insert((now, body.trim().to_string()));
                }
                None => {}
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some((since, why)) = red_since.take() {
            r.red.push((since, started.elapsed(), why));
        }
        r
    })
}

/// The IST date of an epoch-ms time.
fn ist_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms + 19_800_000).unwrap().format("%Y-%m-%d").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_partition_keeps_moving_through_a_rolling_restart() {
    let Some(stack) = stack() else { return };
    let cluster = PrivateCluster::start(29092);
    let cstack = Stack { brokers: cluster.brokers(), ..stack.clone() };
    let topic = unique("rolling");
    cstack.create_topic_replicated(&topic, PARTITIONS, 3, &[("min.insync.replicas", "2")]).await;
    let started = Instant::now();
    let at = move || format!("{:6.1}s", started.elapsed().as_secs_f64());

    // The producer: keyed, idempotent, acks from all in-sync replicas, 2,000 events/s until told
    // to stop; it records where each event landed.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.brokers())
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "10")
        .set("message.timeout.ms", "300000")
        .create()
        .unwrap();
    let sent: Arc<Mutex<Vec<Expect>>> = Arc::default();
    let producing = Arc::new(AtomicBool::new(true));
    let producer_task = {
        let (sent, topic, producing) = (sent.clone(), topic.clone(), producing.clone());
        tokio::spawn(async move {
            use futures::StreamExt;
            let rate = 2000.0;
            let t0 = Instant::now();
            let mut inflight = futures::stream::FuturesUnordered::new();
            let mut i = 0u64;
            while producing.load(Ordering::Relaxed) {
                let did = format!("did-{:05}", i.wrapping_mul(2_654_435_761) % 5000);
                // Event times over the last three days, as devices that were offline sync late:
                // every partition keeps receiving events of dates that have already passed.
                let syncts = chrono::Utc::now().timestamp_millis() - (i.wrapping_mul(7_919) % (3 * 86_400_000 / 1000)) as i64 * 1000;
                let line = format!(
                    r#"{{"eid":"IMPRESSION","mid":"r-{i}","context":{{"did":"{did}","channel":"505c7c48ac6dc1edc9b08f21db5a571d"}},"syncts":{syncts},"edata":{{"pad":"{}"}}}}"#,
                    "p".repeat(500 + (i % 200) as usize)
                );
                let (producer, topic) = (producer.clone(), topic.clone());
                inflight.push(async move {
                    let d = producer
                        .send(FutureRecord::to(&topic).key(&did).payload(&line), Duration::from_secs(300))
                        .await
                        .map_err(|(e, _)| e)
                        .expect("produce");
                    Expect { line: line.into_bytes(), partition: d.partition, date: ist_date(syncts), dir: String::new() }
                });
                while inflight.len() > 4000 {
                    let e = inflight.next().await.unwrap();
                    sent.lock().unwrap().push(e);
                }
                i += 1;
                let due = Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            while let Some(e) = inflight.next().await {
                sent.lock().unwrap().push(e);
            }
        })
    };

    let (container, group) = (unique("c"), unique("g"));
    let dir = tempfile::tempdir().unwrap();
    let section = topic_section(&topic, "unique/raw", "max_file_bytes = 2000000");
    // librdkafka's default session timeout (45 s), as a new user has it.
    let text = config(&cstack, &container, &group, &section, 20)
        .replace("\"session.timeout.ms\" = \"10000\"\n\"heartbeat.interval.ms\" = \"1000\"\n", "")
        .replace("shutdown_timeout_secs = 60", &format!("shutdown_timeout_secs = {BOUND_SECS}"))
        .replace("commit_interval_ms = 200", "commit_interval_ms = 1000");
    assert!(!text.contains("session.timeout.ms") && text.contains("shutdown_timeout_secs = 10"), "{text}");
    let cfg = write_config(dir.path(), &text);
    let mut writers: Vec<Running> = (0..2).map(|w| Running::start(&cstack, &cfg, dir.path().join(format!("w{w}.log")), &[])).collect();
    for w in writers.iter_mut() {
        w.wait_live(Duration::from_secs(60));
    }
    let watching = Arc::new(AtomicBool::new(false));
    let mut watchers: Vec<_> = writers.iter().map(|w| watch_readiness(w.metrics_addr(), started, watching.clone())).collect();

    // The restarts begin while the writers are still joining and sealing their first files, as
    // a deploy can happen at any moment. Halfway, a writer is restarted while a broker is down:
    // its partitions move twice, during the broker's restart.
    let mut restarts = Vec::new();
    let mut stops = Vec::new();
    let mut restart = |how: &str, n: i32, writers: &mut Vec<Running>| {
        eprintln!("{} {how} node {n}", at());
        match how {
            "kill" => cluster.kill(n),
            _ => cluster.stop(n),
        }
        if restarts.len() == 4 {
            let w = writers.remove(1);
            let (log, t) = (w.log.clone(), Instant::now());
            let code = w.terminate(Duration::from_secs(120));
            stops.push((code, t.elapsed(), log));
            eprintln!("{} writer 1 stopped (exit {code}) and starts again", at());
            writers.push(Running::start(&cstack, &cfg, dir.path().join("w1-again.log"), &[]));
        }
        cluster.start_node(n);
        cluster.wait_in_sync(Duration::from_secs(180));
        eprintln!("{} node {n} back in sync", at());
        restarts.push(format!("{how} {n}"));
    };
    for _round in 0..2 {
        for n in 1..=3 {
            restart("stop", n, &mut writers);
        }
    }
    restart("kill", 2, &mut writers);
    let leader = cluster.leader();
    restart("stop", leader, &mut writers);
    let coordinator = cluster.coordinator(&group);
    restart("kill", coordinator, &mut writers);
    writers[1].wait_live(Duration::from_secs(60));
    watchers.push(watch_readiness(writers[1].metrics_addr(), started, watching.clone()));

    producing.store(false, Ordering::Relaxed);
    producer_task.await.unwrap();
    let produced = sent.lock().unwrap().len();
    let ends = cstack.end_offsets(&topic, PARTITIONS);
    eprintln!("{} produced {produced} events; log ends {ends:?}", at());
    let committed_in_time = wait_for_or_none(Duration::from_secs(180), || (cstack.committed(&group, &topic, PARTITIONS) == ends).then_some(()));
    let committed = cstack.committed(&group, &topic, PARTITIONS);
    eprintln!("{} committed {committed:?}", at());

    for w in writers {
        let log = w.log.clone();
        let t = Instant::now();
        let code = w.terminate(Duration::from_secs(120));
        stops.push((code, t.elapsed(), log));
    }
    watching.store(true, Ordering::Relaxed);
    let readiness: Vec<Readiness> = watchers.into_iter().map(|h| h.join().unwrap()).collect();
    for (w, r) in readiness.iter().enumerate() {
        let total: Duration = r.red.iter().map(|(a, b, _)| *b - *a).sum();
        eprintln!("writer {w}: readiness red {} times, {total:?} in all", r.red.len());
        for (a, b, why) in &r.red {
            eprintln!("  {a:?}..{b:?}: {why}");
        }
    }
    for (code, took, log) in &stops {
        eprintln!("stop of {}: SIGTERM to exit {took:?}, exit code {code}", log.file_name().unwrap().to_string_lossy());
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!text.contains("panicked at"), "a writer panicked:\n{text}");
    }
    let logs = || stops.iter().map(|(_, _, l)| std::fs::read_to_string(l).unwrap_or_default()).collect::<Vec<_>>().join("\n----\n");
    assert!(
        committed_in_time.is_some(),
        "the group's commits {committed:?} did not reach the log ends {ends:?}: a partition stopped moving\n{}",
        logs()
    );
    for (code, took, log) in &stops {
        assert_eq!(*code, 0, "a stop failed:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        assert!(*took < Duration::from_secs(BOUND_SECS + 2), "a stop took {took:?} (bound {BOUND_SECS} s)");
    }
    // Readiness is red only while a partition owned there really cannot progress: before the
    // writer joined, or while a killed broker's partitions wait for a new leader (the
    // controller notices a dead broker after broker.session.timeout.ms, 9 s). A stopped broker,
    // a controller or a coordinator that moves is no reason.
    let unexplained: Vec<String> = readiness
        .iter()
        .enumerate()
        .flat_map(|(w, r)| {
            r.red
                .iter()
                .filter(|(a, b, why)| {
                    let moment_without_leader = why.contains("no reachable leader") && *b - *a < Duration::from_secs(30);
                    !(why.contains("not yet joined") || moment_without_leader)
                })
                .map(move |(a, b, why)| format!("writer {w}: readiness red {a:?}..{b:?}: {why}"))
        })
        .collect();
    if !unexplained.is_empty() {
        // Keep the evidence past the temporary directory (a flake seen once in five runs was
        // not explained because the writers' and brokers' logs were gone): the writers' logs
        // go next to the brokers' (target/cluster-*), and their commit lines into the message.
        let kept = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/rolling-restart-logs");
        let _ = std::fs::create_dir_all(&kept);
        let mut commit_lines = String::new();
        for entry in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let _ = std::fs::copy(&path, kept.join(path.file_name().unwrap()));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for line in
                    text.lines().filter(|l| (l.contains("ommit") || l.contains("REQTMOUT") || l.contains("oordinator")) && !l.contains(" INFO "))
                {
                    commit_lines.push_str(&format!("{}: {line}\n", path.file_name().unwrap().to_string_lossy()));
                }
            }
        }
        panic!(
            "{}\nwriters' logs kept in {} (brokers' in target/cluster-*); their warnings about commits, coordinators and timed-out requests:\n{commit_lines}",
            unexplained.join("\n"),
            kept.display()
        );
    }
    let expected = sent.lock().unwrap().clone();
    let blobs = read_all(&stack.storage(&container)).await;
    assert_exactly_once(&blobs, "unique/raw", &expected);
    eprintln!("rolling restart: {restarts:?}; {produced} events produced, each stored once (lost 0, duplicated 0); committed = log ends");
}

/// Polls `f` until it returns `Some`, or returns `None` after `timeout`.
fn wait_for_or_none<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
