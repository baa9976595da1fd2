//! The three-stage batch pipeline: poll batch k+1, route batch k on a helper thread, apply
//! batch k-1 under the writer's lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::BorrowedMessage;
use rustc_hash::FxHashMap as HashMap;
use tracing::{debug, error, warn};

use super::kafka::{self, Ctx};
use super::ports::Message;
use super::Next;
use super::{Routed, Writer};
use crate::routing::{Route, Router};

/// Batches end at this many messages or bytes, whichever comes first (bytes bound what two
/// batches hold of librdkafka's memory when messages are large).
pub(super) const BATCH_MESSAGES: usize = 1024;
pub(super) const BATCH_BYTES: usize = 4 << 20;
/// Smaller batches are routed on the polling thread: handing them over costs more than it saves.
pub(super) const PARALLEL_ROUTING_MIN: usize = 32;

/// One item taken from the consumer.
pub(super) enum Polled<'c> {
    /// A message and the rebalance generation when it was polled.
    Message(BorrowedMessage<'c>, u64),
    Eof(i32),
    Error(rdkafka::error::KafkaError),
}

/// Polls up to one batch: waits up to `wait` for the first item, then takes what is ready.
pub(super) fn poll_batch<'c>(consumer: &'c BaseConsumer<Ctx>, generation: &AtomicU64, out: &mut Vec<Polled<'c>>, wait: Duration) {
    let mut bytes = 0;
    let mut timeout = wait;
    while out.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
        match consumer.poll(timeout) {
            None => break,
            Some(Ok(m)) => {
                bytes += m.payload_len();
                out.push(Polled::Message(m, generation.load(Ordering::SeqCst)));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => out.push(Polled::Eof(p)),
            Some(Err(e)) => out.push(Polled::Error(e)),
        }
        timeout = Duration::ZERO;
    }
}

/// What the polling thread does per batch, besides handing a batch to the routing helper.
pub(super) struct Step<'a, 'c> {
    pub(super) writer: &'a Mutex<Writer>,
    pub(super) consumer: &'c BaseConsumer<Ctx>,
    pub(super) generation: &'a AtomicU64,
    pub(super) stop: &'a super::StopRequest,
}

impl<'c> Step<'_, 'c> {
    /// Applies a routed batch and does the periodic work under one lock, then (unless it is
    /// time to stop) polls the next batch into `next`. `busy`: another batch is being routed,
    /// so polling must not block. Returns true when the loop must end.
    pub(super) fn run(&mut self, batch: &mut Vec<Polled<'c>>, routes: &[Option<(usize, Route)>], busy: bool, next: &mut Vec<Polled<'c>>) -> bool {
        let consumer = self.consumer;
        let next_step = {
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let messages = batch.drain(..).zip(routes).filter_map(|(item, route)| match (item, route) {
                (Polled::Message(message, generation), Some((topic, route))) => Some(Routed { message, topic: *topic, route, generation }),
                (Polled::Message(msg, _), None) => {
                    error!(topic = msg.topic(), "message from a topic that is not configured");
                    None
                }
                (Polled::Eof(p), _) => {
                    kafka::log_partition_eof(consumer, p);
                    None
                }
                // A broker's connection failure comes here too; the context logged it.
                (Polled::Error(e), _) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure) => {
                    debug!(error = %e, "kafka error");
                    None
                }
                (Polled::Error(e), _) => {
                    warn!(error = %e, "kafka error");
                    None
                }
            });
            w.apply_batch(messages);
            w.after_batch(consumer, self.stop.asked())
        };
        let Next::Poll { paused } = next_step else {
            return true;
        };
        // Unlocked: rebalance callbacks run inside poll() and take the lock.
        // Block for the next message only when nothing else is in the pipeline; while paused,
        // briefly, so finished uploads resume consumption soon.
        let wait = if busy {
            Duration::ZERO
        } else if paused {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(100)
        };
        poll_batch(consumer, self.generation, next, wait);
        false
    }
}

/// The routers of the configured topics, shared by the polling thread and the routing helper.
pub(super) struct Routing {
    pub(super) topic_index: HashMap<String, usize>,
    pub(super) routers: Vec<Router>,
}

impl Routing {
    /// The route of every message of a batch (`None` for other items and unknown topics).
    pub(super) fn route_all(&self, batch: &[Polled<'_>]) -> Vec<Option<(usize, Route)>> {
        batch
            .iter()
            .map(|item| {
                let Polled::Message(m, _) = item else {
                    return None;
                };
                let t = *self.topic_index.get(m.topic())?;
                Some((t, self.routers[t].route(m.payload(), m.timestamp().to_millis(), m.offset())))
            })
            .collect()
    }
}
