//! The blocking client of the shmover mover: one Unix-socket connection, one
//! stream at a time, data through a shared-memory ring. No tokio, no
//! threads, so it can live inside a database server process; the SBT
//! library and the BACKINT program link it statically through its C ABI
//! (`shim-c/include/shmover_client.h`).
//!
//! ```no_run
//! use shmover_client::{Client, Options};
//! # fn main() -> Result<(), shmover_client::Error> {
//! let mut c = Client::connect(&Options::default())?;
//! c.open_write("db1/piece-1", 1 << 20, 0, &Default::default())?;
//! c.write_all(b"backup bytes")?;
//! let info = c.commit()?;
//! assert_eq!(info.size, 12);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod cmain;
pub mod ffi;
pub mod paths;
pub mod units;

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::socket::{MsgFlags, UnixAddr};
use shmover_proto::v1;
use shmover_proto::{request, response};
use shmover_ring::{fd_hung_up, Consumer, Direction, Lease, Producer, Segment, ShmSegment, Wait};

pub use shmover_proto::v1::{ObjectInfo, StatusReply, StreamStatus};
pub use shmover_proto::ClientKind;

/// Error codes. 1 to 14 are the mover's (`ErrorCode` in the protocol);
/// 101 and up arise in the client.
pub mod code {
    /// The mover is not listening at the socket path.
    pub const UNREACHABLE: u32 = 101;
    /// The connection broke (the mover exited or closed it).
    pub const DISCONNECTED: u32 = 102;
    /// The mover sent something this client does not understand.
    pub const PROTOCOL: u32 = 103;
    /// No answer within the configured timeout.
    pub const TIMEOUT: u32 = 104;
    /// A local system call failed.
    pub const IO: u32 = 105;
    /// Calls in the wrong order (same number as the mover's WRONG_STATE).
    pub const WRONG_STATE: u32 = 7;
    /// The ring failed (same number as the mover's RING).
    pub const RING: u32 = 9;
    /// An argument out of range (same as the mover's INVALID_ARGUMENT).
    pub const INVALID_ARGUMENT: u32 = 11;
    /// Data failed its checksum (same as the mover's CHECKSUM).
    pub const CHECKSUM: u32 = 12;
    /// No such object (same as the mover's NOT_FOUND).
    pub const NOT_FOUND: u32 = 5;
    /// The name exists already (same as the mover's ALREADY_EXISTS).
    pub const ALREADY_EXISTS: u32 = 6;
    /// The object store failed or is unreachable (same as the mover's
    /// STORE).
    pub const STORE: u32 = 8;
    /// A fault inside this library (same number as the C API's
    /// `SHMOVER_ERR_INTERNAL`).
    pub const INTERNAL: u32 = 14;
}

/// A failure, with a stable code and a sentence for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// See [`code`].
    pub code: u32,
    /// What happened, naming the object or path concerned.
    pub message: String,
}

impl Error {
    fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// How to reach the mover.
#[derive(Debug, Clone)]
pub struct Options {
    /// The mover's socket.
    pub socket: PathBuf,
    /// Who we are (selects the name space).
    pub kind: ClientKind,
    /// A label for logs and `mover status`.
    pub label: String,
    /// Bound on every wait for the mover: replies and ring space or data.
    pub timeout: Duration,
}

impl Default for Options {
    /// Socket from `MOVER_SOCKET` or the default path, kind generic, a 60 s
    /// timeout (or `MOVER_TIMEOUT` seconds).
    fn default() -> Self {
        let timeout = std::env::var("MOVER_TIMEOUT")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&s| s > 0)
            .map_or(Duration::from_secs(60), Duration::from_secs);
        Self {
            socket: paths::default_socket(),
            kind: ClientKind::Generic,
            label: String::new(),
            timeout,
        }
    }
}

struct WriteStream {
    tx: Producer<ShmSegment>,
    name: String,
    /// The block size given at open: the most one block may carry.
    block: usize,
    bytes: u64,
    reserved: Option<usize>,
}

struct ReadStream {
    rx: Consumer<ShmSegment>,
    name: String,
    held: Option<Lease<ShmSegment>>,
    bytes: u64,
    size: u64,
    done: bool,
}

enum State {
    Idle,
    Writing(WriteStream),
    Reading(ReadStream),
    /// The connection cannot be used any more.
    Broken(Error),
}

/// A connection to the mover.
pub struct Client {
    sock: UnixStream,
    rbuf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
    timeout: Duration,
    state: State,
    version: u32,
    socket_path: PathBuf,
    /// Slot count and size of the last ring the mover opened.
    ring: Option<(u32, u32)>,
    /// Bound on a wait for ring space or data: the timeout, or longer if
    /// the mover said its store retries may take longer.
    stall: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket_path)
            .field("version", &self.version)
            .finish()
    }
}

fn ring_error(e: shmover_ring::Error, name: &str) -> Error {
    match e {
        shmover_ring::Error::Timeout => Error::new(
            code::TIMEOUT,
            format!("{name}: the mover did not move the ring within the timeout"),
        ),
        shmover_ring::Error::PeerGone => {
            Error::new(code::DISCONNECTED, format!("{name}: the mover went away"))
        }
        other => Error::new(code::RING, format!("{name}: {other}")),
    }
}

/// The mover's error reply as an [`Error`]. A code outside the protocol's
/// 1 to 14 (0, a missing field, or one this client does not know) is a
/// protocol error: it must never read as success (0) or as the end of a
/// restore (1000) to a C caller.
fn remote_error(e: v1::Error) -> Error {
    match shmover_proto::ErrorCode::try_from(e.code) {
        Ok(c) if c != shmover_proto::ErrorCode::Unspecified => Error::new(c as u32, e.message),
        _ => Error::new(
            code::PROTOCOL,
            format!(
                "the mover sent an error with unknown code {}: {}",
                e.code, e.message
            ),
        ),
    }
}

/// Refuses to talk to whatever listens at `path` unless it runs as root, as
/// this process's user, or as the owner of the socket's directory (the
/// service user of a mover that made its own `run/` directory). A backup's
/// bytes must not go to a process that took over the socket path, through
/// a directory others may write or a path the environment pointed
/// elsewhere; the mover checks its clients the same way.
fn check_mover(sock: &UnixStream, path: &std::path::Path) -> Result<()> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    use std::os::unix::fs::MetadataExt;
    let untrusted = |why: String| {
        Error::new(
            code::UNREACHABLE,
            format!("refusing the mover at {}: {why}", path.display()),
        )
    };
    let uid = getsockopt(sock, PeerCredentials)
        .map_err(|e| untrusted(format!("cannot read its credentials: {e}")))?
        .uid();
    let me = nix::unistd::geteuid().as_raw();
    if uid == 0 || uid == me {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let owner = std::fs::metadata(dir)
        .map_err(|e| untrusted(format!("cannot stat {}: {e}", dir.display())))?
        .uid();
    if uid == owner {
        return Ok(());
    }
    Err(untrusted(format!(
        "the process listening there runs as uid {uid}, which is neither root, \
         this process's uid ({me}) nor the owner of {} (uid {owner})",
        dir.display()
    )))
}

impl Client {
    /// Connects and says hello. The mover must run as root, as this
    /// process's user, or as the owner of the socket's directory.
    pub fn connect(opts: &Options) -> Result<Self> {
        let path = &opts.socket;
        // A socket timeout of zero means none: a hung mover would hold the
        // caller for ever.
        let timeout = opts.timeout.max(Duration::from_millis(1));
        let sock = connect_within(path, timeout).map_err(|e| {
            Error::new(
                code::UNREACHABLE,
                format!(
                    "mover not reachable at {}: {}",
                    path.display(),
                    io_reason(&e)
                ),
            )
        })?;
        check_mover(&sock, path)?;
        let _ = sock.set_read_timeout(Some(timeout));
        let _ = sock.set_write_timeout(Some(timeout));
        let mut c = Self {
            sock,
            rbuf: Vec::new(),
            fds: VecDeque::new(),
            timeout,
            state: State::Idle,
            version: 0,
            socket_path: path.clone(),
            ring: None,
            stall: timeout,
        };
        let reply = c.call(request::Body::Hello(v1::Hello {
            min_version: shmover_proto::MIN_VERSION,
            max_version: shmover_proto::MAX_VERSION,
            kind: opts.kind as i32,
            pid: std::process::id(),
            label: opts.label.clone(),
        }))?;
        match reply {
            response::Body::Hello(h)
                if (shmover_proto::MIN_VERSION..=shmover_proto::MAX_VERSION)
                    .contains(&h.version) =>
            {
                c.version = h.version
            }
            response::Body::Hello(h) => {
                return Err(Error::new(
                    code::PROTOCOL,
                    format!(
                        "the mover at {} chose protocol version {}, outside the {}..={} offered",
                        path.display(),
                        h.version,
                        shmover_proto::MIN_VERSION,
                        shmover_proto::MAX_VERSION
                    ),
                ))
            }
            other => return Err(unexpected(&other)),
        }
        Ok(c)
    }

    /// Slot count and slot size of the ring of the last stream opened.
    pub fn ring_geometry(&self) -> Option<(u32, u32)> {
        self.ring
    }

    /// The protocol version agreed with the mover.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Whether this connection can serve no further call: a stream on it
    /// failed, or the mover closed it, even while the connection sat idle
    /// between calls (a mover restarted since). Every call then fails;
    /// connect again.
    pub fn is_broken(&self) -> bool {
        match self.state {
            State::Broken(_) => true,
            // Between calls the mover sends nothing; a hang-up is a mover
            // that exited, or closed the connection.
            State::Idle => fd_hung_up(self.sock.as_fd()),
            State::Writing(_) | State::Reading(_) => false,
        }
    }

    fn check_idle(&self, what: &str) -> Result<()> {
        match &self.state {
            State::Idle => Ok(()),
            State::Broken(e) => Err(e.clone()),
            State::Writing(w) => Err(Error::new(
                code::WRONG_STATE,
                format!(
                    "{what}: a backup of {} is still open on this connection",
                    w.name
                ),
            )),
            State::Reading(r) => Err(Error::new(
                code::WRONG_STATE,
                format!(
                    "{what}: a restore of {} is still open on this connection",
                    r.name
                ),
            )),
        }
    }

    /// Starts a backup of `name` in blocks of at most `block_size` bytes.
    pub fn open_write(
        &mut self,
        name: &str,
        block_size: usize,
        size_hint: u64,
        metadata: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.check_idle("open for write")?;
        if block_size == 0 || block_size > shmover_ring::MAX_SLOT_SIZE as usize {
            return Err(Error::new(
                code::INVALID_ARGUMENT,
                format!("{name}: block size {block_size} is out of range"),
            ));
        }
        let reply = self.call(request::Body::OpenWrite(v1::OpenWrite {
            name: name.to_string(),
            block_size: block_size as u32,
            size_hint,
            metadata: metadata.clone(),
        }))?;
        let seg = match self.attach_ring(&reply, Direction::ToMover, name) {
            Ok(seg) if seg.geometry().slot_size >= block_size as u32 => seg,
            Ok(_) => {
                let e = Error::new(
                    code::PROTOCOL,
                    format!("{name}: ring slots smaller than the block size"),
                );
                return Err(self.abandon_connection(e));
            }
            Err(e) => return Err(self.abandon_connection(e)),
        };
        // Once the ring is full (the store is slower than the database),
        // wait for a quarter ring to come free rather than a slot: one
        // wake-up per batch on both sides instead of one per block.
        let slots = shmover_ring::Segment::geometry(&seg).slot_count;
        let mut tx = Producer::new(seg);
        tx.set_wake_batch(slots / 4);
        self.state = State::Writing(WriteStream {
            tx,
            name: name.to_string(),
            block: block_size,
            bytes: 0,
            reserved: None,
        });
        Ok(())
    }

    fn attach_ring(
        &mut self,
        reply: &response::Body,
        dir: Direction,
        name: &str,
    ) -> Result<ShmSegment> {
        let response::Body::Ring(r) = reply else {
            return Err(unexpected(reply));
        };
        self.ring = Some((r.slot_count, r.slot_size));
        self.stall = self
            .timeout
            .max(Duration::from_millis(r.stall_timeout_ms.into()));
        if self.fds.len() < 3 {
            return Err(Error::new(
                code::PROTOCOL,
                format!("{name}: the mover sent no ring"),
            ));
        }
        let m = self.fds.pop_front().expect("checked");
        let d = self.fds.pop_front().expect("checked");
        let s = self.fds.pop_front().expect("checked");
        self.fds.clear();
        // SAFETY: the descriptors came from the mover over our control
        // socket; the ring checks the segment and treats it as hostile.
        let seg = unsafe { ShmSegment::attach(m, d, s, dir) }
            .map_err(|e| Error::new(code::RING, format!("{name}: {e}")))?;
        // The header is in memory others have mapped; the mover's reply is
        // what it will use. A header that disagrees would put our slots
        // where the mover does not look.
        let g = shmover_ring::Segment::geometry(&seg);
        if (g.slot_count, g.slot_size) != (r.slot_count, r.slot_size) {
            return Err(Error::new(
                code::RING,
                format!(
                    "{name}: the ring's header says {} slots of {} bytes, the mover {} of {}",
                    g.slot_count, g.slot_size, r.slot_count, r.slot_size
                ),
            ));
        }
        Ok(seg)
    }

    /// A ring wait: bounded by the stall timeout, and cut short when the
    /// mover hangs up (the caller adds that check).
    fn wait(&self) -> Wait<'static> {
        Wait::timeout(self.stall)
    }

    /// The next free slot of the backup stream, to fill in place; then
    /// [`Client::commit_block`]. Reserving again before committing returns
    /// the same slot.
    pub fn reserve(&mut self) -> Result<&mut [u8]> {
        let sock = self.sock.as_fd();
        let wait_base = self.wait();
        let State::Writing(w) = &mut self.state else {
            return Err(self.not_in("reserve", "a backup"));
        };
        let alive = || !fd_hung_up(sock);
        let wait = wait_base.alive(&alive);
        match w.tx.reserve_raw(&wait) {
            Ok((ptr, cap)) => {
                // The slot may be larger (page rounding); a block is not.
                let cap = cap.min(w.block);
                w.reserved = Some(cap);
                // SAFETY: the ring handed us this slot: `cap` bytes that only
                // we write until the commit; the borrow of `self` keeps the
                // slice from outliving the next call.
                Ok(unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), cap) })
            }
            Err(e) => {
                let name = w.name.clone();
                Err(self.fail_stream(ring_error(e, &name)))
            }
        }
    }

    /// Publishes the first `len` bytes of the reserved slot as one block.
    pub fn commit_block(&mut self, len: usize) -> Result<()> {
        let State::Writing(w) = &mut self.state else {
            return Err(self.not_in("commit a block", "a backup"));
        };
        let Some(cap) = w.reserved else {
            return Err(Error::new(
                code::WRONG_STATE,
                format!("{}: commit of a block without a reserved slot", w.name),
            ));
        };
        if len > cap {
            return Err(Error::new(
                code::INVALID_ARGUMENT,
                format!("{}: block of {len} bytes exceeds the slot of {cap}", w.name),
            ));
        }
        if len == 0 {
            // An empty block carries nothing; keep the slot reserved.
            return Ok(());
        }
        match w.tx.commit_raw(len, 0, 0) {
            Ok(()) => {
                w.reserved = None;
                w.bytes += len as u64;
                Ok(())
            }
            Err(e) => {
                let name = w.name.clone();
                Err(self.fail_stream(ring_error(e, &name)))
            }
        }
    }

    /// Copies `data` into the stream, a slot at a time.
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let slot = self.reserve()?;
            let n = slot.len().min(data.len());
            slot[..n].copy_from_slice(&data[..n]);
            self.commit_block(n)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Bytes committed so far to the open backup.
    pub fn written(&self) -> u64 {
        match &self.state {
            State::Writing(w) => w.bytes,
            _ => 0,
        }
    }

    /// Ends the backup: writes the end-of-stream slot and asks the mover to
    /// make the object durable. Returns once it is.
    pub fn commit(&mut self) -> Result<ObjectInfo> {
        let sock = self.sock.as_fd();
        let wait_base = self.wait();
        let State::Writing(w) = &mut self.state else {
            return Err(self.not_in("commit", "a backup"));
        };
        let alive = || !fd_hung_up(sock);
        if let Err(e) = w.tx.finish(&wait_base.alive(&alive)) {
            let name = w.name.clone();
            return Err(self.fail_stream(ring_error(e, &name)));
        }
        let bytes = w.bytes;
        let State::Writing(w) = std::mem::replace(&mut self.state, State::Idle) else {
            unreachable!("checked above")
        };
        // Completing a large upload can take a while: the last parts, the
        // store's completion and the manifest, each of which the mover may
        // retry for as long as it tells us to wait on the ring (`stall`).
        // Wait for all three (or ten timeouts, if longer): a client that
        // gave up sooner would report a failure for a backup the mover
        // then saves.
        let wait = self
            .timeout
            .saturating_mul(10)
            .max(self.stall.saturating_mul(3));
        let _ = self.sock.set_read_timeout(Some(wait));
        // Unmap the ring before the last request: the mover may hand it to
        // this user's next stream once it has the commit.
        let w_name = w.name.clone();
        drop(w);
        let reply = self.call(request::Body::Commit(v1::Commit { bytes }));
        let _ = self.sock.set_read_timeout(Some(self.timeout));
        match reply? {
            // What the mover says it saved must be what was written.
            response::Body::Info(info) if info.size == bytes && info.name == w_name => Ok(info),
            response::Body::Info(info) => Err(self.abandon_connection(Error::new(
                code::PROTOCOL,
                format!(
                    "{w_name}: {bytes} bytes were written, but the mover reports {} bytes saved as {:?}",
                    info.size, info.name
                ),
            ))),
            other => Err(self.abandon_connection(unexpected(&other))),
        }
    }

    /// Abandons the open backup: nothing of it becomes visible.
    pub fn abort(&mut self, reason: &str) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Writing(w) => {
                // Keep the ring until the mover has answered, so that it
                // sees an abort and not a client that left mid-stream.
                let res = self.call(request::Body::Abort(v1::Abort {
                    reason: reason.to_string(),
                }));
                drop(w);
                self.expect_ok(res)
            }
            State::Broken(e) => {
                self.state = State::Broken(e.clone());
                Err(e)
            }
            other => {
                self.state = other;
                Err(self.not_in("abort", "a backup"))
            }
        }
    }

    /// Starts a restore of `name`; slots carry up to `block_size` bytes
    /// (0: the mover's choice). Returns the object's size.
    pub fn open_read(&mut self, name: &str, block_size: usize) -> Result<u64> {
        self.check_idle("open for read")?;
        if block_size > shmover_ring::MAX_SLOT_SIZE as usize {
            return Err(Error::new(
                code::INVALID_ARGUMENT,
                format!("{name}: block size {block_size} is out of range"),
            ));
        }
        let reply = self.call(request::Body::OpenRead(v1::OpenRead {
            name: name.to_string(),
            block_size: block_size as u32,
        }))?;
        let size = match &reply {
            response::Body::Ring(r) => r.object_size,
            other => return Err(self.abandon_connection(unexpected(other))),
        };
        let seg = match self.attach_ring(&reply, Direction::FromMover, name) {
            Ok(seg) => seg,
            Err(e) => return Err(self.abandon_connection(e)),
        };
        self.state = State::Reading(ReadStream {
            rx: Consumer::new(seg),
            name: name.to_string(),
            held: None,
            bytes: 0,
            size,
            done: false,
        });
        Ok(size)
    }

    /// The next block of the restore, or `None` after the last one. The
    /// block stays valid until [`Client::release_block`] or the next call.
    pub fn next_block(&mut self) -> Result<Option<&[u8]>> {
        let sock = self.sock.as_fd();
        let wait_base = self.wait();
        let State::Reading(r) = &mut self.state else {
            return Err(self.not_in("read a block", "a restore"));
        };
        r.held = None;
        if r.done {
            return Ok(None);
        }
        let alive = || !fd_hung_up(sock);
        let lease = match r.rx.next(&wait_base.alive(&alive)) {
            Ok(l) => l,
            Err(e) => {
                let name = r.name.clone();
                return Err(self.fail_stream(ring_error(e, &name)));
            }
        };
        // The mover checks every block against the stored object and sends
        // its CRC32C with it; a block of bytes without one did not come
        // from it. (The empty end-of-stream marker carries nothing.)
        let want = match lease.crc() {
            Some(c) => c,
            None if lease.is_empty() && lease.is_end() => 0,
            None => {
                let msg = format!(
                    "{}: block at offset {} came without its CRC32C",
                    r.name, r.bytes
                );
                return Err(self.fail_stream(Error::new(code::CHECKSUM, msg)));
            }
        };
        // An empty block that does not end the stream moves nothing: a
        // mover sending them would keep the restore spinning for ever.
        if lease.is_empty() && !lease.is_end() {
            let msg = format!(
                "{}: empty block at offset {} before the end",
                r.name, r.bytes
            );
            return Err(self.fail_stream(Error::new(code::PROTOCOL, msg)));
        }
        let got = crc32c(&lease);
        if got != want {
            let msg = format!(
                "{}: block at offset {} failed its CRC32C check",
                r.name, r.bytes
            );
            return Err(self.fail_stream(Error::new(code::CHECKSUM, msg)));
        }
        r.bytes += lease.len() as u64;
        // Refused before a byte past the object's size reaches the database.
        if r.bytes > r.size {
            let msg = format!(
                "{}: the mover sent more than the object's {} bytes",
                r.name, r.size
            );
            return Err(self.fail_stream(Error::new(code::PROTOCOL, msg)));
        }
        if lease.is_end() {
            r.done = true;
            if r.bytes != r.size {
                let msg = format!("{}: restored {} bytes of {}", r.name, r.bytes, r.size);
                return Err(self.fail_stream(Error::new(code::PROTOCOL, msg)));
            }
            if lease.is_empty() {
                return Ok(None);
            }
        }
        let State::Reading(r) = &mut self.state else {
            unreachable!("checked above")
        };
        Ok(Some(r.held.insert(lease).as_slice()))
    }

    /// Gives the current block's slot back to the mover.
    pub fn release_block(&mut self) -> Result<()> {
        match &mut self.state {
            State::Reading(r) => {
                r.held = None;
                Ok(())
            }
            _ => Err(self.not_in("release a block", "a restore")),
        }
    }

    /// Ends the restore (at the end or early).
    pub fn close_read(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Reading(r) => {
                // Unmapped first, as for a commit: the mover may reuse the
                // ring once the restore is closed. (Closed early, the
                // mover's producer sees the ring detached and stops.)
                drop(r);
                let res = self.call(request::Body::CloseRead(v1::CloseRead {}));
                self.expect_ok(res)
            }
            State::Broken(e) => {
                self.state = State::Broken(e.clone());
                Err(e)
            }
            other => {
                self.state = other;
                Err(self.not_in("close", "a restore"))
            }
        }
    }

    /// What the mover knows of `name`.
    pub fn stat(&mut self, name: &str) -> Result<ObjectInfo> {
        self.check_idle("stat")?;
        match self.call(request::Body::Stat(v1::Stat {
            name: name.to_string(),
        }))? {
            response::Body::Info(i) => Ok(i),
            other => Err(self.abandon_connection(unexpected(&other))),
        }
    }

    /// Objects whose names start with `prefix`, newest first (`limit` 0:
    /// all).
    pub fn list(&mut self, prefix: &str, limit: u32) -> Result<Vec<ObjectInfo>> {
        self.check_idle("list")?;
        let mut all: Vec<ObjectInfo> = Vec::new();
        loop {
            // A mover of protocol 2 answers in pages that each fit a frame.
            let (after_name, after_created_unix_ms) = all
                .last()
                .map_or((String::new(), 0), |o| (o.name.clone(), o.created_unix_ms));
            let left = if limit == 0 {
                0
            } else {
                limit - all.len() as u32
            };
            let page = match self.call(request::Body::List(v1::List {
                prefix: prefix.to_string(),
                limit: left,
                after_name,
                after_created_unix_ms,
            }))? {
                response::Body::List(l) => l,
                other => return Err(self.abandon_connection(unexpected(&other))),
            };
            if page.more && page.objects.is_empty() {
                return Err(Error::new(
                    code::PROTOCOL,
                    format!("list {prefix:?}: the mover sent an empty page with more to come"),
                ));
            }
            // Newest first, then by name: each object must come after the
            // one before it, across pages too, and match the prefix. A
            // mover that repeats or reorders (a cycle of pages would grow
            // this list without end) or strays outside the prefix breaks
            // the connection.
            let key = |o: &ObjectInfo| (std::cmp::Reverse(o.created_unix_ms), o.name.clone());
            let mut prev = all.last().map(key);
            for o in &page.objects {
                let k = key(o);
                if prev.as_ref().is_some_and(|p| *p >= k) || !o.name.starts_with(prefix) {
                    return Err(self.abandon_connection(Error::new(
                        code::PROTOCOL,
                        format!(
                            "list {prefix:?}: the mover sent {:?} out of order or outside the prefix",
                            o.name
                        ),
                    )));
                }
                prev = Some(k);
            }
            all.extend(page.objects);
            if !page.more || (limit > 0 && all.len() >= limit as usize) {
                all.truncate(if limit == 0 {
                    usize::MAX
                } else {
                    limit as usize
                });
                return Ok(all);
            }
        }
    }

    /// Deletes `name`.
    pub fn delete(&mut self, name: &str) -> Result<()> {
        self.check_idle("delete")?;
        let res = self.call(request::Body::Delete(v1::Delete {
            name: name.to_string(),
        }));
        self.expect_ok(res)
    }

    /// Checks the mover answers.
    pub fn ping(&mut self) -> Result<()> {
        self.check_idle("ping")?;
        let res = self.call(request::Body::Ping(v1::Ping {}));
        self.expect_ok(res)
    }

    /// Removes what failed writes left behind, older than `older_than`:
    /// unreferenced data objects and the local store's staging files.
    pub fn gc(&mut self, older_than: Duration) -> Result<v1::GcReply> {
        self.check_idle("gc")?;
        match self.call(request::Body::Gc(v1::Gc {
            older_than_secs: older_than.as_secs(),
        }))? {
            response::Body::Gc(g) => Ok(g),
            other => Err(self.abandon_connection(unexpected(&other))),
        }
    }

    /// The mover's live streams.
    pub fn status(&mut self) -> Result<StatusReply> {
        self.check_idle("status")?;
        match self.call(request::Body::Status(v1::StatusRequest {}))? {
            response::Body::Status(s) => Ok(s),
            other => Err(self.abandon_connection(unexpected(&other))),
        }
    }

    /// A request answered with `Ok`: anything else is a mover out of step
    /// with us, and the connection is given up.
    fn expect_ok(&mut self, reply: Result<response::Body>) -> Result<()> {
        match reply? {
            response::Body::Ok(_) => Ok(()),
            other => Err(self.abandon_connection(unexpected(&other))),
        }
    }

    /// The mover opened a stream this side cannot use: the connection is
    /// closed (the mover aborts the stream) and unusable from now on.
    fn abandon_connection(&mut self, e: Error) -> Error {
        self.fds.clear();
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        self.state = State::Broken(e.clone());
        e
    }

    /// After a panic caught at the C boundary: the call stopped at an
    /// unknown point, so nothing more is sent on this connection.
    pub(crate) fn abandon_after_panic(&mut self) {
        self.abandon_connection(Error::new(
            code::INTERNAL,
            "an earlier call on this connection failed inside the shmover client library",
        ));
    }

    fn not_in(&self, what: &str, stream: &str) -> Error {
        match &self.state {
            State::Broken(e) => e.clone(),
            _ => Error::new(
                code::WRONG_STATE,
                format!("{what}: no {stream} is open on this connection"),
            ),
        }
    }

    /// The stream failed on the ring: the mover may have said why on the
    /// socket; prefer its reason. The connection is unusable afterwards.
    fn fail_stream(&mut self, local: Error) -> Error {
        // A mover that left the ring while its process lives always says
        // why, perhaps after a busy moment (a dead one hangs the socket up
        // at once); for what this side found itself, the mover may have
        // nothing to say.
        let wait = if local.code == code::DISCONNECTED {
            self.timeout
        } else {
            Duration::from_millis(500)
        };
        let _ = self.sock.set_read_timeout(Some(wait));
        let err = match self.read_response() {
            Ok(response::Body::Error(e)) => remote_error(e),
            _ => local,
        };
        self.state = State::Broken(err.clone());
        err
    }

    /// Sends a request and reads its response; an `Error` response becomes
    /// `Err`.
    fn call(&mut self, body: request::Body) -> Result<response::Body> {
        if let State::Broken(e) = &self.state {
            return Err(e.clone());
        }
        // Descriptors arrive only with the reply that opens a ring, and are
        // taken with it; any still here came with something else.
        self.fds.clear();
        let frame = shmover_proto::request_frame(body);
        if let Err(e) = send_all(&self.sock, &frame) {
            let err = if e.kind() == std::io::ErrorKind::TimedOut {
                Error::new(
                    code::TIMEOUT,
                    format!(
                        "mover at {} took no request within {:?}",
                        self.socket_path.display(),
                        self.timeout
                    ),
                )
            } else {
                // The mover may have said why before it closed (a refused
                // peer): that is in the socket already, so a short wait.
                let bound = self.sock.read_timeout().ok().flatten();
                let _ = self
                    .sock
                    .set_read_timeout(Some(self.timeout.min(Duration::from_secs(1))));
                let said = self.read_response();
                let _ = self.sock.set_read_timeout(bound);
                match said {
                    Ok(response::Body::Error(e)) => remote_error(e),
                    _ => Error::new(
                        code::DISCONNECTED,
                        format!(
                            "mover at {} closed the connection: {}",
                            self.socket_path.display(),
                            io_reason(&e)
                        ),
                    ),
                }
            };
            return Err(self.abandon_connection(err));
        }
        match self.read_response() {
            Ok(response::Body::Error(e)) => Err(remote_error(e)),
            Ok(b) => Ok(b),
            // Hung up, not only marked broken: the mover sees that we are
            // gone, and drops what it was doing for us (a commit it has
            // not published yet) rather than finish it for nobody.
            Err(e) => Err(self.abandon_connection(e)),
        }
    }

    fn read_response(&mut self) -> Result<response::Body> {
        // The socket's read timeout bounds the whole reply, not each read:
        // a mover that trickles a byte per timeout cannot hold us longer.
        let bound = self.sock.read_timeout().ok().flatten();
        let deadline = bound.and_then(|b| std::time::Instant::now().checked_add(b));
        let got = self.read_response_until(deadline);
        if deadline.is_some() {
            let _ = self.sock.set_read_timeout(bound);
        }
        got
    }

    fn read_response_until(
        &mut self,
        deadline: Option<std::time::Instant>,
    ) -> Result<response::Body> {
        loop {
            match shmover_proto::decode_response(&self.rbuf) {
                Ok(Some((body, used))) => {
                    self.rbuf.drain(..used);
                    // Only a ring reply carries descriptors we keep; any
                    // others sent along are closed now, not at disconnect.
                    if !matches!(body, response::Body::Ring(_)) {
                        self.fds.clear();
                    }
                    return Ok(body);
                }
                Ok(None) => {}
                Err(e) => return Err(Error::new(code::PROTOCOL, format!("from the mover: {e}"))),
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(Error::new(
                        code::TIMEOUT,
                        format!(
                            "the mover at {} did not finish its reply within the timeout",
                            self.socket_path.display()
                        ),
                    ));
                }
                let _ = self.sock.set_read_timeout(Some(left));
            }
            self.fill()?;
        }
    }

    /// Reads more bytes, keeping any descriptors that come with them. A
    /// signal ends the read with nothing read, so that the caller checks
    /// its deadline before reading again: restarted with the socket's whole
    /// timeout, a wait on a hung mover under frequent signals never ends.
    fn fill(&mut self) -> Result<()> {
        let mut buf = [0u8; 4096];
        let (n, fds, truncated) = match recv_with_fds(&self.sock, &mut buf) {
            Ok(got) => got,
            Err(nix::errno::Errno::EINTR) => return Ok(()),
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(Error::new(
                    code::TIMEOUT,
                    format!(
                        "mover at {} did not answer within {:?}",
                        self.socket_path.display(),
                        self.timeout
                    ),
                ))
            }
            Err(e) => return Err(io_error(std::io::Error::from(e))),
        };
        if truncated {
            // Descriptors were lost (the process is at its fd limit, or
            // the mover sent more than a ring has): the stream cannot be
            // set up. What did arrive is closed with `fds`.
            drop(fds);
            return Err(Error::new(
                code::IO,
                "descriptors from the mover were truncated (too many open files?)",
            ));
        }
        self.fds.extend(fds);
        // A ring comes with three descriptors in one message; more than
        // that waiting for one reply is a mover out of step.
        if self.fds.len() > 3 {
            self.fds.clear();
            return Err(Error::new(
                code::PROTOCOL,
                "the mover sent more descriptors than a ring has",
            ));
        }
        if n == 0 {
            return Err(Error::new(
                code::DISCONNECTED,
                format!(
                    "mover at {} closed the connection",
                    self.socket_path.display()
                ),
            ));
        }
        self.rbuf.extend_from_slice(&buf[..n]);
        Ok(())
    }
}

/// Descriptors one read takes at most; a ring sends three.
const MAX_FDS: usize = 8;

/// One `recvmsg` on `sock` into `buf`: the bytes read, every descriptor
/// the kernel installed (close-on-exec, owned, so dropping them closes
/// them), and whether control data was truncated. Walks the control
/// buffer itself: nix refuses to iterate it once `MSG_CTRUNC` is set, and
/// the descriptors that did arrive would then stay open for good.
fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
) -> std::result::Result<(usize, Vec<OwnedFd>, bool), nix::errno::Errno> {
    // u64s, for cmsghdr's alignment.
    let mut control = [0u64; 16];
    // SAFETY: CMSG_SPACE only computes a size.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (null name, no iovecs).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers of the lengths given, for the
    // duration of the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(nix::errno::Errno::last());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control up to msg_controllen with
    // well-formed headers; CMSG_FIRSTHDR/NXTHDR stay within it, and each
    // SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / 4 descriptors
    // installed in this process for us alone.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    if fd >= 0 {
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, fds, msg.msg_flags & libc::MSG_CTRUNC != 0))
}

/// Writes all of `buf` with `MSG_NOSIGNAL`: a mover that has gone away
/// must be an error, never a SIGPIPE that kills the host process (an
/// Oracle server process keeps SIGPIPE's default action). The socket's
/// write timeout bounds the whole request, however many partial writes and
/// signals it takes; past it the error is `TimedOut`.
fn send_all(sock: &UnixStream, mut buf: &[u8]) -> std::io::Result<()> {
    let bound = sock.write_timeout().ok().flatten();
    let deadline = bound.and_then(|b| std::time::Instant::now().checked_add(b));
    let mut result = Ok(());
    while !buf.is_empty() {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                result = Err(std::io::ErrorKind::TimedOut.into());
                break;
            }
            let _ = sock.set_write_timeout(Some(left));
        }
        match nix::sys::socket::send(sock.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => {
                result = Err(std::io::ErrorKind::WriteZero.into());
                break;
            }
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                result = Err(std::io::ErrorKind::TimedOut.into());
                break;
            }
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    if deadline.is_some() {
        let _ = sock.set_write_timeout(bound);
    }
    result
}

fn unexpected(body: &response::Body) -> Error {
    Error::new(
        code::PROTOCOL,
        format!("unexpected reply from the mover: {body:?}"),
    )
}

/// Connects to the socket at `path`, waiting at most `timeout`. A blocking
/// `connect` sleeps for as long as the mover's queue of connections not yet
/// accepted stays full (a mover that is stopped, or swamped), and that
/// sleep would be the database process's. A non-blocking one fails at once
/// with `EAGAIN` instead, and is tried again with growing pauses.
fn connect_within(path: &std::path::Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use nix::errno::Errno;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType};
    let addr = UnixAddr::new(path).map_err(std::io::Error::from)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    // No deadline for a timeout past what an Instant holds (MOVER_TIMEOUT
    // is any number of seconds): adding it would panic.
    let deadline = std::time::Instant::now().checked_add(timeout);
    let mut pause = Duration::from_millis(1);
    loop {
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let left = deadline.map_or(Duration::MAX, |d| {
                    d.saturating_duration_since(std::time::Instant::now())
                });
                if left.is_zero() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "its queue of new connections stayed full for {} ms (is the mover stopped, or swamped?)",
                            timeout.as_millis()
                        ),
                    ));
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let sock = UnixStream::from(fd);
    sock.set_nonblocking(false)?;
    Ok(sock)
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such socket".into(),
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::new(code::IO, e.to_string())
}

/// CRC32C (Castagnoli), as stored in manifests.
///
/// `crc-fast` folds with carry-less multiplies (VPCLMULQDQ where the CPU
/// has it): on our 2-core EPYC it runs at about 26 GB/s over a ring that is
/// not in cache, against 11 to 14 GB/s for the `crc32c` crate's three-way
/// `crc32` loop, which is also slower on 64 KiB blocks than on large ones.
/// Every byte of a backup and a restore goes through here twice (mover and
/// client), so this is most of the mover's CPU per byte.
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// A running CRC32C over bytes given in order.
#[derive(Clone, Copy)]
pub struct Crc32c(crc_fast::Digest);

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Crc32c {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crc32c({:#010x})", self.value())
    }
}

impl Crc32c {
    /// The CRC32C of no bytes.
    pub fn new() -> Self {
        Self(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }
    /// Appends `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The CRC32C of everything appended so far.
    pub fn value(&self) -> u32 {
        self.0.finalize() as u32
    }
}

/// The CRC32C of `a ++ b` from `crc(a)`, `crc(b)` and `len(b)`.
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    crc32c::crc32c_combine(crc_a, crc_b, len_b)
}

/// The CRC32C of a stream, from the CRC32C and length of each block.
///
/// [`crc32c_combine`] costs about 30 matrix squarings per call: some
/// microseconds, more than checksumming a 64 KiB block. But appending `len`
/// bytes is linear in the CRC so far (`combine(a, b, len) = shift(a) ^ b`),
/// so for a length seen twice in a row this keeps `shift` of the 32 single
/// bits and applies it with at most 32 XORs.
#[derive(Debug, Clone)]
pub struct CrcChain {
    crc: u32,
    /// The length `shift` is for (0: none yet).
    len: usize,
    shift: [u32; 32],
    /// The last length seen that `shift` is not for.
    other: usize,
}

impl Default for CrcChain {
    fn default() -> Self {
        Self::new()
    }
}

impl CrcChain {
    /// The chain of no bytes.
    pub fn new() -> Self {
        Self {
            crc: 0,
            len: 0,
            shift: [0; 32],
            other: 0,
        }
    }

    /// Appends a block of `len` bytes whose CRC32C is `crc`.
    pub fn push(&mut self, crc: u32, len: usize) {
        if len == 0 {
            return;
        }
        if len != self.len {
            if len != self.other {
                // A one-off length (a stream's last block): combine once.
                self.other = len;
                self.crc = crc32c::crc32c_combine(self.crc, crc, len);
                return;
            }
            self.len = len;
            for (i, s) in self.shift.iter_mut().enumerate() {
                *s = crc32c::crc32c_combine(1 << i, 0, len);
            }
        }
        let (mut x, mut shifted) = (self.crc, 0u32);
        while x != 0 {
            shifted ^= self.shift[x.trailing_zeros() as usize];
            x &= x - 1;
        }
        self.crc = shifted ^ crc;
    }

    /// The CRC32C of everything pushed so far.
    pub fn value(&self) -> u32 {
        self.crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-connection fake mover at a fresh socket path: it reads the
    /// hello and hands the connection to `reply`. Returns what
    /// `Client::connect` returned, with `timeout`.
    fn connect_to_a_fake_mover(
        tag: &str,
        timeout: Duration,
        reply: impl FnOnce(std::os::unix::net::UnixStream) + Send + 'static,
    ) -> Result<Client> {
        use std::io::Read;
        let path = std::env::temp_dir().join(format!(
            "shmover-client-test-{}-{tag}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let fake = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut hello = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut hello).unwrap();
            reply(s);
        });
        let got = Client::connect(&Options {
            socket: path.clone(),
            timeout,
            ..Options::default()
        });
        // The fake ends once it has replied (a connect that returned has
        // read the whole reply) or once the client has hung up.
        fake.join().unwrap();
        let _ = std::fs::remove_file(&path);
        got
    }

    /// What `Client::connect` returns when the hello gets an error of `code`.
    fn connect_to_a_mover_answering(code: i32) -> Error {
        use std::io::Write;
        connect_to_a_fake_mover(&code.to_string(), Duration::from_secs(60), move |mut s| {
            let frame = shmover_proto::response_frame(response::Body::Error(v1::Error {
                code,
                message: "made up".into(),
            }));
            s.write_all(&frame).unwrap();
        })
        .expect_err("an error reply")
    }

    #[test]
    fn a_timeout_past_what_an_instant_holds_is_no_panic() {
        // MOVER_TIMEOUT takes any number of seconds.
        let err = Client::connect(&Options {
            socket: std::env::temp_dir().join("shmover-client-test-no-such.sock"),
            timeout: Duration::from_secs(u64::MAX),
            ..Options::default()
        })
        .err()
        .map(|e| (e.code, e.message));
        let (got, message) = err.expect("no mover listens there");
        assert_eq!(got, code::UNREACHABLE, "{message}");
        assert!(message.contains("no such socket"), "{message}");
    }

    #[test]
    fn a_mover_whose_connection_queue_is_full_is_unreachable_after_the_timeout() {
        use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
        let path = std::env::temp_dir().join(format!(
            "shmover-client-test-{}-full.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        // A listener that never accepts, its queue of one filled by
        // connections that wait in it.
        let listener = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(listener.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
        listen(&listener, Backlog::new(1).unwrap()).unwrap();
        let mut queued = Vec::new();
        loop {
            let s = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )
            .unwrap();
            match nix::sys::socket::connect(s.as_raw_fd(), &UnixAddr::new(&path).unwrap()) {
                Ok(()) => queued.push(s),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(queued.len() < 1000, "the listener's queue never filled");
        }
        // The blocking connect of old slept here until the queue moved; the
        // test's thread would never have come back.
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Client::connect(&Options {
                socket: p,
                timeout: Duration::from_millis(300),
                ..Options::default()
            }));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("connect to a full queue did not return");
        let Err(err) = got else {
            panic!("connected to a listener that never accepts")
        };
        assert_eq!(err.code, code::UNREACHABLE, "{err:?}");
        assert!(err.message.contains("stayed full"), "{err:?}");
        drop(queued);
        drop(listener);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_mover_that_trickles_its_reply_times_out_as_a_whole() {
        use std::io::Write;
        let got = connect_to_a_fake_mover("trickle", Duration::from_millis(400), |mut s| {
            let frame = shmover_proto::response_frame(response::Body::Hello(v1::HelloOk {
                version: 1,
                ..Default::default()
            }));
            // Each byte well inside the client's timeout, the whole reply
            // well past it.
            for b in frame {
                std::thread::sleep(Duration::from_millis(150));
                if s.write_all(&[b]).is_err() {
                    return;
                }
            }
        });
        let err = got.expect_err("the reply never completes within the timeout");
        assert_eq!(err.code, code::TIMEOUT, "{err:?}");
    }

    #[test]
    fn an_error_reply_with_a_code_outside_the_protocol_is_a_protocol_error() {
        for bad in [0, 1000, 15, -1] {
            let e = connect_to_a_mover_answering(bad);
            assert_eq!(e.code, code::PROTOCOL, "code {bad}: {e:?}");
            assert!(e.message.contains("made up"), "{e:?}");
        }
        let e = connect_to_a_mover_answering(5);
        assert_eq!(e.code, code::NOT_FOUND, "{e:?}");
    }

    /// A fake mover at a fresh socket path that answers the hello and one
    /// open (`OpenRead` or `OpenWrite`) with a ring of 4 x 4 KiB in
    /// direction `dir`, replying `said` as the ring's geometry and `size` as
    /// the object's; `serve` then gets the connection and the ring. Returns
    /// the path to connect to and the fake's thread.
    fn fake_mover_with_a_ring(
        tag: &str,
        dir: Direction,
        said: (u32, u32),
        size: u64,
        serve: impl FnOnce(std::os::unix::net::UnixStream, ShmSegment) + Send + 'static,
    ) -> (PathBuf, std::thread::JoinHandle<()>) {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::io::{IoSlice, Read};
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join(format!(
            "shmover-client-test-{}-{tag}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let fake = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut read_request = || {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).unwrap();
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                s.read_exact(&mut body).unwrap();
            };
            read_request(); // hello
            let send = |frame: Vec<u8>, fds: &[i32]| {
                let cmsg = [ControlMessage::ScmRights(fds)];
                let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
                let iov = [IoSlice::new(&frame)];
                let n = sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).unwrap();
                assert_eq!(n, frame.len());
            };
            send(
                shmover_proto::response_frame(response::Body::Hello(v1::HelloOk {
                    version: 1,
                    ..Default::default()
                })),
                &[],
            );
            let mut len = [0u8; 4];
            (&s).read_exact(&mut len).unwrap();
            let mut open = vec![0u8; u32::from_be_bytes(len) as usize];
            (&s).read_exact(&mut open).unwrap();
            let geometry = shmover_ring::Geometry::new(4, 4096).unwrap();
            let seg = ShmSegment::create(geometry, dir).unwrap();
            let fds = seg.fds().map(|f| f.as_raw_fd());
            send(
                shmover_proto::response_frame(response::Body::Ring(v1::RingOpened {
                    slot_count: said.0,
                    slot_size: said.1,
                    object_size: size,
                    stall_timeout_ms: 10_000,
                })),
                &fds,
            );
            serve(s, seg);
        });
        (path, fake)
    }

    /// Connects to the fake at `path`.
    fn connect_to_the_fake(path: &std::path::Path) -> Client {
        Client::connect(&Options {
            socket: path.to_path_buf(),
            timeout: Duration::from_secs(30),
            ..Options::default()
        })
        .unwrap()
    }

    /// A fake mover that restores `blocks` (bytes, flags; a CRC32C where
    /// the flags ask for one) through a ring of 4 x 4 KiB, replying `said`
    /// as the ring's geometry and `size` as the object's. Returns what the
    /// client's restore made of it: every block read, then the error that
    /// ended it.
    fn restore_from_a_fake_mover(
        tag: &str,
        said: (u32, u32),
        size: u64,
        blocks: Vec<(Vec<u8>, u32)>,
    ) -> (Vec<Vec<u8>>, Result<()>) {
        let (path, fake) =
            fake_mover_with_a_ring(tag, Direction::FromMover, said, size, |mut s, seg| {
                use std::io::Read;
                let mut tx = Producer::new(seg);
                let alive = || !fd_hung_up(s.as_fd());
                let wait = Wait::forever().alive(&alive);
                for (bytes, flags) in blocks {
                    let Ok(mut slot) = tx.reserve(&wait) else {
                        return;
                    };
                    slot.as_mut_slice()[..bytes.len()].copy_from_slice(&bytes);
                    let crc = if flags & shmover_ring::FLAG_CRC != 0 {
                        crc32c(&bytes)
                    } else {
                        0
                    };
                    if slot.commit(bytes.len(), flags, crc).is_err() {
                        return;
                    }
                }
                // Hold the ring until the client hangs up.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            });
        let mut c = connect_to_the_fake(&path);
        let mut got = Vec::new();
        let end = (|| {
            c.open_read("x", 4096)?;
            while let Some(b) = c.next_block()? {
                got.push(b.to_vec());
            }
            Ok(())
        })();
        drop(c);
        fake.join().unwrap();
        let _ = std::fs::remove_file(&path);
        (got, end)
    }

    /// A fake mover at a fresh socket path that answers the hello (with
    /// protocol version 1), then each request with the next of `replies`,
    /// each sent with `fds` descriptors (copies of one memfd named `probe`)
    /// attached, then waits for `hold` (if given) and hangs up, or else
    /// for the client to hang up.
    fn fake_mover_answering(
        tag: &str,
        replies: Vec<response::Body>,
        fds: usize,
        probe: &str,
        hold: Option<std::sync::mpsc::Receiver<()>>,
    ) -> (PathBuf, std::thread::JoinHandle<()>) {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::io::{IoSlice, Read};
        let path = std::env::temp_dir().join(format!(
            "shmover-client-test-{}-{tag}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let name = std::ffi::CString::new(probe).unwrap();
        let fake = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let read_request = |s: &mut std::os::unix::net::UnixStream| {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).is_ok() && {
                    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                    s.read_exact(&mut body).is_ok()
                }
            };
            // SAFETY: a valid NUL-terminated name; the result is checked.
            let memfd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
            assert!(memfd >= 0);
            // SAFETY: memfd_create returned a new descriptor we own.
            let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
            let copies = vec![memfd.as_raw_fd(); fds];
            let send = |s: &std::os::unix::net::UnixStream, body: response::Body, fds: &[i32]| {
                let frame = shmover_proto::response_frame(body);
                let cmsg = [ControlMessage::ScmRights(fds)];
                let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
                let iov = [IoSlice::new(&frame)];
                let _ = sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None);
            };
            assert!(read_request(&mut s));
            send(
                &s,
                response::Body::Hello(v1::HelloOk {
                    version: 1,
                    ..Default::default()
                }),
                &[],
            );
            for body in replies {
                if !read_request(&mut s) {
                    return;
                }
                send(&s, body, &copies);
            }
            drop(memfd);
            match hold {
                Some(h) => {
                    let _ = h.recv();
                }
                None => {
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest);
                }
            }
        });
        (path, fake)
    }

    /// Descriptors of this process that are the memfd named `probe`.
    fn open_copies_of(probe: &str) -> usize {
        let want = format!("/memfd:{probe} ");
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|l| format!("{} ", l.display()).starts_with(&want))
            .count()
    }

    #[test]
    fn descriptors_beyond_a_rings_three_are_closed_not_kept() {
        // A ring comes with three descriptors. More is a mover out of step
        // (or, past what one read takes, truncated by the kernel): the open
        // fails, and every descriptor that did arrive is closed at once.
        // nix will not walk control data once it is truncated, and the
        // client used to leave those descriptors open for good: each a
        // ring's memory pinned inside the database process.
        for (n, want) in [(5, code::PROTOCOL), (MAX_FDS + 1, code::IO)] {
            let probe = format!("shmover-probe-{}-{n}", std::process::id());
            let ring = response::Body::Ring(v1::RingOpened {
                slot_count: 4,
                slot_size: 4096,
                object_size: 0,
                stall_timeout_ms: 10_000,
            });
            let (path, fake) =
                fake_mover_answering(&format!("fds-{n}"), vec![ring], n, &probe, None);
            let mut c = connect_to_the_fake(&path);
            let err = c
                .open_write("x", 4096, 0, &BTreeMap::new())
                .expect_err("a ring with too many descriptors");
            assert_eq!(err.code, want, "{n} descriptors: {err:?}");
            drop(c);
            fake.join().unwrap();
            let _ = std::fs::remove_file(&path);
            assert_eq!(open_copies_of(&probe), 0, "{n} descriptors: some left open");
        }
    }

    #[test]
    fn a_reply_of_the_wrong_kind_breaks_the_connection() {
        // A mover out of step (an OK where a ring was asked for) has left a
        // reply somewhere: the next call would read it as its own.
        let ok = || response::Body::Ok(v1::Ok {});
        let (path, fake) = fake_mover_answering("wrong-kind", vec![ok()], 0, "none", None);
        let mut c = connect_to_the_fake(&path);
        let err = c.open_read("x", 4096).expect_err("not a ring");
        assert_eq!(err.code, code::PROTOCOL, "{err:?}");
        assert!(c.is_broken());
        drop(c);
        fake.join().unwrap();
        let _ = std::fs::remove_file(&path);
        // A ping answered with something else than OK.
        let info = response::Body::Info(ObjectInfo::default());
        let (path, fake) = fake_mover_answering("wrong-ping", vec![info], 0, "none", None);
        let mut c = connect_to_the_fake(&path);
        assert_eq!(c.ping().expect_err("not OK").code, code::PROTOCOL);
        assert!(c.is_broken());
        drop(c);
        fake.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_list_whose_pages_repeat_or_stray_is_refused() {
        // A mover that sends the same page again, with more to come, would
        // otherwise grow the list in the database process without end.
        let obj = |name: &str, t: i64| ObjectInfo {
            name: name.into(),
            created_unix_ms: t,
            ..Default::default()
        };
        let page = |objects: Vec<ObjectInfo>, more: bool| {
            response::Body::List(v1::ListReply { objects, more })
        };
        let first = || page(vec![obj("db/a", 30), obj("db/b", 20)], true);
        let cases = [
            (
                "pages",
                vec![first(), page(vec![obj("db/c", 10)], false)],
                None,
            ),
            ("cycle", vec![first(), first(), first()], Some("db/a")),
            (
                "back",
                vec![first(), page(vec![obj("db/0", 20)], true)],
                Some("db/0"),
            ),
            (
                "within",
                vec![page(vec![obj("db/b", 20), obj("db/a", 30)], false)],
                Some("db/a"),
            ),
            (
                "prefix",
                vec![page(vec![obj("other/x", 5)], false)],
                Some("other/x"),
            ),
        ];
        for (tag, replies, bad) in cases {
            let (path, fake) = fake_mover_answering(tag, replies, 0, "none", None);
            let mut c = connect_to_the_fake(&path);
            let got = c.list("db/", 0);
            match bad {
                None => {
                    let names: Vec<_> = got.expect(tag).into_iter().map(|o| o.name).collect();
                    assert_eq!(names, ["db/a", "db/b", "db/c"]);
                    assert!(!c.is_broken());
                }
                Some(name) => {
                    let err = got.expect_err(tag);
                    assert_eq!(err.code, code::PROTOCOL, "{tag}: {err:?}");
                    assert!(err.message.contains(name), "{tag}: {err:?}");
                    assert!(c.is_broken(), "{tag}");
                }
            }
            drop(c);
            fake.join().unwrap();
            let _ = std::fs::remove_file(&path);
        }
    }

    #[test]
    fn a_protocol_version_the_client_never_offered_is_refused() {
        use std::io::Write;
        let got = connect_to_a_fake_mover("version", Duration::from_secs(30), |mut s| {
            let frame = shmover_proto::response_frame(response::Body::Hello(v1::HelloOk {
                version: 99,
                ..Default::default()
            }));
            let _ = s.write_all(&frame);
        });
        let err = got.expect_err("version 99 was never offered");
        assert_eq!(err.code, code::PROTOCOL, "{err:?}");
        assert!(err.message.contains("version 99"), "{err:?}");
    }

    #[test]
    fn an_idle_connection_the_mover_closed_reads_as_broken() {
        // The SBT library keeps a channel's connection between pieces; a
        // mover restarted meanwhile must not cost the next call a failure.
        let (tx, rx) = std::sync::mpsc::channel();
        let (path, fake) = fake_mover_answering("idle-hangup", vec![], 0, "none", Some(rx));
        let c = connect_to_the_fake(&path);
        assert!(!c.is_broken(), "a live idle connection");
        tx.send(()).unwrap();
        fake.join().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !c.is_broken() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(c.is_broken(), "the mover hung up the idle connection");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_commit_the_mover_reports_with_another_size_or_name_is_refused() {
        // "Saved" must mean the bytes written, under the name given.
        for (tag, name, size) in [("short", "x", 4095u64), ("renamed", "y", 4096)] {
            let (path, fake) = fake_mover_with_a_ring(
                &format!("commit-{tag}"),
                Direction::ToMover,
                (4, 4096),
                0,
                move |mut s, seg| {
                    use std::io::{Read, Write};
                    let _rx = Consumer::new(seg);
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                    let _ = s.read_exact(&mut body);
                    let frame = shmover_proto::response_frame(response::Body::Info(ObjectInfo {
                        name: name.into(),
                        size,
                        ..Default::default()
                    }));
                    let _ = s.write_all(&frame);
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest);
                },
            );
            let mut c = connect_to_the_fake(&path);
            c.open_write("x", 4096, 0, &BTreeMap::new()).unwrap();
            c.write_all(&[9u8; 4096]).unwrap();
            let err = c
                .commit()
                .expect_err("the reply does not match what was written");
            assert_eq!(err.code, code::PROTOCOL, "{tag}: {err:?}");
            assert!(err.message.contains("4096 bytes were written"), "{err:?}");
            assert!(c.is_broken());
            drop(c);
            fake.join().unwrap();
            let _ = std::fs::remove_file(&path);
        }
    }

    #[test]
    fn a_panic_inside_a_c_call_becomes_an_error_and_hangs_the_connection_up() {
        // No panic may unwind into the database process. One that happens
        // inside a call (a bug) is caught at the C boundary: the call
        // returns SHMOVER_ERR_INTERNAL with a sentence, the connection
        // reads as broken so that the shim connects again, and the mover
        // sees the hang-up and drops the stream instead of waiting for it.
        let (hung_up_tx, hung_up_rx) = std::sync::mpsc::channel::<usize>();
        let (path, fake) = fake_mover_with_a_ring(
            "panics",
            Direction::ToMover,
            (4, 4096),
            0,
            move |mut s, seg| {
                use std::io::Read;
                let _rx = Consumer::new(seg);
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                let _ = hung_up_tx.send(rest.len());
            },
        );
        let mut c = connect_to_the_fake(&path);
        c.open_write("x", 4096, 0, &BTreeMap::new()).unwrap();
        let mut h = crate::ffi::ShmoverClient::wrapping(c);
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let rc = crate::ffi::with_client(&mut h, |c| {
            c.reserve()?[..4096].fill(7);
            panic!("a forced fault halfway through a block");
        });
        std::panic::set_hook(quiet);
        assert_eq!(rc, crate::ffi::SHMOVER_ERR_INTERNAL);
        // SAFETY: `h` is a live handle.
        let said = unsafe { std::ffi::CStr::from_ptr(crate::ffi::shmover_last_error(&h)) };
        assert!(
            said.to_string_lossy().contains("internal error"),
            "{said:?}"
        );
        // SAFETY: as above.
        assert_eq!(unsafe { crate::ffi::shmover_broken(&h) }, 1);
        let sent = hung_up_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the mover never saw the connection hang up");
        assert_eq!(sent, 0, "nothing may be sent after the panic");
        let again = crate::ffi::with_client(&mut h, |c| c.commit().map(drop));
        assert_eq!(again, code::INTERNAL as i32, "a later call must fail too");
        drop(h);
        fake.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_store_failure_while_the_commit_waits_for_ring_space_leaves_the_connection_broken() {
        // The mover's store fails with the ring full and the client in
        // `commit`, waiting for room for the end marker: the mover says
        // STORE and leaves the ring. The client reports STORE, the mover's
        // reason, and its connection serves nothing more, whatever that
        // code: `is_broken` is how a caller (the SBT library) knows to
        // connect again instead of failing every later call.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let (path, fake) = fake_mover_with_a_ring(
            "store-fails",
            Direction::ToMover,
            (4, 4096),
            0,
            move |mut s, seg| {
                use std::io::{Read, Write};
                let rx = Consumer::new(seg);
                // The client has filled the ring and is about to commit.
                let _ = ready_rx.recv();
                std::thread::sleep(Duration::from_millis(100));
                let frame = shmover_proto::response_frame(response::Body::Error(v1::Error {
                    code: shmover_proto::ErrorCode::Store as i32,
                    message: "x: store: the disk is full".into(),
                }));
                s.write_all(&frame).unwrap();
                drop(rx);
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            },
        );
        let mut c = connect_to_the_fake(&path);
        c.open_write("x", 4096, 0, &BTreeMap::new()).unwrap();
        for _ in 0..4 {
            c.reserve().unwrap()[..4096].fill(7);
            c.commit_block(4096).unwrap();
        }
        assert!(!c.is_broken());
        ready_tx.send(()).unwrap();
        let err = c.commit().expect_err("the mover left the ring");
        assert_eq!(err.code, code::STORE, "{err:?}");
        assert!(err.message.contains("the disk is full"), "{err:?}");
        assert!(
            c.is_broken(),
            "a connection whose stream failed must read as broken"
        );
        let again = c.stat("y").expect_err("a broken connection serves nothing");
        assert_eq!(again.code, code::STORE, "{again:?}");
        drop(c);
        fake.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_restore_ring_whose_header_disagrees_with_the_mover_is_refused() {
        // The header says 4 x 4 KiB; the reply 2 x 8 KiB (same bytes).
        let (got, end) = restore_from_a_fake_mover("geometry", (2, 8192), 3, vec![]);
        let err = end.expect_err("refused");
        assert!(got.is_empty());
        assert_eq!(err.code, code::RING, "{err:?}");
        assert!(
            err.message.contains("header says 4 slots of 4096"),
            "{err:?}"
        );
    }

    #[test]
    fn restore_blocks_without_a_crc_or_past_the_size_never_reach_the_caller() {
        let crc = shmover_ring::FLAG_CRC;
        let eos = shmover_ring::FLAG_EOS;
        // Honest: two blocks and the bare end-of-stream marker.
        let (got, end) = restore_from_a_fake_mover(
            "honest",
            (4, 4096),
            6,
            vec![
                (b"abc".to_vec(), crc),
                (b"def".to_vec(), crc),
                (vec![], eos),
            ],
        );
        end.unwrap();
        assert_eq!(got, [b"abc".to_vec(), b"def".to_vec()]);
        // A block of bytes with no CRC.
        let (got, end) = restore_from_a_fake_mover(
            "nocrc",
            (4, 4096),
            6,
            vec![(b"abc".to_vec(), crc), (b"def".to_vec(), 0), (vec![], eos)],
        );
        let err = end.expect_err("refused");
        assert_eq!(got, [b"abc".to_vec()]);
        assert_eq!(err.code, code::CHECKSUM, "{err:?}");
        assert!(err.message.contains("without its CRC32C"), "{err:?}");
        // More bytes than the object has: refused before they are handed
        // over, not at the end of the stream.
        let (got, end) = restore_from_a_fake_mover(
            "long",
            (4, 4096),
            4,
            vec![(b"abc".to_vec(), crc), (b"def".to_vec(), crc)],
        );
        let err = end.expect_err("refused");
        assert_eq!(got, [b"abc".to_vec()]);
        assert_eq!(err.code, code::PROTOCOL, "{err:?}");
        assert!(
            err.message.contains("more than the object's 4 bytes"),
            "{err:?}"
        );
        // Empty blocks that do not end the stream: they would keep a
        // restore spinning for as long as the mover sends them.
        let (got, end) = restore_from_a_fake_mover(
            "empty",
            (4, 4096),
            6,
            vec![
                (b"abc".to_vec(), crc),
                (vec![], crc),
                (vec![], crc),
                (b"def".to_vec(), crc),
            ],
        );
        let err = end.expect_err("refused");
        assert_eq!(got, [b"abc".to_vec()]);
        assert_eq!(err.code, code::PROTOCOL, "{err:?}");
        assert!(err.message.contains("empty block"), "{err:?}");
    }

    /// Runs of equal lengths, one-offs, alternations and empty blocks: the
    /// chain always equals the CRC32C of the concatenated bytes.
    #[test]
    fn a_crc_chain_equals_the_crc_of_the_concatenation() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        let lens = [
            4096, 4096, 4096, 100, 4096, 4096, 0, 7, 7, 7, 4096, 7, 4096, 7, 65536, 65536, 1,
        ];
        let mut all = Vec::new();
        let mut chain = CrcChain::new();
        for (k, &len) in lens.iter().cycle().take(200).enumerate() {
            let len = if k >= lens.len() { next() % 9000 } else { len };
            let block: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            chain.push(crc32c(&block), block.len());
            all.extend_from_slice(&block);
            assert_eq!(
                chain.value(),
                crc32c(&all),
                "after block {k} of {len} bytes"
            );
        }
    }

    /// `crc-fast` (folding, vector paths chosen by length and alignment)
    /// against the `crc32c` crate (the `crc32` instruction) and the
    /// published check value, over lengths and offsets that take every
    /// path; and the running form equals the one-shot form.
    #[test]
    fn the_fast_crc32c_matches_the_reference_at_every_length_and_offset() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut lens: Vec<usize> = (0..300).collect();
        lens.extend([511, 512, 513, 1023, 4096, 4097, 65_535, 65_536, 69_000]);
        for &len in &lens {
            for off in [0, 1, 3, 8, 63] {
                let b = &data[off..off + len];
                assert_eq!(crc32c(b), crc32c::crc32c(b), "{len} bytes at +{off}");
            }
        }
        let mut running = Crc32c::new();
        let mut at = 0;
        for (k, len) in [0, 1, 7, 64, 4096, 65_536, 100, 3].into_iter().enumerate() {
            running.update(&data[at..at + len]);
            at += len;
            assert_eq!(
                running.value(),
                crc32c::crc32c(&data[..at]),
                "after piece {k}"
            );
        }
    }
}
