//! The single-producer/single-consumer protocol.
//!
//! The producer owns `head` (slots committed), the consumer owns `tail`
//! (slots released); both only grow, and slot `i` lives at index
//! `i % slot_count`. The producer may fill slot `head` when
//! `head - tail < slot_count`; the consumer may read slot `i` when
//! `i < head`. Each side keeps its own counter in private memory and only
//! *publishes* it to the segment, so a peer that scribbles on our counter
//! changes nothing we rely on; the peer's counter we read is checked before
//! use.
//!
//! Sleeping follows one rule on both sides ("arm, fence, re-check"):
//! 1. spin and yield a little while re-checking;
//! 2. store `waiting = 1`, then a SeqCst fence;
//! 3. re-check; if ready, clear `waiting` and go;
//! 4. otherwise sleep on the doorbell, with a deadline and a liveness check.
//!
//! The other side, after publishing its counter, issues a SeqCst fence and
//! rings only if it then sees `waiting == 1` (and clears it). The two fences
//! make it impossible for the sleeper to miss the publication *and* the
//! publisher to miss the flag, so no wake-up is lost, and while both sides
//! keep up nobody makes a system call. `src/tests/loom_ring.rs` checks this.

use core::fmt;
use core::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::doorbell::Bell;
use crate::layout::{CounterLine, Geometry, FLAG_CRC, FLAG_EOS, KNOWN_FLAGS};
use crate::segment::Segment;
use crate::sync::{
    fence, spin_hint, yield_now, Arc, AtomicU64, Mutex, Ordering, SPIN_LIMIT, YIELD_LIMIT,
};

/// What a peer wrote that cannot be true of an honest peer. A stream that
/// sees one is poisoned: every later call returns the same error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The producer's head went backwards.
    HeadWentBack {
        /// The head we had seen.
        seen: u64,
        /// The head we now read.
        now: u64,
    },
    /// The producer's head claims more committed slots than the ring holds.
    HeadTooFarAhead {
        /// The head read.
        head: u64,
        /// Our tail.
        tail: u64,
    },
    /// The consumer's tail went backwards.
    TailWentBack {
        /// The tail we had seen.
        seen: u64,
        /// The tail we now read.
        now: u64,
    },
    /// The consumer's tail claims slots we never committed.
    TailAhead {
        /// The tail read.
        tail: u64,
        /// Our head.
        head: u64,
    },
    /// A descriptor's length is larger than a slot.
    SlotLength {
        /// The length read.
        len: u32,
        /// The slot size.
        slot_size: u32,
    },
    /// A descriptor carries flags this version does not know.
    SlotFlags(u32),
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::HeadWentBack { seen, now } => {
                write!(f, "producer head went back from {seen} to {now}")
            }
            Self::HeadTooFarAhead { head, tail } => {
                write!(
                    f,
                    "producer head {head} is more than a ring ahead of tail {tail}"
                )
            }
            Self::TailWentBack { seen, now } => {
                write!(f, "consumer tail went back from {seen} to {now}")
            }
            Self::TailAhead { tail, head } => {
                write!(f, "consumer tail {tail} is ahead of head {head}")
            }
            Self::SlotLength { len, slot_size } => {
                write!(f, "slot length {len} exceeds the slot size {slot_size}")
            }
            Self::SlotFlags(flags) => write!(f, "slot flags {flags:#x} are not known"),
        }
    }
}

/// Every way a ring operation can fail. Small and `Copy`, as the C ABI
/// turns it into a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The deadline passed before the ring had room (or data).
    Timeout,
    /// The peer detached, or the liveness check says it is gone.
    PeerGone,
    /// The peer wrote something impossible; the stream is poisoned.
    Corrupt(Corruption),
    /// The stream already carries its end-of-stream marker.
    Finished,
    /// Calls in the wrong order: commit without reserve, reserve twice.
    OutOfOrder,
    /// A commit larger than the slot.
    TooLong {
        /// Bytes asked for.
        len: usize,
        /// The slot size.
        max: usize,
    },
    /// A commit with flags the caller may not set.
    BadFlags(u32),
    /// Sleeping on a doorbell failed with this errno.
    Io(i32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out waiting for the ring"),
            Self::PeerGone => f.write_str("the peer on the ring has gone away"),
            Self::Corrupt(c) => write!(f, "ring corrupted by the peer: {c}"),
            Self::Finished => f.write_str("the stream has already ended"),
            Self::OutOfOrder => f.write_str("ring calls out of order"),
            Self::TooLong { len, max } => {
                write!(f, "commit of {len} bytes exceeds the slot size {max}")
            }
            Self::BadFlags(x) => write!(f, "commit flags {x:#x} are not allowed"),
            Self::Io(e) => write!(
                f,
                "doorbell wait failed: {}",
                std::io::Error::from_raw_os_error(*e)
            ),
        }
    }
}

impl std::error::Error for Error {}

/// How long a blocking call may wait, and how it learns the peer died.
#[derive(Clone, Copy)]
pub struct Wait<'a> {
    deadline: Option<Instant>,
    alive: Option<&'a (dyn Fn() -> bool + 'a)>,
}

impl fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("deadline", &self.deadline)
            .field("alive", &self.alive.is_some())
            .finish()
    }
}

/// How often a sleeping side wakes to run its liveness check.
const LIVENESS_PERIOD: Duration = Duration::from_millis(50);

impl<'a> Wait<'a> {
    /// No deadline, no liveness check: wait until the peer acts or detaches.
    pub fn forever() -> Self {
        Self {
            deadline: None,
            alive: None,
        }
    }

    /// Give up at `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
            alive: None,
        }
    }

    /// Give up after `timeout` from now (a timeout too large to represent
    /// means no deadline).
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            deadline: Instant::now().checked_add(timeout),
            alive: None,
        }
    }

    /// Also give up with [`Error::PeerGone`] as soon as `alive()` returns
    /// false; it is called at least every 50 ms while sleeping.
    pub fn alive(mut self, alive: &'a (dyn Fn() -> bool + 'a)) -> Self {
        self.alive = Some(alive);
        self
    }
}

/// Publishes nothing itself: called right after a side stored its counter
/// as `published`, wakes the other side if it is (about to be) asleep and
/// asked for a counter of at most `published` (`u64::MAX`: whatever it
/// asked for, as at end of stream).
#[inline]
fn wake_peer<B: Bell>(peer: &CounterLine, bell: &B, published: u64) {
    // SYNC: this fence pairs with the fence in `sleep_until` (step 2): either
    // the sleeper's re-check sees the counter we just stored, or we see its
    // `waiting = 1` here.
    // (`--cfg shmover_loom_mutant` removes this fence to show that the loom
    // suite catches the lost wake-up; see tests/tests/loom.rs.)
    #[cfg(not(shmover_loom_mutant))]
    fence(Ordering::SeqCst);
    // A stale `wake_at` is an older, smaller one (a sleeper's asks only
    // grow), so reading it after `waiting` can only ring early.
    if peer.waiting.load(Ordering::Relaxed) != 0
        && published >= peer.wake_at.load(Ordering::Relaxed)
        && peer.waiting.swap(0, Ordering::Relaxed) != 0
    {
        bell.ring();
    }
}

/// How a side sleeps: spinning first or not, and the peer counter it asks
/// to be woken at (0: the next publication).
#[derive(Clone, Copy)]
struct Nap {
    spin: bool,
    wake_at: u64,
}

impl Nap {
    const EAGER: Self = Self {
        spin: true,
        wake_at: 0,
    };
}

/// How long a batching consumer sleeps before it looks again for slots
/// that did not reach its batch (a producer that paused).
const BATCH_PERIOD: Duration = Duration::from_millis(10);

/// Blocks until `ready()` says yes, following the module's sleep rule.
fn sleep_until<B: Bell>(
    mine: &CounterLine,
    peer: &CounterLine,
    bell: &B,
    wait: &Wait<'_>,
    nap: Nap,
    mut ready: impl FnMut() -> Result<bool, Error>,
) -> Result<(), Error> {
    for _ in 0..if nap.spin { SPIN_LIMIT } else { 0 } {
        if ready()? {
            return Ok(());
        }
        spin_hint();
    }
    for _ in 0..if nap.spin { YIELD_LIMIT } else { 0 } {
        if ready()? {
            return Ok(());
        }
        yield_now();
    }
    loop {
        mine.wake_at.store(nap.wake_at, Ordering::Relaxed);
        mine.waiting.store(1, Ordering::Relaxed);
        // SYNC: pairs with the fence in `wake_peer`.
        fence(Ordering::SeqCst);
        let outcome = (|| {
            if ready()? {
                return Ok(true);
            }
            // SYNC: Acquire pairs with the Release store of `closed` in the
            // peer's drop, which comes after its last counter store; so if
            // we see `closed`, a re-check sees everything it published.
            if peer.closed.load(Ordering::Acquire) != 0 {
                return if ready()? {
                    Ok(true)
                } else {
                    Err(Error::PeerGone)
                };
            }
            if let Some(alive) = wait.alive {
                if !alive() {
                    return if ready()? {
                        Ok(true)
                    } else {
                        Err(Error::PeerGone)
                    };
                }
            }
            Ok(false)
        })();
        match outcome {
            Ok(false) => {}
            other => {
                mine.waiting.store(0, Ordering::Relaxed);
                return other.map(|_| ());
            }
        }
        let mut slice = wait.alive.map(|_| LIVENESS_PERIOD);
        if nap.wake_at > 0 {
            slice = Some(slice.map_or(BATCH_PERIOD, |s| s.min(BATCH_PERIOD)));
        }
        if let Some(deadline) = wait.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                mine.waiting.store(0, Ordering::Relaxed);
                return if ready()? {
                    Ok(())
                } else {
                    Err(Error::Timeout)
                };
            }
            slice = Some(slice.map_or(left, |s| s.min(left)));
        }
        let slept = bell.wait(slice);
        mine.waiting.store(0, Ordering::Relaxed);
        if let Err(e) = slept {
            return Err(Error::Io(e.raw_os_error().unwrap_or(libc::EIO)));
        }
    }
}

/// The writing side of a ring.
#[derive(Debug)]
pub struct Producer<S: Segment> {
    seg: S,
    geometry: Geometry,
    /// Slots committed; the authoritative copy (the segment's is published).
    head: u64,
    /// The last tail read from the segment, already checked.
    tail_seen: u64,
    /// Slots from `head` on that a reservation proved free (0: none).
    reserved: u64,
    finished: bool,
    poisoned: Option<Corruption>,
    /// Free slots to wait for once the ring is full (1: each).
    wake_batch: u64,
}

/// A reserved slot, to be filled and committed. Dropping it without
/// committing leaves the slot reserved; the next `reserve` returns it again.
#[derive(Debug)]
pub struct WriteSlot<'p, S: Segment> {
    producer: &'p mut Producer<S>,
    ptr: NonNull<u8>,
    cap: usize,
}

impl<S: Segment> WriteSlot<'_, S> {
    /// The slot's bytes. They may hold an earlier block's data.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is the start of the slot at index `head % n`, which
        // `reserve` proved the consumer has released (its tail, read with
        // Acquire, is past it), so the consumer no longer reads it; `cap` is
        // the slot size, within the data area. The `&mut self` borrow keeps
        // this the only reference we hand out. A hostile consumer could
        // still write these bytes from its process; that can only change
        // the data it receives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }

    /// Publishes the first `len` bytes with `flags` (`FLAG_EOS`,
    /// `FLAG_CRC`) and, when `FLAG_CRC` is set, their CRC32C.
    pub fn commit(self, len: usize, flags: u32, crc: u32) -> Result<(), Error> {
        self.producer.commit_raw(len, flags, crc)
    }
}

/// Free slots that follow one another in memory, reserved by
/// [`Producer::reserve_run`], to be filled and then committed in order.
/// Slots not committed stay reserved: the next `reserve` or `reserve_run`
/// starts with them.
#[derive(Debug)]
pub struct WriteRun<'p, S: Segment> {
    producer: &'p mut Producer<S>,
    /// The first slot not yet committed.
    ptr: NonNull<u8>,
    /// Slots not yet committed.
    slots: u32,
}

impl<S: Segment> WriteRun<'_, S> {
    /// Slots reserved and not yet committed.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The bytes of the slots not yet committed, back to back. They may hold
    /// an earlier block's data.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let size = self.producer.geometry.slot_size as usize;
        // SAFETY: `ptr` is slot `head % n` and the `slots` slots from it do
        // not wrap (`reserve_run` stopped at the end of the ring), so they
        // are contiguous and inside the data area; `reserve_run` proved them
        // released by the consumer (tail read with Acquire), and none is
        // committed yet, so the consumer does not read them. The `&mut self`
        // borrow keeps this the only reference; `commit_slot` moves `ptr`
        // past each slot it publishes, so a published slot is never in it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.slots as usize * size) }
    }

    /// Publishes the first uncommitted slot of the run: `len` bytes,
    /// `flags`, `crc`, as [`WriteSlot::commit`].
    pub fn commit_slot(&mut self, len: usize, flags: u32, crc: u32) -> Result<(), Error> {
        if self.slots == 0 {
            return Err(Error::OutOfOrder);
        }
        self.producer.commit_raw(len, flags, crc)?;
        self.slots -= 1;
        let size = self.producer.geometry.slot_size as usize;
        // SAFETY: the slot just published was inside the run, so its end is
        // at most one past the run's end, within the data area.
        self.ptr = unsafe { self.ptr.add(size) };
        Ok(())
    }
}

impl<S: Segment> Producer<S> {
    /// A producer on a fresh segment (both counters zero).
    pub fn new(seg: S) -> Self {
        let geometry = seg.geometry();
        Self {
            seg,
            geometry,
            head: 0,
            tail_seen: 0,
            reserved: 0,
            finished: false,
            poisoned: None,
            wake_batch: 1,
        }
    }

    /// Once the ring is full, sleep (without spinning first) until the
    /// consumer has freed `slots`, or 10 ms have passed: one wake-up per
    /// batch of released slots instead of one per slot. Capped at half the
    /// slot count, so a consumer that keeps up to half the ring leased
    /// while it waits for more data still frees enough; 1 (the default)
    /// wakes for every slot.
    pub fn set_wake_batch(&mut self, slots: u32) {
        self.wake_batch = u64::from(slots.clamp(1, (self.geometry.slot_count / 2).max(1)));
    }

    /// The segment.
    pub fn segment(&self) -> &S {
        &self.seg
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.geometry.slot_size as usize
    }

    /// Slots committed so far.
    pub fn committed(&self) -> u64 {
        self.head
    }

    fn check_usable(&self) -> Result<(), Error> {
        if let Some(c) = self.poisoned {
            return Err(Error::Corrupt(c));
        }
        if self.finished {
            return Err(Error::Finished);
        }
        Ok(())
    }

    /// Reads and checks the consumer's tail into `seen`; true if a slot is
    /// free for `head`.
    fn tail_room(ctl: &CounterLine, head: u64, seen: &mut u64, n: u64) -> Result<bool, Error> {
        Self::tail_room_for(ctl, head, 1, seen, n)
    }

    /// As [`tail_room`](Self::tail_room), for `need` slots from `head`.
    fn tail_room_for(
        ctl: &CounterLine,
        head: u64,
        need: u64,
        seen: &mut u64,
        n: u64,
    ) -> Result<bool, Error> {
        // SYNC: Acquire pairs with the Release store of the tail in
        // `Shared::release`: the consumer's reads of a slot happen before we
        // overwrite it.
        let tail = ctl.counter.load(Ordering::Acquire);
        if tail < *seen {
            return Err(Error::Corrupt(Corruption::TailWentBack {
                seen: *seen,
                now: tail,
            }));
        }
        if tail > head {
            return Err(Error::Corrupt(Corruption::TailAhead { tail, head }));
        }
        *seen = tail;
        Ok(head - tail + need <= n)
    }

    /// Waits for a free slot and returns it.
    pub fn reserve(&mut self, wait: &Wait<'_>) -> Result<WriteSlot<'_, S>, Error> {
        let (ptr, cap) = self.reserve_raw(wait)?;
        Ok(WriteSlot {
            producer: self,
            ptr,
            cap,
        })
    }

    /// [`Producer::reserve`] without the borrow, for the C ABI: returns the
    /// slot's start and size; the next call must be [`Producer::commit_raw`]
    /// (a second reserve returns the same slot).
    pub fn reserve_raw(&mut self, wait: &Wait<'_>) -> Result<(NonNull<u8>, usize), Error> {
        self.wait_room(wait)?;
        self.reserved = self.reserved.max(1);
        Ok((self.head_slot(), self.geometry.slot_size as usize))
    }

    /// Waits for at least one free slot, and returns it with up to
    /// `max_slots - 1` further free slots that follow it in memory (the run
    /// stops at the end of the ring), to fill with one large read and then
    /// commit one by one.
    ///
    /// It waits until `min_slots` are free (fewer if the end of the ring
    /// comes first; at most half the ring, so that a consumer holding a
    /// few leases cannot keep it waiting for ever): one large read rather
    /// than a small one each time the consumer frees a slot or two.
    pub fn reserve_run(
        &mut self,
        wait: &Wait<'_>,
        min_slots: u32,
        max_slots: u32,
    ) -> Result<WriteRun<'_, S>, Error> {
        let n = u64::from(self.geometry.slot_count);
        let to_end = n - self.head % n;
        let need = u64::from(min_slots.min(max_slots))
            .min(to_end)
            .min(n / 2)
            .max(1);
        self.wait_room_for(wait, need)?;
        // What the tail we saw proves free, and more if the consumer has
        // released slots since.
        let mut seen = self.tail_seen;
        if let Err(e) = Self::tail_room(&self.seg.control().consumer, self.head, &mut seen, n) {
            if let Error::Corrupt(c) = e {
                self.poisoned = Some(c);
            }
            return Err(e);
        }
        self.tail_seen = seen;
        let free = n - (self.head - self.tail_seen);
        let slots = u64::from(max_slots.max(1)).min(free).min(to_end).max(1);
        self.reserved = self.reserved.max(slots);
        Ok(WriteRun {
            ptr: self.head_slot(),
            slots: slots as u32,
            producer: self,
        })
    }

    /// The start of slot `head`.
    fn head_slot(&self) -> NonNull<u8> {
        let idx = (self.head % u64::from(self.geometry.slot_count)) as usize;
        let size = self.geometry.slot_size as usize;
        // SAFETY: idx < slot_count, so the offset idx * slot_size plus
        // slot_size stays within the data area the segment guarantees.
        unsafe { self.seg.data().add(idx * size) }
    }

    /// Returns once slot `head` is free (at once if a reservation holds it).
    fn wait_room(&mut self, wait: &Wait<'_>) -> Result<(), Error> {
        self.wait_room_for(wait, 1)
    }

    /// Returns once `need` slots from `head` are free (`need` at most the
    /// slot count); for one slot, at once if a reservation holds it.
    fn wait_room_for(&mut self, wait: &Wait<'_>, need: u64) -> Result<(), Error> {
        self.check_usable()?;
        let (head, n) = (self.head, u64::from(self.geometry.slot_count));
        let free = n - (head - self.tail_seen);
        if (need == 1 && self.reserved == 0 && free == 0) || (need > 1 && free < need) {
            let mut seen = self.tail_seen;
            let ctl = self.seg.control();
            let mut room = || Self::tail_room_for(&ctl.consumer, head, need, &mut seen, n);
            // The tail must reach head - n + 1 for one slot, and
            // head - n + batch for a batch (or for what we need).
            let batch = self.wake_batch.max(need);
            let nap = if batch > 1 {
                Nap {
                    spin: false,
                    wake_at: (head + batch).saturating_sub(n),
                }
            } else {
                Nap::EAGER
            };
            let res = match room() {
                Ok(true) => Ok(()),
                Ok(false) => sleep_until(
                    &ctl.producer,
                    &ctl.consumer,
                    self.seg.space_bell(),
                    wait,
                    nap,
                    room,
                ),
                Err(e) => Err(e),
            };
            self.tail_seen = seen;
            if let Err(Error::Corrupt(c)) = res {
                self.poisoned = Some(c);
            }
            res?;
        }
        Ok(())
    }

    /// Publishes the reserved slot: `len` bytes, `flags`, `crc`.
    pub fn commit_raw(&mut self, len: usize, flags: u32, crc: u32) -> Result<(), Error> {
        self.check_usable()?;
        if self.reserved == 0 {
            return Err(Error::OutOfOrder);
        }
        let max = self.slot_size();
        if len > max {
            return Err(Error::TooLong { len, max });
        }
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::BadFlags(flags));
        }
        let idx = (self.head % u64::from(self.geometry.slot_count)) as usize;
        let desc = &self.seg.descriptors()[idx];
        desc.len.store(len as u32, Ordering::Relaxed);
        desc.flags.store(flags, Ordering::Relaxed);
        desc.crc.store(crc, Ordering::Relaxed);
        self.head += 1;
        self.reserved -= 1;
        if flags & FLAG_EOS != 0 {
            self.finished = true;
        }
        let ctl = self.seg.control();
        // SYNC: Release pairs with the consumer's Acquire load of the head in
        // `Consumer::has_data`: the slot bytes and descriptor written above
        // are visible to it once it sees this head.
        ctl.producer.counter.store(self.head, Ordering::Release);
        let published = if self.finished { u64::MAX } else { self.head };
        wake_peer(&ctl.consumer, self.seg.data_bell(), published);
        Ok(())
    }

    /// Commits an empty end-of-stream slot, waiting for room as `reserve`.
    pub fn finish(&mut self, wait: &Wait<'_>) -> Result<(), Error> {
        self.reserve_raw(wait)?;
        self.commit_raw(0, FLAG_EOS, 0)
    }
}

impl<S: Segment> Drop for Producer<S> {
    fn drop(&mut self) {
        let ctl = self.seg.control();
        // SYNC: Release pairs with the Acquire load of `closed` in the
        // consumer's `sleep_until`; it comes after our last head store.
        ctl.producer.closed.store(1, Ordering::Release);
        self.seg.data_bell().ring();
    }
}

/// State shared by the consumer and its outstanding leases.
#[derive(Debug)]
struct Shared<S: Segment> {
    seg: S,
    geometry: Geometry,
    /// Private mirror of the published tail, for `next`'s bound check.
    tail: AtomicU64,
    release: Mutex<ReleaseState>,
}

#[derive(Debug)]
struct ReleaseState {
    /// Slots released in order; what we publish.
    tail: u64,
    /// Per slot index: released but not yet passed by the tail.
    released: Vec<bool>,
}

impl<S: Segment> Shared<S> {
    /// Releases slots `seq .. seq + count`.
    fn release(&self, seq: u64, count: u32) {
        let n = u64::from(self.geometry.slot_count);
        let mut st = self.release.lock().unwrap_or_else(|p| p.into_inner());
        debug_assert!(
            seq >= st.tail && seq + u64::from(count) <= st.tail + n,
            "lease outside the window"
        );
        for s in seq..seq + u64::from(count) {
            st.released[(s % n) as usize] = true;
        }
        let before = st.tail;
        loop {
            let i = (st.tail % n) as usize;
            if !st.released[i] {
                break;
            }
            st.released[i] = false;
            st.tail += 1;
        }
        if st.tail == before {
            return;
        }
        self.tail.store(st.tail, Ordering::Release);
        let ctl = self.seg.control();
        // SYNC: Release pairs with the producer's Acquire tail load in
        // `Producer::tail_room`: our reads of the released slots come first.
        ctl.consumer.counter.store(st.tail, Ordering::Release);
        let published = st.tail;
        drop(st);
        wake_peer(&ctl.producer, self.seg.space_bell(), published);
    }
}

impl<S: Segment> Drop for Shared<S> {
    fn drop(&mut self) {
        let ctl = self.seg.control();
        // SYNC: Release pairs with the Acquire load of `closed` in the
        // producer's `sleep_until`.
        ctl.consumer.closed.store(1, Ordering::Release);
        self.seg.space_bell().ring();
    }
}

/// The reading side of a ring. Slots come out in order as [`Lease`]s; a
/// lease may be dropped on any thread, in any order, and the tail advances
/// over released slots in order.
#[derive(Debug)]
pub struct Consumer<S: Segment> {
    shared: Arc<Shared<S>>,
    /// Highest head seen, checked.
    head_seen: u64,
    /// Next slot to hand out.
    read_pos: u64,
    eos: bool,
    poisoned: Option<Corruption>,
    /// Slots to let the producer commit before it wakes us (1: each).
    wake_batch: u64,
}

/// One or more committed slots, held until dropped. While it lives the
/// producer cannot reuse them.
///
/// A lease from [`Consumer::next`] holds one slot. One from
/// [`Consumer::next_run`] may hold several neighbours whose bytes are
/// contiguous in memory: every slot but the last is full, and only the last
/// may carry flags; so `flags` and `crc` keep their one-slot meaning.
pub struct Lease<S: Segment> {
    shared: Arc<Shared<S>>,
    seq: u64,
    slots: u32,
    ptr: NonNull<u8>,
    len: usize,
    flags: u32,
    crc: u32,
}

impl<S: Segment> fmt::Debug for Lease<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("seq", &self.seq)
            .field("slots", &self.slots)
            .field("len", &self.len)
            .field("flags", &self.flags)
            .finish()
    }
}

// SAFETY: a lease is a read-only view of one slot that the producer will not
// reuse until the lease is released; releasing goes through a mutex, so it
// may happen on any thread.
unsafe impl<S: Segment> Send for Lease<S> {}
// SAFETY: shared access only reads the slot.
unsafe impl<S: Segment> Sync for Lease<S> {}

impl<S: Segment> Lease<S> {
    /// The (first) slot's sequence number (0 for the first slot of the
    /// stream).
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// How many slots the lease holds.
    pub fn slots(&self) -> u32 {
        self.slots
    }
    /// The descriptor's flags.
    pub fn flags(&self) -> u32 {
        self.flags
    }
    /// The descriptor's CRC32C, if `FLAG_CRC` is set.
    pub fn crc(&self) -> Option<u32> {
        (self.flags & crate::layout::FLAG_CRC != 0).then_some(self.crc)
    }
    /// Whether this is the stream's last slot.
    pub fn is_end(&self) -> bool {
        self.flags & FLAG_EOS != 0
    }
    /// The committed bytes.
    ///
    /// A hostile producer can still change them in its own process while we
    /// hold the lease; they are plain bytes, so that can only make the data
    /// wrong (which checksums catch), not unsafe.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is slot `seq % n` in the data area; the lease's
        // slots do not wrap and all but the last are full, so `len` bytes
        // from `ptr` stay inside them (each slot's length was checked to be
        // at most the slot size). The producer saw the head pass these slots
        // (Acquire in `has_data` / `extend`) and cannot reuse them until the
        // tail passes them, which needs this lease dropped.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<S: Segment> AsRef<[u8]> for Lease<S> {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl<S: Segment> core::ops::Deref for Lease<S> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl<S: Segment> Drop for Lease<S> {
    fn drop(&mut self) {
        self.shared.release(self.seq, self.slots);
    }
}

impl<S: Segment> Consumer<S> {
    /// A consumer on a fresh segment (both counters zero).
    pub fn new(seg: S) -> Self {
        let geometry = seg.geometry();
        let n = geometry.slot_count as usize;
        Self {
            shared: Arc::new(Shared {
                seg,
                geometry,
                tail: AtomicU64::new(0),
                release: Mutex::new(ReleaseState {
                    tail: 0,
                    released: vec![false; n],
                }),
            }),
            head_seen: 0,
            read_pos: 0,
            eos: false,
            poisoned: None,
            wake_batch: 1,
        }
    }

    /// When the ring runs empty, sleep (without spinning first) until the
    /// producer has committed `slots` more, or the ring is full, or the
    /// stream ends, or 10 ms have passed: one wake-up per batch instead of
    /// one per slot, for a consumer that needs throughput, not latency.
    /// Capped at the slot count; 1 (the default) wakes for every slot.
    pub fn set_wake_batch(&mut self, slots: u32) {
        self.wake_batch = u64::from(slots.clamp(1, self.shared.geometry.slot_count));
    }

    /// The segment.
    pub fn segment(&self) -> &S {
        &self.shared.seg
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.shared.geometry.slot_size as usize
    }

    /// Slots handed out so far.
    pub fn consumed(&self) -> u64 {
        self.read_pos
    }

    /// Checks a head read from the segment against what we know.
    fn check_head(head: u64, seen: u64, tail: u64, n: u64) -> Result<(), Corruption> {
        if head < seen {
            Err(Corruption::HeadWentBack { seen, now: head })
        } else if head - tail > n {
            Err(Corruption::HeadTooFarAhead { head, tail })
        } else {
            Ok(())
        }
    }

    /// Waits for the next committed slot and leases it. After the slot that
    /// carries `FLAG_EOS`, returns [`Error::Finished`].
    pub fn next(&mut self, wait: &Wait<'_>) -> Result<Lease<S>, Error> {
        // With a wait, `lease` sleeps until a slot or an error.
        self.lease(Some(wait), 1)?.ok_or(Error::Timeout)
    }

    /// The next committed slot if there is one now, without sleeping or
    /// arming the doorbell. After the slot that carries `FLAG_EOS`, returns
    /// [`Error::Finished`].
    pub fn try_next(&mut self) -> Result<Option<Lease<S>>, Error> {
        self.lease(None, 1)
    }

    /// Like [`next`](Self::next), but the lease also takes up to
    /// `max_slots - 1` further slots that are committed already and whose
    /// bytes continue the first's in memory: the run stops before the ring
    /// wraps, after a slot that is not full or that carries flags, and
    /// before a slot that carries a CRC. A consumer that moves bytes in
    /// bulk then pays its per-lease costs (a reference count, a release, an
    /// I/O vector entry) per run instead of per slot.
    pub fn next_run(&mut self, wait: &Wait<'_>, max_slots: u32) -> Result<Lease<S>, Error> {
        self.lease(Some(wait), max_slots)?.ok_or(Error::Timeout)
    }

    /// [`try_next`](Self::try_next), taking a run as
    /// [`next_run`](Self::next_run) does.
    pub fn try_next_run(&mut self, max_slots: u32) -> Result<Option<Lease<S>>, Error> {
        self.lease(None, max_slots)
    }

    /// Reads and checks the descriptor of slot `read_pos`: `(len, flags,
    /// crc)`, each field read once into private memory, so what we check is
    /// what we use.
    fn descriptor(&self) -> Result<(u32, u32, u32), Corruption> {
        let sh = &*self.shared;
        let n = u64::from(sh.geometry.slot_count);
        let desc = &sh.seg.descriptors()[(self.read_pos % n) as usize];
        let len = desc.len.load(Ordering::Relaxed);
        let flags = desc.flags.load(Ordering::Relaxed);
        let crc = desc.crc.load(Ordering::Relaxed);
        if len > sh.geometry.slot_size {
            Err(Corruption::SlotLength {
                len,
                slot_size: sh.geometry.slot_size,
            })
        } else if flags & !KNOWN_FLAGS != 0 {
            Err(Corruption::SlotFlags(flags))
        } else {
            Ok((len, flags, crc))
        }
    }

    /// Whether slot `read_pos` is committed, reading the head again if what
    /// we saw last does not cover it. A bad head poisons the consumer (the
    /// caller already holds good slots; the next call reports it).
    fn committed_now(&mut self) -> bool {
        if self.head_seen > self.read_pos {
            return true;
        }
        let sh = &*self.shared;
        let ctl = sh.seg.control();
        // SYNC: Acquire pairs with the producer's Release head store in
        // `commit_raw`, as in `has_data`.
        let head = ctl.producer.counter.load(Ordering::Acquire);
        // SYNC: Acquire pairs with our own Release in `release`.
        let tail = sh.tail.load(Ordering::Acquire);
        let n = u64::from(sh.geometry.slot_count);
        match Self::check_head(head, self.head_seen, tail, n) {
            Ok(()) => {
                self.head_seen = head;
                head > self.read_pos
            }
            Err(c) => {
                self.poisoned = Some(c);
                false
            }
        }
    }

    fn lease(
        &mut self,
        wait: Option<&Wait<'_>>,
        max_slots: u32,
    ) -> Result<Option<Lease<S>>, Error> {
        if let Some(c) = self.poisoned {
            return Err(Error::Corrupt(c));
        }
        if self.eos {
            return Err(Error::Finished);
        }
        let sh = &*self.shared;
        let n = u64::from(sh.geometry.slot_count);
        let ctl = sh.seg.control();
        if self.head_seen <= self.read_pos {
            let read_pos = self.read_pos;
            let mut seen = self.head_seen;
            let mut has_data = || {
                // SYNC: Acquire pairs with the producer's Release head store
                // in `commit_raw`: descriptor and bytes are visible after it.
                let head = ctl.producer.counter.load(Ordering::Acquire);
                // SYNC: Acquire pairs with our own Release in `release`.
                let tail = sh.tail.load(Ordering::Acquire);
                Self::check_head(head, seen, tail, n).map_err(Error::Corrupt)?;
                seen = head;
                Ok(head > read_pos)
            };
            let nap = if self.wake_batch > 1 {
                // Ask for the batch, or for as many slots as the producer
                // can commit before the ring is full (leases we hold count
                // against it), so a full ring always wakes us.
                let room = n - (read_pos - sh.tail.load(Ordering::Acquire)).min(n);
                Nap {
                    spin: false,
                    wake_at: read_pos + self.wake_batch.min(room).max(1),
                }
            } else {
                Nap::EAGER
            };
            let res = match (has_data(), wait) {
                (Ok(true), _) => Ok(()),
                (Ok(false), None) => {
                    self.head_seen = seen;
                    return Ok(None);
                }
                (Ok(false), Some(wait)) => sleep_until(
                    &ctl.consumer,
                    &ctl.producer,
                    sh.seg.data_bell(),
                    wait,
                    nap,
                    has_data,
                ),
                (Err(e), _) => Err(e),
            };
            self.head_seen = seen;
            if let Err(Error::Corrupt(c)) = res {
                self.poisoned = Some(c);
            }
            res?;
        }
        let idx = (self.read_pos % n) as usize;
        let (len, mut flags, crc) = match self.descriptor() {
            Ok(d) => d,
            Err(c) => {
                self.poisoned = Some(c);
                return Err(Error::Corrupt(c));
            }
        };
        let size = sh.geometry.slot_size as usize;
        // SAFETY: idx < slot_count keeps the slot inside the data area.
        let ptr = unsafe { sh.seg.data().add(idx * size) };
        let shared = Arc::clone(&self.shared);
        let seq = self.read_pos;
        self.read_pos += 1;
        let (mut slots, mut total, mut last_len) = (1u32, len as usize, len as usize);
        // Extend over neighbours while the bytes stay contiguous: the last
        // slot taken is full and flagless, the next one does not wrap, is
        // committed, checks out and carries no CRC (a CRC speaks for one
        // slot). A slot that fails its check is left for the next call,
        // which reports it.
        while slots < max_slots
            && last_len == size
            && flags == 0
            && !self.read_pos.is_multiple_of(n)
            && self.committed_now()
        {
            match self.descriptor() {
                Ok((l, f, _)) if f & FLAG_CRC == 0 => {
                    slots += 1;
                    total += l as usize;
                    last_len = l as usize;
                    flags = f;
                    self.read_pos += 1;
                }
                _ => break,
            }
        }
        if flags & FLAG_EOS != 0 {
            self.eos = true;
        }
        Ok(Some(Lease {
            shared,
            seq,
            slots,
            ptr,
            len: total,
            flags,
            crc,
        }))
    }
}
