//! A lock-free single-producer/single-consumer ring of fixed-size slots in a
//! shared-memory segment, for moving backup blocks between a database
//! process and the shmover daemon with one copy.
//!
//! - [`ShmSegment`]: a sealed, anonymous `memfd` plus two eventfd doorbells.
//!   The mover creates it and passes the three descriptors over its control
//!   socket; the client attaches to them. Nothing is named in `/dev/shm`.
//! - [`Producer`]: `reserve` a slot, fill it in place, `commit(len, flags)`;
//!   `finish` writes the end-of-stream marker.
//! - [`Consumer`]: `next` leases committed slots in order; leases may be
//!   dropped on any thread in any order, and the tail advances over released
//!   slots in order.
//! - Everything the peer writes is checked: a bad counter or descriptor is
//!   [`Error::Corrupt`], never an out-of-bounds access or a panic.
//!
//! The same protocol runs on a [`HeapSegment`] for tests, miri and loom:
//!
//! ```
//! use shmover_ring::{Consumer, Geometry, HeapSegment, Producer, Wait, FLAG_EOS};
//! use std::sync::Arc;
//! # fn main() -> Result<(), shmover_ring::Error> {
//! let seg = Arc::new(HeapSegment::new(Geometry::new(4, 4096).unwrap()));
//! let mut tx = Producer::new(Arc::clone(&seg));
//! let mut rx = Consumer::new(seg);
//!
//! let mut slot = tx.reserve(&Wait::forever())?;
//! slot.as_mut_slice()[..5].copy_from_slice(b"hello");
//! slot.commit(5, 0, 0)?;
//! tx.finish(&Wait::forever())?;
//!
//! let block = rx.next(&Wait::forever())?;
//! assert_eq!(&*block, b"hello");
//! drop(block); // releases the slot
//! assert!(rx.next(&Wait::forever())?.is_end());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod doorbell;
#[cfg(not(loom))]
pub mod ffi;
mod layout;
#[cfg(not(loom))]
mod peer;
mod ring;
mod segment;
mod sync;

#[cfg(all(test, loom))]
mod tests;

pub use doorbell::{eventfd_nowait_works, fd_hung_up, guard_writes, Bell, EventFd, LocalBell};
pub use layout::{
    Control, CounterLine, Direction, Geometry, GeometryError, SegmentHeader, SlotDesc,
    CONTROL_OFFSET, DESC_OFFSET, FLAG_CRC, FLAG_EOS, KNOWN_FLAGS, MAGIC, MAX_RING_BYTES,
    MAX_SLOT_COUNT, MAX_SLOT_SIZE, PAGE, VERSION,
};
#[cfg(not(loom))]
pub use peer::peer_groups;
pub use ring::{Consumer, Corruption, Error, Lease, Producer, Wait, WriteRun, WriteSlot};
#[cfg(not(loom))]
pub use segment::ShmSegment;
pub use segment::{AttachError, HeapSegment, Segment};

// SAFETY: an `Arc` of a segment hands out the same memory for as long as any
// clone lives, which is what the trait requires.
unsafe impl<S: Segment> Segment for std::sync::Arc<S> {
    type Bell = S::Bell;
    fn control(&self) -> &Control {
        (**self).control()
    }
    fn descriptors(&self) -> &[SlotDesc] {
        (**self).descriptors()
    }
    fn data(&self) -> std::ptr::NonNull<u8> {
        (**self).data()
    }
    fn geometry(&self) -> Geometry {
        (**self).geometry()
    }
    fn data_bell(&self) -> &S::Bell {
        (**self).data_bell()
    }
    fn space_bell(&self) -> &S::Bell {
        (**self).space_bell()
    }
}
