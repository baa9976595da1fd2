//! Open files and files in flight, and the only byte ledger.
//!
//! Every byte the memory budget counts is in a [`Files`]: open buffers (one per route), files
//! being rebuilt under a recorded name, and sealed files until their upload finishes. Its
//! fields are private to this file, so the two totals can only change where a buffer enters or
//! leaves (an earlier version updated them by hand at eleven places, and they drifted).

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashMap as HashMap;

use super::partition::PartKey;
use crate::buffer::{Buffer, BufferKey, BufferKeyRef, Framing, SealCost, SealReason};
use crate::intent::Intent;
use crate::upload::Existing;

/// A sealed file from seal to upload.
pub(super) struct InFlight {
    pub(super) topic: usize,
    pub(super) partition: i32,
    /// Which of the topic's outputs it is of.
    pub(super) output: u8,
    /// The assignment it belongs to; results for an older assignment are ignored.
    pub(super) epoch: u64,
    pub(super) intent: Arc<Intent>,
    /// The offset its buffer holds in the partition's offsets, released when it lands: its
    /// first message. For a rebuilt file that is not always the recorded first offset (the
    /// re-read may begin inside the recorded range); releasing the recorded one instead left
    /// the held offset held for good.
    pub(super) held: i64,
    pub(super) events: u64,
    /// Uncompressed size of the file.
    pub(super) bytes: u64,
    /// Memory it holds until uploaded.
    charged: u64,
    pub(super) reason: SealReason,
    /// Present until the upload is submitted (the file awaits its intent record).
    data: Option<crate::buffer::Memory>,
    /// Record time of its first message (for the retention headroom gauge).
    pub(super) first_record_ms: Option<i64>,
    pub(super) existing: Existing,
    /// When it was sealed (a file waiting long for its intent record is a stall).
    pub(super) sealed_at: Instant,
}

/// A file being rebuilt: its partition and its index in the partition's `recovery.rebuild`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct RebuildKey {
    pub(super) part: PartKey,
    pub(super) index: usize,
}

/// How an output's files are opened: their framing, and what sealing one will hold besides
/// its bytes (charged while it is open, so that a seal does not raise the budget's total).
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub(super) framing: Framing,
    pub(super) seal_cost: SealCost,
}

impl Shape {
    fn open(self, offset: i64, record_ms: Option<i64>, now: Instant) -> Buffer {
        let mut b = Buffer::framed(offset, now, self.framing).sealed_at_cost(self.seal_cost);
        b.first_record_ms = record_ms;
        b
    }
}

/// Where a message goes: the open file of its route, or a file being rebuilt.
pub(super) enum Slot<'k> {
    Open(BufferKeyRef<'k>),
    Rebuild(RebuildKey),
}

/// What appending did.
pub(super) struct Appended<'b> {
    /// The message opened the file (its offset must be held).
    pub(super) opened: bool,
    /// Raw newlines in the value were written as spaces.
    pub(super) newline_replaced: bool,
    pub(super) buffer: &'b Buffer,
}

#[derive(Default)]
pub(super) struct Files {
    /// Looked up by borrowed keys ([`BufferKeyRef`]), hence hashbrown's map.
    open: hashbrown::HashMap<BufferKey, Buffer, rustc_hash::FxBuildHasher>,
    rebuilding: HashMap<RebuildKey, Buffer>,
    inflight: HashMap<u64, InFlight>,
    /// Sealed files waiting for their intent to be committed, in seal order.
    awaiting: Vec<u64>,
    open_bytes: u64,
    inflight_bytes: u64,
    next_id: u64,
}

fn get_or_open<K: Hash + Eq>(
    map: &mut HashMap<K, Buffer>,
    key: K,
    offset: i64,
    record_ms: Option<i64>,
    shape: Shape,
    now: Instant,
) -> (&mut Buffer, bool) {
    let mut opened = false;
    let buf = map.entry(key).or_insert_with(|| {
        opened = true;
        shape.open(offset, record_ms, now)
    });
    (buf, opened)
}

impl Files {
    /// Appends one message to its file, opening the file (of `shape`) if needed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn append(
        &mut self,
        slot: Slot<'_>,
        offset: i64,
        line: &[u8],
        line_breaks: Option<bool>,
        record_ms: Option<i64>,
        shape: Shape,
        now: Instant,
    ) -> Appended<'_> {
        let (buffer, opened) = match slot {
            Slot::Open(key) => {
                // Found without cloning the key's names; cloned only for a file opened here.
                let mut opened = false;
                let buffer = self.open.entry_ref(&key).or_insert_with(|| {
                    opened = true;
                    shape.open(offset, record_ms, now)
                });
                (buffer, opened)
            }
            Slot::Rebuild(key) => get_or_open(&mut self.rebuilding, key, offset, record_ms, shape, now),
        };
        // A new file's bytes from before its first message (a SequenceFile's header) count too,
        // and so does what sealing it will hold.
        let before = if opened { 0 } else { buffer.charged() };
        let newline_replaced = buffer.append_checked(offset, line, line_breaks);
        self.open_bytes += buffer.charged() - before;
        Appended { opened, newline_replaced, buffer }
    }

    /// Takes an open file out to seal it.
    pub(super) fn take_open(&mut self, key: &BufferKey) -> Option<Buffer> {
        let buf = self.open.remove(key)?;
        self.open_bytes -= buf.charged();
        Some(buf)
    }

    /// Takes a file being rebuilt out to seal it.
    pub(super) fn take_rebuilt(&mut self, key: RebuildKey) -> Option<Buffer> {
        let buf = self.rebuilding.remove(&key)?;
        self.open_bytes -= buf.charged();
        Some(buf)
    }

    /// Puts a sealed buffer in flight; `awaiting_intent` files wait for their intent record
    /// (see `record_intents`), the others go to the upload queue at once. Returns its id.
    /// It stays charged what it was charged open, what encoding it holds besides the buffer (a
    /// Parquet file's columns) included, until the upload ends: a seal moves bytes from the
    /// open files to the uploads and never adds any.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch(
        &mut self,
        topic: usize,
        partition: i32,
        output: u8,
        epoch: u64,
        intent: Arc<Intent>,
        buf: Buffer,
        reason: SealReason,
        existing: Existing,
        awaiting_intent: bool,
        now: Instant,
    ) -> (u64, Option<crate::buffer::Memory>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut charged = buf.charged();
        if crate::sabotage::on(crate::sabotage::Rule::ChargeSealingAtSeal) {
            charged += buf.sealing_bytes();
        }
        self.inflight_bytes += charged;
        let (events, bytes, first_record_ms, held) = (buf.events, buf.len(), buf.first_record_ms, buf.first_offset);
        let (data, keep) = if awaiting_intent { (None, Some(buf.data)) } else { (Some(buf.data), None) };
        self.inflight.insert(
            id,
            InFlight {
                topic,
                partition,
                output,
                epoch,
                intent,
                held,
                events,
                bytes,
                charged,
                reason,
                data: keep,
                first_record_ms,
                existing,
                sealed_at: now,
            },
        );
        if awaiting_intent {
            self.awaiting.push(id);
        }
        (id, data)
    }

    /// The data of a file whose intent is now recorded, for its upload (its memory stays
    /// charged until the upload finishes).
    pub(super) fn recorded(&mut self, id: u64) -> Option<(&InFlight, crate::buffer::Memory)> {
        self.awaiting.retain(|a| *a != id);
        let f = self.inflight.get_mut(&id)?;
        let data = f.data.take()?;
        Some((f, data))
    }

    /// A finished upload leaves the books.
    pub(super) fn landed(&mut self, id: u64) -> Option<InFlight> {
        let f = self.inflight.remove(&id)?;
        self.inflight_bytes -= f.charged;
        Some(f)
    }

    /// Drops the open files of `parts` (a lost assignment); returns their events.
    pub(super) fn drop_open(&mut self, parts: &HashSet<PartKey>) -> u64 {
        let keys: Vec<BufferKey> = self.open.keys().filter(|k| parts.contains(&PartKey::new(k.topic, k.partition))).cloned().collect();
        keys.iter().filter_map(|k| self.take_open(k)).map(|b| b.events).sum()
    }

    /// Drops the sealed files of `parts` whose intents were never recorded; returns their events.
    pub(super) fn drop_unrecorded(&mut self, parts: &HashSet<PartKey>) -> u64 {
        let ids: Vec<u64> = self.awaiting.iter().copied().filter(|id| parts.contains(&self.inflight[id].part())).collect();
        self.awaiting.retain(|id| !ids.contains(id));
        ids.iter().filter_map(|id| self.landed(*id)).map(|f| f.events).sum()
    }

    /// Drops the unfinished rebuilds of a partition given up.
    pub(super) fn drop_rebuilds(&mut self, t: usize, p: i32) {
        let keys: Vec<RebuildKey> = self.rebuilding.keys().filter(|k| k.part == PartKey::new(t, p)).copied().collect();
        for k in keys {
            self.take_rebuilt(k);
        }
    }

    pub(super) fn open_keys(&self) -> impl Iterator<Item = &BufferKey> {
        self.open.keys()
    }

    pub(super) fn open_files(&self) -> impl Iterator<Item = (&BufferKey, &Buffer)> {
        self.open.iter()
    }

    pub(super) fn rebuilding(&self) -> impl Iterator<Item = (PartKey, &Buffer)> {
        self.rebuilding.iter().map(|(k, b)| (k.part, b))
    }

    pub(super) fn in_flight(&self) -> impl Iterator<Item = &InFlight> {
        self.inflight.values()
    }

    pub(super) fn get(&self, id: u64) -> Option<&InFlight> {
        self.inflight.get(&id)
    }

    pub(super) fn awaiting(&self) -> &[u64] {
        &self.awaiting
    }

    /// The memory charged to files waiting for their intent record.
    pub(super) fn awaiting_bytes(&self) -> u64 {
        self.awaiting.iter().filter_map(|id| self.inflight.get(id)).map(|f| f.charged).sum()
    }

    /// When the oldest file of `part` waiting for its intent record was sealed.
    pub(super) fn oldest_awaiting(&self, part: PartKey) -> Option<Instant> {
        self.awaiting.iter().filter_map(|id| self.inflight.get(id)).filter(|f| f.part() == part).map(|f| f.sealed_at).min()
    }

    pub(super) fn inflight_count(&self) -> usize {
        self.inflight.len()
    }

    /// Everything the budget counts: open files and files in flight.
    pub(super) fn charged(&self) -> u64 {
        self.open_bytes + self.inflight_bytes
    }

    pub(super) fn open_bytes(&self) -> u64 {
        self.open_bytes
    }

    pub(super) fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// The largest open file.
    pub(super) fn largest_open(&self) -> Option<BufferKey> {
        self.open.iter().max_by_key(|(_, b)| b.len()).map(|(k, _)| k.clone())
    }

    /// True when the two totals equal the sums over the buffers they describe.
    pub(super) fn books_balance(&self) -> bool {
        let open: u64 = self.open.values().chain(self.rebuilding.values()).map(Buffer::charged).sum();
        let inflight: u64 = self.inflight.values().map(|f| f.charged).sum();
        open == self.open_bytes && inflight == self.inflight_bytes
    }
}

impl InFlight {
    pub(super) fn part(&self) -> PartKey {
        PartKey::new(self.topic, self.partition)
    }
}
