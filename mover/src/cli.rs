//! The command-line client: the same shared-memory path as the shims, via
//! the blocking client library. Exit codes: 0 success, 1 the operation
//! failed, 2 bad usage (clap).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shmover_client::{Client, ClientKind, ObjectInfo, Options};

use crate::timefmt::iso8601_ms;

/// How to reach the mover.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The mover's socket (default: $MOVER_SOCKET, else the per-user default).
    #[arg(long, env = "MOVER_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Name space: generic, sbt or backint.
    #[arg(long, default_value = "generic", value_parser = parse_kind)]
    pub kind: ClientKind,
    /// Seconds to wait for the mover before giving up.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

fn parse_kind(s: &str) -> Result<ClientKind, String> {
    match s {
        "generic" => Ok(ClientKind::Generic),
        "sbt" => Ok(ClientKind::Sbt),
        "backint" => Ok(ClientKind::Backint),
        _ => Err(format!("unknown kind {s:?} (generic, sbt or backint)")),
    }
}

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Block size (e.g. 1M).
    #[arg(long, default_value = "1M", value_parser = crate::config::parse_size)]
    pub block_size: u64,
    /// Metadata to record, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = parse_kv)]
    pub meta: Vec<(String, String)>,
    /// Never show a progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// File to back up, - for stdin.
    pub file: PathBuf,
    /// Backup name.
    pub name: String,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Never show a progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Backup name.
    pub name: String,
    /// Destination file, - for stdout.
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Show at most this many.
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Only names starting with this.
    #[arg(default_value = "")]
    pub prefix: String,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Never show a progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Backup name.
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only what has not changed for this many seconds (writes in progress
    /// on any mover are younger).
    #[arg(long, default_value_t = 86_400)]
    pub older_than: u64,
}

#[derive(Debug)]
pub enum Command {
    Put(PutArgs),
    Get(GetArgs),
    Ls(LsArgs),
    Info(NameArgs),
    Rm(NameArgs),
    Verify(NameArgs),
    Status(ClientArgs),
    Gc(GcArgs),
}

fn connect(a: &ClientArgs, label: &str) -> Result<Client, String> {
    let mut opts = Options::default();
    if let Some(s) = &a.socket {
        opts.socket = s.clone();
    }
    opts.kind = a.kind;
    opts.label = label.to_string();
    opts.timeout = Duration::from_secs(a.timeout.max(1));
    Client::connect(&opts).map_err(|e| e.message)
}

/// Runs a client command; all errors end here as one line and exit 1.
pub fn run(cmd: Command) -> ExitCode {
    let result = match cmd {
        Command::Put(a) => put(&a),
        Command::Get(a) => get(&a),
        Command::Ls(a) => ls(&a),
        Command::Info(a) => info(&a),
        Command::Rm(a) => connect(&a.client, "mover rm")
            .and_then(|mut c| c.delete(&a.name).map_err(|e| e.message)),
        Command::Verify(a) => verify(&a),
        Command::Status(a) => status(&a),
        Command::Gc(a) => connect(&a.client, "mover gc").and_then(|mut c| {
            let r = c
                .gc(Duration::from_secs(a.older_than))
                .map_err(|e| e.message)?;
            println!(
                "removed {} unreferenced data objects and {} staging files, {} bytes",
                r.orphans_removed, r.staging_removed, r.bytes_removed
            );
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mover: {e}");
            ExitCode::FAILURE
        }
    }
}

fn progress(total: Option<u64>, quiet: bool, what: &str) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    Some(bar)
}

fn rate(bytes: u64, t: Instant) -> String {
    let s = t.elapsed().as_secs_f64().max(1e-9);
    format!("{:.3} s, {:.2} GB/s", s, bytes as f64 / s / 1e9)
}

fn put(a: &PutArgs) -> Result<(), String> {
    let (mut input, size): (Box<dyn Read>, Option<u64>) = if a.file.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let f = std::fs::File::open(&a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
        let n = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        (Box::new(f), n)
    };
    let mut c = connect(&a.client, "mover put")?;
    let meta: BTreeMap<String, String> = a.meta.iter().cloned().collect();
    c.open_write(&a.name, a.block_size as usize, size.unwrap_or(0), &meta)
        .map_err(|e| e.message)?;
    let bar = progress(size, a.quiet, &a.name);
    let t = Instant::now();
    let result = (|| -> Result<ObjectInfo, String> {
        loop {
            let slot = c.reserve().map_err(|e| e.message)?;
            let want = slot.len().min(a.block_size as usize);
            // read() straight into the slot: the one copy.
            let n = read_full(&mut input, &mut slot[..want])
                .map_err(|e| format!("{}: {e}", a.file.display()))?;
            if n == 0 {
                break;
            }
            c.commit_block(n).map_err(|e| e.message)?;
            if let Some(b) = &bar {
                b.inc(n as u64);
            }
            if n < want {
                break;
            }
        }
        c.commit().map_err(|e| e.message)
    })();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match result {
        Ok(info) => {
            eprintln!(
                "stored {} ({} bytes, crc32c {:08x}) in {}",
                info.name,
                info.size,
                info.crc32c,
                rate(info.size, t)
            );
            Ok(())
        }
        Err(e) => {
            let _ = c.abort("mover put failed");
            Err(e)
        }
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Restores `name` block by block into `sink`; returns bytes and, when
/// `with_crc`, the CRC32C of the whole (recomputed here; the library
/// already checks every block's CRC32C and the mover the object's).
fn stream_out(
    c: &mut Client,
    name: &str,
    sink: &mut dyn Write,
    bar: Option<&indicatif::ProgressBar>,
    with_crc: bool,
) -> Result<(u64, u32), String> {
    let (mut bytes, mut crc) = (0u64, shmover_client::Crc32c::new());
    while let Some(block) = c.next_block().map_err(|e| e.message)? {
        if with_crc {
            crc.update(block);
        }
        sink.write_all(block)
            .map_err(|e| format!("writing {name}: {e}"))?;
        bytes += block.len() as u64;
        if let Some(b) = bar {
            b.inc(block.len() as u64);
        }
    }
    c.close_read().map_err(|e| e.message)?;
    Ok((bytes, crc.value()))
}

fn get(a: &GetArgs) -> Result<(), String> {
    let mut c = connect(&a.client, "mover get")?;
    let size = c.open_read(&a.name, 0).map_err(|e| e.message)?;
    let t = Instant::now();
    if a.file.as_os_str() == "-" {
        let out = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, out.lock());
        stream_out(&mut c, &a.name, &mut out, None, false)?;
        out.flush().map_err(|e| format!("stdout: {e}"))?;
        return Ok(());
    }
    // Write beside the destination and rename at the end, so a failed
    // restore never leaves a plausible-looking partial file.
    let tmp = partial_path(&a.file);
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let bar = progress(Some(size), a.quiet, &a.name);
    let res = stream_out(&mut c, &a.name, &mut f, bar.as_ref(), false);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let res = res.and_then(|r| {
        f.sync_all()
            .map(|()| r)
            .map_err(|e| format!("{}: {e}", tmp.display()))
    });
    match res {
        Ok((bytes, _)) => {
            std::fs::rename(&tmp, &a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
            eprintln!(
                "restored {} ({} bytes) in {}",
                a.name,
                bytes,
                rate(bytes, t)
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn partial_path(p: &Path) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".mover-partial");
    p.with_file_name(name)
}

fn ls(a: &LsArgs) -> Result<(), String> {
    let mut c = connect(&a.client, "mover ls")?;
    let list = c.list(&a.prefix, a.limit).map_err(|e| e.message)?;
    let mut out = std::io::stdout().lock();
    for i in list {
        let _ = writeln!(
            out,
            "{}  {:>15}  {}",
            iso8601_ms(i.created_unix_ms),
            i.size,
            i.name
        );
    }
    Ok(())
}

fn info(a: &NameArgs) -> Result<(), String> {
    let mut c = connect(&a.client, "mover info")?;
    let i = c.stat(&a.name).map_err(|e| e.message)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "name: {}", i.name);
    let _ = writeln!(out, "size: {}", i.size);
    let _ = writeln!(out, "created: {}", iso8601_ms(i.created_unix_ms));
    let _ = writeln!(out, "block_size: {}", i.block_size);
    let _ = writeln!(out, "crc32c: {:08x}", i.crc32c);
    for (k, v) in &i.metadata {
        let _ = writeln!(out, "meta.{k}: {v}");
    }
    Ok(())
}

fn verify(a: &NameArgs) -> Result<(), String> {
    let mut c = connect(&a.client, "mover verify")?;
    let info = c.stat(&a.name).map_err(|e| e.message)?;
    c.open_read(&a.name, 0).map_err(|e| e.message)?;
    let bar = progress(Some(info.size), a.quiet, &a.name);
    let res = stream_out(&mut c, &a.name, &mut std::io::sink(), bar.as_ref(), true);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (bytes, crc) = res?;
    if bytes != info.size || crc != info.crc32c {
        return Err(format!(
            "{}: read {bytes} bytes with CRC32C {crc:08x}; the manifest says {} bytes, {:08x}",
            a.name, info.size, info.crc32c
        ));
    }
    println!("ok {} {} bytes crc32c {:08x}", a.name, bytes, crc);
    Ok(())
}

fn status(a: &ClientArgs) -> Result<(), String> {
    let mut c = connect(a, "mover status")?;
    let s = c.status().map_err(|e| e.message)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:>8}  {:<8}  {:<5}  {:>15}  {:>10}  name",
        "pid", "kind", "dir", "bytes", "MB/s"
    );
    for st in &s.streams {
        let kind = match ClientKind::try_from(st.kind).unwrap_or(ClientKind::Generic) {
            ClientKind::Sbt => "sbt",
            ClientKind::Backint => "backint",
            _ => "generic",
        };
        let rate = st.bytes as f64 / st.seconds.max(1e-9) / 1e6;
        let _ = writeln!(
            out,
            "{:>8}  {:<8}  {:<5}  {:>15}  {:>10.1}  {}",
            st.pid,
            kind,
            if st.writing { "in" } else { "out" },
            st.bytes,
            rate,
            st.name
        );
    }
    let _ = writeln!(
        out,
        "total: {} bytes in, {} bytes out",
        s.bytes_in, s.bytes_out
    );
    Ok(())
}
