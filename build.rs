//! Compiles `proto/crm/v1/*.proto` with protox (pure Rust, no system `protoc`) and
//! writes the descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/crm/v1/common.proto",
        "proto/crm/v1/satisfaction.proto",
        "proto/crm/v1/customer.proto",
        "proto/crm/v1/communication.proto",
        "proto/crm/v1/analytics.proto",
        "proto/crm/v1/audit.proto",
        "proto/crm/v1/export.proto",
        "proto/crm/v1/schedule.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("crm_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
