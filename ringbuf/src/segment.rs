//! Backing memory for a ring: a sealed memfd shared between processes, or a
//! heap allocation for tests, loom and miri. The protocol in [`crate::ring`]
//! is written once against [`Segment`].

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::doorbell::{Bell, EventFd, LocalBell};
use crate::layout::{
    Control, Direction, Geometry, GeometryError, SegmentHeader, SlotDesc, CONTROL_OFFSET,
    DESC_OFFSET, MAGIC, PAGE, VERSION,
};

/// Memory a ring runs on.
///
/// # Safety
///
/// Implementors promise that for as long as `self` lives:
/// - `control()` and `descriptors()` refer to memory that stays mapped;
/// - `descriptors().len() == geometry().slot_count`;
/// - `data()` points to `slot_count * slot_size` bytes that stay mapped,
///   readable and writable, and that no Rust reference covers (only raw
///   pointers, handed out one slot at a time by the ring);
/// - `geometry()` always returns the same value, from private memory.
pub unsafe trait Segment: Send + Sync {
    /// The doorbell type.
    type Bell: Bell;
    /// The two counter lines.
    fn control(&self) -> &Control;
    /// One descriptor per slot.
    fn descriptors(&self) -> &[SlotDesc];
    /// Start of the slot area.
    fn data(&self) -> NonNull<u8>;
    /// The checked geometry, from private memory.
    fn geometry(&self) -> Geometry;
    /// Rung by the producer when it commits; the consumer sleeps on it.
    fn data_bell(&self) -> &Self::Bell;
    /// Rung by the consumer when it releases; the producer sleeps on it.
    fn space_bell(&self) -> &Self::Bell;
}

/// Why a received segment was refused.
#[derive(Debug)]
pub enum AttachError {
    /// A system call on the descriptors failed.
    Io(io::Error),
    /// The memfd is not sealed against shrinking and growing, so the peer
    /// could truncate it under us (SIGBUS).
    NotSealed {
        /// The seals found.
        seals: i32,
    },
    /// The header's magic number is wrong: not a shmover ring.
    BadMagic(u64),
    /// A layout version this build does not speak.
    BadVersion(u32),
    /// Direction field unknown or not the one the caller expected.
    BadDirection(u32),
    /// Slot count or size out of bounds.
    BadGeometry(GeometryError),
    /// Offsets or sizes in the header disagree with the geometry or the
    /// memfd's real size.
    SizeMismatch {
        /// What the header's geometry implies.
        expected: u64,
        /// The memfd's size (or a header field that disagreed).
        actual: u64,
    },
}

impl core::fmt::Display for AttachError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "segment: {e}"),
            Self::NotSealed { seals } => write!(
                f,
                "segment is not sealed against shrink and grow (seals {seals:#x})"
            ),
            Self::BadMagic(m) => write!(f, "segment magic {m:#018x} is not a shmover ring"),
            Self::BadVersion(v) => write!(f, "segment layout version {v} is not supported"),
            Self::BadDirection(d) => write!(f, "segment direction {d} is not the expected one"),
            Self::BadGeometry(g) => write!(f, "segment geometry: {g}"),
            Self::SizeMismatch { expected, actual } => write!(
                f,
                "segment size mismatch: layout needs {expected} bytes, found {actual}"
            ),
        }
    }
}

impl std::error::Error for AttachError {}

impl From<io::Error> for AttachError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A ring segment in a sealed, anonymous memfd, with its two eventfds.
/// (Not under loom: loom's atomics cannot live in shared memory.)
///
/// The mover creates it ([`ShmSegment::create`]) and passes
/// [`ShmSegment::fds`] to the client with `SCM_RIGHTS`; the client maps it
/// with [`ShmSegment::attach`]. Nothing is created in `/dev/shm`.
#[cfg(not(loom))]
#[derive(Debug)]
pub struct ShmSegment {
    map: memmap2::MmapRaw,
    memfd: File,
    data_bell: EventFd,
    space_bell: EventFd,
    geometry: Geometry,
    direction: Direction,
}

#[cfg(not(loom))]
const SEALS_REQUIRED: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

#[cfg(not(loom))]
impl ShmSegment {
    /// Creates, sizes, seals and maps a new segment and writes its header.
    pub fn create(geometry: Geometry, direction: Direction) -> io::Result<Self> {
        let name = c"shmover-ring";
        // SAFETY: `name` is a valid NUL-terminated string; flags are constants.
        let raw = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let memfd = unsafe { File::from_raw_fd(raw) };
        memfd.set_len(geometry.total_size() as u64)?;
        // SAFETY: F_ADD_SEALS with constant flags on a descriptor we own.
        let rc = unsafe {
            libc::fcntl(
                memfd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // Populate: fault every page in now, at stream open, instead of on
        // the first lap of the data path.
        let map = memmap2::MmapOptions::new()
            .len(geometry.total_size())
            .populate()
            .map_raw(&memfd)?;
        let header = geometry.header(direction);
        // SAFETY: the mapping is at least one page long and page aligned, so
        // the header fits at offset 0 and is aligned; nobody else has the
        // descriptor yet, so nothing races with this write. The rest of the
        // memfd is zero, which is a valid `Control` and valid descriptors.
        unsafe { map.as_mut_ptr().cast::<SegmentHeader>().write(header) };
        Ok(Self {
            map,
            memfd,
            data_bell: EventFd::new()?,
            space_bell: EventFd::new()?,
            geometry,
            direction,
        })
    }

    /// Maps a segment received from the peer, checking its seals, header
    /// and size, and adopts its two doorbells.
    ///
    /// # Safety
    ///
    /// The memory stays shared with a process we do not trust. The caller
    /// asserts that the descriptors came from the peer over the control
    /// socket and accepts that the peer may rewrite any byte of the segment
    /// at any time; the ring then treats every counter and descriptor it
    /// reads as hostile, so the worst the peer can cause is a `Corrupt`
    /// error or wrong payload bytes, never a read outside the mapping. The
    /// seals checked here keep the peer from shrinking the file under the
    /// mapping.
    pub unsafe fn attach(
        memfd: OwnedFd,
        data_bell: OwnedFd,
        space_bell: OwnedFd,
        expected: Direction,
    ) -> Result<Self, AttachError> {
        let memfd = File::from(memfd);
        // SAFETY: F_GET_SEALS takes no pointer.
        let seals = unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            return Err(io::Error::last_os_error().into());
        }
        if seals & SEALS_REQUIRED != SEALS_REQUIRED {
            return Err(AttachError::NotSealed { seals });
        }
        // A hugetlbfs memfd can be sealed too, but the peer could punch out
        // its pages and exhaust the pool under us (SIGBUS on the next
        // touch): only shared memory (tmpfs) is accepted.
        // SAFETY: an all-zero statfs is a valid value of this plain struct.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `fs` is a live, writable statfs; the descriptor is ours.
        if unsafe { libc::fstatfs(memfd.as_raw_fd(), &mut fs) } < 0 {
            return Err(io::Error::last_os_error().into());
        }
        if fs.f_type != libc::TMPFS_MAGIC {
            return Err(AttachError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the segment is not shared memory (file system {:#x})",
                    fs.f_type
                ),
            )));
        }
        let size = memfd.metadata()?.len();
        if size < PAGE as u64 {
            return Err(AttachError::SizeMismatch {
                expected: PAGE as u64,
                actual: size,
            });
        }
        let len = usize::try_from(size).map_err(|_| AttachError::SizeMismatch {
            expected: 0,
            actual: size,
        })?;
        // The header first, from a one-page mapping: only a segment whose
        // header agrees with its size is mapped whole (and populated), so a
        // peer cannot make us fault in an arbitrary amount of memory.
        let head = memmap2::MmapOptions::new().len(PAGE).map_raw(&memfd)?;
        // SAFETY: the mapping is one page and page aligned, so a header read
        // at offset 0 is in bounds and aligned. The peer may be writing it; a
        // volatile copy of plain integers gives us some value for every
        // field, which we then check.
        let header = unsafe { head.as_ptr().cast::<SegmentHeader>().read_volatile() };
        drop(head);
        if header.magic != MAGIC {
            return Err(AttachError::BadMagic(header.magic));
        }
        if header.version != VERSION {
            return Err(AttachError::BadVersion(header.version));
        }
        let direction = Direction::from_raw(header.direction)
            .filter(|d| *d == expected)
            .ok_or(AttachError::BadDirection(header.direction))?;
        let geometry =
            Geometry::new(header.slot_count, header.slot_size).map_err(AttachError::BadGeometry)?;
        let checks = [
            (DESC_OFFSET as u64, header.desc_offset),
            (geometry.data_offset() as u64, header.data_offset),
            (geometry.total_size() as u64, header.total_size),
            (geometry.total_size() as u64, size),
        ];
        for (expected, actual) in checks {
            if expected != actual {
                return Err(AttachError::SizeMismatch { expected, actual });
            }
        }
        let map = memmap2::MmapOptions::new()
            .populate()
            .len(len)
            .map_raw(&memfd)?;
        Ok(Self {
            map,
            memfd,
            data_bell: EventFd::from_fd(data_bell)?,
            space_bell: EventFd::from_fd(space_bell)?,
            geometry,
            direction,
        })
    }

    /// Makes the segment of a stream that has ended ready for the next
    /// stream, in `direction`: both counter lines and every descriptor back
    /// to zero, the header written afresh, and two new doorbells (a
    /// stale wake-up count, or a stale holder of the old ones, cannot reach
    /// the next stream). The pages stay: fresh shared memory costs the
    /// kernel a zeroed page per 4 KiB, which is what reuse saves. The slot
    /// bytes of the last stream stay too, so the caller hands a recycled
    /// segment only to a peer entitled to them.
    ///
    /// Only for a segment the old peer has detached from: were it still
    /// writing, it could corrupt the next stream (which the ring would
    /// report, as for any hostile write).
    pub fn recycle(self, direction: Direction) -> io::Result<Self> {
        use crate::sync::{AtomicU64, Ordering};
        let ctl = self.control();
        for line in [&ctl.producer, &ctl.consumer] {
            line.counter.store(0, Ordering::Relaxed);
            line.waiting.store(0, Ordering::Relaxed);
            line.closed.store(0, Ordering::Relaxed);
            line.wake_at.store(0, Ordering::Relaxed);
        }
        for d in self.descriptors() {
            d.len.store(0, Ordering::Relaxed);
            d.flags.store(0, Ordering::Relaxed);
            d.crc.store(0, Ordering::Relaxed);
            d.reserved.store(0, Ordering::Relaxed);
        }
        // The whole header is written again from our private geometry, not
        // only the direction: the last peer could rewrite any of it (say
        // 256 x 16 KiB as 128 x 32 KiB, which `attach` would accept), and
        // the next peer must not place slots where we do not read them.
        // SAFETY: `SegmentHeader` is `repr(C)`, 128 bytes of integers with
        // no padding (the layout asserts), so every bit of it is a valid
        // u64 and the transmute to sixteen of them is exact.
        let words: [u64; 16] = unsafe {
            core::mem::transmute::<SegmentHeader, [u64; 16]>(self.geometry.header(direction))
        };
        let base = self.map.as_ptr().cast::<AtomicU64>();
        let word = |i: usize| {
            // SAFETY: the header is the first 128 bytes of a page-aligned
            // mapping at least a page long, so word `i < 16` is in bounds
            // and 8-aligned for an AtomicU64. Atomic stores keep this sound
            // even if a misbehaving peer still maps the page.
            unsafe { &*base.add(i) }
        };
        let direction_word = core::mem::offset_of!(SegmentHeader, direction) / 8;
        for (i, w) in words.iter().enumerate() {
            if i != direction_word {
                word(i).store(*w, Ordering::Relaxed);
            }
        }
        // SYNC: Release orders the zeroed counters and descriptors and the
        // rest of the header before the direction; the next peer only sees
        // the segment after the descriptors travel over the control socket,
        // a system call later.
        word(direction_word).store(words[direction_word], Ordering::Release);
        Ok(Self {
            data_bell: EventFd::new()?,
            space_bell: EventFd::new()?,
            direction,
            ..self
        })
    }

    /// The three descriptors to pass to the peer, in the order `attach`
    /// takes them: memfd, data doorbell, space doorbell.
    pub fn fds(&self) -> [BorrowedFd<'_>; 3] {
        [
            self.memfd.as_fd(),
            self.data_bell.as_fd(),
            self.space_bell.as_fd(),
        ]
    }

    /// The direction recorded in the header.
    pub fn direction(&self) -> Direction {
        self.direction
    }
}

// SAFETY: the mapping lives as long as `self`; `attach` and `create` checked
// that it is `geometry.total_size()` bytes, so the control block at 128, the
// descriptors at 4096 and the data area at `data_offset` are in bounds. The
// geometry is a private copy that never changes. The data area is only
// reached through raw pointers.
#[cfg(not(loom))]
unsafe impl Segment for ShmSegment {
    type Bell = EventFd;

    fn control(&self) -> &Control {
        // SAFETY: in bounds and 128-aligned (the mapping is page aligned).
        // `Control` is made only of atomics, so sharing it with another
        // process that writes it concurrently is sound.
        unsafe { &*self.map.as_ptr().add(CONTROL_OFFSET).cast::<Control>() }
    }

    fn descriptors(&self) -> &[SlotDesc] {
        // SAFETY: `slot_count` descriptors of 16 bytes at a page-aligned
        // offset fit before `data_offset`, which the size checks confirmed.
        // `SlotDesc` is only atomics.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(DESC_OFFSET).cast::<SlotDesc>(),
                self.geometry.slot_count as usize,
            )
        }
    }

    fn data(&self) -> NonNull<u8> {
        // SAFETY: `data_offset` is within the mapping, so the pointer is
        // non-null and in bounds.
        unsafe { NonNull::new_unchecked(self.map.as_mut_ptr().add(self.geometry.data_offset())) }
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn data_bell(&self) -> &EventFd {
        &self.data_bell
    }

    fn space_bell(&self) -> &EventFd {
        &self.space_bell
    }
}

/// A ring segment on the heap, for two threads of one process: unit tests,
/// miri and loom run the same protocol on it.
#[derive(Debug)]
pub struct HeapSegment {
    control: Box<Control>,
    descriptors: Box<[SlotDesc]>,
    data: NonNull<u8>,
    layout: std::alloc::Layout,
    geometry: Geometry,
    data_bell: LocalBell,
    space_bell: LocalBell,
}

// SAFETY: the data area is only reached through raw pointers handed out one
// slot at a time by the ring protocol, which orders every access with
// Release/Acquire on the counters; the rest is atomics and bells.
unsafe impl Send for HeapSegment {}
// SAFETY: as for `Send`.
unsafe impl Sync for HeapSegment {}

impl HeapSegment {
    /// Allocates a zeroed segment with this geometry.
    pub fn new(geometry: Geometry) -> Self {
        let layout = std::alloc::Layout::from_size_align(geometry.capacity_bytes(), PAGE)
            .expect("geometry bounds keep the size far below isize::MAX");
        // SAFETY: the layout has a non-zero size (at least 2 pages).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(data) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        Self {
            control: Box::new(Control::new()),
            descriptors: (0..geometry.slot_count).map(|_| SlotDesc::new()).collect(),
            data,
            layout,
            geometry,
            data_bell: LocalBell::default(),
            space_bell: LocalBell::default(),
        }
    }
}

impl Drop for HeapSegment {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout, freed once.
        unsafe { std::alloc::dealloc(self.data.as_ptr(), self.layout) };
    }
}

// SAFETY: every part is owned by `self`; the descriptor box has
// `slot_count` entries and the data allocation `slot_count * slot_size`
// bytes; the geometry is fixed at construction.
unsafe impl Segment for HeapSegment {
    type Bell = LocalBell;

    fn control(&self) -> &Control {
        &self.control
    }
    fn descriptors(&self) -> &[SlotDesc] {
        &self.descriptors
    }
    fn data(&self) -> NonNull<u8> {
        self.data
    }
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn data_bell(&self) -> &LocalBell {
        &self.data_bell
    }
    fn space_bell(&self) -> &LocalBell {
        &self.space_bell
    }
}
