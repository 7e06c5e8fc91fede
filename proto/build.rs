//! Generates the prost types from `proto/` with a vendored `protoc`, and,
//! with the `peer` feature, the tonic client and server of the peer
//! service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build runs protoc from $PROTOC.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    prost_build::Config::new()
        .btree_map(["."])
        .compile_protos(&["proto/shmover/control/v1/control.proto"], &["proto"])?;
    if std::env::var_os("CARGO_FEATURE_PEER").is_some() {
        // Chunk payloads decode as `Bytes` (slices of the receive buffer)
        // and encode from `Bytes` (ring slots), so neither side copies them
        // beyond what the HTTP/2 framing needs.
        tonic_prost_build::configure()
            .bytes(".shmover.peer.v1")
            .build_transport(false)
            .compile_protos(&["proto/shmover/peer/v1/peer.proto"], &["proto"])?;
    }
    Ok(())
}
