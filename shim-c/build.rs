//! Compiles the C sources against the checked-in headers. Each C program's
//! `main` is named `<program>_main` and called by a two-line Rust `main`,
//! so that cargo links it with the Rust ring library and puts it in
//! `target/<profile>/` beside the other binaries.

fn main() {
    println!("cargo:rerun-if-changed=include");
    println!("cargo:rerun-if-changed=src/ring_producer.c");
    cc::Build::new()
        .file("src/ring_producer.c")
        .include("include")
        .flag_if_supported("-std=c11")
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra")
        .flag_if_supported("-Werror")
        .opt_level(2)
        .define("_GNU_SOURCE", None)
        .compile("shmover_ring_producer");

    println!("cargo:rerun-if-changed=backint");
    println!("cargo:rerun-if-changed=common");
    cc::Build::new()
        .file("backint/hdbbackint.c")
        .file("common/encode.c")
        .include("include")
        .include("common")
        .flag_if_supported("-std=gnu11")
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra")
        .flag_if_supported("-Werror")
        .opt_level(2)
        .define("_GNU_SOURCE", None)
        .define(
            "HDBBACKINT_VERSION",
            format!("\"{}\"", env!("CARGO_PKG_VERSION")).as_str(),
        )
        .compile("shmover_hdbbackint");
}
