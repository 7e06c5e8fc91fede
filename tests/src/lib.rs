//! Cross-process and cross-language tests live in `tests/`.
//!
//! This library is test support only: [`S3Server`], a real S3-compatible
//! server on loopback for tests of the mover's object-store path,
//! [`MoverProcess`], a `mover serve` child process in a private directory,
//! the host fakes ([`drivers`]), a TCP proxy that cuts connections
//! ([`proxy`]) and an HTTP proxy that injects store faults
//! ([`faultproxy`]).

pub mod drivers;
pub mod faultproxy;
pub mod objects;
pub mod proxy;
pub mod s3;

pub use s3::S3Server;
/// The mover process harness lives in `shmover-tools`, shared with
/// `mover-bench`.
pub use shmover_tools::mover;
pub use shmover_tools::mover::MoverProcess;

/// Polls `cond` every 20 ms until it holds or `limit` has passed; whether
/// it held. For states only observable by asking (a listing, a status).
pub fn eventually(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}
