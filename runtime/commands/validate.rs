//! `softprobe validate case|rules FILE`: the runtime's own parsers, messages that point at
//! the place (JSON pointer, and line and column in the file as written, YAML included) and say
//! what is wrong; exit 5 when invalid.

use super::{CliError, Document, Report, raw_child, read_document, read_file};
use crate::cli::{ValidateArgs, ValidateKind};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::json;
use serde_json::value::RawValue;
use softprobe_pipeline::case::Case;
use softprobe_pipeline::document::DocumentError;
use softprobe_pipeline::otlp::{Encoding, decode_traces};
use softprobe_pipeline::rules::parse_rules_document;
use std::cell::Cell;
use std::fmt;

pub(super) fn run(args: ValidateArgs) -> Result<Report, CliError> {
    let file = args.file.display().to_string();
    match args.kind {
        ValidateKind::Case => {
            let bytes = read_file(&args.file)?;
            let document = Document {
                source: String::from_utf8_lossy(&bytes).into_owned(),
                yaml: false,
                json: bytes,
            };
            let case =
                Case::parse(&document.json).map_err(|err| invalid(&file, &document, err, true))?;
            for (index, trace) in case.traces.iter().enumerate() {
                let text = serde_json::to_vec(trace).unwrap_or_default();
                decode_traces(&text, Some(Encoding::Json)).map_err(|err| {
                    // The decoder read a copy of the trace: its positions are not the file's.
                    let err = DocumentError::new(format!("traces[{index}]"), err.to_string());
                    invalid(&file, &document, err, false)
                })?;
            }
            Ok(Report::fields(json!({"file": file, "kind": "case", "valid": true, "caseId": case.case_id, "traceCount": case.traces.len(), "ruleCount": case.rules.len()}))
                .line(format!("{file}: valid case {} ({} traces, {} rules)", case.case_id, case.traces.len(), case.rules.len())))
        }
        ValidateKind::Rules => {
            let document = read_document(&args.file)?;
            let rules = parse_rules_document(&document.json)
                .map_err(|err| invalid(&file, &document, err, !document.yaml))?;
            Ok(Report::fields(
                json!({"file": file, "kind": "rules", "valid": true, "ruleCount": rules.len()}),
            )
            .line(format!("{file}: valid rules ({} rules)", rules.len())))
        }
    }
}

/// The error as the user's file sees it: the place `err.path` names in the file as written,
/// else the parser's own position when it read that very text (`parsed_source`).
fn invalid(file: &str, document: &Document, err: DocumentError, parsed_source: bool) -> CliError {
    let (message, position) = split_position(&err.message);
    let place = locate(document, &err.path).or(position.filter(|_| parsed_source));
    let at = place
        .map(|(line, column)| format!(" at line {line} column {column}"))
        .unwrap_or_default();
    CliError::invalid(
        format!("{file}: {}: {message}{at}", json_pointer(&err.path)),
        "fix the value at that place; the runtime would refuse this document with the same message",
    )
}

/// Splits serde_json's trailing ` at line L column C` off a message.
fn split_position(message: &str) -> (&str, Option<(usize, usize)>) {
    const AT: &str = " at line ";
    let Some(index) = message.rfind(AT) else {
        return (message, None);
    };
    let position = message[index + AT.len()..]
        .split_once(" column ")
        .and_then(|(line, column)| Some((line.parse().ok()?, column.parse().ok()?)));
    match position {
        Some(position) => (&message[..index], Some(position)),
        None => (message, None),
    }
}

/// Line and column (from 1) where the value at `path` (`rules[0].then`) starts in the file as
/// written; `None` for the whole document or a path the file does not have.
fn locate(document: &Document, path: &str) -> Option<(usize, usize)> {
    let steps: Vec<String> = json_pointer(path)
        .split('/')
        .skip(1)
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    if steps.is_empty() {
        return None;
    }
    if !document.yaml {
        let root: &RawValue = serde_json::from_str(&document.source).ok()?;
        let value = steps
            .iter()
            .try_fold(root, |current, step| raw_child(current, step))?;
        let before =
            &document.source[..value.get().as_ptr().addr() - document.source.as_ptr().addr()];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        return Some((
            before.matches('\n').count() + 1,
            before[line_start..].chars().count() + 1,
        ));
    }
    // YAML keeps no positions in its values: read the file again with a visitor that descends
    // along the path and fails on arrival; serde_norway stamps that failure with the start of
    // the YAML node it was reading.
    let found = Cell::new(false);
    let seed = Find {
        steps: &steps,
        found: &found,
    };
    let err = seed
        .deserialize(serde_norway::Deserializer::from_str(&document.source))
        .err()?;
    let location = err.location().filter(|_| found.get())?;
    Some((location.line(), location.column()))
}

/// Descends along `steps`; arriving, sets `found` and fails so the parser names the place.
struct Find<'a> {
    steps: &'a [String],
    found: &'a Cell<bool>,
}

impl Find<'_> {
    fn arrive<E: de::Error>(self) -> Result<(), E> {
        self.found.set(true);
        Err(E::custom("found"))
    }

    fn scalar<E: de::Error>(self) -> Result<(), E> {
        if self.steps.is_empty() {
            self.arrive()
        } else {
            Ok(())
        }
    }
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((step, rest)) = self.steps.split_first() else {
            return self.arrive();
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == *step {
                return map.next_value_seed(Find {
                    steps: rest,
                    found: self.found,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((step, rest)) = self.steps.split_first() else {
            return self.arrive();
        };
        let Ok(index) = step.parse::<usize>() else {
            return Ok(());
        };
        for _ in 0..index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Find {
            steps: rest,
            found: self.found,
        })
        .map(|_| ())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

/// `rules[0].then.action` → `/rules/0/then/action` (RFC 6901); the document itself is `/`.
pub(crate) fn json_pointer(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut pointer = String::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            let (key, indices) = rest.split_at(open);
            if !key.is_empty() {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            rest = indices;
            for index in rest.split('[').filter(|s| !s.is_empty()) {
                pointer.push('/');
                pointer.push_str(index.trim_end_matches(']'));
            }
        } else {
            pointer.push('/');
            pointer.push_str(&rest.replace('~', "~0").replace('/', "~1"));
        }
    }
    pointer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(source: &str, yaml: bool, path: &str) -> Option<(usize, usize)> {
        let document = Document {
            source: source.to_owned(),
            yaml,
            json: Vec::new(),
        };
        locate(&document, path)
    }

    #[test]
    fn paths_are_found_in_the_file_as_written() {
        let yaml = "rules:\n  - name: a\n    when: {direction: inbound}\n  - name: b\n    when:\n      direction: sideways\n";
        assert_eq!(
            at(yaml, true, "rules[1].when.direction").map(|p| p.0),
            Some(6)
        );
        assert_eq!(at(yaml, true, "rules[0].when").map(|p| p.0), Some(3));
        assert_eq!(at(yaml, true, "rules[7]"), None);
        let json =
            "{\n  \"rules\": [\n    {},\n    {\"then\":\n      {\"action\": \"mokc\"}}\n  ]\n}";
        assert_eq!(
            at(json, false, "rules[1].then.action").map(|p| p.0),
            Some(5)
        );
        assert_eq!(
            split_position("unknown action \"x\" at line 4 column 9"),
            ("unknown action \"x\"", Some((4, 9)))
        );
    }

    #[test]
    fn paths_become_json_pointers() {
        assert_eq!(json_pointer("rules[0].then.action"), "/rules/0/then/action");
        assert_eq!(json_pointer("[2].when"), "/2/when");
        assert_eq!(json_pointer("traces[1][0]"), "/traces/1/0");
        assert_eq!(json_pointer(""), "/");
    }
}
