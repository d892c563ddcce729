//! Softprobe's Envoy proxy-wasm HTTP filter: asks the Softprobe runtime whether to mock each
//! tagged request (`/v1/inject`), uploads what really happened (`/v1/traces`), and carries the
//! session to the next hop in W3C `tracestate`.
//!
//! Everything but `shim` is a pure core with no host calls, tested natively; the shim (built
//! only for wasm) is the one user of `proxy-wasm` and applies the core's decisions.

pub mod answer;
pub mod body;
pub mod config;
pub mod exchange;
pub mod proto;
pub mod span;
pub mod trace_context;
mod wire;

#[cfg(target_arch = "wasm32")]
mod shim;
