//! WFS by partition on a real Spark (pyspark from PyPI, `local[2]`): telemetry keyed by device
//! is backed up by `kbackup run`, then `kbackup plan` runs the reference job
//! (`examples/wfs/wfs.py`) through `spark-submit` once per partition group and once over
//! everything. The per-partition summaries together must equal the whole run's, summary for
//! summary — also after a keyed replay into a new topic — and must differ when the events were
//! spread by a key that is not the device (so the comparison can fail). The per-partition runs
//! also read the same backup straight from S3 (moto) through `s3a://`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::producer::FutureRecord;

const DAY_MS: i64 = 86_400_000;
const IST_MS: i64 = 19_800_000;

/// `SPARK_HOME` from `scripts/devstack env`; under CI a missing Spark is a failure.
fn spark_home() -> Option<String> {
    match std::env::var("SPARK_HOME") {
        Ok(h) if Path::new(&h).join("bin/spark-submit").exists() => Some(h),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but no Spark: run `scripts/devstack up` (it installs pyspark) and eval `scripts/devstack env`")
        }
        _ => {
            eprintln!("skipping: no SPARK_HOME (scripts/devstack up installs Spark)");
            None
        }
    }
}

fn ist_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms + IST_MS).unwrap().format("%Y-%m-%d").to_string()
}

/// 36 devices over three days, each with sessions cut by 15-minute silences, several
/// channels and apps, and the event types WFS drops. Returns the first and last IST dates.
async fn produce_telemetry(stack: &Stack, topic: &str) -> (String, String) {
    let producer = stack.producer();
    let base = (chrono::Utc::now().timestamp_millis() / DAY_MS - 4) * DAY_MS;
    let eids = ["START", "IMPRESSION", "INTERACT", "LOG", "END", "AUDIT", "SEARCH", "ASSESS"];
    let (mut first, mut last) = (i64::MAX, 0);
    for d in 0..36i64 {
        let did = format!("device-{d:02}");
        let mut ets = base + d * 7_200_000;
        for i in 0..25i64 {
            ets += if i % 7 == 6 { 900_000 } else { 20_000 + (d * 7 + i * 13) % 40_000 };
            let syncts = ets + 5_000;
            first = first.min(syncts);
            last = last.max(syncts);
            let line = format!(
                r#"{{"eid":"{}","ets":{ets},"mid":"{did}-{i}","context":{{"did":"{did}","channel":"ch-{}","pdata":{{"id":"app-{}"}}}},"syncts":{syncts}}}"#,
                eids[((d + i) % 8) as usize],
                (d + i / 12) % 3,
                d % 2
            );
            // Keyed by device, placed by the Java client's murmur2 (as Sunbird's pipeline does).
            producer.send(FutureRecord::to(topic).key(&did).payload(&line), Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        }
    }
    (ist_date(first), ist_date(last))
}

/// Backs `topic` up into `store` under `path` with small files, to the end.
fn backup(stack: &Stack, dir: &Path, store: &Path, topic: &str, path: &str) {
    backup_with(stack, dir, store, topic, path, "");
}

/// [`backup`] with more of the topic's keys (`extra`, TOML lines).
fn backup_with(stack: &Stack, dir: &Path, store: &Path, topic: &str, path: &str, extra: &str) {
    let cfg = dir.join(format!("{path}.toml").replace('/', "-"));
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\n[storage]\nurl = \"file://{}\"\n[writer]\ncommit_interval_ms = 200\n\
             [[topic]]\nname = \"{topic}\"\npath = \"{path}\"\noutput_timezone = \"Asia/Kolkata\"\nmax_file_bytes = 6000\n{extra}",
            stack.brokers,
            unique("g"),
            store.display()
        ),
    )
    .unwrap();
    let mut run = Running::start(stack, &cfg, dir.join(format!("{}.log", path.replace('/', "-"))), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(120)), 0, "{}", run.log_text());
}

/// Runs a writer over the backup of `path` (the config `backup` wrote) until every date from
/// `from` to `to` has a completion marker on each of `partitions`, and stops it.
async fn complete_dates(stack: &Stack, dir: &Path, store: &Path, path: &str, (from, to): (&str, &str), partitions: i32) {
    let cfg = dir.join(format!("{path}.toml").replace('/', "-"));
    let run = Running::start(stack, &cfg, dir.join("complete.log"), &[]);
    let storage =
        kbackup::storage::Storage::open(&kbackup::config::StorageConfig { url: format!("file://{}", store.display()), ..Default::default() })
            .unwrap();
    let (from, to): (chrono::NaiveDate, chrono::NaiveDate) = (from.parse().unwrap(), to.parse().unwrap());
    let deadline = Instant::now() + Duration::from_secs(90);
    'wait: loop {
        assert!(Instant::now() < deadline, "dates {from}..{to} not complete within 90 s:\n{}", run.log_text());
        tokio::time::sleep(Duration::from_millis(300)).await;
        for d in from.iter_days().take_while(|d| *d <= to) {
            let marked = kbackup::completion::read::newest(storage.store.as_ref(), path, &d.to_string(), None).await.unwrap_or_default();
            if marked.len() < partitions as usize {
                continue 'wait;
            }
        }
        break;
    }
    assert_eq!(run.terminate(Duration::from_secs(60)), 0);
}

struct Wfs<'a> {
    stack: &'a Stack,
    dir: PathBuf,
    store: PathBuf,
    spark_home: String,
    dates: (String, String),
}

impl Wfs<'_> {
    /// Runs the reference job through `kbackup plan`; returns its output root and wall time.
    fn plan(&self, prefix: &str, mode: &str, name: &str) -> (PathBuf, Duration) {
        self.plan_from("local", &self.store.display().to_string(), prefix, mode, name, &[], &[])
    }

    /// The same through any fetcher type (`local`: `bucket` is a directory; `s3`: a bucket read
    /// as `s3a://`), with extra spark-submit `--conf`s.
    /// `options` are more of plan's own (`--wait-complete` …).
    #[allow(clippy::too_many_arguments)]
    fn plan_from(
        &self,
        search_type: &str,
        bucket: &str,
        prefix: &str,
        mode: &str,
        name: &str,
        confs: &[String],
        options: &[String],
    ) -> (PathBuf, Duration) {
        let out = self.dir.join(format!("out-{name}"));
        let job = serde_json::json!({
            "search": {"type": search_type, "queries": [{
                "bucket": bucket, "prefix": format!("{prefix}/"), "startDate": self.dates.0, "endDate": self.dates.1
            }]},
            "model": "wfs", "output": {"dir": out}, "idleTime": 600
        });
        let job_path = self.dir.join(format!("job-{name}.json"));
        std::fs::write(&job_path, job.to_string()).unwrap();
        let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wfs/wfs.py");
        let plan_dir = self.dir.join(format!("plan-{name}"));
        let started = Instant::now();
        let o = kbackup(
            self.stack,
            &[
                "plan",
                "--job-config",
                job_path.to_str().unwrap(),
                "--mode",
                mode,
                "--parallelisation",
                "3",
                "--partitions",
                "4",
                "--concurrency",
                "2",
                "--py-file",
                py.to_str().unwrap(),
                "--spark-master",
                "local[2]",
                "--conf",
                "spark.ui.enabled=false",
                "--conf",
                "spark.driver.host=127.0.0.1",
                "--conf",
                "spark.driver.bindAddress=127.0.0.1",
                "--out-dir",
                plan_dir.to_str().unwrap(),
            ]
            .into_iter()
            .chain(confs.iter().flat_map(|c| ["--conf", c.as_str()]))
            .chain(options.iter().map(String::as_str))
            .collect::<Vec<_>>(),
        )
        .env("SPARK_HOME", &self.spark_home)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .unwrap();
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let logs: String = std::fs::read_dir(&plan_dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                    .map(|e| format!("--- {}\n{}", e.path().display(), std::fs::read_to_string(e.path()).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(o.status.code(), Some(0), "plan {mode}:\n{stdout}\n{}\n{logs}", String::from_utf8_lossy(&o.stderr));
        (out, took)
    }
}

/// Every summary line under `root` (all output directories), normalised and sorted.
fn summaries(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for group in std::fs::read_dir(root).unwrap().flatten() {
        for f in std::fs::read_dir(group.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("part-") && name.ends_with(".json") {
                for line in std::fs::read_to_string(f.path()).unwrap().lines() {
                    // serde_json's map is sorted: the same summary gives the same text.
                    out.push(serde_json::from_str::<serde_json::Value>(line).unwrap().to_string());
                }
            }
        }
    }
    out.sort();
    out
}

fn groups(root: &Path) -> Vec<String> {
    let mut g: Vec<String> = std::fs::read_dir(root).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    g.sort();
    g
}

#[tokio::test(flavor = "multi_thread")]
async fn per_partition_wfs_equals_the_whole_run() {
    let Some(stack) = stack() else { return };
    let Some(spark_home) = spark_home() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let src = unique("wfs");
    stack.create_topic(&src, 4).await;
    let dates = produce_telemetry(&stack, &src).await;
    assert!(stack.end_offsets(&src, 4).iter().all(|n| *n > 0), "every partition holds devices");
    backup(&stack, dir.path(), &store, &src, "unique/raw");
    // Files only: `_kbackup/` holds the writer's bookkeeping (the topic's settings).
    let files = std::fs::read_dir(store.join("unique/raw")).unwrap().flatten().filter(|e| e.path().is_file()).count();
    assert!(files >= 12, "files rolled often over several dates and all partitions ({files})");
    let wfs = Wfs { stack: &stack, dir: dir.path().to_path_buf(), store: store.clone(), spark_home, dates: dates.clone() };

    // Each group's job starts once its partitions' dates are complete (the writer's markers).
    complete_dates(&stack, dir.path(), &store, "unique/raw", (&dates.0, &dates.1), 4).await;
    let cfg = dir.path().join("unique-raw.toml").display().to_string();
    let wait: Vec<String> =
        ["--wait-complete", "--config", &cfg, "--topic", &src, "--timeout", "60s", "--poll-interval", "1s"].map(String::from).to_vec();
    let (by_partition, t_parts) = wfs.plan_from("local", &store.display().to_string(), "unique/raw", "via-partition", "parts", &[], &wait);
    let (whole, t_whole) = wfs.plan("unique/raw", "run-mode", "whole");
    assert_eq!(groups(&by_partition), ["partitions-0-2", "partitions-3-3"], "4 partitions in groups of 3 cover each once");
    assert_eq!(groups(&whole), ["all"]);
    let want = summaries(&whole);
    let got = summaries(&by_partition);
    assert!(want.len() > 36, "sessions were cut: {} summaries for 36 devices", want.len());
    assert_eq!(got, want, "the per-partition summaries together equal the whole run's");
    eprintln!(
        "wfs: {} events, 4 partitions, 2 groups, {} summaries equal; wall time via-partition {:.1}s (concurrency 2), run-mode {:.1}s",
        36 * 25,
        want.len(),
        t_parts.as_secs_f64(),
        t_whole.as_secs_f64()
    );

    // The same events backed up as Parquet (issue 40): per-partition WFS over the Variant
    // column gives the same summaries.
    backup_with(&stack, dir.path(), &store, &src, "pq/raw", "file_format = \"parquet\"\n");
    let (over_parquet, t_pq) = wfs.plan("pq/raw", "via-partition", "parquet");
    assert_eq!(summaries(&over_parquet), want, "per-partition summaries over Parquet equal the whole run's over JSON");
    eprintln!("wfs: via-partition over Parquet: {} summaries equal in {:.1}s", want.len(), t_pq.as_secs_f64());

    // Straight from the object store: the same backup in S3 (the dev stack's moto), read by
    // Spark through s3a:// (hadoop-aws from Maven Central, fetched by scripts/devstack).
    let jars = std::env::var("KBACKUP_SPARK_S3A_JARS").expect("scripts/devstack env exports KBACKUP_SPARK_S3A_JARS with SPARK_HOME");
    let bucket = unique("wfs-s3");
    create_bucket(&stack.s3_endpoint, &bucket);
    let cfg = dir.path().join("s3.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\n[storage]\nurl = \"s3://{bucket}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"{S3_KEY_ID}\"\nsecret_access_key = \"{S3_SECRET}\"\n[writer]\ncommit_interval_ms = 200\n\
             [[topic]]\nname = \"{src}\"\npath = \"unique/raw\"\noutput_timezone = \"Asia/Kolkata\"\nmax_file_bytes = 6000\n",
            stack.brokers,
            unique("g"),
            stack.s3_endpoint
        ),
    )
    .unwrap();
    let mut run = Running::start(&stack, &cfg, dir.path().join("s3.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(120)), 0, "{}", run.log_text());
    let s3a: Vec<String> = [
        format!("spark.jars={jars}"),
        format!("spark.hadoop.fs.s3a.endpoint={}", stack.s3_endpoint),
        "spark.hadoop.fs.s3a.path.style.access=true".into(),
        "spark.hadoop.fs.s3a.connection.ssl.enabled=false".into(),
        "spark.hadoop.fs.s3a.endpoint.region=us-east-1".into(),
        "spark.hadoop.fs.s3a.aws.credentials.provider=org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider".into(),
        format!("spark.hadoop.fs.s3a.access.key={S3_KEY_ID}"),
        format!("spark.hadoop.fs.s3a.secret.key={S3_SECRET}"),
    ]
    .into();
    let (from_s3, t_s3) = wfs.plan_from("s3", &bucket, "unique/raw", "via-partition", "s3", &s3a, &[]);
    assert_eq!(summaries(&from_s3), want, "per-partition summaries read from S3 through s3a:// equal the whole run's");
    eprintln!("wfs: via-partition straight from S3 (s3a://, moto): {} summaries equal in {:.1}s", want.len(), t_s3.as_secs_f64());

    // Replayed with the producer's partitioner on the device key: the affinity survives.
    let ckpt = |n: &str| dir.path().join(format!("{n}.progress")).display().to_string();
    let replay = |to: &str, key: &str| {
        let cfg = dir.path().join("unique-raw.toml");
        let ck = ckpt(to);
        let args = [
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            "--topic",
            &src,
            "--from",
            &dates.0,
            "--to",
            &dates.1,
            "--to-topic",
            to,
            "--partitioner",
            "murmur2",
            "--key",
            key,
            "--checkpoint",
            &ck,
        ];
        let o = kbackup(&stack, &args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    };
    let replayed = unique("wfsreplayed");
    stack.create_topic(&replayed, 4).await;
    replay(&replayed, "context.did");
    backup(&stack, dir.path(), &store, &replayed, "replayed/raw");
    let (after_replay, _) = wfs.plan("replayed/raw", "via-partition", "replayed");
    assert_eq!(summaries(&after_replay), want, "per-partition summaries after a keyed replay equal the whole run's");

    // Spread by `mid`, not the device: a device's events land in several partitions, its
    // sessions are cut apart, and per-partition results no longer equal the whole run.
    let scattered = unique("wfsscattered");
    stack.create_topic(&scattered, 4).await;
    replay(&scattered, "mid");
    backup(&stack, dir.path(), &store, &scattered, "scattered/raw");
    let (wrong, _) = wfs.plan("scattered/raw", "via-partition", "scattered");
    let wrong = summaries(&wrong);
    assert_ne!(wrong, want, "keyed by mid, per-partition results must differ");
    eprintln!("wfs: keyed by mid instead of the device: {} per-partition summaries vs {} in the whole run", wrong.len(), want.len());
    assert!(wrong.len() > want.len(), "sessions split across partitions: {} vs {}", wrong.len(), want.len());
}

/// Stock Secor's default format, written by kbackup and read by a real Spark
/// (`sparkContext.sequenceFile`): uncompressed, and block-compressed with gzip as Secor writes
/// it with `GzipCodec`. Every message comes back once, byte for byte (raw newlines and
/// non-UTF-8 bytes included), keyed by its offset; `_SUCCESS` and kbackup's `_kbackup/` are
/// skipped by Hadoop's reader as Secor's readers rely on.
#[tokio::test(flavor = "multi_thread")]
async fn spark_reads_sequence_file_backups() {
    use base64::Engine;
    let Some(stack) = stack() else { return };
    let Some(spark_home) = spark_home() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let topic = unique("seq");
    stack.create_topic(&topic, 2).await;
    let producer = stack.producer();
    let now = chrono::Utc::now().timestamp_millis();
    let mut values: Vec<Vec<u8>> = Vec::new();
    for i in 0..600i64 {
        let v = match i % 50 {
            // Not JSON, not UTF-8: Secor's SequenceFiles hold bytes.
            7 => vec![0xff, 0x00, b'\n', i as u8, 0xfe],
            // A raw newline inside a JSON value, kept as it is.
            9 => format!("{{\"mid\":\"seq-{i}\",\n\"syncts\":{}}}", now - i * 60_000).into_bytes(),
            _ => format!(r#"{{"mid":"seq-{i}","eid":"IMPRESSION","syncts":{}}}"#, now - i * 60_000).into_bytes(),
        };
        producer
            .send(FutureRecord::<str, [u8]>::to(&topic).partition((i % 2) as i32).payload(&v), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        values.push(v);
    }
    let mut want = values.iter().map(|v| base64::engine::general_purpose::STANDARD.encode(v)).collect::<Vec<_>>();
    want.sort();
    let script = dir.path().join("count.py");
    std::fs::write(
        &script,
        "import sys, base64\nfrom pyspark import SparkContext\nsc = SparkContext(appName='seqcount')\n\
         rdd = sc.sequenceFile(sys.argv[1], 'org.apache.hadoop.io.LongWritable', 'org.apache.hadoop.io.BytesWritable')\n\
         rows = rdd.map(lambda kv: '%d %s' % (kv[0], base64.b64encode(bytes(kv[1])).decode())).collect()\n\
         open(sys.argv[2], 'w').write('\\n'.join(rows))\nsc.stop()\n",
    )
    .unwrap();
    for compression in ["none", "gzip"] {
        let path = format!("seq/{compression}");
        let cfg = dir.path().join(format!("{compression}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\n[storage]\nurl = \"file://{}\"\n[writer]\ncommit_interval_ms = 200\n\
                 [[topic]]\nname = \"{topic}\"\npath = \"{path}\"\noutput_timezone = \"Asia/Kolkata\"\nmax_file_bytes = 9000\n\
                 layout = \"secor\"\nfile_format = \"sequencefile\"\ncompression = \"{compression}\"\n",
                stack.brokers,
                unique("g"),
                store.display()
            ),
        )
        .unwrap();
        let mut run = Running::start(&stack, &cfg, dir.path().join(format!("{compression}.log")), &["--until-caught-up"]);
        assert_eq!(run.wait(Duration::from_secs(120)), 0, "{}", run.log_text());
        let out = dir.path().join(format!("{compression}.out"));
        let glob = format!("file://{}/{path}/{topic}/dt=*", store.display());
        let started = Instant::now();
        let o = std::process::Command::new(Path::new(&spark_home).join("bin/spark-submit"))
            .args(["--master", "local[2]", "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.host=127.0.0.1"])
            .args(["--conf", "spark.driver.bindAddress=127.0.0.1"])
            .arg(&script)
            .arg(&glob)
            .arg(&out)
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .output()
            .unwrap();
        assert!(o.status.success(), "spark-submit: {}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(&out).unwrap();
        let mut got: Vec<String> = Vec::new();
        let mut offsets: std::collections::BTreeSet<i64> = std::collections::BTreeSet::new();
        for line in text.lines() {
            let (offset, value) = line.split_once(' ').unwrap();
            offsets.insert(offset.parse().unwrap());
            got.push(value.to_string());
        }
        got.sort();
        assert_eq!(got.len(), values.len(), "Spark read {} records of {} ({compression})", got.len(), values.len());
        assert_eq!(got, want, "every message once, byte for byte ({compression})");
        assert_eq!(offsets.len(), 300, "keys are the 300 offsets of each partition ({compression})");
        eprintln!(
            "spark: sparkContext.sequenceFile read {} records of kbackup's {compression} SequenceFiles in {:.1}s",
            got.len(),
            started.elapsed().as_secs_f64()
        );
    }
}

/// Every value of `topic`'s `partitions` partitions, parsed as JSON.
fn stack_values(stack: &Stack, topic: &str, partitions: i32) -> Vec<serde_json::Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let c: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &stack.brokers).set("group.id", unique("reader")).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let total: i64 = stack.end_offsets(topic, partitions).iter().sum();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < total {
        assert!(Instant::now() < deadline, "read {} of {total} messages of {topic}", out.len());
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
        }
    }
    out
}

/// `file_format = "parquet"` read by a real Spark (issue 40): the same telemetry backed up as
/// gzip JSON and as Parquet by two writers; Spark reads the Parquet files natively (the `event`
/// column as a Variant) and finds every event once, and a day's count by `eid` through
/// `variant_get` equals the count Spark makes over the JSON files of that day.
#[tokio::test(flavor = "multi_thread")]
async fn spark_queries_parquet_backups_like_json() {
    let Some(stack) = stack() else { return };
    let Some(spark_home) = spark_home() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let src = unique("pqspark");
    stack.create_topic(&src, 4).await;
    let (first, last) = produce_telemetry(&stack, &src).await;
    // Records with headers, for the record columns.
    let records = unique("pqsparkrec");
    stack.create_topic(&records, 2).await;
    let producer = stack.producer();
    for i in 0..20 {
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (k, v) in [("trace", Some(format!("t-{i}"))), ("nil", None), ("trace", Some("again".to_string()))].iter().take(i % 4) {
            headers = headers.insert(rdkafka::message::Header { key: k, value: v.as_deref().map(str::as_bytes) });
        }
        let line = format!(r#"{{"eid":"LOG","mid":"r-{i}","syncts":{}}}"#, chrono::Utc::now().timestamp_millis());
        let r = FutureRecord::<str, str>::to(&records).partition(i as i32 % 2).payload(&line).headers(headers);
        producer.send(r, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }
    // One read, three outputs of the topic (issue 40's one pass): gzip JSON; Parquet shredded
    // as Sunbird's queries need (nested `context.did` too); Parquet with the default shredding
    // (the timestamp fields). And the records, whole, in Parquet.
    let shredded = "file_format = \"parquet\"\nparquet_shred = { eid = \"string\", mid = \"string\", syncts = \"int64\", ets = \"int64\", \"context.did\" = \"string\" }\n";
    let section = |topic: &str, path: &str, extra: &str| {
        format!("[[topic]]\nname = \"{topic}\"\npath = \"{path}\"\noutput_timezone = \"Asia/Kolkata\"\nmax_file_bytes = 20000\n{extra}")
    };
    let sections = [
        section(&src, "json/raw", ""),
        section(&src, "pq/raw", shredded),
        section(&src, "pq2/raw", "file_format = \"parquet\"\n"),
        section(&records, "pqrec/raw", "file_format = \"parquet\"\nformat = \"record\"\n"),
    ];
    let cfg = dir.path().join("outputs.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\n[storage]\nurl = \"file://{}\"\n[writer]\ncommit_interval_ms = 200\n{}",
            stack.brokers,
            unique("g"),
            store.display(),
            sections.join("")
        ),
    )
    .unwrap();
    let mut run = Running::start(&stack, &cfg, dir.path().join("outputs.log"), &["--until-caught-up"]);
    assert_eq!(run.wait(Duration::from_secs(120)), 0, "{}", run.log_text());
    let script = dir.path().join("query.py");
    std::fs::write(
        &script,
        r#"import sys, json
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName('pqquery').getOrCreate()
store, day, out = sys.argv[1], sys.argv[2], sys.argv[3]
pq = spark.read.parquet(store + '/pq/raw/*.parquet')
types = {f.name: f.dataType.simpleString() for f in pq.schema.fields}
mids = [r[0] for r in pq.selectExpr("variant_get(event, '$.mid', 'string')").collect()]
def by_eid(df, expr):
    return {r[0]: r[1] for r in df.selectExpr(expr + ' as eid').groupBy('eid').count().collect()}
pq_day = by_eid(spark.read.parquet(store + '/pq/raw/' + day + '-*.parquet'), "variant_get(event, '$.eid', 'string')")
json_day = by_eid(spark.read.json(store + '/json/raw/' + day + '-*.json.gz'), 'eid')
did = pq.selectExpr("variant_get(event, '$.context.did', 'string') as did").distinct().count()
pq2_day = by_eid(spark.read.parquet(store + '/pq2/raw/' + day + '-*.parquet'), "variant_get(event, '$.eid', 'string')")
whole = sorted(r[0] for r in pq.selectExpr("to_json(event)").collect())
rec = spark.read.parquet(store + '/pqrec/raw/*.records.parquet')
rec_types = {f.name: f.dataType.simpleString() for f in rec.schema.fields}
headers = sorted([r[0], r[1], [[h['key'], None if h['value'] is None else bytes(h['value']).decode()] for h in r[2]]]
                 for r in rec.select('partition', 'offset', 'headers').collect())
spark.read.parquet(store + '/pq/raw/' + day + '-*.parquet').createOrReplaceTempView('day')
sql_day = {r[0]: r[1] for r in spark.sql("SELECT event:eid::string AS eid, count(*) FROM day GROUP BY 1").collect()}
json.dump({'types': types, 'mids': mids, 'pq_day': pq_day, 'json_day': json_day, 'sql_day': sql_day, 'pq2_day': pq2_day, 'whole': whole, 'devices': did, 'rec_types': rec_types, 'headers': headers}, open(out, 'w'))
spark.stop()
"#,
    )
    .unwrap();
    let out = dir.path().join("query.json");
    let started = Instant::now();
    let o = std::process::Command::new(Path::new(&spark_home).join("bin/spark-submit"))
        .args(["--master", "local[2]", "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.host=127.0.0.1"])
        .args(["--conf", "spark.driver.bindAddress=127.0.0.1"])
        .arg(&script)
        .arg(store.display().to_string())
        .arg(&first)
        .arg(&out)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .unwrap();
    assert!(o.status.success(), "spark-submit: {}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(got["types"]["event"], "variant", "Spark reads the event column as a Variant: {}", got["types"]);
    assert_eq!(got["types"]["offset"], "bigint", "{}", got["types"]);
    let mut mids: Vec<String> = got["mids"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();
    mids.sort();
    let mut want: Vec<String> = (0..36).flat_map(|d| (0..25).map(move |i| format!("device-{d:02}-{i}"))).collect();
    want.sort();
    assert_eq!(mids, want, "every event once, read back through the Variant column");
    assert_eq!(got["devices"], 36);
    let (pq_day, json_day) = (&got["pq_day"], &got["json_day"]);
    assert!(json_day.as_object().is_some_and(|m| m.len() > 3), "the day {first} has several eids over JSON: {json_day}");
    assert_eq!(pq_day, json_day, "count by eid for {first}: Parquet (variant_get) equals JSON");
    assert_eq!(&got["sql_day"], json_day, "the same in SQL's path syntax (event:eid::string)");
    assert_eq!(&got["pq2_day"], json_day, "the same over files shredded by default (the timestamp fields)");
    // Spark rebuilds each whole event from the shredded columns and the rest: the same document.
    let whole: Vec<serde_json::Value> = got["whole"].as_array().unwrap().iter().map(|j| serde_json::from_str(j.as_str().unwrap()).unwrap()).collect();
    assert_eq!(whole.len(), 900);
    let mut sent: Vec<serde_json::Value> = stack_values(&stack, &src, 4);
    let mut rebuilt = whole;
    let key = |v: &serde_json::Value| v.to_string();
    sent.sort_by_key(key);
    rebuilt.sort_by_key(key);
    assert_eq!(rebuilt, sent, "to_json(event) over shredded files equals each event as produced");
    // The record columns: Spark reads the headers as a list of (key, value), in order.
    assert_eq!(got["rec_types"]["headers"], "array<struct<key:string,value:binary>>", "{}", got["rec_types"]);
    assert_eq!(got["rec_types"]["timestamp_type"], "string", "{}", got["rec_types"]);
    let headers = got["headers"].as_array().unwrap();
    assert_eq!(headers.len(), 20, "every record once");
    let with: Vec<usize> = headers.iter().map(|h| h[2].as_array().unwrap().len()).collect();
    assert_eq!(with.iter().filter(|n| **n == 3).count(), 5, "{headers:?}");
    assert!(
        headers.iter().any(|h| h[2] == serde_json::json!([["trace", h[2][0][1].clone()], ["nil", null], ["trace", "again"]])),
        "names repeat, a header without a value stays null, order kept: {headers:?}"
    );
    eprintln!(
        "spark: {} events over Parquet ({first}..{last}); count by eid for {first} equal to JSON's ({json_day}); spark-submit {:.1}s",
        mids.len(),
        started.elapsed().as_secs_f64()
    );
}
