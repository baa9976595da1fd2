//! One consumed message: tracking, recovery (skip or rebuild), appending to its file.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::files::{RebuildKey, Slot};
use super::partition::PartKey;
use super::Writer;
use crate::buffer::{BufferKey, SealReason};
use crate::config::Format;
use crate::intent::{Action, Place, Recovery};
use crate::metrics as m;
use crate::routing::{DateSource, Route};
use crate::sabotage;
use crate::upload::Existing;
use crate::writer::ports::Message;

/// A polled message with its route: what the core applies.
pub(crate) struct Routed<M> {
    pub(crate) message: M,
    /// The index of its topic in the config.
    pub(crate) topic: usize,
    pub(crate) route: Route,
    /// The rebalance generation it was polled in.
    pub(crate) generation: u64,
}

impl Writer {
    /// Applies a polled batch, in order, under one clock read (read per message, the clock
    /// showed up at ~4 % of a drain's CPU). The one entry for messages: the polling loop and
    /// the simulation both call it. Generic over the message type: librdkafka's borrowed
    /// messages in production, owned ones in the simulation.
    pub(crate) fn apply_batch<M: Message>(&mut self, batch: impl IntoIterator<Item = Routed<M>>) {
        let now = self.clock.now();
        for r in batch {
            self.on_message(&r.message, r.topic, r.route, r.generation, now);
        }
    }

    /// Applies one routed message polled in rebalance generation `generation`.
    fn on_message<M: Message>(&mut self, m: &M, t: usize, route: Route, generation: u64, now: Instant) {
        let (p, off) = (m.partition(), m.offset());
        let record_ms = m.timestamp().to_millis();
        let Some(st) =
            self.parts.get_mut(&PartKey::new(t, p)).filter(|st| st.assigned_gen <= generation || sabotage::on(sabotage::Rule::KeepStaleMessages))
        else {
            // Polled before a rebalance took the partition away (and maybe gave it back): the
            // message is not tracked, so it is not committed and its owner reads it again.
            debug!(topic = m.topic(), partition = p, offset = off, "message polled before its partition was revoked; dropped (not committed)");
            self.summary.stale_dropped += 1;
            return;
        };
        // No committed offset was known at assignment: tracking starts at the first message.
        st.offsets_from(off);
        if let Some(f) = route.unparsed_field.map(usize::from) {
            // A pattern that does not fit the data dates events by another rung: say so, loudly
            // at first, then at each power of ten (the counter has every one).
            let topic = &mut self.topics[t];
            let n = topic.unparsed(f);
            self.summary.unparsed_timestamps += 1;
            let field = &topic.cfg().timestamp_fields[f];
            metrics::counter!(m::TIMESTAMPS_UNPARSED, "topic" => topic.name().to_string(), "field" => field.clone()).increment(1);
            if n == 10_u64.pow(n.ilog10()) {
                warn!(
                    topic = %topic.name(),
                    field = %field,
                    pattern = topic.cfg().timestamp_input_pattern.as_deref().unwrap_or("RFC 3339 / ISO-8601"),
                    count = n,
                    partition = p,
                    offset = off,
                    "a timestamp field holds a string its pattern cannot read; the event is dated by the next field or its record time (check timestamp_input_pattern)"
                );
            }
        }
        let topic = &self.topics[t];
        let payload = m.payload().unwrap_or_default();
        // What the file gets: the value (Secor's lines) or the whole record.
        let (line, line_breaks): (&[u8], Option<bool>) = if topic.cfg().format == Format::Record {
            self.scratch.clear();
            crate::consumer::encode_record(&mut self.scratch, m, route.line_breaks.is_some());
            (&self.scratch, Some(false))
        } else {
            (payload, route.line_breaks)
        };
        topic.consumed(payload.len());
        match route.source {
            DateSource::Invalid(reason) => {
                self.summary.invalid += 1;
                metrics::counter!(m::INVALID_MESSAGES, "topic" => topic.name().to_string(), "reason" => reason.as_str()).increment(1);
                debug!(topic = m.topic(), partition = p, offset = off, reason = reason.as_str(), "invalid message");
            }
            DateSource::RecordTime => self.summary.record_time_dated += 1,
            DateSource::RecordTimeInstead(reason) => {
                self.summary.record_time_dated += 1;
                metrics::counter!(m::RECORD_TIME_DATED, "topic" => topic.name().to_string(), "value" => reason.as_str()).increment(1);
            }
            DateSource::Field(_) | DateSource::Offset => {}
        }
        self.summary.events += 1;
        self.summary.bytes_in += payload.len() as u64;
        self.first_message_at.get_or_insert(now);

        // A partition recovered from intents: some re-read messages are already stored, some
        // belong in files rebuilt under their recorded names.
        let recovering = st.recovery.end();
        let action = match recovering {
            Some(end) if off <= end && !sabotage::on(sabotage::Rule::IgnoreRecovery) => {
                // Each intent by the rule of the build that recorded it: one from before record
                // dating holds a record without an event time on its `invalid_date` place.
                let here = Place { prefix: route.prefix.as_deref(), date: &route.date, error: route.to_error_path };
                st.recovery.action_by_build(off, here, route.earlier.as_deref().map(place_of))
            }
            _ => Action::Normal,
        };
        let action = match action {
            Action::Rebuild(i) if sabotage::on(sabotage::Rule::RebuildFromSecond) && st.recovery.rebuild[i].from == off => Action::Skip,
            a => a,
        };
        if action == Action::Skip {
            self.summary.skipped_already_stored += 1;
            metrics::counter!(m::SKIPPED_RECOVERED).increment(1);
            st.offsets_from(off).consumed(off);
            self.finish_rebuilds(t, p, off);
            return;
        }
        let rebuild = match action {
            Action::Rebuild(i) => Some(i),
            _ => None,
        };
        if topic.markers() {
            // Per message: one string compare while the date does not change.
            let seen = st.marking.saw_event(topic.layout(), &route, record_ms);
            topic.note_late(&mut self.summary, p, &route.date, seen);
        }
        let key =
            rebuild.is_none().then_some(BufferKey { topic: t, partition: p, prefix: route.prefix, date: route.date, error: route.to_error_path });
        let slot = match (rebuild, &key) {
            (Some(index), _) => Slot::Rebuild(RebuildKey { part: PartKey::new(t, p), index }),
            (None, Some(k)) => Slot::Open(k),
            (None, None) => unreachable!("a key is made for every message not rebuilt"),
        };
        let rebuilding = rebuild.is_some();
        let appended = self.files.append(slot, off, line, line_breaks, record_ms, topic.framing(), now);
        let size_due = !rebuilding && topic.policy().due(appended.buffer, now) == Some(SealReason::Size);
        let (opened, newline) = (appended.opened, appended.newline_replaced);
        let offsets = st.offsets_from(off);
        if opened {
            offsets.hold(off);
        }
        offsets.consumed(off);
        if newline {
            self.summary.newlines_replaced += 1;
        }
        if let Some(key) = key.filter(|_| size_due) {
            self.seal(&key, SealReason::Size);
        }
        if recovering.is_some() || rebuilding {
            self.finish_rebuilds(t, p, off);
        }
        let (open, inflight) = (self.files.open_bytes(), self.files.inflight_bytes());
        if self.budget.over(open, inflight) && !self.budget.uploads_behind(inflight) {
            self.seal_largest();
        }
    }

    /// Seals every rebuilt file of (t, p) whose recorded range ends at or before `off`, and
    /// drops the recovery once consumption has passed all of it.
    pub(super) fn finish_rebuilds(&mut self, t: usize, p: i32, off: i64) {
        let Some(st) = self.parts.get_mut(&PartKey::new(t, p)) else {
            return;
        };
        let Some(end) = st.recovery.end() else { return };
        let ready: Vec<usize> = (0..st.recovery.rebuild.len()).filter(|i| !st.rebuilt.contains(i) && st.recovery.rebuild[*i].to <= off).collect();
        for i in ready {
            st.rebuilt.insert(i);
            let intent = Arc::new(st.recovery.rebuild[i].clone());
            let Some(buf) = self.files.take_rebuilt(RebuildKey { part: PartKey::new(t, p), index: i }) else {
                // None of its messages came back (deleted by retention before this run): the
                // earlier upload, if any, is all there is.
                warn!(key = %intent.key, "recorded file could not be rebuilt: its messages are gone");
                continue;
            };
            self.summary.rebuilt_files += 1;
            metrics::counter!(m::FILES_REBUILT).increment(1);
            info!(key = %intent.key, events = buf.events, "rebuilding a file recorded by an earlier run");
            // Its intent is already in the partition's commits: no new record is needed. A blob of
            // that name is the earlier upload of this very file only if it ends with the same
            // events; any other is a collision (see `Existing::Rebuilt`).
            let now = self.clock.now();
            let (id, data) = self.files.launch(t, p, st.epoch, intent.clone(), buf, SealReason::Size, Existing::Rebuilt, false, now);
            let data = data.expect("a file not awaiting its intent keeps its data");
            self.uploads.submit(self.topics[t].upload_job(id, &intent.key, data, Existing::Rebuilt));
        }
        if off >= end && st.rebuilt.len() == st.recovery.rebuild.len() {
            debug!(partition = p, "recovery finished");
            st.recovery = Recovery::default();
            st.rebuilt.clear();
        }
    }
}

fn place_of(p: &crate::routing::Placement) -> Place<'_> {
    Place { prefix: p.prefix.as_deref(), date: &p.date, error: p.to_error_path }
}
