//! One consumed message: tracking, recovery (skip or rebuild), appending to its file.

use super::*;

impl Writer {
    pub(super) fn on_message(&mut self, m: &BorrowedMessage<'_>, t: usize, route: Route, generation: u64, now: Instant) {
        let (p, off) = (m.partition(), m.offset());
        let record_ms = m.timestamp().to_millis();
        if self.parts.get(&(t, p)).is_none_or(|st| st.assigned_gen > generation) {
            // Polled before a rebalance took the partition away (and maybe gave it back): the
            // message is not tracked, so it is not committed and its owner reads it again.
            debug!(topic = m.topic(), partition = p, offset = off, "message polled before its partition was revoked; dropped (not committed)");
            self.summary.stale_dropped += 1;
            return;
        }
        if self.tracker.get(t, p).is_none() {
            // No committed offset was known at assignment: tracking starts at the first message.
            self.tracker.assign(t, p, off);
        }
        let topic = &self.topics[t];
        let payload = m.payload().unwrap_or_default();
        // What the file gets: the value (Secor's lines) or the whole record.
        let (line, line_breaks): (&[u8], Option<bool>) = if topic.cfg.format == Format::Record {
            self.scratch.clear();
            crate::consumer::encode_record(&mut self.scratch, m, route.line_breaks.is_some());
            (&self.scratch, Some(false))
        } else {
            (payload, route.line_breaks)
        };
        topic.events.increment(1);
        topic.bytes.increment(payload.len() as u64);
        match route.source {
            DateSource::Invalid(reason) => {
                self.summary.invalid += 1;
                metrics::counter!(m::INVALID_MESSAGES, "topic" => topic.cfg.name.clone(), "reason" => reason.as_str()).increment(1);
                debug!(topic = m.topic(), partition = p, offset = off, reason = reason.as_str(), "invalid message");
            }
            DateSource::RecordTime => self.summary.record_time_dated += 1,
            DateSource::Field(_) => {}
        }
        self.summary.events += 1;
        self.summary.bytes_in += payload.len() as u64;
        self.first_message_at.get_or_insert(now);

        // A partition recovered from intents: some re-read messages are already stored, some
        // belong in files rebuilt under their recorded names.
        let st = self.parts.get_mut(&(t, p)).expect("owned");
        let recovering = st.plan.end();
        if let Some(end) = recovering {
            if off <= end {
                match st.plan.action(off, route.prefix.as_deref(), &route.date, route.to_error_path) {
                    Action::Skip => {
                        self.summary.skipped_already_stored += 1;
                        metrics::counter!(m::SKIPPED_RECOVERED).increment(1);
                        self.tracker.get_mut(t, p).expect("tracked").consumed(off);
                        self.finish_rebuilds(t, p, off);
                        return;
                    }
                    Action::Rebuild(i) => {
                        let track = self.tracker.get_mut(t, p).expect("tracked");
                        let buf = st.pinned.entry(i).or_insert_with(|| {
                            track.hold(off);
                            Buffer { first_record_ms: record_ms, ..Buffer::new(off, now) }
                        });
                        let before = buf.charged();
                        if buf.append_checked(off, line, line_breaks) {
                            self.summary.newlines_replaced += 1;
                        }
                        track.consumed(off);
                        self.open_bytes += buf.charged() - before;
                        self.finish_rebuilds(t, p, off);
                        return;
                    }
                    Action::Normal => {}
                }
            }
        }

        let key = BufferKey { topic: t, partition: p, prefix: route.prefix, date: route.date, error: route.to_error_path };
        let track = self.tracker.get_mut(t, p).expect("tracked above");
        let buf = self.buffers.entry(key.clone()).or_insert_with(|| {
            track.hold(off);
            Buffer { first_record_ms: record_ms, ..Buffer::new(off, now) }
        });
        let before = buf.charged();
        if buf.append_checked(off, line, line_breaks) {
            self.summary.newlines_replaced += 1;
        }
        track.consumed(off);
        self.open_bytes += buf.charged() - before;
        if topic.policy.due(buf, now) == Some(SealReason::Size) {
            self.seal(&key, SealReason::Size);
        }
        if recovering.is_some() {
            self.finish_rebuilds(t, p, off);
        }
        if self.over_budget() && !self.uploads_behind() {
            self.seal_largest();
        }
    }

    /// True when uploads hold half the budget or more. Sealing then frees nothing (the bytes
    /// only move to the upload queue) and would cut files ever smaller, down to one event each:
    /// consumption stops until uploads catch up (see the polling loop).
    pub(super) fn uploads_behind(&self) -> bool {
        self.inflight_bytes >= self.memory_limit / 2
    }

    /// True when buffers and uploads together hold more than the budget.
    pub(super) fn over_budget(&self) -> bool {
        self.open_bytes + self.inflight_bytes > self.memory_limit
    }

    /// Seals every rebuilt file of (t, p) whose recorded range ends at or before `off`, and
    /// drops the recovery plan once consumption has passed all of it.
    pub(super) fn finish_rebuilds(&mut self, t: usize, p: i32, off: i64) {
        let Some(st) = self.parts.get_mut(&(t, p)) else {
            return;
        };
        let Some(end) = st.plan.end() else { return };
        let ready: Vec<usize> = (0..st.plan.rebuild.len()).filter(|i| !st.rebuilt.contains(i) && st.plan.rebuild[*i].to <= off).collect();
        for i in ready {
            st.rebuilt.insert(i);
            let intent = Arc::new(st.plan.rebuild[i].clone());
            let epoch = st.epoch;
            let Some(buf) = st.pinned.remove(&i) else {
                // None of its messages came back (deleted by retention before this run): the
                // earlier upload, if any, is all there is.
                warn!(key = %intent.key, "recorded file could not be rebuilt: its messages are gone");
                continue;
            };
            self.open_bytes -= buf.charged();
            self.summary.rebuilt_files += 1;
            metrics::counter!(m::FILES_REBUILT).increment(1);
            info!(key = %intent.key, events = buf.events, "rebuilding a file recorded by an earlier run");
            let id = self.next_id;
            self.next_id += 1;
            self.inflight_bytes += buf.charged();
            let level = self.topics[t].cfg.compression_level;
            let compression = self.topics[t].cfg.compression;
            self.inflight.insert(
                id,
                InFlight {
                    topic: t,
                    partition: p,
                    epoch,
                    intent: intent.clone(),
                    events: buf.events,
                    bytes: buf.len(),
                    charged: buf.charged(),
                    reason: SealReason::Size,
                    first_record_ms: buf.first_record_ms,
                    data: None,
                    existing: Existing::Accept,
                },
            );
            // Its intent is already in the partition's commits: no new record is needed.
            self.uploader.submit(UploadJob {
                id,
                key: intent.key.clone(),
                topic: self.topics[t].cfg.name.clone(),
                data: buf.data,
                compression,
                level,
                existing: Existing::Accept,
            });
        }
        let st = self.parts.get_mut(&(t, p)).expect("owned");
        if off >= end && st.rebuilt.len() == st.plan.rebuild.len() {
            debug!(partition = p, "recovery finished");
            st.plan = RecoveryPlan::default();
            st.rebuilt.clear();
        }
    }

    pub(super) fn on_partition_eof(&self, consumer: &BaseConsumer<Ctx>, partition: i32) {
        // librdkafka's EOF event carries only the partition number; report positions of every
        // owned partition with that number (topics are few).
        if let Ok(pos) = consumer.position() {
            for e in pos.elements().iter().filter(|e| e.partition() == partition) {
                if let Offset::Offset(o) = e.offset() {
                    debug!(topic = e.topic(), "reached the end of partition {partition} at offset {o}");
                }
            }
        }
    }
}
