//! Entry point of the C program `backint/hdbbackint.c`, the SAP HANA BACKINT program.

use std::ffi::{c_char, c_int};

extern "C" {
    fn hdbbackint_main(argc: c_int, argv: *mut *mut c_char) -> c_int;
}

fn main() {
    shmover_client::cmain::run(hdbbackint_main)
}
