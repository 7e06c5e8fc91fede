//! `ring-producer` refuses bad command lines with a usage message and exit
//! status 2, and reports an unreachable socket with status 3. (Building this
//! test also makes `cargo test --workspace` build the program for the
//! cross-process tests in `/tests`.)

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_ring-producer");

#[test]
fn no_arguments_print_usage_and_exit_2() {
    let out = Command::new(EXE).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("usage: ring-producer"));
}

#[test]
fn an_unknown_mode_exits_2() {
    let out = Command::new(EXE)
        .args(["/nonexistent.sock", "dance"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad arguments"));
}

#[test]
fn a_socket_nobody_listens_on_exits_3_and_names_the_path() {
    let path = std::env::temp_dir().join(format!("shmover-none-{}.sock", std::process::id()));
    let out = Command::new(EXE)
        .arg(&path)
        .args(["produce", "4096", "4096"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&*path.to_string_lossy()), "{err}");
}
