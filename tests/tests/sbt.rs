//! The SBT library (`libsbtmover.so`) driven by `sbt-driver` exactly as an
//! Oracle server process would, against a live mover.

use std::path::{Path, PathBuf};
use std::process::Command;

use shmover_client::ClientKind;
use shmover_tests::MoverProcess;

/// The newest `libsbtmover.so` next to the binaries: `cargo build` puts it
/// in `target/<profile>/`, `cargo test` (as a dependency) in `deps/`.
fn library() -> PathBuf {
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

fn driver(m: &MoverProcess, args: &[&str]) -> (bool, String) {
    let out = Command::new(shmover_tools::workspace_binary("sbt-driver").unwrap())
        .arg("--lib")
        .arg(library())
        .arg("--socket")
        .arg(&m.socket)
        .args(args)
        .env_remove("MOVER_SOCKET")
        .output()
        .expect("run sbt-driver");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_sbt_library_passes_every_driver_scenario() {
    let m = MoverProcess::start(&[]);
    let (ok, text) = driver(&m, &["--channels", "4"]);
    let last = text
        .lines()
        .rfind(|l| l.contains(" passed, "))
        .unwrap_or("");
    assert!(ok && last.ends_with(" 0 failed"), "{text}");
    let passed: u32 = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 80, "{last}");
    // Every piece the driver made was deleted again; nothing else is left.
    let mut c = m.client(ClientKind::Sbt);
    assert!(c.list("", 0).unwrap().is_empty(), "{:?}", c.list("", 0));
}

#[test]
fn a_mover_killed_mid_piece_fails_the_piece_and_leaves_nothing_visible() {
    let mut m = MoverProcess::start(&[]);
    let pid = m.pid().to_string();
    let out = Command::new(shmover_tools::workspace_binary("sbt-driver").unwrap())
        .arg("--lib")
        .arg(library())
        .arg("--socket")
        .arg(&m.socket)
        .args(["--kill-mover", &pid])
        .env("MOVER_TIMEOUT", "5")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let orphan = text
        .lines()
        .find_map(|l| l.strip_prefix("orphan piece: "))
        .expect("the driver names its piece")
        .to_string();
    m.restart();
    let mut c = m.client(ClientKind::Sbt);
    assert_eq!(
        c.stat(&orphan).unwrap_err().code,
        shmover_client::code::NOT_FOUND
    );
}
