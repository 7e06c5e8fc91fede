//! `sbt-driver` without a mover: usage errors and a library that cannot be
//! loaded. (Building this test also makes `cargo test --workspace` build the
//! driver for the integration tests in `/tests`.)

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_sbt-driver");

#[test]
fn an_unknown_flag_prints_usage_and_exits_2() {
    let out = Command::new(EXE).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: sbt-driver"));
}

#[test]
fn a_library_that_cannot_be_loaded_is_a_reported_failure() {
    let out = Command::new(EXE)
        .args(["--lib", "/nonexistent/libnothing.so"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL load: dlopen /nonexistent/libnothing.so"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("0 passed, 1 failed"), "{text}");
}
