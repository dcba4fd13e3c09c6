//! Compiles `proto/accord/v1/*.proto` with protox (pure Rust, no system `protoc`) and generates
//! tonic/prost code plus the encoded file descriptor set for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let dir = root.join("accord/v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "proto"));
    files.sort();
    println!("cargo:rerun-if-changed={}", dir.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("accord_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // BTreeMap for every protobuf map: encoding is then deterministic (sorted keys), so a response
    // re-built for an audit replay hashes to the digest recorded at the time.
    tonic_prost_build::configure().btree_map(".").build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
