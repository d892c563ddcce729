//! Auth fixtures (`…/fixtures/auth`): tokens, cookies and metadata a test hands the session.

use crate::document::{DocumentError, parse_json_object};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A parsed auth-fixtures document. Stored with the session and shown by `…/state`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFixtures {
    /// Bearer tokens.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Cookies.
    #[serde(default)]
    pub cookies: Vec<Cookie>,
    /// Free-form metadata: name → string, number or boolean.
    #[serde(default)]
    pub metadata: BTreeMap<String, crate::rules::TagValue>,
}

/// One cookie fixture.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cookie {
    /// Cookie name.
    pub name: String,
    /// Cookie value.
    pub value: String,
    /// Cookie domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Cookie path.
    #[serde(default)]
    pub path: Option<String>,
}

impl AuthFixtures {
    /// Parses an auth-fixtures document.
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        parse_json_object(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_mistakes() {
        let fixtures = AuthFixtures::parse(
            br#"{"tokens":["t1"],"cookies":[{"name":"sid","value":"v"}],"metadata":{"tier":1}}"#,
        )
        .unwrap();
        assert_eq!(fixtures.tokens, ["t1"]);
        let err = AuthFixtures::parse(br#"{"cookies":[{"name":"sid"}]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cookies[0]: missing field `value` at line 1 column 26"
        );
    }
}
