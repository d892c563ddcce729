//! Generates prost types for OTLP traces from the descriptors shipped by opentelemetry-proto
//! (pure Rust, no `protoc`; the opentelemetry-proto runtime crate is too heavy for wasm).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let resolver =
        protox::file::DescriptorSetFileResolver::decode(opentelemetry_proto::DESCRIPTORS)?;
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    // The trace file imports common and resource; prost needs all three.
    compiler.include_imports(true);
    compiler.open_file("opentelemetry/proto/trace/v1/trace.proto")?;
    prost_build::Config::new().compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
