//! The SBT library (`libsbtmover.so`) driven by `sbt-driver` exactly as an
//! Oracle server process would, against a live mover.

use shmover_client::ClientKind;
use shmover_tests::drivers::{run_driver, sbt_driver};
use shmover_tests::MoverProcess;

#[test]
fn the_sbt_library_passes_every_driver_scenario() {
    let m = MoverProcess::start(&[]);
    let mut cmd = sbt_driver(&m.socket);
    cmd.args(["--channels", "4"]);
    // About 126 checks with 4 channels (random-calls varies by a few).
    run_driver(cmd, 120);
    // Every piece the driver made was deleted again; nothing else is left.
    let mut c = m.client(ClientKind::Sbt);
    assert!(c.list("", 0).unwrap().is_empty(), "{:?}", c.list("", 0));
}

#[test]
fn a_mover_killed_mid_piece_fails_the_piece_and_leaves_nothing_visible() {
    let mut m = MoverProcess::start(&[]);
    let pid = m.pid().to_string();
    let mut cmd = sbt_driver(&m.socket);
    cmd.args(["--kill-mover", &pid]).env("MOVER_TIMEOUT", "5");
    let text = run_driver(cmd, 5);
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

#[test]
fn a_channel_idle_across_a_mover_restart_carries_on_without_a_failed_call() {
    // The driver saves a piece, then waits while the mover restarts under
    // its idle connection; its next sbtinfo2, sbtbackup and sbtrestore
    // must connect afresh instead of failing once on the dead connection.
    let mut m = MoverProcess::start(&[]);
    let dir = shmover_tests::mover::temp_dir("sbt-restart");
    let mut cmd = sbt_driver(&m.socket);
    cmd.arg("--restart-handshake").arg(&dir);
    let driver = std::thread::spawn(move || run_driver(cmd, 9));
    assert!(
        shmover_tests::eventually(std::time::Duration::from_secs(120), || dir
            .join("ready")
            .exists()),
        "the driver never got to the restart"
    );
    m.restart();
    std::fs::write(dir.join("restarted"), b"").unwrap();
    let text = driver.join().expect("the driver failed");
    assert!(
        text.contains("sbtinfo2 after the restart finds the piece"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
