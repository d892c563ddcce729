//! Compiles Softprobe's gRPC contract (`proto/`) with a pure-Rust protobuf compiler (no system
//! `protoc`). OTLP imports resolve from the descriptors shipped by opentelemetry-proto, and the
//! generated code reuses that crate's OTLP types.
//!
//! The runtime's own gRPC servers (OTLP `TraceService/Export`, `InjectService/Inject`) are
//! generated over message bytes (`RawCodec`): the pipeline reads protobuf in place, as it does
//! for OTLP/HTTP, instead of tonic decoding every request into `TracesData` first.

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

    let raw = |package: &str, service: &str, method: &str, route: &str| {
        tonic_build::manual::Service::builder()
            .package(package)
            .name(service)
            .method(
                tonic_build::manual::Method::builder()
                    .name(method)
                    .route_name(route)
                    .input_type("::bytes::Bytes")
                    .output_type("::bytes::Bytes")
                    .codec_path("crate::proto::RawCodec")
                    .build(),
            )
            .build()
    };
    let raw_dir = out_dir.join("raw");
    std::fs::create_dir_all(&raw_dir)?;
    tonic_build::manual::Builder::new()
        .build_client(false)
        .out_dir(raw_dir)
        .compile(&[
            raw(
                "opentelemetry.proto.collector.trace.v1",
                "TraceService",
                "export",
                "Export",
            ),
            raw("softprobe.v1", "InjectService", "inject", "Inject"),
        ]);
    Ok(())
}
