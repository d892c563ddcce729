//! Every `softprobe` command as a real process against a real runtime over loopback,
//! including its exit codes.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Output;
use support::Runtime;

const CASE: &str = include_str!("../testdata/cases/orders-checkout.case.json");

/// Runs `softprobe args…` against `runtime` (or `url`) and returns its output.
async fn softprobe(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_softprobe"));
    command
        .args(args)
        .env("SOFTPROBE_RUNTIME_URL", url)
        .env_remove("SOFTPROBE_API_TOKEN")
        .env_remove("SOFTPROBE_SESSION_ID");
    for (key, value) in env {
        command.env(key, value);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn envelope(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("not one JSON envelope ({err}): {}", stdout(output)))
}

#[tokio::test]
async fn session_lifecycle_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(&["--capture-dir", dir.path().to_str().unwrap()]).await;
    let url = runtime.url("");
    let case = dir.path().join("orders.case.json");
    std::fs::write(&case, CASE).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "externalHttp: strict\nexternalAllowlist: [localhost]\n",
    )
    .unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "- name: stripe\n  when: {hostSuffix: stripe.com}\n  then: {action: passthrough}\n",
    )
    .unwrap();

    let shell = softprobe(&url, &["session", "start", "--shell"], &[]).await;
    assert_eq!(code(&shell), 0);
    let line = stdout(&shell);
    assert!(
        line.starts_with("export SOFTPROBE_SESSION_ID=sess_") && line.lines().count() == 1,
        "{line}"
    );

    let started = softprobe(
        &url,
        &[
            "session",
            "start",
            "--mode",
            "capture",
            "--policy",
            policy.to_str().unwrap(),
            "--case",
            case.to_str().unwrap(),
            "--json",
        ],
        &[],
    )
    .await;
    let started = envelope(&started);
    assert_eq!(started["status"], "ok");
    assert_eq!(started["specVersion"], "http-control-api@v1");
    assert_eq!(started["sessionRevision"], 2);
    let id = started["sessionId"].as_str().unwrap().to_owned();
    let with_id = [("SOFTPROBE_SESSION_ID", id.as_str())];

    // Flags and positionals in any order; --session defaults to SOFTPROBE_SESSION_ID.
    let applied = envelope(
        &softprobe(
            &url,
            &[
                "--json",
                "session",
                "rules",
                "apply",
                "--file",
                rules.to_str().unwrap(),
            ],
            &with_id,
        )
        .await,
    );
    assert_eq!(
        (
            applied["ruleCount"].as_u64(),
            applied["sessionRevision"].as_u64()
        ),
        (Some(1), Some(3))
    );
    let loaded = envelope(
        &softprobe(
            &url,
            &[
                "session",
                "load-case",
                "--file",
                case.to_str().unwrap(),
                "--json",
            ],
            &with_id,
        )
        .await,
    );
    assert_eq!(loaded["caseId"], "orders-checkout");
    let fixtures = dir.path().join("fixtures.json");
    std::fs::write(&fixtures, r#"{"tokens":["t"]}"#).unwrap();
    assert_eq!(
        code(
            &softprobe(
                &url,
                &[
                    "session",
                    "fixtures",
                    "set",
                    "--file",
                    fixtures.to_str().unwrap()
                ],
                &with_id
            )
            .await
        ),
        0
    );
    assert_eq!(
        code(&softprobe(&url, &["session", "policy", "set", "--strict"], &with_id).await),
        0
    );
    let both = softprobe(
        &url,
        &[
            "session",
            "policy",
            "set",
            "--strict",
            "--file",
            policy.to_str().unwrap(),
        ],
        &with_id,
    )
    .await;
    assert_eq!(
        code(&both),
        2,
        "--strict and --file together are a usage error"
    );

    let stats = envelope(&softprobe(&url, &["session", "stats", "--json"], &with_id).await);
    assert_eq!(stats["stats"]["strictMisses"], 0);
    let inspected = softprobe(&url, &["inspect", "session"], &with_id).await;
    assert!(
        stdout(&inspected).contains("case: orders-checkout (2 traces)"),
        "{}",
        stdout(&inspected)
    );
    // Nothing went through the session yet: no miss, nothing to blame, exit 0.
    let replay = softprobe(&url, &["replay", "run", "--json"], &with_id).await;
    assert_eq!(code(&replay), 0);
    let replay = envelope(&replay);
    assert_eq!(replay["caseLoaded"], true);
    assert_eq!(replay["errorType"], Value::Null);

    let bad = dir.path().join("bad-rules.json");
    std::fs::write(&bad, r#"[{"when":{},"then":{"action":"mokc"}}]"#).unwrap();
    let refused = softprobe(
        &url,
        &["session", "rules", "apply", "--file", bad.to_str().unwrap()],
        &with_id,
    )
    .await;
    assert_eq!(code(&refused), 5);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown action \"mokc\""));

    let out = dir.path().join("captured.case.json");
    let closed = envelope(
        &softprobe(
            &url,
            &["session", "close", "--out", out.to_str().unwrap(), "--json"],
            &with_id,
        )
        .await,
    );
    assert_eq!(closed["capturePath"], out.to_str().unwrap());
    assert!(out.exists());
    let after = softprobe(&url, &["session", "stats"], &with_id).await;
    assert_eq!(code(&after), 4, "unknown session");
    let failed = envelope(&softprobe(&url, &["session", "stats", "--json"], &with_id).await);
    assert_eq!(
        (
            failed["status"].as_str(),
            failed["exitCode"].as_u64(),
            failed["error"]["code"].as_str()
        ),
        (Some("fail"), Some(4), Some("unknown_session"))
    );
    runtime.stop().await;

    let unreachable = softprobe(&url, &["session", "start"], &[]).await;
    assert_eq!(code(&unreachable), 3);
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).contains("softprobe serve"),
        "the error says what to do"
    );
    let usage = softprobe(&url, &["session", "stats"], &[]).await;
    assert_eq!(code(&usage), 2, "no --session and no SOFTPROBE_SESSION_ID");
}

#[tokio::test]
async fn doctor_checks_and_fails_with_10() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(&["--api-token", "s3cret"]).await;
    let url = runtime.url("");
    let ok = softprobe(
        &url,
        &["doctor", "--json"],
        &[("SOFTPROBE_API_TOKEN", "s3cret")],
    )
    .await;
    let report = envelope(&ok);
    assert_eq!(code(&ok), 0, "{report}");
    let checks = report["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "api-version" && c["status"] == "ok")
    );
    let no_token = softprobe(&url, &["doctor"], &[]).await;
    assert_eq!(code(&no_token), 10);
    assert!(
        stdout(&no_token).contains("✗ auth"),
        "{}",
        stdout(&no_token)
    );
    let not_wasm = dir.path().join("filter.wasm");
    std::fs::write(&not_wasm, b"not wasm").unwrap();
    let bad_wasm = softprobe(
        &url,
        &["doctor", "--wasm", not_wasm.to_str().unwrap()],
        &[("SOFTPROBE_API_TOKEN", "s3cret")],
    )
    .await;
    assert_eq!(code(&bad_wasm), 10);
    assert!(
        stdout(&bad_wasm).contains("not a valid WebAssembly module"),
        "{}",
        stdout(&bad_wasm)
    );
    runtime.stop().await;
    assert_eq!(code(&softprobe(&url, &["doctor"], &[]).await), 10);
}

#[tokio::test]
async fn validate_and_inspect_read_files_locally() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.case.json");
    std::fs::write(&good, CASE).unwrap();
    let valid = softprobe(
        "http://127.0.0.1:9",
        &["validate", "case", good.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(code(&valid), 0);
    let broken = dir.path().join("broken.case.json");
    std::fs::write(
        &broken,
        CASE.replacen("\"action\": \"mock\"", "\"action\": \"mokc\"", 1),
    )
    .unwrap();
    let invalid = envelope(
        &softprobe(
            "http://127.0.0.1:9",
            &["validate", "case", "--json", broken.to_str().unwrap()],
            &[],
        )
        .await,
    );
    assert_eq!(invalid["exitCode"], 5);
    let message = invalid["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("/rules/0/then/action: unknown action \"mokc\""),
        "{message}"
    );
    assert!(message.contains("line "), "{message}");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - when: {direction: sideways}\n    then: {action: passthrough}\n",
    )
    .unwrap();
    let invalid = softprobe(
        "http://127.0.0.1:9",
        &["validate", "rules", rules.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(code(&invalid), 5);
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("/rules/0/when/direction"));

    let summary = envelope(
        &softprobe(
            "http://127.0.0.1:9",
            &["inspect", "case", good.to_str().unwrap(), "--json"],
            &[],
        )
        .await,
    );
    assert_eq!(summary["spanCount"], 2);
    assert_eq!(summary["counts"]["direction"]["inbound"], 1);
    assert_eq!(
        summary["counts"]["status"]["201"], 1,
        "int statuses are read"
    );
    assert_eq!(
        summary["spanSummary"][0]["method"], "POST",
        ":method is the fallback"
    );
    let not_json = dir.path().join("x.json");
    std::fs::write(&not_json, "{").unwrap();
    assert_eq!(
        code(
            &softprobe(
                "http://127.0.0.1:9",
                &["inspect", "case", not_json.to_str().unwrap()],
                &[]
            )
            .await
        ),
        5
    );
}

async fn capture_session(url: &str) -> String {
    let started = envelope(
        &softprobe(
            url,
            &["session", "start", "--mode", "capture", "--json"],
            &[],
        )
        .await,
    );
    started["sessionId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn export_round_trips_span_for_span_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(&["--capture-dir", dir.path().to_str().unwrap()]).await;
    let url = runtime.url("");
    for (protocol, endpoint) in [
        ("grpc", format!("http://{}", runtime.grpc_addr)),
        ("http/protobuf", url.clone()),
        ("http/json", runtime.url("/v1/traces")),
    ] {
        let id = capture_session(&url).await;
        let case = dir
            .path()
            .join(format!("{}.case.json", protocol.replace('/', "-")));
        std::fs::write(&case, CASE.replace("sess_golden", &id)).unwrap();
        let pattern = dir
            .path()
            .join(format!("{}.case.*", protocol.replace('/', "-")));
        let exported = softprobe(
            &url,
            &[
                "export",
                "otlp",
                "--case",
                pattern.to_str().unwrap(),
                "--endpoint",
                &endpoint,
                "--protocol",
                protocol,
                "--header",
                "x-tenant=t1",
                "--json",
            ],
            &[],
        )
        .await;
        let report = envelope(&exported);
        assert_eq!(code(&exported), 0, "{report}");
        assert_eq!(
            (report["sent"].as_u64(), report["failed"].as_u64()),
            (Some(2), Some(0)),
            "{protocol}"
        );
        let stats = envelope(
            &softprobe(
                &url,
                &["session", "stats", "--json"],
                &[("SOFTPROBE_SESSION_ID", &id)],
            )
            .await,
        );
        assert_eq!(
            stats["stats"]["extractedSpans"], 2,
            "{protocol}: every span arrived"
        );
    }
    let missing = softprobe(
        &url,
        &[
            "export",
            "otlp",
            "--case",
            "/nonexistent/*.json",
            "--endpoint",
            &url,
        ],
        &[],
    )
    .await;
    assert_eq!(code(&missing), 1);
    runtime.stop().await;
    let down = softprobe(
        &url,
        &[
            "export",
            "otlp",
            "--case",
            dir.path().join("grpc.case.json").to_str().unwrap(),
            "--endpoint",
            &url,
            "--protocol",
            "http/protobuf",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(
        envelope(&down)["failed"],
        2,
        "refused spans are counted, not hidden"
    );
}

#[tokio::test]
async fn capture_run_drives_a_command_and_writes_the_case() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(&["--capture-dir", dir.path().to_str().unwrap()]).await;
    let url = runtime.url("");
    let seen = dir.path().join("seen");
    let out = dir.path().join("run.case.json");
    let driver = format!(
        "echo \"$SOFTPROBE_SESSION_ID $SOFTPROBE_RUNTIME_URL\" > {}",
        seen.display()
    );
    let run = envelope(
        &softprobe(
            &url,
            &[
                "capture",
                "run",
                "--driver",
                &driver,
                "--out",
                out.to_str().unwrap(),
                "--json",
            ],
            &[],
        )
        .await,
    );
    assert_eq!(run["exitCode"], 0);
    let id = run["sessionId"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap().trim(),
        format!("{id} {url}")
    );
    assert_eq!(run["capturePath"], out.to_str().unwrap());
    assert!(Path::new(&out).exists());
    let failing = softprobe(&url, &["capture", "run", "--driver", "exit 7"], &[]).await;
    assert_eq!(code(&failing), 7, "the driver's exit code");
    let slow = softprobe(
        &url,
        &[
            "capture",
            "run",
            "--driver",
            "exec sleep 30",
            "--timeout",
            "300ms",
        ],
        &[],
    )
    .await;
    assert_eq!(code(&slow), 1);
    assert!(String::from_utf8_lossy(&slow.stderr).contains("timed out"));
    runtime.stop().await;
}

#[tokio::test]
async fn scrub_redacts_in_place_and_hashes_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let mut case: Value = serde_json::from_str(CASE).unwrap();
    let attributes =
        case["traces"][0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
            .as_array_mut()
            .unwrap();
    attributes.push(serde_json::json!({"key": "http.request.header.authorization", "value": {"stringValue": "Bearer abc"}}));
    let case = case.to_string();
    assert!(case.contains("Bearer abc"));
    let (a, b) = (
        dir.path().join("a.case.json"),
        dir.path().join("b.case.json"),
    );
    std::fs::write(&a, &case).unwrap();
    std::fs::write(&b, &case).unwrap();
    let scrubbed = envelope(
        &softprobe(
            "http://127.0.0.1:9",
            &[
                "scrub",
                "--hash",
                "--json-path",
                "$.currency",
                a.to_str().unwrap(),
                b.to_str().unwrap(),
                "--json",
            ],
            &[],
        )
        .await,
    );
    assert_eq!(
        scrubbed["redacted"], 4,
        "per file: one authorization header, one JSON body"
    );
    let (a, b) = (
        std::fs::read_to_string(&a).unwrap(),
        std::fs::read_to_string(&b).unwrap(),
    );
    assert!(!a.contains("Bearer abc") && !a.contains("usd"));
    assert!(a.contains("sha256:"));
    assert_eq!(a, b, "the same input scrubs to the same output");
    let completion = softprobe("http://127.0.0.1:9", &["completion", "bash"], &[]).await;
    assert!(stdout(&completion).contains("softprobe"));
}

#[tokio::test]
async fn close_out_on_a_session_without_a_capture_closes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(&[]).await;
    let url = runtime.url("");
    let id = runtime.session("replay").await;
    let out = dir.path().join("case.json");
    let refused = softprobe(
        &url,
        &["session", "close", "--out", out.to_str().unwrap()],
        &[("SOFTPROBE_SESSION_ID", id.as_str())],
    )
    .await;
    assert_eq!(code(&refused), 2);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("replay session"), "{stderr}");
    assert!(!out.exists());
    // Still open.
    let stats = runtime.get_json(&format!("/v1/sessions/{id}/stats")).await;
    assert_eq!(stats["sessionId"], id.as_str());
    runtime.stop().await;
}

#[tokio::test]
async fn capture_out_anywhere_reads_boolish_environment_values() {
    for (value, accepted) in [("1", true), ("true", true), ("0", true), ("maybe", false)] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_softprobe"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:1",
                "--grpc-listen",
                "127.0.0.1:1",
            ])
            .env("SOFTPROBE_CAPTURE_OUT_ANYWHERE", value)
            .output()
            .unwrap();
        // Accepted values get as far as binding (port 1 is refused); others are usage errors.
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.contains("cannot listen"),
            accepted,
            "{value}: {stderr}"
        );
    }
}
