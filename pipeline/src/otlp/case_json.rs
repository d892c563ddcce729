//! OTLP JSON as case files carry it.

use opentelemetry_proto::tonic::trace::v1::TracesData;

/// A trace document as OTLP JSON the way case files carry it: camelCase, hex ids, and no
/// `null`s or empty defaults (`case-trace.schema.json` wants `status`, when present, to be an
/// object).
pub fn case_trace_json(traces: &TracesData) -> serde_json::Value {
    fn tidy(value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                map.retain(|key, field| match (key.as_str(), &*field) {
                    (_, Value::Null) => false,
                    ("schemaUrl" | "traceState", Value::String(s)) => !s.is_empty(),
                    ("events" | "links", Value::Array(items)) => !items.is_empty(),
                    (
                        "droppedAttributesCount"
                        | "droppedEventsCount"
                        | "droppedLinksCount"
                        | "flags",
                        v,
                    ) => v.as_u64() != Some(0),
                    _ => true,
                });
                map.values_mut().for_each(tidy);
            }
            Value::Array(items) => items.iter_mut().for_each(tidy),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(traces).unwrap_or_default();
    tidy(&mut value);
    value
}
