//! The memory behind an open file: one reserved stretch of address space per buffer, filled
//! with 256 KiB blocks that are recycled between buffers instead of being returned to the kernel.
//!
//! Why not a `Vec`: every byte the writer buffers would land in memory it has never touched.
//! Faulting in fresh 4 KiB pages, and unmapping them after the upload, cost about a fifth of
//! the writer's CPU on the benchmark machine, nearly all of it on the polling thread that
//! appends. A `Vec`'s allocation cannot take memory that is already resident.
//!
//! So each buffer reserves address space (not memory) and grows in place, one block at a time.
//! When a buffer is dropped (its upload is done), its fully resident blocks are moved with
//! `mremap` — page tables only, no copy, no fault — into a process-wide pool, and the next
//! buffer that grows moves a pooled block into its own reservation the same way. The first
//! block of a buffer is always fresh and filled page by page, so a file of a few events (a rare
//! date, the error bucket) holds a few pages, not a block.
//!
//! The pool is bounded: a block is kept only while the memory in buffers plus the pool stays
//! within [`set_pool_limit`] (the writer's buffer budget); otherwise it is unmapped. So pooling
//! never makes the process hold more than the budget it was given, it only stops the budget's
//! memory from being handed back and faulted in again.

use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Block size: the unit of growth and of recycling. Moving a block costs one `mremap` instead
/// of 64 page faults; smaller blocks would cost more calls, larger ones more memory: a
/// buffer's last block is charged whole (a pooled block is resident whole), so with hundreds
/// of open buffers 2 MiB blocks would hold a large share of the budget.
const BLOCK: usize = 256 << 10;
/// Base page size the charge rounds to within the first block.
const PAGE: usize = 4096;
/// Address space reserved per buffer: far above the largest file (the default rotation size is
/// 100 MB); reserving costs no memory. A buffer that outgrows it moves to a larger reservation.
const RESERVE: usize = 1 << 30;

/// Most memory the pool is allowed to reach (buffers plus pool), whatever the budget. Every
/// pooled block is a mapping of its own, and stays one inside the buffer that takes it, so
/// this keeps the process's mapping count (≤ 2 per block) far below the kernel's default
/// `vm.max_map_count` of 65,530. Larger budgets still work; past this they fault fresh pages.
const MAX_POOL_REACH: u64 = 2 << 30;

/// Pooled blocks not drawn on for this long are handed back to the kernel, so a writer that
/// has gone quiet after a burst does not keep its peak memory.
pub const IDLE_RELEASE: Duration = Duration::from_secs(30);

/// A set of idle, resident blocks and the accounting that bounds it.
pub struct Pool {
    blocks: Mutex<Vec<usize>>,
    /// Bytes in `blocks`.
    pooled: AtomicU64,
    /// Bytes made writable in live buffers of this pool (whole blocks).
    in_use: AtomicU64,
    /// Most bytes buffers and the pool may hold together before released blocks are unmapped.
    /// Zero keeps no blocks.
    limit: AtomicU64,
    /// Blocks taken from the pool, and blocks made fresh.
    reused: AtomicU64,
    fresh: AtomicU64,
    /// `reused` when it last changed, and when that was noticed (for [`Pool::release_idle`]).
    last_draw: Mutex<Option<(u64, Instant)>>,
}

/// The process-wide pool every [`Memory::new`] buffer uses; it keeps nothing until
/// [`set_pool_limit`] is called (the writer does, with its buffer budget).
static GLOBAL: Pool = Pool::new();

/// Lets released blocks be kept while buffers and the pool together hold at most `bytes`.
pub fn set_pool_limit(bytes: u64) {
    GLOBAL.set_limit(bytes);
}

/// Hands pooled memory back to the kernel once the pool has not been drawn on for
/// [`IDLE_RELEASE`] (the writer calls this on its timer).
pub fn release_idle_blocks(now: Instant) {
    GLOBAL.release_idle(now);
}

/// Bytes of buffer memory pooled for new files.
pub fn pooled_bytes() -> u64 {
    GLOBAL.pooled.load(Ordering::Relaxed)
}

/// Blocks taken from the pool and blocks newly mapped since the process started.
pub fn block_counts() -> (u64, u64) {
    (GLOBAL.reused.load(Ordering::Relaxed), GLOBAL.fresh.load(Ordering::Relaxed))
}

impl Pool {
    const fn new() -> Pool {
        Pool {
            blocks: Mutex::new(Vec::new()),
            pooled: AtomicU64::new(0),
            in_use: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            fresh: AtomicU64::new(0),
            last_draw: Mutex::new(None),
        }
    }

    /// Unmaps every pooled block if none was taken for [`IDLE_RELEASE`]; call it now and then.
    fn release_idle(&self, now: Instant) {
        let reused = self.reused.load(Ordering::Relaxed);
        let mut last = self.last_draw.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some((seen, since)) if seen == reused => {
                if now.saturating_duration_since(since) < IDLE_RELEASE {
                    return;
                }
            }
            _ => {
                *last = Some((reused, now));
                return;
            }
        }
        drop(last);
        self.unmap_pooled_while(|| true);
    }

    fn set_limit(&self, bytes: u64) {
        let bytes = bytes.min(MAX_POOL_REACH);
        self.limit.store(bytes, Ordering::Relaxed);
        // Unmap what no longer fits.
        self.unmap_pooled_while(|| self.in_use.load(Ordering::Relaxed) + self.pooled.load(Ordering::Relaxed) > bytes);
    }

    /// Hands pooled blocks back to the kernel one by one while `more()` holds and any are left.
    fn unmap_pooled_while(&self, more: impl Fn() -> bool) {
        while more() {
            let Some(addr) = self.pop() else { return };
            // SAFETY: a pooled block is a mapping of its own that nothing refers to.
            unsafe { libc::munmap(addr as *mut libc::c_void, BLOCK) };
        }
    }

    fn pop(&self) -> Option<usize> {
        let addr = self.blocks.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        self.pooled.fetch_sub(BLOCK as u64, Ordering::Relaxed);
        Some(addr)
    }

    /// How many more blocks fit under the limit.
    fn room(&self) -> usize {
        let held = self.in_use.load(Ordering::Relaxed) + self.pooled.load(Ordering::Relaxed);
        (self.limit.load(Ordering::Relaxed).saturating_sub(held) / BLOCK as u64) as usize
    }

    fn push(&self, addr: usize) {
        self.pooled.fetch_add(BLOCK as u64, Ordering::Relaxed);
        self.blocks.lock().unwrap_or_else(|p| p.into_inner()).push(addr);
    }
}

/// A growable byte buffer in its own reservation (see the module doc).
pub struct Memory {
    /// Start of the reservation (block-aligned); null until the first byte is written.
    base: *mut u8,
    len: usize,
    /// Bytes made writable from `base` (a multiple of `BLOCK`).
    writable: usize,
    /// Bytes of address space reserved from `base`.
    reserved: usize,
    /// Entry k: block k came from the pool, so all of it is resident.
    pooled: Vec<bool>,
    pool: &'static Pool,
}

// SAFETY: `Memory` owns its mapping exclusively, like a `Vec<u8>` owns its allocation.
unsafe impl Send for Memory {}
// SAFETY: shared access is read-only (`as_slice`).
unsafe impl Sync for Memory {}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

impl Memory {
    /// An empty buffer; nothing is mapped until the first write.
    pub const fn new() -> Memory {
        Memory::in_pool(&GLOBAL)
    }

    const fn in_pool(pool: &'static Pool) -> Memory {
        Memory { base: ptr::null_mut(), len: 0, writable: 0, reserved: 0, pooled: Vec::new(), pool }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written.
    pub fn as_slice(&self) -> &[u8] {
        if self.base.is_null() {
            return &[];
        }
        // SAFETY: `len` bytes from `base` are mapped, writable and initialised.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }

    /// The resident memory this buffer holds, at most: page-rounded in the first block,
    /// block-rounded after it.
    pub fn charged(&self) -> u64 {
        charge(self.len) as u64
    }

    /// Appends `bytes`.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            // Nothing may be mapped yet, and a copy needs a non-null destination even for 0 bytes.
            return;
        }
        self.reserve(bytes.len());
        // SAFETY: `reserve` made `len + bytes.len()` bytes writable; the source is not ours.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(self.len), bytes.len()) };
        self.len += bytes.len();
    }

    /// Appends one byte.
    #[inline]
    pub fn push(&mut self, byte: u8) {
        self.reserve(1);
        // SAFETY: as in `extend_from_slice`.
        unsafe { self.base.add(self.len).write(byte) };
        self.len += 1;
    }

    /// The written bytes from `from` on, for fixing up what was just appended.
    pub fn tail_mut(&mut self, from: usize) -> &mut [u8] {
        if self.base.is_null() {
            return &mut [];
        }
        // SAFETY: as in `as_slice`; `&mut self` makes the access exclusive.
        let all = unsafe { std::slice::from_raw_parts_mut(self.base, self.len) };
        &mut all[from..]
    }

    #[inline]
    fn reserve(&mut self, extra: usize) {
        let need = self.len.checked_add(extra).expect("buffer size overflows usize");
        if need > self.writable {
            self.grow(need);
        }
    }

    #[cold]
    fn grow(&mut self, need: usize) {
        if need > self.reserved {
            self.move_to(Reservation::new(need.max(RESERVE).next_power_of_two()));
        }
        while self.writable < need {
            self.add_block();
        }
    }

    /// Makes the next block of the reservation writable: a pooled one if there is one (never
    /// for the first block, see the module doc), else fresh pages.
    fn add_block(&mut self) {
        // SAFETY: the block lies inside our reservation, which is still PROT_NONE there.
        let at = unsafe { self.base.add(self.writable) };
        let from_pool = if self.writable == 0 { None } else { self.pool.pop() };
        let reused = match from_pool {
            Some(src) => {
                // SAFETY: `src` is a pooled block (a mapping of its own, nothing refers to it);
                // MREMAP_FIXED replaces our reservation's inaccessible pages at `at`.
                let moved = unsafe {
                    libc::mremap(src as *mut libc::c_void, BLOCK, BLOCK, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, at as *mut libc::c_void)
                };
                if moved == libc::MAP_FAILED {
                    // Cannot happen with valid arguments; do not lose the block's memory.
                    // SAFETY: as above, the block is still ours alone.
                    unsafe { libc::munmap(src as *mut libc::c_void, BLOCK) };
                    false
                } else {
                    true
                }
            }
            None => false,
        };
        if reused {
            self.pool.reused.fetch_add(1, Ordering::Relaxed);
        } else {
            // SAFETY: as above.
            let rc = unsafe { libc::mprotect(at.cast(), BLOCK, libc::PROT_READ | libc::PROT_WRITE) };
            if rc != 0 {
                out_of_memory(self.writable + BLOCK);
            }
            self.pool.fresh.fetch_add(1, Ordering::Relaxed);
        }
        self.pooled.push(reused);
        self.writable += BLOCK;
        self.pool.in_use.fetch_add(BLOCK as u64, Ordering::Relaxed);
    }

    /// Starts using `to`, copying what was written (only when a buffer outgrows `RESERVE`).
    fn move_to(&mut self, to: Reservation) {
        let fresh = Memory { base: to.base, len: 0, writable: 0, reserved: to.len, pooled: Vec::new(), pool: self.pool };
        let old = std::mem::replace(self, fresh);
        std::mem::forget(to);
        if !old.is_empty() {
            self.grow(old.len);
            self.len = old.len;
            // SAFETY: both ranges are mapped and writable, in different mappings.
            unsafe { ptr::copy_nonoverlapping(old.base, self.base, old.len) };
        }
    }

    /// Moves the fully resident blocks into the pool while it has room; returns the indices
    /// of the blocks moved (their ranges are no longer ours), in increasing order.
    fn release_blocks(&mut self) -> Vec<usize> {
        self.pool.in_use.fetch_sub(self.writable as u64, Ordering::Relaxed);
        // A fresh block is resident only where it was written.
        let mut resident: Vec<usize> = (0..self.pooled.len()).filter(|&k| self.pooled[k] || (k + 1) * BLOCK <= self.len).collect();
        let n = resident.len().min(self.pool.room());
        resident.truncate(n);
        if n == 0 {
            return resident;
        }
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let homes =
            unsafe { libc::mmap(ptr::null_mut(), n * BLOCK, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0) };
        if homes == libc::MAP_FAILED {
            return Vec::new();
        }
        for i in 0..n {
            let k = resident[i];
            // SAFETY: block k is ours and nothing refers into it any more (we are being
            // dropped); home i is part of the placeholder just mapped, outside the reservation.
            let moved = unsafe {
                let home = homes.cast::<u8>().add(i * BLOCK);
                libc::mremap(self.base.add(k * BLOCK).cast(), BLOCK, BLOCK, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, home.cast::<libc::c_void>())
            };
            if moved == libc::MAP_FAILED {
                // SAFETY: the homes not filled yet are still our own placeholders.
                unsafe { libc::munmap(homes.cast::<u8>().add(i * BLOCK).cast(), (n - i) * BLOCK) };
                resident.truncate(i);
                break;
            }
            self.pool.push(moved as usize);
        }
        resident
    }
}

impl AsRef<[u8]> for Memory {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").field("len", &self.len).field("charged", &self.charged()).finish()
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if self.base.is_null() {
            return;
        }
        // The rest goes back to the kernel, piece by piece around the blocks that moved: their
        // ranges are free address space now, and another thread may already have mapped
        // something there.
        let mut from = 0;
        for k in self.release_blocks().into_iter().chain([self.reserved / BLOCK]) {
            let to = k * BLOCK;
            if to > from {
                // SAFETY: `from..to` is still part of our reservation; nothing refers into it.
                unsafe { libc::munmap(self.base.add(from).cast(), to - from) };
            }
            from = to + BLOCK;
        }
    }
}

/// Resident bytes for `len` written bytes (see [`Memory::charged`]).
fn charge(len: usize) -> usize {
    if len <= BLOCK {
        len.next_multiple_of(PAGE)
    } else {
        BLOCK + (len - BLOCK).next_multiple_of(BLOCK)
    }
}

#[cold]
fn out_of_memory(len: usize) -> ! {
    std::alloc::handle_alloc_error(std::alloc::Layout::from_size_align(len.max(1), BLOCK).expect("valid layout"))
}

/// Inaccessible, block-aligned address space, unmapped on drop.
struct Reservation {
    base: *mut u8,
    len: usize,
}

impl Reservation {
    fn new(len: usize) -> Reservation {
        // Over-reserve by one block, then trim to an aligned start. PROT_NONE and
        // MAP_NORESERVE: neither memory nor commit charge until a block is made writable.
        let span = len + BLOCK;
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let raw = unsafe { libc::mmap(ptr::null_mut(), span, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0) };
        if raw == libc::MAP_FAILED {
            out_of_memory(len);
        }
        let raw = raw as usize;
        let base = raw.next_multiple_of(BLOCK);
        // SAFETY: both trimmed ranges are parts of the mapping just made.
        unsafe {
            if base > raw {
                libc::munmap(raw as *mut libc::c_void, base - raw);
            }
            let end = base + len;
            if raw + span > end {
                libc::munmap(end as *mut libc::c_void, raw + span - end);
            }
        }
        Reservation { base: base as *mut u8, len }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: the whole reservation is ours and nothing refers into it any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(m: &mut Memory, want: &mut Vec<u8>, until: usize, seed: u32) {
        let mut i = seed;
        // Writes of varied length that straddle the block boundaries.
        while want.len() < until {
            let line: Vec<u8> = (0..(i % 5000) as usize).map(|j| (i as usize * 31 + j) as u8).collect();
            m.extend_from_slice(&line);
            m.push(b'\n');
            want.extend_from_slice(&line);
            want.push(b'\n');
            i += 1;
        }
    }

    #[test]
    fn starts_empty_and_maps_nothing() {
        let m = Memory::new();
        assert!(m.is_empty());
        assert_eq!(m.as_slice(), b"");
        assert_eq!(m.charged(), 0);
    }

    #[test]
    fn keeps_every_byte_across_growth_steps() {
        let mut m = Memory::new();
        let mut want = Vec::new();
        fill(&mut m, &mut want, 7 * BLOCK + 12_345, 0);
        assert_eq!(m.len(), want.len());
        assert!(m.as_slice() == want, "contents differ");
        assert_eq!(m.as_slice().as_ptr() as usize % BLOCK, 0, "the start is block aligned");
    }

    #[test]
    fn one_write_larger_than_a_step_and_a_move_past_the_reservation() {
        let mut m = Memory::new();
        m.extend_from_slice(b"head\n");
        let big = vec![7u8; 5 * BLOCK + 3];
        m.extend_from_slice(&big);
        assert_eq!(m.len(), 5 + big.len());
        assert_eq!(&m.as_slice()[..5], b"head\n");
        assert!(m.as_slice()[5..].iter().all(|&b| b == 7));
        // Outgrowing the reservation moves the contents to a larger one.
        let before = m.as_slice().as_ptr();
        m.move_to(Reservation::new(2 * RESERVE));
        assert_ne!(m.as_slice().as_ptr(), before);
        assert_eq!(m.len(), 5 + big.len());
        assert_eq!(&m.as_slice()[..5], b"head\n");
        m.push(b'!');
        assert_eq!(m.as_slice().last(), Some(&b'!'));
    }

    #[test]
    fn empty_writes_before_anything_is_mapped() {
        // An empty Kafka value is a line of its own; it may be a buffer's first message.
        let mut m = Memory::new();
        m.extend_from_slice(b"");
        assert!(m.is_empty());
        assert_eq!(m.tail_mut(0), b"");
        m.push(b'\n');
        m.extend_from_slice(b"");
        assert_eq!(m.as_slice(), b"\n");
    }

    #[test]
    fn tail_mut_edits_only_what_follows() {
        let mut m = Memory::new();
        m.extend_from_slice(b"abc");
        m.extend_from_slice(b"d\ne");
        for b in m.tail_mut(3) {
            if *b == b'\n' {
                *b = b' ';
            }
        }
        assert_eq!(m.as_slice(), b"abcd e");
    }

    #[test]
    fn charge_rounds_to_pages_then_to_blocks() {
        assert_eq!(charge(0), 0);
        assert_eq!(charge(1), PAGE);
        assert_eq!(charge(PAGE), PAGE);
        assert_eq!(charge(PAGE + 1), 2 * PAGE);
        assert_eq!(charge(BLOCK), BLOCK);
        assert_eq!(charge(BLOCK + 1), 2 * BLOCK);
        assert_eq!(charge(3 * BLOCK), 3 * BLOCK);
        assert_eq!(charge(3 * BLOCK + 1), 4 * BLOCK);
        // Never under the bytes written, and never more than a block over.
        for len in [5, 4097, BLOCK - 1, BLOCK + 7, 10 * BLOCK - 1, 10 * BLOCK + 1] {
            assert!(charge(len) >= len && charge(len) - len < BLOCK, "{len}");
        }
    }

    #[test]
    fn bytes_can_own_it() {
        let mut m = Memory::new();
        m.extend_from_slice(b"xyz\n");
        let b = bytes::Bytes::from_owner(m);
        assert_eq!(&b[..], b"xyz\n");
    }

    #[test]
    fn released_blocks_are_reused_with_fresh_contents_and_the_limit_holds() {
        static POOL: Pool = Pool::new();
        POOL.set_limit(64 * BLOCK as u64);
        let mut a = Memory::in_pool(&POOL);
        a.extend_from_slice(&vec![0xAA; 6 * BLOCK]);
        assert_eq!(a.pooled, vec![false; 6]);
        drop(a);
        // Six full blocks: all pooled, and nothing of them counts as in use any more.
        assert_eq!(POOL.pooled.load(Ordering::Relaxed), 6 * BLOCK as u64);
        assert_eq!(POOL.in_use.load(Ordering::Relaxed), 0);

        let mut b = Memory::in_pool(&POOL);
        let mut want_b = Vec::new();
        fill(&mut b, &mut want_b, 5 * BLOCK + 77, 9);
        // The first block is fresh, the next five come from the pool.
        assert_eq!(b.pooled, vec![false, true, true, true, true, true]);
        assert_eq!(POOL.pooled.load(Ordering::Relaxed), BLOCK as u64);
        // A reused block holds exactly what was written into it, nothing of its past.
        assert!(b.as_slice() == want_b, "contents differ");
        // Pooled blocks are resident whole, so even the partly written last one goes back.
        drop(b);
        assert_eq!(POOL.pooled.load(Ordering::Relaxed), 7 * BLOCK as u64);
        assert_eq!((POOL.reused.load(Ordering::Relaxed), POOL.fresh.load(Ordering::Relaxed)), (5, 7));

        // Lowering the limit unmaps what no longer fits; a full pool unmaps what is released.
        POOL.set_limit(3 * BLOCK as u64);
        assert_eq!(POOL.pooled.load(Ordering::Relaxed), 3 * BLOCK as u64);
        let mut c = Memory::in_pool(&POOL);
        c.extend_from_slice(b"x");
        c.extend_from_slice(&vec![0xBB; 4 * BLOCK - 1]);
        // Three reused blocks plus a fresh first block: 4 in use, over the limit of 3.
        assert_eq!(c.pooled, vec![false, true, true, true]);
        assert_eq!(POOL.in_use.load(Ordering::Relaxed), 4 * BLOCK as u64);
        drop(c);
        assert_eq!(POOL.pooled.load(Ordering::Relaxed), 3 * BLOCK as u64, "kept only what fits");
        assert_eq!(POOL.in_use.load(Ordering::Relaxed), 0);
        POOL.set_limit(0);
        assert_eq!(POOL.pooled.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_first_block_is_never_taken_from_the_pool_and_partial_fresh_blocks_are_not_kept() {
        static POOL: Pool = Pool::new();
        POOL.set_limit(64 * BLOCK as u64);
        let mut a = Memory::in_pool(&POOL);
        a.extend_from_slice(&vec![1u8; 2 * BLOCK + 10]);
        drop(a);
        // Blocks 0 and 1 were written whole; block 2 only in part, so it is not resident.
        assert_eq!(POOL.pooled.load(Ordering::Relaxed), 2 * BLOCK as u64);
        let mut small = Memory::in_pool(&POOL);
        small.extend_from_slice(b"one event\n");
        assert_eq!(small.charged(), PAGE as u64);
        assert_eq!(small.pooled, vec![false]);
        drop(small);
        assert_eq!(POOL.pooled.load(Ordering::Relaxed), 2 * BLOCK as u64);
    }

    #[test]
    fn concurrent_buffers_and_other_mappings_never_see_each_others_bytes() {
        // Buffers grow and are dropped on several threads at once while other large
        // allocations (their own mappings) come and go: every byte must read back as written.
        // This is the shape of the writer (appends on one thread, drops after upload on others).
        static POOL: Pool = Pool::new();
        POOL.set_limit(48 * BLOCK as u64);
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    for round in 0..250usize {
                        let tag = t.wrapping_mul(61).wrapping_add(round as u8);
                        let size = 1 + (round * 7919 + t as usize * 104_729) % (3 * BLOCK + 5000);
                        let mut m = Memory::in_pool(&POOL);
                        let mut written = 0;
                        while written < size {
                            let chunk = (size - written).min(1 + (written * 31 + round) % 70_000);
                            m.extend_from_slice(&vec![tag; chunk]);
                            written += chunk;
                        }
                        let other = vec![!tag; 1 << 20 | (round * 4096)];
                        assert!(m.as_slice().iter().all(|&b| b == tag), "thread {t} round {round}: buffer corrupted");
                        assert!(other.iter().all(|&b| b == !tag), "thread {t} round {round}: other mapping corrupted");
                        drop(m);
                        assert!(other.iter().all(|&b| b == !tag), "thread {t} round {round}: dropping unmapped a neighbour");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no thread fails");
        }
        assert_eq!(POOL.in_use.load(Ordering::Relaxed), 0);
        assert!(POOL.reused.load(Ordering::Relaxed) > 0, "blocks were recycled");
        POOL.set_limit(0);
    }

    #[test]
    fn the_pool_reach_is_capped_whatever_the_budget() {
        static POOL: Pool = Pool::new();
        POOL.set_limit(u64::MAX);
        assert_eq!(POOL.limit.load(Ordering::Relaxed), MAX_POOL_REACH);
        assert!(MAX_POOL_REACH / BLOCK as u64 * 2 < 65_530 / 2, "well under the default mapping limit");
        POOL.set_limit(0);
    }

    #[test]
    fn pooled_memory_goes_back_to_the_kernel_after_an_idle_spell() {
        static POOL: Pool = Pool::new();
        POOL.set_limit(64 * BLOCK as u64);
        let t0 = Instant::now();
        let mut a = Memory::in_pool(&POOL);
        a.extend_from_slice(&vec![1u8; 4 * BLOCK]);
        drop(a);
        assert_eq!(POOL.pooled.load(Ordering::Relaxed), 4 * BLOCK as u64);
        POOL.release_idle(t0);
        POOL.release_idle(t0 + IDLE_RELEASE / 2);
        assert_eq!(POOL.pooled.load(Ordering::Relaxed), 4 * BLOCK as u64, "not idle long enough");
        // A draw on the pool restarts the clock.
        let mut b = Memory::in_pool(&POOL);
        b.extend_from_slice(&vec![2u8; 2 * BLOCK]);
        drop(b);
        POOL.release_idle(t0 + IDLE_RELEASE);
        assert!(POOL.pooled.load(Ordering::Relaxed) > 0, "drawn on since the last look");
        POOL.release_idle(t0 + IDLE_RELEASE * 2 - Duration::from_millis(1));
        assert!(POOL.pooled.load(Ordering::Relaxed) > 0);
        POOL.release_idle(t0 + IDLE_RELEASE * 2);
        assert_eq!(POOL.pooled.load(Ordering::Relaxed), 0, "idle for the whole spell");
    }
}
