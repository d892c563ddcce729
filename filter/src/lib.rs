//! Softprobe's Envoy proxy-wasm HTTP filter.
//!
//! Placeholder crate: the filter arrives with the data-plane issue. It compiles for the host
//! and for `wasm32-wasip1` so the workspace layout and build profile are settled now.
