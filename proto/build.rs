//! Generates the prost types from `proto/` with a vendored `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build runs protoc from $PROTOC.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    prost_build::Config::new()
        .btree_map(["."])
        .compile_protos(&["proto/shmover/control/v1/control.proto"], &["proto"])?;
    Ok(())
}
