//! The host fakes, run against a mover: `sbt-driver` (an Oracle server
//! process loading `libsbtmover.so`) and `hana-driver` (HANA running
//! `hdbbackint`). Each prints `N passed, M failed` last.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The newest `libsbtmover.so` next to the binaries: `cargo build` puts it
/// in `target/<profile>/`, `cargo test` (as a dependency) in `deps/`.
pub fn sbt_library() -> PathBuf {
    let driver = shmover_tools::workspace_binary("sbt-driver").expect("sbt-driver is built");
    let dir = driver.parent().unwrap();
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    [dir.join("libsbtmover.so"), dir.join("deps/libsbtmover.so")]
        .into_iter()
        .filter_map(|p| mtime(&p).map(|t| (t, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
        .expect("libsbtmover.so is built")
}

/// `sbt-driver` against the mover at `socket`: the command, to add
/// arguments and environment to.
pub fn sbt_driver(socket: &Path) -> Command {
    let mut c = Command::new(shmover_tools::workspace_binary("sbt-driver").unwrap());
    c.arg("--lib")
        .arg(sbt_library())
        .arg("--socket")
        .arg(socket)
        .env_remove("MOVER_SOCKET");
    c
}

/// `hana-driver` with the built `hdbbackint`, against the mover at
/// `socket`.
pub fn hana_driver(socket: &Path) -> Command {
    let mut c =
        Command::new(shmover_tools::workspace_binary("hana-driver").expect("hana-driver is built"));
    c.arg("--hdbbackint")
        .arg(shmover_tools::workspace_binary("hdbbackint").expect("hdbbackint is built"))
        .arg("--socket")
        .arg(socket)
        .env_remove("MOVER_SOCKET");
    c
}

/// The longest a driver may run: far past any scenario's own waits, so
/// that a call that hangs fails the test instead of holding it for good.
const DRIVER_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs a driver; panics with its output unless it exits 0 with
/// `0 failed` and at least `min_passed` checks passed, or if it runs past
/// [`DRIVER_LIMIT`] (then it is killed).
pub fn run_driver(mut cmd: Command, min_passed: u32) -> String {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the driver");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = std::time::Instant::now() + DRIVER_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the driver") {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = std::process::Output {
        status: status.unwrap_or_default(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "the driver ran past {DRIVER_LIMIT:?} and was killed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let last = text
        .lines()
        .rfind(|l| l.contains(" passed, "))
        .unwrap_or("");
    assert!(
        out.status.success() && last.ends_with(" 0 failed"),
        "{text}"
    );
    let passed: u32 = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= min_passed, "{last}");
    text
}

const LIB: &str = "libshmover_client.so";

/// The client's cdylib, next to the `mover` binary. `cargo build` puts it
/// in `target/<profile>/`; `cargo test` builds it only as a dependency, into
/// `target/<profile>/deps/`, and does not copy it up, so the copy in
/// `target/<profile>/` may be missing or stale: take the newer of the two.
pub fn client_library() -> PathBuf {
    let mover = shmover_tools::workspace_binary("mover").expect("the mover binary is built");
    let dir = mover.parent().expect("mover has a directory");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    [dir.join(LIB), dir.join("deps").join(LIB)]
        .into_iter()
        .filter_map(|p| mtime(&p).map(|t| (t, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!(
                "{LIB} not found in {} or its deps/; run `cargo build -p shmover-client`",
                dir.display()
            )
        })
}

/// `tests/python`, where `shmover.py` (the ctypes binding) lives.
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}
