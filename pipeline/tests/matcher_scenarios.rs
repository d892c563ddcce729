//! Rule-matching scenarios kept as data in `testdata/matcher/*.json`, run through the whole
//! pipeline (receiver → enrichment → matcher). All failures are collected before panicking, and
//! `testdata/matcher/wrong/` holds a golden that must fail, so the comparator cannot pass
//! everything.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message as _;
use serde_json::{Value, json};
use softprobe_pipeline::inject::InjectOutcome;
use softprobe_pipeline::mode::Mode;
use softprobe_pipeline::otlp::Received;
use softprobe_pipeline::otlp::keys;
use softprobe_pipeline::rules::Body;
use softprobe_pipeline::stages::{PipelineConfig, Pipelines};
use softprobe_pipeline::store::{DocumentKind, SessionStore, StoreLimits};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn attribute(key: &str, value: &Value) -> Vec<KeyValue> {
    let any = |v: AnyValueKind| KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..KeyValue::default()
    };
    match value {
        Value::String(s) => vec![any(AnyValueKind::StringValue(s.clone()))],
        Value::Bool(b) => vec![any(AnyValueKind::BoolValue(*b))],
        Value::Number(n) => vec![any(AnyValueKind::IntValue(
            n.as_i64().expect("integer tags"),
        ))],
        // A list is one attribute per value: a header sent several times.
        Value::Array(items) => items.iter().flat_map(|item| attribute(key, item)).collect(),
        other => panic!("unsupported attribute value {other}"),
    }
}

fn inject_span(session_id: &str, attrs: &Value) -> TracesData {
    let mut attributes = attribute(keys::SPAN_TYPE, &json!("inject"));
    attributes.extend(attribute(keys::SESSION_ID, &json!(session_id)));
    for (key, value) in attrs.as_object().expect("span is an object of attributes") {
        attributes.extend(attribute(key, value));
    }
    TracesData {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    attributes,
                    ..Span::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// Runs one scenario file; returns a description of every mismatch.
fn run(path: &Path) -> Vec<String> {
    let file: Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON");
    let store = Arc::new(SessionStore::new(StoreLimits::default()));
    let session = store.create(Mode::Replay, None).expect("session");
    let id = session.id().to_owned();
    let write = |kind, value: &Value| {
        store
            .replace(&id, kind, Bytes::from(value.to_string()))
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    };
    // A whole case (its traces answer replay rules), or only case-embedded rules.
    if let Some(case) = file.get("case") {
        write(DocumentKind::Case, case);
    } else if let Some(case_rules) = file.get("caseRules") {
        write(
            DocumentKind::Case,
            &json!({"version": "1.0.0", "caseId": "scenario", "traces": [], "rules": case_rules}),
        );
    }
    write(
        DocumentKind::Rules,
        &json!({"version": 1, "rules": file["rules"]}),
    );
    if let Some(policy) = file.get("policy") {
        write(DocumentKind::Policy, policy);
    }
    let pipelines = Pipelines::new(store.clone(), PipelineConfig::default());
    let mut failures = Vec::new();
    for (n, scenario) in file["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .enumerate()
    {
        let traces = inject_span(&id, &scenario["span"]);
        let outcome = pipelines
            .inject(&Received::protobuf(traces.encode_to_vec().into()))
            .expect("scenario spans are valid");
        let mut actual = match outcome {
            InjectOutcome::Forward(reason) => json!({"decision": reason.as_str()}),
            InjectOutcome::Hit(hit) => json!({
                "decision": hit.decision,
                "rule": hit.rule,
                "status": hit.status,
                "body": match hit.body { Body::Text(t) => t, Body::Empty => String::new(), Body::Binary(_) => "<binary>".into() },
                "caseSpanId": hit.case_span_id,
            }),
        };
        // A miss's explanation: the closest candidate of the last recorded miss, as one line.
        let (misses, _) = session.misses.snapshot();
        actual["closest"] = json!(
            misses
                .last()
                .and_then(|m| m.closest.as_ref())
                .map(|c| c.summary())
        );
        let expect = scenario["expect"].as_object().expect("expect");
        for (field, want) in expect {
            if actual.get(field) != Some(want) {
                failures.push(format!(
                    "{} scenario {n}: {field} is {}, expected {want} (span {})",
                    path.display(),
                    actual.get(field).unwrap_or(&Value::Null),
                    scenario["span"]
                ));
            }
        }
    }
    failures
}

fn scenario_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("scenario directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn matcher_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/matcher")
}

#[test]
fn scenarios_decide_as_written() {
    let files = scenario_files(&matcher_dir());
    assert!(files.len() >= 4, "scenario files are missing");
    let mut failures = Vec::new();
    for file in &files {
        failures.extend(run(file));
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_wrong_golden_fails() {
    for file in scenario_files(&matcher_dir().join("wrong")) {
        let scenarios =
            serde_json::from_slice::<Value>(&std::fs::read(&file).unwrap()).unwrap()["scenarios"]
                .as_array()
                .unwrap()
                .len();
        let failures = run(&file);
        assert!(
            failures.len() >= scenarios,
            "the comparator accepted a wrong golden: {failures:?}"
        );
    }
}
