//! Case documents (`*.case.json`) as loaded into a session with `…/load-case`.

use crate::document::{DocumentError, parse_json_object};
use crate::rules::Rule;
use serde::Deserialize;

/// The parts of a loaded case the runtime uses. The document itself is kept verbatim.
///
/// Required fields follow `case.schema.json` (`version`, `caseId`, `traces`); other keys are
/// open and kept only in the stored bytes. The runtime never walks `traces` on the inject path:
/// SDKs pick responses from the case and register them as `mock` rules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    /// Case format version, `1.0.0` today.
    pub version: String,
    /// Case identifier.
    pub case_id: String,
    /// Optional mode the case was recorded in.
    #[serde(default)]
    pub mode: Option<crate::mode::Mode>,
    /// OTLP JSON trace documents; each must be an object.
    pub traces: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Case-embedded rules, the middle layer of precedence (at most
    /// [`crate::rules::MAX_RULES_PER_DOCUMENT`]).
    #[serde(default, deserialize_with = "crate::rules::deserialize_rule_list")]
    pub rules: Vec<Rule>,
}

impl Case {
    /// Parses a case document.
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        parse_json_object(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_examples() {
        for example in ["empty", "orders-checkout"] {
            let path = format!(
                "{}/../testdata/cases/{example}.case.json",
                env!("CARGO_MANIFEST_DIR")
            );
            let bytes = std::fs::read(&path).unwrap();
            let case = Case::parse(&bytes).unwrap_or_else(|err| panic!("{path}: {err}"));
            assert!(!case.case_id.is_empty());
        }
    }

    #[test]
    fn names_what_is_missing_or_wrong() {
        let err = Case::parse(br#"{"version":"1.0.0","traces":[]}"#).unwrap_err();
        assert!(err.message.starts_with("missing field `caseId`"), "{err}");
        let err = Case::parse(br#"{"version":"1.0.0","caseId":"c","traces":[3]}"#).unwrap_err();
        assert_eq!(err.path, "traces[0]");
        let err = Case::parse(
            br#"{"version":"1.0.0","caseId":"c","traces":[],"rules":[{"when":{},"then":{"action":"nope"}}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.path, "rules[0].then.action");
    }
}
