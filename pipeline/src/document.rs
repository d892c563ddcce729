//! Posted JSON documents: parsed into typed values with errors that name the place, and kept
//! as posted beside their parsed form.

use crate::budget::Held;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::fmt;

/// A posted document that does not have the expected shape.
///
/// `path` points at the offending value in the document (`rules[0].then.action`); it is
/// empty when the document as a whole is wrong (not JSON, empty, truncated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DocumentError {
    /// Where in the document the problem is, in `a.b[0].c` form; empty for the whole document.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl DocumentError {
    /// An error at `path` (may be empty for the whole document).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error, seen from a parent document: `rules[0]` under `traces` becomes
    /// `traces.rules[0]`.
    pub fn within(mut self, parent: &str) -> Self {
        self.path = match (parent.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => parent.to_owned(),
            (false, false) if self.path.starts_with('[') => format!("{parent}{}", self.path),
            (false, false) => format!("{parent}.{}", self.path),
        };
        self
    }
}

/// Parses `bytes` as one JSON document of type `T`, reporting the path of the first problem.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DocumentError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(DocumentError::new(
            "",
            "the body is empty; send a JSON document",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        DocumentError::new(path, err.into_inner().to_string())
    })?;
    deserializer.end().map_err(|err| {
        DocumentError::new("", format!("unexpected data after the document: {err}"))
    })?;
    Ok(value)
}

/// Parses `bytes` as one JSON object of type `T` (serde would also accept an array for a
/// struct, with confusing messages).
pub fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DocumentError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'{') => parse_json(bytes),
        Some(_) => Err(DocumentError::new("", "expected a JSON object ({…})")),
    }
}

/// Parses a JSON value already in memory (an embedded document) as `T`.
pub fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, DocumentError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        DocumentError::new(path, err.into_inner().to_string())
    })
}

/// A document as posted (kept verbatim for `…/state`) with its parsed form.
#[derive(Debug)]
pub struct Stored<T> {
    /// The bytes exactly as posted.
    pub raw: Bytes,
    /// The typed value.
    pub parsed: T,
    /// Its bytes, held against the documents' budget while any snapshot keeps it.
    _held: Option<Held>,
}

impl<T> Stored<T> {
    /// A document outside the documents' budget (a policy given at create, tests).
    pub fn new(raw: Bytes, parsed: T) -> Self {
        Self {
            raw,
            parsed,
            _held: None,
        }
    }

    pub(crate) fn held(raw: Bytes, parsed: T, held: Held) -> Self {
        Self {
            raw,
            parsed,
            _held: Some(held),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        n: u8,
    }

    #[test]
    fn error_names_the_place() {
        let err = parse_json::<Doc>(br#"{"items":[{"n":1},{"n":"x"}]}"#).unwrap_err();
        assert_eq!(err.path, "items[1].n");
        assert!(err.message.contains("invalid type"), "{err}");
    }

    #[test]
    fn empty_and_trailing_data_are_refused() {
        assert!(
            parse_json::<Doc>(b"  ")
                .unwrap_err()
                .message
                .contains("empty")
        );
        let err = parse_json::<Doc>(br#"{"items":[]} {}"#).unwrap_err();
        assert!(err.message.contains("after the document"), "{err}");
    }

    #[test]
    fn within_prefixes_paths() {
        let e = DocumentError::new("[2].when", "bad").within("rules");
        assert_eq!(e.to_string(), "rules[2].when: bad");
        let e = DocumentError::new("", "bad").within("rules");
        assert_eq!(e.to_string(), "rules: bad");
    }
}
