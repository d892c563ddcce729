//! The `when.bodyJsonPath` predicate: a small JSONPath subset evaluated on a JSON request body.
//!
//! Syntax: `$` followed by `.key`, `["key"]` or `[index]` steps, for example
//! `$.order.items[0].sku`. The predicate holds when the path resolves to a non-null value.
//! Equality form: `<path> == <JSON literal>`, for example `$.order.currency == "usd"` or
//! `$.retry == false`; it holds when the resolved value equals the literal.

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::Value;

/// A parsed `bodyJsonPath` predicate.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyJsonPredicate {
    source: String,
    steps: Vec<Step>,
    equals: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

impl BodyJsonPredicate {
    /// Parses `$.a.b[0]` or `$.a == <JSON literal>`.
    pub fn parse(source: &str) -> Result<Self, String> {
        let (path, equals) = match source.split_once("==") {
            Some((path, literal)) => {
                let literal = literal.trim();
                let value = serde_json::from_str(literal).map_err(|err| {
                    format!("the value after \"==\" must be a JSON literal, got {literal:?}: {err}")
                })?;
                (path.trim(), Some(value))
            }
            None => (source.trim(), None),
        };
        let steps = parse_steps(path)?;
        Ok(Self {
            source: source.trim().to_owned(),
            steps,
            equals,
        })
    }

    /// The predicate as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `body` (a JSON document) satisfies the predicate.
    pub fn matches(&self, body: &Value) -> bool {
        let mut current = body;
        for step in &self.steps {
            current = match (step, current) {
                (Step::Key(key), Value::Object(map)) => match map.get(key) {
                    Some(next) => next,
                    None => return false,
                },
                (Step::Index(index), Value::Array(items)) => match items.get(*index) {
                    Some(next) => next,
                    None => return false,
                },
                _ => return false,
            };
        }
        match &self.equals {
            Some(expected) => json_equal(current, expected),
            None => !current.is_null(),
        }
    }
}

/// Numbers compare by value (`1` equals `1.0`); everything else structurally.
fn json_equal(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => actual == expected,
    }
}

fn parse_steps(path: &str) -> Result<Vec<Step>, String> {
    let rest = path
        .strip_prefix('$')
        .ok_or_else(|| format!("a JSON path starts with \"$\", got {path:?}"))?;
    let mut steps = Vec::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '.' => {
                let start = at + 1;
                let mut end = rest.len();
                while let Some(&(i, c)) = chars.peek() {
                    if c == '.' || c == '[' {
                        end = i;
                        break;
                    }
                    chars.next();
                }
                let key = &rest[start..end];
                if key.is_empty() {
                    return Err(format!("empty key at offset {} in {path:?}", start + 1));
                }
                steps.push(Step::Key(key.to_owned()));
            }
            '[' => {
                let close = rest[at..]
                    .find(']')
                    .map(|i| at + i)
                    .ok_or_else(|| format!("unclosed \"[\" in {path:?}"))?;
                let inner = rest[at + 1..close].trim();
                let step = if let Some(quoted) = inner
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .or_else(|| inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                {
                    Step::Key(quoted.to_owned())
                } else {
                    Step::Index(inner.parse().map_err(|_| {
                        format!("expected an index or a quoted key in [{inner}] of {path:?}")
                    })?)
                };
                steps.push(step);
                while chars.peek().is_some_and(|&(i, _)| i <= close) {
                    chars.next();
                }
            }
            other => {
                return Err(format!(
                    "unexpected {other:?} at offset {} in {path:?} (use .key, [\"key\"] or [index])",
                    at + 1
                ));
            }
        }
    }
    Ok(steps)
}

impl<'de> Deserialize<'de> for BodyJsonPredicate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Self::parse(&source).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_resolve_and_compare() {
        let body = json!({"order":{"items":[{"sku":"A-1","qty":2}],"currency":"usd","gift":null},
                          "odd key":{"x":true}});
        let holds = |p: &str| BodyJsonPredicate::parse(p).unwrap().matches(&body);
        assert!(holds("$.order.items[0].sku"));
        assert!(holds("$[\"odd key\"].x"));
        assert!(holds("$.order.currency == \"usd\""));
        assert!(holds("$.order.items[0].qty == 2.0"));
        assert!(holds("$.order"));
        assert!(!holds("$.order.gift"), "null does not count as present");
        assert!(!holds("$.order.items[1]"));
        assert!(!holds("$.order.currency == \"eur\""));
        assert!(!holds("$.order.currency.x"));
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["order.id", "$..x", "$.a[", "$.a[x]", "$.a == usd", "$ a"] {
            assert!(BodyJsonPredicate::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
