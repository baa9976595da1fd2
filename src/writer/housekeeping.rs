//! Periodic work: file age, memory pressure and backpressure, gauges, timed commits.

use super::*;

impl Writer {
    /// Periodic work: finished uploads, intents, file age, memory pressure, commits.
    pub(super) fn housekeeping(&mut self, consumer: &BaseConsumer<Ctx>, now: Instant) {
        self.drain_uploads();
        let tick = now.duration_since(self.last_tick) >= Duration::from_millis(500);
        if self.paused && !tick {
            // Resume as soon as uploads catch up, not at the next tick (which checks anyway).
            self.apply_backpressure(consumer);
        }
        if !self.awaiting.is_empty() && now >= self.intent_retry_at {
            self.record_intents(consumer);
        }
        if tick {
            self.last_tick = now;
            self.health.loop_ran();
            // The budget's books must match the buffers they describe (a path that dropped
            // buffers by length rather than charge once let them drift upwards).
            debug_assert_eq!(
                self.open_bytes,
                self.buffers.values().chain(self.parts.values().flat_map(|st| st.pinned.values())).map(Buffer::charged).sum::<u64>(),
                "open_bytes out of step with the open buffers"
            );
            debug_assert_eq!(
                self.inflight_bytes,
                self.inflight.values().map(|f| f.charged).sum::<u64>(),
                "inflight_bytes out of step with the files in flight"
            );
            let due: Vec<BufferKey> =
                self.buffers.iter().filter(|(k, b)| self.topics[k.topic].policy.due(b, now).is_some()).map(|(k, _)| k.clone()).collect();
            for k in due {
                self.seal(&k, SealReason::Age);
            }
            self.apply_backpressure(consumer);
            let oldest = self.buffers.values().map(|b| now.saturating_duration_since(b.opened_at)).max().unwrap_or_default();
            metrics::gauge!(m::BUFFERED_BYTES).set(self.open_bytes as f64);
            metrics::gauge!(m::INFLIGHT_BYTES).set(self.inflight_bytes as f64);
            crate::buffer::release_idle_blocks(now);
            metrics::gauge!(m::POOLED_BYTES).set(crate::buffer::pooled_bytes() as f64);
            metrics::gauge!(m::OLDEST_BUFFER_AGE).set(oldest.as_secs_f64());
            metrics::gauge!(m::PAUSED).set(if self.paused { 1.0 } else { 0.0 });
            for &(t, p) in self.parts.keys() {
                if let Some(o) = self.tracker.get(t, p) {
                    metrics::gauge!(m::CONSUMED_OFFSET, "topic" => self.topics[t].cfg.name.clone(), "partition" => p.to_string())
                        .set(o.position() as f64);
                }
            }
            self.report_retention_headroom();
        }
        if now.duration_since(self.last_commit) >= self.commit_interval {
            self.commit(consumer, None);
        }
    }

    /// Per owned partition: how long until Kafka's retention deletes its oldest message not yet
    /// committed (the first message of the oldest open or in-flight file), so ops can act before
    /// anything is lost. A partition holding nothing uncommitted has the whole retention ahead.
    pub(super) fn report_retention_headroom(&self) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut oldest: HashMap<(usize, i32), i64> = HashMap::default();
        let mut note = |t: usize, p: i32, ms: Option<i64>| {
            if let Some(ms) = ms {
                let e = oldest.entry((t, p)).or_insert(ms);
                *e = (*e).min(ms);
            }
        };
        for (k, b) in &self.buffers {
            note(k.topic, k.partition, b.first_record_ms);
        }
        for ((t, p), st) in &self.parts {
            for b in st.pinned.values() {
                note(*t, *p, b.first_record_ms);
            }
        }
        for f in self.inflight.values() {
            note(f.topic, f.partition, f.first_record_ms);
        }
        for &(t, p) in self.parts.keys() {
            let topic = &self.topics[t];
            let Some(retention) = topic.retention_ms else { continue };
            let age = oldest.get(&(t, p)).map_or(0, |ms| (now_ms - ms).max(0));
            metrics::gauge!(m::RETENTION_HEADROOM, "topic" => topic.cfg.name.clone(), "partition" => p.to_string())
                .set((retention - age) as f64 / 1000.0);
        }
    }

    /// Pauses consumption while uploads hold most of the budget; resumes below half of it.
    pub(super) fn apply_backpressure(&mut self, consumer: &BaseConsumer<Ctx>) {
        let high = self.memory_limit / 4 * 3;
        let low = self.memory_limit / 2;
        let want_pause = if self.paused { self.inflight_bytes > low } else { self.inflight_bytes >= high };
        if want_pause {
            // Re-applied on every check so partitions assigned meanwhile are paused too.
            self.pause(consumer, "uploads are behind: consumption paused");
        } else if self.paused {
            let Ok(assignment) = consumer.assignment() else {
                return;
            };
            if let Err(e) = consumer.resume(&assignment) {
                warn!(error = %e, "resuming partitions failed");
            }
            info!("uploads caught up: consumption resumed");
            self.paused = false;
        }
    }

    /// Pauses consumption because the budget is full and uploads are not draining it; resumed
    /// by `apply_backpressure` once uploads hold half the budget or less.
    pub(super) fn pause_for_memory(&mut self, consumer: &BaseConsumer<Ctx>) {
        self.pause(consumer, "memory budget full and uploads are behind: consumption paused");
    }

    /// Pauses every assigned partition; `why` is logged when consumption was running.
    pub(super) fn pause(&mut self, consumer: &BaseConsumer<Ctx>, why: &str) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        if let Err(e) = consumer.pause(&assignment) {
            warn!(error = %e, "pausing partitions failed");
        }
        if !self.paused {
            warn!(buffered_bytes = self.open_bytes, inflight_bytes = self.inflight_bytes, files = self.inflight.len(), "{why}");
        }
        self.paused = true;
    }
}
