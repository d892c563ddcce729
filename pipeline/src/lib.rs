//! Softprobe's domain and pipeline: sessions and their store, the rule, policy and case
//! documents, rule matching, and capture buffering and case writing.

pub mod budget;
pub mod capture;
pub mod case;
pub mod case_file;
#[cfg(test)]
mod corrupt;
pub mod document;
pub mod fixtures;
pub mod json_path;
pub mod json_view;
pub mod matcher;
pub mod otlp;
pub mod policy;
pub mod record;
pub mod rules;
pub mod session;
pub mod stages;
pub mod store;
pub mod wire;
