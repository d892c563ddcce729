//! Compiles Softprobe's gRPC contract (`proto/`) with a pure-Rust protobuf compiler (no system
//! `protoc`). OTLP imports resolve from the descriptors shipped by opentelemetry-proto, and the
//! generated code reuses that crate's OTLP types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(protox::file::IncludeFileResolver::new("proto".into()));
    resolver.add(protox::file::DescriptorSetFileResolver::decode(
        opentelemetry_proto::DESCRIPTORS,
    )?);
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_source_info(true);
    compiler.open_file("softprobe/v1/inject.proto")?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Only our own files: reflection serves OTLP's descriptors from opentelemetry-proto.
    std::fs::write(
        out_dir.join("softprobe_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .extern_path(".opentelemetry.proto", "::opentelemetry_proto::tonic")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
