//! Compiles the SBT library's C sources against the client's header.

fn main() {
    println!("cargo:rerun-if-changed=c");
    println!("cargo:rerun-if-changed=../include");
    println!("cargo:rerun-if-changed=../common");
    let version: Vec<String> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(String::from)
        .collect();
    cc::Build::new()
        .file("c/sbtmover.c")
        .file("../common/encode.c")
        .include("c")
        .include("../common")
        .include("../include")
        .flag_if_supported("-std=gnu11")
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra")
        .flag_if_supported("-Werror")
        .flag_if_supported("-fvisibility=hidden")
        .opt_level(2)
        .define("_GNU_SOURCE", None)
        .define("SBTMOVER_VERSION_MAJOR", version[0].as_str())
        .define("SBTMOVER_VERSION_MINOR", version[1].as_str())
        .define("SBTMOVER_VERSION_PATCH", version[2].as_str())
        .compile("sbtmover_c");
    // Calls from the C code to the client library bind inside the .so.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic");
}
