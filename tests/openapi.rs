//! Keeps `/openapi.json` true: it documents exactly the routes the router serves, and every
//! documented route is really routed.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use softprobe::api::{OPENAPI_JSON, ROUTES};
use std::collections::BTreeSet;
use support::App;

fn documented() -> BTreeSet<(String, String)> {
    let document: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
    assert!(
        document["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.")
    );
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[test]
fn the_document_lists_exactly_the_served_routes() {
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented = documented();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && phantom.is_empty(),
        "served but undocumented: {undocumented:?}\ndocumented but not served: {phantom:?}"
    );
}

#[tokio::test]
async fn every_documented_route_is_routed() {
    let app = App::new().await;
    for (method, path) in documented() {
        let uri = path.replace("{sessionId}", "sess_doc_check");
        let request = Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = app.raw(request).await;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && code != "not_found",
            "{method} {path} is documented but not routed ({status} {body})"
        );
    }
}
