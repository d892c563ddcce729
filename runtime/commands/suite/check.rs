//! Comparing the app's answer with the recorded one: status, the headers asked for, and the
//! body (`json-subset`, `exact`, `string`, `ignore`) with noise left out by JSONPath, each
//! difference as path, expected, actual.

use super::document::{Assertions, StatusSpec};
use serde_json::Value;

/// One difference between what was recorded (or asked for) and what the app answered, or an
/// issue an assert hook reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(super) struct Difference {
    /// `status`, `headers.content-type`, `$.items[0].price`, …
    pub(super) path: String,
    /// Empty when a hook's issue leaves it out.
    pub(super) expected: String,
    /// Empty when a hook's issue leaves it out.
    pub(super) actual: String,
    /// Why, when a hook said so; with the hook's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.path)?;
        let values = !self.expected.is_empty() || !self.actual.is_empty();
        match &self.reason {
            Some(reason) if values => write!(
                f,
                "{reason} (expected {}, got {})",
                self.expected, self.actual
            ),
            Some(reason) => f.write_str(reason),
            None => write!(f, "expected {}, got {}", self.expected, self.actual),
        }
    }
}

fn difference(path: &str, expected: impl ToString, actual: impl ToString) -> Difference {
    Difference {
        path: path.to_owned(),
        expected: expected.to_string(),
        actual: actual.to_string(),
        reason: None,
    }
}

/// What the app answered, or what was recorded.
#[derive(Debug, Clone, Default)]
pub(super) struct Answer {
    pub(super) status: u16,
    /// Names lower-cased.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

/// Every difference between `actual` and `recorded` under `assertions`, plus the suite's
/// `noise` paths ignored in bodies.
pub(super) fn compare(
    assertions: Option<&Assertions>,
    noise: &[String],
    recorded: Option<&Answer>,
    actual: &Answer,
) -> Result<Vec<Difference>, String> {
    let mut out = Vec::new();
    let status = assertions.and_then(|a| a.status.as_ref());
    if let Some(d) = check_status(status, recorded.map(|r| r.status), actual.status) {
        out.push(d);
    }
    if let Some(headers) = assertions.and_then(|a| a.headers.as_ref()) {
        for (name, pattern) in &headers.include {
            let value = actual
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str());
            let path = format!("headers.{}", name.to_ascii_lowercase());
            match value {
                None => out.push(difference(&path, "present", "absent")),
                Some(value) if !pattern.is_empty() => {
                    let regex = regex::Regex::new(pattern)
                        .map_err(|err| format!("{path}: invalid pattern {pattern:?}: {err}"))?;
                    if !regex.is_match(value) {
                        out.push(difference(&path, format!("/{pattern}/"), value));
                    }
                }
                Some(_) => {}
            }
        }
    }
    let body = assertions.and_then(|a| a.body.as_ref());
    let mode = body
        .and_then(|b| b.mode.as_deref())
        .unwrap_or("json-subset");
    let mut ignore: Vec<&str> = noise.iter().map(String::as_str).collect();
    ignore.extend(
        body.iter()
            .flat_map(|b| b.ignore.iter().map(String::as_str)),
    );
    if let Some(recorded) = recorded {
        out.extend(compare_bodies(mode, &ignore, &recorded.body, &actual.body)?);
    }
    Ok(out)
}

fn check_status(
    spec: Option<&StatusSpec>,
    recorded: Option<u16>,
    actual: u16,
) -> Option<Difference> {
    let (holds, expected) = match (spec, recorded) {
        (Some(StatusSpec::One(code)), _) => (actual == *code, code.to_string()),
        (Some(StatusSpec::Any(codes)), _) => (codes.contains(&actual), format!("{codes:?}")),
        (Some(StatusSpec::Range { min, max }), _) => {
            let (min, max) = (min.unwrap_or(100), max.unwrap_or(599));
            ((min..=max).contains(&actual), format!("{min}..={max}"))
        }
        (None, Some(code)) => (actual == code, code.to_string()),
        (None, None) => ((200..300).contains(&actual), "2xx".to_owned()),
    };
    (!holds).then(|| difference("status", expected, actual))
}

/// Compares bodies in `mode` with the `ignore` paths taken out of both.
pub(super) fn compare_bodies(
    mode: &str,
    ignore: &[&str],
    recorded: &str,
    actual: &str,
) -> Result<Vec<Difference>, String> {
    let paths: Vec<Vec<Step>> = ignore
        .iter()
        .map(|p| parse_path(p))
        .collect::<Result<_, _>>()?;
    let as_json = |text: &str| serde_json::from_str::<Value>(text).ok();
    match mode {
        "ignore" => Ok(Vec::new()),
        "string" => Ok(string_difference(recorded, actual)),
        "exact" | "json-subset" => match (as_json(recorded), as_json(actual)) {
            (Some(mut expected), Some(mut got)) => {
                for path in &paths {
                    remove(&mut expected, path);
                    remove(&mut got, path);
                }
                let mut out = Vec::new();
                json_differences("$", &expected, &got, mode == "json-subset", &mut out);
                Ok(out)
            }
            // Not JSON on either side: compared as text.
            _ => Ok(string_difference(recorded, actual)),
        },
        other => Err(format!(
            "unknown body mode {other:?} (expected json-subset, exact, string or ignore)"
        )),
    }
}

fn string_difference(recorded: &str, actual: &str) -> Vec<Difference> {
    if recorded == actual {
        return Vec::new();
    }
    vec![difference("body", shown(recorded), shown(actual))]
}

/// Values in a difference are cut to 200 characters (docs/cli.md).
fn shown(text: &str) -> String {
    softprobe_pipeline::matcher::shortened(text, 200)
}

/// Differences between two JSON values; with `subset`, `actual` may hold more keys and
/// longer arrays than `expected`.
fn json_differences(
    path: &str,
    expected: &Value,
    actual: &Value,
    subset: bool,
    out: &mut Vec<Difference>,
) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let child = format!("{path}.{key}");
                match a.get(key) {
                    Some(got) => json_differences(&child, value, got, subset, out),
                    None => out.push(difference(&child, shown(&value.to_string()), "absent")),
                }
            }
            if !subset {
                for key in a.keys().filter(|k| !e.contains_key(*k)) {
                    out.push(difference(
                        &format!("{path}.{key}"),
                        "absent",
                        shown(&a[key].to_string()),
                    ));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for (index, value) in e.iter().enumerate() {
                let child = format!("{path}[{index}]");
                match a.get(index) {
                    Some(got) => json_differences(&child, value, got, subset, out),
                    None => out.push(difference(&child, shown(&value.to_string()), "absent")),
                }
            }
            if !subset && a.len() > e.len() {
                out.push(difference(&format!("{path}.length"), e.len(), a.len()));
            }
        }
        (e, a) if e == a => {}
        // Numbers compare by value (1 and 1.0 are equal).
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => {}
        (e, a) => out.push(difference(
            path,
            shown(&e.to_string()),
            shown(&a.to_string()),
        )),
    }
}

/// One step of an ignore path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    Any,
}

/// `$.a.b`, `$.items[*].updatedAt`, `$.list[0]`, `$["odd key"]`, `$.*.id`.
fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let invalid = |why: &str| format!("invalid JSONPath {path:?}: {why}");
    let mut rest = path
        .trim()
        .strip_prefix('$')
        .ok_or_else(|| invalid("it must start with $"))?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            if key.is_empty() {
                return Err(invalid("empty key"));
            }
            steps.push(if key == "*" {
                Step::Any
            } else {
                Step::Key(key.to_owned())
            });
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or_else(|| invalid("unclosed ["))?;
            let inner = after[..end].trim();
            steps.push(if inner == "*" {
                Step::Any
            } else if let Some(quoted) = inner
                .strip_prefix('"')
                .and_then(|i| i.strip_suffix('"'))
                .or_else(|| inner.strip_prefix('\'').and_then(|i| i.strip_suffix('\'')))
            {
                Step::Key(quoted.to_owned())
            } else {
                Step::Index(
                    inner
                        .parse()
                        .map_err(|_| invalid("an index must be a number, * or a quoted key"))?,
                )
            });
            rest = &after[end + 1..];
        } else {
            return Err(invalid("expected . or ["));
        }
    }
    if steps.is_empty() {
        return Err(invalid("it names the whole body; use mode: ignore"));
    }
    Ok(steps)
}

/// Checks that every path parses (for `suite validate`).
pub(super) fn check_path(path: &str) -> Result<(), String> {
    parse_path(path).map(|_| ())
}

/// Removes what `steps` names from `value`.
fn remove(value: &mut Value, steps: &[Step]) {
    let Some((step, rest)) = steps.split_first() else {
        return;
    };
    let last = rest.is_empty();
    match (step, value) {
        (Step::Key(key), Value::Object(map)) => {
            if last {
                map.remove(key);
            } else if let Some(child) = map.get_mut(key) {
                remove(child, rest);
            }
        }
        (Step::Index(index), Value::Array(items)) => {
            if last {
                if *index < items.len() {
                    items[*index] = Value::Null;
                }
            } else if let Some(child) = items.get_mut(*index) {
                remove(child, rest);
            }
        }
        (Step::Any, Value::Object(map)) => {
            if last {
                map.clear();
            } else {
                map.values_mut().for_each(|child| remove(child, rest));
            }
        }
        (Step::Any, Value::Array(items)) => {
            if last {
                items.iter_mut().for_each(|item| *item = Value::Null);
            } else {
                items.iter_mut().for_each(|child| remove(child, rest));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_ignore_noise_and_name_each_difference() {
        let recorded = r#"{"id":"o1","items":[{"sku":"a","updatedAt":1},{"sku":"b","updatedAt":2}],"total":10}"#;
        let same = r#"{"id":"o1","items":[{"sku":"a","updatedAt":9},{"sku":"b","updatedAt":8}],"total":10.0,"extra":true}"#;
        let ignore = ["$.items[*].updatedAt"];
        assert_eq!(
            compare_bodies("json-subset", &ignore, recorded, same).unwrap(),
            []
        );
        let exact = compare_bodies("exact", &ignore, recorded, same).unwrap();
        assert_eq!(exact, [difference("$.extra", "absent", "true")]);
        let changed = r#"{"id":"o1","items":[{"sku":"a","updatedAt":1},{"sku":"c"}],"total":11}"#;
        let got = compare_bodies("json-subset", &[], recorded, changed).unwrap();
        let shown: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "$.items[1].sku: expected \"b\", got \"c\"",
                "$.items[1].updatedAt: expected 2, got absent",
                "$.total: expected 10, got 11",
            ]
        );
        assert_eq!(compare_bodies("string", &[], "a", "a").unwrap(), []);
        assert_eq!(compare_bodies("ignore", &[], "a", "b").unwrap(), []);
        assert!(compare_bodies("fuzzy", &[], "a", "b").is_err());
    }

    #[test]
    fn paths_take_keys_indexes_and_wildcards() {
        assert_eq!(
            parse_path("$.a[0]['b c'].*[*]").unwrap(),
            [
                Step::Key("a".into()),
                Step::Index(0),
                Step::Key("b c".into()),
                Step::Any,
                Step::Any
            ]
        );
        for bad in ["a.b", "$", "$.", "$[x]", "$[0"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_follows_the_spec_then_the_recording_then_2xx() {
        assert!(check_status(None, Some(201), 201).is_none());
        assert!(check_status(None, Some(201), 200).is_some());
        assert!(check_status(None, None, 204).is_none());
        assert!(check_status(Some(&StatusSpec::Any(vec![200, 202])), Some(500), 202).is_none());
        let range = StatusSpec::Range {
            min: Some(400),
            max: Some(499),
        };
        assert!(check_status(Some(&range), None, 404).is_none());
        assert!(check_status(Some(&range), None, 500).is_some());
    }
}
