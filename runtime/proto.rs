//! Code generated from `proto/` by `build.rs`.
#![allow(missing_docs, unreachable_pub, clippy::all)]

/// `softprobe.v1`: the inject RPC.
pub mod v1 {
    tonic::include_proto!("softprobe.v1");
}

/// The encoded `FileDescriptorSet` of `proto/`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("softprobe_descriptor");
