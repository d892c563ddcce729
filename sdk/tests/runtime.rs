//! The client against a real runtime on loopback: sessions, cases, rules, policy, misses,
//! captures, and each typed error.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use serde_json::json;
use softprobe_sdk::{
    AuthFixtures, CapturedResponse, CasePredicate, Closest, Cookie, Direction, Error, MatchField,
    Mismatch, MockRule, Mode, Policy, ReplayRule, Softprobe,
};
use support::{Runtime, testdata_case};

async fn client() -> (Runtime, Softprobe) {
    let runtime = Runtime::start(&[]).await;
    let softprobe = Softprobe::new(&runtime.url(), None).expect("client");
    (runtime, softprobe)
}

#[tokio::test]
async fn a_loaded_case_answers_find_in_case_as_the_official_sdks_do() {
    let (_runtime, softprobe) = client().await;
    let mut session = softprobe.start_session(Mode::Replay).await.unwrap();
    assert!(session.id().starts_with("sess_"), "{}", session.id());
    let charge = CasePredicate::outbound().method("POST").path("/v1/charges");
    assert!(matches!(
        session.find_in_case(&charge),
        Err(Error::CaseNotLoaded)
    ));

    let revision = session
        .load_case_from_file(testdata_case("orders-checkout.case.json"))
        .await
        .unwrap();
    assert_eq!(revision, 1);
    let state = session.state().await.unwrap();
    assert_eq!(
        state.case_summary.case_id.as_deref(),
        Some("orders-checkout")
    );
    assert_eq!(state.case_summary.trace_count, 2);
    assert_eq!(session.case().unwrap().case_id(), Some("orders-checkout"));

    // Hit: one span, its recorded response ready to mock.
    let hit = session.find_in_case(&charge).unwrap();
    assert_eq!(hit.span_id(), Some("b7ad6b7169203331"));
    assert_eq!(
        hit.response,
        CapturedResponse::new(201, r#"{"id":"ch_1","status":"succeeded"}"#)
            .header("content-type", "application/json")
    );
    // The inbound span's method is only in the `:method` header attribute.
    let checkout = CasePredicate::inbound().method("POST").path("/checkout");
    assert_eq!(
        session.find_in_case(&checkout).unwrap().response.status,
        200
    );

    // None: the message shows the predicate.
    let refund = CasePredicate::outbound().path("/v1/refunds");
    let none = session.find_in_case(&refund).unwrap_err();
    assert!(matches!(none, Error::NotFound { .. }), "{none:?}");
    assert_eq!(
        none.to_string(),
        "find_in_case: no span in the loaded case matches { direction: \"outbound\", path: \
         \"/v1/refunds\" }. Check the predicate against the case's inject and extract spans."
    );
    assert!(session.find_all_in_case(&refund).unwrap().is_empty());

    // Ambiguous: both spans are the orders service's; the error lists them.
    let both = CasePredicate::new().service("orders");
    let ambiguous = session.find_in_case(&both).unwrap_err();
    let Error::Ambiguous { span_ids, .. } = &ambiguous else {
        panic!("{ambiguous:?}")
    };
    assert_eq!(span_ids, &["00f067aa0ba902b7", "b7ad6b7169203331"]);
    assert!(
        ambiguous.to_string().starts_with(
            "find_in_case: 2 spans match { service: \"orders\" }. Disambiguate the predicate"
        ),
        "{ambiguous}"
    );
    assert_eq!(session.find_all_in_case(&both).unwrap().len(), 2);
}

#[tokio::test]
async fn mock_and_replay_rules_accumulate_and_answer_hops() {
    let (runtime, softprobe) = client().await;
    let mut session = softprobe.start_session(Mode::Replay).await.unwrap();
    session
        .load_case_from_file(testdata_case("orders-checkout.case.json"))
        .await
        .unwrap();
    let user = CasePredicate::outbound()
        .method("GET")
        .host("api.github.com")
        .path("/user");
    let mock = MockRule::new(user, CapturedResponse::new(200, r#"{"login":"octo"}"#))
        .name("user")
        .priority(5);
    assert_eq!(session.mock_outbound(mock).await.unwrap(), 2);
    let replay = ReplayRule::new(CasePredicate::outbound())
        .name("from-case")
        .match_on([MatchField::Method, MatchField::Path]);
    assert_eq!(session.replay(replay).await.unwrap(), 3);
    assert_eq!(session.rules().len(), 2);

    // The whole list went out as one document, as the official SDKs send it.
    let state = session.state().await.unwrap();
    assert_eq!(
        state.rules,
        Some(json!({"version": 1, "rules": [
            {"name": "user", "priority": 5,
             "when": {"direction": "outbound", "host": "api.github.com", "method": "GET", "path": "/user"},
             "then": {"action": "mock", "response": {"status": 200, "headers": {}, "body": "{\"login\":\"octo\"}"}}},
            {"name": "from-case", "when": {"direction": "outbound"},
             "then": {"action": "replay", "matchOn": ["method", "path"]}},
        ]}))
    );

    // The runtime answers with them: the mock, and the recorded charge from the case.
    let (status, mocked) = runtime
        .hop(session.id(), "GET", "api.github.com", "/user")
        .await;
    assert_eq!(status, 200, "{mocked}");
    assert_eq!(mocked["sp.decision"], "mock");
    assert_eq!(mocked["http.response.body"], r#"{"login":"octo"}"#);
    let (status, replayed) = runtime
        .hop(session.id(), "POST", "elsewhere.example", "/v1/charges")
        .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["sp.decision"], "replay");
    assert_eq!(replayed["sp.case.span_id"], "b7ad6b7169203331");
    assert_eq!(
        replayed["http.response.body"],
        r#"{"id":"ch_1","status":"succeeded"}"#
    );

    // A rule the runtime refuses is reported and not kept; the session is unchanged.
    let invalid = MockRule::new(CasePredicate::new(), CapturedResponse::new(700, ""));
    let refused = session.mock_outbound(invalid).await.unwrap_err();
    let Error::InvalidRequest { message } = &refused else {
        panic!("{refused:?}")
    };
    assert!(message.contains("rules[2].then"), "{message}");
    assert_eq!(session.rules().len(), 2);
    assert_eq!(session.stats().await.unwrap().session_revision, 3);

    assert_eq!(session.clear_rules().await.unwrap(), 4);
    assert!(session.rules().is_empty());
    let state = session.state().await.unwrap();
    assert_eq!(state.rules, Some(json!({"version": 1, "rules": []})));
    let (status, _) = runtime
        .hop(session.id(), "GET", "api.github.com", "/user")
        .await;
    assert_eq!(status, 404, "no rule answers any more");
}

#[tokio::test]
async fn strict_policy_blocks_and_misses_say_what_came_closest() {
    let (runtime, softprobe) = client().await;
    let mut session = softprobe.start_session(Mode::Replay).await.unwrap();
    let charge = CasePredicate::outbound()
        .method("POST")
        .host("api.stripe.com")
        .path("/v1/charges");
    session
        .mock_outbound(MockRule::new(charge, CapturedResponse::new(200, "ok")).name("charge"))
        .await
        .unwrap();
    session.set_policy(&Policy::strict()).await.unwrap();
    let fixtures = AuthFixtures {
        tokens: vec!["t1".into()],
        cookies: vec![Cookie::new("sid", "v")],
        ..AuthFixtures::default()
    };
    assert_eq!(session.set_auth_fixtures(&fixtures).await.unwrap(), 3);
    let state = session.state().await.unwrap();
    assert_eq!(state.policy, Some(json!({"externalHttp": "strict"})));
    assert_eq!(
        state.fixtures,
        Some(json!({"tokens": ["t1"], "cookies": [{"name": "sid", "value": "v"}]}))
    );

    let (status, blocked) = runtime
        .hop(session.id(), "POST", "api.stripe.com", "/v1/charge")
        .await;
    assert_eq!(status, 200, "a block is an answer");
    assert_eq!(blocked["sp.decision"], "strict_miss");
    assert_eq!(blocked["http.response.status_code"], "500");

    let misses = session.misses().await.unwrap();
    assert_eq!(misses.dropped, 0);
    let [miss] = misses.misses.as_slice() else {
        panic!("{misses:?}")
    };
    assert_eq!(
        (
            miss.direction,
            miss.method.as_str(),
            miss.host.as_str(),
            miss.path.as_str(),
            miss.decision.as_str()
        ),
        (
            Some(Direction::Outbound),
            "POST",
            "api.stripe.com",
            "/v1/charge",
            "strict_miss"
        )
    );
    let Some(Closest::Rule { name, mismatches }) = &miss.closest else {
        panic!("{miss:?}")
    };
    assert_eq!(name, "charge");
    assert_eq!(
        mismatches.first().map(|m: &Mismatch| (
            m.field.as_str(),
            m.expected.as_str(),
            m.actual.as_str()
        )),
        Some(("path", "/v1/charges", "/v1/charge"))
    );
    let stats = session.stats().await.unwrap();
    assert_eq!(stats.mode, Mode::Replay);
    assert_eq!(stats.counters.strict_misses, 1);

    // Allowing again forwards the same hop (a miss, not an answer).
    session.set_policy(&Policy::allow()).await.unwrap();
    let (status, _) = runtime
        .hop(session.id(), "POST", "api.stripe.com", "/v1/charge")
        .await;
    assert_eq!(status, 404);
    let misses = session.misses().await.unwrap().misses;
    assert_eq!(misses.len(), 2);
    assert_eq!(misses[1].decision, "forward");
}

#[tokio::test]
async fn a_capture_downloads_while_open_and_after_close_then_the_session_is_gone() {
    let (runtime, softprobe) = client().await;
    let capture = softprobe.start_session(Mode::Capture).await.unwrap();
    runtime
        .upload(capture.id(), "/items", 200, r#"{"items":[]}"#)
        .await;

    let buffered = capture.capture().await.unwrap();
    assert_eq!(buffered.case_id(), Some(capture.id()));
    let items = CasePredicate::outbound().method("GET").path("/items");
    assert_eq!(
        buffered.find(&items).unwrap().response.body,
        r#"{"items":[]}"#
    );

    let written = capture.close().await.unwrap().expect("a capture path");
    let on_disk = std::fs::read(&written).unwrap();
    let downloaded = capture.capture().await.unwrap();
    assert_eq!(downloaded.as_bytes(), on_disk.as_slice());
    assert_eq!(downloaded.find(&items).unwrap().response.status, 200);

    let id = capture.id().to_owned();
    match capture.stats().await {
        Err(Error::UnknownSession { id: named, .. }) => assert_eq!(named, id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        capture.close().await,
        Err(Error::UnknownSession { .. })
    ));

    // A replay session closes without a case; an unknown id is a typed error.
    let replay = softprobe.start_session(Mode::Replay).await.unwrap();
    assert_eq!(replay.close().await.unwrap(), None);
    let mut ghost = softprobe.attach("sess_nope");
    match ghost
        .replay(ReplayRule::new(CasePredicate::outbound()))
        .await
    {
        Err(Error::UnknownSession { id, .. }) => assert_eq!(id, "sess_nope"),
        other => panic!("{other:?}"),
    }
    assert!(ghost.rules().is_empty());
}

#[tokio::test]
async fn an_unreachable_runtime_is_a_typed_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let softprobe = Softprobe::new(&format!("http://{addr}"), None).unwrap();
    let err = softprobe.start_session(Mode::Replay).await.unwrap_err();
    let Error::Unreachable { url, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(url, &format!("http://{addr}"));
    assert!(
        err.to_string().starts_with(&format!(
            "cannot reach the Softprobe runtime at http://{addr}"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn the_token_is_sent_and_a_missing_or_wrong_one_is_unauthorized() {
    let runtime = Runtime::start(&["--api-token", "s3cret"]).await;
    let url = runtime.url();
    for (token, status) in [(None, 401), (Some("wrong"), 403)] {
        let softprobe = Softprobe::new(&url, token).unwrap();
        match softprobe.start_session(Mode::Replay).await {
            Err(Error::Unauthorized { status: got, .. }) => assert_eq!(got, status, "{token:?}"),
            other => panic!("{token:?}: {other:?}"),
        }
    }
    let softprobe = Softprobe::new(&url, Some("s3cret")).unwrap();
    let session = softprobe.start_session(Mode::Replay).await.unwrap();
    assert_eq!(session.stats().await.unwrap().session_revision, 0);
    session.close().await.unwrap();
}

#[tokio::test]
async fn documents_as_given_answers_as_written_and_the_runtime_itself() {
    let (runtime, softprobe) = client().await;
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    let softprobe = softprobe.on_call(move |call| {
        let status = call.outcome.as_ref().ok().copied();
        seen.lock()
            .unwrap()
            .push(format!("{} {} {status:?}", call.method, call.url));
    });
    assert!(softprobe.health().await.unwrap().is_ok());
    let info = softprobe.meta().await.unwrap();
    assert_eq!(info.spec_version.as_deref(), Some("http-control-api@v1"));
    assert_eq!(info.schema_version.as_deref(), Some("1"));

    // A create request as given; the runtime's words for a bad one.
    let refused = softprobe
        .start_session_raw(r#"{"mode":"foo"}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidRequest { message } if message.contains("unknown variant `foo`")),
        "{refused:?}"
    );
    assert_eq!(refused.status(), Some(400));
    let mut session = softprobe
        .start_session_raw(r#"{"mode":"replay"}"#)
        .await
        .unwrap();
    let listed = softprobe.sessions().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].session_id.as_str(), listed[0].mode),
        (session.id(), Mode::Replay)
    );

    let case = std::fs::read(testdata_case("orders-checkout.case.json")).unwrap();
    assert_eq!(session.load_case_raw(case).await.unwrap(), 1);
    assert!(session.case().is_none(), "nothing is parsed locally");
    let policy = r#"{"externalHttp":"strict","custom":true}"#;
    assert_eq!(session.set_policy_raw(policy).await.unwrap(), 2);
    assert_eq!(
        session
            .set_auth_fixtures_raw(r#"{"tokens":["t"]}"#)
            .await
            .unwrap(),
        3
    );
    session
        .mock_outbound(MockRule::new(
            CasePredicate::outbound(),
            CapturedResponse::new(200, ""),
        ))
        .await
        .unwrap();
    let rules = json!({"version": 1, "rules": [{"when": {"direction": "outbound"}, "then": {"action": "replay"}}]});
    assert_eq!(session.set_rules_raw(rules.to_string()).await.unwrap(), 5);
    assert!(
        session.rules().is_empty(),
        "the handle's rules were replaced"
    );
    let broken = session.set_rules_raw("{").await.unwrap_err();
    assert!(matches!(broken, Error::InvalidRequest { .. }), "{broken:?}");

    // Answers as written: every field, the documents as posted.
    let state = session.state_json().await.unwrap();
    assert_eq!(state["caseSummary"]["caseId"], "orders-checkout");
    assert_eq!(state["policy"]["custom"], true);
    assert_eq!(state["rules"], rules);
    assert_eq!(session.stats_json().await.unwrap()["sessionRevision"], 5);
    assert_eq!(session.misses_json().await.unwrap()["dropped"], 0);
    session.close().await.unwrap();
    let gone = session.stats_json().await.unwrap_err();
    assert!(
        matches!(gone, Error::UnknownSession { status: 404, .. }),
        "{gone:?}"
    );

    // A capture closed to a path of the client's choosing.
    let capture = softprobe.start_session(Mode::Capture).await.unwrap();
    runtime
        .upload(capture.id(), "/items", 200, r#"{"items":[]}"#)
        .await;
    let written = capture
        .close_to("chosen.case.json")
        .await
        .unwrap()
        .expect("a capture path");
    assert!(
        written.ends_with("chosen.case.json"),
        "{}",
        written.display()
    );
    assert!(written.exists());

    let calls = calls.lock().unwrap();
    assert_eq!(calls[0], format!("GET {}/health Some(200)", runtime.url()));
    assert!(calls.contains(&format!("POST {}/v1/sessions Some(400)", runtime.url())));
}
