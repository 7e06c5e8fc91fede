//! The Python binding (`tests/python/shmover.py`, ctypes over the client's
//! C ABI) against a live mover: `tests/python/test_roundtrip.py` backs up
//! and restores 256 MiB from Python and checks the error codes. Needs
//! `python3` on PATH (standard library only).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmover_tests::drivers::client_library;
use shmover_tests::MoverProcess;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/test_roundtrip.py")
}

/// Reads a child's pipe to the end on a thread, so that neither pipe fills.
fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

#[test]
fn python_backs_up_and_restores_256_mib_through_the_c_abi() {
    let lib = client_library();
    let mover = MoverProcess::start(&[]);
    let started = Instant::now();
    let mut child = match Command::new("python3")
        .arg(script())
        .env("SHMOVER_CLIENT_LIB", &lib)
        .env("MOVER_SOCKET", &mover.socket)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "python3 is not on PATH: this test runs tests/python/test_roundtrip.py \
             and needs Python 3 (standard library only)"
        ),
        Err(e) => panic!("cannot start python3: {e}"),
    };
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = started + Duration::from_secs(600);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for python3") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let report = format!(
        "library {}\n--- python stdout\n{out}--- python stderr\n{err}--- mover log\n{}",
        lib.display(),
        mover.log()
    );
    let Some(status) = status else {
        panic!("test_roundtrip.py did not finish within 600 s\n{report}");
    };
    assert!(
        status.success(),
        "test_roundtrip.py failed ({status})\n{report}"
    );
    let last = out.lines().last().unwrap_or_default();
    let passed = last
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        passed.is_some_and(|n| n > 0),
        "expected a last line \"N passed, 0 failed\", got {last:?}\n{report}"
    );
    println!(
        "test_roundtrip.py took {:.1} s with {}\n{out}",
        elapsed.as_secs_f64(),
        lib.display()
    );
}
