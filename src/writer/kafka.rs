//! The consumer context: librdkafka's error, statistics and rebalance callbacks, routed into
//! the writer's state.

use super::*;

/// The consumer context: routes rebalance callbacks into the writer.
pub(super) struct Ctx {
    pub(super) writer: Arc<Mutex<Writer>>,
    pub(super) health: Arc<Health>,
    /// Counts rebalance callbacks; every polled message is stamped with it.
    pub(super) generation: Arc<AtomicU64>,
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
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match rebalance {
            Rebalance::Assign(tpl) => w.on_assign(consumer, tpl, generation),
            Rebalance::Revoke(tpl) => w.on_revoke(consumer, tpl),
            Rebalance::Error(e) => error!(error = %e, "rebalance error"),
        }
    }
}
