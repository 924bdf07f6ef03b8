//! Compiles the GREP11 protobuf definition (proto/grep11.proto) with protox, so that building
//! needs no system protoc, and generates the tonic server and client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/grep11.proto");
    let descriptors = protox::compile(["grep11.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
