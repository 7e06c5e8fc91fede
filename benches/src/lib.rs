//! Micro-benchmarks live in `benches/`; run `cargo bench -p shmover-benches`.
