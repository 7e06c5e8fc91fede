//! Reliability under crashes, store faults, hostile clients and load.
//!
//! Every test runs in CI with small counts. `SHMOVER_SOAK=1` is the soak
//! mode: the same tests with more runs and more bytes (RELIABILITY.md has
//! the command and the figures). Each test prints one line
//! `reliability: NAME runs=.. faults=.. bytes_verified=.. failures=..`
//! (shown with `--nocapture`), which is what RELIABILITY.md records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmover_client::{code, Client, ClientKind};
use shmover_tests::drivers::{hana_driver, run_driver, sbt_driver};
use shmover_tests::faultproxy::{Fault, FaultProxy};
use shmover_tests::mover::{files_under, temp_dir, Pattern};
use shmover_tests::objects::{backup, restore_and_check};
use shmover_tests::{eventually, MoverProcess, S3Server};

const MIB: u64 = 1 << 20;

fn soak() -> bool {
    std::env::var_os("SHMOVER_SOAK").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `ci` in CI, `soak` in the soak mode.
fn scale(ci: u64, soak_value: u64) -> u64 {
    if soak() {
        soak_value
    } else {
        ci
    }
}

fn report(name: &str, runs: u64, faults: u64, bytes: u64, failures: u64) {
    println!(
        "reliability: {name} runs={runs} faults={faults} bytes_verified={bytes} failures={failures}"
    );
}

/// A small deterministic generator (splitmix64 over a counter) for fault
/// timings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        shmover_tools::pattern::splitmix64(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn sbt_clients_killed_at_random_points_never_leave_a_partial_piece() {
    let mut m = MoverProcess::start(&[]);
    let bytes = 32 * MIB;
    let socket = m.socket.clone();
    let bench = |prefix: &str| {
        let mut c = sbt_driver(&socket);
        // The piece stays (no remove in flight when the kill lands), so
        // a committed piece is always there to check.
        c.args([
            "--prefix",
            prefix,
            "--bench-bytes",
            &bytes.to_string(),
            "--bench-keep",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        c
    };
    // One undisturbed run sets the time window the kills fall into.
    let t0 = Instant::now();
    assert!(bench("kill/calibrate").status().unwrap().success());
    let window = (t0.elapsed().as_micros() as u64).max(1000);
    let runs = scale(20, 200);
    let mut rng = Rng(0x5eed);
    let (mut mid, mut after, mut verified) = (0u64, 0u64, 0u64);
    let mut sbt = m.client(ClientKind::Sbt);
    sbt.delete("kill/calibrate/bench/piece").unwrap();
    for i in 0..runs {
        let prefix = format!("kill/{i}");
        let mut child = bench(&prefix).spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(window)));
        let _ = child.kill();
        let _ = child.wait();
        // A killed sbt-driver cannot remove its trace file at exit.
        let _ = std::fs::remove_file(format!("/tmp/sbt-driver-{}.trc", child.id()));
        assert!(m.alive(), "the mover died after kill {i}:\n{}", m.log());
        // A kill after the close was sent lets the mover finish the piece:
        // wait until it has settled every stream.
        assert!(
            eventually(Duration::from_secs(30), || sbt
                .status()
                .is_ok_and(|s| s.streams.is_empty())),
            "streams did not settle after kill {i}"
        );
        // Either the piece is whole (the kill came after its close) and
        // restores, or it is not there at all.
        let name = format!("{prefix}/bench/piece");
        match sbt.stat(&name) {
            Ok(info) => {
                assert_eq!(info.size, bytes, "{name} is visible but not whole");
                assert_eq!(sbt.open_read(&name, 0).unwrap(), bytes);
                let mut got = 0;
                while let Some(b) = sbt.next_block().unwrap() {
                    got += b.len() as u64;
                }
                sbt.close_read().unwrap();
                assert_eq!(got, bytes);
                verified += got;
                sbt.delete(&name).unwrap();
                after += 1;
            }
            Err(e) => {
                assert_eq!(e.code, code::NOT_FOUND, "{name}: {e:?}");
                mid += 1;
            }
        }
    }
    // Every killed upload was aborted: the store holds nothing at all.
    assert!(
        eventually(Duration::from_secs(10), || files_under(&m.store_dir())
            .is_empty()),
        "left behind: {:?}",
        files_under(&m.store_dir())
    );
    // And the mover still serves a full backup.
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    backup(&mut c, &pat, 1, "after/kills", 8 * MIB, 1 << 20).unwrap();
    verified += restore_and_check(&mut c, &pat, 1, "after/kills", 8 * MIB);
    println!("kills mid-piece {mid}, after the piece was whole {after}");
    report("sbt_client_sigkill", runs, runs, verified, 0);
    m.kill();
}

/// HANA's parameter file for `hdbbackint`, pointing at `socket`.
fn backint_params(dir: &Path, socket: &Path) -> PathBuf {
    let p = dir.join("hdbbackint.toml");
    std::fs::write(
        &p,
        format!(
            "socket = \"{}\"\npipe_timeout_s = 5\nlog_file = \"{}\"\n",
            socket.display(),
            dir.join("hdbbackint.log").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn hdbbackint_killed_mid_backup_leaves_nothing_visible() {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let m = MoverProcess::start(&[]);
    let dir = temp_dir("kill-backint");
    let params = backint_params(&dir, &m.socket);
    let runs = scale(5, 50);
    let mut rng = Rng(0xb4c1);
    for i in 0..runs {
        let pipe = dir.join(format!("databackup_{i}"));
        nix::unistd::mkfifo(&pipe, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let input = dir.join(format!("in.{i}"));
        std::fs::write(
            &input,
            format!(
                "#SOFTWAREID \"backint 1.04\" \"HANA fake\"\n#PIPE \"{}\"\n",
                pipe.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(shmover_tools::workspace_binary("hdbbackint").unwrap())
            .args(["-f", "backup", "-u", "KIL", "-c", "1", "-l", "COMPLETE"])
            .arg("-p")
            .arg(&params)
            .arg("-i")
            .arg(&input)
            .arg("-o")
            .arg(dir.join(format!("out.{i}")))
            .env_remove("MOVER_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // HANA writes the pipe until hdbbackint dies under it.
        let p = pipe.clone();
        let (flowing, first_write) = std::sync::mpsc::channel();
        let feeder = std::thread::spawn(move || {
            // Opened without blocking (ENXIO until a reader is there): a
            // hdbbackint killed before it opened the pipe never will.
            // As long as the test waits for the first write below.
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut f = loop {
                match std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                    .open(&p)
                {
                    Ok(f) => break f,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return 0u64,
                }
            };
            let flags = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETFL).unwrap_or(0);
            let blocking =
                nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
            let _ = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETFL(blocking));
            let block = vec![7u8; 1 << 20];
            let mut n = 0;
            while n < (1u64 << 30) && f.write_all(&block).is_ok() {
                n += 1 << 20;
                if n == 1 << 20 {
                    let _ = flowing.send(());
                }
            }
            n
        });
        // Data is flowing through hdbbackint into a ring; the kill lands at
        // a random point of the stream after that.
        assert!(
            first_write.recv_timeout(Duration::from_secs(30)).is_ok(),
            "run {i}: hdbbackint never read its pipe"
        );
        std::thread::sleep(Duration::from_millis(rng.below(200)));
        let _ = child.kill();
        let _ = child.wait();
        let fed = feeder.join().unwrap();
        assert!(
            fed < 1 << 30,
            "run {i}: the backup finished before the kill"
        );
    }
    let mut c = m.client(ClientKind::Backint);
    assert!(
        eventually(Duration::from_secs(10), || c
            .list("", 0)
            .unwrap()
            .is_empty()
            && files_under(&m.store_dir()).is_empty()),
        "visible: {:?}, stored: {:?}",
        c.list("", 0),
        files_under(&m.store_dir())
    );
    report("hdbbackint_sigkill", runs, runs, 0, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ring segment (a memfd) mapped at `addr` in this process, opened for
/// writing through /proc: the same memory the client maps.
fn ring_segment_at(addr: usize) -> std::fs::File {
    use std::os::unix::fs::MetadataExt;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let inode = maps
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (lo, hi) = f.next()?.split_once('-')?;
            let (lo, hi) = (
                usize::from_str_radix(lo, 16).ok()?,
                usize::from_str_radix(hi, 16).ok()?,
            );
            let inode: u64 = f.nth(3)?.parse().ok()?;
            (lo <= addr && addr < hi && l.contains("/memfd:")).then_some(inode)
        })
        .expect("the slot lies in a memfd mapping");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .find(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == inode))
        .map(|e| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(e.path())
                .unwrap()
        })
        .expect("the memfd is open in this process")
}

#[test]
fn a_client_scribbling_on_its_ring_never_disturbs_the_mover_or_other_streams() {
    use std::os::unix::fs::FileExt;
    let m = MoverProcess::start(&[]);
    let rounds = scale(10, 200);
    let mut rng = Rng(0x4057);
    let pat = Pattern::default();
    let mut verified = 0;
    let mut refused = 0;
    for round in 0..rounds {
        // A healthy stream runs alongside, in a process of its own (so that
        // the only ring segment this process holds is the hostile one): an
        // SBT channel backs up 24 MiB and restores it, CRC32C checked.
        let healthy = sbt_driver(&m.socket)
            .args(["--prefix", &format!("healthy/{round}"), "--bench-bytes"])
            .arg((24 * MIB).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut c = m.client(ClientKind::Generic);
        c.open_write(&format!("hostile/{round}"), 1 << 20, 0, &BTreeMap::new())
            .unwrap();
        let slot = c.reserve().unwrap();
        pat.fill(9, 0, &mut slot[..4096]);
        let seg = ring_segment_at(slot.as_ptr() as usize);
        c.commit_block(4096).unwrap();
        let mut failed = false;
        for _ in 0..64 {
            // Scribble on the producer line, the consumer line or the
            // descriptors, then commit a block.
            let at = match rng.below(3) {
                0 => 128 + rng.below(16) * 8,
                1 => 256 + rng.below(16) * 8,
                _ => 4096 + rng.below(64) * 8,
            };
            let _ = seg.write_at(&rng.next().to_le_bytes(), at);
            let r = c.reserve().map(|s| pat.fill(9, 0, &mut s[..4096]));
            if r.and_then(|()| c.commit_block(4096)).is_err() {
                failed = true;
                break;
            }
        }
        let committed = !failed && c.commit().is_ok();
        if !committed {
            refused += 1;
        }
        drop(c);
        let out = healthy.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the healthy stream failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        verified += 24 * MIB;
        let mut check = m.client(ClientKind::Generic);
        if committed {
            // The mover could not tell this one was touched (the scribbles
            // landed where they did no harm): it is whole and consistent,
            // its bytes matching the size and CRC32C its manifest records
            // (the mover checks both as it restores).
            let name = format!("hostile/{round}");
            let size = check.open_read(&name, 0).unwrap();
            let mut got = 0u64;
            while let Some(block) = check.next_block().unwrap() {
                got += block.len() as u64;
            }
            assert_eq!(got, size, "{name}");
            check.delete(&name).unwrap();
        } else {
            assert_eq!(
                check.stat(&format!("hostile/{round}")).unwrap_err().code,
                code::NOT_FOUND
            );
        }
    }
    let mut m = m;
    assert!(m.alive(), "{}", m.log());
    println!("hostile streams refused {refused} of {rounds}");
    // Random values in the ring's counters and descriptors: a mover that
    // refused none of them would not be checking them.
    assert!(refused > 0, "no hostile stream of {rounds} was refused");
    report("hostile_ring_client", rounds, rounds, verified, 0);
}

/// A mover with `--part-size 5M` on the loopback S3 server under `prefix`,
/// reached through a fault proxy that passes everything until the test
/// throws one of its switches, with `env` added. Bind as `(s3, proxy, m)`,
/// so the mover stops first.
fn mover_behind_a_proxy(
    prefix: &str,
    env: &[(&str, &str)],
) -> (S3Server, FaultProxy, MoverProcess) {
    let s3 = S3Server::start().unwrap();
    let proxy = FaultProxy::start(s3.addr(), vec![Fault::Pass]).unwrap();
    let url = s3.store_url(prefix);
    let endpoint = proxy.endpoint();
    let m = MoverProcess::start_with(&["--store", &url, "--part-size", "5M"], |cmd| {
        s3.configure(cmd);
        cmd.env("AWS_ENDPOINT", &endpoint)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .envs(env.iter().copied());
    });
    (s3, proxy, m)
}

#[test]
fn s3_faults_are_retried_and_the_bytes_are_identical() {
    let s3 = S3Server::start().unwrap();
    let proxy = FaultProxy::start(
        s3.addr(),
        vec![
            Fault::Pass,
            Fault::Status(503),
            Fault::Pass,
            Fault::Reset,
            Fault::Pass,
            Fault::Status(500),
            Fault::Slow(Duration::from_millis(300)),
            Fault::Pass,
        ],
    )
    .unwrap();
    let url = s3.store_url("faults");
    let endpoint = proxy.endpoint();
    let m = MoverProcess::start_with(&["--store", &url, "--part-size", "5M"], |cmd| {
        s3.configure(cmd);
        cmd.env("AWS_ENDPOINT", &endpoint)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("MOVER_RETRY_DEADLINE_SECS", "60");
    });
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    let objects = scale(3, 20);
    let size = scale(24, 256) * MIB + 13;
    let mut verified = 0;
    for i in 0..objects {
        let name = format!("faulty/{i}");
        backup(&mut c, &pat, i, &name, size, 1 << 20).unwrap();
        verified += restore_and_check(&mut c, &pat, i, &name, size);
    }
    assert!(proxy.injected() >= 8, "only {} faults", proxy.injected());
    report("s3_faults_retried", objects, proxy.injected(), verified, 0);
}

#[test]
fn a_store_down_past_the_retry_deadline_fails_the_backup_clearly() {
    let (_s3, proxy, m) = mover_behind_a_proxy(
        "down",
        &[("MOVER_RETRY_DEADLINE_SECS", "3"), ("MOVER_RETRY_MAX", "3")],
    );
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    c.open_write("down/piece", 1 << 20, 0, &BTreeMap::new())
        .unwrap();
    let mut err = None;
    for i in 0..64u64 {
        if i == 8 {
            proxy.set_down(true);
        }
        let r = c.reserve().map(|s| pat.fill(2, i << 20, s));
        if let Err(e) = r.and_then(|()| c.commit_block(1 << 20)) {
            err = Some(e);
            break;
        }
    }
    let err = err.or_else(|| c.commit().err()).expect("the backup failed");
    assert!(
        err.message.contains("down/piece") && err.message.contains("store"),
        "{err:?}"
    );
    proxy.set_down(false);
    let mut c = m.client(ClientKind::Generic);
    assert_eq!(c.stat("down/piece").unwrap_err().code, code::NOT_FOUND);
    // The store is back: the next backup works.
    backup(&mut c, &pat, 3, "down/after", 6 * MIB, 1 << 20).unwrap();
    let n = restore_and_check(&mut c, &pat, 3, "down/after", 6 * MIB);
    report("s3_down_past_deadline", 1, proxy.injected(), n, 0);
}

#[test]
fn a_full_local_store_fails_the_backup_clearly_and_leaves_nothing_visible() {
    let dir = temp_dir("full");
    let root = dir.join("small");
    std::fs::create_dir_all(&root).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m,mode=0700", "shmover-full"])
        .arg(&root)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        other => {
            // Mounting needs CAP_SYS_ADMIN (root outside a container).
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            println!("skipped: cannot mount a 24 MiB tmpfs here ({why})");
            report("local_store_full", 0, 0, 0, 0);
            return;
        }
    }
    let url = format!("file://{}", root.join("store").display());
    let m = MoverProcess::start(&["--store", &url]);
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    let err = backup(&mut c, &pat, 4, "full/piece", 64 * MIB, 1 << 20).unwrap_err();
    assert!(
        err.message.contains("full/piece") && err.message.contains("No space left on device"),
        "{err:?}"
    );
    let mut c = m.client(ClientKind::Generic);
    assert_eq!(c.stat("full/piece").unwrap_err().code, code::NOT_FOUND);
    // The failed upload's space is given back: a backup that fits works.
    backup(&mut c, &pat, 5, "full/small", 4 * MIB, 1 << 20).unwrap();
    let n = restore_and_check(&mut c, &pat, 5, "full/small", 4 * MIB);
    drop(m);
    let _ = Command::new("umount").arg(&root).status();
    let _ = std::fs::remove_dir_all(&dir);
    println!("error: {}", err.message);
    report("local_store_full", 1, 1, n, 0);
}

#[test]
fn sixteen_channels_of_sbt_backint_and_generic_streams_at_once() {
    // 8 generic streams and 6 SBT channels (one process each) back up and
    // restore while the fake HANA runs its whole scenario (up to 4 pipes)
    // twice: 16 channels and more at the peak.
    let memory_limit = 256 * MIB;
    let ring_memory = 256 * MIB;
    let mut m = MoverProcess::start(&["--memory-limit", "256M", "--ring-memory", "256M"]);
    let size = scale(32, 1024) * MIB;
    let mut threads = Vec::new();
    for s in 0..8u64 {
        let socket = m.socket.clone();
        threads.push(std::thread::spawn(move || {
            let mut c = Client::connect(&shmover_client::Options {
                socket,
                kind: ClientKind::Generic,
                label: "load".into(),
                timeout: Duration::from_secs(120),
            })
            .unwrap();
            let pat = Pattern::default();
            let name = format!("load/{s}");
            backup(&mut c, &pat, s, &name, size, 1 << 20).unwrap();
            restore_and_check(&mut c, &pat, s, &name, size)
        }));
    }
    let sbt: Vec<_> = (0..6)
        .map(|i| {
            sbt_driver(&m.socket)
                .args([
                    "--prefix",
                    &format!("load/sbt{i}"),
                    "--bench-bytes",
                    &size.to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let hana: Vec<_> = (0..2)
        .map(|_| {
            let socket = m.socket.clone();
            std::thread::spawn(move || run_driver(hana_driver(&socket), 54))
        })
        .collect();
    let mut verified = 0;
    for t in threads {
        verified += t.join().expect("a generic stream failed");
    }
    for c in sbt {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The restore checked the stored bytes' CRC32C end to end.
        verified += size;
    }
    for h in hana {
        h.join().expect("hana-driver failed");
    }
    let rss = (shmover_tools::mover::proc_usage(m.pid()).0 * MIB as f64) as u64;
    // The bound: in-flight memory, the rings, and the process itself.
    // Printed, not asserted: memory is the benchmark's to judge
    // (`mover-bench channels` reports peak RSS against this bound).
    let bound = memory_limit + ring_memory + 160 * MIB;
    println!(
        "mover peak RSS {} MiB (bound {} MiB)",
        rss >> 20,
        bound >> 20
    );
    report("mixed_load_16_channels", 16, 0, verified, 0);
    assert!(m.alive());
}

mod hostile_backint_input {
    use super::*;
    use proptest::prelude::*;

    /// Lines HANA might send, and lines it never would.
    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("#SOFTWAREID \"backint 1.50\" \"HANA fake\"".to_string()),
            Just("#SOFTWAREID \"backint 1.04\" \"HANA fake\"".to_string()),
            "#(NULL|EBID|PIPE|FILE|SOFTWAREID|BOGUS) .{0,40}",
            "#(NULL|EBID) \"[^\"\\n]{0,20}\"( \"[^\"\\n]{0,20}\")?",
            "#EBID \"[a-z0-9]{0,8}\" \"/[a-z/ \\\\\"]{0,20}\"",
            "[^\\n]{0,80}",
            "\"{1,5}[ #]{0,3}\\\\{0,4}",
        ]
    }

    /// Whatever the input file holds, hdbbackint answers with an exit code
    /// (0, 1 or 2) and never dies of a signal, and every line it writes
    /// starts with a `#` keyword.
    #[test]
    fn hdbbackint_never_crashes_on_hostile_input_files() {
        use proptest::test_runner::{Config, TestRunner};
        let m = MoverProcess::start(&[]);
        let dir = temp_dir("fuzz-backint");
        let params = backint_params(&dir, &m.socket);
        let cases = scale(48, 500) as u32;
        let mut runner = TestRunner::new(Config::with_cases(cases));
        let codes = std::sync::Mutex::new([0u64; 3]);
        let strategy = (
            proptest::collection::vec(line(), 0..8),
            prop_oneof![Just("inquire"), Just("delete"), Just("restore")],
        );
        let next = std::sync::atomic::AtomicU64::new(0);
        runner
            .run(&strategy, |(lines, function)| {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let input = dir.join(format!("in.{n}"));
                let output = dir.join(format!("out.{n}"));
                std::fs::write(&input, lines.join("\n") + "\n").unwrap();
                let status = Command::new(shmover_tools::workspace_binary("hdbbackint").unwrap())
                    .args(["-f", function, "-u", "FUZ"])
                    .arg("-p")
                    .arg(&params)
                    .arg("-i")
                    .arg(&input)
                    .arg("-o")
                    .arg(&output)
                    .env_remove("MOVER_SOCKET")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                let code = status.code();
                prop_assert!(matches!(code, Some(0..=2)), "{status:?} for {lines:?}");
                codes.lock().unwrap()[code.unwrap_or(0) as usize] += 1;
                let out = std::fs::read_to_string(&output).unwrap_or_default();
                prop_assert!(
                    out.lines().all(|l| l.starts_with('#')),
                    "{out:?} for {lines:?}"
                );
                Ok(())
            })
            .unwrap();
        let mut m = m;
        assert!(m.alive());
        let codes = codes.into_inner().unwrap();
        println!("hdbbackint exit codes 0/1/2: {codes:?}");
        report(
            "hostile_backint_input",
            u64::from(cases),
            u64::from(cases),
            0,
            0,
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The sizes of the backup fuzz's sources: `src.k` holds `SOURCES[k]`
    /// pattern bytes; `src.{SOURCES.len()}` does not exist.
    const SOURCES: [u64; 5] = [0, 1, 100 << 10, (1 << 20) + 3, (3 << 20) + 5];

    /// A backup line naming one of the fuzz's sources, in any of the forms
    /// HANA's grammar allows and with any size hint, or a line of junk.
    fn backup_line(dir: String) -> impl Strategy<Value = String> {
        let hint = prop_oneof![
            Just(""),
            Just(" 0"),
            Just(" 7"),
            Just(" 1048576"),
            Just(" 18446744073709551615"),
            Just(" 99999999999999999999999"),
            Just(" -1"),
            Just(" x"),
            Just(" 5 6"),
        ];
        let named = (
            0..=SOURCES.len(),
            prop_oneof![Just("#PIPE"), Just("#FILE")],
            any::<bool>(),
            hint,
        )
            .prop_map(move |(k, kw, quoted, hint)| {
                let path = format!("{dir}/src.{k}");
                if quoted {
                    format!("{kw} \"{path}\"{hint}")
                } else {
                    format!("{kw} {path}{hint}")
                }
            });
        prop_oneof![4 => named, 1 => line()]
    }

    /// The values of an answer line whose values hold no quote or space.
    fn values(line: &str) -> Vec<&str> {
        line.split_whitespace()
            .skip(1)
            .map(|v| v.trim_matches('"'))
            .collect()
    }

    /// Whatever a backup's input file holds, hdbbackint exits 0, 1 or 2,
    /// writes only `#` lines, and every `#SAVED` it writes is true: the
    /// byte count is the source's size, and that EBID restores the
    /// source's bytes exactly.
    #[test]
    fn hdbbackint_saves_only_what_restores_whole_whatever_the_backup_input() {
        use proptest::test_runner::{Config, TestRunner};
        let m = MoverProcess::start(&[]);
        let dir = temp_dir("fuzz-backint-backup");
        let params = dir.join("hdbbackint.toml");
        // A missing source fails at once rather than after a wait for it.
        std::fs::write(
            &params,
            format!(
                "socket = \"{}\"\npipe_timeout_s = 0\nlog_file = \"{}\"\n",
                m.socket.display(),
                dir.join("hdbbackint.log").display()
            ),
        )
        .unwrap();
        let pat = Pattern::default();
        let mut sources = Vec::new();
        for (k, &size) in SOURCES.iter().enumerate() {
            let mut bytes = vec![0u8; size as usize];
            pat.fill(k as u64 + 40, 0, &mut bytes);
            std::fs::write(dir.join(format!("src.{k}")), &bytes).unwrap();
            sources.push(bytes);
        }
        let cases = scale(48, 500) as u32;
        let mut runner = TestRunner::new(Config::with_cases(cases));
        let saved_total = std::sync::atomic::AtomicU64::new(0);
        let bytes_total = std::sync::atomic::AtomicU64::new(0);
        let hdbbackint = |function: &str, input: &Path, output: &Path| {
            Command::new(shmover_tools::workspace_binary("hdbbackint").unwrap())
                .args(["-f", function, "-u", "FUZB"])
                .arg("-p")
                .arg(&params)
                .arg("-i")
                .arg(input)
                .arg("-o")
                .arg(output)
                .env_remove("MOVER_SOCKET")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
        };
        let next = std::sync::atomic::AtomicU64::new(0);
        let dir_s = dir.display().to_string();
        runner
            .run(
                &proptest::collection::vec(backup_line(dir_s.clone()), 0..6),
                |lines| {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let input = dir.join(format!("in.{n}"));
                    let output = dir.join(format!("out.{n}"));
                    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
                    let status = hdbbackint("backup", &input, &output);
                    prop_assert!(
                        matches!(status.code(), Some(0..=2)),
                        "{status:?} for {lines:?}"
                    );
                    let out = std::fs::read_to_string(&output).unwrap_or_default();
                    prop_assert!(
                        out.lines().all(|l| l.starts_with('#')),
                        "{out:?} for {lines:?}"
                    );
                    // Every #SAVED, restored by its EBID into a file of its own.
                    let mut restore = String::new();
                    let mut expect = Vec::new();
                    for l in out.lines().filter(|l| l.starts_with("#SAVED ")) {
                        let v = values(l);
                        prop_assert_eq!(v.len(), 3, "{} for {:?}", l, lines);
                        let k: usize = v[1]
                            .strip_prefix(&format!("{dir_s}/src."))
                            .and_then(|k| k.parse().ok())
                            .filter(|&k| k < SOURCES.len())
                            .ok_or_else(|| {
                                TestCaseError::fail(format!("saved what was never named: {l}"))
                            })?;
                        prop_assert_eq!(v[2], SOURCES[k].to_string(), "{}", l);
                        let dest = dir.join(format!("back.{n}.{}", expect.len()));
                        // A #PIPE backup restores into what the destination
                        // is, waiting for HANA's FIFO if it is missing: here,
                        // a regular file.
                        std::fs::write(&dest, b"stale").unwrap();
                        restore +=
                            &format!("#EBID \"{}\" \"{}\" \"{}\"\n", v[0], v[1], dest.display());
                        expect.push((dest, k));
                    }
                    if expect.is_empty() {
                        return Ok(());
                    }
                    let input = dir.join(format!("rin.{n}"));
                    let output = dir.join(format!("rout.{n}"));
                    std::fs::write(&input, &restore).unwrap();
                    let status = hdbbackint("restore", &input, &output);
                    let out = std::fs::read_to_string(&output).unwrap_or_default();
                    prop_assert!(status.success(), "{status:?}: {out}");
                    prop_assert_eq!(
                        out.lines().filter(|l| l.starts_with("#RESTORED ")).count(),
                        expect.len(),
                        "{}",
                        out
                    );
                    for (dest, k) in &expect {
                        let got = std::fs::read(dest).unwrap();
                        prop_assert!(
                            got == sources[*k],
                            "{} differs from src.{}",
                            dest.display(),
                            k
                        );
                        let _ = std::fs::remove_file(dest);
                        bytes_total
                            .fetch_add(got.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    saved_total
                        .fetch_add(expect.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                },
            )
            .unwrap();
        let mut m = m;
        assert!(m.alive());
        let saved = saved_total.into_inner();
        // Most cases name a source that exists: the check above must have
        // had work to do.
        assert!(saved > 0, "no case saved anything");
        println!("hdbbackint backup fuzz: {cases} cases, {saved} saved and restored whole");
        report(
            "hostile_backint_backup_input",
            u64::from(cases),
            u64::from(cases),
            bytes_total.into_inner(),
            0,
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn an_s3_upload_whose_client_left_before_its_stream_started_is_aborted_at_once() {
    // The mover creates the multipart upload, then sends the ring; a client
    // gone by then used to leave the upload open (its parts billed) until
    // the mover restarted.
    use shmover_proto::{request, v1};
    use std::io::{Read, Write};
    let s3 = S3Server::start().unwrap();
    let url = s3.store_url("left");
    let m = MoverProcess::start_with(&["--store", &url, "--part-size", "5M"], |cmd| {
        s3.configure(cmd);
    });
    let journal = m.dir.join("s3-uploads");
    for i in 0..5 {
        let mut raw = std::os::unix::net::UnixStream::connect(&m.socket).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        raw.write_all(&shmover_proto::request_frame(request::Body::Hello(
            v1::Hello {
                min_version: 1,
                max_version: 2,
                kind: ClientKind::Generic as i32,
                pid: std::process::id(),
                label: "leaves".into(),
            },
        )))
        .unwrap();
        let mut buf = [0u8; 4096];
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0, "no answer to Hello");
        raw.write_all(&shmover_proto::request_frame(request::Body::OpenWrite(
            v1::OpenWrite {
                name: format!("left/{i}"),
                block_size: 1 << 20,
                ..Default::default()
            },
        )))
        .unwrap();
        drop(raw);
    }
    assert!(
        eventually(Duration::from_secs(30), || m
            .log()
            .contains("the client left before its backup started")),
        "no backup lost its client before its stream started:\n{}",
        m.log()
    );
    assert!(
        eventually(Duration::from_secs(30), || open_s3_uploads(&s3).is_empty()
            && std::fs::read_to_string(&journal).is_ok_and(|j| j.is_empty())),
        "still open: {:?}, journal {:?}\n{}",
        open_s3_uploads(&s3),
        std::fs::read_to_string(&journal),
        m.log()
    );
    // Nothing became visible, and the names are free.
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    assert!(c.list("left/", 0).unwrap().is_empty());
    backup(&mut c, &pat, 9, "left/0", 6 * MIB, 1 << 20).unwrap();
    restore_and_check(&mut c, &pat, 9, "left/0", 6 * MIB);
    assert!(open_s3_uploads(&s3).is_empty());
}

/// The multipart uploads s3s-fs holds open (its `.upload-<id>.json` files).
fn open_s3_uploads(s3: &S3Server) -> Vec<String> {
    std::fs::read_dir(s3.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload-") && n.ends_with(".json"))
        .collect()
}

#[test]
fn an_s3_upload_a_killed_mover_left_is_aborted_when_it_starts_again() {
    let s3 = S3Server::start().unwrap();
    let url = s3.store_url("killed");
    let mut m = MoverProcess::start_with(&["--store", &url, "--part-size", "5M"], |cmd| {
        s3.configure(cmd);
    });
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    c.open_write("killed/piece", 1 << 20, 0, &BTreeMap::new())
        .unwrap();
    for i in 0..24u64 {
        let slot = c.reserve().unwrap();
        pat.fill(6, i << 20, slot);
        c.commit_block(1 << 20).unwrap();
    }
    // Parts are on their way to S3, and the upload is in the mover's
    // journal, when the mover dies. (A kill between S3 creating the upload
    // and the journal write, a window of one small fsynced write, would
    // leave it to the bucket's lifecycle rule.)
    let journal = m.dir.join("s3-uploads");
    assert!(
        eventually(Duration::from_secs(30), || !open_s3_uploads(&s3).is_empty()
            && std::fs::read_to_string(&journal).is_ok_and(|j| !j.is_empty())),
        "no multipart upload was started"
    );
    // A second mover started on the same data directory (another socket)
    // must not take these live uploads for a dead mover's and abort them:
    // it refuses to start.
    let mut cmd = std::process::Command::new(shmover_tools::workspace_binary("mover").unwrap());
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(&m.dir)
        .arg("--socket")
        .arg(m.dir.join("second.sock"))
        .args(["--store", &url])
        .env_remove("MOVER_SOCKET")
        .env_remove("MOVER_STORE")
        .env_remove("MOVER_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    s3.configure(&mut cmd);
    let mut second = cmd.spawn().unwrap();
    let exited = eventually(Duration::from_secs(30), || {
        second.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = second.kill();
    }
    let second = second.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&second.stderr);
    assert!(
        exited && !second.status.success(),
        "a second mover started: {text}"
    );
    assert!(
        text.contains("another mover uses this data directory"),
        "{text}"
    );
    let before = open_s3_uploads(&s3);
    m.kill();
    drop(c);
    let left = open_s3_uploads(&s3);
    assert!(!left.is_empty());
    assert_eq!(left, before, "the second mover aborted live uploads");
    // It comes back while S3 is unreachable: the old mover retried each
    // abort for its whole retry deadline before it opened its socket.
    let proxy = FaultProxy::start(s3.addr(), vec![Fault::Pass]).unwrap();
    proxy.set_down(true);
    let endpoint = proxy.endpoint();
    m.restart_with(|cmd| {
        s3.configure(cmd);
        cmd.env("AWS_ENDPOINT", &endpoint)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("MOVER_RETRY_DEADLINE_SECS", "300");
    });
    m.client(ClientKind::Generic).ping().unwrap();
    assert_eq!(open_s3_uploads(&s3), left);
    proxy.set_down(false);
    assert!(
        eventually(Duration::from_secs(30), || open_s3_uploads(&s3).is_empty()),
        "still open: {:?}\n{}",
        open_s3_uploads(&s3),
        m.log()
    );
    assert!(
        eventually(Duration::from_secs(30), || m
            .log()
            .contains("aborted multipart uploads a previous mover left")),
        "{}",
        m.log()
    );
    // Nothing is visible, and the restarted mover backs up to S3.
    let mut c = m.client(ClientKind::Generic);
    assert_eq!(c.stat("killed/piece").unwrap_err().code, code::NOT_FOUND);
    backup(&mut c, &pat, 7, "killed/after", 12 * MIB, 1 << 20).unwrap();
    let n = restore_and_check(&mut c, &pat, 7, "killed/after", 12 * MIB);
    assert!(
        open_s3_uploads(&s3).is_empty(),
        "{:?}",
        open_s3_uploads(&s3)
    );
    report(
        "s3_multipart_after_mover_sigkill",
        1,
        left.len() as u64,
        n,
        0,
    );
}

#[test]
fn a_store_stall_longer_than_the_client_timeout_but_within_the_retry_deadline_loses_nothing() {
    // RMAN does not retry a failed write within a piece: a store that
    // stalls for a while the mover is still retrying must not fail the
    // piece at the client's own timeout (1 s here).
    let s3 = S3Server::start().unwrap();
    let proxy = FaultProxy::start(s3.addr(), vec![Fault::Pass]).unwrap();
    let url = s3.store_url("stall");
    let endpoint = proxy.endpoint();
    let m = MoverProcess::start_with(
        &[
            "--store",
            &url,
            "--part-size",
            "5M",
            "--memory-limit",
            "6M",
            "--ring-size",
            "4M",
        ],
        |cmd| {
            s3.configure(cmd);
            cmd.env("AWS_ENDPOINT", &endpoint)
                .env("AWS_ENDPOINT_URL", &endpoint)
                .env("MOVER_RETRY_DEADLINE_SECS", "60");
        },
    );
    let mut c = Client::connect(&shmover_client::Options {
        socket: m.socket.clone(),
        kind: ClientKind::Generic,
        label: "impatient".into(),
        timeout: Duration::from_secs(1),
    })
    .unwrap();
    let pat = Pattern::default();
    let size = 24 * MIB;
    c.open_write("stall/piece", 1 << 20, size, &BTreeMap::new())
        .unwrap();
    std::thread::scope(|scope| {
        proxy.set_down(true);
        scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(4));
            proxy.set_down(false);
        });
        for i in 0..24u64 {
            let slot = c.reserve().unwrap();
            pat.fill(7, i << 20, slot);
            c.commit_block(1 << 20).unwrap();
        }
        c.commit().unwrap();
    });
    // 24 MiB cannot fit in the ring and the mover's memory while the
    // store answers 503 to everything.
    assert!(proxy.injected() > 0, "the store never stalled");
    let n = restore_and_check(&mut c, &pat, 7, "stall/piece", size);
    report("s3_stall_within_deadline", 1, proxy.injected(), n, 0);
}

#[test]
fn gc_while_a_backup_publishes_its_manifest_leaves_its_data_alone() {
    // `mover gc --older-than 0` lists the data, then the manifests. A backup
    // whose upload completed before the first listing and whose manifest
    // lands after the second looks like an orphan: its data was deleted
    // and the client then told its backup was saved.
    let (s3, proxy, m) = mover_behind_a_proxy("gcrace", &[]);
    let pat = Pattern::default();
    let size = 3 * MIB + 5;
    // An older backup and a true orphan (data with no manifest) beside it.
    let mut c = m.client(ClientKind::Generic);
    backup(&mut c, &pat, 1, "gc/older", size, 1 << 20).unwrap();
    let orphan = s3
        .bucket_dir()
        .join("gcrace/data/generic/gc/orphan.1700000000000-0badf00d.data");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"left by a mover that died before publishing").unwrap();
    std::thread::scope(|scope| {
        // Inside the scope: dropped as a failed assertion unwinds, before
        // the scope waits for the committing thread.
        let held = proxy.holding("PUT", "/catalog/");
        let committing = scope.spawn(|| {
            let mut c = m.client(ClientKind::Generic);
            backup(&mut c, &pat, 2, "gc/racing", size, 1 << 20)
        });
        assert!(
            eventually(Duration::from_secs(60), || proxy.held() == 1),
            "the manifest's PUT never came: {}",
            m.log()
        );
        // Its data is complete and no manifest names it yet.
        let mut g = m.client(ClientKind::Generic);
        let report = g.gc(Duration::ZERO).unwrap();
        assert_eq!(
            report.orphans_removed, 1,
            "gc removed the data of a backup being published, or missed the orphan: {report:?}"
        );
        assert!(!orphan.exists());
        drop(held);
        let info = committing.join().unwrap().unwrap();
        assert_eq!(info.size, size);
    });
    let mut c = m.client(ClientKind::Generic);
    restore_and_check(&mut c, &pat, 2, "gc/racing", size);
    restore_and_check(&mut c, &pat, 1, "gc/older", size);
    report("gc_during_publish", 1, 1, 2 * size, 0);
}

#[test]
fn a_client_killed_while_its_commit_completes_gets_no_backup_saved_behind_its_back() {
    // The database process dies (or its client gives up) after sending
    // Commit, while the store completes the upload. It recorded no backup;
    // the mover must not publish one.
    let (s3, proxy, m) = mover_behind_a_proxy("left", &[]);
    let script = "import sys, shmover\n\
                  c = shmover.Client().connect(sys.argv[1], label='doomed')\n\
                  c.open_write('left/piece', 1 << 20)\n\
                  c.write(b'x' * ((3 << 20) + 5))\n\
                  print('committing', flush=True)\n\
                  c.commit()\n\
                  print('committed', flush=True)\n";
    // The completion of the upload (S3's POST ?uploadId=..., not the
    // POST ?uploads that starts it) is held.
    let held = proxy.holding("POST", "uploadId=");
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&m.socket)
        .env(
            "SHMOVER_CLIENT_LIB",
            shmover_tests::drivers::client_library(),
        )
        .env("PYTHONPATH", shmover_tests::drivers::python_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "committing");
    assert!(
        eventually(Duration::from_secs(60), || proxy.held() == 1),
        "the upload's completion never came: {}",
        m.log()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    drop(held);
    assert!(
        eventually(Duration::from_secs(60), || m
            .log()
            .contains("the client left before its backup was published")),
        "{}",
        m.log()
    );
    let mut c = m.client(ClientKind::Generic);
    assert_eq!(c.stat("left/piece").unwrap_err().code, code::NOT_FOUND);
    let files = files_under(&s3.bucket_dir());
    assert!(!files.iter().any(|f| f.contains("left/piece")), "{files:?}");
    report("client_left_at_commit", 1, 1, 0, 0);
}

#[test]
fn a_manifest_write_that_lands_after_its_error_finds_its_data_in_place() {
    // The store answers the manifest's PUT with errors until the retries
    // run out, and carries the PUT out later: a request the mover gave up
    // on, still in a queue somewhere. Reading back right after the error
    // finds no manifest. Removing the data then would leave a listed
    // backup that cannot be restored.
    let (_s3, proxy, m) = mover_behind_a_proxy("late", &[("MOVER_RETRY_DEADLINE_SECS", "2")]);
    let pat = Pattern::default();
    let size = 3 * MIB + 5;
    let deferred = proxy.deferring("PUT", "/catalog/");
    let mut c = m.client(ClientKind::Generic);
    let err = backup(&mut c, &pat, 7, "late/piece", size, 1 << 20).unwrap_err();
    assert_eq!(err.code, code::STORE, "{err:?}");
    assert!(
        err.message.contains("outcome is unknown"),
        "the client was not told the backup may exist: {err:?}"
    );
    assert!(proxy.deferred() >= 1, "no manifest PUT was deferred");
    // Nothing listed yet: the PUTs have not landed.
    assert_eq!(c.stat("late/piece").unwrap_err().code, code::NOT_FOUND);
    drop(deferred);
    assert!(
        eventually(Duration::from_secs(30), || proxy.deferred() == 0),
        "the deferred PUTs never landed"
    );
    // The manifest is there now, and what it names is whole.
    let info = c.stat("late/piece").unwrap();
    assert_eq!(info.size, size);
    restore_and_check(&mut c, &pat, 7, "late/piece", size);
    report("manifest_lands_late", 1, 1, size, 0);
}

#[test]
fn restores_opening_at_once_never_exceed_max_streams() {
    // Restores were counted against `max_streams` before reading their
    // manifest and entered as streams after it: restores opening together
    // all passed the count, each with a thread and a ring.
    let (_s3, proxy, m) = mover_behind_a_proxy("limit", &[("MOVER_MAX_STREAMS", "1")]);
    let pat = Pattern::default();
    let size = MIB + 3;
    let mut c = m.client(ClientKind::Generic);
    backup(&mut c, &pat, 4, "limit/one", size, 1 << 20).unwrap();
    let outcomes = std::thread::scope(|scope| {
        let held = proxy.holding("GET", "/catalog/");
        let opening: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let mut c = m.client(ClientKind::Generic);
                    let opened = c.open_read("limit/one", 0).map(|_| ());
                    // Keep the stream open until every open has answered.
                    (c, opened)
                })
            })
            .collect();
        // Each open either waits on its manifest's read or has its answer.
        assert!(
            eventually(Duration::from_secs(60), || proxy.held() as usize
                + opening.iter().filter(|t| t.is_finished()).count()
                == 3),
            "the restores neither read their manifests nor were answered ({} held): {}",
            proxy.held(),
            m.log()
        );
        drop(held);
        opening
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    let opened = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
    assert_eq!(opened, 1, "{} restores opened with max_streams 1", opened);
    for (_, r) in &outcomes {
        if let Err(e) = r {
            assert_eq!(e.code, 10, "{e:?}");
            assert!(e.message.contains("limit"), "{e:?}");
        }
    }
    // The one that opened restores whole.
    let (mut c, _) = outcomes.into_iter().find(|(_, r)| r.is_ok()).unwrap();
    let mut got = 0u64;
    while let Some(b) = c.next_block().unwrap() {
        assert!(pat.check(4, got, b));
        got += b.len() as u64;
    }
    assert_eq!(got, size);
}

#[test]
fn a_name_being_deleted_is_neither_deleted_again_nor_written_until_the_delete_ends() {
    // A delete reads the manifest, then removes its key. A backup of the
    // same name published in between, or a second delete racing the first,
    // could cost that backup its manifest: the name is held while deleted,
    // as while written.
    let (_s3, proxy, m) = mover_behind_a_proxy("deleting", &[]);
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    backup(&mut c, &pat, 5, "deleting/x", MIB, 1 << 20).unwrap();
    std::thread::scope(|scope| {
        // object_store deletes through S3's bulk DeleteObjects (POST ?delete).
        let held = proxy.holding("POST", "?delete");
        let first = scope.spawn(|| m.client(ClientKind::Generic).delete("deleting/x"));
        assert!(
            eventually(Duration::from_secs(60), || proxy.held() > 0),
            "the delete never reached the store: {}",
            m.log()
        );
        let mut other = m.client(ClientKind::Generic);
        let again = other
            .delete("deleting/x")
            .expect_err("deleted twice at once");
        assert_eq!(again.code, code::NOT_FOUND, "{again:?}");
        assert!(
            again.message.contains("being written or deleted"),
            "{again:?}"
        );
        let write = other
            .open_write("deleting/x", 1 << 20, 0, &BTreeMap::new())
            .expect_err("written while deleted");
        assert_eq!(write.code, code::ALREADY_EXISTS, "{write:?}");
        drop(held);
        first.join().unwrap().expect("the first delete");
    });
    // The name is free again: written, and deleted, as usual.
    backup(&mut c, &pat, 6, "deleting/x", MIB, 1 << 20).unwrap();
    assert_eq!(restore_and_check(&mut c, &pat, 6, "deleting/x", MIB), MIB);
    c.delete("deleting/x").unwrap();
    assert_eq!(c.stat("deleting/x").unwrap_err().code, code::NOT_FOUND);
}
