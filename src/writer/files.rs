//! Open buffers and files in flight: sealing, upload results, waiting for uploads, the final flush.

use super::*;

impl Writer {
    /// Seals the largest open buffer so its bytes move on to storage.
    pub(super) fn seal_largest(&mut self) {
        if let Some(key) = self.buffers.iter().max_by_key(|(_, b)| b.len()).map(|(k, _)| k.clone()) {
            self.seal(&key, SealReason::Memory);
        }
    }

    /// Names a buffer and queues it for its intent record; the upload starts after that.
    pub(super) fn seal(&mut self, key: &BufferKey, reason: SealReason) {
        let Some(buf) = self.buffers.remove(key) else {
            return;
        };
        self.open_bytes -= buf.charged();
        let topic = &self.topics[key.topic];
        let now_ms = chrono::Utc::now().timestamp_millis();
        let name = NameContext {
            date: &key.date,
            kafka_partition: key.partition,
            current_ms: self.clock.next(now_ms),
            topic: &topic.cfg.name,
            generation: topic.cfg.generation,
            first_offset: buf.first_offset,
            random: rand::random(),
        };
        let intent = Arc::new(Intent {
            key: topic.layout.key(key.prefix.as_deref(), key.error, &name),
            prefix: key.prefix.as_deref().map(String::from),
            date: key.date.to_string(),
            error: key.error,
            from: buf.first_offset,
            to: buf.last_offset,
        });
        let epoch = self.parts.get(&(key.topic, key.partition)).map_or(0, |s| s.epoch);
        let id = self.next_id;
        self.next_id += 1;
        self.inflight_bytes += buf.charged();
        self.inflight.insert(
            id,
            InFlight {
                topic: key.topic,
                partition: key.partition,
                epoch,
                intent,
                events: buf.events,
                bytes: buf.len(),
                charged: buf.charged(),
                reason,
                first_record_ms: buf.first_record_ms,
                data: Some(buf.data),
                existing: Existing::Compare,
            },
        );
        self.awaiting.push(id);
    }

    pub(super) fn on_uploaded(&mut self, done: UploadDone) {
        let Some(f) = self.inflight.remove(&done.id) else {
            return;
        };
        self.inflight_bytes -= f.charged;
        let current = self.parts.get(&(f.topic, f.partition)).is_some_and(|s| s.epoch == f.epoch);
        if done.outcome == Outcome::Conflict {
            metrics::counter!(m::UPLOAD_FAILURES, "topic" => self.topics[f.topic].cfg.name.clone()).increment(1);
            // Someone else's file has this name (a clock step back across owners?). Never
            // overwrite it: name this file anew and record that instead.
            error!(key = %f.intent.key, "a different blob already has this name; renaming the file");
            if current {
                self.stop_on_name_conflict(f);
            }
            return;
        }
        failpoint::hit(failpoint::UPLOADED);
        let name = self.topics[f.topic].cfg.name.clone();
        metrics::counter!(m::FILES_UPLOADED, "topic" => name.clone()).increment(1);
        metrics::counter!(m::BYTES_UPLOADED, "topic" => name.clone()).increment(done.stored_bytes);
        metrics::histogram!(m::UPLOAD_SECONDS, "topic" => name).record(done.elapsed.as_secs_f64());
        self.summary.files += 1;
        self.summary.bytes_out += done.stored_bytes;
        if done.outcome == Outcome::AlreadyThere {
            self.summary.already_there += 1;
        }
        info!(
            key = %f.intent.key,
            events = f.events,
            bytes = f.bytes,
            stored_bytes = done.stored_bytes,
            first_offset = f.intent.from,
            last_offset = f.intent.to,
            partition = f.partition,
            reason = f.reason.as_str(),
            attempts = done.attempts,
            existed = done.outcome == Outcome::AlreadyThere,
            ms = done.elapsed.as_millis() as u64,
            "uploaded"
        );
        match self.tracker.get_mut(f.topic, f.partition) {
            Some(track) if current => track.release(f.intent.from),
            // The partition was revoked or lost while this upload ran; its new owner re-reads
            // these events from the last commit and finds this file through its intent.
            _ => warn!(key = %f.intent.key, "upload finished after its partition was given up"),
        }
    }

    /// A blob of the file's name already holds other events. The file's data is gone
    /// (compressed and dropped by the uploader), so nothing is renamed: its intent is removed,
    /// its events stay held (never committed) and the writer stops, so that they are read again
    /// after a restart, under a new name. The simplest safe answer to what should never happen.
    pub(super) fn stop_on_name_conflict(&mut self, f: InFlight) {
        if let Some(st) = self.parts.get_mut(&(f.topic, f.partition)) {
            st.intents.remove(&f.intent.key);
        }
        self.fatal = Some(format!(
            "blob {} exists with different content; stopping without committing its events (restart to re-read them under a new name)",
            f.intent.key
        ));
    }

    pub(super) fn drain_uploads(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            self.on_uploaded(done);
        }
    }

    /// Waits for uploads until `pred` holds or `deadline` passes; returns whether it holds.
    pub(super) fn wait_uploads(&mut self, consumer: &BaseConsumer<Ctx>, deadline: Instant, pred: impl Fn(&Writer) -> bool) -> bool {
        loop {
            self.drain_uploads();
            if !self.awaiting.is_empty() && Instant::now() >= self.intent_retry_at {
                self.record_intents(consumer);
            }
            if pred(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.done_rx.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok(done) => self.on_uploaded(done),
                Err(RecvTimeoutError::Timeout) => {
                    debug!(files = self.inflight.len(), "waiting for uploads")
                }
                Err(RecvTimeoutError::Disconnected) => return pred(self),
            }
        }
    }

    /// Seals everything, waits for the uploads until `deadline`, and commits.
    ///
    /// Files being rebuilt that are not complete are not uploaded: a partial file under a
    /// recorded name could stand in for the complete one. Their intents stay recorded and
    /// their events uncommitted, so the next owner rebuilds them.
    pub(super) fn finish(&mut self, consumer: &BaseConsumer<Ctx>, deadline: Instant) {
        let keys: Vec<BufferKey> = self.buffers.keys().cloned().collect();
        for k in &keys {
            self.seal(k, SealReason::Shutdown);
        }
        if !self.wait_uploads(consumer, deadline, |w| w.inflight.is_empty()) {
            self.summary.abandoned_files = self.inflight.len() as u64;
            error!(files = self.inflight.len(), "shutdown timeout: some files were not uploaded");
        }
        self.commit(consumer, None);
    }
}
