//! The exact call sequences of the official SDKs and CLI, replayed over a real socket, with
//! assertions on what those clients parse from each answer.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use support::Runtime;

const CASE: &str = include_str!("../testdata/cases/orders-checkout.case.json");

/// What every SDK requires of a 2xx: exactly 200 (the CLI), a JSON object body (Python, TS).
async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{text}");
    let value: Value = serde_json::from_str(&text).expect("clients parse every success as JSON");
    assert!(value.is_object(), "{text}");
    value
}

fn sdk_post(
    client: &Client,
    url: String,
    token: &str,
    body: impl Into<String>,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(body.into())
}

#[tokio::test]
async fn java_sdk_replay_sequence() {
    let runtime = Runtime::start(&["--api-token", "tok123"]).await;
    let client = Client::new();
    let health = ok_json(client.get(runtime.url("/health")).send().await.unwrap()).await;
    assert_eq!(health["status"], "ok");

    let created = ok_json(
        sdk_post(
            &client,
            runtime.url("/v1/sessions"),
            "tok123",
            r#"{"mode":"replay"}"#,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let id = created["sessionId"]
        .as_str()
        .expect("Java reads sessionId")
        .to_owned();
    let session = |route: &str| runtime.url(&format!("/v1/sessions/{id}/{route}"));

    let loaded = ok_json(
        sdk_post(&client, session("load-case"), "tok123", CASE)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(loaded["sessionRevision"], 1);
    let rules = r#"{"version":1,"rules":[{"name":"fragment-replay","priority":100,"when":{"direction":"outbound","method":"GET","path":"/fragment"},"then":{"action":"mock","response":{"status":200,"headers":{},"body":"{\"dep\":\"ok\"}\n"}}}]}"#;
    let applied = ok_json(
        sdk_post(&client, session("rules"), "tok123", rules)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(applied["sessionRevision"], 2);
    let closed = ok_json(
        sdk_post(&client, session("close"), "tok123", "{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(closed["closed"], true);

    // The SDKs classify errors by `error.code`.
    let gone = client
        .post(session("rules"))
        .header("authorization", "Bearer tok123")
        .body(rules)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let body: Value = gone.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_session");
    runtime.stop().await;
}

#[tokio::test]
async fn python_go_and_typescript_sdk_shapes() {
    let runtime = Runtime::start(&[]).await;
    let client = Client::new();
    let created = ok_json(
        sdk_post(
            &client,
            runtime.url("/v1/sessions"),
            "",
            r#"{"mode": "replay"}"#,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let session = |route: &str| runtime.url(&format!("/v1/sessions/{id}/{route}"));

    // Python re-serializes the case with `json.dumps` separators.
    let case: Value = serde_json::from_str(CASE).unwrap();
    let python_case = serde_json::to_string(&case)
        .unwrap()
        .replace("\",\"", "\", \"")
        .replace("\":", "\": ");
    ok_json(
        sdk_post(&client, session("load-case"), "", python_case)
            .send()
            .await
            .unwrap(),
    )
    .await;
    // Python/Go: `id`, hostSuffix sent as `host`, dict response without headers or body.
    let python_rules = r#"{"version": 1, "rules": [{"id": "pay", "priority": 5, "when": {"direction": "outbound", "host": "payments.example", "method": "POST"}, "then": {"action": "mock", "response": {"status": 201}}}]}"#;
    ok_json(
        sdk_post(&client, session("rules"), "", python_rules)
            .send()
            .await
            .unwrap(),
    )
    .await;
    // TypeScript forwards the response as given: a JSON object body, `headers: null`, consume.
    let ts_rules = r#"{"version":1,"rules":[{"name":"inv","consume":"once","when":{"service":"orders","pathPrefix":"/v2"},"then":{"action":"mock","response":{"status":200,"headers":null,"body":{"inStock":true}}}}]}"#;
    ok_json(
        sdk_post(&client, session("rules"), "", ts_rules)
            .send()
            .await
            .unwrap(),
    )
    .await;
    ok_json(
        sdk_post(
            &client,
            session("policy"),
            "",
            r#"{"externalHttp":"strict"}"#,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let fixtures = ok_json(
        sdk_post(
            &client,
            session("fixtures/auth"),
            "",
            r#"{"tokens":["t1"],"metadata":{"tier":"gold"}}"#,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(fixtures["sessionRevision"], 5);
    let cleared = ok_json(
        sdk_post(&client, session("rules"), "", r#"{"version":1,"rules":[]}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(cleared, json!({"sessionId": id, "sessionRevision": 6}));
    ok_json(
        sdk_post(&client, session("close"), "", "{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    runtime.stop().await;
}

#[tokio::test]
async fn cli_session_sequence() {
    let dir = tempfile::tempdir().unwrap();
    // The official CLI sends `?out=` as the user typed it; the runtime writes it only inside
    // its capture directory.
    let runtime = Runtime::start(&["--capture-dir", dir.path().to_str().unwrap()]).await;
    let client = Client::new();
    let json_post = |url: String, body: &str| {
        client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned())
    };

    // session start --mode capture --policy strict.yaml --case orders.case.json
    let created = ok_json(
        json_post(runtime.url("/v1/sessions"), r#"{"mode":"capture"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(created["sessionRevision"], 0);
    let session = |route: &str| runtime.url(&format!("/v1/sessions/{id}/{route}"));
    let policy = ok_json(
        json_post(
            session("policy"),
            r#"{"externalHttp":"strict","defaultOnMiss":"error"}"#,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(policy["sessionRevision"], 1);
    let loaded = ok_json(json_post(session("load-case"), CASE).send().await.unwrap()).await;
    assert_eq!(loaded["sessionRevision"], 2);
    // session rules apply rules.yaml: a bare list, with hostSuffix as its own key.
    let rules = r#"[{"name":"block","priority":1000,"when":{"direction":"outbound","notHostSuffix":[".internal","localhost"]},"then":{"action":"error","error":{"status":599,"body":{"error":"blocked"}}}},{"name":"stripe","when":{"hostSuffix":"stripe.com"},"then":{"action":"passthrough"}}]"#;
    ok_json(json_post(session("rules"), rules).send().await.unwrap()).await;
    // session stats / inspect session.
    let stats = ok_json(client.get(session("stats")).send().await.unwrap()).await;
    for field in ["injectedSpans", "extractedSpans", "strictMisses"] {
        assert!(stats["stats"][field].is_u64(), "{field}");
    }
    assert_eq!(stats["mode"], "capture");
    let state = ok_json(client.get(session("state")).send().await.unwrap()).await;
    assert_eq!(state["caseSummary"]["caseId"], "orders-checkout");
    assert_eq!(state["rules"][1]["name"], "stripe");
    // session close --out PATH: no body, no content type.
    let out = dir.path().join("run.case.json");
    let closed = ok_json(
        client
            .post(session("close"))
            .query(&[("out", out.to_str().unwrap())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(closed["capturePath"], out.to_str().unwrap());
    let case: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(case["caseId"], id.as_str());
    // session stats after close → the CLI's exit 4 comes from this 404.
    let after = client.get(session("stats")).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        after.json::<Value>().await.unwrap()["error"]["code"],
        "unknown_session"
    );
    runtime.stop().await;
}

#[tokio::test]
async fn parallel_writes_to_one_session_get_distinct_gap_free_revisions() {
    let runtime = Runtime::start(&[]).await;
    let client = Client::new();
    let id = runtime.session("replay").await;
    let writes = (0..64).map(|i| {
        let (client, url) = (
            client.clone(),
            runtime.url(&format!("/v1/sessions/{id}/rules")),
        );
        tokio::spawn(async move {
            let body = format!(
                r#"{{"rules":[{{"name":"r{i}","when":{{}},"then":{{"action":"passthrough"}}}}]}}"#
            );
            let answer: Value = client
                .post(url)
                .body(body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["sessionRevision"].as_u64().expect("revision")
        })
    });
    let mut revisions = Vec::new();
    for write in writes.collect::<Vec<_>>() {
        revisions.push(write.await.unwrap());
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=64).collect::<Vec<u64>>());
    runtime.stop().await;
}

#[tokio::test]
async fn shutdown_flushes_open_capture_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let capture_dir = dir.path().to_str().unwrap().to_owned();
    // In memory: with Redis, sessions belong to every replica and stay open.
    let runtime = Runtime::start(&["--store", "memory", "--capture-dir", &capture_dir]).await;
    let id = runtime.session("capture").await;
    runtime.stop().await;
    assert!(
        dir.path().join(format!("{id}.case.json")).exists(),
        "the open capture was not flushed"
    );
}

#[tokio::test]
async fn idle_capture_sessions_are_flushed_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let capture_dir = dir.path().to_str().unwrap().to_owned();
    let runtime = Runtime::start(&[
        "--capture-dir",
        &capture_dir,
        "--session-idle-timeout",
        "200ms",
    ])
    .await;
    let client = Client::new();
    let id = runtime.session("capture").await;
    let written = dir.path().join(format!("{id}.case.json"));
    // Bounded wait: the sweeper runs every 100 ms here.
    for _ in 0..100 {
        if written.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(written.exists(), "expired capture session was not written");
    let stats = client
        .get(runtime.url(&format!("/v1/sessions/{id}/stats")))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), StatusCode::NOT_FOUND);
    runtime.stop().await;
}
