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
use super::ports::{Broker, BrokerError, CommitEntry, Committed, FetchStart};
use super::Writer;
use crate::health::{BrokerSilence, Health};
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
    /// Which brokers hold requests unanswered, from the statistics.
    pub(super) silence: Mutex<BrokerSilence>,
    /// Where a partition the group never committed starts (`auto.offset.reset`).
    pub(super) reset: Offset,
}

impl ClientContext for Ctx {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode;
        match error.rdkafka_error_code() {
            // End of partition is information, not an error (it is handled in the poll loop).
            Some(RDKafkaErrorCode::PartitionEOF) => return,
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
        // The real brokers only: the logical coordinator connection may legitimately hold a
        // JoinGroup for as long as a rebalance takes; a stuck commit shows through the commit gate.
        let now = stats.ts / 1000;
        let mut silence = self.silence.lock().unwrap_or_else(|p| p.into_inner());
        let mut answered = false;
        for b in stats.brokers.values().filter(|b| b.nodeid >= 0 && b.source == "learned") {
            answered |= silence.broker(now, &b.name, b.rx, b.waitresp_cnt);
        }
        match silence.silent(now) {
            Some((broker, waited)) if self.health.broker_silent(&broker, waited) => {
                warn!(broker, waited_ms = waited, "a broker holds requests unanswered and sends nothing back; readiness reports it");
            }
            Some(_) => {}
            None if answered => self.health.broker_answered(),
            None => {}
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
                for ((topic, p), start) in assigned.iter().zip(starts) {
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

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

fn failed(e: rdkafka::error::KafkaError) -> BrokerError {
    BrokerError(e.to_string())
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
        let mut gate = ctx.unanswered.lock().unwrap_or_else(|p| p.into_inner());
        if !gate.may_start(|rx| !matches!(rx.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty))) {
            ctx.health.commit_unanswered();
            return Err(BrokerError("an earlier commit is still unanswered by the broker".into()));
        }
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
            .map_err(|e| BrokerError(format!("starting the commit: {e}")))?;
        match rx.recv_timeout(wait) {
            Ok(result) => result.map_err(failed),
            Err(_) => {
                gate.unanswered(done_rx);
                ctx.health.commit_unanswered();
                Err(BrokerError(format!("the broker did not answer the commit within {:.1} s (it may still be applied)", wait.as_secs_f64())))
            }
        }
    }

    fn committed(&self, partitions: &[(String, i32)], timeout: Duration) -> Result<Vec<Committed>, BrokerError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let got = self.committed_offsets(tpl, timeout).map_err(failed)?;
        partitions
            .iter()
            .map(|(t, p)| match got.find_partition(t, *p) {
                // A partition the broker could not answer for is no "never committed": resuming
                // from the log start would store again what is stored.
                Some(e) => match e.error() {
                    Err(err) => Err(BrokerError(format!("the committed offset of {t}/{p}: {err}"))),
                    Ok(()) => Ok(Committed {
                        offset: match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        },
                        metadata: e.metadata().to_string(),
                    }),
                },
                None => Err(BrokerError(format!("the broker's answer left out {t}/{p}"))),
            })
            .collect()
    }

    fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> Result<(i64, i64), BrokerError> {
        self.fetch_watermarks(topic, partition, timeout).map_err(failed)
    }

    fn pause_all(&self) -> Result<(), BrokerError> {
        let assignment = self.assignment().map_err(failed)?;
        self.pause(&assignment).map_err(failed)
    }

    fn resume_all(&self) -> Result<(), BrokerError> {
        let assignment = self.assignment().map_err(failed)?;
        self.resume(&assignment).map_err(failed)
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
