//! A `mover serve` child process in a private temporary directory, killed
//! and cleaned up on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shmover_client::{Client, ClientKind, Options};

/// A running mover.
#[derive(Debug)]
pub struct MoverProcess {
    child: Option<Child>,
    /// The private directory (data dir; the store is `store/` under it
    /// unless the test chose another).
    pub dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    log: PathBuf,
    args: Vec<String>,
}

/// A fresh directory under the temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let p = crate::unique_socket_path(tag).with_extension("d");
    std::fs::create_dir_all(&p).expect("create temp dir");
    p
}

/// A directory removed with everything under it when dropped, so a test
/// that fails part-way leaves nothing behind.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A fresh directory on the memory filesystem (`/dev/shm`), for tests
    /// that hold gigabytes at once: the disk of a build machine may not have
    /// them to spare after the build, and what such a test checks is the
    /// mover, not the disk. Falls back to the temp dir where there is no
    /// `/dev/shm`.
    pub fn in_memory(tag: &str) -> Self {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let name = crate::unique_socket_path(tag);
        let p = base
            .join(name.file_name().expect("a file name"))
            .with_extension("d");
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        Self(p)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The directory as a `file://` store URL.
    pub fn store_url(&self) -> String {
        format!("file://{}", self.0.display())
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl MoverProcess {
    /// Starts `mover serve --data-dir DIR` plus `args`, with `setup` to
    /// adjust the command (environment), and waits until it accepts.
    /// Panics if it cannot (the tests' form; see [`MoverProcess::try_start`]).
    pub fn start_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Self {
        Self::try_start_with(args, setup).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`MoverProcess::start_with`], returning why the mover did not
    /// start (its log included) instead of panicking.
    pub fn try_start_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Result<Self, String> {
        let dir = temp_dir("mover");
        let mut m = Self {
            child: None,
            socket: dir.join("run").join("mover.sock"),
            log: dir.join("mover.log"),
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        m.spawn(setup)?;
        Ok(m)
    }

    fn spawn(&mut self, setup: impl FnOnce(&mut Command)) -> Result<(), String> {
        let exe = crate::workspace_binary("mover").map_err(|e| format!("the mover binary: {e}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.args)
            .env_remove("MOVER_SOCKET")
            .env_remove("MOVER_STORE")
            .env_remove("MOVER_CONFIG")
            .env("MOVER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        setup(&mut cmd);
        self.child = Some(
            cmd.spawn()
                .map_err(|e| format!("spawning the mover: {e}"))?,
        );
        self.wait_ready()
    }

    /// Starts the mover again on the same directory and arguments (after
    /// [`MoverProcess::kill`]).
    pub fn restart(&mut self) {
        self.restart_with(|_| {});
    }

    /// [`MoverProcess::restart`], with `setup` to adjust the command again
    /// (the environment of the first start is not kept).
    pub fn restart_with(&mut self, setup: impl FnOnce(&mut Command)) {
        self.kill();
        self.spawn(setup).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts a mover with the default (local directory) store.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, |_| {})
    }

    /// [`MoverProcess::start`], returning why the mover did not start.
    pub fn try_start(args: &[&str]) -> Result<Self, String> {
        Self::try_start_with(args, |_| {})
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "mover exited before listening ({status}):\n{}",
                    self.log()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("mover did not listen within 60 s:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the mover logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of the peer gRPC port (`--peer-listen`), from the log.
    pub fn peer_addr(&self) -> String {
        self.logged_addr("serving peers")
    }

    /// The address of the metrics endpoint (`--metrics-listen`), from the
    /// log.
    pub fn metrics_addr(&self) -> String {
        self.logged_addr("serving metrics")
    }

    /// The `addr=` of the first log line containing `what`.
    fn logged_addr(&self, what: &str) -> String {
        let log = self.log();
        log.lines()
            .filter(|l| l.contains(what))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
            .unwrap_or_else(|| panic!("no \"{what}\" line in the log:\n{log}"))
            .to_string()
    }

    /// The mover's counters and gauges, from its metrics endpoint (started
    /// with `--metrics-listen`).
    pub fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.metrics_addr()).expect("metrics endpoint");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.split_once(' ')?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Connects a client of `kind`.
    pub fn client(&self, kind: ClientKind) -> Client {
        self.try_client(kind)
            .unwrap_or_else(|e| panic!("connect: {e}"))
    }

    /// Connects a client of `kind`, returning the error.
    pub fn try_client(&self, kind: ClientKind) -> shmover_client::Result<Client> {
        Client::connect(&Options {
            socket: self.socket.clone(),
            kind,
            label: "test".into(),
            timeout: Duration::from_secs(60),
        })
    }

    /// A `mover` CLI command aimed at this mover.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(crate::workspace_binary("mover").expect("mover built"));
        c.env("MOVER_SOCKET", &self.socket);
        c
    }

    /// The local store's directory.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it; returns its status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().ok()
    }
}

impl Drop for MoverProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every regular file under `dir`, relative paths, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(
                    p.strip_prefix(base)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Deterministic test data: block `b` of stream `s` is 4 KiB pages picked
/// from a fixed random table, so writing and checking gigabytes costs only
/// memcpy/memcmp even in debug builds.
#[derive(Debug)]
pub struct Pattern {
    pages: Vec<[u8; 4096]>,
}

impl Default for Pattern {
    fn default() -> Self {
        let mut x = 0x1234_5678_9abc_def0u64;
        let pages = (0..61)
            .map(|_| {
                let mut p = [0u8; 4096];
                for w in p.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    w.copy_from_slice(&x.to_le_bytes());
                }
                p
            })
            .collect();
        Self { pages }
    }
}

impl Pattern {
    /// Fills `buf` with the bytes of stream `s` starting at `offset`
    /// (a multiple of 4096).
    pub fn fill(&self, s: u64, offset: u64, buf: &mut [u8]) {
        for (i, chunk) in buf.chunks_mut(4096).enumerate() {
            let page = offset / 4096 + i as u64;
            let p = &self.pages[((page * 7 + s * 13) % self.pages.len() as u64) as usize];
            chunk.copy_from_slice(&p[..chunk.len()]);
        }
    }

    /// Whether `buf` holds the bytes of stream `s` at `offset`.
    pub fn check(&self, s: u64, offset: u64, buf: &[u8]) -> bool {
        buf.chunks(4096).enumerate().all(|(i, chunk)| {
            let page = offset / 4096 + i as u64;
            let p = &self.pages[((page * 7 + s * 13) % self.pages.len() as u64) as usize];
            chunk == &p[..chunk.len()]
        })
    }
}

/// Peak RSS (MiB) and CPU seconds (user + system) of a process, from /proc.
pub fn proc_usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the ")": state is field 3 of stat(5); utime and stime are 14, 15.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // Linux reports these in USER_HZ, which is 100 on every supported
    // architecture.
    let hz = 100.0;
    (hwm_kib / 1024.0, ticks / hz)
}
