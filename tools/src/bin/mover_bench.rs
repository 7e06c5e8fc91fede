//! `mover-bench`: end-to-end benchmark scenarios for shmover. Each scenario
//! measures its own baseline in the same run and prints one JSON line with
//! both figures and their ratio, because these machines are shared and
//! noisy: only ratios taken side by side mean anything.
//!
//! ```text
//! mover-bench ring [--bytes 4G] [--block 1M] [--slot-size 1M] [--slots 32] [--runs 3]
//! ```

use std::process::ExitCode;
use std::time::Instant;

use shmover_client::units::parse_size;
use shmover_ring::Geometry;
use shmover_tools::{pattern, ringxfer, workspace_binary};

const USAGE: &str =
    "usage: mover-bench ring [--bytes N] [--block B] [--slot-size S] [--slots C] [--runs R]
  ring   a C producer process moves N bytes (default 4G) in B-byte blocks
         (default 1M) through a shared-memory ring to a consumer process that
         releases them unread; baseline: single-thread memcpy of the same bytes.
         Prints the best of R runs (default 3) of each.";

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

fn ring(args: &[String]) -> Result<(), String> {
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
    let (mut best_ring, mut best_memcpy) = (f64::MAX, f64::MAX);
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
    }
    let g = gbps(a.bytes, best_ring);
    let m = gbps(a.bytes, best_memcpy);
    println!(
        "{{\"scenario\":\"ring\",\"bytes\":{},\"block\":{},\"slot_size\":{},\"slots\":{},\"runs\":{},\"gbps\":{:.3},\"memcpy_gbps\":{:.3},\"ratio_memcpy\":{:.3}}}",
        a.bytes, a.block, a.slot_size, a.slots, a.runs, g, m, g / m
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ring") => ring(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mover-bench: {e}");
            ExitCode::from(2)
        }
    }
}
