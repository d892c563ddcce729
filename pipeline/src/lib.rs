//! Softprobe's domain and pipeline: sessions and their store, the rule, policy and case
//! documents, rule matching, and capture buffering and case writing.

pub mod budget;
pub mod capture;
pub mod case;
pub mod case_file;
#[cfg(test)]
mod corrupt;
pub mod document;
pub mod export;
pub mod fixtures;
pub mod hop;
pub mod inject;
pub mod json_path;
pub mod matcher;
pub mod misses;
pub mod mode;
pub mod otlp;
pub mod policy;
pub mod replay;
pub mod rules;
pub mod session;
pub mod stages;
pub mod store;
