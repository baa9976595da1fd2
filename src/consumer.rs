//! The Kafka side: librdkafka settings kbackup relies on, and metadata look-ups.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// A context for tools that read partitions to their end: end-of-partition is expected there,
/// not an error worth a log line.
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(error = %error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// A context that keeps the client's last error, so a failed look-up can say why (librdkafka
/// reports a refused SASL login through the error callback; the look-up itself only sees
/// "broker transport failure").
#[derive(Default)]
pub struct Diagnosing {
    last: std::sync::Mutex<Option<String>>,
    /// The last connection failure librdkafka logged (`FAIL`: refused login, TLS handshake):
    /// more telling than the "all brokers are down" that follows it.
    failure: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Diagnosing {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if fac == "FAIL" {
            // "sasl_ssl://host:port/bootstrap: SASL authentication error: ..." → the reason.
            let reason = log_message.split_once(": ").map_or(log_message, |(_, r)| r);
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
        }
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!(target: "librdkafka", "{fac}: {log_message}"),
            L::Warning => tracing::warn!(target: "librdkafka", "{fac}: {log_message}"),
            L::Notice | L::Info => tracing::info!(target: "librdkafka", "{fac}: {log_message}"),
            L::Debug => tracing::debug!(target: "librdkafka", "{fac}: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(error = %error, reason, "kafka client error");
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
    }
}

impl ConsumerContext for Diagnosing {}

impl Diagnosing {
    /// The look-up error with the client's own account of it (never a secret: librdkafka's
    /// messages name mechanisms and users, not passwords).
    fn explain(&self, e: KafkaError) -> LookupError {
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let last = failure.or_else(|| self.last.lock().unwrap_or_else(|e| e.into_inner()).clone());
        let hint = match &last {
            Some(r) if r.contains("SASL authentication") || r.contains("Authentication failed") => {
                " (check sasl.mechanism, sasl.username and sasl.password in [kafka.properties])"
            }
            Some(r) if r.contains("SSL") || r.contains("certificate") => " (check security.protocol and the ssl.* settings in [kafka.properties])",
            _ => "",
        };
        LookupError { error: e, cause: last.map(|r| format!("{r}{hint}")) }
    }

    /// A refused login or TLS handshake librdkafka reported: retrying until a timeout will not
    /// change it, so a look-up gives up at once.
    fn refused(&self) -> bool {
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure
            .as_deref()
            .is_some_and(|r| r.contains("SASL authentication") || r.contains("Authentication failed") || r.contains("SSL handshake failed"))
    }
}

/// Metadata of `topic` (or every topic), asked in slices of a second so that a refused login
/// ends the wait at once instead of after `timeout` (30 s was every command's wait on a wrong
/// SASL password).
pub fn fetch_metadata(
    client: &BaseConsumer<Diagnosing>,
    topic: Option<&str>,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<rdkafka::metadata::Metadata> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client.fetch_metadata(topic, left.min(Duration::from_secs(1)).max(Duration::from_millis(10))) {
            Ok(md) => return Ok(md),
            Err(e) => {
                // librdkafka's logs and errors reach the context when the client is polled.
                for _ in 0..3 {
                    let _ = client.poll(Duration::from_millis(5));
                }
                if client.context().refused() || std::time::Instant::now() >= deadline {
                    return Err(e);
                }
            }
        }
    }
}

/// Runs a request of `client`, and when it fails, says why the way `run` and `check` do (a
/// refused login names the keys to check).
pub fn with_reason<T>(
    client: &BaseConsumer<Diagnosing>,
    request: impl FnOnce(&BaseConsumer<Diagnosing>) -> rdkafka::error::KafkaResult<T>,
) -> Result<T, LookupError> {
    request(client).map_err(|e| {
        // librdkafka hands its reasons to the context only when the client is polled.
        for _ in 0..5 {
            let _ = client.poll(Duration::from_millis(20));
        }
        client.context().explain(e)
    })
}

/// A metadata look-up that failed, with the client's reason when it gave one.
#[derive(Debug, thiserror::Error)]
#[error("{}{}", kafka_error_text(error), cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
pub struct LookupError {
    error: KafkaError,
    cause: Option<String>,
}

impl LookupError {
    /// An error the client reported without a reason of its own.
    pub fn bare(error: KafkaError) -> LookupError {
        LookupError { error, cause: None }
    }
}

use crate::config::KafkaConfig;

/// How the writer fetches (shared with the benchmark's bare consumer, so the two differ only in
/// what they do per message).
pub const FETCH_TUNING: [(&str, &str); 4] = [
    // Cap librdkafka's prefetch: without it a large lag is buffered until the process runs out
    // of memory (a known failure of other writers).
    ("queued.max.messages.kbytes", "8192"),
    // Responses under 1 MiB: librdkafka reads each into one allocation, and below glibc's mmap
    // threshold (1 MiB, see main.rs) those come from the heap and are reused. At 4 MiB every
    // response was mapped, faulted in and unmapped again: ~9% of the polling thread's CPU (TLB
    // shootdowns included) and 15-25% of throughput. Larger messages are still fetched whole.
    ("fetch.max.bytes", "1000000"),
    ("max.partition.fetch.bytes", "1000000"),
    // When the prefetch queue is full librdkafka waits this long before fetching that partition
    // again (default 1000 ms): with a writer that works on every message the queue is often full,
    // and a second-long pause per partition caps throughput at a fraction of the broker's.
    ("fetch.queue.backoff.ms", "10"),
];

/// What a Kafka client is for; decides which `[kafka.properties]` it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The writer's group member.
    Group,
    /// A consumer that assigns partitions itself (`verify`, benchmarks).
    Reader,
    /// `replay`, `plan --mode job-manager`, sample data.
    Producer,
    /// Metadata, watermarks, topic configs.
    Admin,
}

/// Properties (exact names, or prefixes ending in `.`) that only a consumer uses.
const CONSUMER_ONLY: &[&str] = &[
    "group.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "fetch.",
    "max.partition.fetch.bytes",
    "queued.",
    "enable.partition.eof",
    "partition.assignment.strategy",
    "isolation.level",
    "check.crcs",
    "coordinator.query.interval.ms",
    "consume.callback.max.messages",
];

/// Properties that only a producer uses.
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "request.required.acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "linger.ms",
    "queue.buffering.",
    "queuing.strategy",
    "batch.",
    "compression.",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "transactional.id",
    "transaction.timeout.ms",
    "partitioner",
    "sticky.partitioning.linger.ms",
    "message.send.max.retries",
    "retries",
    "delivery.report.only.error",
];

fn listed(key: &str, list: &[&str]) -> bool {
    list.iter().any(|p| if p.ends_with('.') { key.starts_with(p) } else { key == *p })
}

/// Whether a `[kafka.properties]` entry applies to a client of `role`: everything that is not
/// specific to the other side (security, TLS, SASL, `message.max.bytes`, timeouts, ...) goes to
/// every client, so every command reaches a secured cluster the way `run` does.
/// Appends a consumed message's record envelope (`format = "record"`) to `out`; the writer and
/// `verify` both use it, so what verify expects is byte for byte what the writer stores.
/// `value_is_json`: the router validated the value as JSON.
pub fn encode_record<M: rdkafka::message::Message>(out: &mut Vec<u8>, m: &M, value_is_json: bool) {
    use crate::record::{RecordView, TimestampKind};
    use rdkafka::message::{Headers, Timestamp};
    let timestamp = match m.timestamp() {
        Timestamp::CreateTime(t) => Some((t, TimestampKind::Create)),
        Timestamp::LogAppendTime(t) => Some((t, TimestampKind::LogAppend)),
        Timestamp::NotAvailable => None,
    };
    let view = RecordView { partition: Some(m.partition()), offset: Some(m.offset()), timestamp, key: m.key(), value: m.payload(), value_is_json };
    let headers = m.headers().into_iter().flat_map(|h| h.iter().map(|h| (h.key, h.value)));
    crate::record::encode(out, &view, headers);
}

pub fn applies(key: &str, role: Role) -> bool {
    match role {
        Role::Group | Role::Reader => !listed(key, PRODUCER_ONLY),
        Role::Producer => !listed(key, CONSUMER_ONLY),
        Role::Admin => !listed(key, PRODUCER_ONLY) && !listed(key, CONSUMER_ONLY),
    }
}

/// Every client's defaults, before its role's.
///
/// `enable.sparse.connections = false`: connect to the brokers as soon as the client exists,
/// not when a first request needs one. With sparse connections the first metadata request
/// and the group join each waited for a connection made on demand: a one-shot run reached its
/// first message 0.14-0.15 s after exec, against 0.04-0.07 s without (1M-event bench topic,
/// file-none). A consumer talks to every partition leader anyway; a short-lived tool's client
/// now opens its connections to all brokers at once, which a cluster's brokers take in stride.
const BASE_DEFAULTS: &[(&str, &str)] = &[("enable.sparse.connections", "false")];

/// The one place `[kafka]` becomes a librdkafka configuration: every client kbackup creates
/// (writer, `verify`, `replay`, `plan`, `check`, metadata look-ups) starts from this.
/// `defaults` are kbackup's own settings for the role; the operator's properties override
/// them; `bootstrap.servers` is always the config's.
pub fn client_config(k: &KafkaConfig, role: Role, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut props: BTreeMap<&str, &str> = BASE_DEFAULTS.iter().chain(defaults).copied().collect();
    for (key, value) in &k.properties {
        if applies(key, role) {
            props.insert(key.as_str(), value.as_str());
        }
    }
    let mut c = ClientConfig::new();
    for (key, value) in props {
        c.set(key, value);
    }
    c.set("bootstrap.servers", &k.brokers);
    c
}

/// librdkafka settings for the writer's group consumer. User properties override the tuning
/// defaults; the correctness settings (`enable.auto.commit`) cannot be overridden (config
/// validation refuses them).
pub fn group_config(k: &KafkaConfig) -> ClientConfig {
    let mut defaults: Vec<(&str, &str)> = vec![("auto.offset.reset", "earliest"), ("partition.assignment.strategy", "cooperative-sticky")];
    defaults.extend(FETCH_TUNING);
    defaults.extend([
        ("enable.auto.offset.store", "false"),
        ("client.id", "kbackup"),
        // End-of-partition events: logged at debug level, so operators (and tests) can see when
        // a partition has been read to its end.
        ("enable.partition.eof", "true"),
        // Statistics feed the lag gauges and the readiness probe.
        ("statistics.interval.ms", "5000"),
    ]);
    // librdkafka requires fetch.max.bytes >= message.max.bytes: an operator who raises the
    // latter for large events should not have to know about kbackup's fetch tuning.
    let raised = k.properties.get("message.max.bytes").and_then(|v| v.parse::<u64>().ok()).filter(|m| *m > 1_000_000).map(|m| m.to_string());
    if let Some(m) = &raised {
        defaults.retain(|(key, _)| *key != "fetch.max.bytes");
        defaults.push(("fetch.max.bytes", m.as_str()));
    }
    let mut c = client_config(k, Role::Group, &defaults);
    c.set("group.id", &k.group_id);
    c.set("enable.auto.commit", "false");
    c
}

/// Why a Kafka client could not be made or read with. Its text never holds a secret (see
/// [`kafka_error_text`] and [`refusal`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// librdkafka refuses `[kafka.properties]`: the property is named, never its value.
    #[error("kafka.properties: librdkafka refuses the configuration: {0}")]
    Refused(String),
    /// A client could not be created.
    #[error("{0}")]
    Create(String),
    /// Reading a partition's range failed.
    #[error("reading {topic}/{partition}: {why}")]
    Read { topic: String, partition: i32, why: ReadFailure },
}

/// Why reading a partition's range failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    #[error("{0}")]
    Kafka(KafkaError),
    /// The partition gave nothing for a minute before the range's end.
    #[error("no data for 60 s before offset {high}")]
    NoData { high: i64 },
}

/// Checks every `[kafka.properties]` entry with librdkafka itself (unknown names, bad values),
/// for each kind of client kbackup creates; the error names the property. No connection is made
/// beyond what creating a client starts in the background.
pub fn validate_properties(k: &KafkaConfig) -> Result<(), ClientError> {
    use rdkafka::producer::BaseProducer;
    let bad = |e: KafkaError| ClientError::Refused(refusal(&e, k));
    // The clients only exist to be checked: pointed at a closed loopback port (no name to
    // resolve, nothing sent anywhere) and silent about failing to connect there.
    let mut checked = k.clone();
    checked.brokers = "127.0.0.1:1".into();
    let consumer = group_config(&checked).create_with_context::<_, BaseConsumer<Silent>>(Silent).map_err(bad)?;
    destroy_in_background(consumer);
    let producer = client_config(&checked, Role::Producer, &[]).create_with_context::<_, BaseProducer<Silent>>(Silent).map_err(bad)?;
    destroy_in_background(producer);
    Ok(())
}

/// Destroys a librdkafka client on a thread of its own. Destroying one waits for its internal
/// threads, which serve their queues in 100 ms turns: the config check's consumer held every
/// command's start for a tenth of a second, and the start-up's admin client held a one-shot
/// run's exit about as long (`scripts/bench`'s whole-process time against its drain). Nothing
/// waits for that thread: a client handed to it is done with (never in a group, no commit or
/// request pending), so if the process exits first nothing is lost.
fn destroy_in_background<T: Send + 'static>(client: T) {
    // If no thread can be made, the closure, and the client with it, is dropped here instead.
    let _ = std::thread::Builder::new().name("kbackup-destroy".into()).spawn(move || drop(client));
}

/// Leaves the group and closes a group consumer, serving its queue (the final revocation's
/// callback) in 5 ms steps until librdkafka says it is closed, or until `until`; then hands
/// the client to [`destroy_in_background`].
///
/// rdkafka's own drop does the same in 100 ms steps and librdkafka posts nothing on the queue
/// when the close completes, so a one-shot run's exit waited out most of a step after leaving
/// the group (scripts/bench's whole-process time against its drain). Its drop still tries to
/// close the client again, which librdkafka refuses ("Consumer already closed") and rdkafka
/// logs as an error; the binary's log filter drops that repeat (see `main.rs`).
pub fn close_and_destroy<C: ConsumerContext + 'static>(consumer: Arc<BaseConsumer<C>>, until: std::time::Instant) {
    match consumer.close_queue() {
        Ok(()) => {
            while !consumer.closed() && std::time::Instant::now() < until {
                // After unsubscribe nothing is fetched; a message still queued is dropped
                // untracked, so never committed: the next owner reads it again.
                let _ = consumer.poll(Duration::from_millis(5));
            }
            if !consumer.closed() {
                tracing::warn!(
                    "the consumer did not finish leaving the group in time; the group's coordinator will drop it after the session timeout"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "closing the consumer failed; the group's coordinator will drop it after the session timeout"),
    }
    destroy_in_background(consumer);
}

/// A consumer that names a group, closed through [`close_and_destroy`] when dropped.
///
/// rdkafka's drop closes any consumer with a `group.id` in 100 ms steps and without a bound:
/// each look-up client of the tools (a group's offsets, `verify`'s watermarks, `takeover`'s
/// read of one message per partition) cost its caller up to a tenth of a second on the way out,
/// and a failure of that close would be hidden by the binary's filter of rdkafka's repeated
/// close (see `main.rs`). Every group consumer goes through this or through
/// [`close_and_destroy`] directly, which reports its own failures.
pub struct Closing<C: ConsumerContext + 'static>(Option<BaseConsumer<C>>);

/// How long a look-up client may take to close: it never joined the group, so librdkafka has
/// no revocation or final commit to wait for.
const LOOKUP_CLOSE: Duration = Duration::from_secs(5);

impl<C: ConsumerContext + 'static> Closing<C> {
    pub fn new(consumer: BaseConsumer<C>) -> Closing<C> {
        Closing(Some(consumer))
    }
}

impl<C: ConsumerContext + 'static> std::ops::Deref for Closing<C> {
    type Target = BaseConsumer<C>;
    fn deref(&self) -> &BaseConsumer<C> {
        self.0.as_ref().expect("taken only by drop")
    }
}

impl<C: ConsumerContext + 'static> Drop for Closing<C> {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            close_and_destroy(Arc::new(consumer), std::time::Instant::now() + LOOKUP_CLOSE);
        }
    }
}

/// A context that logs nothing: for clients created only to have librdkafka check a config.
struct Silent;

impl ClientContext for Silent {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, _: KafkaError, _: &str) {}
}

impl ConsumerContext for Silent {}

impl rdkafka::producer::ProducerContext for Silent {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// A librdkafka error as text, without the refused property's value: rdkafka's own `Display` of
/// a configuration error ends with `<key> <value>` (`sasl.pasword hunter2`). Every message that
/// can carry a client creation error goes through this.
pub fn kafka_error_text(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, value) => {
            let desc = if value.is_empty() { desc.clone() } else { desc.replace(value.as_str(), "<redacted>") };
            format!("Client config error: {desc} (property \"{key}\")")
        }
        other => other.to_string(),
    }
}

/// Creates a client of `config`, its error safe to print (see [`kafka_error_text`]).
pub fn create_client<C: rdkafka::config::FromClientConfigAndContext<X>, X: ClientContext>(
    config: &ClientConfig,
    context: X,
) -> Result<C, ClientError> {
    config.create_with_context(context).map_err(|e| ClientError::Create(kafka_error_text(&e)))
}

/// Property names that hold or lead to secrets (matched anywhere in the name, so misspellings
/// such as `sasl.pasword` count too).
const SECRET_WORDS: &[&str] = &["pass", "pasw", "pwd", "secret", "jaas", "token", "credential", "key", "cert", "oauth"];

/// librdkafka's refusal of a client configuration, naming the property but never a value that
/// might be a secret: rdkafka's message carries the refused property's value (`sasl.pasword
/// hunter2`), and librdkafka's own text quotes it (`Invalid value "…" for …`).
pub fn refusal(e: &KafkaError, k: &KafkaConfig) -> String {
    let refused = match e {
        KafkaError::ClientConfig(_, _, key, _) => Some(key.as_str()),
        _ => None,
    };
    let mut text = kafka_error_text(e);
    for (key, value) in &k.properties {
        if value.is_empty() {
            continue;
        }
        let secret = Some(key.as_str()) == refused || SECRET_WORDS.iter().any(|w| key.to_ascii_lowercase().contains(w));
        if secret {
            text = text.replace(value.as_str(), "<redacted>");
        } else {
            text = text.replace(&format!("\"{value}\""), "\"<redacted>\"");
        }
    }
    text
}

/// What librdkafka's prefetch really costs under these settings, which the writer's memory
/// budget reserves: its consumer queue (`queued.max.messages.kbytes`) plus one fetch response
/// (`fetch.max.bytes`), times 3 — measured with scripts/bench, fetch buffers stay alive while
/// any of their messages is queued, and each queued message carries its own bookkeeping.
pub fn prefetch_bytes(k: &KafkaConfig) -> u64 {
    let cfg = group_config(k);
    let num = |key: &str, default: u64| cfg.get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(default);
    3 * (num("queued.max.messages.kbytes", 65_536) * 1024 + num("fetch.max.bytes", 52_428_800))
}

/// True when a partition the group never committed starts at its end (`auto.offset.reset` is
/// latest), not at its start (librdkafka's aliases included).
pub fn resets_to_end(k: &KafkaConfig) -> bool {
    start_without_commit(k) == rdkafka::Offset::End
}

/// Where a partition the group never committed starts, for an explicit assignment: the log
/// start or end by `auto.offset.reset`; for any other policy (`error`) librdkafka's own handling.
pub fn start_without_commit(k: &KafkaConfig) -> rdkafka::Offset {
    match group_config(k).get("auto.offset.reset") {
        Some("latest" | "largest" | "end") => rdkafka::Offset::End,
        Some("earliest" | "smallest" | "beginning") => rdkafka::Offset::Beginning,
        _ => rdkafka::Offset::Invalid,
    }
}

/// When `writer.memory_limit_bytes` does not even cover librdkafka's prefetch reservation,
/// what that means (the writer then gives buffers a quarter of the limit, and the process uses
/// more than the limit).
pub fn budget_warning(config: &crate::config::Config) -> Option<String> {
    let (limit, prefetch) = (config.writer.memory_limit_bytes, prefetch_bytes(&config.kafka));
    (limit < prefetch).then(|| {
        format!(
            "writer.memory_limit_bytes ({limit}) is below librdkafka's prefetch reservation ({prefetch}, 3 × queued.max.messages.kbytes + fetch.max.bytes): buffers get a quarter of the limit ({}) and the process will use more memory than the limit; raise it, or lower those properties",
            limit / 4
        )
    })
}

/// A consumer for metadata and watermark queries only (no group membership).
pub fn metadata_client(k: &KafkaConfig) -> rdkafka::error::KafkaResult<BaseConsumer<Diagnosing>> {
    client_config(k, Role::Admin, &[]).create_with_context(Diagnosing::default())
}

/// Partition counts of `topics`; a missing topic maps to `None`.
pub fn partition_counts(
    client: &BaseConsumer<Diagnosing>,
    topics: &[&str],
    timeout: Duration,
) -> rdkafka::error::KafkaResult<Vec<(String, Option<usize>)>> {
    let md = fetch_metadata(client, None, timeout)?;
    Ok(topics
        .iter()
        .map(|&t| {
            let n = md.topics().iter().find(|mt| mt.name() == t && mt.error().is_none()).map(|mt| mt.partitions().len());
            (t.to_string(), n)
        })
        .collect())
}

/// [`partition_counts`] from async code: connects and looks up on the blocking pool.
pub async fn lookup_partition_counts(k: &KafkaConfig, topics: &[String], timeout: Duration) -> Result<Vec<(String, Option<usize>)>, LookupError> {
    // A metadata client alone: a one-off look-up has no use for `Cluster`'s admin client.
    let client = Arc::new(metadata_client(k).map_err(LookupError::bare)?);
    counts_with(client, topics, timeout).await
}

/// [`partition_counts`] over `client`, on the blocking pool; a refused login says why at once.
async fn counts_with(
    client: Arc<BaseConsumer<Diagnosing>>,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<(String, Option<usize>)>, LookupError> {
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        with_reason(&client, |c| partition_counts(c, &refs, timeout))
    })
    .await
    .expect("a metadata lookup does not panic")
}

/// The cluster as `run`'s start-up and its side tasks see it: one metadata client and one
/// admin client, made once from the config and shared by the topic check, the retention
/// look-up and the recording of the topics' settings (each used to make its own, per topic and
/// every ten minutes). Neither joins the group.
pub struct Cluster {
    /// Taken only by `drop`, which destroys them in the background.
    clients: Option<ClusterClients>,
}

struct ClusterClients {
    metadata: Arc<BaseConsumer<Diagnosing>>,
    admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The admin client's poll thread wakes every 100 ms: its join would hold whoever drops
        // the cluster (a one-shot run's exit) that long.
        if let Some(clients) = self.clients.take() {
            destroy_in_background(clients);
        }
    }
}

impl Cluster {
    /// Makes the clients (no round trip: librdkafka connects in the background).
    pub fn connect(k: &KafkaConfig) -> rdkafka::error::KafkaResult<Cluster> {
        let metadata = Arc::new(metadata_client(k)?);
        let admin = client_config(k, Role::Admin, &[]).create()?;
        Ok(Cluster { clients: Some(ClusterClients { metadata, admin }) })
    }

    fn clients(&self) -> &ClusterClients {
        self.clients.as_ref().expect("only drop takes the clients")
    }

    /// The partition count of each topic (`None`: not on the cluster), looked up on the
    /// blocking pool; a refused login says why at once.
    pub async fn partition_counts(&self, topics: &[String], timeout: Duration) -> Result<Vec<(String, Option<usize>)>, LookupError> {
        counts_with(self.clients().metadata.clone(), topics, timeout).await
    }

    /// One topic's partition count and replication factor (`None`: not on the cluster).
    pub async fn partitions_and_replication(&self, topic: &str) -> Result<Option<(i32, i32)>, LookupError> {
        let (client, name) = (self.clients().metadata.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || {
            let md = with_reason(&client, |c| fetch_metadata(c, Some(&name), Duration::from_secs(30)))?;
            Ok(md.topics().first().filter(|t| t.error().is_none() && !t.partitions().is_empty()).map(|t| {
                let rf = t.partitions().iter().map(|p| p.replicas().len()).max().unwrap_or(1);
                (t.partitions().len() as i32, rf as i32)
            }))
        })
        .await
        .expect("a metadata lookup does not panic")
    }

    /// The topics' configurations (DescribeConfigs), one result per topic.
    pub async fn describe_configs(&self, topics: &[String]) -> rdkafka::error::KafkaResult<Vec<rdkafka::admin::ConfigResourceResult>> {
        use rdkafka::admin::{AdminOptions, ResourceSpecifier};
        let specs: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        self.clients().admin.describe_configs(&specs, &opts).await
    }

    /// `retention.ms` of each topic that has a finite time retention (absent: unknown, infinite
    /// or not readable). Feeds the retention headroom gauge; a failure here only loses that gauge.
    pub async fn retention_ms(&self, topics: &[String]) -> HashMap<String, i64> {
        let mut out = HashMap::new();
        match self.describe_configs(topics).await {
            Ok(results) => {
                for (t, r) in topics.iter().zip(results) {
                    let ms = r.ok().and_then(|res| res.get("retention.ms").and_then(|e| e.value.as_deref()?.parse::<i64>().ok()));
                    if let Some(ms) = ms.filter(|ms| *ms > 0) {
                        out.insert(t.clone(), ms);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read topic retention; kbackup_retention_headroom_seconds stays unset"),
        }
        out
    }
}

/// The partition count of one topic (`None` if it does not exist).
pub async fn lookup_partition_count(k: &KafkaConfig, topic: &str) -> Result<Option<i32>, LookupError> {
    let mut counts = lookup_partition_counts(k, &[topic.to_string()], Duration::from_secs(30)).await?;
    Ok(counts.pop().and_then(|(_, n)| n).map(|n| n as i32))
}

/// Reads `[low, high)` of one partition with an assigning consumer, calling `f` per message
/// until it returns false or `high` is reached; an error if the partition gives no data for
/// 60 s before `high`.
pub fn read_range<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    p: i32,
    low: i64,
    high: i64,
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> bool,
) -> Result<(), ClientError> {
    use rdkafka::message::Message;
    if high <= low {
        return Ok(());
    }
    let failed = |why: ReadFailure| ClientError::Read { topic: topic.to_string(), partition: p, why };
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(low)).map_err(|e| failed(ReadFailure::Kafka(e)))?;
    consumer.assign(&tpl).map_err(|e| failed(ReadFailure::Kafka(e)))?;
    let mut idle = 0;
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                if !f(&m) || m.offset() + 1 >= high {
                    break;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(failed(ReadFailure::Kafka(e))),
            None => {
                idle += 1;
                if idle > 120 {
                    return Err(failed(ReadFailure::NoData { high }));
                }
            }
        }
    }
    consumer.unassign().map_err(|e| failed(ReadFailure::Kafka(e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(props: &[(&str, &str)]) -> KafkaConfig {
        let mut k = KafkaConfig::for_brokers("127.0.0.1:1");
        k.properties = props.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        k
    }

    #[test]
    fn properties_go_to_the_clients_that_use_them() {
        let k = kafka(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.password", "pw"),
            ("message.max.bytes", "4000000"),
            ("session.timeout.ms", "10000"),
            ("linger.ms", "50"),
        ]);
        let get = |role| {
            let c = client_config(&k, role, &[]);
            ["security.protocol", "sasl.mechanism", "sasl.password", "message.max.bytes", "session.timeout.ms", "linger.ms"]
                .map(|p| c.get(p).is_some())
        };
        assert_eq!(get(Role::Producer), [true, true, true, true, false, true]);
        assert_eq!(get(Role::Group), [true, true, true, true, true, false]);
        assert_eq!(get(Role::Reader), [true, true, true, true, true, false]);
        assert_eq!(get(Role::Admin), [true, true, true, true, false, false]);
        let g = group_config(&k);
        assert_eq!(g.get("enable.auto.commit"), Some("false"));
        assert_eq!(g.get("bootstrap.servers"), Some("127.0.0.1:1"));
    }

    #[test]
    fn a_raised_message_max_bytes_raises_the_fetch_tuning() {
        let k = kafka(&[("message.max.bytes", "3000000")]);
        assert_eq!(group_config(&k).get("fetch.max.bytes"), Some("3000000"));
        assert!(validate_properties(&k).is_ok());
        let k = kafka(&[("message.max.bytes", "3000000"), ("fetch.max.bytes", "5000000")]);
        assert_eq!(group_config(&k).get("fetch.max.bytes"), Some("5000000"), "an explicit value wins");
        assert_eq!(group_config(&kafka(&[])).get("fetch.max.bytes"), Some("1000000"));
    }

    #[test]
    fn the_operator_overrides_defaults_but_not_the_brokers() {
        let k = kafka(&[("linger.ms", "7")]);
        let c = client_config(&k, Role::Producer, &[("linger.ms", "20"), ("enable.idempotence", "true")]);
        assert_eq!(c.get("linger.ms"), Some("7"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn refusals_never_echo_a_value() {
        const SECRET: &str = "hunter2hunter2";
        for props in [
            vec![("sasl.pasword", SECRET)],
            vec![("sasl.password", SECRET), ("no.such.property", "1")],
            vec![("ssl.key.password", SECRET), ("security.protocol", "NOPE")],
            vec![("linger.ms", SECRET)],
            vec![("sasl.jaas.config", SECRET)],
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "u"),
                ("sasl.password", SECRET),
                ("bogus", SECRET),
            ],
        ] {
            let e = validate_properties(&kafka(&props)).unwrap_err().to_string();
            assert!(!e.contains(SECRET), "{props:?}: {e}");
        }
        let e = validate_properties(&kafka(&[("sasl.pasword", SECRET)])).unwrap_err().to_string();
        assert!(e.contains("sasl.pasword"), "the property is still named: {e}");
    }

    #[test]
    fn librdkafka_refusals_name_the_property() {
        assert!(validate_properties(&kafka(&[("session.timeout.ms", "10000")])).is_ok());
        let e = validate_properties(&kafka(&[("no.such.property", "1")])).unwrap_err().to_string();
        assert!(e.contains("no.such.property"), "{e}");
        let e = validate_properties(&kafka(&[("linger.ms", "not-a-number")])).unwrap_err().to_string();
        assert!(e.contains("linger.ms"), "{e}");
        let e = validate_properties(&kafka(&[("security.protocol", "SASL_SSL"), ("sasl.mechanism", "NOPE")])).unwrap_err().to_string();
        assert!(e.contains("sasl.mechanism") || e.contains("NOPE"), "{e}");
    }
}
