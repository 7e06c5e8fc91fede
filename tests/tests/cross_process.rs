//! A C program produces into a ring whose consumer is this (Rust) process;
//! the descriptors travel over a Unix socket with SCM_RIGHTS and every
//! block's CRC32C and contents are checked.

use std::time::Duration;

use shmover_ring::Geometry;
use shmover_tools::{ringxfer, workspace_binary};

fn transfer(bytes: u64, block: usize, geometry: Geometry) -> ringxfer::Report {
    let opts = ringxfer::Options {
        producer: workspace_binary("ring-producer").expect("ring-producer is built"),
        bytes,
        block,
        geometry,
        crc: true,
        verify: true,
        timeout: Duration::from_secs(60),
    };
    ringxfer::run(&opts).unwrap_or_else(|e| panic!("transfer failed: {e}"))
}

#[test]
fn a_c_producer_moves_one_gib_to_a_rust_consumer_intact() {
    let bytes = 1u64 << 30;
    let sut = transfer(bytes, 1 << 20, Geometry::new(16, 1 << 20).unwrap());
    assert_eq!(sut.bytes, bytes);
    assert_eq!(sut.blocks, 1024);
    assert_eq!(sut.crc_checked, 1024);
    assert!(
        sut.producer_line
            .starts_with("produced bytes=1073741824 blocks=1024 "),
        "{}",
        sut.producer_line
    );
}

#[test]
fn odd_block_sizes_and_a_short_last_block_arrive_intact() {
    // 300,000-byte blocks in 300 KiB slots; 50 MiB + 7 bytes leaves a short
    // last block.
    let bytes = (50u64 << 20) + 7;
    let sut = transfer(bytes, 300_000, Geometry::new(8, 75 * 4096).unwrap());
    assert_eq!(sut.bytes, bytes);
    assert_eq!(sut.blocks, bytes.div_ceil(300_000));
    assert_eq!(sut.crc_checked, sut.blocks);
}

#[test]
fn a_ring_of_two_slots_forces_both_sides_to_sleep_and_still_delivers() {
    let bytes = 64u64 << 20;
    let sut = transfer(bytes, 4096, Geometry::new(2, 4096).unwrap());
    assert_eq!(sut.bytes, bytes);
    assert_eq!(sut.blocks, bytes / 4096);
}
