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

/// Writes to eventfds the peer shares, guarded ([`guard_writes`]): each
/// registered for the watchdog while it is in `write`. A process-wide
/// registry outside the ring protocol, so std's types.
#[allow(clippy::disallowed_types)]
mod guard {
    use std::os::fd::RawFd;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::{Mutex, Once};
    use std::time::{Duration, Instant};

    /// How long a write may sit in the kernel before the watchdog drains
    /// its counter. An honest write never waits at all.
    const RESCUE_AFTER: Duration = Duration::from_millis(100);

    pub(super) static ON: AtomicBool = AtomicBool::new(false);
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static WATCHDOG: Once = Once::new();

    struct InWrite {
        id: u64,
        fd: RawFd,
        since: Instant,
        rescued: bool,
    }

    /// Writes now in progress. The watchdog reads an entry's descriptor
    /// only while holding this lock, and a writer removes its entry (under
    /// the lock) before its descriptor can be closed, so the descriptor is
    /// open whenever the watchdog uses it.
    static WRITES: Mutex<Vec<InWrite>> = Mutex::new(Vec::new());

    fn writes() -> std::sync::MutexGuard<'static, Vec<InWrite>> {
        WRITES.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn start() {
        WATCHDOG.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("doorbell-watchdog".into())
                .spawn(|| loop {
                    std::thread::sleep(RESCUE_AFTER / 2);
                    for w in writes().iter_mut() {
                        // Only a write that is really asleep: its counter
                        // is at the maximum. A writer that is merely slow
                        // (descheduled on a busy host) has a counter below
                        // it, and its wake-up is left alone.
                        if !w.rescued && w.since.elapsed() >= RESCUE_AFTER && !super::writable(w.fd)
                        {
                            #[cfg(test)]
                            let tried = if super::tests::refuse_nowait() {
                                super::NoWait::Refused
                            } else {
                                super::try_read_nowait(w.fd)
                            };
                            #[cfg(not(test))]
                            let tried = super::try_read_nowait(w.fd);
                            w.rescued = match tried {
                                super::NoWait::Read => true,
                                super::NoWait::Empty => false,
                                // A kernel before 5.12: read on a thread of
                                // its own, which the peer can park, instead.
                                super::NoWait::Refused => super::read_detached(w.fd),
                            };
                        }
                    }
                });
            ON.store(spawned.is_ok(), Relaxed);
        });
    }

    /// Runs `write` on `fd` registered for the watchdog; returns whether
    /// the watchdog had to drain the counter to let it finish.
    pub(super) fn write(fd: RawFd, write: impl FnOnce()) -> bool {
        let id = NEXT.fetch_add(1, Relaxed);
        writes().push(InWrite {
            id,
            fd,
            since: Instant::now(),
            rescued: false,
        });
        write();
        #[cfg(test)]
        super::tests::after_write();
        let mut all = writes();
        match all.iter().position(|w| w.id == id) {
            Some(at) => all.swap_remove(at).rescued,
            None => false,
        }
    }
}

/// Makes every eventfd write in this process one that cannot park its
/// thread for good. A peer that sets the counter to its maximum and clears
/// `O_NONBLOCK` between our checks and the write (no check can close that
/// window: the flag belongs to the open file both share, and eventfd writes
/// ignore `RWF_NOWAIT`) would leave the write asleep until someone reads the
/// counter. With this, a write still in the kernel after 100 ms is released
/// by a watchdog thread that drains the counter, and that doorbell writes no
/// more (its peer is hostile; the peer's own waits have deadlines). For the
/// mover, which serves peers it does not trust; a client need not call it.
pub fn guard_writes() {
    guard::start();
}

/// Whether a write of 1 to the eventfd `fd` would go through now (its
/// counter is below the maximum). A failed poll proves nothing and says yes.
fn writable(fd: libc::c_int) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n < 0 || pfd.revents & libc::POLLOUT != 0
}

/// What a `preadv2(RWF_NOWAIT)` of an eventfd did.
#[derive(Debug, PartialEq, Eq)]
enum NoWait {
    /// Read (and so zeroed) the counter.
    Read,
    /// The counter was zero (EAGAIN).
    Empty,
    /// The kernel refused the flag: before 5.12, or a seccomp filter.
    Refused,
}

/// Drains an eventfd's counter with `RWF_NOWAIT`, which never blocks
/// whatever the shared `O_NONBLOCK` says (Linux 5.12 and later).
fn try_read_nowait(fd: libc::c_int) -> NoWait {
    let mut buf: u64 = 0;
    let iov = libc::iovec {
        iov_base: (&mut buf as *mut u64).cast::<libc::c_void>(),
        iov_len: 8,
    };
    // SAFETY: one iovec over a live u64 of 8 bytes; offset -1 reads at the
    // file position (an eventfd refuses explicit offsets). The caller
    // guarantees `fd` is open.
    let n = unsafe { libc::preadv2(fd, &iov, 1, -1, libc::RWF_NOWAIT) };
    match n {
        8 => NoWait::Read,
        _ if io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) => NoWait::Empty,
        _ => {
            // Learnt once for the process: `drain` then goes straight to
            // its fallback.
            NOWAIT_REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
            NoWait::Refused
        }
    }
}

/// Whether this kernel reads an eventfd with `RWF_NOWAIT` (Linux 5.12 and
/// later). Without it, a hostile peer that clears the shared `O_NONBLOCK`
/// at the right moment can park a thread of ours in a doorbell read, and
/// the watchdog's rescue of a trapped write ([`guard_writes`]) needs a
/// thread of its own that the peer can park in turn.
pub fn eventfd_nowait_works() -> bool {
    match EventFd::new() {
        Ok(bell) => try_read_nowait(bell.fd.as_raw_fd()) != NoWait::Refused,
        Err(_) => false,
    }
}

/// The watchdog's rescue where `RWF_NOWAIT` is refused: a plain read of the
/// counter, which is at its maximum, on a thread of its own through a
/// duplicate of `fd` (so that `fd`, closed once its write returns, is never
/// read after it could name another file). The read returns at once unless
/// the peer drained the counter meanwhile, which also released the write;
/// then the thread sleeps until the next wake-up, and only it. Whether the
/// rescue was started.
fn read_detached(fd: libc::c_int) -> bool {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor the caller guarantees open;
    // the result is a new descriptor this function owns.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return false;
    }
    // SAFETY: `dup` was just created and nothing else owns it.
    let dup = unsafe { OwnedFd::from_raw_fd(dup) };
    std::thread::Builder::new()
        .name("doorbell-rescue".into())
        .spawn(move || {
            let mut buf: u64 = 0;
            // SAFETY: reads at most 8 bytes into a live u64 from a
            // descriptor this thread owns.
            let _ = unsafe {
                libc::read(
                    dup.as_raw_fd(),
                    (&mut buf as *mut u64).cast::<libc::c_void>(),
                    8,
                )
            };
        })
        .is_ok()
}

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
    /// Set once a guarded write had to be released: the peer is hostile,
    /// and this bell writes no more.
    #[allow(clippy::disallowed_types)]
    silenced: std::sync::atomic::AtomicBool,
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
        Ok(Self::adopt(fd))
    }

    #[allow(clippy::disallowed_types)]
    fn adopt(fd: OwnedFd) -> Self {
        Self {
            fd,
            silenced: std::sync::atomic::AtomicBool::new(false),
        }
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
        let bell = Self::adopt(fd);
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
    /// write can still park it: eventfd writes ignore `RWF_NOWAIT`.
    /// [`guard_writes`] releases such a write and silences the bell.)
    pub fn notify(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.silenced.load(Relaxed) || !self.writable() || self.nonblocking().is_err() {
            return;
        }
        #[cfg(test)]
        tests::before_write(self);
        let fd = self.fd.as_raw_fd();
        let write = || {
            let one: u64 = 1;
            // SAFETY: the buffer is a live u64 of exactly the 8 bytes written.
            let _ = unsafe { libc::write(fd, (&one as *const u64).cast::<libc::c_void>(), 8) };
        };
        if guard::ON.load(Relaxed) {
            if guard::write(fd, write) {
                self.silenced.store(true, Relaxed);
            }
        } else {
            write();
        }
    }

    /// Whether a write of 1 would go through now.
    fn writable(&self) -> bool {
        writable(self.fd.as_raw_fd())
    }

    /// Resets the counter without ever blocking: `preadv2(RWF_NOWAIT)`
    /// ignores the shared `O_NONBLOCK` flag (Linux 5.12 and later). Where
    /// it fails for any reason but EAGAIN (older kernels refuse the flag; a
    /// seccomp filter may refuse the call), it is not tried again, and the
    /// counter is read after `O_NONBLOCK` is checked, as before: a counter
    /// left unread would make every wait return at once.
    fn drain(&self) -> io::Result<()> {
        let mut buf: u64 = 0;
        // Read, or a peer drained it first.
        if !NOWAIT_REFUSED.load(std::sync::atomic::Ordering::Relaxed)
            && try_read_nowait(self.fd.as_raw_fd()) != NoWait::Refused
        {
            return Ok(());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// A peer's move to run between `notify`'s checks and its write.
        static BETWEEN: Cell<Option<fn(&EventFd)>> = const { Cell::new(None) };
    }

    thread_local! {
        /// A stall to run after the write, before it is unregistered.
        static AFTER: Cell<Option<fn()>> = const { Cell::new(None) };
    }

    pub(super) fn before_write(bell: &EventFd) {
        if let Some(f) = BETWEEN.with(|b| b.take()) {
            f(bell);
        }
    }

    pub(super) fn after_write() {
        if let Some(f) = AFTER.with(|b| b.take()) {
            f();
        }
    }

    /// Makes the watchdog act as on a kernel that refuses `RWF_NOWAIT`.
    #[allow(clippy::disallowed_types)]
    static REFUSE_NOWAIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    pub(super) fn refuse_nowait() -> bool {
        REFUSE_NOWAIT.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether [`try_read_nowait`] read the counter.
    fn read_nowait(fd: libc::c_int) -> bool {
        try_read_nowait(fd) == NoWait::Read
    }

    #[test]
    fn a_writer_descheduled_after_its_write_is_not_taken_for_a_trapped_one() {
        // On a busy host the thread can lose the CPU for longer than the
        // watchdog's 100 ms between its write and unregistering it. Its
        // counter then holds the honest wake-up, which must stay.
        guard_writes();
        let bell = EventFd::new().unwrap();
        let ringer = std::thread::spawn(move || {
            AFTER.with(|a| a.set(Some(|| std::thread::sleep(Duration::from_millis(400)))));
            bell.notify();
            let silenced = bell.silenced.load(std::sync::atomic::Ordering::Relaxed);
            (silenced, read_nowait(bell.fd.as_raw_fd()))
        });
        let (silenced, woken) = ringer.join().unwrap();
        assert!(!silenced, "an honest bell was silenced");
        assert!(woken, "the watchdog took the peer's wake-up");
    }

    /// The peer's move: counter to its maximum, `O_NONBLOCK` cleared, on
    /// the open file both share.
    fn trap(bell: &EventFd) {
        let fd = bell.fd.as_raw_fd();
        let max: u64 = u64::MAX - 1;
        // SAFETY: writes the 8 bytes of a live u64; F_GETFL/F_SETFL with an
        // int flag word; all on a descriptor the bell owns.
        unsafe {
            assert_eq!(libc::write(fd, (&max as *const u64).cast(), 8), 8);
            let flags = libc::fcntl(fd, libc::F_GETFL);
            assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK), 0);
        }
    }

    #[test]
    fn a_guarded_write_the_peer_traps_between_the_checks_and_the_write_is_released() {
        trapped_write_is_released();
    }

    #[test]
    fn a_trapped_write_is_released_where_the_kernel_refuses_rwf_nowait() {
        // As on kernels before 5.12: the watchdog reads on a thread of its
        // own. (The switch is process-wide; the other trap test passes by
        // either rescue.)
        REFUSE_NOWAIT.store(true, std::sync::atomic::Ordering::Relaxed);
        trapped_write_is_released();
        REFUSE_NOWAIT.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn trapped_write_is_released() {
        guard_writes();
        let bell = EventFd::new().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let ringer = std::thread::spawn(move || {
            BETWEEN.with(|b| b.set(Some(trap)));
            // Unguarded, this write sleeps until someone reads the counter,
            // which the peer never does.
            bell.notify();
            let silenced = bell.silenced.load(std::sync::atomic::Ordering::Relaxed);
            // Silenced: a counter drained again gets no further write.
            read_nowait(bell.fd.as_raw_fd());
            bell.notify();
            let written = read_nowait(bell.fd.as_raw_fd());
            done_tx.send((silenced, written)).unwrap();
        });
        // Not a timing assertion: a parked thread never answers at all.
        let (silenced, written) = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the trapped write was never released");
        ringer.join().unwrap();
        assert!(silenced, "the bell still writes to a hostile peer");
        assert!(!written, "a silenced bell wrote");
    }
}
