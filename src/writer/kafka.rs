//! The only part of the writer that touches librdkafka: the consumer context (error,
//! statistics and rebalance callbacks, routed into the writer's state) and the [`Broker`]
//! implementation the core commits through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, warn};

use super::ports::CommitGate;
use super::ports::{Broker, BrokerError, CommitEntry, Committed, FetchStart, TopicPartition, WatermarksAnswer, WATERMARKS_TIMEOUT};
use super::Writer;
use crate::health::{BrokerStat, ClusterWatch, Health, PartitionStat};
use crate::metrics as m;

/// The consumer context: routes rebalance callbacks into the writer.
pub(super) struct Ctx {
    pub(super) writer: Arc<Mutex<Writer>>,
    pub(super) health: Arc<Health>,
    /// Counts rebalance callbacks; every polled message is stamped with it.
    pub(super) generation: Arc<AtomicU64>,
    /// The consumer itself, so a commit can run on a thread of its own (set once created).
    pub(super) consumer: std::sync::OnceLock<std::sync::Weak<BaseConsumer<Ctx>>>,
    /// A commit the broker has not answered yet: no other is started until it is.
    pub(super) unanswered: Mutex<CommitGate<std::sync::mpsc::Receiver<()>>>,
    /// What the statistics say of the brokers and partitions this writer depends on.
    pub(super) cluster: Mutex<ClusterWatch>,
    /// librdkafka's connection failures, logged once per broker every half minute.
    pub(super) throttle: Mutex<Throttle>,
    /// Where a partition the group never committed starts (`auto.offset.reset`).
    pub(super) reset: Offset,
    /// Watermark reads, off the loop.
    pub(super) watermarks: WatermarkReads,
}

/// Watermark reads on a thread of their own (one at a time, each bounded by
/// [`WATERMARKS_TIMEOUT`]), so that a broker that does not answer never holds the loop: a read
/// on the loop held it for its timeout, past a stop's bound (issue 37).
pub(super) struct WatermarkReads {
    asks: std::sync::OnceLock<std::sync::mpsc::Sender<TopicPartition>>,
    answers_tx: std::sync::mpsc::Sender<WatermarksAnswer>,
    answers: Mutex<std::sync::mpsc::Receiver<WatermarksAnswer>>,
}

impl Default for WatermarkReads {
    fn default() -> Self {
        let (answers_tx, answers) = std::sync::mpsc::channel();
        WatermarkReads { asks: std::sync::OnceLock::new(), answers_tx, answers: Mutex::new(answers) }
    }
}

impl ClientContext for Ctx {
    /// librdkafka's own log lines, as rdkafka forwards them, except its connection failures: a
    /// broker that is restarted or gone refuses connections at every retry, which librdkafka
    /// logs as errors, a line per attempt. They are warnings here (the cluster's other brokers
    /// take over; readiness turns red only if a partition owned here stays unserved), one per
    /// broker every half minute with the count of the others.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if fac == "FAIL" && matches!(level, L::Error | L::Warning | L::Notice | L::Info) {
            let broker = log_message.split(": ").next().unwrap_or_default();
            let now = std::time::Instant::now();
            if let Some(suppressed) = self.throttle.lock().unwrap_or_else(|p| p.into_inner()).allow(broker, now) {
                warn!(target: "librdkafka", suppressed, "broker connection failed: {log_message}");
            }
            return;
        }
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => error!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
            L::Warning => warn!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
            L::Notice | L::Info => tracing::info!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
            L::Debug => debug!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode;
        match error.rdkafka_error_code() {
            // End of partition is information, not an error (it is handled in the poll loop).
            Some(RDKafkaErrorCode::PartitionEOF) => return,
            // One broker unreachable: its connection failure is logged above (throttled).
            Some(RDKafkaErrorCode::BrokerTransportFailure) => {
                debug!(error = %error, reason, "kafka client error");
                return;
            }
            Some(RDKafkaErrorCode::AllBrokersDown) => self.health.brokers_down(),
            _ => {}
        }
        error!(error = %error, reason, "kafka client error");
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        // Lag from the committed offset, for the partitions this process consumes.
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 && part.fetch_state == "active" {
                    metrics::gauge!(m::CONSUMER_LAG, "topic" => topic.clone(), "partition" => p.to_string()).set(part.consumer_lag as f64);
                }
            }
        }
        if stats.cgrp.as_ref().is_some_and(|g| g.state == "up") {
            self.health.joined(true);
        }
        let brokers: Vec<BrokerStat<'_>> = stats
            .brokers
            .values()
            .map(|b| BrokerStat {
                name: &b.name,
                nodeid: b.nodeid,
                nodename: &b.nodename,
                learned: b.nodeid >= 0 && b.source == "learned",
                coordinator: b.source == "logical" && b.name.starts_with("GroupCoordinator"),
                up: b.state == "UP",
                rx: b.rx,
                waiting: b.waitresp_cnt,
            })
            .collect();
        let partitions: Vec<PartitionStat<'_>> = stats
            .topics
            .iter()
            .flat_map(|(topic, t)| {
                t.partitions.values().filter(|p| p.partition >= 0).map(move |p| PartitionStat {
                    topic,
                    partition: p.partition,
                    owned: p.fetch_state != "none",
                    leader: p.leader,
                })
            })
            .collect();
        if tracing::enabled!(tracing::Level::DEBUG) {
            let seen: Vec<String> = brokers
                .iter()
                .map(|b| format!("{} [{}] up={} rx={} waiting={}", b.name, b.nodename, b.up, b.rx, b.waiting))
                .chain(partitions.iter().filter(|p| p.owned).map(|p| format!("{}/{} leader={}", p.topic, p.partition, p.leader)))
                .collect();
            debug!(brokers = %seen.join("; "), "statistics");
        }
        let verdict = self.cluster.lock().unwrap_or_else(|p| p.into_inner()).observe(stats.ts / 1000, &brokers, &partitions);
        match verdict.silent {
            Some((broker, waited)) if self.health.broker_silent(&broker, waited) => warn!(
                broker,
                waited_ms = waited,
                "a broker this writer depends on holds requests unanswered: connected, nothing received back; readiness reports it"
            ),
            Some(_) => {}
            None if verdict.answered => self.health.broker_answered(),
            None => {}
        }
        if !verdict.unserved.is_empty() {
            warn!(partitions = %verdict.unserved.join("; "), "owned partitions have no reachable leader; readiness reports them");
        }
        self.health.set_unserved(verdict.unserved);
    }
}

/// One log line per key (a broker) every [`Throttle::EVERY`], counting the others.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    last: std::collections::HashMap<String, (std::time::Instant, u64)>,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(30);

    /// `Some(lines suppressed since the last one)` when `key` may be logged at `now`.
    pub(super) fn allow(&mut self, key: &str, now: std::time::Instant) -> Option<u64> {
        match self.last.get_mut(key) {
            Some((at, n)) if now.duration_since(*at) < Self::EVERY => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let suppressed = *n;
                (*at, *n) = (now, 0);
                Some(suppressed)
            }
            None => {
                self.last.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

impl ConsumerContext for Ctx {
    /// Replaces rdkafka's default handling so that assigned partitions start where the core
    /// read their commits ([`FetchStart`]): the default hands librdkafka offsets it resolves by
    /// reading the commits a second time, later.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = partitions(tpl);
                let starts = self.writer.lock().unwrap_or_else(|p| p.into_inner()).on_assign(consumer, &assigned, generation);
                for (TopicPartition { topic, partition: p }, start) in assigned.iter().zip(starts) {
                    let offset = match start {
                        // librdkafka reads the commit again itself (the behaviour before).
                        _ if crate::sabotage::on(crate::sabotage::Rule::FetchFromCommitted) => Offset::Invalid,
                        FetchStart::At(o) => Offset::Offset(o),
                        FetchStart::Reset => self.reset,
                    };
                    if let Err(e) = tpl.set_partition_offset(topic, *p, offset) {
                        error!(topic, partition = p, error = %e, "setting a partition's start offset failed");
                    }
                }
                let done = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = done {
                    error!(error = %e, "taking the assigned partitions failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.writer.lock().unwrap_or_else(|p| p.into_inner()).on_revoke(consumer, &partitions(tpl), consumer.assignment_lost());
                let done = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = done {
                    error!(error = %e, "giving up the revoked partitions failed");
                }
            }
            other => error!(error = ?other, "rebalance error"),
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements().iter().map(|e| TopicPartition { topic: e.topic().to_string(), partition: e.partition() }).collect()
}

fn failed(e: rdkafka::error::KafkaError) -> BrokerError {
    BrokerError::from(e)
}

impl Broker for BaseConsumer<Ctx> {
    fn commit(&self, entries: &[CommitEntry<'_>], wait: Duration) -> Result<(), BrokerError> {
        let mut tpl = TopicPartitionList::new();
        for c in entries {
            let mut e = tpl.add_partition(c.topic, c.partition);
            e.set_offset(Offset::Offset(c.offset)).map_err(failed)?;
            e.set_metadata(c.metadata);
        }
        let ctx = self.context();
        let started = std::time::Instant::now();
        let mut gate = ctx.unanswered.lock().unwrap_or_else(|p| p.into_inner());
        if !gate.may_start(|rx| !matches!(rx.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty))) {
            ctx.health.commit_unanswered();
            return Err(BrokerError::new("an earlier commit is still unanswered by the broker"));
        }
        ctx.health.commit_answered();
        let Some(me) = ctx.consumer.get().and_then(std::sync::Weak::upgrade) else {
            return Consumer::commit(self, &tpl, CommitMode::Sync).map_err(failed);
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("kbackup-commit".into())
            .spawn(move || {
                let result = Consumer::commit(&*me, &tpl, CommitMode::Sync);
                let _ = tx.send(result);
                let _ = done_tx.send(());
            })
            .map_err(|e| BrokerError::new(format!("starting the commit: {e}")))?;
        match rx.recv_timeout(wait) {
            Ok(result) => result.map_err(failed),
            Err(_) => {
                gate.unanswered(done_rx, started);
                ctx.health.commit_unanswered();
                Err(BrokerError::new(format!("the broker did not answer the commit within {:.1} s (it may still be applied)", wait.as_secs_f64())))
            }
        }
    }

    fn committed(&self, partitions: &[TopicPartition], timeout: Duration) -> Result<Vec<Committed>, BrokerError> {
        let mut tpl = TopicPartitionList::new();
        for TopicPartition { topic: t, partition: p } in partitions {
            tpl.add_partition(t, *p);
        }
        let got = self.committed_offsets(tpl, timeout).map_err(failed)?;
        partitions
            .iter()
            .map(|TopicPartition { topic: t, partition: p }| match got.find_partition(t, *p) {
                // A partition the broker could not answer for is no "never committed": resuming
                // from the log start would store again what is stored.
                Some(e) => match e.error() {
                    Err(err) => Err(BrokerError { code: err.rdkafka_error_code(), message: format!("the committed offset of {t}/{p}: {err}") }),
                    Ok(()) => Ok(Committed {
                        offset: match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        },
                        metadata: e.metadata().to_string(),
                    }),
                },
                None => Err(BrokerError::new(format!("the broker's answer left out {t}/{p}"))),
            })
            .collect()
    }

    fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> Result<(i64, i64), BrokerError> {
        self.fetch_watermarks(topic, partition, timeout).map_err(failed)
    }

    fn ask_watermarks(&self, topic: &str, partition: i32) {
        let reads = &self.context().watermarks;
        let asks = reads.asks.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<TopicPartition>();
            let (consumer, answers) = (self.context().consumer.get().cloned(), reads.answers_tx.clone());
            let spawned = std::thread::Builder::new().name("kbackup-watermarks".into()).spawn(move || {
                for TopicPartition { topic, partition } in rx {
                    let read = match consumer.as_ref().and_then(std::sync::Weak::upgrade) {
                        Some(c) => c.fetch_watermarks(&topic, partition, WATERMARKS_TIMEOUT).map_err(BrokerError::from),
                        None => Err(BrokerError::new("the consumer is closed")),
                    };
                    if answers.send(WatermarksAnswer { topic, partition, read }).is_err() {
                        return;
                    }
                }
            });
            if let Err(e) = spawned {
                error!(error = %e, "starting the watermark reader failed");
            }
            tx
        });
        let _ = asks.send(TopicPartition { topic: topic.to_string(), partition });
    }

    fn watermarks_answered(&self) -> Vec<WatermarksAnswer> {
        self.context().watermarks.answers.lock().unwrap_or_else(|p| p.into_inner()).try_iter().collect()
    }

    fn pause_all(&self) -> Result<(), BrokerError> {
        let assignment = self.assignment().map_err(failed)?;
        self.pause(&assignment).map_err(failed)
    }

    fn resume_all(&self) -> Result<(), BrokerError> {
        let assignment = self.assignment().map_err(failed)?;
        self.resume(&assignment).map_err(failed)
    }

    fn unanswered_since(&self) -> Option<std::time::Instant> {
        let mut gate = self.context().unanswered.lock().unwrap_or_else(|p| p.into_inner());
        // Answered meanwhile: the gate opens (as the next commit would find).
        if gate.may_start(|rx| !matches!(rx.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty))) {
            self.context().health.commit_answered();
            return None;
        }
        gate.since()
    }
}

/// librdkafka's EOF event carries only the partition number; logs the position of every owned
/// partition with that number (topics are few).
pub(super) fn log_partition_eof(consumer: &BaseConsumer<Ctx>, partition: i32) {
    if let Ok(pos) = consumer.position() {
        for e in pos.elements().iter().filter(|e| e.partition() == partition) {
            if let Offset::Offset(o) = e.offset() {
                debug!(topic = e.topic(), "reached the end of partition {partition} at offset {o}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_s_connection_failures_are_told_once_every_half_minute_with_the_count() {
        let mut t = Throttle::default();
        let t0 = std::time::Instant::now();
        assert_eq!(t.allow("127.0.0.1:29093/2", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(t.allow("127.0.0.1:29093/2", t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(t.allow("127.0.0.1:29094/3", t0 + Duration::from_secs(5)), Some(0), "another broker: its own count");
        assert_eq!(t.allow("127.0.0.1:29093/2", t0 + Throttle::EVERY), Some(5));
        assert_eq!(t.allow("127.0.0.1:29093/2", t0 + Throttle::EVERY + Duration::from_secs(1)), None);
    }
}
