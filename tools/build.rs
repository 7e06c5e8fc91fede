//! Compiles the C tools (`c/sbt_driver.c`): like Oracle's own test driver,
//! the SBT driver is a C program that loads the library with dlopen.

fn main() {
    println!("cargo:rerun-if-changed=c");
    println!("cargo:rerun-if-changed=../shim-c/sbt/c/sbt.h");
    cc::Build::new()
        .file("c/sbt_driver.c")
        .flag_if_supported("-std=gnu11")
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra")
        .flag_if_supported("-Werror")
        .flag_if_supported("-Wno-unused-parameter")
        .opt_level(2)
        .define("_GNU_SOURCE", None)
        .compile("shmover_tools_c");
    println!("cargo:rustc-link-lib=dylib=dl");
}
