//! The BACKINT program (`hdbbackint`) driven by `hana-driver`, a fake HANA
//! that makes FIFOs, feeds and drains them and checks every line and byte,
//! against a live mover.

use shmover_client::ClientKind;
use shmover_tests::drivers::{hana_driver, run_driver};
use shmover_tests::MoverProcess;

#[test]
fn hdbbackint_passes_every_fake_hana_scenario() {
    let m = MoverProcess::start(&[]);
    run_driver(hana_driver(&m.socket), 54);
    // The driver deleted everything it made: the namespace is empty.
    let mut c = m.client(ClientKind::Backint);
    assert!(c.list("", 0).unwrap().is_empty());
}

/// A parameter file for `hdbbackint` in `dir`, pointing at `socket`.
fn params(dir: &std::path::Path, socket: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("hdbbackint.toml");
    std::fs::write(
        &p,
        format!(
            "socket = \"{}\"\npipe_timeout_s = 0\nlog_file = \"{}\"\n",
            socket.display(),
            dir.join("hdbbackint.log").display()
        ),
    )
    .unwrap();
    p
}

/// Runs `hdbbackint -f function` on `input`; returns its exit code and
/// output lines.
fn hdbbackint(params: &std::path::Path, function: &str, input: &str) -> (Option<i32>, String) {
    let (code, out) = hdbbackint_bytes(params, function, input.as_bytes());
    (code, String::from_utf8_lossy(&out).into_owned())
}

/// [`hdbbackint`] with input and output as bytes (paths need not be UTF-8).
fn hdbbackint_bytes(
    params: &std::path::Path,
    function: &str,
    input: &[u8],
) -> (Option<i32>, Vec<u8>) {
    let dir = params.parent().unwrap();
    let (i, o) = (
        dir.join(format!("{function}.in")),
        dir.join(format!("{function}.out")),
    );
    std::fs::write(&i, input).unwrap();
    let status = std::process::Command::new(shmover_tools::workspace_binary("hdbbackint").unwrap())
        .args(["-f", function, "-u", "SIT"])
        .arg("-p")
        .arg(params)
        .arg("-i")
        .arg(&i)
        .arg("-o")
        .arg(&o)
        .env_remove("MOVER_SOCKET")
        .status()
        .unwrap();
    (status.code(), std::fs::read(&o).unwrap_or_default())
}

#[test]
fn a_path_in_latin_1_is_saved_inquired_and_restored_byte_for_byte() {
    // HANA passes paths as bytes; one named in Latin-1 ("café" with 0xE9)
    // used to fail its backup: metadata must be UTF-8.
    use std::os::unix::ffi::OsStrExt;
    let m = MoverProcess::start(&[]);
    let dir = shmover_tests::mover::temp_dir("backint-latin1");
    let params = params(&dir, &m.socket);
    let mut raw = dir.as_os_str().as_bytes().to_vec();
    raw.extend_from_slice(b"/caf\xe9-100%.dat");
    let src = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&raw));
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &body).unwrap();
    // A line of quoted tokens, as HANA writes them and we answer.
    let line = |head: &[u8], tail: &[&[u8]]| {
        let mut l = head.to_vec();
        for t in tail {
            l.extend_from_slice(b" \"");
            l.extend_from_slice(t);
            l.push(b'"');
        }
        l
    };
    let nl = |mut l: Vec<u8>| {
        l.push(b'\n');
        l
    };

    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (code, out) = hdbbackint_bytes(&params, "backup", &nl(line(b"#FILE", &[&raw])));
    assert_eq!(code, Some(0), "{}", text(&out));
    let saved = out.strip_prefix(b"#SAVED \"").expect("saved");
    let ebid = saved.split(|&b| b == b'"').next().unwrap().to_vec();
    assert!(
        out.starts_with(&line(b"#SAVED", &[&ebid, &raw])),
        "the path comes back as its bytes: {}",
        text(&out)
    );

    let (code, out) = hdbbackint_bytes(&params, "inquire", &nl(line(b"#NULL", &[&raw])));
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with(&line(b"#BACKUP", &[&ebid, &raw])),
        "{}",
        text(&out)
    );
    let (code, out) = hdbbackint_bytes(&params, "inquire", b"#NULL\n");
    assert_eq!(code, Some(0));
    assert!(
        out.windows(raw.len()).any(|w| w == &raw[..]),
        "listing every backup shows the exact path: {}",
        text(&out)
    );

    let dest = dir.join("restored");
    std::fs::write(&dest, b"").unwrap();
    let input = nl(line(b"#EBID", &[&ebid, &raw, dest.as_os_str().as_bytes()]));
    let (code, out) = hdbbackint_bytes(&params, "restore", &input);
    assert_eq!(code, Some(0), "{}", text(&out));
    assert!(
        out.starts_with(&line(b"#RESTORED", &[&ebid, &raw])),
        "{}",
        text(&out)
    );
    assert!(
        std::fs::read(&dest).unwrap() == body,
        "restored bytes differ"
    );

    // The catalog shows the path as text, the byte that is not UTF-8 as %E9.
    let mut c = m.client(ClientKind::Backint);
    let all = c.list("", 0).unwrap();
    assert_eq!(all.len(), 1);
    let shown = all[0]
        .metadata
        .get("backint.path")
        .cloned()
        .unwrap_or_default();
    assert!(shown.ends_with("/caf%E9-100%.dat"), "{shown}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restore_that_cannot_start_leaves_an_existing_file_as_it_was() {
    // The mover refuses the restore's stream (max_streams is held by
    // another backup): the destination file must not have been truncated
    // first.
    let m = MoverProcess::start(&["--max-streams", "1"]);
    let dir = shmover_tests::mover::temp_dir("backint-dest");
    let params = params(&dir, &m.socket);
    let src = dir.join("source.dat");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &bytes).unwrap();
    let (code, out) = hdbbackint(&params, "backup", &format!("#FILE \"{}\"\n", src.display()));
    assert_eq!(code, Some(0), "{out}");
    let ebid = out
        .split('"')
        .nth(1)
        .expect("#SAVED \"<ebid>\" ...")
        .to_string();
    let dest = dir.join("dest.dat");
    std::fs::write(&dest, b"what the file held before").unwrap();
    let line = format!(
        "#EBID \"{ebid}\" \"{}\" \"{}\"\n",
        src.display(),
        dest.display()
    );
    let mut holder = m.client(ClientKind::Generic);
    holder
        .open_write("holds-the-only-stream", 1 << 20, 0, &Default::default())
        .unwrap();
    let (code, out) = hdbbackint(&params, "restore", &line);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("#ERROR"), "{out}");
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        b"what the file held before",
        "a restore that never started changed its destination"
    );
    holder.abort("done").unwrap();
    let (code, out) = hdbbackint(&params, "restore", &line);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("#RESTORED"), "{out}");
    assert!(
        std::fs::read(&dest).unwrap() == bytes,
        "the restore's bytes differ"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_backup_that_fails_before_reading_its_pipe_releases_hanas_writer() {
    // No mover at the socket: the backup fails before it opens HANA's pipe.
    // HANA's writer, blocked opening the pipe for want of a reader, must be
    // let go (its writes then fail), not left blocked after we exit.
    let dir = shmover_tests::mover::temp_dir("backint-release");
    let params = params(&dir, &dir.join("no-mover.sock"));
    let fifo = dir.join("DATA_BACKUP_databackup_0_1");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        use std::io::Write;
        let got = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(&[1u8; 65536])
                    .and_then(|_| f.write_all(&[1u8; 65536]))
            });
        let _ = tx.send(got);
    });
    let (code, out) = hdbbackint(
        &params,
        "backup",
        &format!("#PIPE \"{}\"\n", fifo.display()),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("#ERROR"), "{out}");
    let writer = rx.recv_timeout(std::time::Duration::from_secs(60));
    if writer.is_err() {
        // Free the writer before failing.
        drop(std::fs::File::open(&fifo));
    }
    let err = writer
        .expect("HANA's writer is still blocked opening its pipe")
        .expect_err("the writes went nowhere");
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_line_holding_a_nul_byte_is_an_error_not_a_shorter_path() {
    // '#FILE <dir>/src<NUL>x' used to be read as '#FILE <dir>/src', and
    // a file nobody named was backed up.
    let m = MoverProcess::start(&[]);
    let dir = shmover_tests::mover::temp_dir("backint-nul");
    let params = params(&dir, &m.socket);
    let src = dir.join("src");
    std::fs::write(&src, b"not named by the line").unwrap();
    let (code, out) = hdbbackint(&params, "backup", &format!("#FILE {}\0x\n", src.display()));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("#ERROR") && !out.contains("#SAVED"),
        "{out:?}"
    );
    let mut c = m.client(ClientKind::Backint);
    assert!(c.list("", 0).unwrap().is_empty(), "something was saved");
    let _ = std::fs::remove_dir_all(&dir);
}
