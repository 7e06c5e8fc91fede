//! Runs `ring-producer` (C) against a consumer in this process: the shape
//! of a backup stream without the mover around it.
//!
//! This process creates the segment, listens on a Unix socket, starts the
//! producer, sends it the three descriptors with `SCM_RIGHTS` and drains the
//! ring, optionally checking every block's CRC32C and contents.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shmover_ring::{fd_hung_up, Consumer, Direction, Geometry, ShmSegment, Wait};

use crate::fdpass::send_fds;
use crate::pattern;

/// What to move.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `ring-producer` executable.
    pub producer: PathBuf,
    /// Total bytes.
    pub bytes: u64,
    /// Bytes per block (at most the slot size).
    pub block: usize,
    /// Ring geometry.
    pub geometry: Geometry,
    /// Have the producer put a CRC32C in every descriptor, and check it.
    pub crc: bool,
    /// Check every block's contents against the pattern.
    pub verify: bool,
    /// Bound on every wait.
    pub timeout: Duration,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Report {
    /// Payload bytes received.
    pub bytes: u64,
    /// Blocks received (without the end-of-stream slot).
    pub blocks: u64,
    /// Seconds from the first block's arrival to the end-of-stream slot.
    pub seconds: f64,
    /// Blocks whose CRC32C was checked.
    pub crc_checked: u64,
    /// The producer's summary line.
    pub producer_line: String,
}

/// Kills and reaps the child if the transfer fails half way.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `producer SOCKET args...` and accepts its connection.
pub fn spawn_and_accept(
    producer: &Path,
    args: &[String],
    timeout: Duration,
) -> std::io::Result<(Child, UnixStream, PathBuf)> {
    let path = crate::unique_socket_path("ring");
    let listener = UnixListener::bind(&path)?;
    listener.set_nonblocking(true)?;
    let mut child = Command::new(producer)
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let deadline = Instant::now() + timeout;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait()? {
                    let _ = std::fs::remove_file(&path);
                    return Err(std::io::Error::other(format!(
                        "producer exited before connecting: {status}"
                    )));
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = std::fs::remove_file(&path);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "producer did not connect",
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    let _ = std::fs::remove_file(&path);
    Ok((child, stream, path))
}

/// Moves `opts.bytes` from a C producer process into this process.
pub fn run(opts: &Options) -> Result<Report, String> {
    let mut args = vec![
        "produce".to_string(),
        opts.bytes.to_string(),
        opts.block.to_string(),
    ];
    if opts.crc {
        args.push("crc".into());
    }
    let source = opts.verify.then(|| pattern::source(opts.block));
    let seg = ShmSegment::create(opts.geometry, Direction::ToMover)
        .map_err(|e| format!("create segment: {e}"))?;
    let (child, stream, _) =
        spawn_and_accept(&opts.producer, &args, opts.timeout).map_err(|e| e.to_string())?;
    let mut reaper = Reaper(Some(child));
    send_fds(&stream, &seg.fds()).map_err(|e| format!("send fds: {e}"))?;
    let mut rx = Consumer::new(seg);
    let alive = || !fd_hung_up(std::os::fd::AsFd::as_fd(&stream));

    let (mut bytes, mut blocks, mut crc_checked) = (0u64, 0u64, 0u64);
    let mut started = None;
    loop {
        let wait = Wait::timeout(opts.timeout).alive(&alive);
        let lease = rx.next(&wait).map_err(|e| format!("block {blocks}: {e}"))?;
        started.get_or_insert_with(Instant::now);
        if lease.is_end() {
            if !lease.is_empty() {
                return Err("end-of-stream slot carries data".into());
            }
            break;
        }
        if opts.crc {
            let want = lease
                .crc()
                .ok_or_else(|| format!("block {blocks}: no CRC in the descriptor"))?;
            let got = crc32c::crc32c(&lease);
            if got != want {
                return Err(format!(
                    "block {blocks}: CRC32C {got:#010x}, descriptor says {want:#010x}"
                ));
            }
            crc_checked += 1;
        }
        if let Some(src) = &source {
            pattern::check_block(src, opts.block, blocks, &lease)?;
        }
        bytes += lease.len() as u64;
        blocks += 1;
    }
    let seconds = started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let mut child = reaper.0.take().expect("child present");
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("producer failed: {status}"));
    }
    Ok(Report {
        bytes,
        blocks,
        seconds,
        crc_checked,
        producer_line: out.trim().to_string(),
    })
}
