//! Pieces shared by `mover-bench` and the integration tests: passing ring
//! descriptors over a Unix socket, the deterministic block pattern the C
//! producer writes, and a driver that runs the C producer against a Rust
//! consumer.

#![warn(missing_docs)]

pub mod fdpass;
pub mod mover;
pub mod pattern;
pub mod ringxfer;

use std::path::PathBuf;

/// Finds a binary built by this workspace (`ring-producer`, `mover`, ...):
/// next to the running executable, or one directory up (test binaries live
/// in `target/<profile>/deps/`).
pub fn workspace_binary(name: &str) -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(PathBuf::from);
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent().map(PathBuf::from);
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!(
            "{name} not found near {}; run `cargo build` first",
            exe.display()
        ),
    ))
}

/// A path for a Unix socket that nobody else uses, under the temp dir.
pub fn unique_socket_path(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "shmover-{tag}-{}-{n}-{nanos}.sock",
        std::process::id()
    ))
}
