//! Entry point of the C program `backint/hdbbackint.c`, the SAP HANA BACKINT program.

use std::ffi::{c_char, c_int, CString};
use std::os::unix::ffi::OsStringExt;

// Link the client library whose C ABI the C program calls.
use shmover_client as _;

extern "C" {
    fn hdbbackint_main(argc: c_int, argv: *mut *mut c_char) -> c_int;
}

fn main() {
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_vec()).unwrap_or_default())
        .collect();
    let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL,
    // all alive until the call returns, as a C `main` expects.
    let code = unsafe { hdbbackint_main(args.len() as c_int, argv.as_mut_ptr()) };
    std::process::exit(code);
}
