//! `hana-driver`: a fake SAP HANA for `hdbbackint` (spec section 6). It
//! creates FIFOs and input files as HANA does, starts `hdbbackint` with
//! HANA's argv, feeds and drains the pipes concurrently, and checks every
//! output line and every byte (SHA-256). Prints `N passed, M failed`.
//!
//! ```text
//! hana-driver [--hdbbackint PATH] [--socket PATH]
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use sha2::{Digest, Sha256};
use shmover_tools::pattern::splitmix64;

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

fn check(scenario: &str, ok: bool, what: impl AsRef<str>) -> bool {
    let counter = if ok { &PASSED } else { &FAILED };
    counter.fetch_add(1, Ordering::Relaxed);
    println!(
        "{} {scenario}: {}",
        if ok { "ok" } else { "FAIL" },
        what.as_ref()
    );
    ok
}

/// `size` bytes of stream `seed`.
fn data(seed: u64, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 8);
    let mut i = 0u64;
    while out.len() < size {
        out.extend_from_slice(&splitmix64(seed.wrapping_mul(0x100_0000_01b3) ^ i).to_le_bytes());
        i += 1;
    }
    out.truncate(size);
    out
}

fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

fn set_blocking(f: &File) {
    let fl = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL).unwrap_or(0));
    let _ = fcntl(f, FcntlArg::F_SETFL(fl & !OFlag::O_NONBLOCK));
}

/// HANA writing a backup pipe: waits for the reader (ENXIO), writes, closes.
fn feed(path: PathBuf, bytes: Vec<u8>) -> JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut f = loop {
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc_o_nonblock())
                .open(&path)
            {
                Ok(f) => break f,
                Err(e) if e.raw_os_error() == Some(6) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(format!("open {}: {e}", path.display())),
            }
        };
        set_blocking(&f);
        f.write_all(&bytes)
            .map_err(|e| format!("write {}: {e}", path.display()))
    })
}

fn libc_o_nonblock() -> i32 {
    OFlag::O_NONBLOCK.bits()
}

/// What a restore reader saw.
struct Drained {
    sha: Vec<u8>,
    bytes: usize,
    /// With a previous pipe to watch: whether its writer had closed it
    /// when the first byte arrived on this one.
    previous_closed_first: Option<bool>,
}

/// HANA reading a restore pipe: waits for the writer, reads up to `limit`
/// bytes (then quits early) or to EOF.
fn drain(path: PathBuf, limit: Option<usize>) -> JoinHandle<Result<Drained, String>> {
    drain_after(path, limit, None, None)
}

/// `drain`, passing a duplicate of this pipe's read end to `next`, and on
/// the first byte checking that the writer of the pipe received from
/// `previous` has closed it (POLLHUP; Linux raises it on a FIFO only once a
/// writer has come and gone). That the writer opened this pipe after it
/// closed the previous one follows from the pipes alone, whatever the
/// readers' scheduling.
fn drain_after(
    path: PathBuf,
    limit: Option<usize>,
    next: Option<std::sync::mpsc::Sender<std::fs::File>>,
    previous: Option<std::sync::mpsc::Receiver<std::fs::File>>,
) -> JoinHandle<Result<Drained, String>> {
    std::thread::spawn(move || {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_nonblock())
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        if let Some(next) = next {
            let _ = next.send(f.try_clone().map_err(|e| e.to_string())?);
        }
        // Wait for the writer: a read before it opened would be a false EOF.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&f),
                nix::poll::PollFlags::POLLIN,
            )];
            let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).unwrap_or(0);
            if n > 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("no writer opened {}", path.display()));
            }
        }
        set_blocking(&f);
        let mut f = f;
        let mut h = Sha256::new();
        let (mut bytes, mut previous_closed_first) = (0usize, None);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let want = limit.map_or(buf.len(), |l| (l - bytes).min(buf.len()));
            if want == 0 {
                break; // quit early: close the pipe under the writer
            }
            let n = f.read(&mut buf[..want]).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            if bytes == 0 {
                if let Some(prev) = &previous {
                    let prev = prev
                        .recv_timeout(Duration::from_secs(90))
                        .map_err(|e| e.to_string())?;
                    let mut fds = [nix::poll::PollFd::new(
                        std::os::fd::AsFd::as_fd(&prev),
                        nix::poll::PollFlags::empty(),
                    )];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO);
                    let hup = fds[0]
                        .revents()
                        .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP));
                    previous_closed_first = Some(hup);
                }
            }
            h.update(&buf[..n]);
            bytes += n;
        }
        Ok(Drained {
            sha: h.finalize().to_vec(),
            bytes,
            previous_closed_first,
        })
    })
}

/// One output line, split by the spec's tokenizer: (keyword, values, raw).
#[derive(Debug, Clone)]
struct Out {
    kw: String,
    vals: Vec<String>,
    raw: String,
}

fn tokenize(line: &str) -> Option<Out> {
    let line = line.trim_end_matches('\r');
    let (kw, mut rest) = line.split_once(' ').unwrap_or((line, ""));
    if !kw.starts_with('#') {
        return None;
    }
    let mut vals = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            break;
        }
        let mut v = String::new();
        let b = rest.as_bytes();
        let mut i = 0;
        if b[0] == b'"' {
            i = 1;
            loop {
                if i >= b.len() {
                    return None; // unterminated
                }
                if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'"' {
                    v.push('"');
                    i += 2;
                } else if b[i] == b'"' {
                    i += 1;
                    break;
                } else {
                    let ch = rest[i..].chars().next()?;
                    v.push(ch);
                    i += ch.len_utf8();
                }
            }
        } else {
            while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
                let ch = rest[i..].chars().next()?;
                v.push(ch);
                i += ch.len_utf8();
            }
        }
        vals.push(v);
        rest = &rest[i..];
    }
    Some(Out {
        kw: kw.to_string(),
        vals,
        raw: line.to_string(),
    })
}

/// Quotes a value for an input line.
fn q(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\\\""))
}

struct Env {
    exe: PathBuf,
    dir: PathBuf,
    params: PathBuf,
    sid: String,
    run: u32,
}

struct Run {
    code: Option<i32>,
    out: Vec<Out>,
    stderr: String,
}

impl Env {
    fn args(&self, function: &str, input: &Path, output: &Path) -> Vec<String> {
        let mut a = vec![
            "-f".into(),
            function.into(),
            "-p".into(),
            self.params.display().to_string(),
            "-i".into(),
            input.display().to_string(),
            "-o".into(),
            output.display().to_string(),
            "-u".into(),
            self.sid.clone(),
        ];
        if function == "backup" {
            a.extend([
                "-s".into(),
                "1732180000000".into(),
                "-c".into(),
                "2".into(),
                "-l".into(),
                "COMPLETE".into(),
            ]);
        }
        a
    }

    fn spawn(
        &mut self,
        function: &str,
        input: &str,
        extra: &[&str],
    ) -> (std::process::Child, PathBuf) {
        self.run += 1;
        let i = self.dir.join(format!("in.{}", self.run));
        let o = self.dir.join(format!("out.{}", self.run));
        std::fs::write(&i, input).unwrap();
        let child = Command::new(&self.exe)
            .args(self.args(function, &i, &o))
            .args(extra)
            .env_remove("MOVER_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hdbbackint");
        (child, o)
    }

    fn finish(child: std::process::Child, out: &Path, limit: Duration) -> Run {
        let mut child = child;
        let deadline = Instant::now() + limit;
        let code = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s.code(),
                _ if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let text = std::fs::read_to_string(out).unwrap_or_default();
        Run {
            code,
            out: text.lines().filter_map(tokenize).collect(),
            stderr,
        }
    }

    fn run(&mut self, function: &str, input: &str) -> Run {
        let (c, o) = self.spawn(function, input, &[]);
        Self::finish(c, &o, Duration::from_secs(120))
    }
}

fn find<'a>(r: &'a Run, kw: &str, path: &str) -> Vec<&'a Out> {
    r.out
        .iter()
        .filter(|o| o.kw == kw && o.vals.iter().any(|v| v == path))
        .collect()
}

fn swid_reply(r: &Run) -> Option<String> {
    r.out
        .first()
        .filter(|o| o.kw == "#SOFTWAREID")
        .and_then(|o| o.vals.first().cloned())
}

const SWID_150: &str = "#SOFTWAREID \"backint 1.50\" \"HANA fake 2.00.079\"\n";
const SWID_104: &str = "#SOFTWAREID \"backint 1.04\" \"HANA HDB server 2.00.071.00.1687900751\"\n";

fn is_ts(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && s.chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit())
}

fn scenarios(env: &mut Env) {
    let pipes = env.dir.join("usr/sap/HDB/SYS/global/hdb/backint/DB_H00");
    std::fs::create_dir_all(&pipes).unwrap();
    // B1: a data backup, API 1.50, pipes of awkward sizes and names.
    let names = [
        "COMPLETE_DATA_BACKUP_databackup_0_1",
        "COMPLETE_DATA_BACKUP_databackup_2_1",
        "my \"quoted\" back\\slash x_databackup_3_1",
        "COMPLETE_DATA_BACKUP_databackup_4_1",
    ];
    let sizes = [3 * (1 << 20) + 1, 0, 1, 4095];
    let mut saved = Vec::new(); // (path, ebid, sha, size)
    let mut input = String::from(SWID_150);
    let mut feeders = Vec::new();
    for (k, n) in names.iter().enumerate() {
        let p = pipes.join(n);
        mkfifo(&p);
        input += &format!("#PIPE {} {}\n", q(&p.display().to_string()), 1 << 30);
        let bytes = data(k as u64 + 1, sizes[k]);
        saved.push((
            p.display().to_string(),
            String::new(),
            sha(&bytes),
            sizes[k],
        ));
        feeders.push((p.clone(), bytes));
    }
    let (child, out) = env.spawn("backup", &input, &[]);
    let handles: Vec<_> = feeders.into_iter().map(|(p, b)| feed(p, b)).collect();
    let r = Env::finish(child, &out, Duration::from_secs(120));
    let fed = handles
        .into_iter()
        .all(|h| h.join().map(|r| r.is_ok()).unwrap_or(false));
    check(
        "backup",
        r.code == Some(0) && fed,
        format!(
            "4 pipes drained at once, exit {:?} {}",
            r.code,
            r.stderr.trim()
        ),
    );
    check(
        "backup",
        swid_reply(&r).as_deref() == Some("backint 1.50"),
        "#SOFTWAREID answered with backint 1.50 first",
    );
    for s in saved.iter_mut() {
        let l = find(&r, "#SAVED", &s.0);
        let ok = l.len() == 1
            && l[0].vals.len() == 3
            && l[0].vals[2] == s.3.to_string()
            && l[0]
                .raw
                .split(' ')
                .nth(1)
                .is_some_and(|e| e.starts_with('"'));
        if let Some(o) = l.first() {
            s.1 = o.vals[0].clone();
        }
        check(
            "backup",
            ok,
            format!(
                "#SAVED \"<ebid>\" {} {} (got {:?})",
                q(&s.0),
                s.3,
                l.first().map(|o| &o.raw)
            ),
        );
    }
    let ebids: std::collections::HashSet<_> = saved.iter().map(|s| s.1.clone()).collect();
    check(
        "backup",
        ebids.len() == saved.len() && !ebids.contains(""),
        "EBIDs are distinct",
    );

    // B2: the first path again with new content, API 1.04, plus a #FILE.
    let p0 = saved[0].0.clone();
    let new0 = data(99, 2 * (1 << 20) + 7);
    let file = env.dir.join("catalog file.bin");
    let fbytes = data(55, 777_777);
    std::fs::write(&file, &fbytes).unwrap();
    let input = format!(
        "{SWID_104}#PIPE {}\n#FILE {}\n",
        q(&p0),
        q(&file.display().to_string())
    );
    let (child, out) = env.spawn("backup", &input, &[]);
    let h = feed(PathBuf::from(&p0), new0.clone());
    let r = Env::finish(child, &out, Duration::from_secs(120));
    let _ = h.join();
    check(
        "backup-1.04",
        r.code == Some(0),
        format!("exit {:?}", r.code),
    );
    check(
        "backup-1.04",
        swid_reply(&r).as_deref() == Some("backint 1.04"),
        "#SOFTWAREID answered with backint 1.04",
    );
    let again = find(&r, "#SAVED", &p0);
    let new_ebid = again.first().map(|o| o.vals[0].clone()).unwrap_or_default();
    check(
        "backup-1.04",
        again.len() == 1 && new_ebid != saved[0].1 && again[0].vals[2] == new0.len().to_string(),
        "a second version of a path gets a new EBID",
    );
    let fs = find(&r, "#SAVED", &file.display().to_string());
    check(
        "backup-1.04",
        fs.len() == 1 && fs[0].vals[2] == fbytes.len().to_string(),
        "#FILE is saved with its exact size",
    );
    let file_ebid = fs.first().map(|o| o.vals[0].clone()).unwrap_or_default();

    // B3: two processes at once (two services).
    let mut kids = Vec::new();
    let mut hs = Vec::new();
    let mut svc = Vec::new();
    for s in 0..2u64 {
        let p = pipes.join(format!("COMPLETE_DATA_BACKUP_databackup_{}_1", 10 + s));
        mkfifo(&p);
        let b = data(200 + s, 1 << 20);
        svc.push((p.display().to_string(), b.len()));
        let (c, o) = env.spawn(
            "backup",
            &format!("{SWID_150}#PIPE {}\n", q(&p.display().to_string())),
            &[],
        );
        kids.push((c, o));
        hs.push(feed(p, b));
    }
    let mut all = true;
    for ((c, o), (p, n)) in kids.into_iter().zip(&svc) {
        let r = Env::finish(c, &o, Duration::from_secs(120));
        all &= r.code == Some(0)
            && find(&r, "#SAVED", p)
                .first()
                .is_some_and(|l| l.vals[2] == n.to_string());
    }
    hs.into_iter().for_each(|h| drop(h.join()));
    check(
        "backup-processes",
        all,
        "two hdbbackint processes at once each save their pipe",
    );

    // Inquire.
    let r = env.run("inquire", &format!("{SWID_150}#NULL {}\n", q(&p0)));
    let lines = find(&r, "#BACKUP", &p0);
    let newest_first =
        lines.len() == 2 && lines[0].vals[0] == new_ebid && lines[1].vals[0] == saved[0].1;
    check(
        "inquire-1.50",
        r.code == Some(0) && newest_first,
        format!(
            "#NULL <path> lists both versions newest first ({} lines)",
            lines.len()
        ),
    );
    check(
        "inquire-1.50",
        lines.iter().all(|l| l.vals.len() == 3 && is_ts(&l.vals[2])),
        "each with a YYYY-MM-DDTHH:MM:SS.mmmZ timestamp",
    );
    let r = env.run("inquire", &format!("{SWID_104}#NULL {}\n", q(&p0)));
    let lines = find(&r, "#BACKUP", &p0);
    check(
        "inquire-1.04",
        lines.len() == 2 && lines.iter().all(|l| l.vals.len() == 2),
        "API 1.04: no timestamps",
    );
    let r = env.run("inquire", "#NULL\n");
    let count = r.out.iter().filter(|o| o.kw == "#BACKUP").count();
    check(
        "inquire-all",
        r.code == Some(0) && count == 8,
        format!("#NULL lists every backup of this user ({count})"),
    );
    let r = env.run(
        "inquire",
        &format!(
            "{SWID_150}#EBID {} {}\n#EBID \"0000\" {}\n#NULL {}\n",
            q(&saved[1].1),
            q(&saved[1].0),
            q(&saved[1].0),
            q("/no/such/path")
        ),
    );
    check(
        "inquire-ebid",
        find(&r, "#BACKUP", &saved[1].0).len() == 1,
        "#EBID of an existing backup",
    );
    check(
        "inquire-ebid",
        r.out
            .iter()
            .any(|o| o.kw == "#NOTFOUND" && o.vals == vec!["0000".to_string(), saved[1].0.clone()]),
        "#NOTFOUND \"<ebid>\" <path> for an unknown EBID",
    );
    check(
        "inquire-ebid",
        r.out
            .iter()
            .any(|o| o.kw == "#NOTFOUND" && o.vals == vec!["/no/such/path".to_string()]),
        "#NOTFOUND <path> for an unknown path",
    );

    // Restore by EBID into fresh FIFOs, in parallel, and #NULL (newest).
    let rdir = env.dir.join("restore");
    std::fs::create_dir_all(&rdir).unwrap();
    let mut input = String::from(SWID_150);
    let mut readers = Vec::new();
    for (k, s) in saved.iter().enumerate() {
        let d = rdir.join(format!("r{k}"));
        mkfifo(&d);
        input += &format!(
            "#EBID {} {} {}\n",
            q(&s.1),
            q(&s.0),
            q(&d.display().to_string())
        );
        readers.push(drain(d, None));
    }
    let dnull = rdir.join("newest");
    mkfifo(&dnull);
    input += &format!("#NULL {} {}\n", q(&p0), q(&dnull.display().to_string()));
    readers.push(drain(dnull, None));
    let r = env.run("restore", &input);
    let got: Vec<_> = readers
        .into_iter()
        .map(|h| h.join().ok().and_then(|r| r.ok()))
        .collect();
    check(
        "restore",
        r.code == Some(0),
        format!("exit {:?} {}", r.code, r.stderr.trim()),
    );
    for (k, s) in saved.iter().enumerate() {
        let ok = got[k]
            .as_ref()
            .is_some_and(|d| d.sha == s.2 && d.bytes == s.3)
            && r.out
                .iter()
                .any(|o| o.kw == "#RESTORED" && o.vals == vec![s.1.clone(), s.0.clone()]);
        check(
            "restore",
            ok,
            format!("#EBID restore of {} matches its SHA-256", q(&s.0)),
        );
    }
    let ok = got
        .last()
        .and_then(|d| d.as_ref())
        .is_some_and(|d| d.sha == sha(&new0))
        && r.out
            .iter()
            .any(|o| o.kw == "#RESTORED" && o.vals == vec![new_ebid.clone(), p0.clone()]);
    check("restore", ok, "#NULL restores the newest version");

    // Restore into a regular file, and not-found answers.
    let target = rdir.join("file-target.bin");
    File::create(&target).unwrap();
    let r = env.run(
        "restore",
        &format!(
            "{SWID_104}#EBID {} {} {}\n#EBID \"0000\" {}\n#NULL {}\n",
            q(&file_ebid),
            q(&file.display().to_string()),
            q(&target.display().to_string()),
            q(&p0),
            q("/no/such/path")
        ),
    );
    let content = std::fs::read(&target).unwrap_or_default();
    check(
        "restore-file",
        content == fbytes && find(&r, "#RESTORED", &file.display().to_string()).len() == 1,
        "a regular file destination is written",
    );
    check(
        "restore-notfound",
        r.out.iter().filter(|o| o.kw == "#NOTFOUND").count() == 2 && r.code == Some(0),
        "#NOTFOUND <path> for an unknown EBID and path; exit 0",
    );
    check(
        "restore-1.04",
        swid_reply(&r).as_deref() == Some("backint 1.04"),
        "a restore under API 1.04 is answered with backint 1.04",
    );

    // Log backups restore one after another.
    let ldir = env.dir.join("usr/sap/HDB/SYS/global/hdb/backint/SYSTEMDB");
    std::fs::create_dir_all(&ldir).unwrap();
    let mut input = String::from(SWID_150);
    let mut hs = Vec::new();
    let mut logs = Vec::new();
    for k in 0..3u64 {
        let p = ldir.join(format!("log_backup_1_0_{}_{}", 1000 * k, 1000 * (k + 1)));
        mkfifo(&p);
        input += &format!("#PIPE {}\n", q(&p.display().to_string()));
        let b = data(300 + k, 2 << 20);
        logs.push((p.display().to_string(), sha(&b)));
        hs.push(feed(p, b));
    }
    let r = env.run("backup", &input);
    hs.into_iter().for_each(|h| drop(h.join()));
    check(
        "log-backup",
        r.code == Some(0) && r.out.iter().filter(|o| o.kw == "#SAVED").count() == 3,
        "three log backups saved",
    );
    let mut input = String::from(SWID_150);
    let mut readers = Vec::new();
    let mut previous = None;
    for (k, (p, _)) in logs.iter().enumerate() {
        let d = rdir.join(format!("log{k}"));
        mkfifo(&d);
        input += &format!("#NULL {} {}\n", q(p), q(&d.display().to_string()));
        let (next, watch) = std::sync::mpsc::channel();
        readers.push(drain_after(d, None, Some(next), previous.replace(watch)));
    }
    let r = env.run("restore", &input);
    let got: Vec<_> = readers
        .into_iter()
        .filter_map(|h| h.join().ok().and_then(|r| r.ok()))
        .collect();
    let bytes_ok = got.len() == 3 && got.iter().zip(&logs).all(|(d, (_, s))| &d.sha == s);
    let sequential = got.len() == 3
        && got[0].previous_closed_first.is_none()
        && got[1..]
            .iter()
            .all(|d| d.previous_closed_first == Some(true));
    check(
        "log-restore",
        r.code == Some(0) && bytes_ok,
        "three log backups restored byte for byte",
    );
    check(
        "log-restore",
        sequential,
        "each log backup starts only after the previous one ended",
    );

    // A reader that quits early: #ERROR, exit 1, no hang.
    let big = pipes.join("COMPLETE_DATA_BACKUP_databackup_20_1");
    mkfifo(&big);
    let b = data(400, 48 << 20);
    let (c, o) = env.spawn(
        "backup",
        &format!("#PIPE {}\n", q(&big.display().to_string())),
        &[],
    );
    let h = feed(big.clone(), b);
    let r = Env::finish(c, &o, Duration::from_secs(120));
    let _ = h.join();
    let early = rdir.join("early");
    mkfifo(&early);
    let reader = drain(early.clone(), Some(1 << 20));
    let t0 = Instant::now();
    let r2 = env.run(
        "restore",
        &format!(
            "#NULL {} {}\n",
            q(&big.display().to_string()),
            q(&early.display().to_string())
        ),
    );
    let _ = reader.join();
    check(
        "reader-quits",
        r.code == Some(0)
            && r2.code == Some(1)
            && find(&r2, "#ERROR", &big.display().to_string()).len() == 1,
        format!(
            "#ERROR and exit 1 after {:.1} s, no hang",
            t0.elapsed().as_secs_f64()
        ),
    );

    // Negative cases.
    let valid = pipes.join("COMPLETE_DATA_BACKUP_databackup_30_1");
    mkfifo(&valid);
    let ghost = pipes.join("never_created_databackup_31_1");
    let (c, o) = env.spawn(
        "backup",
        &format!(
            "#PIPE {}\n#PIPE {}\nhello world\n#UNKNOWN x\n\n#PIPE\n#PIPE \"/unterminated\n",
            q(&ghost.display().to_string()),
            q(&valid.display().to_string())
        ),
        &["-x", "foo", "-Z"],
    );
    let h = feed(valid.clone(), data(500, 10_000));
    let r = Env::finish(c, &o, Duration::from_secs(120));
    let _ = h.join();
    check(
        "pipe-never-appears",
        find(&r, "#ERROR", &ghost.display().to_string()).len() == 1 && r.code == Some(1),
        "#ERROR for a pipe that never appears; exit 1",
    );
    check(
        "pipe-never-appears",
        find(&r, "#SAVED", &valid.display().to_string()).len() == 1,
        "the valid pipe beside it is saved",
    );
    check(
        "malformed-lines",
        r.out.iter().filter(|o| o.kw == "#ERROR").count() == 3,
        "#ERROR for each malformed object line, nothing for comments",
    );
    check(
        "unknown-flags",
        r.stderr.contains("unknown option -x foo ignored")
            && r.stderr.contains("unknown option -Z ignored"),
        "unknown flags are warnings, not exits",
    );

    let bad = env.dir.join("bad.toml");
    for (content, what) in [
        ("sockt = \"/x\"\n", "an unknown key"),
        ("socket = \n", "a syntax error"),
        ("socket = 5\n", "a wrong type"),
    ] {
        std::fs::write(&bad, content).unwrap();
        let out = env.dir.join("bad.out");
        let input = env.dir.join("bad.in");
        std::fs::write(&input, "#PIPE \"/x\"\n").unwrap();
        let o = Command::new(&env.exe)
            .args(["-f", "backup", "-p"])
            .arg(&bad)
            .arg("-i")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        check(
            "bad-parameter-file",
            o.status.code() == Some(2)
                && String::from_utf8_lossy(&o.stderr).contains("parameter file")
                && text.starts_with("#ERROR"),
            format!("{what}: exit 2, a console line, #ERROR in the output"),
        );
    }
    let o = Command::new(&env.exe).arg("-v").output().unwrap();
    check(
        "version",
        o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("hdbbackint "),
        "-v prints the version",
    );
    // A "-v" that is another option's value is that value: here the user.
    let o = Command::new(&env.exe)
        .args(["-u", "-v", "-f", "explode"])
        .output()
        .unwrap();
    check(
        "version-as-value",
        o.status.code() == Some(2) && !String::from_utf8_lossy(&o.stdout).contains("hdbbackint "),
        "-u -v names a user: the unknown function still exits 2",
    );
    let o = Command::new(&env.exe)
        .args(["-f", "explode"])
        .output()
        .unwrap();
    check(
        "usage",
        o.status.code() == Some(2),
        "an unknown function exits 2",
    );
    // A value missing is bad arguments, not an unknown function.
    let o = Command::new(&env.exe)
        .args(["-f", "backup", "-i"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        "usage",
        o.status.code() == Some(2)
            && err.contains("-i needs a value")
            && err.contains("bad arguments")
            && !err.contains("unknown function"),
        format!("-i without a value: exit 2, and the console says why ({err:?})"),
    );
    // A user too long to keep is refused, not cut to a prefix another
    // user could share.
    let long_user = "u".repeat(300);
    let o = Command::new(&env.exe)
        .args(["-f", "inquire", "-u", &long_user])
        .output()
        .unwrap();
    check(
        "usage",
        o.status.code() == Some(2)
            && String::from_utf8_lossy(&o.stderr).contains("-u is longer than"),
        "a -u of 300 bytes: exit 2 with a console line",
    );
    // A well-formed line short of its path: #ERROR with the parameters it
    // had, parsed (not the raw text quoted again).
    for function in ["restore", "delete"] {
        let r = env.run(function, &format!("{SWID_150}#EBID \"123\"\n"));
        let errors: Vec<&Out> = r.out.iter().filter(|o| o.kw == "#ERROR").collect();
        check(
            "short-line",
            errors.len() == 1 && errors[0].vals == ["123"],
            format!("{function} of #EBID \"123\" with no path answers #ERROR \"123\""),
        );
    }

    // Unquoted parameters, as sapagent's fixtures write them: every token
    // of the line counts, not only the first.
    let plain = pipes.join("PLAIN_DATA_BACKUP_databackup_7_1");
    let plain_s = plain.display().to_string();
    mkfifo(&plain);
    let bytes = data(700, (1 << 20) + 17);
    let h = feed(plain.clone(), bytes.clone());
    let r = env.run("backup", &format!("#PIPE {plain_s} 4096\n"));
    let fed = h.join().map(|r| r.is_ok()).unwrap_or(false);
    let l = find(&r, "#SAVED", &plain_s);
    let ok = fed
        && r.code == Some(0)
        && l.len() == 1
        && l[0].vals.len() == 3
        && l[0].vals[2] == bytes.len().to_string();
    check(
        "unquoted",
        ok,
        format!(
            "#PIPE {plain_s} 4096 (unquoted) is saved: {:?}",
            l.first().map(|o| &o.raw)
        ),
    );
    let ebid = l.first().map(|o| o.vals[0].clone()).unwrap_or_default();
    // The same EBID under another path is another object: not found.
    let other = format!("{plain_s}_other");
    let r = env.run(
        "inquire",
        &format!("{SWID_150}#EBID {ebid} {plain_s}\n#EBID {ebid} {other}\n"),
    );
    let b = find(&r, "#BACKUP", &plain_s);
    check(
        "unquoted",
        r.code == Some(0)
            && b.len() == 1
            && b[0].vals.len() == 3
            && b[0].vals[0] == ebid
            && find(&r, "#NOTFOUND", &other).len() == 1,
        format!("#EBID {ebid} <path> (unquoted) inquires that path's backup only"),
    );
    let rdir = env.dir.join("restore-unquoted");
    std::fs::create_dir_all(&rdir).unwrap();
    let (d1, d2) = (rdir.join("by-ebid"), rdir.join("newest"));
    mkfifo(&d1);
    mkfifo(&d2);
    let readers = [drain(d1.clone(), None), drain(d2.clone(), None)];
    let r = env.run(
        "restore",
        &format!(
            "#EBID {ebid} {plain_s} {}\n#NULL {plain_s} {}\n",
            d1.display(),
            d2.display()
        ),
    );
    let want = sha(&bytes);
    let got: Vec<bool> = readers
        .into_iter()
        .map(|h| {
            h.join()
                .ok()
                .and_then(|r| r.ok())
                .is_some_and(|d| d.sha == want)
        })
        .collect();
    check(
        "unquoted",
        r.code == Some(0)
            && got == [true, true]
            && find(&r, "#RESTORED", &plain_s).len() == 2
            && std::fs::metadata(&plain).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type())),
        format!(
            "#EBID {ebid} {plain_s} <dest> and #NULL {plain_s} <dest> (unquoted) restore into their destinations, exit {:?}",
            r.code
        ),
    );
    let r = env.run("delete", &format!("#EBID {ebid} {plain_s}\n"));
    check(
        "unquoted",
        r.code == Some(0) && find(&r, "#DELETED", &plain_s).len() == 1,
        format!("#EBID {ebid} {plain_s} (unquoted) is deleted"),
    );

    // stdin and stdout, then delete everything this run made.
    let mut all = Vec::new();
    let r = env.run("inquire", "#NULL\n");
    for o in r.out.iter().filter(|o| o.kw == "#BACKUP") {
        all.push((o.vals[0].clone(), o.vals[1].clone()));
    }
    let input: String = all
        .iter()
        .map(|(e, p)| format!("#EBID {} {}\n", q(e), q(p)))
        .collect();
    let mut child = Command::new(&env.exe)
        .args(["-f", "delete", "-p"])
        .arg(&env.params)
        .args(["-u", &env.sid])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let deleted = text
        .lines()
        .filter_map(tokenize)
        .filter(|l| l.kw == "#DELETED")
        .count();
    check(
        "delete",
        o.status.success() && deleted == all.len() && !all.is_empty(),
        format!("#DELETED for all {} backups (stdin and stdout)", all.len()),
    );
    let r = env.run("delete", &format!("{SWID_104}{input}"));
    check(
        "delete",
        r.out.iter().filter(|o| o.kw == "#NOTFOUND").count() == all.len(),
        "deleting again answers #NOTFOUND \"<ebid>\" <path>",
    );
    check(
        "delete-1.04",
        swid_reply(&r).as_deref() == Some("backint 1.04"),
        "a delete under API 1.04 is answered with backint 1.04",
    );
    let r = env.run("inquire", "#NULL\n");
    check(
        "delete",
        r.out.len() == 1 && r.out[0].kw == "#NOTFOUND" && r.out[0].vals.is_empty(),
        "nothing is left: #NOTFOUND",
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut exe = shmover_tools::workspace_binary("hdbbackint").ok();
    let mut socket = std::env::var("MOVER_SOCKET").ok();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.clone().next()) {
            ("--hdbbackint", Some(v)) => {
                exe = Some(PathBuf::from(v));
                it.next();
            }
            ("--socket", Some(v)) => {
                socket = Some(v.clone());
                it.next();
            }
            _ => {
                eprintln!("usage: hana-driver [--hdbbackint PATH] [--socket PATH]");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(exe), Some(socket)) = (exe, socket) else {
        eprintln!("hana-driver: needs hdbbackint (--hdbbackint) and the mover's socket (--socket or MOVER_SOCKET)");
        return ExitCode::from(2);
    };
    let dir = shmover_tools::unique_socket_path("hana").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let params = dir.join("hdbbackint.toml");
    std::fs::write(
        &params,
        format!(
            "# written by hana-driver\nsocket = {}\npipe_timeout_s = 1\npipe_peer_timeout_s = 30\nlog_file = {}\nlog_level = \"info\"\n",
            q(&socket),
            q(&dir.join("hdbbackint.log").display().to_string())
        ),
    )
    .unwrap();
    let mut env = Env {
        exe,
        dir: dir.clone(),
        params,
        sid: format!("H{}", std::process::id()),
        run: 0,
    };
    scenarios(&mut env);
    let (p, f) = (
        PASSED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    );
    if f > 0 {
        eprintln!(
            "--- hdbbackint log ---\n{}",
            std::fs::read_to_string(dir.join("hdbbackint.log")).unwrap_or_default()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{p} passed, {f} failed");
    if f == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
