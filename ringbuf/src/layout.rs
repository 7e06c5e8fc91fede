//! The segment layout shared with C (`shim-c/include/shmring.h`).
//!
//! ```text
//! offset 0      SegmentHeader   (128 bytes: magic, version, geometry, direction)
//! offset 128    Control         (producer line: head, waiting, closed, wake_at)   128 bytes
//!               (consumer line: tail, waiting, closed, wake_at)                    128 bytes
//! offset 4096   SlotDesc[slot_count]  (16 bytes each: len, flags, crc)
//! data_offset   slot_count * slot_size bytes of slots, page aligned
//! ```
//!
//! Everything is an offset from the start of the segment, never an address.
//! Counters only grow; a slot's index is `counter % slot_count`.

use crate::sync::{AtomicU32, AtomicU64};

/// `"SHMRING\0"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMRING\0");
/// Layout version; bumped on any incompatible change.
pub const VERSION: u32 = 1;
/// Granularity of the slot size and of the data area's alignment.
pub const PAGE: usize = 4096;
/// Offset of [`Control`] in the segment.
pub const CONTROL_OFFSET: usize = 128;
/// Offset of the descriptor array in the segment.
pub const DESC_OFFSET: usize = PAGE;
/// Largest slot count a segment may declare.
pub const MAX_SLOT_COUNT: u32 = 1 << 16;
/// Largest slot size a segment may declare (64 MiB).
pub const MAX_SLOT_SIZE: u32 = 64 << 20;
/// Largest payload area (`slot_count * slot_size`) a segment may declare:
/// 1 GiB. Attaching maps and faults in the whole segment, so without this a
/// peer could make a database process commit up to 4 TiB of memory.
pub const MAX_RING_BYTES: u64 = 1 << 30;

/// The slot holds the stream's last bytes (possibly none).
pub const FLAG_EOS: u32 = 1;
/// The descriptor's `crc` field holds the CRC32C of the slot's bytes.
pub const FLAG_CRC: u32 = 2;
/// Every flag this version understands; anything else is corruption.
pub const KNOWN_FLAGS: u32 = FLAG_EOS | FLAG_CRC;

/// Which way the bytes flow, as seen from the mover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Direction {
    /// A backup: the client produces, the mover consumes.
    ToMover = 1,
    /// A restore: the mover produces, the client consumes.
    FromMover = 2,
}

impl Direction {
    pub(crate) fn from_raw(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::ToMover),
            2 => Some(Self::FromMover),
            _ => None,
        }
    }
}

/// The first 128 bytes of a segment. Written once by the creator before the
/// segment is shared, and only read (once, into private memory) after.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`VERSION`].
    pub version: u32,
    /// [`Direction`] as its `u32` value.
    pub direction: u32,
    /// Number of slots, a power of two.
    pub slot_count: u32,
    /// Bytes per slot, a multiple of [`PAGE`].
    pub slot_size: u32,
    /// Offset of the descriptor array ([`DESC_OFFSET`]).
    pub desc_offset: u64,
    /// Offset of the first slot, page aligned.
    pub data_offset: u64,
    /// Size of the whole segment; equals the memfd's size.
    pub total_size: u64,
    /// Zero.
    pub reserved: [u8; 80],
}

/// One side's counter, waiting flag and closed flag, alone on a 128-byte
/// line so that the two sides never write the same cache line on the fast
/// path.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct CounterLine {
    /// Producer: `head`, slots committed. Consumer: `tail`, slots released.
    /// Only grows; written only by its own side.
    pub counter: AtomicU64,
    /// 1 while this side sleeps (or is about to) on its doorbell; the other
    /// side rings only then, and clears it.
    pub waiting: AtomicU32,
    /// Set to 1 when this side detaches; the peer then reports `PeerGone`.
    pub closed: AtomicU32,
    /// Written before `waiting`: the other side's counter value worth a
    /// wake-up. 0 (or anything at or below the counter) means the next
    /// publication; a consumer that batches asks for a few slots at once.
    /// Only ever a hint to the other side: a stale or hostile value can
    /// delay a wake-up until the sleeper's own timeout, never skip data.
    pub wake_at: AtomicU64,
}

/// The two counter lines. Lives at [`CONTROL_OFFSET`].
#[repr(C)]
#[derive(Debug)]
pub struct Control {
    /// Written by the producer: head counter, producer waiting for space.
    pub producer: CounterLine,
    /// Written by the consumer: tail counter, consumer waiting for data.
    pub consumer: CounterLine,
}

impl Control {
    /// A zeroed control block (used by heap-backed rings, loom and miri).
    pub fn new() -> Self {
        let line = || CounterLine {
            counter: AtomicU64::new(0),
            waiting: AtomicU32::new(0),
            closed: AtomicU32::new(0),
            wake_at: AtomicU64::new(0),
        };
        Self {
            producer: line(),
            consumer: line(),
        }
    }
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

/// A slot descriptor. Fields are atomics accessed with `Relaxed` ordering:
/// the `head` store (Release) and load (Acquire) order them; being atomic
/// means a hostile peer writing them concurrently is a wrong value, not a
/// data race.
#[repr(C)]
#[derive(Debug)]
pub struct SlotDesc {
    /// Bytes used in the slot, at most the slot size.
    pub len: AtomicU32,
    /// A subset of [`KNOWN_FLAGS`].
    pub flags: AtomicU32,
    /// CRC32C of the bytes when [`FLAG_CRC`] is set.
    pub crc: AtomicU32,
    /// Zero.
    pub reserved: AtomicU32,
}

impl SlotDesc {
    /// A zeroed descriptor.
    pub fn new() -> Self {
        Self {
            len: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            crc: AtomicU32::new(0),
            reserved: AtomicU32::new(0),
        }
    }
}

impl Default for SlotDesc {
    fn default() -> Self {
        Self::new()
    }
}

/// The geometry of a ring, kept in each side's private memory once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Number of slots (power of two, 2..=[`MAX_SLOT_COUNT`]).
    pub slot_count: u32,
    /// Bytes per slot (multiple of [`PAGE`], up to [`MAX_SLOT_SIZE`]).
    pub slot_size: u32,
}

/// Why a geometry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryError {
    /// Slot count not a power of two in 2..=65536.
    SlotCount(u32),
    /// Slot size not a multiple of 4096 in 4096..=64 MiB.
    SlotSize(u32),
    /// The segment's size (in bytes, computed in 64 bits) does not fit this
    /// platform's address space (a 32-bit target).
    TooLarge(u64),
    /// The slots hold more than [`MAX_RING_BYTES`] in all.
    RingTooLarge(u64),
}

impl core::fmt::Display for GeometryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::SlotCount(n) => write!(
                f,
                "slot count {n} is not a power of two between 2 and {MAX_SLOT_COUNT}"
            ),
            Self::SlotSize(n) => write!(
                f,
                "slot size {n} is not a multiple of {PAGE} between {PAGE} and {MAX_SLOT_SIZE}"
            ),
            Self::TooLarge(n) => write!(f, "a segment of {n} bytes does not fit in memory here"),
            Self::RingTooLarge(n) => write!(
                f,
                "a ring of {n} bytes of slots is over the limit of {MAX_RING_BYTES}"
            ),
        }
    }
}

impl std::error::Error for GeometryError {}

impl Geometry {
    /// Checks the bounds and returns the geometry.
    pub fn new(slot_count: u32, slot_size: u32) -> Result<Self, GeometryError> {
        if !(2..=MAX_SLOT_COUNT).contains(&slot_count) || !slot_count.is_power_of_two() {
            return Err(GeometryError::SlotCount(slot_count));
        }
        if slot_size == 0 || slot_size > MAX_SLOT_SIZE || !(slot_size as usize).is_multiple_of(PAGE)
        {
            return Err(GeometryError::SlotSize(slot_size));
        }
        // The sizes below are computed in usize: on a 32-bit target the
        // largest geometries would wrap, and a wrapped size would pass the
        // checks against the memfd's size.
        let slots = u64::from(slot_count) * u64::from(slot_size);
        if slots > MAX_RING_BYTES {
            return Err(GeometryError::RingTooLarge(slots));
        }
        let desc = u64::from(slot_count) * core::mem::size_of::<SlotDesc>() as u64;
        let total = (DESC_OFFSET as u64 + desc).div_ceil(PAGE as u64) * PAGE as u64 + slots;
        if total > isize::MAX as u64 {
            return Err(GeometryError::TooLarge(total));
        }
        Ok(Self {
            slot_count,
            slot_size,
        })
    }

    /// Offset of the first slot.
    pub fn data_offset(&self) -> usize {
        let desc_end = DESC_OFFSET + self.slot_count as usize * core::mem::size_of::<SlotDesc>();
        desc_end.div_ceil(PAGE) * PAGE
    }

    /// Total segment size in bytes.
    pub fn total_size(&self) -> usize {
        self.data_offset() + self.slot_count as usize * self.slot_size as usize
    }

    /// Bytes of payload the ring holds when full.
    pub fn capacity_bytes(&self) -> usize {
        self.slot_count as usize * self.slot_size as usize
    }

    /// The header that describes this geometry.
    pub fn header(&self, direction: Direction) -> SegmentHeader {
        SegmentHeader {
            magic: MAGIC,
            version: VERSION,
            direction: direction as u32,
            slot_count: self.slot_count,
            slot_size: self.slot_size,
            desc_offset: DESC_OFFSET as u64,
            data_offset: self.data_offset() as u64,
            total_size: self.total_size() as u64,
            reserved: [0; 80],
        }
    }
}

// Compile-time layout checks; `tests/` checks the C header against the same
// numbers. Loom's atomics have a different size, so only for real builds.
#[cfg(not(loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<SegmentHeader>() == 128);
    assert!(offset_of!(SegmentHeader, magic) == 0);
    assert!(offset_of!(SegmentHeader, version) == 8);
    assert!(offset_of!(SegmentHeader, direction) == 12);
    assert!(offset_of!(SegmentHeader, slot_count) == 16);
    assert!(offset_of!(SegmentHeader, slot_size) == 20);
    assert!(offset_of!(SegmentHeader, desc_offset) == 24);
    assert!(offset_of!(SegmentHeader, data_offset) == 32);
    assert!(offset_of!(SegmentHeader, total_size) == 40);
    assert!(size_of::<CounterLine>() == 128);
    assert!(align_of::<CounterLine>() == 128);
    assert!(offset_of!(CounterLine, counter) == 0);
    assert!(offset_of!(CounterLine, waiting) == 8);
    assert!(offset_of!(CounterLine, closed) == 12);
    assert!(offset_of!(CounterLine, wake_at) == 16);
    assert!(size_of::<Control>() == 256);
    assert!(offset_of!(Control, consumer) == 128);
    assert!(CONTROL_OFFSET + size_of::<Control>() <= DESC_OFFSET);
    assert!(size_of::<SlotDesc>() == 16);
    assert!(offset_of!(SlotDesc, len) == 0);
    assert!(offset_of!(SlotDesc, flags) == 4);
    assert!(offset_of!(SlotDesc, crc) == 8);
    // Atomics must be plain integers in memory for C to share them.
    assert!(size_of::<AtomicU64>() == 8 && align_of::<AtomicU64>() == 8);
    assert!(size_of::<AtomicU32>() == 4 && align_of::<AtomicU32>() == 4);
};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn geometry_rejects_counts_that_are_not_powers_of_two() {
        assert_eq!(Geometry::new(3, 4096), Err(GeometryError::SlotCount(3)));
        assert_eq!(Geometry::new(1, 4096), Err(GeometryError::SlotCount(1)));
        assert_eq!(
            Geometry::new(1 << 17, 4096),
            Err(GeometryError::SlotCount(1 << 17))
        );
    }

    #[test]
    fn geometry_rejects_slot_sizes_off_the_page_grid() {
        assert_eq!(Geometry::new(4, 100), Err(GeometryError::SlotSize(100)));
        assert_eq!(Geometry::new(4, 0), Err(GeometryError::SlotSize(0)));
        assert_eq!(
            Geometry::new(4, MAX_SLOT_SIZE + PAGE as u32),
            Err(GeometryError::SlotSize(MAX_SLOT_SIZE + PAGE as u32))
        );
    }

    #[test]
    fn geometry_rejects_rings_over_a_gibibyte() {
        assert!(Geometry::new(16, MAX_SLOT_SIZE).is_ok());
        assert_eq!(
            Geometry::new(32, MAX_SLOT_SIZE),
            Err(GeometryError::RingTooLarge(2 << 30))
        );
        assert_eq!(
            Geometry::new(MAX_SLOT_COUNT, MAX_SLOT_SIZE),
            Err(GeometryError::RingTooLarge(4 << 40))
        );
    }

    #[test]
    fn data_area_starts_on_a_page_after_the_descriptors() {
        let sut = Geometry::new(256, 8192).unwrap();
        assert_eq!(sut.data_offset(), 8192); // 4096 + 256*16 = 8192
        let sut = Geometry::new(512, 8192).unwrap();
        assert_eq!(sut.data_offset(), 12288); // 4096 + 8192 -> 12288
        assert_eq!(sut.total_size(), 12288 + 512 * 8192);
    }
}
