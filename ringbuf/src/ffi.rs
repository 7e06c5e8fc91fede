//! C ABI for the producing side of a ring, declared in
//! `shim-c/include/shmring.h`.
//!
//! Conventions: every function returns a `shmring_status_t` (0 is success,
//! failures start at 1); no panic crosses this boundary (each body runs
//! under `catch_unwind` and a panic becomes `SHMRING_ERR_INTERNAL`); the
//! library owns and frees the handle, the caller fills slots in place. A
//! failing call leaves a sentence for `shmring_last_error()` on the calling
//! thread.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CString};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::{fd_hung_up, AttachError, Direction, Error, Producer, ShmSegment, Wait};

/// Success.
pub const SHMRING_OK: c_int = 0;
/// A null pointer, negative descriptor, or bad length or flags.
pub const SHMRING_ERR_INVALID: c_int = 1;
/// The deadline passed.
pub const SHMRING_ERR_TIMEOUT: c_int = 2;
/// The consumer detached or its control socket hung up.
pub const SHMRING_ERR_PEER_GONE: c_int = 3;
/// The consumer wrote impossible counters; the stream is unusable.
pub const SHMRING_ERR_CORRUPT: c_int = 4;
/// The stream already ended.
pub const SHMRING_ERR_FINISHED: c_int = 5;
/// Calls out of order (commit without reserve).
pub const SHMRING_ERR_ORDER: c_int = 6;
/// The received segment failed its checks (seals, magic, version, size).
pub const SHMRING_ERR_SEGMENT: c_int = 7;
/// A system call failed.
pub const SHMRING_ERR_IO: c_int = 8;
/// A bug inside the library (a caught panic).
pub const SHMRING_ERR_INTERNAL: c_int = 9;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: impl ToString) {
    let msg = CString::new(msg.to_string().replace('\0', " ")).unwrap_or_default();
    // try_with and try_borrow_mut: called from a thread-local destructor
    // or during thread teardown the slot may be gone, and this runs
    // outside `catch_unwind` in `guard`'s error arm; never panic.
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut slot) = e.try_borrow_mut() {
            *slot = msg;
        }
    });
}

fn fail(code: c_int, msg: impl ToString) -> c_int {
    set_last_error(msg);
    code
}

fn status_of(e: Error) -> c_int {
    let code = match e {
        Error::Timeout => SHMRING_ERR_TIMEOUT,
        Error::PeerGone => SHMRING_ERR_PEER_GONE,
        Error::Corrupt(_) => SHMRING_ERR_CORRUPT,
        Error::Finished => SHMRING_ERR_FINISHED,
        Error::OutOfOrder => SHMRING_ERR_ORDER,
        Error::TooLong { .. } | Error::BadFlags(_) => SHMRING_ERR_INVALID,
        Error::Io(_) => SHMRING_ERR_IO,
    };
    fail(code, e)
}

/// Runs `f`, turning a panic into `SHMRING_ERR_INTERNAL`.
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(_) => fail(
            SHMRING_ERR_INTERNAL,
            "internal error in the shmring library",
        ),
    }
}

/// Runs a trivial exported function, turning a panic (there should be
/// none) into `default` so that none ever unwinds into C.
fn caught<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

/// The producer handle behind `shmring_producer_t *`.
#[derive(Debug)]
pub struct ShmringProducer {
    inner: Producer<ShmSegment>,
    /// A descriptor the caller keeps open (its control socket): when it
    /// hangs up, the consumer is gone. -1 for none.
    liveness_fd: c_int,
}

impl ShmringProducer {
    fn wait_for(&self, timeout_ms: c_int) -> (Option<Duration>, c_int) {
        let t = (timeout_ms >= 0).then(|| Duration::from_millis(timeout_ms as u64));
        (t, self.liveness_fd)
    }
}

fn with_wait<R>(
    timeout: Option<Duration>,
    liveness_fd: c_int,
    f: impl FnOnce(&Wait<'_>) -> R,
) -> R {
    let alive = move || {
        // SAFETY: the caller of `shmring_producer_attach` promised to keep
        // `liveness_fd` open for the life of the handle.
        let fd = unsafe { BorrowedFd::borrow_raw(liveness_fd) };
        !fd_hung_up(fd)
    };
    let mut wait = match timeout {
        Some(t) => Wait::timeout(t),
        None => Wait::forever(),
    };
    if liveness_fd >= 0 {
        wait = wait.alive(&alive);
    }
    f(&wait)
}

/// Attaches a producer to a received ring segment.
///
/// # Arguments
///
/// - `mem_fd`, `data_bell_fd`, `space_bell_fd`: the three descriptors the
///   mover sent, in that order. The library takes ownership of all three,
///   on success and on failure.
/// - `liveness_fd`: the control socket (kept open by the caller for the
///   life of the handle) whose hang-up means the mover is gone, or -1.
/// - `out`: receives the handle on success.
///
/// # Safety
///
/// `out` must be valid for a write of one pointer. The three descriptors
/// must be open and not used by the caller afterwards.
#[no_mangle]
pub unsafe extern "C" fn shmring_producer_attach(
    mem_fd: c_int,
    data_bell_fd: c_int,
    space_bell_fd: c_int,
    liveness_fd: c_int,
    out: *mut *mut ShmringProducer,
) -> c_int {
    guard(|| {
        let fds = [mem_fd, data_bell_fd, space_bell_fd];
        if fds.iter().any(|&fd| fd < 0) || out.is_null() {
            for fd in fds.into_iter().filter(|&fd| fd >= 0) {
                // SAFETY: the caller transferred ownership of these fds.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            return fail(SHMRING_ERR_INVALID, "shmring_producer_attach: bad argument");
        }
        // SAFETY: the caller transferred ownership of the three descriptors.
        let [m, d, s] = fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: the descriptors came from the mover; the ring treats the
        // shared memory as hostile (see `ShmSegment::attach`).
        let seg = match unsafe { ShmSegment::attach(m, d, s, Direction::ToMover) } {
            Ok(seg) => seg,
            Err(AttachError::Io(e)) => return fail(SHMRING_ERR_IO, e),
            Err(e) => return fail(SHMRING_ERR_SEGMENT, e),
        };
        let handle = Box::new(ShmringProducer {
            inner: Producer::new(seg),
            liveness_fd,
        });
        // SAFETY: `out` is valid for a write, checked non-null above.
        unsafe { *out = Box::into_raw(handle) };
        SHMRING_OK
    })
}

/// Waits for a free slot and returns its address and size.
///
/// # Arguments
///
/// - `timeout_ms`: how long to wait for room; negative waits forever (the
///   liveness descriptor still ends the wait if the mover goes away).
/// - `buf`, `cap`: receive the slot's start and its size in bytes.
///
/// # Safety
///
/// `p` must be a live handle used by one thread at a time; `buf` and `cap`
/// must be valid for writes. The slot may be written until the next call on
/// the handle.
#[no_mangle]
pub unsafe extern "C" fn shmring_producer_reserve(
    p: *mut ShmringProducer,
    timeout_ms: c_int,
    buf: *mut *mut c_void,
    cap: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller passes a live handle, used by one thread.
        let Some(p) = (unsafe { p.as_mut() }) else {
            return fail(SHMRING_ERR_INVALID, "shmring_producer_reserve: null handle");
        };
        if buf.is_null() || cap.is_null() {
            return fail(SHMRING_ERR_INVALID, "shmring_producer_reserve: null output");
        }
        let (t, fd) = p.wait_for(timeout_ms);
        match with_wait(t, fd, |w| p.inner.reserve_raw(w)) {
            Ok((ptr, size)) => {
                // SAFETY: both outputs checked non-null; the caller made them
                // valid for writes.
                unsafe {
                    *buf = ptr.as_ptr().cast();
                    *cap = size;
                }
                SHMRING_OK
            }
            Err(e) => status_of(e),
        }
    })
}

/// Publishes the reserved slot.
///
/// # Arguments
///
/// - `len`: bytes written, at most the slot size.
/// - `flags`: `SHMRING_FLAG_EOS` for the stream's last slot,
///   `SHMRING_FLAG_CRC` when `crc` holds the CRC32C of the bytes.
///
/// # Safety
///
/// `p` must be a live handle used by one thread at a time.
#[no_mangle]
pub unsafe extern "C" fn shmring_producer_commit(
    p: *mut ShmringProducer,
    len: usize,
    flags: u32,
    crc: u32,
) -> c_int {
    guard(|| {
        // SAFETY: the caller passes a live handle, used by one thread.
        let Some(p) = (unsafe { p.as_mut() }) else {
            return fail(SHMRING_ERR_INVALID, "shmring_producer_commit: null handle");
        };
        match p.inner.commit_raw(len, flags, crc) {
            Ok(()) => SHMRING_OK,
            Err(e) => status_of(e),
        }
    })
}

/// Writes the end-of-stream marker (an empty slot with
/// `SHMRING_FLAG_EOS`), waiting up to `timeout_ms` for room.
///
/// # Safety
///
/// `p` must be a live handle used by one thread at a time.
#[no_mangle]
pub unsafe extern "C" fn shmring_producer_finish(
    p: *mut ShmringProducer,
    timeout_ms: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: the caller passes a live handle, used by one thread.
        let Some(p) = (unsafe { p.as_mut() }) else {
            return fail(SHMRING_ERR_INVALID, "shmring_producer_finish: null handle");
        };
        let (t, fd) = p.wait_for(timeout_ms);
        match with_wait(t, fd, |w| p.inner.finish(w)) {
            Ok(()) => SHMRING_OK,
            Err(e) => status_of(e),
        }
    })
}

/// The slot size of the ring, or 0 for a null handle.
///
/// # Safety
///
/// `p` must be a live handle or null.
#[no_mangle]
pub unsafe extern "C" fn shmring_producer_slot_size(p: *const ShmringProducer) -> usize {
    caught(0, || {
        // SAFETY: the caller passes a live handle or null.
        unsafe { p.as_ref() }.map_or(0, |p| p.inner.slot_size())
    })
}

/// Detaches and frees the handle: unmaps the segment, closes its
/// descriptors, and tells the consumer the producer is gone (a stream
/// without its end-of-stream marker is then an aborted one). Null is a
/// no-op.
///
/// # Safety
///
/// `p` must be a handle from `shmring_producer_attach` not yet detached,
/// or null.
#[no_mangle]
pub unsafe extern "C" fn shmring_producer_detach(p: *mut ShmringProducer) {
    let _ = guard(|| {
        if !p.is_null() {
            // SAFETY: the handle came from `Box::into_raw` in attach and is
            // detached once.
            drop(unsafe { Box::from_raw(p) });
        }
        SHMRING_OK
    });
}

/// A static English name for a status code.
#[no_mangle]
pub extern "C" fn shmring_status_str(status: c_int) -> *const c_char {
    caught(c"internal error".as_ptr(), || {
        let s: &'static std::ffi::CStr = match status {
            SHMRING_OK => c"ok",
            SHMRING_ERR_INVALID => c"invalid argument",
            SHMRING_ERR_TIMEOUT => c"timed out",
            SHMRING_ERR_PEER_GONE => c"peer gone",
            SHMRING_ERR_CORRUPT => c"ring corrupted by peer",
            SHMRING_ERR_FINISHED => c"stream already finished",
            SHMRING_ERR_ORDER => c"calls out of order",
            SHMRING_ERR_SEGMENT => c"bad segment",
            SHMRING_ERR_IO => c"system call failed",
            SHMRING_ERR_INTERNAL => c"internal error",
            _ => c"unknown status",
        };
        s.as_ptr()
    })
}

/// The sentence describing the calling thread's last failure. Valid until
/// the next failing call on this thread; never null.
#[no_mangle]
pub extern "C" fn shmring_last_error() -> *const c_char {
    caught(c"internal error in the shmring library".as_ptr(), || {
        LAST_ERROR.with(|e| e.borrow().as_ptr())
    })
}
