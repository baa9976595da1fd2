//! The day kbackup replaces Secor, and the way back: a Secor stand-in leaves the state Sunbird's
//! fork leaves (auto-committed Kafka offsets ahead, ZooKeeper behind, Secor-named files for what
//! it uploaded, a partition it never uploaded, a chroot), then `takeover`, `run`, `verify`,
//! `handback` and Secor resuming — every event stored exactly once across both writers' files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::secor_standin::SecorStandIn;
use common::*;

const IST_MIDNIGHT: i64 = 1_580_495_400_000;
const PATH: &str = "unique/raw";

/// A topic with events on every partition, Secor's stand-in for it, and the files to run both.
struct Switch {
    stack: Stack,
    zookeeper: String,
    topic: String,
    partitions: i32,
    container: String,
    secor: SecorStandIn,
    expected: Vec<Expect>,
    produced: Vec<i64>,
    dir: tempfile::TempDir,
}

impl Switch {
    async fn new(prefix: &str, partitions: i32, per_partition: i64) -> Option<Switch> {
        let stack = stack()?;
        let zookeeper = zookeeper()?;
        let topic = unique(prefix);
        stack.create_topic(&topic, partitions).await;
        let container = unique("tk");
        let storage = stack.storage(&container);
        storage.ensure_container(true).await.unwrap();
        // A chroot, as Sunbird's ZooKeeper paths may have one, unique per test.
        let zk_path = format!("/{}", unique("chroot"));
        let secor = SecorStandIn::new(&stack, &zookeeper, &zk_path, &unique("secor"), PATH, storage);
        let mut s = Switch {
            stack,
            zookeeper,
            topic,
            partitions,
            container,
            secor,
            expected: Vec::new(),
            produced: vec![0; partitions as usize],
            dir: tempfile::tempdir().unwrap(),
        };
        s.produce(per_partition).await;
        Some(s)
    }

    /// `n` more events on every partition, dated around an IST midnight (two dates).
    async fn produce(&mut self, n: i64) {
        let producer = self.stack.producer();
        let mut sends = Vec::new();
        for p in 0..self.partitions {
            for i in 0..n {
                let k = self.produced[p as usize] + i;
                let syncts = IST_MIDNIGHT + (k % 20 - 10) * 60_000;
                let line = format!(r#"{{"eid":"IMPRESSION","mid":"{}-{p}-{k}","syncts":{syncts},"context":{{"did":"d{p}"}}}}"#, self.topic);
                let date = if syncts < IST_MIDNIGHT { "2020-01-31" } else { "2020-02-01" };
                self.expected.push(Expect { line: line.clone().into_bytes(), partition: p, date: date.into(), dir: String::new() });
                sends.push((p, line));
            }
            self.produced[p as usize] += n;
        }
        for chunk in sends.chunks(500) {
            let futures = chunk.iter().map(|(p, line)| {
                let rec = rdkafka::producer::FutureRecord::<str, [u8]>::to(&self.topic).partition(*p).payload(line.as_bytes());
                producer.send(rec, Duration::from_secs(30))
            });
            for r in futures::future::join_all(futures).await {
                r.map_err(|(e, _)| e).unwrap();
            }
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Secor's own properties (kbackup then uses Secor's group, as the drop-in does).
    fn properties(&self) -> PathBuf {
        let text = secor_properties(&self.stack, &self.topic, &self.secor.group, &self.container, PATH, &self.zookeeper, &self.secor.zk_path);
        self.write("secor.properties", &text)
    }

    /// A TOML config with kbackup's own group and a `[secor]` section naming Secor's.
    fn toml(&self, group: &str) -> PathBuf {
        let section = topic_section(&self.topic, PATH, "");
        let text = config(&self.stack, &self.container, group, &section, 3600)
            + &format!(
                "[secor]\nzookeeper = \"{}\"\nzookeeper_path = \"{}\"\ngroup = \"{}\"\n",
                self.zookeeper, self.secor.zk_path, self.secor.group
            );
        self.write("kbackup.toml", &text)
    }

    fn kbackup(&self, args: &[&str]) -> Output {
        kbackup(&self.stack, args).env("RUST_LOG", "warn").output().unwrap()
    }

    fn committed(&self, group: &str) -> Vec<i64> {
        self.stack.committed(group, &self.topic, self.partitions)
    }

    fn ends(&self) -> Vec<i64> {
        self.stack.end_offsets(&self.topic, self.partitions)
    }

    /// `run --until-caught-up`, which must exit 0.
    fn catch_up(&self, config: &[&str], env: &[(&str, &str)]) -> i32 {
        let mut args = vec!["run"];
        args.extend_from_slice(config);
        args.extend_from_slice(&["--until-caught-up", "--metrics-addr", "off"]);
        let log = self.dir.path().join(format!("run-{}.log", rand::random::<u32>()));
        let out = std::fs::File::create(&log).unwrap();
        let status = kbackup(&self.stack, &args).envs(env.iter().copied()).stdout(out.try_clone().unwrap()).stderr(out).status().unwrap();
        let code = status.code().unwrap_or(-1);
        if env.is_empty() {
            assert_eq!(code, 0, "{}", std::fs::read_to_string(&log).unwrap());
        }
        code
    }

    async fn assert_exactly_once(&self) {
        let blobs = read_all(&self.stack.storage(&self.container)).await;
        assert_exactly_once(&blobs, PATH, &self.expected);
    }
}

fn text(o: &Output) -> (Option<i32>, String, String) {
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o).1))
}

fn config_args(p: &Path, flag: &'static str) -> Vec<String> {
    vec![flag.to_string(), p.to_str().unwrap().to_string()]
}

/// The issue's case: 12,000 events on four partitions; Secor auto-committed the end of the
/// topic, uploaded 35, 60 and 80 % of three partitions (ZooKeeper says so) and nothing of the
/// fourth. The drop-in switch must not lose the 6,750 events Secor never uploaded.
#[tokio::test(flavor = "multi_thread")]
async fn takeover_from_secor_stores_every_event_once() {
    let Some(s) = Switch::new("takeover", 4, 3000).await else { return };
    let t = s.topic.clone();
    s.secor.upload(&t, 0, 0, 1050, true).await;
    s.secor.upload(&t, 1, 0, 900, true).await;
    s.secor.upload(&t, 1, 900, 1800, true).await;
    s.secor.upload(&t, 2, 0, 2400, true).await;
    s.secor.auto_commit(&t, &[3000, 3000, 3000, 3000]);
    let props = s.properties();
    let cfg = config_args(&props, "--secor-properties");
    let cfg: Vec<&str> = cfg.iter().map(String::as_str).collect();
    let with = |extra: &[&'static str]| -> Vec<&str> { [&["takeover"][..], &cfg, extra].concat() };
    let stored_before = read_all(&s.stack.storage(&s.container)).await;

    // The naive switch is refused before anything is consumed: exit 2, naming takeover.
    let out = s.kbackup(&[&["run"][..], &cfg, &["--until-caught-up", "--metrics-addr", "off"]].concat());
    let (code, _, err) = text(&out);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("kbackup takeover --secor-properties") && err.contains(&format!("{t}/0")) && err.contains(&format!("{t}/3")), "{err}");
    assert_eq!(read_all(&s.stack.storage(&s.container)).await, stored_before, "nothing stored");
    assert_eq!(s.committed(&s.secor.group), vec![3000; 4], "nothing committed");

    // `check` says the same, before anything runs.
    let (code, out, _) = text(&s.kbackup(&[&["check"][..], &cfg].concat()));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("secor: NOT TAKEN OVER") && out.contains("kbackup takeover"), "{out}");

    // Dry run: the table, nothing changed.
    let out = s.kbackup(&with(&["--dry-run"]));
    let (code, table, err) = text(&out);
    assert_eq!(code, Some(0), "{err}");
    eprintln!("takeover --dry-run:\n{table}");
    assert!(table.contains("dry run: nothing changed") && table.contains("no ZooKeeper node"), "{table}");
    assert!(table.contains("would have lost 6750 event(s)"), "{table}");
    assert_eq!(s.committed(&s.secor.group), vec![3000; 4]);
    let plan = json(&s.kbackup(&with(&["--dry-run", "--json"])));
    assert_eq!(plan["totals"]["naive_lost"], 6750);
    assert_eq!((plan["totals"]["to_change"].as_u64(), plan["totals"]["changed"].as_u64()), (Some(4), Some(0)), "a dry run changes nothing");
    let sets: Vec<i64> = plan["partitions"].as_array().unwrap().iter().map(|r| r["sets"].as_i64().unwrap()).collect();
    assert_eq!(sets, vec![1050, 1800, 2400, 0]);
    assert_eq!(plan["partitions"][0]["secor_kafka"]["by"], "other");

    // The takeover itself, then again: the second changes nothing.
    let (code, table, err) = text(&s.kbackup(&with(&[])));
    assert_eq!(code, Some(0), "{err}");
    assert!(table.contains("[applied]"), "{table}");
    assert_eq!(s.committed(&s.secor.group), vec![1050, 1800, 2400, 0]);
    let again = json(&s.kbackup(&with(&["--json"])));
    assert_eq!((again["totals"]["changed"].as_u64(), again["applied"].as_bool()), (Some(0), Some(false)), "{again}");
    assert!(again["partitions"][0]["note"].as_str().unwrap().contains("taken over before"), "{again}");
    let (code, out, _) = text(&s.kbackup(&[&["check"][..], &cfg].concat()));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no position of Secor's is left to take over"), "{out}");

    // kbackup runs from there: every event once, across Secor's files and its own.
    s.catch_up(&cfg, &[]);
    assert_eq!(s.committed(&s.secor.group), s.ends());
    s.assert_exactly_once().await;
    let (code, report, err) = text(&s.kbackup(&[&["verify"][..], &cfg, &["--topic", &t]].concat()));
    eprintln!("verify across the switch:\n{report}");
    assert_eq!(code, Some(0), "verify across the switch must be clean:\n{report}\n{err}");

    // After kbackup committed, a takeover changes nothing and says why.
    let after = json(&s.kbackup(&with(&["--json"])));
    assert_eq!(after["totals"]["changed"], 0);
    assert!(after["partitions"][3]["note"].as_str().unwrap().contains("committed since"), "{after}");
}

/// Stock Secor commits nothing to Kafka: the naive switch would store everything again. It is
/// refused; after the takeover nothing is stored twice. Without a `[secor]` section a foreign
/// commit is resumed from, but never silently: counted and logged.
#[tokio::test(flavor = "multi_thread")]
async fn the_naive_switch_never_loses_or_doubles_silently() {
    let Some(s) = Switch::new("naive", 2, 200).await else { return };
    let t = s.topic.clone();
    for p in 0..2 {
        s.secor.upload(&t, p, 0, 200, true).await;
    }
    let props = s.properties();
    let cfg = config_args(&props, "--secor-properties");
    let cfg: Vec<&str> = cfg.iter().map(String::as_str).collect();
    let (code, _, err) = text(&s.kbackup(&[&["run"][..], &cfg, &["--until-caught-up", "--metrics-addr", "off"]].concat()));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no commit, but Secor's ZooKeeper offset is 200"), "{err}");
    let plan = json(&s.kbackup(&[&["takeover"][..], &cfg, &["--dry-run", "--json"]].concat()));
    assert_eq!((plan["totals"]["naive_doubled"].as_u64(), plan["totals"]["naive_lost"].as_u64()), (Some(400), Some(0)), "{plan}");
    assert_eq!(s.kbackup(&[&["takeover"][..], &cfg].concat()).status.code(), Some(0));
    s.catch_up(&cfg, &[]);
    s.assert_exactly_once().await;

    // A TOML config without [secor], on a group another client committed: resumed, and said.
    let other = Switch::new("foreign", 2, 50).await.unwrap();
    let group = unique("g");
    let foreign = SecorStandIn::new(&other.stack, &other.zookeeper, "/", &group, PATH, other.stack.storage(&other.container));
    foreign.auto_commit(&other.topic, &[50, 50]);
    let section = topic_section(&other.topic, PATH, "");
    let cfg = other.write("plain.toml", &config(&other.stack, &other.container, &group, &section, 3600));
    let mut run = Running::start(&other.stack, &cfg, other.dir.path().join("plain.log"), &[]);
    run.wait_live(Duration::from_secs(30));
    let topic = other.topic.clone();
    wait_for("the foreign commits to be counted", Duration::from_secs(60), || {
        let page = run.metrics_page()?;
        (metric_with(&page, "kbackup_foreign_commits_resumed_total", &[("topic", &topic)]) == Some(2.0)).then_some(())
    });
    assert_eq!(run.terminate(Duration::from_secs(60)), 0);
}

/// The way back: kbackup's position written to Secor's ZooKeeper nodes (and Secor's own Kafka
/// group, another one here), refused while kbackup's record holds unfinished uploads; Secor
/// then resumes from ZooKeeper and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread")]
async fn handback_then_secor_resumes_exactly_once() {
    let Some(mut s) = Switch::new("handback", 3, 300).await else { return };
    let t = s.topic.clone();
    s.secor.upload(&t, 0, 0, 120, true).await;
    s.secor.upload(&t, 1, 0, 300, true).await;
    let group = unique("kb");
    let toml = s.toml(&group);
    let cfg = config_args(&toml, "--config");
    let cfg: Vec<&str> = cfg.iter().map(String::as_str).collect();
    let takeover = [&["takeover"][..], &cfg].concat();
    assert_eq!(s.kbackup(&takeover).status.code(), Some(0));
    assert_eq!(s.committed(&group), vec![120, 300, 0]);
    assert_eq!(s.committed(&s.secor.group), vec![-1, -1, -1], "Secor's group is left as it is");
    s.catch_up(&cfg, &[]);

    // More events, and a kbackup that crashes right after an upload: its record holds files
    // Secor would upload again.
    s.produce(100).await;
    let code = s.catch_up(&cfg, &[("KBACKUP_FAILPOINT", "uploaded:1")]);
    assert_ne!(code, 0, "the failpoint was never reached");
    let handback = [&["handback"][..], &cfg].concat();
    // The crashed member stays in the group until its session times out; until then handback
    // refuses for that reason.
    let out = wait_for("the crashed writer's session to expire", Duration::from_secs(60), || {
        let out = s.kbackup(&handback);
        (!String::from_utf8_lossy(&out.stderr).contains("still running")).then_some(out)
    });
    let (code, out, err) = text(&out);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("--until-caught-up") && out.contains("refused: nothing changed"), "{out}{err}");
    assert_eq!(s.secor.zk_offset(&t, 0).await, Some(120), "ZooKeeper unchanged");

    s.catch_up(&cfg, &[]);
    let ends = s.ends();
    // `run --until-caught-up && handback`: a member's leave reaches the coordinator
    // asynchronously (CI saw it listed once, right after a clean exit); handback waits for it
    // (--wait-for-stop) instead of refusing.
    let dry_run = [&handback[..], &["--dry-run"]].concat();
    let out = s.kbackup(&dry_run);
    let (code, table, err) = text(&out);
    assert_eq!(code, Some(0), "{err}");
    eprintln!("handback --dry-run:\n{table}");
    assert_eq!(s.secor.zk_offset(&t, 2).await, None, "a dry run writes nothing");
    let (code, table, err) = text(&s.kbackup(&handback));
    assert_eq!(code, Some(0), "{table}{err}");
    for p in 0..3 {
        assert_eq!(s.secor.zk_offset(&t, p).await, Some(ends[p as usize]));
    }
    assert_eq!(s.committed(&s.secor.group), ends, "Secor's own group gets the position too");
    let again = json(&s.kbackup(&[&handback[..], &["--json"]].concat()));
    assert_eq!(again["totals"]["changed"], 0, "{again}");

    // Secor runs again from ZooKeeper.
    s.produce(50).await;
    s.secor.resume(&s.stack, &t, 3).await;
    s.assert_exactly_once().await;
}

/// Positions move only between stopped programs; a retention gap is loud and must be accepted.
#[tokio::test(flavor = "multi_thread")]
async fn takeover_refuses_live_members_and_unaccepted_gaps() {
    let Some(s) = Switch::new("refuse", 2, 100).await else { return };
    let t = s.topic.clone();
    s.secor.set_zk_offset(&t, 0, 10).await;
    s.secor.set_zk_offset(&t, 1, 50).await;
    let group = unique("kb");
    let toml = s.toml(&group);
    let cfg = config_args(&toml, "--config");
    let cfg: Vec<&str> = cfg.iter().map(String::as_str).collect();
    let takeover = |extra: &[&str]| s.kbackup(&[&["takeover"][..], &cfg, extra].concat());

    // Secor still consuming (a live member of its group).
    let secor_consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.stack.brokers)
        .set("group.id", &s.secor.group)
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    rdkafka::consumer::Consumer::subscribe(&secor_consumer, &[&t]).unwrap();
    wait_for("the stand-in to join Secor's group", Duration::from_secs(30), || {
        let _ = secor_consumer.poll(Duration::from_millis(100));
        (!rdkafka::consumer::Consumer::assignment(&secor_consumer).ok()?.elements().is_empty()).then_some(())
    });
    let (code, _, err) = text(&takeover(&["--wait-for-stop", "0"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Secor is still running") && err.contains(&s.secor.group), "{err}");
    // With --json, the refusal is JSON on stdout too.
    let refusal = json(&takeover(&["--wait-for-stop", "1", "--json"]));
    assert_eq!((refusal["refused"].as_bool(), refusal["kind"].as_str()), (Some(true), Some("running")), "{refusal}");
    assert!(refusal["error"].as_str().unwrap().contains("Secor is still running"), "{refusal}");
    drop(secor_consumer);
    assert_eq!(s.committed(&group), vec![-1, -1]);

    // A retention gap: Kafka deleted [10, 30) of partition 0 before Secor uploaded it.
    s.stack.delete_records(&t, 0, 30).await;
    let out = wait_for("Secor's member to leave", Duration::from_secs(30), || {
        let out = takeover(&["--json"]);
        (!String::from_utf8_lossy(&out.stderr).contains("still running")).then_some(out)
    });
    let (code, _, err) = text(&out);
    assert_eq!(code, Some(1), "{err}");
    let report = json(&out);
    assert_eq!(report["totals"]["retention_gap"], 20, "{report}");
    assert!(err.contains("RETENTION GAP") && err.contains("[10, 30)"), "{err}");
    assert_eq!(s.committed(&group), vec![-1, -1], "nothing changed");
    let (code, table, err) = text(&takeover(&["--accept-retention-gap"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(table.contains("retention gap of 20 events accepted"), "{table}");
    assert_eq!(s.committed(&group), vec![30, 50]);

    // kbackup running as its group: refused too.
    let mut run = Running::start(&s.stack, &toml, s.dir.path().join("live.log"), &[]);
    run.wait_live(Duration::from_secs(30));
    let out = wait_for("kbackup to join its group", Duration::from_secs(60), || {
        let out = takeover(&["--wait-for-stop", "0"]);
        (out.status.code() == Some(1)).then_some(out)
    });
    let (_, _, err) = text(&out);
    assert!(err.contains("kbackup is still running") && err.contains(&group), "{err}");
    assert_eq!(run.terminate(Duration::from_secs(60)), 0);
}

/// Secor uploaded a file and died before its ZooKeeper write: Secor itself would store those
/// events again, and so does kbackup after a takeover — `verify` names them.
#[tokio::test(flavor = "multi_thread")]
async fn verify_names_what_a_secor_crash_doubled() {
    let Some(s) = Switch::new("died", 2, 300).await else { return };
    let t = s.topic.clone();
    s.secor.upload(&t, 0, 0, 100, true).await;
    s.secor.upload(&t, 0, 100, 200, false).await;
    s.secor.upload(&t, 1, 0, 300, true).await;
    let props = s.properties();
    let cfg = config_args(&props, "--secor-properties");
    let cfg: Vec<&str> = cfg.iter().map(String::as_str).collect();
    assert_eq!(s.kbackup(&[&["takeover"][..], &cfg].concat()).status.code(), Some(0));
    s.catch_up(&cfg, &[]);
    let (code, report, _) = text(&s.kbackup(&[&["verify"][..], &cfg, &["--topic", &t]].concat()));
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("partition 0:") && report.contains("duplicated 100"), "{report}");
    assert!(report.contains("partition 1:") && report.lines().any(|l| l.starts_with("partition 1:") && l.contains("duplicated 0")), "{report}");
}

/// Secor with `kafka.offsets.storage=kafka`, stock (its Kafka commits are its uploads): the
/// takeover has nothing to move.
#[tokio::test(flavor = "multi_thread")]
async fn secor_with_offsets_in_kafka_has_nothing_to_move() {
    let Some(s) = Switch::new("inkafka", 2, 100).await else { return };
    let t = s.topic.clone();
    for p in 0..2 {
        s.secor.upload(&t, p, 0, 60, true).await;
    }
    s.secor.auto_commit(&t, &[60, 60]);
    let props = s.properties();
    let text_props = std::fs::read_to_string(&props).unwrap().replace("kafka.offsets.storage=zookeeper", "kafka.offsets.storage=kafka");
    let props = s.write("secor-kafka.properties", &text_props);
    let cfg = config_args(&props, "--secor-properties");
    let cfg: Vec<&str> = cfg.iter().map(String::as_str).collect();
    let report = json(&s.kbackup(&[&["takeover"][..], &cfg, &["--json"]].concat()));
    for row in report["partitions"].as_array().unwrap() {
        assert!(row["note"].as_str().unwrap().contains("ZooKeeper agrees: the position stays, marked as taken over"), "{report}");
        assert_eq!(row["sets"], 60);
    }
    s.catch_up(&cfg, &[]);
    s.assert_exactly_once().await;
}
