//! Offset commits: upload intents recorded as commit metadata, and the safe offsets.

use super::*;

impl Writer {
    /// Commits the intents of sealed files (with each partition's safe offset), then starts
    /// their uploads. A file whose intent is not confirmed is never uploaded.
    pub(super) fn record_intents(&mut self, consumer: &BaseConsumer<Ctx>) {
        if self.awaiting.is_empty() {
            return;
        }
        // Counted per file, so `sealed:n` does not depend on how seals are batched.
        for _ in &self.awaiting {
            failpoint::hit(failpoint::SEALED);
        }
        let mut batch: Vec<u64> = Vec::new();
        let mut commits: Vec<(usize, i32, i64, String)> = Vec::new();
        let mut parts: Vec<(usize, i32)> = Vec::new();
        for id in &self.awaiting {
            let f = &self.inflight[id];
            if !parts.contains(&(f.topic, f.partition)) {
                parts.push((f.topic, f.partition));
            }
        }
        for (t, p) in parts {
            let (Some(st), Some(track)) = (self.parts.get_mut(&(t, p)), self.tracker.get(t, p)) else {
                continue;
            };
            let offset = track.safe();
            let mut added = 0;
            for id in self.awaiting.iter().filter(|id| {
                let f = &self.inflight[*id];
                (f.topic, f.partition) == (t, p)
            }) {
                let f = &self.inflight[id];
                st.intents.push(f.intent.clone());
                if st.intents.metadata(offset, self.metadata_limit).is_none() {
                    // The record is full: this file waits until earlier ones are committed past.
                    st.intents.remove(&f.intent.key);
                    break;
                }
                batch.push(*id);
                added += 1;
            }
            if added > 0 {
                let md = st.intents.metadata(offset, self.metadata_limit).expect("checked above");
                commits.push((t, p, offset, md));
            }
        }
        if batch.is_empty() {
            return;
        }
        match self.commit_with_metadata(consumer, &commits) {
            Ok(()) => {
                for _ in &batch {
                    failpoint::hit(failpoint::INTENT_RECORDED);
                }
                self.awaiting.retain(|id| !batch.contains(id));
                for id in batch {
                    let f = self.inflight.get_mut(&id).expect("in flight");
                    let data = f.data.take().expect("awaiting files hold their data");
                    let cfg = &self.topics[f.topic].cfg;
                    self.uploader.submit(UploadJob {
                        id,
                        key: f.intent.key.clone(),
                        topic: cfg.name.clone(),
                        data,
                        compression: cfg.compression,
                        level: if cfg.compression == Compression::Gzip { cfg.compression_level } else { 0 },
                        existing: f.existing,
                    });
                }
            }
            Err(e) => {
                // Not recorded (or not known to be): do not upload. The intents come out of the
                // log again; if the broker did store them, recovery rebuilds those files.
                for id in &batch {
                    let f = &self.inflight[id];
                    if let Some(st) = self.parts.get_mut(&(f.topic, f.partition)) {
                        st.intents.remove(&f.intent.key);
                    }
                }
                self.intent_retry_at = Instant::now() + Duration::from_secs(1);
                warn!(error = %e, files = batch.len(), "recording upload intents failed; will retry");
            }
        }
    }

    /// One synchronous commit of offsets with metadata; updates the tracker on success.
    pub(super) fn commit_with_metadata(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        commits: &[(usize, i32, i64, String)],
    ) -> rdkafka::error::KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        for (t, p, o, md) in commits {
            let mut e = tpl.add_partition(&self.topics[*t].cfg.name, *p);
            e.set_offset(Offset::Offset(*o))?;
            e.set_metadata(md.as_str());
        }
        let started = Instant::now();
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            metrics::counter!(m::COMMIT_FAILURES).increment(1);
            return Err(e);
        }
        metrics::counter!(m::COMMITS).increment(1);
        metrics::histogram!(m::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        self.health.broker_ok();
        for (t, p, o, _) in commits {
            debug!(topic = %self.topics[*t].cfg.name, partition = p, offset = o, "committed");
            if let Some(track) = self.tracker.get_mut(*t, *p) {
                track.committed(*o);
            }
            if let Some(st) = self.parts.get_mut(&(*t, *p)) {
                st.intents.prune(*o);
            }
        }
        failpoint::hit(failpoint::COMMITTED);
        Ok(())
    }

    /// Commits every partition whose safe offset moved (only `only` if given), with its intents.
    pub(super) fn commit(&mut self, consumer: &BaseConsumer<Ctx>, only: Option<&HashSet<(usize, i32)>>) {
        self.last_commit = Instant::now();
        let mut commits = Vec::new();
        for (t, p, o) in self.tracker.due() {
            if only.is_some_and(|s| !s.contains(&(t, p))) {
                continue;
            }
            let Some(st) = self.parts.get(&(t, p)) else {
                continue;
            };
            match st.intents.metadata(o, self.metadata_limit) {
                Some(md) => commits.push((t, p, o, md)),
                // Cannot happen: a higher offset only drops intents from the record.
                None => error!(partition = p, "intent record too large to commit"),
            }
        }
        if commits.is_empty() {
            return;
        }
        // Not fatal: the offsets stay due and the next commit carries them.
        if let Err(e) = self.commit_with_metadata(consumer, &commits) {
            warn!(error = %e, "offset commit failed; will retry");
        }
    }
}
