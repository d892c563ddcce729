//! Handler tests of the JSON control API, driven through the router without sockets.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use softprobe::auth::Token;
use softprobe::state::Settings;
use softprobe_pipeline::store::StoreLimits;
use support::{App, assert_error};

const CASE: &str = include_str!("../testdata/cases/orders-checkout.case.json");

#[tokio::test]
async fn health_and_meta_report_the_contract_versions() {
    let app = App::new().await;
    let (status, health) = app.call("GET", "/health", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["specVersion"], "http-control-api@v1");
    let (status, meta) = app.call("GET", "/v1/meta", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["specVersion"], "http-control-api@v1");
    assert_eq!(meta["schemaVersion"], "1");
    assert_eq!(meta["runtimeVersion"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_use_the_envelope() {
    let app = App::new().await;
    assert_error(
        &app.call("GET", "/v2/nothing", "").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.call("GET", "/v1/sessions/sess_x", "").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.call("POST", "/v1/meta", "").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_error(
        &app.call("DELETE", "/v1/sessions", "").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let id = app.session("replay").await;
    let wrong = app
        .call("GET", &format!("/v1/sessions/{id}/close"), "")
        .await;
    assert_error(&wrong, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let wrong = app
        .call("POST", "/v1/sessions/sess_unknown/stats", "")
        .await;
    assert_error(&wrong, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn create_validates_mode_and_starts_at_revision_zero() {
    let app = App::new().await;
    let (status, created) = app
        .call("POST", "/v1/sessions", r#"{"mode":"replay"}"#)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(created["sessionRevision"], 0);
    let id = created["sessionId"].as_str().unwrap();
    assert!(
        id.starts_with("sess_") && id.len() >= 5 + 22,
        "{id}: at least 128 random bits"
    );
    assert_eq!(created.as_object().unwrap().len(), 2);

    let cases = [
        ("", "invalid create session request: the body is empty"),
        (
            r#"{"mode":"#,
            "invalid create session request: mode: EOF while parsing",
        ),
        (
            "[]",
            "invalid create session request: expected a JSON object",
        ),
        ("{}", "invalid create session request: missing field `mode`"),
        (
            r#"{"mode":""}"#,
            "invalid create session request: mode: unknown variant ``",
        ),
        (
            r#"{"mode":"foo"}"#,
            "invalid create session request: mode: unknown variant `foo`",
        ),
        (
            r#"{"mode":"replay","extra":1}"#,
            "invalid create session request: extra: unknown field `extra`",
        ),
        (
            r#"{"mode":"replay","policy":{"externalHttp":"yes"}}"#,
            "invalid create session request: policy.externalHttp: unknown variant `yes`",
        ),
    ];
    for (body, expected) in cases {
        let message = assert_error(
            &app.call("POST", "/v1/sessions", body).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
        assert!(message.starts_with(expected), "{body:?}: {message}");
    }
}

#[tokio::test]
async fn create_applies_a_policy_without_a_revision_bump() {
    let app = App::new().await;
    let (_, created) = app
        .call(
            "POST",
            "/v1/sessions",
            r#"{"mode":"replay","policy":{"externalHttp":"strict"}}"#,
        )
        .await;
    let id = created["sessionId"].as_str().unwrap();
    assert_eq!(created["sessionRevision"], 0);
    let (_, state) = app
        .call("GET", &format!("/v1/sessions/{id}/state"), "")
        .await;
    assert_eq!(state["policy"], json!({"externalHttp":"strict"}));
    assert_eq!(state["sessionRevision"], 0);
}

#[tokio::test]
async fn list_shows_live_sessions() {
    let app = App::new().await;
    let (status, list) = app.call("GET", "/v1/sessions", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!({"sessions": []}));
    let replay = app.session("replay").await;
    let capture = app.session("capture").await;
    let (_, list) = app.call("GET", "/v1/sessions", "").await;
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    for (id, mode) in [(&replay, "replay"), (&capture, "capture")] {
        let entry = sessions
            .iter()
            .find(|s| s["sessionId"] == id.as_str())
            .unwrap();
        assert_eq!(entry["mode"], mode);
        assert_eq!(entry["sessionRevision"], 0);
    }
}

#[tokio::test]
async fn each_document_write_bumps_the_revision_by_one() {
    let app = App::new().await;
    let id = app.session("replay").await;
    let writes = [
        ("load-case", CASE.to_owned()),
        ("rules", r#"{"version":1,"rules":[]}"#.to_owned()),
        ("policy", r#"{"externalHttp":"strict"}"#.to_owned()),
        ("fixtures/auth", r#"{"tokens":["t1"]}"#.to_owned()),
        ("policy", r#"{"externalHttp":"allow"}"#.to_owned()),
    ];
    for (revision, (route, body)) in writes.iter().enumerate() {
        let (status, answer) = app
            .call("POST", &format!("/v1/sessions/{id}/{route}"), body)
            .await;
        assert_eq!(status, StatusCode::OK, "{route}: {answer}");
        assert_eq!(
            answer,
            json!({"sessionId": id, "sessionRevision": revision + 1})
        );
    }
}

#[tokio::test]
async fn state_echoes_documents_as_posted() {
    let app = App::new().await;
    let id = app.session("replay").await;
    let rules = r#"[{"id":"r","when":{"host":"stripe.com"},"then":{"action":"mock","response":{"status":201,"headers":null}}}]"#;
    let policy = r#"{"externalHttp":"strict","custom":{"kept":true}}"#;
    let fixtures = r#"{"cookies":[{"name":"sid","value":"1"}]}"#;
    for (route, body) in [
        ("load-case", CASE),
        ("rules", rules),
        ("policy", policy),
        ("fixtures/auth", fixtures),
    ] {
        assert_eq!(
            app.call("POST", &format!("/v1/sessions/{id}/{route}"), body)
                .await
                .0,
            StatusCode::OK
        );
    }
    let (status, state) = app
        .call("GET", &format!("/v1/sessions/{id}/state"), "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["sessionRevision"], 4);
    assert_eq!(state["mode"], "replay");
    assert_eq!(
        state["caseSummary"],
        json!({"caseId": "orders-checkout", "traceCount": 2})
    );
    assert_eq!(
        state["rules"],
        serde_json::from_str::<Value>(rules).unwrap()
    );
    assert_eq!(
        state["policy"],
        serde_json::from_str::<Value>(policy).unwrap()
    );
    assert_eq!(
        state["fixtures"],
        serde_json::from_str::<Value>(fixtures).unwrap()
    );
    assert_eq!(state["stats"]["injectedSpans"], 0);

    let fresh = app.session("capture").await;
    let (_, state) = app
        .call("GET", &format!("/v1/sessions/{fresh}/state"), "")
        .await;
    assert_eq!(state["caseSummary"], json!({"traceCount": 0}));
    assert!(state.get("rules").is_none() && state.get("policy").is_none());
}

#[tokio::test]
async fn invalid_documents_are_refused_with_the_place_and_change_nothing() {
    let app = App::new().await;
    let id = app.session("replay").await;
    let cases = [
        ("rules", "", "invalid control payload: the body is empty"),
        (
            "rules",
            r#"{"version":1,"rules":[{"when":{},"then":{"action":"mokc"}}]}"#,
            "invalid control payload: rules[0].then.action: unknown action \"mokc\"",
        ),
        (
            "rules",
            r#"[{"when":{},"then":{"action":"replay","matchOn":["path","verb"]}}]"#,
            "invalid control payload: [0].then: matchOn: unknown field \"verb\"",
        ),
        (
            "rules",
            r#"{"rules":[{"when":{"hostname":"x"},"then":{"action":"passthrough"}}]}"#,
            "invalid control payload: rules[0].when.hostname: unknown field `hostname`",
        ),
        (
            "policy",
            r#"{"externalHttp":"strictest"}"#,
            "invalid control payload: externalHttp: unknown variant",
        ),
        (
            "policy",
            "[1]",
            "invalid control payload: expected a JSON object",
        ),
        (
            "fixtures/auth",
            r#"{"token":"x"}"#,
            "invalid control payload: token: unknown field `token`",
        ),
        (
            "load-case",
            "",
            "invalid load-case request: the body is empty",
        ),
        (
            "load-case",
            r#"{"version":"1.0.0","traces":[]}"#,
            "invalid load-case request: missing field `caseId`",
        ),
        (
            "load-case",
            r#"{"version":"1.0.0","caseId":"c","traces":[],"rules":[{"when":{"method":1},"then":{"action":"passthrough"}}]}"#,
            "invalid load-case request: rules[0].when.method: invalid type: integer `1`",
        ),
    ];
    for (route, body, expected) in cases {
        let response = app
            .call("POST", &format!("/v1/sessions/{id}/{route}"), body)
            .await;
        let message = assert_error(&response, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(
            message.starts_with(expected),
            "{route} {body}:\n  {message}\n  want {expected}"
        );
    }
    let (_, stats) = app
        .call("GET", &format!("/v1/sessions/{id}/stats"), "")
        .await;
    assert_eq!(
        stats["sessionRevision"], 0,
        "refused documents must not bump the revision"
    );
}

#[tokio::test]
async fn unknown_sessions_are_404_before_the_body_is_looked_at() {
    let app = App::new().await;
    for (method, route) in [
        ("POST", "load-case"),
        ("POST", "rules"),
        ("POST", "policy"),
        ("POST", "fixtures/auth"),
        ("GET", "stats"),
        ("GET", "state"),
        ("POST", "close"),
    ] {
        let response = app
            .call(method, &format!("/v1/sessions/sess_missing/{route}"), "")
            .await;
        assert_eq!(
            assert_error(&response, StatusCode::NOT_FOUND, "unknown_session"),
            "unknown session"
        );
    }
}

#[tokio::test]
async fn stats_have_the_shape_clients_read() {
    let app = App::new().await;
    let id = app.session("generate").await;
    let (status, stats) = app
        .call("GET", &format!("/v1/sessions/{id}/stats"), "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["sessionId"], id.as_str());
    assert_eq!(stats["mode"], "generate");
    assert_eq!(stats["sessionRevision"], 0);
    for counter in [
        "injectedSpans",
        "extractedSpans",
        "strictMisses",
        "injectMisses",
        "droppedSpans",
    ] {
        assert_eq!(stats["stats"][counter], 0, "{counter}");
    }
}

#[tokio::test]
async fn close_accepts_empty_and_empty_object_bodies_then_forgets_the_session() {
    let app = App::new().await;
    for body in ["", "{}"] {
        let id = app.session("replay").await;
        let (status, closed) = app
            .call("POST", &format!("/v1/sessions/{id}/close"), body)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(closed, json!({"sessionId": id, "closed": true}));
        for (method, route, body) in [
            ("GET", "stats", ""),
            ("POST", "load-case", "{}"),
            ("POST", "close", ""),
        ] {
            let again = app
                .call(method, &format!("/v1/sessions/{id}/{route}"), body)
                .await;
            assert_error(&again, StatusCode::NOT_FOUND, "unknown_session");
        }
    }
    let (_, list) = app.call("GET", "/v1/sessions", "").await;
    assert_eq!(list["sessions"], json!([]));
}

#[tokio::test]
async fn closing_a_capture_session_writes_a_case() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::with(
        StoreLimits::default(),
        captures_in(&dir.path().join("default")),
    )
    .await;

    let id = app.session("capture").await;
    let (status, closed) = app
        .call("POST", &format!("/v1/sessions/{id}/close"), "")
        .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    let expected = dir.path().join("default").join(format!("{id}.case.json"));
    assert_eq!(closed["capturePath"], expected.display().to_string());
    let case: Value = serde_json::from_slice(&std::fs::read(&expected).unwrap()).unwrap();
    assert_eq!(case["version"], "1.0.0");
    assert_eq!(case["caseId"], id.as_str());
    assert_eq!(case["mode"], "capture");
    assert_eq!(case["traces"], json!([]));
    assert!(case["createdAt"].as_str().unwrap().ends_with('Z'));

    // `?out=` inside the capture directory, absolute or relative to it.
    let id = app.session("capture").await;
    let out = dir.path().join("default/chosen/{mode}-{sessionId}.json");
    let query = format!(
        "/v1/sessions/{id}/close?out={}",
        urlencode(&out.display().to_string())
    );
    let (_, closed) = app.call("POST", &query, "{}").await;
    let written = dir.path().join(format!("default/chosen/capture-{id}.json"));
    assert_eq!(closed["capturePath"], written.display().to_string());
    assert!(written.exists());
    let id = app.session("capture").await;
    let query = format!("/v1/sessions/{id}/close?out=relative/{{sessionId}}.json");
    let (_, closed) = app.call("POST", &query, "{}").await;
    let written = dir.path().join(format!("default/relative/{id}.json"));
    assert_eq!(closed["capturePath"], written.display().to_string());
}

fn captures_in(dir: &std::path::Path) -> Settings {
    Settings {
        case_paths: softprobe_pipeline::case_file::CasePaths {
            capture_dir: dir.to_owned(),
            template: None,
            out_anywhere: false,
        },
        ..Settings::default()
    }
}

#[tokio::test]
async fn a_client_out_never_leaves_the_capture_dir_nor_follows_links() {
    let root = tempfile::tempdir().unwrap();
    let captures = root.path().join("captures");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&captures).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, captures.join("link")).unwrap();
    std::fs::write(captures.join("theirs.json"), "not ours").unwrap();
    let app = App::with(StoreLimits::default(), captures_in(&captures)).await;
    let id = app.session("capture").await;
    let escape = outside.join("x.json").display().to_string();
    for (out, says) in [
        ("../outside/x.json", "outside the capture directory"),
        ("a/../../outside/x.json", "outside the capture directory"),
        (escape.as_str(), "outside the capture directory"),
        ("link/x.json", "is a symbolic link"),
        (
            "theirs.json",
            "already exists and was not written by this runtime",
        ),
    ] {
        let query = format!("/v1/sessions/{id}/close?out={}", urlencode(out));
        let response = app.call("POST", &query, "").await;
        let message = assert_error(&response, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(message.contains(says), "{out}: {message}");
        assert!(message.contains("the session stays open"), "{message}");
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_to_string(captures.join("theirs.json")).unwrap(),
        "not ours"
    );
    // Still open and closable where it may write.
    let (status, closed) = app
        .call(
            "POST",
            &format!("/v1/sessions/{id}/close?out=mine.json"),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    // A file this runtime wrote may be written again by a later session.
    let again = app.session("capture").await;
    let (status, closed) = app
        .call(
            "POST",
            &format!("/v1/sessions/{again}/close?out=mine.json"),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
}

#[tokio::test]
async fn a_download_serves_only_the_file_the_runtime_wrote() {
    let root = tempfile::tempdir().unwrap();
    let app = App::with(StoreLimits::default(), captures_in(root.path())).await;
    let id = app.session("capture").await;
    let (_, closed) = app
        .call("POST", &format!("/v1/sessions/{id}/close"), "")
        .await;
    let path = std::path::PathBuf::from(closed["capturePath"].as_str().unwrap());
    let (status, case) = app.call("GET", &format!("/v1/captures/{id}"), "").await;
    assert_eq!(status, StatusCode::OK, "{case}");
    assert_eq!(case["caseId"], id.as_str());
    // Swap the case for a link to another file: the download refuses it.
    let secret = root.path().join("secret");
    std::fs::write(&secret, r#"{"secret":true}"#).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&secret, &path).unwrap();
    let response = app.call("GET", &format!("/v1/captures/{id}"), "").await;
    let message = assert_error(&response, StatusCode::GONE, "capture_changed");
    assert!(message.contains("replaced or changed"), "{message}");
}

#[tokio::test]
async fn a_failed_capture_write_keeps_the_session_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), "not a directory").unwrap();
    let app = App::with(StoreLimits::default(), captures_in(dir.path())).await;
    let id = app.session("capture").await;
    let response = app
        .call(
            "POST",
            &format!("/v1/sessions/{id}/close?out=a-file/case.json"),
            "",
        )
        .await;
    let message = assert_error(
        &response,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    );
    assert!(
        message.starts_with("write captured case failed"),
        "{message}"
    );
    assert_eq!(
        app.call("GET", &format!("/v1/sessions/{id}/stats"), "")
            .await
            .0,
        StatusCode::OK
    );
    // Nothing but the blocker and nothing half-written is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(
        app.call("POST", &format!("/v1/sessions/{id}/close?out=ok.json"), "")
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bearer_auth_guards_v1_but_not_health_or_metrics() {
    let settings = Settings {
        api_token: Token::from_setting(Some("secret-token")),
        ..Settings::default()
    };
    let app = App::with(StoreLimits::default(), settings).await;
    let create = r#"{"mode":"capture"}"#;
    for header in [
        None,
        Some("bearer secret-token"),
        Some("Basic abc"),
        Some("Bearer "),
        Some("Bearer"),
    ] {
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", *h)).collect();
        let response = app
            .call_with("POST", "/v1/sessions", create, &headers)
            .await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "missing_bearer_token");
    }
    let wrong = app
        .call_with(
            "POST",
            "/v1/sessions",
            create,
            &[("authorization", "Bearer wrong-token")],
        )
        .await;
    assert_error(&wrong, StatusCode::FORBIDDEN, "invalid_bearer_token");
    let right = app
        .call_with(
            "POST",
            "/v1/sessions",
            create,
            &[("authorization", " Bearer  secret-token ")],
        )
        .await;
    assert_eq!(right.0, StatusCode::OK);
    // Auth comes before the method check, as in the reference runtime.
    assert_error(
        &app.call("DELETE", "/v1/sessions", "").await,
        StatusCode::UNAUTHORIZED,
        "missing_bearer_token",
    );
    assert_error(
        &app.call("GET", "/v1/meta", "").await,
        StatusCode::UNAUTHORIZED,
        "missing_bearer_token",
    );
    assert_eq!(app.call("GET", "/health", "").await.0, StatusCode::OK);
    let request = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(app.raw(request).await.0, StatusCode::OK);
    let missing = app
        .call_with(
            "GET",
            "/v1/sessions/missing/stats",
            "",
            &[("authorization", "Bearer secret-token")],
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "unknown_session");
    // The OTLP routes skip the router only when no token is configured; here they are guarded.
    for path in ["/v1/inject", "/v1/traces"] {
        assert_error(
            &app.call("POST", path, "{}").await,
            StatusCode::UNAUTHORIZED,
            "missing_bearer_token",
        );
    }
}

#[tokio::test]
async fn oversized_bodies_get_413_and_the_runtime_stays_healthy() {
    let settings = Settings {
        max_body_bytes: 1024,
        ..Settings::default()
    };
    let app = App::with(StoreLimits::default(), settings).await;
    let id = app.session("replay").await;
    let big = format!(
        r#"{{"version":"1.0.0","caseId":"{}","traces":[]}}"#,
        "x".repeat(2048)
    );
    let response = app
        .call("POST", &format!("/v1/sessions/{id}/load-case"), &big)
        .await;
    let message = assert_error(
        &response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert!(message.contains("--max-body-bytes"), "{message}");
    assert_eq!(
        app.call("GET", &format!("/v1/sessions/{id}/stats"), "")
            .await
            .0,
        StatusCode::OK
    );
    // The same limit holds for the OTLP routes, whether they skip the router (no token) or
    // pass through it (token).
    let guarded = App::with(
        StoreLimits::default(),
        Settings {
            max_body_bytes: 1024,
            api_token: Token::from_setting(Some("t")),
            ..Settings::default()
        },
    )
    .await;
    for app in [&app, &guarded] {
        for path in ["/v1/inject", "/v1/traces"] {
            let response = app
                .call_with(
                    "POST",
                    path,
                    &big,
                    &[
                        ("authorization", "Bearer t"),
                        ("content-type", "application/json"),
                    ],
                )
                .await;
            assert_error(
                &response,
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
            );
        }
    }
}

#[tokio::test]
async fn the_live_session_limit_is_a_clear_429() {
    let limits = StoreLimits {
        max_sessions: 2,
        ..StoreLimits::default()
    };
    let app = App::with(limits, Settings::default()).await;
    let first = app.session("replay").await;
    app.session("replay").await;
    let refused = app
        .call("POST", "/v1/sessions", r#"{"mode":"replay"}"#)
        .await;
    let message = assert_error(&refused, StatusCode::TOO_MANY_REQUESTS, "too_many_sessions");
    assert!(message.contains("limit 2"), "{message}");
    app.call("POST", &format!("/v1/sessions/{first}/close"), "")
        .await;
    app.session("replay").await;
}

#[tokio::test]
async fn metrics_count_sessions_and_control_requests() {
    let app = App::new().await;
    let id = app.session("replay").await;
    app.call("GET", &format!("/v1/sessions/{id}/stats"), "")
        .await;
    app.call("GET", "/v1/sessions/sess_missing/stats", "").await;
    let request = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, content_type, body) = app.raw(request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = String::from_utf8(body).unwrap();
    for line in [
        "softprobe_sessions_total{mode=\"replay\"} 1",
        "softprobe_live_sessions{mode=\"replay\"} 1",
        "softprobe_control_requests_total{route=\"/v1/sessions\",status=\"200\"} 1",
        "softprobe_control_requests_total{route=\"/v1/sessions/{sessionId}/stats\",status=\"200\"} 1",
        "softprobe_control_requests_total{route=\"/v1/sessions/{sessionId}/stats\",status=\"404\"} 1",
        "# TYPE softprobe_inject_latency_seconds histogram",
        "softprobe_extract_spans_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
