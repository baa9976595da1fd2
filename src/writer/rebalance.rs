//! Assignment and revocation: recovery plans from recorded intents, lost offsets, handing
//! partitions over.

use super::*;

impl Writer {
    pub(super) fn on_assign(&mut self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList, generation: u64) {
        self.ever_assigned = true;
        self.health.joined(true);
        self.health.broker_ok();
        metrics::counter!(m::REBALANCES, "kind" => "assign").increment(1);
        // The committed offsets and their intent records decide how each partition resumes;
        // without them it is not safe to consume. A fresh broker may need a moment to elect a
        // group coordinator.
        let deadline = Instant::now() + Duration::from_secs(60);
        let committed = loop {
            match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    warn!(error = %e, "reading committed offsets failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    self.fatal = Some(format!("cannot read committed offsets: {e}"));
                    return;
                }
            }
        };
        for e in tpl.elements() {
            let Some(&t) = self.topic_index.get(e.topic()) else {
                continue;
            };
            let p = e.partition();
            let c = committed.find_partition(e.topic(), p);
            let start = c.as_ref().and_then(|c| match c.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
            let metadata = c.as_ref().map(|c| c.metadata().to_string()).unwrap_or_default();
            let intents = match intent::decode(&metadata) {
                Ok(i) => i,
                Err(err) => {
                    warn!(topic = e.topic(), partition = p, error = %err, "ignoring commit metadata kbackup did not write");
                    Vec::new()
                }
            };
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            let mut st = PartState { epoch, assigned_gen: generation, ..Default::default() };
            if let Some(s) = start {
                self.tracker.assign(t, p, s);
                st.plan = RecoveryPlan::new(s, intents);
                // Every recorded intent that is not wholly committed stays in the record.
                for i in st.plan.skip.iter().chain(&st.plan.rebuild) {
                    st.intents.push(Arc::new(i.clone()));
                }
                if !st.plan.is_empty() {
                    info!(
                        topic = e.topic(),
                        partition = p,
                        skip = st.plan.skip.len(),
                        rebuild = st.plan.rebuild.len(),
                        "resuming from recorded upload intents"
                    );
                }
            }
            if start.is_some() || self.opts.until_caught_up {
                match consumer.fetch_watermarks(e.topic(), p, Duration::from_secs(30)) {
                    Ok((low, high)) => {
                        if let Some(s) = start.filter(|s| *s < low) {
                            self.report_lost(e.topic(), p, s, low, high, &st.plan);
                        }
                        if self.opts.until_caught_up {
                            // With no commit, consumption starts at the low watermark (earliest).
                            let target = if start.unwrap_or(low).max(low) >= high { i64::MIN } else { high };
                            self.targets.insert((t, p), target);
                        }
                    }
                    Err(err) => error!(topic = e.topic(), partition = p, error = %err, "reading watermarks failed"),
                }
            }
            self.parts.insert((t, p), st);
            // A number when there is a commit; absent (not the text "None") when there is none.
            match start {
                Some(c) => info!(topic = e.topic(), partition = p, committed = c, "partition assigned"),
                None => info!(topic = e.topic(), partition = p, "partition assigned (no committed offset: from the log start)"),
            }
        }
        metrics::gauge!(m::ASSIGNED_PARTITIONS).set(self.parts.len() as f64);
    }

    /// The group's commit `s` is below the log start `low`: Kafka deleted `[s, low)` before it
    /// was backed up. The one failure a backup must never hide: logged as an error, counted,
    /// shown by the readiness probe and in the run summary (`docs/runbook.md`, OffsetsLost).
    pub(super) fn report_lost(&mut self, topic: &str, p: i32, s: i64, low: i64, high: i64, plan: &RecoveryPlan) {
        // librdkafka resets an out-of-range position by `auto.offset.reset`: to the log start
        // by default, to the end if an operator chose "latest" (then the retained rest is skipped too).
        let until = if self.offset_reset_to_end { high } else { low };
        let lost = (until - s) as u64;
        let recorded: Vec<&str> = plan.skip.iter().chain(&plan.rebuild).filter(|i| i.from < until).map(|i| i.key.as_str()).collect();
        self.summary.lost_offsets += lost;
        metrics::counter!(m::OFFSETS_LOST, "topic" => topic.to_string(), "partition" => p.to_string()).increment(lost);
        if recorded.is_empty() {
            error!(
                topic,
                partition = p,
                lost,
                committed = s,
                log_start = low,
                "DATA LOST: Kafka deleted offsets that were never backed up (retention passed the group's commit)"
            );
        } else {
            // Files an earlier run recorded and may have uploaded can hold some of them.
            error!(topic, partition = p, lost, committed = s, log_start = low, files = %recorded.join(","), "DATA LOST: Kafka deleted offsets that were never committed; the files recorded for them, if uploaded, hold some");
        }
        self.health.data_lost(format!("{topic}/{p}: {lost} offset(s) [{s}, {until}) were deleted by Kafka before they were backed up"));
    }

    pub(super) fn on_revoke(&mut self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        let lost = consumer.assignment_lost();
        metrics::counter!(m::REBALANCES, "kind" => if lost { "lost" } else { "revoke" }).increment(1);
        for e in tpl.elements() {
            // This process no longer reports lag for it; its new owner does.
            metrics::gauge!(m::CONSUMER_LAG, "topic" => e.topic().to_string(), "partition" => e.partition().to_string()).set(0.0);
        }
        let parts: HashSet<(usize, i32)> = tpl.elements().iter().filter_map(|e| Some((*self.topic_index.get(e.topic())?, e.partition()))).collect();
        let keys: Vec<BufferKey> = self.buffers.keys().filter(|k| parts.contains(&(k.topic, k.partition))).cloned().collect();
        if lost {
            // Another member may already own these partitions: uploading or committing now
            // could only duplicate its work. Everything uncommitted is re-read by the new owner.
            let mut dropped = 0;
            for k in keys {
                if let Some(b) = self.buffers.remove(&k) {
                    self.open_bytes -= b.charged();
                    dropped += b.events;
                }
            }
            let unrecorded: Vec<u64> =
                self.awaiting.iter().copied().filter(|id| parts.contains(&(self.inflight[id].topic, self.inflight[id].partition))).collect();
            for id in unrecorded {
                let f = self.inflight.remove(&id).expect("awaiting is in flight");
                self.inflight_bytes -= f.charged;
                dropped += f.events;
            }
            self.awaiting.retain(|id| self.inflight.contains_key(id));
            metrics::counter!(m::LOST_PARTITION_EVENTS).increment(dropped);
            warn!(
                partitions = parts.len(),
                dropped_events = dropped,
                "partitions lost (session timeout?); uncommitted events will be re-read by their new owner"
            );
        } else {
            for k in &keys {
                self.seal(k, SealReason::Revoke);
            }
            // Within a stop, the stop's own bound applies, not a fresh revoke timeout on top.
            let deadline = (Instant::now() + self.revoke_timeout).min(self.stop_deadline.unwrap_or(Instant::now() + self.revoke_timeout));
            let done = self.wait_uploads(consumer, deadline, |w| {
                !w.inflight
                    .values()
                    .any(|f| parts.contains(&(f.topic, f.partition)) && f.epoch == w.parts.get(&(f.topic, f.partition)).map_or(0, |s| s.epoch))
            });
            if !done {
                warn!("revoke timeout: some uploads of revoked partitions are still running; their events stay uncommitted");
            }
            self.commit(consumer, Some(&parts));
            // Sealed files whose intents could not be recorded are dropped with the partition.
            let unrecorded: Vec<u64> =
                self.awaiting.iter().copied().filter(|id| parts.contains(&(self.inflight[id].topic, self.inflight[id].partition))).collect();
            for id in unrecorded {
                let f = self.inflight.remove(&id).expect("awaiting is in flight");
                self.inflight_bytes -= f.charged;
            }
            self.awaiting.retain(|id| self.inflight.contains_key(id));
        }
        for &(t, p) in &parts {
            if let Some(st) = self.parts.remove(&(t, p)) {
                for b in st.pinned.values() {
                    self.open_bytes -= b.charged();
                }
            }
            self.tracker.revoke(t, p);
            self.targets.remove(&(t, p));
            info!(topic = %self.topics[t].cfg.name, partition = p, lost, "partition revoked");
        }
        metrics::gauge!(m::ASSIGNED_PARTITIONS).set(self.parts.len() as f64);
    }

    /// True once every owned partition reached its end offset.
    pub(super) fn caught_up(&self) -> bool {
        if !self.ever_assigned || self.parts.is_empty() {
            return false;
        }
        self.parts.keys().all(|&(t, p)| match self.targets.get(&(t, p)) {
            Some(&target) => target == i64::MIN || self.tracker.get(t, p).is_some_and(|o| o.position() >= target),
            None => false,
        })
    }
}
