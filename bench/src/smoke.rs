//! `--smoke`: correctness checks with tiny loads; never judges speed.

use super::*;

/// Correctness checks, each run once with tiny loads; returns what failed.
pub(crate) async fn smoke(args: &Args, servers: &Servers) -> anyhow::Result<Vec<String>> {
    let clients = Clients::new(args, servers).await?;
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    let session = clients.session("replay").await?;
    clients.rules(&session, args.rules).await?;
    let last = corpus::rule_path(args.rules - 1);

    // A hit is a 200 whose body decodes to a hit with the mocked status; a miss is a 404.
    let hit = corpus::inject(&session, &last);
    let (status, decoded) = inject_protobuf(&clients, &hit).await?;
    let code = decoded
        .as_ref()
        .and_then(|t| corpus::attribute(t, "http.response.status_code"));
    check(
        status == StatusCode::OK && code == Some(corpus::MOCK_STATUS.to_string()),
        format!(
            "protobuf inject of the last of {} rules: {status}, status attribute {code:?}",
            args.rules
        ),
    );
    let (status, body) = clients
        .runtime
        .send(
            Method::POST,
            "/v1/inject",
            JSON,
            JSON,
            serde_json::to_vec(&hit)?.into(),
        )
        .await?;
    let decoded = serde_json::from_slice::<TracesData>(&body).ok();
    let code = decoded
        .as_ref()
        .and_then(|t| corpus::attribute(t, "http.response.status_code"));
    check(
        status == StatusCode::OK && code == Some(corpus::MOCK_STATUS.to_string()),
        format!("JSON inject hit: {status}, status attribute {code:?}"),
    );
    // A replay hit answers from the loaded case, with the recorded span's id.
    let replay = clients.replay_session(3).await?;
    let lookup = corpus::inject(&replay, &corpus::replay_path(2));
    let (status, decoded) = inject_protobuf(&clients, &lookup).await?;
    let attribute = |key| decoded.as_ref().and_then(|t| corpus::attribute(t, key));
    check(
        status == StatusCode::OK
            && attribute("sp.decision").as_deref() == Some("replay")
            && attribute("sp.case.span_id").as_deref() == Some("0000000000000003"),
        format!(
            "replay hit: {status}, decision {:?}, span {:?}",
            attribute("sp.decision"),
            attribute("sp.case.span_id")
        ),
    );
    let miss = corpus::inject(&session, "/not/mocked");
    let (status, _) = inject_protobuf(&clients, &miss).await?;
    check(
        status == StatusCode::NOT_FOUND,
        format!("protobuf inject miss: {status}"),
    );
    let mut grpc = InjectServiceClient::new(clients.runtime_grpc.clone());
    let answer = grpc.inject(hit.clone()).await;
    let code = answer
        .as_ref()
        .ok()
        .and_then(|r| corpus::attribute(r.get_ref(), "http.response.status_code"));
    check(
        code == Some(corpus::MOCK_STATUS.to_string()),
        format!(
            "gRPC inject hit: status attribute {code:?} ({:?})",
            answer.err()
        ),
    );
    let answer = grpc.inject(miss).await;
    check(
        answer.as_ref().err().map(tonic::Status::code) == Some(tonic::Code::NotFound),
        format!("gRPC inject miss: {:?}", answer.map(|_| "a hit")),
    );

    // Every load path once, briefly: every answer must be the expected one.
    for (name, call) in clients.inject_calls(&session, &last)? {
        let sample =
            load::fixed_rate(call.clone(), args.rates[0], args.warmup(), args.measure()).await;
        check(
            sample.errors == 0 && sample.ok > 0,
            format!(
                "{name} at {} req/s: {} wrong answers of {}",
                args.rates[0],
                sample.errors,
                sample.ok + sample.errors
            ),
        );
        let sample = load::closed_loop(call, args.concurrency, args.warmup(), args.measure()).await;
        check(
            sample.errors == 0 && sample.ok > 0,
            format!(
                "{name} closed loop: {} wrong answers of {}",
                sample.errors,
                sample.ok + sample.errors
            ),
        );
    }
    // Exported spans sent == received, per protocol, for the runtime and the sink.
    for protocol in Protocol::ALL {
        for sink in [true, false] {
            let (sample, result) = ingest_once(args, &clients, servers, protocol, sink).await?;
            check(
                sample.ok > 0,
                format!("{} export: nothing acknowledged", protocol.name()),
            );
            if let Err(failure) = result {
                check(false, failure);
            }
        }
    }
    let before = alloc::live_bytes();
    create_sessions(&clients.runtime, args.sessions).await?;
    check(alloc::live_bytes() > before, "sessions take memory".into());
    let (_, written) = capture_and_close(args, &clients).await?;
    check(written.bytes > 0, "the closed capture wrote a case".into());

    // The proxy: every scenario answers as expected (a mocked hop with the mock's status), and
    // every capture hop uploads one span.
    let (calls, capture) = clients.proxy_calls().await?;
    let mut captured = 0;
    for (name, call) in calls {
        let sample =
            load::closed_loop(call, args.proxy_connections, args.warmup(), args.measure()).await;
        check(
            sample.errors == 0 && sample.ok > 0,
            format!(
                "{name}: {} wrong answers of {}",
                sample.errors,
                sample.ok + sample.errors
            ),
        );
        if name == report::PROXY_CAPTURE {
            captured += sample.ok + sample.errors;
        }
    }
    if let Err(failure) = clients.uploaded(&capture, captured).await? {
        check(false, failure);
    }
    Ok(failures)
}

/// One protobuf `POST /v1/inject`: the status and the answer, if it decodes.
async fn inject_protobuf(
    clients: &Clients,
    request: &TracesData,
) -> anyhow::Result<(StatusCode, Option<TracesData>)> {
    let (status, body) = clients
        .runtime
        .send(
            Method::POST,
            "/v1/inject",
            PROTOBUF,
            PROTOBUF,
            request.encode_to_vec().into(),
        )
        .await?;
    Ok((status, TracesData::decode(body).ok()))
}
