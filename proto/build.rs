//! Compiles `proto/sluice.proto` with protox (pure Rust), so building Sluice needs no
//! `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/sluice.proto");
    let fds = protox::compile(["proto/sluice.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".sluice.v1")
        .compile_fds(fds)?;
    Ok(())
}
