//! Running a C program's `main` from a Rust binary, so that cargo builds
//! the C tools (hdbbackint, ring-producer, sbt-driver) into
//! `target/<profile>/` linked with the Rust libraries they call.

use std::ffi::{c_char, c_int, CString};
use std::os::unix::ffi::OsStringExt;

/// A C `main`: `int main(int argc, char **argv)`.
pub type CMain = unsafe extern "C" fn(c_int, *mut *mut c_char) -> c_int;

/// Calls `main` with this process's arguments and exits with its status.
pub fn run(main: CMain) -> ! {
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_vec()).unwrap_or_default())
        .collect();
    let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL,
    // alive until the call returns, as a C `main` expects.
    let code = unsafe { main(args.len() as c_int, argv.as_mut_ptr()) };
    std::process::exit(code)
}
