//! Doorbells: how a side that went to sleep is woken.
//!
//! A shared-memory ring uses two eventfds, one per direction. A heap ring
//! (tests, loom) uses a process-local bell with the same contract: a ring
//! that happens while nobody waits is remembered, so the next wait returns
//! at once (the caller re-checks the ring either way).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Set once `preadv2(RWF_NOWAIT)` on an eventfd failed other than with
/// EAGAIN (a kernel before 5.12, or a seccomp filter). A process-wide flag,
/// not part of the ring protocol, so a plain std atomic.
#[allow(clippy::disallowed_types)]
static NOWAIT_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What both kinds of bell do.
pub trait Bell: Send + Sync {
    /// Wakes the other side (or lets its next wait return at once).
    fn ring(&self);
    /// Sleeps until rung or until `timeout` passes (`None`: no bound).
    /// A spurious return is allowed; callers always re-check.
    fn wait(&self, timeout: Option<Duration>) -> io::Result<()>;
}

/// A Linux eventfd, non-blocking, used as a doorbell between processes.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new eventfd with count 0, close-on-exec and non-blocking.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the flags are valid constants.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd })
    }

    /// Adopts a descriptor received from the peer: it must be an eventfd
    /// (a pipe or socket could raise SIGPIPE in our process, a FUSE file
    /// could block), and it is made non-blocking.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        if link.as_os_str() != "anon_inode:[eventfd]" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a doorbell must be an eventfd, not {}", link.display()),
            ));
        }
        let bell = Self { fd };
        bell.nonblocking()?;
        Ok(bell)
    }

    /// Makes sure the descriptor is non-blocking. `O_NONBLOCK` belongs to
    /// the open file, which the peer shares (the descriptor crossed the
    /// socket) and may clear; a blocking eventfd would let it park us in
    /// `write` (a counter at its maximum) or `read` (a counter it drained).
    /// Checked before every write (and before a read on kernels without
    /// `RWF_NOWAIT` for eventfds), so clearing it once does not stick.
    fn nonblocking(&self) -> io::Result<()> {
        // SAFETY: F_GETFL on a descriptor we own; no pointers.
        let flags = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK != 0 {
            return Ok(());
        }
        // SAFETY: F_SETFL with an int flag word on a descriptor we own.
        if unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Writes 1 to the counter. Errors are ignored: EAGAIN means the counter
    /// is already non-zero (the waiter will wake), and a broken descriptor
    /// only means the peer will time out on its own deadline.
    ///
    /// A write blocks only on a counter at its maximum, which only the peer
    /// can set; such a counter already wakes the waiter, so when `poll`
    /// says the eventfd is not writable we skip the write. (A peer that sets
    /// the maximum *and* clears `O_NONBLOCK` between our checks and the
    /// write can still park it: eventfd writes ignore `RWF_NOWAIT`.)
    pub fn notify(&self) {
        if !self.writable() || self.nonblocking().is_err() {
            return;
        }
        let one: u64 = 1;
        // SAFETY: the buffer is a live u64 of exactly the 8 bytes written.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast::<libc::c_void>(),
                8,
            )
        };
    }

    /// Whether a write of 1 would go through now (the counter is below its
    /// maximum).
    fn writable(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        // A failed poll proves nothing: write (it is non-blocking).
        n < 0 || pfd.revents & libc::POLLOUT != 0
    }

    /// Resets the counter without ever blocking: `preadv2(RWF_NOWAIT)`
    /// ignores the shared `O_NONBLOCK` flag (Linux 5.12 and later). Where
    /// it fails for any reason but EAGAIN (older kernels refuse the flag; a
    /// seccomp filter may refuse the call), it is not tried again, and the
    /// counter is read after `O_NONBLOCK` is checked, as before: a counter
    /// left unread would make every wait return at once.
    fn drain(&self) -> io::Result<()> {
        let mut buf: u64 = 0;
        if !NOWAIT_REFUSED.load(std::sync::atomic::Ordering::Relaxed) {
            let iov = libc::iovec {
                iov_base: (&mut buf as *mut u64).cast::<libc::c_void>(),
                iov_len: 8,
            };
            // SAFETY: one iovec over a live u64 of 8 bytes; offset -1 reads
            // at the file position (an eventfd refuses explicit offsets).
            let n = unsafe { libc::preadv2(self.fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
            if n >= 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
                return Ok(()); // read, or a peer drained it first
            }
            NOWAIT_REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.nonblocking()?;
        // SAFETY: reads at most 8 bytes into a live u64.
        let _ = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut buf as *mut u64).cast::<libc::c_void>(),
                8,
            )
        };
        Ok(())
    }

    /// Waits for the counter to become non-zero, then resets it.
    pub fn wait_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let ms = match timeout {
            None => -1,
            // Rounded up: a wait shorter than a millisecond still sleeps.
            Some(d) => d.as_micros().div_ceil(1000).clamp(0, i32::MAX as u128) as i32,
        };
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        if n > 0 {
            if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                return Err(io::Error::other("doorbell descriptor failed"));
            }
            self.drain()?;
        }
        Ok(())
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Bell for EventFd {
    fn ring(&self) {
        self.notify();
    }
    fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.wait_timeout(timeout)
    }
}

/// A bell for two threads of one process (heap rings, loom). Its lock is a
/// sleeping primitive, not part of the protocol loom checks, so it uses std's
/// types directly outside loom.
#[derive(Debug, Default)]
#[allow(clippy::disallowed_types)]
pub struct LocalBell {
    #[cfg(loom)]
    notify: loom::sync::Notify,
    #[cfg(not(loom))]
    rung: std::sync::Mutex<bool>,
    #[cfg(not(loom))]
    cv: std::sync::Condvar,
}

#[cfg(loom)]
impl Bell for LocalBell {
    fn ring(&self) {
        self.notify.notify();
    }
    fn wait(&self, _timeout: Option<Duration>) -> io::Result<()> {
        self.notify.wait();
        Ok(())
    }
}

#[cfg(not(loom))]
impl Bell for LocalBell {
    fn ring(&self) {
        let mut rung = self.rung.lock().unwrap_or_else(|p| p.into_inner());
        *rung = true;
        self.cv.notify_one();
    }
    fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut rung = self.rung.lock().unwrap_or_else(|p| p.into_inner());
        if !*rung {
            rung = match timeout {
                None => self.cv.wait(rung).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    self.cv
                        .wait_timeout(rung, d)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        *rung = false;
        Ok(())
    }
}

/// Whether the peer at the other end of a socket (or pipe) has gone away:
/// hang-up or error pending, without consuming any data.
pub fn fd_hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLNVAL) != 0
}
