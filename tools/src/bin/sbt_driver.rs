//! Entry point of the C program `c/sbt_driver.c`, which loads an SBT
//! library with dlopen and runs the SBT specification's scenarios.

use std::ffi::{c_char, c_int};

// The C program is compiled into this package's library.
use shmover_tools as _;

extern "C" {
    fn sbt_driver_main(argc: c_int, argv: *mut *mut c_char) -> c_int;
}

fn main() {
    shmover_client::cmain::run(sbt_driver_main)
}
