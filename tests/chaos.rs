//! Chaos: three writers on a 12-partition topic while a producer writes keyed telemetry; random
//! `kill -9`s and restarts, a writer frozen past its session timeout (a zombie when it wakes),
//! a broker restart, and storage faults. At the end `kbackup verify` and an independent count
//! must both find zero lost and zero duplicated events.
//!
//! The short version runs with the other tests. The long one (25 kills, 1M events) is
//! `cargo test --release --test chaos -- --ignored --nocapture`. `KBACKUP_TEST_SEED` replays a run.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::Faults;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const IST_MIDNIGHT: i64 = 1_580_495_400_000;

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

struct Params {
    events: usize,
    kills: usize,
    partitions: i32,
    rate_per_sec: u64,
}

async fn chaos(params: Params) {
    let Some(stack) = stack() else { return };
    let seed = std::env::var("KBACKUP_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    eprintln!("chaos seed: {seed} (replay with KBACKUP_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let kafka = PrivateKafka::start(19092);
    let kstack = Stack { brokers: kafka.brokers(), ..stack.clone() };
    let topic = unique("chaos");
    kstack.create_topic(&topic, params.partitions).await;

    let faults = Faults {
        p500: 0.03,
        p503: 0.03,
        reset: 0.02,
        slow: 0.01,
        applied_then_500: 0.03,
        stall_once: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let (proxy, via_proxy) = kstack.through_proxy(faults, seed).await;

    // The producer: keyed by device id, idempotent (a broker restart must not double events in
    // Kafka itself), recording where each event landed.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.brokers())
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .set("message.timeout.ms", "120000")
        .create()
        .unwrap();
    let sent: Arc<Mutex<Vec<Expect>>> = Arc::default();
    let producing = {
        let (sent, topic, events, rate) = (sent.clone(), topic.clone(), params.events, params.rate_per_sec);
        let mut prng = StdRng::seed_from_u64(seed ^ 0x5eed);
        tokio::spawn(async move {
            let started = Instant::now();
            let mut inflight = futures::stream::FuturesUnordered::new();
            use futures::StreamExt;
            for i in 0..events {
                let did = format!("did-{:05}", prng.random_range(0..5000));
                let syncts = IST_MIDNIGHT + prng.random_range(-3_600_000i64..3_600_000);
                let date = if syncts < IST_MIDNIGHT { "2020-01-31" } else { "2020-02-01" };
                let line = format!(
                    r#"{{"eid":"LOG","mid":"c-{i}","context":{{"did":"{did}"}},"syncts":{syncts},"edata":{{"pad":"{}"}}}}"#,
                    "p".repeat(prng.random_range(0..200))
                );
                let (producer, topic) = (producer.clone(), topic.clone());
                inflight.push(async move {
                    let d = producer
                        .send(FutureRecord::to(&topic).key(&did).payload(&line), Duration::from_secs(180))
                        .await
                        .map_err(|(e, _)| e)
                        .expect("produce");
                    Expect { line: line.into_bytes(), partition: d.partition, date: date.into(), dir: String::new() }
                });
                while inflight.len() > 2000 {
                    let e = inflight.next().await.unwrap();
                    sent.lock().unwrap().push(e);
                }
                // Pace the producer so events keep arriving through the whole run.
                let due = Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            while let Some(e) = inflight.next().await {
                let mut v = sent.lock().unwrap();
                v.push(e);
            }
        })
    };

    let container = unique("c");
    let group = unique("g");
    let dir = tempfile::tempdir().unwrap();
    let section = topic_section(&topic, "unique/raw", "max_file_bytes = 60000");
    let text = config(&via_proxy, &container, &group, &section, 2)
        .replace("\"session.timeout.ms\" = \"10000\"", "\"session.timeout.ms\" = \"6000\"")
        .replace("create_container = true", "create_container = true\nrequest_timeout_secs = 10");
    let cfg = write_config(dir.path(), &text);
    let log = |name: &str, n: usize| dir.path().join(format!("{name}-{n}.log"));
    let mut writers: Vec<Running> = (0..3).map(|w| Running::start(&via_proxy, &cfg, log(&format!("w{w}"), 0), &[])).collect();
    let mut generation = [0usize; 3];
    let mut peak_rss_kib = 0u64;
    let (mut kills, mut freezes, mut broker_restarts) = (0, 0, 0);

    let chaos_started = Instant::now();
    for k in 0..params.kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1500..4000))).await;
        let w = rng.random_range(0..3);
        if k == params.kills / 2 {
            eprintln!("chaos: restarting the broker");
            kafka.devstack("down");
            tokio::time::sleep(Duration::from_secs(2)).await;
            kafka.devstack("up");
            broker_restarts += 1;
        } else if k == params.kills / 3 {
            // Frozen past the session timeout: its partitions move; when it wakes it is a zombie.
            let pid = writers[w].child.id();
            eprintln!("chaos: freezing writer {w} (pid {pid}) for 9 s");
            Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap();
            tokio::time::sleep(Duration::from_secs(9)).await;
            Command::new("kill").args(["-CONT", &pid.to_string()]).status().unwrap();
            freezes += 1;
        }
        peak_rss_kib = peak_rss_kib.max(vm_hwm_kib(writers[w].child.id()));
        eprintln!("chaos: kill -9 writer {w} ({}/{})", k + 1, params.kills);
        writers[w].child.kill().unwrap();
        writers[w].child.wait().unwrap();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
        generation[w] += 1;
        writers[w] = Running::start(&via_proxy, &cfg, log(&format!("w{w}"), generation[w]), &[]);
    }
    producing.await.unwrap();
    let produced = sent.lock().unwrap().len();
    eprintln!(
        "chaos: {kills} kills, {freezes} freezes, {broker_restarts} broker restarts in {:?}; {produced} events produced",
        chaos_started.elapsed()
    );

    // Let the group catch up, then stop everyone gracefully.
    let end = kstack.end_offsets(&topic, params.partitions);
    wait_for("the group to commit every event", Duration::from_secs(600), || {
        for w in writers.iter_mut() {
            if let Ok(Some(s)) = w.child.try_wait() {
                panic!("a writer exited ({s}):\n{}", w.log_text());
            }
        }
        (kstack.committed(&group, &topic, params.partitions) == end).then_some(())
    });
    for mut w in writers {
        // The last restart may be moments old: stop it once it is up, as an operator would.
        w.wait_live(Duration::from_secs(60));
        peak_rss_kib = peak_rss_kib.max(vm_hwm_kib(w.child.id()));
        let log = w.log.clone();
        let code = w.terminate(Duration::from_secs(120));
        assert_eq!(code, 0, "a graceful stop failed; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
    }

    // Kills are the only way a writer may have ended: none panicked on its own (a debug build's
    // bookkeeping assertions included), whatever recovery made of it afterwards.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(!text.contains("panicked at"), "{} shows a panic:\n{text}", path.display());
        }
    }

    // Independent count: every produced event, by content, exactly once in its partition and date.
    let expected = sent.lock().unwrap().clone();
    let blobs = read_all(&stack.storage(&container)).await;
    let stored_lines: usize = blobs.values().map(|d| d.iter().filter(|&&b| b == b'\n').count()).sum();
    assert_exactly_once(&blobs, "unique/raw", &expected);

    // And the operator's audit, against the broker's retained range.
    let out = kbackup(&kstack, &["verify", "--config", cfg.to_str().unwrap(), "--topic", &topic, "--to-end"]).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "verify:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!(
        "chaos result: events {produced}, stored lines {stored_lines}, files {}, kills {kills}, freezes {freezes}, broker restarts {broker_restarts}, \
         storage faults injected {} ({}), lost 0, duplicated 0, peak writer RSS {} MiB\nverify: {}",
        blobs.len(),
        proxy.stats.injected(),
        proxy.stats.summary(),
        peak_rss_kib / 1024,
        report.lines().last().unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_short() {
    chaos(Params { events: 20_000, kills: 6, partitions: 12, rate_per_sec: 1_000 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: run with --release -- --ignored"]
async fn chaos_long() {
    chaos(Params { events: 1_000_000, kills: 25, partitions: 12, rate_per_sec: 12_000 }).await;
}
