//! Runs the loom models of the ring protocol (`ringbuf/src/tests/`) as part
//! of `cargo test --workspace`, and checks that they have teeth: with the
//! wake-up fence removed (`--cfg shmover_loom_mutant`) they must fail.
//!
//! Loom needs the whole crate built with `--cfg loom`, so this drives a
//! nested cargo with its own target directory.

use std::path::Path;
use std::process::{Command, Output};

fn loom_run(extra_cfg: &str, target_subdir: &str) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join(target_subdir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Command::new(cargo)
        .current_dir(root)
        .args(["test", "-p", "shmover-ring", "--lib", "--profile", "loom"])
        .env("RUSTFLAGS", format!("--cfg loom {extra_cfg}"))
        .env("CARGO_TARGET_DIR", target)
        .env("LOOM_MAX_PREEMPTIONS", "2")
        .env_remove("RUSTC_WRAPPER")
        .output()
        .expect("run cargo")
}

/// How many loom models ended `wanted` ("ok" or "FAILED").
fn models(out: &Output, wanted: &str) -> usize {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.starts_with("test tests::loom_ring::") && l.ends_with(&format!("... {wanted}"))
        })
        .count()
}

#[test]
fn the_loom_models_pass_and_fail_without_the_wakeup_fence() {
    let out = loom_run("", "loom");
    assert!(
        out.status.success(),
        "loom models failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        models(&out, "ok"),
        9,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let mutant = loom_run("--cfg shmover_loom_mutant", "loom-mutant");
    assert!(
        !mutant.status.success(),
        "loom did not notice the missing fence:\n{}",
        String::from_utf8_lossy(&mutant.stdout)
    );
    // The mutant must build and run, and a model must fail: a nested cargo
    // that failed for any other reason (a build error, a lock) proves
    // nothing about the fence. (A model loom finds deadlocked can abort
    // the test process before it prints FAILED: its panic counts.)
    let stderr = String::from_utf8_lossy(&mutant.stderr);
    let model_panicked = stderr
        .lines()
        .any(|l| l.starts_with("thread 'tests::loom_ring::") && l.contains("panicked at"));
    assert!(
        String::from_utf8_lossy(&mutant.stdout).contains("running ")
            && (models(&mutant, "FAILED") > 0 || model_panicked),
        "no loom model failed without the fence:\n{}\n{}",
        String::from_utf8_lossy(&mutant.stdout),
        String::from_utf8_lossy(&mutant.stderr)
    );
}
