//! `libsbtmover.so`: the Oracle SBT 2.0 library of shmover.
//!
//! The library is written in C (`c/sbtmover.c`, on the client library's C
//! ABI). A Rust `cdylib` exports only Rust symbols, so each SBT entry point
//! is a one-line trampoline here that forwards its arguments unchanged to
//! the C implementation. Oracle only looks up `sbtinit` and reaches the
//! rest through the function table it returns (which points at the C code
//! directly); the other names are exported for drivers that `dlsym` them,
//! and the v1 names exist as stubs that fail cleanly.

#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void};

// The client library the C code calls.
use shmover_client as _;

macro_rules! sbt_exports {
    ($($name:ident => $imp:ident ( $($arg:ident : $ty:ty),* );)*) => {
        extern "C" {
            $(fn $imp($($arg: $ty),*) -> c_int;)*
        }
        $(
            #[doc = concat!("`", stringify!($name), "`: see the SBT 2.0 specification.")]
            ///
            /// # Safety
            ///
            /// The SBT API's contract: arguments as Oracle passes them.
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
                // SAFETY: the arguments go unchanged to the C function with
                // the same signature; the caller upholds the SBT contract.
                unsafe { $imp($($arg),*) }
            }
        )*
    };
}

type Ptr = *mut c_void;

sbt_exports! {
    sbtinit => sbtmover_sbtinit(se: Ptr, input: Ptr, output: *mut Ptr);
    sbtinit2 => sbtmover_sbtinit2(ctx: Ptr, flags: c_ulong, input: Ptr, output: *mut Ptr);
    sbtbackup => sbtmover_sbtbackup(ctx: Ptr, flags: c_ulong, name: *mut c_char, info: Ptr, block_size: usize, max_size: usize, copy: c_uint, pool: c_uint);
    sbtwrite2 => sbtmover_sbtwrite2(ctx: Ptr, flags: c_ulong, buf: Ptr);
    sbtclose2 => sbtmover_sbtclose2(ctx: Ptr, flags: c_ulong);
    sbtrestore => sbtmover_sbtrestore(ctx: Ptr, flags: c_ulong, name: *mut c_char, block_size: usize);
    sbtread2 => sbtmover_sbtread2(ctx: Ptr, flags: c_ulong, buf: Ptr);
    sbtremove2 => sbtmover_sbtremove2(ctx: Ptr, flags: c_ulong, names: *mut *mut c_char);
    sbtinfo2 => sbtmover_sbtinfo2(ctx: Ptr, flags: c_ulong, names: *mut *mut c_char, out: *mut Ptr);
    sbtcommand => sbtmover_sbtcommand(ctx: Ptr, flags: c_ulong, command: *mut c_char);
    sbterror => sbtmover_sbterror(ctx: Ptr, flags: c_ulong, code: *mut c_ulong, native: *mut *mut c_char, utf8: *mut *mut c_char);
    sbtend => sbtmover_sbtend(ctx: Ptr, flags: c_ulong);
    sbtpcbackup => sbtmover_sbtpcbackup(ctx: Ptr, flags: c_ulong, handle: *mut c_ulong, backup: *mut c_char, file: *mut c_char, info: Ptr, r1: c_ulong, r2: c_ulong, block_size: c_ulong, pool: c_uint);
    sbtpccancel => sbtmover_sbtpccancel(ctx: Ptr, flags: c_ulong, handle: c_ulong);
    sbtpccommit => sbtmover_sbtpccommit(ctx: Ptr, flags: c_ulong, handle: c_ulong);
    sbtpcend => sbtmover_sbtpcend(ctx: Ptr, flags: c_ulong);
    sbtpcquerybackup => sbtmover_sbtpcquerybackup(ctx: Ptr, flags: c_ulong, file: *mut c_char);
    sbtpcqueryrestore => sbtmover_sbtpcqueryrestore(ctx: Ptr, flags: c_ulong, backup: *mut c_char, file: *mut c_char);
    sbtpcrestore => sbtmover_sbtpcrestore(ctx: Ptr, flags: c_ulong, handle: *mut c_ulong, backup: *mut c_char, file: *mut c_char, r: c_ulong);
    sbtpcstart => sbtmover_sbtpcstart(ctx: Ptr, flags: c_ulong, handle: c_ulong, size: c_ulong);
    sbtpcstatus => sbtmover_sbtpcstatus(ctx: Ptr, flags: c_ulong, handle: c_ulong, handle_out: *mut c_ulong, status: *mut c_uint);
    sbtpcvalidate => sbtmover_sbtpcvalidate(ctx: Ptr, flags: c_ulong);
}

macro_rules! v1_stubs {
    ($($name:ident),*) => {
        $(
            #[doc = concat!("`", stringify!($name), "`: an SBT 1.1 entry point; always fails (-1), as this library speaks API 2.0.")]
            #[no_mangle]
            pub extern "C" fn $name() -> c_int {
                -1
            }
        )*
    };
}

v1_stubs!(sbtopen, sbtread, sbtwrite, sbtclose, sbtinfo, sbtremove);
