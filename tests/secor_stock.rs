//! The day kbackup replaces stock Secor, and the way back and forth again: a stand-in leaves
//! the state stock Secor leaves (its layout `<path>/<topic>/dt=<date>/1_<kp>_<offset>`,
//! SequenceFiles, ZooKeeper offsets behind a node created before the offset is written,
//! nothing committed to Kafka); kbackup runs from Secor's own properties files (stock Secor's
//! defaults plus a deployment's file), writes the same layout and format, and `verify` is
//! clean over the container as it is after every step.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use common::secor_stock::{assert_stock_exactly_once, AfterUpload, StockSecor, CURATOR_DEFAULT_DATA};
use common::*;

const PATH: &str = "secor/raw";
const IST_OFFSET_MS: i64 = 19_800_000;

fn ist_today() -> NaiveDate {
    (Utc::now() + chrono::Duration::milliseconds(IST_OFFSET_MS)).date_naive()
}

fn ist_midnight(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis() - IST_OFFSET_MS
}

struct Stock {
    stack: Stack,
    topic: String,
    partitions: i32,
    container: String,
    secor: StockSecor,
    expected: Vec<Expect>,
    produced: Vec<i64>,
    /// Holds the properties files.
    _dir: tempfile::TempDir,
    /// The deployment's file (it includes stock Secor's secor.common.properties).
    files: Vec<PathBuf>,
}

impl Stock {
    async fn new(prefix: &str, partitions: i32) -> Option<Stock> {
        let stack = stack()?;
        let zookeeper = zookeeper()?;
        let topic = unique(prefix);
        stack.create_topic(&topic, partitions).await;
        let container = unique("st");
        let storage = stack.storage(&container);
        storage.ensure_container(true).await.unwrap();
        let zk_path = format!("/{}", unique("chroot"));
        let secor = StockSecor::new(&stack, &zookeeper, &zk_path, &unique("secor"), PATH, storage);
        let dir = tempfile::tempdir().unwrap();
        let (host, port) = stack.brokers.split_once(':').unwrap();
        let store = secor_store_properties(&stack, &container, PATH, true);
        // What a stock Secor deployment sets on top of Secor's defaults.
        let own = format!(
            "kafka.seed.broker.host={host}\nkafka.seed.broker.port={port}\nzookeeper.quorum={zookeeper}\nkafka.zookeeper.path={zk_path}\n\
             secor.kafka.group={}\nsecor.kafka.topic_filter={topic}\n{store}\
             secor.message.parser.class=com.pinterest.secor.parser.JsonMessageParser\nmessage.timestamp.name=syncts\n\
             secor.parser.timezone=Asia/Kolkata\npartitioner.finalizer.delay.seconds=60\nsecor.max.file.age.seconds=3600\n\
             secor.local.path=/mnt/secor_data/message_logs/backup\ninclude={}\n",
            secor.base.group,
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/secor-stock/secor.common.properties").display()
        );
        let own_file = dir.path().join("secor.backup.properties");
        std::fs::write(&own_file, own).unwrap();
        // Secor's -Dconfig file: its own keys, then `include=` Secor's defaults (a key's first
        // value counts, in Secor and in kbackup).
        let files = vec![own_file];
        Some(Stock { stack, topic, partitions, container, secor, expected: Vec::new(), produced: vec![0; partitions as usize], _dir: dir, files })
    }

    /// `n` more events on every partition, ten minutes either side of today's IST midnight
    /// (yesterday's and today's folders).
    async fn produce(&mut self, n: i64) {
        let producer = self.stack.producer();
        let midnight = ist_midnight(ist_today());
        let (today, yesterday) = (ist_today().to_string(), (ist_today() - chrono::Days::new(1)).to_string());
        for p in 0..self.partitions {
            let mut sends = Vec::new();
            for i in 0..n {
                let k = self.produced[p as usize] + i;
                let syncts = midnight + (k % 20 - 10) * 60_000;
                let line = format!(r#"{{"eid":"IMPRESSION","mid":"{}-{p}-{k}","syncts":{syncts}}}"#, self.topic);
                let date = if syncts < midnight { yesterday.clone() } else { today.clone() };
                self.expected.push(Expect { line: line.clone().into_bytes(), partition: p, date, dir: String::new() });
                sends.push(line);
            }
            self.produced[p as usize] += n;
            for chunk in sends.chunks(500) {
                let futures = chunk.iter().map(|line| {
                    let rec = rdkafka::producer::FutureRecord::<str, [u8]>::to(&self.topic).partition(p).payload(line.as_bytes());
                    producer.send(rec, Duration::from_secs(30))
                });
                for r in futures::future::join_all(futures).await {
                    r.map_err(|(e, _)| e).unwrap();
                }
            }
        }
    }

    fn args(&self, command: &str, extra: &[&str]) -> Vec<String> {
        let mut a = vec![command.to_string()];
        for f in &self.files {
            a.extend(["--secor-properties".to_string(), f.to_str().unwrap().to_string()]);
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn kbackup(&self, command: &str, extra: &[&str]) -> (Option<i32>, String, String) {
        let args = self.args(command, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o: Output = kbackup(&self.stack, &args).env("RUST_LOG", "warn").output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    }

    /// A move (takeover, handback) once no member of the groups is left listed.
    fn settled(&self, command: &str, extra: &[&str]) -> (Option<i32>, String, String) {
        wait_for("the groups to be empty", Duration::from_secs(60), || {
            let out = self.kbackup(command, extra);
            (!out.2.contains("still running")).then_some(out)
        })
    }

    fn catch_up(&self) {
        let (code, out, err) = self.kbackup("run", &["--until-caught-up", "--metrics-addr", "off"]);
        assert_eq!(code, Some(0), "{out}{err}");
    }

    /// `verify` over the container as it is: clean.
    fn verify_clean(&self, step: &str) -> String {
        let (code, out, err) = self.kbackup("verify", &["--topic", &self.topic]);
        eprintln!("verify after {step}:\n{out}");
        assert_eq!(code, Some(0), "verify after {step} must be clean:\n{out}\n{err}");
        out
    }

    async fn assert_exactly_once(&self) -> Vec<String> {
        let blobs = read_all(&self.stack.storage(&self.container)).await;
        assert_stock_exactly_once(&blobs, PATH, &self.topic, &self.expected)
    }

    fn committed(&self) -> Vec<i64> {
        self.stack.committed(&self.secor.base.group, &self.topic, self.partitions)
    }
}

/// Stock Secor to kbackup and back, twice, from Secor's own properties: a node Secor created
/// but never wrote an offset to is recovered from its files; a wrong chroot is refused; the
/// second switch adopts what Secor stored after the handback; a handback that would move Secor
/// backwards is refused; `_SUCCESS` lands when every partition's date is complete.
#[tokio::test(flavor = "multi_thread")]
async fn stock_secor_switches_both_ways_exactly_once() {
    let Some(mut s) = Stock::new("stock", 3).await else { return };
    s.produce(400).await;
    let t = s.topic.clone();

    // Secor's config is accepted as it is.
    let (code, out, err) = s.kbackup("check", &["--offline"]);
    assert_eq!(code, Some(0), "{out}{err}");
    eprintln!("check --offline on stock Secor's properties:\n{out}");
    assert!(out.contains("layout = \"secor\"") && out.contains("file_format = \"sequencefile\"") && out.contains("record_time = \"never\""), "{out}");
    assert!(!out.contains("unknown keys"), "{out}");

    // Stock Secor's state: partition 0 uploaded twice; partition 1 uploaded, then killed after
    // its next upload before writing the node; partition 2 killed after creating its node,
    // before writing the offset.
    s.secor.upload(&t, 0, 0, 100, AfterUpload::WriteOffset).await;
    s.secor.upload(&t, 0, 100, 250, AfterUpload::WriteOffset).await;
    s.secor.upload(&t, 1, 0, 300, AfterUpload::WriteOffset).await;
    s.secor.upload(&t, 1, 300, 350, AfterUpload::KilledAfterCreate).await;
    assert_eq!(s.secor.zk_offset(&t, 1).await, Some(300));
    s.secor.upload(&t, 2, 0, 150, AfterUpload::KilledAfterCreate).await;
    assert_eq!(s.secor.zk_data(&t, 2).await.as_deref(), Some(CURATOR_DEFAULT_DATA));
    assert_eq!(s.committed(), vec![-1; 3], "stock Secor commits nothing to Kafka");

    // A wrong chroot: refused, naming the path tried and what ZooKeeper holds.
    let (code, out, err) = s.kbackup("takeover", &["--zookeeper-path", "/wrong", "--dry-run"]);
    eprintln!("takeover with a wrong chroot:\n{err}");
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("/wrong/consumers/") && err.contains(&format!("{}/consumers: ", s.secor.base.zk_path)) && err.contains(&s.secor.base.group),
        "{err}"
    );
    assert!(err.contains("backup files of") && err.contains("--from-storage"), "{err}");

    // The half-written node, and the upload past the node: what they are, and the way forward.
    let (code, table, err) = s.kbackup("takeover", &["--dry-run"]);
    eprintln!("takeover --dry-run (stock Secor killed mid-way):\n{table}");
    assert_eq!(code, Some(1), "{table}{err}");
    assert!(table.contains("Curator's default node data") && table.contains("--from-storage"), "{table}");
    assert!(table.contains("_00000000000000000300 starts at its ZooKeeper offset 300"), "{table}");
    let (code, table, err) = s.kbackup("takeover", &["--dry-run", "--from-storage"]);
    eprintln!("takeover --dry-run --from-storage (first switch):\n{table}");
    assert_eq!(code, Some(0), "{table}{err}");
    assert!(table.contains("from where Secor's files in storage end") && table.contains("past its ZooKeeper offset 300"), "{table}");
    assert!(table.contains("stored 750 twice"), "{table}");
    let (code, table, err) = s.kbackup("takeover", &["--from-storage"]);
    assert_eq!(code, Some(0), "{table}{err}");
    assert_eq!(s.committed(), vec![250, 350, 150]);
    s.verify_clean("the first takeover");

    // kbackup runs: the same layout and format; yesterday's folder gets its _SUCCESS once every
    // partition has marked it.
    s.catch_up();
    assert_eq!(s.committed(), vec![400; 3]);
    let success = s.assert_exactly_once().await;
    let yesterday = ist_today() - chrono::Days::new(1);
    assert_eq!(success, vec![format!("{PATH}/{t}/dt={yesterday}/_SUCCESS")], "only yesterday is complete");
    s.verify_clean("kbackup's run");

    // Back to Secor: handback writes kbackup's position; Secor stores what came since.
    let (code, table, err) = s.settled("handback", &[]);
    assert_eq!(code, Some(0), "{table}{err}");
    for p in 0..3 {
        assert_eq!(s.secor.zk_offset(&t, p).await, Some(400));
    }
    s.produce(200).await;
    s.secor.resume(&s.stack, &t, 3).await;
    s.assert_exactly_once().await;
    s.verify_clean("Secor's second run");

    // The naive restart is refused: Secor stored past kbackup's commit.
    let (code, out, err) = s.kbackup("run", &["--until-caught-up", "--metrics-addr", "off"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("ahead of kbackup's commit 400") && err.contains("kbackup takeover"), "{err}");
    // The next switch adopts Secor's position and counts what the naive path would double.
    let (code, table, err) = s.settled("takeover", &["--dry-run"]);
    eprintln!("takeover --dry-run (after a handback and Secor's run):\n{table}");
    assert_eq!(code, Some(0), "{table}{err}");
    assert!(table.contains("ahead of kbackup's commit 400") && table.contains("stored 600 twice"), "{table}");
    let (code, table, err) = s.kbackup("takeover", &[]);
    assert_eq!(code, Some(0), "{table}{err}");
    assert_eq!(s.committed(), vec![600; 3]);
    s.produce(50).await;
    s.catch_up();
    s.assert_exactly_once().await;
    s.verify_clean("the second switch");

    // Secor's position ahead of kbackup's (a Secor run without a handback): handing back
    // would make it upload again; refused unless accepted.
    s.secor.set_zk_offset(&t, 0, 700, AfterUpload::WriteOffset).await;
    let (code, table, err) = s.settled("handback", &[]);
    eprintln!("handback that would rewind:\n{table}{err}");
    assert_eq!(code, Some(1), "{table}{err}");
    assert!(table.contains("REWIND") && table.contains("[650, 700)") && table.contains("--allow-rewind"), "{table}");
    assert_eq!(s.secor.zk_offset(&t, 0).await, Some(700), "nothing changed");
    let (code, table, err) = s.kbackup("handback", &["--allow-rewind"]);
    assert_eq!(code, Some(0), "{table}{err}");
    assert_eq!(s.secor.zk_offset(&t, 0).await, Some(650));
}
