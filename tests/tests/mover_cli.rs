//! The `mover` CLI against a live mover: put, get (files and -), ls, info,
//! verify, rm and status, quiet when piped.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use shmover_tests::MoverProcess;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn data(n: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn put_get_ls_info_verify_rm_round_trip_a_file() {
    let m = MoverProcess::start(&[]);
    let input = m.dir.join("input.bin");
    let bytes = data((9 << 20) + 333);
    std::fs::write(&input, &bytes).unwrap();

    let out = run(m
        .cli()
        .args(["put", "--block-size", "256K", "--meta", "db=ORCL"])
        .arg(&input)
        .arg("orcl/full-1"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stored orcl/full-1"), "{err}");
    // Piped: no progress bar escape codes.
    assert!(!err.contains('\u{1b}'), "{err:?}");

    let out = run(m.cli().args(["ls", "orcl/"]));
    let ls = String::from_utf8_lossy(&out.stdout);
    assert!(
        ls.contains("orcl/full-1") && ls.contains(&bytes.len().to_string()),
        "{ls}"
    );

    let out = run(m.cli().args(["info", "orcl/full-1"]));
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(info.contains(&format!("size: {}", bytes.len())), "{info}");
    assert!(info.contains("block_size: 262144"), "{info}");
    assert!(info.contains("meta.db: ORCL"), "{info}");
    let crc = format!("crc32c: {:08x}", crc32c::crc32c(&bytes));
    assert!(info.contains(&crc), "{info} vs {crc}");

    let output = m.dir.join("restored.bin");
    run(m.cli().args(["get", "orcl/full-1"]).arg(&output));
    assert!(
        std::fs::read(&output).unwrap() == bytes,
        "restored file differs"
    );

    let out = run(m.cli().args(["verify", "orcl/full-1"]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok orcl/full-1"));

    run(m.cli().args(["rm", "orcl/full-1"]));
    let out = m.cli().args(["info", "orcl/full-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such backup"));
}

#[test]
fn stdin_and_stdout_work_as_dash() {
    let m = MoverProcess::start(&["--store", "memory://"]);
    let bytes = data(3 << 20);
    let mut put = m
        .cli()
        .args(["put", "-", "piped"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    put.stdin.take().unwrap().write_all(&bytes).unwrap();
    assert!(put.wait_with_output().unwrap().status.success());
    let out = run(m.cli().args(["get", "piped", "-"]));
    assert!(out.stdout == bytes, "stdout differs");
}

#[test]
fn get_of_a_missing_backup_fails_and_leaves_no_file() {
    let m = MoverProcess::start(&["--store", "memory://"]);
    let target = m.dir.join("never.bin");
    let out = m
        .cli()
        .args(["get", "missing"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing: no such backup"));
    assert!(!target.exists());
}

#[test]
fn status_lists_a_live_stream_with_its_client() {
    let m = MoverProcess::start(&["--store", "memory://"]);
    let mut c = m.client(shmover_client::ClientKind::Backint);
    c.open_write("live/one", 1 << 20, 0, &Default::default())
        .unwrap();
    c.write_all(&[9u8; 2 << 20]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let out = run(m.cli().arg("status"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("2097152") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let line = text
        .lines()
        .find(|l| l.contains("live/one"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(&std::process::id().to_string()), "{line}");
    assert!(line.contains("backint") && line.contains(" in "), "{line}");
    assert!(line.contains("2097152"), "{line}");
    c.commit().unwrap();
}
