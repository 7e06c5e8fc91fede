//! Entry point of the C program `src/ring_producer.c`.

use std::ffi::{c_char, c_int};

// The ring library whose C ABI the C program calls.
use shmover_ring as _;

extern "C" {
    fn ring_producer_main(argc: c_int, argv: *mut *mut c_char) -> c_int;
}

fn main() {
    shmover_client::cmain::run(ring_producer_main)
}
