//! `mover-bench`: end-to-end benchmark scenarios for shmover. Each scenario
//! measures its own baseline in the same run and prints one JSON line with
//! both figures and their ratio, because these machines are shared and
//! noisy: only ratios taken side by side mean anything.
//!
//! ```text
//! mover-bench ring [--bytes 4G] [--block 1M] [--slot-size 1M] [--slots 32] [--runs 3]
//! ```

#[path = "mover_bench/grpc.rs"]
mod grpc;

use std::process::ExitCode;
use std::time::Instant;

use shmover_client::units::parse_size;
use shmover_ring::Geometry;
use shmover_tools::mover::proc_usage;
use shmover_tools::{pattern, ringxfer, workspace_binary};

const USAGE: &str = "usage: mover-bench SCENARIO [flags]
  ring     [--bytes 4G] [--block 1M] [--slot-size 1M] [--slots 32] [--runs 3]
           a C producer process moves the bytes through a shared-memory ring
           to a consumer process that releases them unread; baselines:
           single-thread memcpy of the same bytes, and a plain tonic client
           stream of them to a server that drops them.
  sbt      [--bytes 4G] [--block 1M] [--runs 2] [--store URL]
           sbt-driver through libsbtmover.so into a live mover, then the
           restore; baselines: write(2) + fsync of the same bytes, and
           the disk itself (O_DIRECT writes, then reads, of those bytes).
  backint  [--bytes 4G] [--pipes 3] [--store URL]
           hdbbackint fed from FIFOs, then the restore; baselines: plain
           pipes, and the disk itself (as for sbt) when the store is on it.
  grpc     [--bytes 2G] [--block 1M] [--runs 3] [--dir DIR]
           sbt-driver into a mover that forwards over gRPC to a peer mover;
           baseline: a plain tonic client stream of the same bytes into a
           file in the same directory (DIR, default /dev/shm).
  channels [--bytes 2G] [--store URL]   1, 2, 4, 8, 16 SBT channels at once,
           two rounds per mover: cold (new rings) and warm (rings reused)
  blocks   [--bytes 2G] [--store URL]   block sizes from 64 KiB to 4 MiB; mover
           CPU per block, and the per-block overhead (64 KiB against 4 MiB)
  all      [--out bench]   everything; writes bench.json and bench.svg
Each prints one JSON line per case.";

struct RingArgs {
    bytes: u64,
    block: usize,
    slot_size: u32,
    slots: u32,
    runs: u32,
}

fn parse_ring(args: &[String]) -> Result<RingArgs, String> {
    let mut a = RingArgs {
        bytes: 4 << 30,
        block: 1 << 20,
        slot_size: 0,
        slots: 32,
        runs: 3,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bytes" => a.bytes = parse_size(value()?)?,
            "--block" => a.block = parse_size(value()?)? as usize,
            "--slot-size" => a.slot_size = parse_size(value()?)? as u32,
            "--slots" => a.slots = parse_size(value()?)? as u32,
            "--runs" => a.runs = parse_size(value()?)?.max(1) as u32,
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if a.slot_size == 0 {
        a.slot_size = (a.block as u32).div_ceil(4096) * 4096;
    }
    Ok(a)
}

/// Single-thread `memcpy` of `bytes` in `block`-byte pieces, from the same
/// 64 MiB source the producer copies from into a destination the size of
/// the ring, as the producer does. Returns seconds.
fn memcpy_seconds(bytes: u64, block: usize, dst_bytes: usize) -> f64 {
    let src = pattern::source(block);
    let k = pattern::source_blocks(block);
    let slots = (dst_bytes / block).max(1);
    let mut dst = vec![1u8; slots * block];
    let t0 = Instant::now();
    let (mut done, mut i) = (0u64, 0usize);
    while done < bytes {
        let len = ((bytes - done) as usize).min(block);
        let from = &src[(i % k) * block..][..len];
        dst[(i % slots) * block..][..len].copy_from_slice(from);
        std::hint::black_box(&mut dst);
        done += len as u64;
        i += 1;
    }
    t0.elapsed().as_secs_f64()
}

fn gbps(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e9
}

fn ring(args: &[String]) -> Result<String, String> {
    let a = parse_ring(args)?;
    let geometry = Geometry::new(a.slots, a.slot_size).map_err(|e| e.to_string())?;
    let producer = workspace_binary("ring-producer").map_err(|e| e.to_string())?;
    let opts = ringxfer::Options {
        producer,
        bytes: a.bytes,
        block: a.block,
        geometry,
        crc: false,
        verify: false,
        timeout: std::time::Duration::from_secs(60),
    };
    let (mut best_ring, mut best_memcpy, mut best_grpc) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..a.runs {
        // Interleave the two so that a noisy neighbour hits both alike.
        let report = ringxfer::run(&opts)?;
        if report.bytes != a.bytes {
            return Err(format!(
                "moved {} bytes, expected {}",
                report.bytes, a.bytes
            ));
        }
        best_ring = best_ring.min(report.seconds);
        best_memcpy = best_memcpy.min(memcpy_seconds(a.bytes, a.block, geometry.capacity_bytes()));
        best_grpc = best_grpc.min(grpc::plain_seconds(a.bytes, a.block, None)?);
    }
    let g = gbps(a.bytes, best_ring);
    let m = gbps(a.bytes, best_memcpy);
    let t = gbps(a.bytes, best_grpc);
    Ok(format!(
        "{{\"scenario\":\"ring\",\"bytes\":{},\"block\":{},\"slot_size\":{},\"slots\":{},\"runs\":{},\"gbps\":{:.3},\"memcpy_gbps\":{:.3},\"ratio_memcpy\":{:.3},\"grpc_gbps\":{t:.3},\"ratio_grpc\":{:.3}}}",
        a.bytes, a.block, a.slot_size, a.slots, a.runs, g, m, g / m, g / t
    ))
}

/// `write(2)` of `bytes` in `block` pieces from the 64 MiB source into a
/// new file in `dir`, then fsync; seconds.
fn write_seconds(dir: &std::path::Path, bytes: u64, block: usize) -> Result<f64, String> {
    use std::io::Write;
    let src = pattern::source(block);
    let k = pattern::source_blocks(block);
    let path = dir.join("write-baseline.bin");
    let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let (mut done, mut i) = (0u64, 0usize);
    while done < bytes {
        let len = ((bytes - done) as usize).min(block);
        f.write_all(&src[(i % k) * block..][..len])
            .map_err(|e| e.to_string())?;
        done += len as u64;
        i += 1;
    }
    f.sync_all().map_err(|e| e.to_string())?;
    let s = t0.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(s)
}

/// The disk by itself, in the mover's own shape: `bytes` written into one
/// new file in `dir` with `O_DIRECT`, 16 MiB at a time with four writes in
/// flight (a backup's parts), then fsync; then read back with `O_DIRECT`,
/// 4 MiB at a time with eight reads in flight (a restore's readers).
/// Seconds for the write and for the read. This is the limit of any store
/// on this disk, measured in the same run as the figures it bounds.
fn disk_seconds(dir: &std::path::Path, bytes: u64) -> Result<(f64, f64), String> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const ALIGN: usize = 4096;
    const WRITE: u64 = 16 << 20;
    const READ: u64 = 4 << 20;
    let path = dir.join("disk-baseline.bin");
    let bytes = bytes.next_multiple_of(ALIGN as u64);
    // An `O_DIRECT` buffer must be page aligned: take the aligned part of
    // a slightly larger vector.
    let aligned = |len: usize| -> (Vec<u8>, usize) {
        let v = vec![0u8; len + ALIGN];
        let at = v.as_ptr().align_offset(ALIGN);
        (v, at)
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(&path)
        .map_err(|e| format!("{} with O_DIRECT: {e}", path.display()))?;
    let src = pattern::source(1 << 20);
    let pieces = |size: u64| bytes.div_ceil(size);
    let io = |threads: u64, size: u64, write: bool| -> Result<f64, String> {
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let (file, src) = (&file, &src);
                    scope.spawn(move || -> std::io::Result<()> {
                        let (mut buf, at) = aligned(size as usize);
                        let buf = &mut buf[at..][..size as usize];
                        if write {
                            buf.copy_from_slice(&src[..size as usize]);
                        }
                        let mut i = t;
                        while i < pieces(size) {
                            let off = i * size;
                            let len = (bytes - off).min(size) as usize;
                            if write {
                                file.write_all_at(&buf[..len], off)?;
                            } else {
                                file.read_exact_at(&mut buf[..len], off)?;
                            }
                            i += threads;
                        }
                        Ok(())
                    })
                })
                .collect();
            hs.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("disk thread panicked")))
            })
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
        if write {
            file.sync_all().map_err(|e| e.to_string())?;
        }
        Ok(t0.elapsed().as_secs_f64())
    };
    let result = io(4, WRITE, true).and_then(|w| Ok((w, io(8, READ, false)?)));
    drop(file);
    let _ = std::fs::remove_file(&path);
    result
}

fn sbt(args: &[String]) -> Result<String, String> {
    let mut bytes: u64 = 4 << 30;
    let mut block: usize = 1 << 20;
    let mut runs = 2u32;
    let mut store: Option<String> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bytes" => bytes = parse_size(value()?)?,
            "--block" => block = parse_size(value()?)? as usize,
            "--runs" => runs = parse_size(value()?)?.max(1) as u32,
            "--store" => store = Some(value()?.clone()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    let driver = workspace_binary("sbt-driver").map_err(|e| e.to_string())?;
    let lib = driver.with_file_name("libsbtmover.so");
    if !lib.is_file() {
        return Err(format!(
            "{} not found; run cargo build --release",
            lib.display()
        ));
    }
    let mut m = start_mover(&store)?;
    let (mut backup_s, mut restore_s, mut write_s) = (f64::MAX, f64::MAX, f64::MAX);
    let (mut disk_w_s, mut disk_r_s) = (f64::MAX, f64::MAX);
    // Interleaved runs, best of each: the disk and the other tenants of
    // this machine vary from one second to the next.
    for _ in 0..runs {
        let (b, r) = sbt_bench_run(&m, bytes, block)?;
        backup_s = backup_s.min(b);
        restore_s = restore_s.min(r);
        write_s = write_s.min(write_seconds(&m.dir, bytes, block)?);
        if store.is_none() {
            let (dw, dr) = disk_seconds(&m.dir, bytes)?;
            disk_w_s = disk_w_s.min(dw);
            disk_r_s = disk_r_s.min(dr);
        }
    }
    let (rss_mib, cpu_s) = proc_usage(m.pid());
    let memcpy_s = memcpy_seconds(bytes, block, 64 << 20);
    m.kill();
    let (b, r, w, c) = (
        gbps(bytes, backup_s),
        gbps(bytes, restore_s),
        gbps(bytes, write_s),
        gbps(bytes, memcpy_s),
    );
    // The disk by itself, when the store is on it.
    let disk = if store.is_none() {
        let (dw, dr) = (gbps(bytes, disk_w_s), gbps(bytes, disk_r_s));
        format!(
            ",\"disk_write_gbps\":{dw:.3},\"disk_read_gbps\":{dr:.3},\"ratio_backup_disk_write\":{:.3},\"ratio_restore_disk_read\":{:.3}",
            b / dw,
            r / dr
        )
    } else {
        String::new()
    };
    let gib = bytes as f64 / (1u64 << 30) as f64;
    Ok(format!(
        "{{\"scenario\":\"sbt\",\"bytes\":{bytes},\"block\":{block},\"backup_gbps\":{b:.3},\"restore_gbps\":{r:.3},\"write_gbps\":{w:.3},\"memcpy_gbps\":{c:.3},\"ratio_write\":{:.3},\"ratio_restore_backup\":{:.3},\"ratio_memcpy\":{:.3}{disk},\"mover_peak_rss_mib\":{rss_mib:.1},\"mover_cpu_s_per_gib\":{:.3}}}",
        b / w,
        r / b,
        b / c,
        cpu_s / (2.0 * gib * f64::from(runs))
    ))
}

/// Writes `bytes` from the 64 MiB source (built once by the caller, before
/// any clock starts) into a FIFO, opened when its reader is there.
fn fifo_writer(
    path: std::path::PathBuf,
    bytes: u64,
    src: std::sync::Arc<Vec<u8>>,
) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| e.to_string())?;
        let mut done = 0u64;
        let mut i = 0usize;
        while done < bytes {
            let n = ((bytes - done) as usize).min(1 << 20);
            let off = (i % 64) << 20;
            f.write_all(&src[off..off + n]).map_err(|e| e.to_string())?;
            done += n as u64;
            i += 1;
        }
        Ok(())
    })
}

/// Reads a FIFO to its end, discarding; returns the bytes read.
fn fifo_reader(path: std::path::PathBuf) -> std::thread::JoinHandle<Result<u64, String>> {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    })
}

fn mkfifo(p: &std::path::Path) -> Result<(), String> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| format!("mkfifo {}: {e}", p.display()))
}

fn backint(args: &[String]) -> Result<String, String> {
    let mut bytes: u64 = 4 << 30;
    let mut pipes = 3usize;
    let mut store: Option<String> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bytes" => bytes = parse_size(value()?)?,
            "--pipes" => pipes = parse_size(value()?)?.max(1) as usize,
            "--store" => store = Some(value()?.clone()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    let exe = workspace_binary("hdbbackint").map_err(|e| e.to_string())?;
    let src = std::sync::Arc::new(pattern::source(1 << 20));
    let mut m = start_mover(&store)?;
    let dir = m.dir.join("hana");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let per = bytes / pipes as u64;
    let total = per * pipes as u64;
    let params = dir.join("params.toml");
    std::fs::write(&params, format!("socket = \"{}\"\n", m.socket.display()))
        .map_err(|e| e.to_string())?;
    let run = |function: &str, input: &str| -> Result<(String, f64), String> {
        let i = dir.join(format!("{function}.in"));
        let o = dir.join(format!("{function}.out"));
        std::fs::write(&i, input).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let status = std::process::Command::new(&exe)
            .args(["-f", function, "-u", "BENCH", "-p"])
            .arg(&params)
            .arg("-i")
            .arg(&i)
            .arg("-o")
            .arg(&o)
            .status()
            .map_err(|e| e.to_string())?;
        let s = t0.elapsed().as_secs_f64();
        let out = std::fs::read_to_string(&o).unwrap_or_default();
        if !status.success() {
            return Err(format!("hdbbackint {function} failed: {out}"));
        }
        Ok((out, s))
    };
    // Backup: P pipes fed at once.
    let mut input = String::new();
    let mut writers = Vec::new();
    for k in 0..pipes {
        let p = dir.join(format!("data_{k}"));
        mkfifo(&p)?;
        input += &format!("#PIPE \"{}\" {per}\n", p.display());
        writers.push(fifo_writer(p, per, src.clone()));
    }
    let (out, backup_s) = run("backup", &input)?;
    for w in writers {
        w.join().map_err(|_| "writer panicked")??;
    }
    // Restore the same objects by EBID into P fresh pipes.
    let mut input = String::new();
    let mut readers = Vec::new();
    for (k, line) in out.lines().filter(|l| l.starts_with("#SAVED")).enumerate() {
        let mut parts = line.split('"');
        let ebid = parts.nth(1).unwrap_or("");
        let path = parts.nth(1).unwrap_or("");
        let d = dir.join(format!("restore_{k}"));
        mkfifo(&d)?;
        input += &format!("#EBID \"{ebid}\" \"{path}\" \"{}\"\n", d.display());
        readers.push(fifo_reader(d));
    }
    if readers.len() != pipes {
        return Err(format!(
            "backup saved {} of {pipes} pipes: {out}",
            readers.len()
        ));
    }
    let (_, restore_s) = run("restore", &input)?;
    let mut restored = 0u64;
    for r in readers {
        restored += r.join().map_err(|_| "reader panicked")??;
    }
    if restored != total {
        return Err(format!("restored {restored} of {total} bytes"));
    }
    let (rss_mib, cpu_s) = proc_usage(m.pid());
    // Baseline: the same bytes through P plain pipes, writers and readers at once.
    let t0 = Instant::now();
    let mut hs = Vec::new();
    for k in 0..pipes {
        let p = dir.join(format!("plain_{k}"));
        mkfifo(&p)?;
        hs.push((fifo_writer(p.clone(), per, src.clone()), fifo_reader(p)));
    }
    for (w, r) in hs {
        w.join().map_err(|_| "writer panicked")??;
        r.join().map_err(|_| "reader panicked")??;
    }
    let pipe_s = t0.elapsed().as_secs_f64();
    let (b, r, p) = (
        gbps(total, backup_s),
        gbps(total, restore_s),
        gbps(total, pipe_s),
    );
    // The disk by itself, when the store is on it.
    let disk = if store.is_none() {
        let (dw, dr) = disk_seconds(&m.dir, total)?;
        let (dw, dr) = (gbps(total, dw), gbps(total, dr));
        format!(
            ",\"disk_write_gbps\":{dw:.3},\"disk_read_gbps\":{dr:.3},\"ratio_backup_disk_write\":{:.3},\"disk_write_ratio_pipe\":{:.3}",
            b / dw,
            dw / p
        )
    } else {
        String::new()
    };
    m.kill();
    let gib = total as f64 / (1u64 << 30) as f64;
    Ok(format!(
        "{{\"scenario\":\"backint\",\"store\":\"{}\",\"bytes\":{total},\"pipes\":{pipes},\"backup_gbps\":{b:.3},\"restore_gbps\":{r:.3},\"pipe_gbps\":{p:.3},\"ratio_pipe\":{:.3},\"ratio_restore_backup\":{:.3}{disk},\"mover_peak_rss_mib\":{rss_mib:.1},\"mover_cpu_s_per_gib\":{:.3}}}",
        store.as_deref().unwrap_or("local (the data directory's disk)"),
        b / p,
        r / b,
        cpu_s / (2.0 * gib)
    ))
}

/// One `sbt-driver --bench-bytes` run against a mover: (backup s, restore s).
fn sbt_bench_run(
    m: &shmover_tools::mover::MoverProcess,
    bytes: u64,
    block: usize,
) -> Result<(f64, f64), String> {
    sbt_bench_split(m, bytes, block).map(|r| (r.backup_s, r.restore_s))
}

fn parse_bench(text: &str) -> Option<(f64, f64)> {
    let line = text.lines().find(|l| l.starts_with("bench "))?;
    let field = |k: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    Some((field("backup_seconds")?, field("restore_seconds")?))
}

/// The forwarding path (SBT client, mover, gRPC, peer mover and its local
/// store) against a plain tonic stream of the same bytes into the same
/// directory: a tmpfs (/dev/shm) when there is one, unless `--dir`.
fn grpc_scenario(args: &[String]) -> Result<String, String> {
    let mut bytes: u64 = 2 << 30;
    let mut block: usize = 1 << 20;
    let mut runs = 3u32;
    let mut store_root: Option<std::path::PathBuf> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bytes" => bytes = parse_size(value()?)?,
            "--block" => block = parse_size(value()?)? as usize,
            "--runs" => runs = parse_size(value()?)?.max(1) as u32,
            "--dir" => store_root = Some(std::path::PathBuf::from(value()?)),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    let dir = shmover_tools::mover::temp_dir("bench-grpc");
    let tmpfs = std::path::Path::new("/dev/shm");
    let root = store_root
        .unwrap_or_else(|| {
            if tmpfs.is_dir() {
                tmpfs.into()
            } else {
                dir.clone()
            }
        })
        .join(format!("shmover-bench-grpc-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let store = format!("file://{}", root.join("store").display());
    let token = dir.join("token");
    std::fs::write(&token, "bench-token").map_err(|e| e.to_string())?;
    let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(&token, private).map_err(|e| e.to_string())?;
    let tok = token.to_str().unwrap_or_default();
    let common = ["--insecure-plaintext", "--token-file", tok];
    let mut peer = shmover_tools::mover::MoverProcess::start(
        &[
            &[
                "--log",
                "info",
                "--store",
                &store,
                "--peer-listen",
                "127.0.0.1:0",
            ][..],
            &common[..],
        ]
        .concat(),
    );
    let url = format!("http://{}", peer.peer_addr());
    let mut fwd = shmover_tools::mover::MoverProcess::start(
        &[
            &["--log", "warn", "--forward", url.as_str()][..],
            &common[..],
        ]
        .concat(),
    );
    let (mut backup_s, mut restore_s, mut plain_s) = (f64::MAX, f64::MAX, f64::MAX);
    // Both sides write a file as large as the run into the tmpfs and
    // delete it. Whichever writes right after the other's deletion reuses
    // pages the host still backs; on a VM that reports freed pages to its
    // host (free page reporting), the first writer faults each page in
    // afresh, at a fraction of the speed. Alternate who goes first.
    for run in 0..runs {
        if run % 2 == 1 {
            plain_s = plain_s.min(grpc::plain_seconds(bytes, block, Some(&root))?);
        }
        let (b, r) = sbt_bench_run(&fwd, bytes, block)?;
        backup_s = backup_s.min(b);
        restore_s = restore_s.min(r);
        if run % 2 == 0 {
            plain_s = plain_s.min(grpc::plain_seconds(bytes, block, Some(&root))?);
        }
    }
    let (rss_mib, cpu_s) = proc_usage(fwd.pid());
    let (peer_rss_mib, peer_cpu_s) = proc_usage(peer.pid());
    fwd.kill();
    peer.kill();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&root);
    let (b, r, p) = (
        gbps(bytes, backup_s),
        gbps(bytes, restore_s),
        gbps(bytes, plain_s),
    );
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let per_gib = 2.0 * gib * f64::from(runs);
    Ok(format!(
        "{{\"scenario\":\"grpc\",\"bytes\":{bytes},\"block\":{block},\"gbps\":{b:.3},\"restore_gbps\":{r:.3},\"plain_grpc_gbps\":{p:.3},\"ratio_plain_grpc\":{:.3},\"ratio_restore_plain_grpc\":{:.3},\"mover_peak_rss_mib\":{rss_mib:.1},\"mover_cpu_s_per_gib\":{:.3},\"peer_peak_rss_mib\":{peer_rss_mib:.1},\"peer_cpu_s_per_gib\":{:.3}}}",
        b / p,
        r / p,
        cpu_s / per_gib,
        peer_cpu_s / per_gib
    ))
}

fn store_args(args: &[String]) -> Result<(u64, Option<String>), String> {
    let mut bytes: u64 = 2 << 30;
    let mut store = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bytes" => bytes = parse_size(value()?)?,
            "--store" => store = Some(value()?.clone()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    Ok((bytes, store))
}

fn start_mover(store: &Option<String>) -> Result<shmover_tools::mover::MoverProcess, String> {
    let mut margs = vec!["--log", "warn"];
    if let Some(s) = store {
        margs.extend(["--store", s.as_str()]);
    }
    shmover_tools::mover::MoverProcess::try_start(&margs)
}

/// N SBT channels at once (1, 2, 4, 8, 16) sharing `bytes`, 1 MiB blocks:
/// aggregate backup and restore throughput and the mover's peak RSS.
fn channels(args: &[String]) -> Result<Vec<String>, String> {
    let (bytes, store) = store_args(args)?;
    let mut lines = Vec::new();
    for n in [1usize, 2, 4, 8, 16] {
        let mut m = start_mover(&store)?;
        let per = (bytes / n as u64) >> 20 << 20;
        // Two rounds on one mover, as RMAN's channels write one piece
        // after another: the first (cold) creates each channel's ring, the
        // second reuses them. On this kind of VM fresh memory is slow to
        // touch, and with small pieces the rings are a large share of the
        // bytes; the cold round shows that cost, the warm one the data path.
        let cold = sbt_bench_channels(&m, n, per, 1 << 20)?;
        let run = sbt_bench_channels(&m, n, per, 1 << 20)?;
        let (rss, _) = proc_usage(m.pid());
        m.kill();
        let total = per * n as u64;
        lines.push(format!(
            "{{\"scenario\":\"channels\",\"channels\":{n},\"bytes\":{total},\"block\":1048576,\"backup_gbps\":{:.3},\"restore_gbps\":{:.3},\"mover_peak_rss_mib\":{rss:.1},\"mover_backup_cpu_s_per_gib\":{:.3},\"mover_restore_cpu_s_per_gib\":{:.3},\"cold_backup_gbps\":{:.3},\"cold_restore_gbps\":{:.3},\"cold_mover_backup_cpu_s_per_gib\":{:.3}}}",
            gbps(total, run.backup_s),
            gbps(total, run.restore_s),
            run.backup_cpu_s / gib(total),
            run.restore_cpu_s / gib(total),
            gbps(total, cold.backup_s),
            gbps(total, cold.restore_s),
            cold.backup_cpu_s / gib(total),
        ));
        println!("{}", lines.last().unwrap());
    }
    Ok(lines)
}

/// SBT backup and restore of `bytes` with block sizes from 64 KiB to 4 MiB:
/// throughput and the mover's CPU time per block.
fn blocks(args: &[String]) -> Result<Vec<String>, String> {
    let (bytes, store) = store_args(args)?;
    let mut lines = Vec::new();
    // (blocks, backup CPU seconds) per block size, best of two runs.
    let mut cpu = Vec::new();
    for block in [64usize << 10, 256 << 10, 1 << 20, 4 << 20] {
        let n_blocks = bytes / block as u64;
        let (mut b, mut r, mut bc, mut rc, mut rss) =
            (f64::MAX, f64::MAX, f64::MAX, f64::MAX, 0f64);
        for _ in 0..2 {
            let mut m = start_mover(&store)?;
            let run = sbt_bench_split(&m, bytes, block)?;
            rss = rss.max(proc_usage(m.pid()).0);
            m.kill();
            b = b.min(run.backup_s);
            r = r.min(run.restore_s);
            bc = bc.min(run.backup_cpu_s);
            rc = rc.min(run.restore_cpu_s);
        }
        cpu.push((n_blocks as f64, bc));
        lines.push(format!(
            "{{\"scenario\":\"blocks\",\"block\":{block},\"bytes\":{bytes},\"backup_gbps\":{:.3},\"restore_gbps\":{:.3},\"mover_backup_cpu_us_per_block\":{:.2},\"mover_backup_cpu_s_per_gib\":{:.3},\"mover_restore_cpu_s_per_gib\":{:.3},\"mover_peak_rss_mib\":{rss:.1}}}",
            gbps(bytes, b),
            gbps(bytes, r),
            bc * 1e6 / n_blocks as f64,
            bc / gib(bytes),
            rc / gib(bytes),
        ));
        println!("{}", lines.last().unwrap());
    }
    // The per-block overhead: what a backup of the same bytes costs the
    // mover in CPU for each block beyond those of the largest size. The
    // per-byte work (CRC32C, the disk's page pinning) is the same in both
    // and cancels out.
    let (small, large) = (cpu[0], cpu[cpu.len() - 1]);
    // CPU times come in 10 ms ticks (USER_HZ), two readings per figure: the
    // difference is known to within 20 ms, spread over the extra blocks.
    let extra = small.0 - large.0;
    let overhead_us = (small.1 - large.1) * 1e6 / extra;
    let resolution_us = 0.02 * 1e6 / extra;
    lines.push(format!(
        "{{\"scenario\":\"block_overhead\",\"block\":65536,\"baseline_block\":4194304,\"bytes\":{bytes},\"mover_backup_cpu_us_per_block\":{:.2},\"mover_overhead_us_per_block\":{overhead_us:.3},\"resolution_us\":{resolution_us:.3}}}",
        small.1 * 1e6 / small.0
    ));
    println!("{}", lines.last().unwrap());
    Ok(lines)
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// One `sbt-driver --bench-step` run, with the mover's CPU time split
/// between the backup and the restore (the pause between them is outside
/// both timings).
struct SplitRun {
    backup_s: f64,
    restore_s: f64,
    backup_cpu_s: f64,
    restore_cpu_s: f64,
}

fn sbt_bench_split(
    m: &shmover_tools::mover::MoverProcess,
    bytes: u64,
    block: usize,
) -> Result<SplitRun, String> {
    sbt_bench_channels(m, 1, bytes, block)
}

/// `n` `sbt-driver --bench-step` processes (channels), each backing up and
/// restoring `bytes`, stepped together: every backup starts once all the
/// channels have built their source buffers, every restore once all the
/// backups are done. Times are the slowest channel's; the mover's CPU is
/// split between the two phases.
fn sbt_bench_channels(
    m: &shmover_tools::mover::MoverProcess,
    n: usize,
    bytes: u64,
    block: usize,
) -> Result<SplitRun, String> {
    use std::io::{BufRead, Write};
    let driver = workspace_binary("sbt-driver").map_err(|e| e.to_string())?;
    let lib = driver.with_file_name("libsbtmover.so");
    struct Channel {
        child: std::process::Child,
        out: std::io::BufReader<std::process::ChildStdout>,
        text: String,
    }
    impl Channel {
        /// Reads lines up to `step`, keeping the others.
        fn expect(&mut self, step: &str) -> Result<(), String> {
            let mut line = String::new();
            loop {
                line.clear();
                if self.out.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    return Err(format!("sbt-driver stopped before {step:?}: {err}"));
                }
                if line.trim() == step {
                    return Ok(());
                }
                self.text += &line;
            }
        }
        fn go(&mut self) -> Result<(), String> {
            let stdin = self.child.stdin.as_mut().ok_or("no stdin")?;
            stdin.write_all(b"\n").map_err(|e| e.to_string())
        }
    }
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        let mut child = std::process::Command::new(&driver)
            .arg("--lib")
            .arg(&lib)
            .arg("--socket")
            .arg(&m.socket)
            .args([
                "--bench-bytes",
                &bytes.to_string(),
                "--bench-block",
                &block.to_string(),
                "--bench-step",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let out = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
        channels.push(Channel {
            child,
            out,
            text: String::new(),
        });
    }
    for c in &mut channels {
        c.expect("bench ready")?;
    }
    let cpu0 = proc_usage(m.pid()).1;
    for c in &mut channels {
        c.go()?;
    }
    for c in &mut channels {
        c.expect("bench backup-done")?;
    }
    let cpu1 = proc_usage(m.pid()).1;
    for c in &mut channels {
        c.go()?;
    }
    let (mut backup_s, mut restore_s) = (0f64, 0f64);
    for mut c in channels {
        c.child.stdin.take();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut c.out, &mut rest).map_err(|e| e.to_string())?;
        c.text += &rest;
        let done = c.child.wait_with_output().map_err(|e| e.to_string())?;
        let (b, r) = parse_bench(&c.text).ok_or_else(|| {
            format!(
                "sbt-driver failed: {}",
                String::from_utf8_lossy(&done.stderr)
            )
        })?;
        backup_s = backup_s.max(b);
        restore_s = restore_s.max(r);
    }
    let cpu2 = proc_usage(m.pid()).1;
    Ok(SplitRun {
        backup_s,
        restore_s,
        backup_cpu_s: cpu1 - cpu0,
        restore_cpu_s: cpu2 - cpu1,
    })
}

/// A number from a flat JSON line.
fn json_num(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    rest[..rest.find([',', '}'])?].parse().ok()
}

/// Two panels: throughput against channel count and against block size.
fn chart(lines: &[String]) -> String {
    let series = |scenario: &str, x: &str| -> Vec<(f64, f64, f64)> {
        lines
            .iter()
            .filter(|l| l.contains(&format!("\"scenario\":\"{scenario}\"")))
            .filter_map(|l| {
                Some((
                    json_num(l, x)?,
                    json_num(l, "backup_gbps")?,
                    json_num(l, "restore_gbps")?,
                ))
            })
            .collect()
    };
    let mut svg = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"360\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"900\" height=\"360\" fill=\"white\"/>\n",
    );
    let panels = [
        (
            "Throughput by SBT channels (GB/s)",
            series("channels", "channels"),
            "channels",
        ),
        (
            "Throughput by block size (GB/s)",
            series("blocks", "block"),
            "block KiB",
        ),
    ];
    for (p, (title, pts, xlabel)) in panels.iter().enumerate() {
        let (x0, y0, w, h) = (60.0 + 450.0 * p as f64, 40.0, 360.0, 260.0);
        let ymax = pts.iter().map(|t| t.1.max(t.2)).fold(0.1, f64::max) * 1.15;
        svg += &format!(
            "<text x=\"{}\" y=\"24\" font-size=\"14\">{title}</text>\n",
            x0
        );
        svg += &format!(
            "<line x1=\"{x0}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n",
            y0 + h,
            x0 + w,
            y0 + h
        );
        svg += &format!(
            "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{}\" stroke=\"black\"/>\n",
            y0 + h
        );
        for k in 0..=4 {
            let v = ymax * k as f64 / 4.0;
            let y = y0 + h - h * k as f64 / 4.0;
            svg += &format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>\n",
                x0 - 6.0,
                y + 4.0
            );
        }
        let n = pts.len().max(1);
        let xs = |i: usize| x0 + w * (i as f64 + 0.5) / n as f64;
        for (i, t) in pts.iter().enumerate() {
            let label = if *xlabel == "block KiB" {
                format!("{}", t.0 as u64 / 1024)
            } else {
                format!("{}", t.0 as u64)
            };
            svg += &format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
                xs(i),
                y0 + h + 16.0
            );
        }
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{xlabel}</text>\n",
            x0 + w / 2.0,
            y0 + h + 34.0
        );
        for (k, (color, name)) in [("#1f77b4", "backup"), ("#d62728", "restore")]
            .iter()
            .enumerate()
        {
            let path: Vec<String> = pts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let v = if k == 0 { t.1 } else { t.2 };
                    format!("{:.1},{:.1}", xs(i), y0 + h - h * v / ymax)
                })
                .collect();
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
                path.join(" ")
            );
            svg += &format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>\n",
                x0 + w - 60.0,
                y0 + 14.0 + 16.0 * k as f64
            );
        }
    }
    svg + "</svg>\n"
}

/// Everything, sized to finish within ten minutes on two cores; writes
/// `bench.json` (one JSON object per line) and `bench.svg`.
fn all(args: &[String]) -> Result<Vec<String>, String> {
    let mut out = String::from("bench");
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--out", Some(v)) => out = v.clone(),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut lines = vec![ring(&s(&["--bytes", "2G", "--runs", "3"]))?];
    println!("{}", lines[0]);
    for l in [
        sbt(&s(&["--bytes", "2G", "--runs", "2"]))?,
        backint(&s(&["--bytes", "2G"]))?,
        grpc_scenario(&s(&["--bytes", "1G", "--runs", "3"]))?,
    ] {
        println!("{l}");
        lines.push(l);
    }
    lines.extend(channels(&s(&["--bytes", "1G"]))?);
    lines.extend(blocks(&s(&["--bytes", "4G"]))?);
    std::fs::write(format!("{out}.json"), lines.join("\n") + "\n").map_err(|e| e.to_string())?;
    std::fs::write(format!("{out}.svg"), chart(&lines)).map_err(|e| e.to_string())?;
    eprintln!("wrote {out}.json and {out}.svg");
    Ok(Vec::new())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let one = |r: Result<String, String>| r.map(|l| vec![l]);
    let result = match args.first().map(String::as_str) {
        Some("ring") => one(ring(&args[1..])),
        Some("sbt") => one(sbt(&args[1..])),
        Some("backint") => one(backint(&args[1..])),
        Some("grpc") => one(grpc_scenario(&args[1..])),
        Some("channels") => channels(&args[1..]).map(|_| Vec::new()),
        Some("blocks") => blocks(&args[1..]).map(|_| Vec::new()),
        Some("all") => all(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(Vec::new())
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mover-bench: {e}");
            ExitCode::from(2)
        }
    }
}
