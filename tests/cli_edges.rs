//! The CLI's rough edges, found by trying it: `export otlp` over TLS and its exit codes and
//! refusal reasons, `scrub` that leaves files as they were, `--verbose`, output into a closed
//! pipe, a lone rule where a document belongs, and validation errors that name the line of
//! the file as written. Every test runs the real binary, against a real runtime over loopback.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::Runtime;

const CASE: &str = include_str!("../testdata/cases/orders-checkout.case.json");

/// Runs `softprobe args…` with `SOFTPROBE_RUNTIME_URL=url` and returns its output.
async fn softprobe(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_softprobe"));
    command
        .args(args)
        .env("SOFTPROBE_RUNTIME_URL", url)
        .env_remove("SOFTPROBE_API_TOKEN")
        .env_remove("SOFTPROBE_SESSION_ID")
        .env_remove("RUST_LOG")
        .env_remove("SOFTPROBE_LOG_LEVEL");
    for (key, value) in env {
        command.env(key, value);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// A command that needs no runtime.
async fn local(args: &[&str]) -> Output {
    softprobe("http://127.0.0.1:9", args, &[]).await
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn envelope(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "not one JSON envelope ({err}): {}{}",
            stdout(output),
            stderr(output)
        )
    })
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The checkout case with its spans in session `id` (or in none, for `None`).
fn case_for(id: Option<&str>) -> String {
    match id {
        Some(id) => CASE.replace("sess_golden", id),
        None => {
            let mut case: Value = serde_json::from_str(CASE).unwrap();
            for rs in case["traces"][0]["resourceSpans"].as_array_mut().unwrap() {
                for ss in rs["scopeSpans"].as_array_mut().unwrap() {
                    for span in ss["spans"].as_array_mut().unwrap() {
                        span["attributes"]
                            .as_array_mut()
                            .unwrap()
                            .retain(|a| a["key"] != "sp.session.id");
                    }
                }
            }
            serde_json::to_string_pretty(&case).unwrap()
        }
    }
}

async fn export(case: &Path, endpoint: &str, protocol: Option<&str>) -> Output {
    let mut args = vec![
        "export",
        "otlp",
        "--case",
        path(case),
        "--endpoint",
        endpoint,
        "--json",
    ];
    if let Some(protocol) = protocol {
        args.extend(["--protocol", protocol]);
    }
    local(&args).await
}

#[tokio::test]
async fn export_settles_the_protocol_from_the_endpoint_and_the_spans_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(&[]).await;
    for (endpoint, protocol, named) in [
        (runtime.url("/v1/traces"), None, "http/protobuf"),
        (runtime.url("/v1/traces/"), Some("http/json"), "http/json"),
        (runtime.url(""), Some("http/protobuf"), "http/protobuf"),
        (format!("http://{}", runtime.grpc_addr), None, "grpc"),
    ] {
        let id = runtime.session("capture").await;
        let case = dir.path().join(format!("{id}.case.json"));
        std::fs::write(&case, case_for(Some(&id))).unwrap();
        let exported = export(&case, &endpoint, protocol).await;
        let report = envelope(&exported);
        assert_eq!(code(&exported), 0, "{endpoint}: {report}");
        assert_eq!(report["protocol"], named, "{endpoint}: {report}");
        assert_eq!(
            (report["sent"].as_u64(), report["failed"].as_u64()),
            (Some(2), Some(0))
        );
        let captured: Value = serde_json::from_str(&runtime.close_capture(&id).await).unwrap();
        let names: Vec<&str> = captured["traces"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["resourceSpans"].as_array().unwrap())
            .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
            .flat_map(|ss| ss["spans"].as_array().unwrap())
            .map(|span| span["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{endpoint}: every span arrived: {names:?}");
        assert!(names.contains(&"POST /checkout"), "{names:?}");
    }
    runtime.stop().await;
}

#[tokio::test]
async fn export_prints_the_receivers_reason_for_refused_spans() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(&[]).await;
    let case = dir.path().join("no-session.case.json");
    std::fs::write(&case, case_for(None)).unwrap();
    for (endpoint, protocol) in [
        (runtime.url(""), "http/protobuf"),
        (runtime.url(""), "http/json"),
        (format!("http://{}", runtime.grpc_addr), "grpc"),
    ] {
        let exported = export(&case, &endpoint, Some(protocol)).await;
        let report = envelope(&exported);
        assert_eq!(code(&exported), 1, "{protocol}: {report}");
        assert_eq!(report["status"], "fail");
        assert_eq!(
            (report["sent"].as_u64(), report["failed"].as_u64()),
            (Some(0), Some(2))
        );
        let reason = report["errors"][0].as_str().unwrap();
        assert!(
            reason.contains("the receiver refused") && reason.contains("carry no session"),
            "{protocol}: {reason}"
        );
        let human = local(&[
            "export",
            "otlp",
            "--case",
            path(&case),
            "--endpoint",
            &endpoint,
            "--protocol",
            protocol,
        ])
        .await;
        assert!(
            stdout(&human).contains("carry no session"),
            "{}",
            stdout(&human)
        );
    }
    let unknown = dir.path().join("unknown.case.json");
    std::fs::write(&unknown, case_for(Some("sess_gone"))).unwrap();
    let exported = export(&unknown, &runtime.url("/v1/traces"), None).await;
    assert_eq!(code(&exported), 1);
    assert!(
        envelope(&exported)["errors"][0]
            .as_str()
            .unwrap()
            .contains("unknown or closed session")
    );
    runtime.stop().await;
}

#[tokio::test]
async fn export_exit_codes_follow_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("a.case.json");
    std::fs::write(&case, CASE).unwrap();
    let port = support::free_port();
    // Malformed or contradictory endpoints are usage errors, whatever the protocol.
    for (endpoint, protocol) in [
        ("localhost:4318", None),
        ("http://", Some("http/json")),
        ("ftp://127.0.0.1:4317", Some("grpc")),
        ("not a url", Some("http/protobuf")),
        ("http://127.0.0.1:4318/v1/traces", Some("grpc")),
    ] {
        let refused = export(&case, endpoint, protocol).await;
        assert_eq!(
            code(&refused),
            2,
            "{endpoint} {protocol:?}: {}",
            stdout(&refused)
        );
        assert_eq!(envelope(&refused)["error"]["code"], "invalid_endpoint");
    }
    // Nothing listening: 3 for every protocol, plain or TLS, with the spans counted failed.
    for scheme in ["http", "https"] {
        for protocol in ["grpc", "http/protobuf", "http/json"] {
            let endpoint = format!("{scheme}://127.0.0.1:{port}");
            let down = export(&case, &endpoint, Some(protocol)).await;
            let report = envelope(&down);
            assert_eq!(code(&down), 3, "{endpoint} {protocol}: {report}");
            assert_eq!(report["protocol"], protocol);
            assert_eq!(report["failed"], 2, "{report}");
            assert!(
                report["errors"][0]
                    .as_str()
                    .unwrap()
                    .contains("cannot reach the receiver"),
                "{report}"
            );
        }
    }
    let bad_header = local(&[
        "export",
        "otlp",
        "--case",
        path(&case),
        "--endpoint",
        "http://127.0.0.1:1/v1/traces",
        "--header",
        "bad name=1",
    ])
    .await;
    assert_eq!(code(&bad_header), 2, "{}", stderr(&bad_header));
    let no_files = local(&[
        "export",
        "otlp",
        "--case",
        "/nonexistent/*.case.json",
        "--endpoint",
        "http://127.0.0.1:1",
    ])
    .await;
    assert_eq!(code(&no_files), 1);
}

#[tokio::test]
async fn export_speaks_tls_to_https_endpoints() {
    // The runtime speaks plain HTTP and h2c: a TLS client fails the handshake there, which
    // shows the binary carries a TLS stack and tried it (instead of refusing the scheme).
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("a.case.json");
    std::fs::write(&case, CASE).unwrap();
    let runtime = Runtime::start(&[]).await;
    for (endpoint, protocol) in [
        (
            format!("https://{}/v1/traces", runtime.addr),
            "http/protobuf",
        ),
        (format!("https://{}", runtime.grpc_addr), "grpc"),
    ] {
        let exported = export(&case, &endpoint, None).await;
        let report = envelope(&exported);
        assert_eq!(code(&exported), 3, "{endpoint}: {report}");
        assert_eq!(report["protocol"], protocol);
        let why = report["errors"][0].as_str().unwrap().to_ascii_lowercase();
        assert!(
            ["tls", "ssl", "certificate", "handshake", "corrupt message"]
                .iter()
                .any(|sign| why.contains(sign)),
            "{endpoint}: a TLS failure: {why}"
        );
    }
    // And the control-API client takes https:// runtime URLs too.
    let tls_runtime = softprobe(
        &format!("https://{}", runtime.addr),
        &["session", "start", "--json"],
        &[],
    )
    .await;
    assert_eq!(code(&tls_runtime), 3, "{}", stdout(&tls_runtime));
    runtime.stop().await;
}

/// The checkout case (keys in the reference's order, not sorted) with secrets in a header,
/// in a body and in text, in three layouts: two-space indent, four-space indent without a
/// final newline, and one line.
fn layouts() -> Vec<(&'static str, String)> {
    let secrets = concat!(
        r#"{"key": "http.request.header.authorization", "value": {"stringValue": "Bearer abc"}},"#,
        "\n",
        r#"{"key": "http.response.body", "value": {"stringValue": "{\"contact\":\"ann@example.com\",\"card\":\"4111 1111 1111 1111\",\"at\":1764380000000}"}},"#,
        "\n",
    );
    let two = CASE.replacen(
        "\"attributes\": [\n",
        &format!("\"attributes\": [\n{secrets}"),
        1,
    );
    let four = two
        .lines()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            format!("{}{}", " ".repeat(indent * 2), line.trim_start())
        })
        .collect::<Vec<_>>()
        .join("\n");
    let one_line = two.lines().map(str::trim).collect::<String>();
    vec![("two", two), ("four", four), ("one-line", one_line)]
}

#[tokio::test]
async fn scrub_rewrites_only_what_it_redacts() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing to redact: every byte stays, whatever the layout.
    let clean = dir.path().join("clean.case.json");
    let text = CASE.replace("\n  ", "\n\t");
    std::fs::write(&clean, &text).unwrap();
    let report = envelope(&local(&["scrub", path(&clean), "--json"]).await);
    assert_eq!(report["redacted"], 0, "{report}");
    assert_eq!(report["files"][0]["written"], false);
    assert_eq!(std::fs::read_to_string(&clean).unwrap(), text);

    for (name, text) in layouts() {
        assert!(text.contains("1764380000000000000"));
        let file = dir.path().join(format!("{name}.case.json"));
        std::fs::write(&file, &text).unwrap();
        let scrubbed = local(&["scrub", path(&file), "--json"]).await;
        let report = envelope(&scrubbed);
        assert_eq!(code(&scrubbed), 0, "{report}");
        assert_eq!(
            report["redacted"], 3,
            "{name}: header, email, card: {report}"
        );
        let expected = text
            .replace("Bearer abc", "[REDACTED]")
            .replace("ann@example.com", "REDACTED_EMAIL")
            .replace("4111 1111 1111 1111", "REDACTED_CARD");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            expected,
            "{name}: only the redacted values changed (key order, indent, timestamps kept)"
        );
        // Scrubbing again finds nothing.
        let again = envelope(&local(&["scrub", path(&file), "--json"]).await);
        assert_eq!(again["redacted"], 0, "{name}: {again}");
    }

    // --hash and --json-path edit the body in place too; hashing twice changes nothing.
    let hashed = dir.path().join("hashed.case.json");
    std::fs::write(&hashed, &layouts()[0].1).unwrap();
    let first = envelope(
        &local(&[
            "scrub",
            "--hash",
            "--json-path",
            "$.contact",
            path(&hashed),
            "--json",
        ])
        .await,
    );
    assert_eq!(first["redacted"], 3, "{first}");
    let after = std::fs::read_to_string(&hashed).unwrap();
    assert!(after.contains("{\\\"contact\\\":\\\"sha256:"), "{after}");
    assert!(after.contains("REDACTED_CARD"));
    let second = envelope(
        &local(&[
            "scrub",
            "--hash",
            "--json-path",
            "$.contact",
            path(&hashed),
            "--json",
        ])
        .await,
    );
    assert_eq!(second["redacted"], 0, "{second}");
    assert_eq!(std::fs::read_to_string(&hashed).unwrap(), after);

    // Not JSON: refused, nothing written.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "mail ann@example.com").unwrap();
    let refused = local(&["scrub", path(&clean), path(&notes)]).await;
    assert_eq!(code(&refused), 5);
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "mail ann@example.com"
    );
}

#[tokio::test]
async fn scrub_rules_files_replace_the_default_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("a.case.json");
    let text = layouts()[0].1.clone();
    std::fs::write(&case, &text).unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - pattern: '\\bo-(\\d+)'\n    replace: 'order-$1-x'\n  - pattern: 'ann@'\n    replace: 'someone@'\n",
    )
    .unwrap();
    let report = envelope(&local(&["scrub", "--rules", path(&rules), path(&case), "--json"]).await);
    assert_eq!(
        report["redacted"], 3,
        "header, order id, email user: {report}"
    );
    assert_eq!(
        std::fs::read_to_string(&case).unwrap(),
        text.replace("Bearer abc", "[REDACTED]")
            .replace("o-17", "order-17-x")
            .replace("ann@", "someone@"),
        "the rules ran instead of the defaults (the card stays)"
    );

    let list = dir.path().join("list.json");
    std::fs::write(&list, r#"[{"pattern": "someone", "replace": "x"}]"#).unwrap();
    let report = envelope(&local(&["scrub", "--rules", path(&list), path(&case), "--json"]).await);
    assert_eq!(report["redacted"], 1, "{report}");

    for (name, body, says) in [
        (
            "bad-regex.json",
            r#"{"rules": [{"pattern": "(", "replace": "x"}]}"#,
            "rules[0].pattern",
        ),
        (
            "one.json",
            r#"{"pattern": "x", "replace": "y"}"#,
            "single rule",
        ),
        (
            "typo.yaml",
            "rules:\n  - pattern: x\n    replcae: y\n",
            "replcae",
        ),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, body).unwrap();
        let refused = local(&["scrub", "--rules", path(&file), path(&case)]).await;
        assert_eq!(code(&refused), 5, "{name}");
        assert!(
            stderr(&refused).contains(says),
            "{name}: {}",
            stderr(&refused)
        );
    }
}

#[tokio::test]
async fn verbose_logs_every_runtime_call() {
    let runtime = Runtime::start(&[]).await;
    let url = runtime.url("");
    let started = softprobe(
        &url,
        &["session", "start", "--mode", "capture", "--verbose"],
        &[],
    )
    .await;
    assert_eq!(code(&started), 0);
    let log = stderr(&started);
    let line = log
        .lines()
        .find(|l| l.starts_with(&format!("POST {url}/v1/sessions → 200 OK (")))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.ends_with(" ms)"), "{line}");
    let quiet = softprobe(&url, &["session", "start"], &[]).await;
    assert_eq!(stderr(&quiet), "", "nothing without --verbose");
    runtime.stop().await;
    let down = softprobe(&url, &["session", "start", "-v"], &[]).await;
    assert_eq!(code(&down), 3);
    assert!(
        stderr(&down).contains(&format!("POST {url}/v1/sessions → error: ")),
        "{}",
        stderr(&down)
    );
}

#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("a.case.json");
    std::fs::write(&case, CASE).unwrap();
    for args in [
        vec!["completion", "bash"],
        vec!["completion", "zsh"],
        vec!["inspect", "case", path(&case)],
        vec!["validate", "case", path(&case), "--json"],
    ] {
        // `softprobe … | head` where head is already gone: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_softprobe"))
            .args(&args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "{args:?}: {}", stderr(&output));
        assert!(
            !stderr(&output).contains("panicked"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[tokio::test]
async fn a_lone_rule_is_refused_with_a_hint_to_wrap_it() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(&[]).await;
    let url = runtime.url("");
    let id = runtime.session("replay").await;
    for (name, body) in [
        (
            "rule.json",
            r#"{"when": {"host": "api.example"}, "then": {"action": "passthrough"}}"#,
        ),
        (
            "rule.yaml",
            "when: {host: api.example}\nthen: {action: passthrough}\n",
        ),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, body).unwrap();
        let validated = local(&["validate", "rules", path(&file)]).await;
        assert_eq!(code(&validated), 5, "{name}");
        let said = stderr(&validated);
        assert!(
            said.contains("single rule") && said.contains("wrap it"),
            "{said}"
        );
        let applied = softprobe(
            &url,
            &["session", "rules", "apply", "--file", path(&file)],
            &[("SOFTPROBE_SESSION_ID", &id)],
        )
        .await;
        assert_eq!(code(&applied), 5, "{name}: {}", stderr(&applied));
        assert!(stderr(&applied).contains("wrap it"), "{}", stderr(&applied));
    }
    let state = runtime.get_json(&format!("/v1/sessions/{id}/state")).await;
    assert_eq!(state["sessionRevision"], 0, "nothing was applied: {state}");
    runtime.stop().await;
}

#[tokio::test]
async fn validate_names_the_line_of_the_file_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("rules.yaml");
    std::fs::write(
        &yaml,
        "# checkout rules\nrules:\n  - name: ok\n    when: {direction: outbound}\n    then: {action: passthrough}\n  - name: bad\n    when: {direction: outbound}\n    then:\n      action: mokc\n",
    )
    .unwrap();
    let json = dir.path().join("rules.json");
    std::fs::write(
        &json,
        "{\n  \"rules\": [\n    {\n      \"when\": {\"direction\": \"sideways\"},\n      \"then\": {\"action\": \"passthrough\"}\n    }\n  ]\n}\n",
    )
    .unwrap();
    let broken_trace = dir.path().join("broken.case.json");
    std::fs::write(
        &broken_trace,
        CASE.replacen("\"kind\": 2,", "\"kind\": [],", 1),
    )
    .unwrap();
    let broken_rule = dir.path().join("rule.case.json");
    std::fs::write(
        &broken_rule,
        CASE.replacen("\"action\": \"mock\"", "\"action\": \"mokc\"", 1),
    )
    .unwrap();
    for (file, kind, pointer, line) in [
        (&yaml, "rules", "/rules/1/then/action", 9),
        (&json, "rules", "/rules/0/when/direction", 4),
        (&broken_trace, "case", "/traces/0", 8),
        (&broken_rule, "case", "/rules/0/then/action", 234),
    ] {
        let checked = local(&["validate", kind, path(file), "--json"]).await;
        let report = envelope(&checked);
        assert_eq!(code(&checked), 5, "{report}");
        let message = report["error"]["message"].as_str().unwrap();
        assert!(message.contains(pointer), "{message}");
        assert!(
            message.contains(&format!(" at line {line} column ")),
            "{}: line {line}: {message}",
            file.display()
        );
        assert_eq!(message.matches(" at line ").count(), 1, "{message}");
    }
}

/// `softprobe serve` on ephemeral ports, logging at debug to a pipe.
fn debug_runtime() -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_softprobe"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .env_remove("RUST_LOG")
        .env("SOFTPROBE_LOG_LEVEL", "debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let mut child = debug_runtime();
    let mut stderr = child.stderr.take().unwrap();
    // The first log line is enough; then stop the runtime.
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("Runtime listening") {
        let n = std::io::Read::read(&mut stderr, &mut chunk).unwrap();
        assert!(
            n > 0,
            "the runtime exited: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&chunk[..n]);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!seen.contains(&0x1b), "{}", String::from_utf8_lossy(&seen));
}

#[test]
fn requests_are_traced_at_debug_level() {
    let mut child = debug_runtime();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (lines, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    // The first log line containing `what`, within 10 s.
    let next = |what: &str| loop {
        let line = log.recv_timeout(std::time::Duration::from_secs(10)).ok()?;
        if line.contains(what) {
            return Some(line);
        }
    };
    let traced = next("Runtime listening").and_then(|listening| {
        let addr = listening
            .split_whitespace()
            .find_map(|field| field.strip_prefix("http="))?
            .to_owned();
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        std::io::Write::write_all(
            &mut stream,
            b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .ok()?;
        next("finished processing request")
    });
    let _ = child.kill();
    let _ = child.wait();
    let traced = traced.expect("a debug line for the request");
    assert!(traced.contains("uri=/health"), "{traced}");
}
