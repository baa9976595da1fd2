//! Shared helpers for the integration tests: they talk to the real Kafka and Azurite started by
//! `scripts/devstack up`. Without the services a test is skipped with a message, except under
//! `CI=true`, where a missing service fails the test.
#![allow(dead_code)]

pub mod hadoop_seq;
pub mod proxy;
pub mod secor_standin;
pub mod secor_stock;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use kbackup::config::StorageConfig;
use kbackup::naming::parse_name;
use kbackup::storage::Storage;
use object_store::{ObjectStore, ObjectStoreExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Azurite's public development key; valid only against the emulator.
pub const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Where the services are.
#[derive(Debug, Clone)]
pub struct Stack {
    pub brokers: String,
    pub connection_string: String,
    /// The S3-compatible server (moto), e.g. `http://127.0.0.1:9479`.
    pub s3_endpoint: String,
    /// The GCS emulator (fake-gcs-server behind its adapter), e.g. `http://127.0.0.1:4473`.
    pub gcs_endpoint: String,
}

/// Which object store the tests write to. One parameter, the same test code:
/// `KBACKUP_TEST_STORAGE=s3` runs them against the S3-compatible server, `gcs` against the GCS
/// emulator, otherwise Azurite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Azure,
    S3,
    Gcs,
}

pub fn backend() -> Backend {
    match std::env::var("KBACKUP_TEST_STORAGE").as_deref() {
        Ok("s3") => Backend::S3,
        Ok("gcs") => Backend::Gcs,
        Ok("azure") | Err(_) => Backend::Azure,
        Ok(other) => panic!("KBACKUP_TEST_STORAGE={other}: expected azure, s3 or gcs"),
    }
}

/// A service-account key for the GCS emulator: no OAuth (fake-gcs-server takes anonymous
/// requests); the key path of the config is what it exercises.
pub const GCS_KEY: &str = r#"{"disable_oauth":true,"client_email":"kbackup-test@example.invalid","private_key":"","private_key_id":""}"#;

/// Creates a bucket on the GCS emulator (its JSON API; it takes anonymous requests).
pub fn create_gcs_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read as _, Write as _};
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let body = format!(r#"{{"name":"{bucket}"}}"#);
    let mut last = String::new();
    for _ in 0..20 {
        let Ok(mut s) = std::net::TcpStream::connect(hostport) else { continue };
        let _ = write!(
            s,
            "POST /storage/v1/b?project=kbackup-test HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        last.clear();
        let _ = s.read_to_string(&mut last);
        if last.starts_with("HTTP/1.1 200") || last.starts_with("HTTP/1.1 409") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("creating GCS bucket {bucket} on {hostport}: {last}");
}

/// moto accepts any key pair; these never leave the machine.
pub const S3_KEY_ID: &str = "kbackup-test";
pub const S3_SECRET: &str = "kbackup-test-secret";

/// Creates an S3 bucket on the test server (moto accepts the unsigned request).
pub fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read as _, Write as _};
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    // Through the fault proxy a request may be failed on purpose: ask again.
    let mut last = String::new();
    for _ in 0..20 {
        let Ok(mut s) = std::net::TcpStream::connect(hostport) else { continue };
        let _ = write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        last.clear();
        let _ = s.read_to_string(&mut last);
        if last.starts_with("HTTP/1.1 200") || last.contains("BucketAlreadyOwnedByYou") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("creating bucket {bucket} on {hostport}: {last}");
}

fn reachable(hostport: &str) -> bool {
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// The dev stack, or `None` (test skipped) when it is not running and CI is not set.
pub fn stack() -> Option<Stack> {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let connection_string = std::env::var("AZURE_STORAGE_CONNECTION_STRING").unwrap_or_else(|_| {
        format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")
    });
    let blob_host = connection_string
        .split(';')
        .find_map(|p| p.strip_prefix("BlobEndpoint="))
        .and_then(|e| url::Url::parse(e).ok())
        .map(|u| format!("{}:{}", u.host_str().unwrap_or("127.0.0.1"), u.port().unwrap_or(10000)))
        .unwrap_or_else(|| "127.0.0.1:10000".into());
    let s3_endpoint = std::env::var("KBACKUP_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9479".into());
    let gcs_endpoint = std::env::var("KBACKUP_GCS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4473".into());
    let blob_host = match backend() {
        Backend::Azure => blob_host,
        Backend::S3 => s3_endpoint.trim_start_matches("http://").trim_end_matches('/').to_string(),
        Backend::Gcs => gcs_endpoint.trim_start_matches("http://").trim_end_matches('/').to_string(),
    };
    let first_broker = brokers.split(',').next().unwrap_or_default().to_string();
    let ok_kafka = reachable(&first_broker);
    let ok_blob = reachable(&blob_host);
    if ok_kafka && ok_blob {
        return Some(Stack { brokers, connection_string, s3_endpoint, gcs_endpoint });
    }
    let msg = format!("dev stack not reachable (kafka {first_broker}: {ok_kafka}, azurite {blob_host}: {ok_blob}); run `scripts/devstack up`");
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg} (CI=true: missing services are a failure)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// The dev stack's ZooKeeper (`scripts/devstack up` starts it), or `None` (test skipped) when
/// it does not answer and CI is not set.
pub fn zookeeper() -> Option<String> {
    let zk = std::env::var("ZOOKEEPER_CONNECT").unwrap_or_else(|_| "127.0.0.1:2191".into());
    if reachable(&zk) {
        return Some(zk);
    }
    let msg = format!("ZooKeeper not reachable at {zk}; run `scripts/devstack up`");
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg} (CI=true: missing services are a failure)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// Secor `.properties` for one topic, as Sunbird deploys its unique backup, against this
/// stack's store (Azure, S3 or GCS keys, by the test backend) and ZooKeeper.
pub fn secor_properties(stack: &Stack, topic: &str, group: &str, container: &str, path: &str, zookeeper: &str, zk_path: &str) -> String {
    let (host, port) = stack.brokers.split_once(':').unwrap();
    let store = secor_store_properties(stack, container, path, false);
    format!(
        "kafka.seed.broker.host={host}\nkafka.seed.broker.port={port}\nzookeeper.quorum={zookeeper}\nkafka.zookeeper.path={zk_path}\n\
         secor.zookeeper.path=/\nkafka.offsets.storage=zookeeper\nkafka.new.consumer.auto.offset.reset=earliest\n\
         secor.kafka.group={group}\nsecor.kafka.topic_filter={topic}\n{store}\
         secor.s3.output_file_pattern={{partition}}-{{kafkaPartition}}-{{currentTimestamp}}.json\n\
         secor.compression.codec=org.apache.hadoop.io.compress.GzipCodec\nsecor.file.extension=.gz\n\
         secor.file.reader.writer.factory=com.pinterest.secor.io.impl.DelimitedTextFileReaderWriterFactory\n\
         message.timestamp.name=syncts\nmessage.fallback.timestamp.name=@timestamp\nmessage.timestamp.input.pattern=yyyy-MM-dd\n\
         secor.message.timezone=UTC\nsecor.parser.timezone=Asia/Kolkata\nsecor.partition.output_dt_format=yyyy-MM-dd\n\
         secor.max.file.size.bytes=100000000\nsecor.max.file.age.seconds=14400\nsecor.local.path=/mnt/secor_data\nsecor.upload.on.shutdown=false\n"
    )
}

/// Secor's keys naming the test's store: the fork's way (`secor.cloud.service`) or stock
/// Secor's (the upload manager class; its defaults say `cloud.service=S3` whatever it is).
pub fn secor_store_properties(stack: &Stack, container: &str, path: &str, stock: bool) -> String {
    match backend() {
        Backend::Azure if stock => format!(
            "secor.upload.manager.class=com.pinterest.secor.uploader.AzureUploadManager\nsecor.azure.account.name=devstoreaccount1\nsecor.azure.account.key={AZURITE_KEY}\n\
             secor.azure.container.name={container}\nsecor.azure.endpoints.protocol=https\nsecor.azure.path={path}\n"
        ),
        Backend::Azure => format!(
            "secor.cloud.service=Azure\nsecor.azure.account.name=devstoreaccount1\nsecor.azure.account.key={AZURITE_KEY}\n\
             secor.azure.container.name={container}\nsecor.azure.endpoints.protocol=https\nsecor.azure.path={path}\n"
        ),
        Backend::S3 => {
            create_bucket(&stack.s3_endpoint, container);
            format!(
                "secor.upload.manager.class=com.pinterest.secor.uploader.S3UploadManager\nsecor.s3.bucket={container}\nsecor.s3.path={path}\n\
                 aws.access.key={S3_KEY_ID}\naws.secret.key={S3_SECRET}\naws.region=us-east-1\naws.endpoint={}\n",
                stack.s3_endpoint
            )
        }
        Backend::Gcs => {
            create_gcs_bucket(&stack.gcs_endpoint, container);
            // No credentials path: the environment's (kbackup_at sets the emulator's).
            format!("cloud.service=GS\nsecor.upload.manager.class=com.pinterest.secor.uploader.GsUploadManager\nsecor.gs.bucket={container}\nsecor.gs.path={path}\n")
        }
    }
}

/// A name unique to this run, safe for topics, groups and containers.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:x}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Stack {
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        self.create_topic_with(topic, partitions, &[]).await
    }

    /// Creates a topic with topic-level configs (e.g. `retention.ms`).
    pub async fn create_topic_with(&self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        self.create_topic_replicated(topic, partitions, 1, configs).await
    }

    /// Creates a topic with `replicas` replicas per partition (a cluster's) and topic configs.
    pub async fn create_topic_replicated(&self, topic: &str, partitions: i32, replicas: i32, configs: &[(&str, &str)]) {
        let admin: AdminClient<_> = ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replicas));
        for (k, v) in configs {
            new = new.set(k, v);
        }
        let res = admin.create_topics(&[new], &AdminOptions::new()).await.unwrap();
        for r in res {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
        // Wait until the broker serves metadata for every partition.
        let client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        wait_for("topic metadata", Duration::from_secs(30), || {
            let md = client.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
            let t = md.topics().first()?;
            (t.error().is_none() && t.partitions().len() == partitions as usize && t.partitions().iter().all(|p| p.leader() >= 0)).then_some(())
        });
    }

    /// Sets topic-level configs (the others go back to their defaults) and waits until the
    /// broker describes them.
    pub async fn alter_topic(&self, topic: &str, configs: &[(&str, &str)]) {
        use rdkafka::admin::{AlterConfig, ResourceSpecifier};
        let admin: AdminClient<_> = ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        let mut change = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (k, v) in configs {
            change = change.set(k, v);
        }
        for r in admin.alter_configs(&[change], &AdminOptions::new()).await.unwrap() {
            r.unwrap_or_else(|(what, e)| panic!("alter {what:?}: {e}"));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let described = admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new()).await.unwrap();
            let applied = described
                .into_iter()
                .flatten()
                .all(|resource| configs.iter().all(|(k, v)| resource.get(k).and_then(|e| e.value.as_deref()) == Some(*v)));
            if applied {
                return;
            }
            assert!(Instant::now() < deadline, "{topic}: configs {configs:?} not applied");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new().set("bootstrap.servers", &self.brokers).set("partitioner", "murmur2_random").set("linger.ms", "5").create().unwrap()
    }

    /// Produces to an explicit partition; returns the offset.
    pub async fn produce(&self, p: &FutureProducer, topic: &str, partition: i32, key: Option<&str>, value: &[u8]) -> i64 {
        let mut rec = FutureRecord::<str, [u8]>::to(topic).partition(partition).payload(value);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        let d = p.send(rec, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        d.offset
    }

    /// Deletes every record of `partition` below `before` (moves the log start, as retention does).
    pub async fn delete_records(&self, topic: &str, partition: i32, before: i64) {
        let admin: AdminClient<_> = ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(before)).unwrap();
        let res = admin.delete_records(&tpl, &AdminOptions::new()).await.unwrap();
        for e in res.elements() {
            e.error().unwrap_or_else(|err| panic!("delete records of {topic}/{partition}: {err}"));
        }
    }

    /// High watermark of every partition.
    pub fn end_offsets(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        // A broker may briefly answer NotLeaderForPartition (a new topic, a loaded broker): ask again.
        (0..partitions)
            .map(|p| wait_for("a partition's watermarks", Duration::from_secs(60), || c.fetch_watermarks(topic, p, Duration::from_secs(10)).ok()).1)
            .collect()
    }

    /// The group's committed offsets (`-1` where none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.brokers).set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        // A fresh broker answers NotCoordinator until the offsets topic exists; ask again.
        let got =
            wait_for("the group's committed offsets", Duration::from_secs(60), || c.committed_offsets(tpl.clone(), Duration::from_secs(10)).ok());
        (0..partitions)
            .map(|p| match got.find_partition(topic, p).unwrap().offset() {
                Offset::Offset(o) => o,
                _ => -1,
            })
            .collect()
    }

    /// The group's live members, as the coordinator lists them (none once every member left).
    pub fn group_members(&self, group: &str) -> usize {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        let list = wait_for("the group list", Duration::from_secs(60), || c.fetch_group_list(Some(group), Duration::from_secs(10)).ok());
        list.groups().iter().filter(|g| g.name() == group).map(|g| g.members().len()).sum()
    }

    /// Azurite's base URL (`http://host:port`), for a proxy in front of it.
    pub fn blob_upstream(&self) -> String {
        self.connection_string
            .split(';')
            .find_map(|p| p.strip_prefix("BlobEndpoint="))
            .map(|e| e.trim_end_matches('/').trim_end_matches("devstoreaccount1").trim_end_matches('/').to_string())
            .expect("the connection string names a BlobEndpoint")
    }

    /// A fault-injecting proxy in front of the storage server, and this stack as seen through it.
    pub async fn through_proxy(&self, faults: proxy::Faults, seed: u64) -> (proxy::FaultProxy, Stack) {
        let upstream = match backend() {
            Backend::Azure => self.blob_upstream(),
            Backend::S3 => self.s3_endpoint.clone(),
            Backend::Gcs => self.gcs_endpoint.clone(),
        };
        let p = proxy::FaultProxy::start(&upstream, faults, seed).await;
        let via = Stack { brokers: self.brokers.clone(), connection_string: p.connection_string(), s3_endpoint: p.url(), gcs_endpoint: p.url() };
        (p, via)
    }

    /// The storage URL of a container (Azure) or bucket (S3).
    pub fn url(&self, container: &str) -> String {
        match backend() {
            Backend::Azure => format!("az://{container}"),
            Backend::S3 => format!("s3://{container}"),
            Backend::Gcs => format!("gs://{container}"),
        }
    }

    /// The `[storage]` section for a container (created on first use).
    pub fn storage_section(&self, container: &str) -> String {
        match backend() {
            Backend::Azure => format!("[storage]\nurl = \"az://{container}\"\ncreate_container = true\n"),
            Backend::S3 => {
                create_bucket(&self.s3_endpoint, container);
                format!(
                    "[storage]\nurl = \"s3://{container}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"{S3_KEY_ID}\"\nsecret_access_key = \"{S3_SECRET}\"\n",
                    self.s3_endpoint
                )
            }
            Backend::Gcs => {
                create_gcs_bucket(&self.gcs_endpoint, container);
                format!("[storage]\nurl = \"gs://{container}\"\nendpoint = \"{}\"\nservice_account_key = '{GCS_KEY}'\n", self.gcs_endpoint)
            }
        }
    }

    /// A connection to a container or bucket (created if needed, via `ensure_container`).
    pub fn storage(&self, container: &str) -> Storage {
        let cfg = match backend() {
            Backend::Azure => StorageConfig {
                url: format!("az://{container}"),
                connection_string: Some(self.connection_string.clone()),
                create_container: true,
                ..Default::default()
            },
            Backend::S3 => {
                create_bucket(&self.s3_endpoint, container);
                StorageConfig {
                    url: format!("s3://{container}"),
                    endpoint: Some(self.s3_endpoint.clone()),
                    region: Some("us-east-1".into()),
                    access_key_id: Some(S3_KEY_ID.into()),
                    secret_access_key: Some(S3_SECRET.into()),
                    ..Default::default()
                }
            }
            Backend::Gcs => {
                create_gcs_bucket(&self.gcs_endpoint, container);
                StorageConfig {
                    url: format!("gs://{container}"),
                    endpoint: Some(self.gcs_endpoint.clone()),
                    service_account_key: Some(GCS_KEY.into()),
                    ..Default::default()
                }
            }
        };
        Storage::open(&cfg).unwrap()
    }
}

/// Every blob under the store: key → decompressed content.
pub async fn read_all(storage: &Storage) -> BTreeMap<String, Vec<u8>> {
    read_all_with(storage, false).await
}

/// Every blob, kbackup's bookkeeping under `_kbackup/` (probes, topic settings) included when
/// `bookkeeping` is set; inflated when gzipped.
pub async fn read_all_with(storage: &Storage, bookkeeping: bool) -> BTreeMap<String, Vec<u8>> {
    let metas: Vec<_> = storage.store.list(None).try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for m in metas {
        let key = m.location.to_string();
        if !bookkeeping && (key.starts_with("_kbackup/") || key.contains("/_kbackup/")) {
            continue;
        }
        let raw = storage.store.get(&m.location).await.unwrap().bytes().await.unwrap();
        let data = if key.ends_with(".gz") {
            let mut v = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut v).unwrap();
            v
        } else {
            raw.to_vec()
        };
        out.insert(key, data);
    }
    out
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("kbackup.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A loopback address with a port nobody listens on right now.
pub fn free_local_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A plain HTTP/1.0 GET: `(status, body)`, or None if nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// A `kbackup` child process with the stack's environment.
pub fn kbackup(stack: &Stack, args: &[&str]) -> Command {
    kbackup_at(Path::new(env!("CARGO_BIN_EXE_kbackup")), stack, args)
}

/// The kbackup of the previous release, built by `scripts/build-previous` (for the takeover
/// tests between versions). `None` outside CI when it was not built; under `CI=true` a
/// missing one fails the test.
#[allow(dead_code)]
pub fn previous_kbackup() -> Option<PathBuf> {
    // The previous release predates the GCS backend, so it cannot run against the GCS emulator:
    // the mixed-version checks run in the Azure and S3 passes, where both versions can write.
    if backend() == Backend::Gcs {
        eprintln!("not applicable: the previous release has no GCS backend (mixed versions are checked in the Azure and S3 passes)");
        return None;
    }
    let path = std::env::var_os("KBACKUP_PREVIOUS_BIN").map(PathBuf::from).filter(|p| p.is_file());
    if path.is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "KBACKUP_PREVIOUS_BIN is not set to a built binary (scripts/build-previous builds it)");
        eprintln!("skipped: the previous release is not built (scripts/build-previous; export KBACKUP_PREVIOUS_BIN)");
    }
    path
}

/// [`kbackup`] with the binary at `bin`.
pub fn kbackup_at(bin: &Path, stack: &Stack, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .env("AZURE_STORAGE_CONNECTION_STRING", &stack.connection_string)
        // For `--url s3://...` (tools run without a config): the standard AWS variables.
        .env("AWS_ENDPOINT_URL", &stack.s3_endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", S3_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        // For `--url gs://...`: object_store's GCS variables.
        .env("GOOGLE_BASE_URL", &stack.gcs_endpoint)
        .env("GOOGLE_SERVICE_ACCOUNT_KEY", GCS_KEY)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kbackup::writer=debug".into()))
        .stdin(Stdio::null());
    c
}

/// A running `kbackup run`, killed if the test panics.
pub struct Running {
    pub child: Child,
    pub log: PathBuf,
    /// Where it serves /metrics and /health/* (chosen by the test, so no log line is needed).
    metrics: Option<String>,
}

impl Running {
    pub fn start(stack: &Stack, config: &Path, log: PathBuf, extra: &[&str]) -> Running {
        Running::start_with_env(stack, config, log, extra, &[])
    }

    pub fn start_with_env(stack: &Stack, config: &Path, log: PathBuf, extra: &[&str], env: &[(&str, &str)]) -> Running {
        Running::start_binary(Path::new(env!("CARGO_BIN_EXE_kbackup")), stack, config, log, extra, env)
    }

    /// A writer run by the binary at `bin` (another version's, for takeover tests).
    pub fn start_binary(bin: &Path, stack: &Stack, config: &Path, log: PathBuf, extra: &[&str], env: &[(&str, &str)]) -> Running {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut args = vec!["run", "--config", config.to_str().unwrap()];
        // Many writers run at once in the tests: each gets a free port of its own.
        let metrics = match extra.iter().position(|a| *a == "--metrics-addr") {
            Some(i) => extra.get(i + 1).filter(|a| **a != "off").map(|a| a.to_string()),
            None => Some(free_local_addr()),
        };
        if !extra.contains(&"--metrics-addr") {
            args.extend_from_slice(&["--metrics-addr", metrics.as_deref().unwrap()]);
        }
        args.extend_from_slice(extra);
        let mut cmd = kbackup_at(bin, stack, &args);
        cmd.envs(env.iter().copied());
        let child = cmd.stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
        Running { child, log, metrics }
    }

    /// Sends SIGTERM and waits for exit; returns the exit code.
    pub fn terminate(mut self, timeout: Duration) -> i32 {
        let pid = self.child.id() as i32;
        // SAFETY-free: `kill` via the shell would also do; libc is not a dependency here.
        Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
        self.wait(timeout)
    }

    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("kbackup did not exit within {timeout:?}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The address the writer serves /metrics on.
    pub fn metrics_addr(&self) -> String {
        self.metrics.clone().expect("this writer runs with --metrics-addr off")
    }

    /// Waits until the writer answers /health/live: it has started and handles signals.
    pub fn wait_live(&mut self, timeout: Duration) {
        let addr = self.metrics_addr();
        wait_for("the writer to answer /health/live", timeout, || {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("kbackup exited ({s}) before it was live; log:\n{}", self.log_text());
            }
            (http_get(&addr, "/health/live").map(|(status, _)| status) == Some(200)).then_some(())
        });
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The writer's /metrics page, if it answers (None while it starts or if it exited).
    pub fn metrics_page(&self) -> Option<String> {
        http_get(&self.metrics.clone()?, "/metrics").map(|(_, page)| page)
    }

    /// Waits until every partition in `partitions` of `topic` has been consumed to `offset`
    /// (the writer's `kbackup_consumed_offset` gauge): a fact, not a log line.
    pub fn wait_consumed_to(&mut self, topic: &str, partitions: std::ops::Range<i32>, offset: i64, what: &str) {
        wait_for(what, Duration::from_secs(60), || {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("kbackup exited ({s}); log:\n{}", self.log_text());
            }
            let page = self.metrics_page()?;
            partitions
                .clone()
                .all(|p| metric_with(&page, "kbackup_consumed_offset", &[("topic", topic), ("partition", &p.to_string())]) == Some(offset as f64))
                .then_some(())
        });
    }
}

/// The value of one series of a metric: the line whose labels include all of `labels`.
pub fn metric_with(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One produced message and where it must land.
#[derive(Debug, Clone)]
pub struct Expect {
    pub line: Vec<u8>,
    pub partition: i32,
    pub date: String,
    /// Sub-path between the topic path and the file name ("" when none).
    pub dir: String,
}

pub fn config(stack: &Stack, container: &str, group: &str, topics: &str, age_secs: u64) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
[kafka.properties]
"session.timeout.ms" = "10000"
"heartbeat.interval.ms" = "1000"
{storage}[writer]
commit_interval_ms = 200
shutdown_timeout_secs = 60
{topics}
"#,
        brokers = stack.brokers,
        storage = stack.storage_section(container),
    )
    .replace("AGE", &age_secs.to_string())
}

pub fn topic_section(name: &str, path: &str, extra: &str) -> String {
    format!("[[topic]]\nname = \"{name}\"\npath = \"{path}\"\noutput_timezone = \"Asia/Kolkata\"\nmax_file_age_secs = AGE\n{extra}\n")
}

/// Checks that every expected line is in exactly one blob whose name carries its partition and
/// date under the right directory, and that nothing else was written.
pub fn assert_exactly_once(blobs: &std::collections::BTreeMap<String, Vec<u8>>, path: &str, expected: &[Expect]) {
    let mut want: HashMap<&[u8], &Expect> = HashMap::new();
    for e in expected {
        assert!(want.insert(&e.line, e).is_none(), "test bug: duplicate expected line");
    }
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    for (key, data) in blobs {
        let Some(rest) = key.strip_prefix(&format!("{path}/")) else {
            continue;
        };
        let (dir, file) = rest.rsplit_once('/').unwrap_or(("", rest));
        let name = parse_name(file).unwrap_or_else(|| panic!("unparseable blob name {key}"));
        assert!(name.gzip, "{key}");
        assert!(data.ends_with(b"\n") || data.is_empty(), "{key} does not end in a newline");
        for line in data.split(|&b| b == b'\n').take(data.iter().filter(|&&b| b == b'\n').count()) {
            let e = want.get(line).unwrap_or_else(|| panic!("unexpected line in {key}: {}", String::from_utf8_lossy(line)));
            assert_eq!(name.kafka_partition, Some(e.partition), "{key} holds a message of partition {}", e.partition);
            assert_eq!(name.date.format("%Y-%m-%d").to_string(), e.date, "{key}: wrong date for {}", String::from_utf8_lossy(line));
            assert_eq!(dir, e.dir, "{key}: wrong directory");
            *seen.entry(line).or_default() += 1;
        }
    }
    for e in expected {
        let n = seen.get(&e.line[..]).copied().unwrap_or(0);
        assert_eq!(n, 1, "message {} found {n} times", String::from_utf8_lossy(&e.line));
    }
}

pub fn wait_committed(stack: &Stack, group: &str, topic: &str, partitions: i32, run: &mut Running) {
    let end = stack.end_offsets(topic, partitions);
    wait_for("committed offsets to reach the end offsets", Duration::from_secs(90), || {
        let c = stack.committed(group, topic, partitions);
        if c == end {
            Some(())
        } else {
            if let Ok(Some(status)) = run.child.try_wait() {
                panic!("kbackup exited early ({status}):\n{}", run.log_text());
            }
            None
        }
    });
}

/// Every message of a topic: (partition, key, value), read from the start to the end offsets.
pub fn read_topic(stack: &Stack, topic: &str) -> Vec<(i32, Option<Vec<u8>>, Vec<u8>)> {
    use rdkafka::message::Message;
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &stack.brokers).set("group.id", unique("reader")).create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let parts = md.topics()[0].partitions().len() as i32;
    let ends = stack.end_offsets(topic, parts);
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let total: i64 = ends.iter().sum();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < total {
        assert!(Instant::now() < deadline, "read {} of {total} messages of {topic}", out.len());
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push((m.partition(), m.key().map(<[u8]>::to_vec), m.payload().unwrap_or_default().to_vec()));
        }
    }
    out
}

/// A broker of a test's own (ports `port`, +1 controller, +2 SASL), so restarting or freezing
/// it disturbs no other test.
pub struct PrivateKafka {
    dir: PathBuf,
    port: u16,
}

impl PrivateKafka {
    pub fn devstack(&self, cmd: &str) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/devstack");
        let status = Command::new(script)
            .arg(cmd)
            .env("KBACKUP_DEVSTACK_DIR", &self.dir)
            .env("KBACKUP_KAFKA_PORT", self.port.to_string())
            .env("KBACKUP_KAFKA_CONTROLLER_PORT", (self.port + 1).to_string())
            .env("KBACKUP_KAFKA_SASL_PORT", (self.port + 2).to_string())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/devstack {cmd} for the private broker failed");
    }

    pub fn start(port: u16) -> PrivateKafka {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/chaos-kafka-{port}"));
        let _ = std::fs::remove_dir_all(dir.join("kafka"));
        let k = PrivateKafka { dir, port };
        k.devstack("up");
        k
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl PrivateKafka {
    /// Freezes the broker process (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = std::fs::read_to_string(self.dir.join("kafka.pid")).unwrap();
        let status = Command::new("kill").args([sig, pid.trim()]).status().unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.thaw();
        self.devstack("down");
    }
}

/// A three-broker KRaft cluster of a test's own (`scripts/devstack cluster`: brokers on
/// `port`..`port+2`, controllers 100 above), replication factor 3 and `min.insync.replicas` 2,
/// so that one node at a time can be stopped, killed or frozen without disturbing another test.
pub struct PrivateCluster {
    dir: PathBuf,
    port: u16,
}

impl PrivateCluster {
    fn devstack(&self, args: &[&str]) -> String {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/devstack");
        let out = Command::new(script)
            .arg("cluster")
            .args(args)
            .env("KBACKUP_DEVSTACK_DIR", &self.dir)
            .env("KBACKUP_CLUSTER_PORT", self.port.to_string())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/devstack cluster {} failed", args.join(" "));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts the cluster on fresh data (ports `port`..`port+2` and `port+100`..`port+102`).
    pub fn start(port: u16) -> PrivateCluster {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/cluster-{port}"));
        let c = PrivateCluster { dir, port };
        // A cluster a killed test run left behind is stopped by its recorded pids first.
        if c.dir.exists() {
            c.devstack(&["down"]);
            let _ = std::fs::remove_dir_all(&c.dir);
        }
        c.devstack(&["up"]);
        c
    }

    pub fn brokers(&self) -> String {
        (0..3).map(|i| format!("127.0.0.1:{}", self.port + i)).collect::<Vec<_>>().join(",")
    }

    /// Node `n` (1 to 3)'s own address.
    pub fn broker(&self, n: i32) -> String {
        format!("127.0.0.1:{}", self.port + n as u16 - 1)
    }

    /// SIGTERM to node `n` (a controlled shutdown); returns once the process is gone.
    pub fn stop(&self, n: i32) {
        self.devstack(&["stop", &n.to_string()]);
    }

    /// SIGKILL to node `n`; returns once the process is gone.
    pub fn kill(&self, n: i32) {
        self.devstack(&["kill", &n.to_string()]);
    }

    /// Starts node `n` again; returns once its port answers.
    pub fn start_node(&self, n: i32) {
        self.devstack(&["start", &n.to_string()]);
    }

    /// The node id of the KRaft controller leader.
    pub fn leader(&self) -> i32 {
        wait_for("the controller leader", Duration::from_secs(60), || self.devstack(&["leader"]).parse().ok())
    }

    /// Waits until every partition of every topic (the offsets topic included) has a leader and
    /// all three replicas in sync: the point at which a rolling restart moves to the next node.
    pub fn wait_in_sync(&self, timeout: Duration) {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", self.brokers()).create().unwrap();
        wait_for("every partition back in sync on three replicas", timeout, || {
            let md = c.fetch_metadata(None, Duration::from_secs(5)).ok()?;
            (md.brokers().len() == 3
                && md.topics().iter().all(|t| t.error().is_none() && t.partitions().iter().all(|p| p.leader() >= 0 && p.isr().len() == 3)))
            .then_some(())
        });
    }

    /// The node that coordinates `group`: the leader of its partition of the offsets topic
    /// (Kafka's `abs(group.hashCode()) % offsets.topic.num.partitions`).
    pub fn coordinator(&self, group: &str) -> i32 {
        let hash = group.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", self.brokers()).create().unwrap();
        wait_for("the group coordinator", Duration::from_secs(60), || {
            let md = c.fetch_metadata(Some("__consumer_offsets"), Duration::from_secs(5)).ok()?;
            let partitions = md.topics().first()?.partitions();
            let partition = if hash == i32::MIN { 0 } else { hash.abs() } % partitions.len().max(1) as i32;
            let leader = partitions.iter().find(|p| p.id() == partition)?.leader();
            (leader > 0).then_some(leader)
        })
    }

    /// Process id of node `n`, while it runs.
    pub fn pid(&self, n: i32) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(format!("cluster-{n}.pid"))).ok()?.trim().parse().ok()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.devstack(&["down"]);
    }
}
