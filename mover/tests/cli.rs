//! The `mover` binary's command line, without a daemon. (Building this test
//! also makes `cargo test --workspace` build `mover` for the integration
//! tests in `/tests`.)

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_mover");

#[test]
fn help_lists_every_command() {
    let out = Command::new(EXE).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // Each command as clap lists it: at the start of a line, indented.
    for cmd in [
        "serve", "put", "get", "ls", "info", "rm", "verify", "status",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(cmd)),
            "{cmd} missing from:\n{text}"
        );
    }
}

#[test]
fn an_unknown_store_scheme_is_refused_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("mover-cli-{}", std::process::id()));
    let out = Command::new(EXE)
        .args(["serve", "--store", "ftp://x"])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported scheme"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_setting_exits_2_and_names_it() {
    // Its own data directory and socket: were the setting accepted, this
    // mover would serve there (and be killed below), not in the user's.
    let dir = std::env::temp_dir().join(format!("mover-cli-bad-{}", std::process::id()));
    let mut child = Command::new(EXE)
        .args(["serve", "--part-size", "1K"])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("MOVER_SOCKET")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the mover did not refuse the setting"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("part_size"));
}

#[test]
fn a_client_command_without_a_mover_fails_naming_the_socket() {
    let sock = std::env::temp_dir().join(format!("no-mover-{}.sock", std::process::id()));
    let out = Command::new(EXE)
        .arg("ls")
        .env("MOVER_SOCKET", &sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mover not reachable at") && err.contains(&*sock.to_string_lossy()),
        "{err}"
    );
}
