//! The HTTP and gRPC clients of a run, and the calls they make.

use super::*;

/// HTTP and gRPC clients for the runtime, the ceilings and the proxy.
pub(crate) struct Clients {
    pub(crate) runtime: Arc<HttpPool>,
    pub(crate) ceiling: Arc<HttpPool>,
    pub(crate) proxy: Option<Arc<HttpPool>>,
    pub(crate) proxy_in_process: Option<Arc<HttpPool>>,
    /// The runtime on the Redis store, when the store part runs.
    pub(crate) store: Option<Arc<HttpPool>>,
    pub(crate) runtime_grpc: tonic::transport::Channel,
    pub(crate) ceiling_grpc: tonic::transport::Channel,
}

impl Clients {
    pub(crate) async fn new(args: &Args, servers: &Servers) -> anyhow::Result<Self> {
        Ok(Self {
            runtime: Arc::new(HttpPool::new(servers.runtime_http, args.connections)),
            ceiling: Arc::new(HttpPool::new(servers.ceiling.http, args.connections)),
            proxy: servers
                .proxy
                .map(|addr| Arc::new(HttpPool::new(addr, args.connections))),
            proxy_in_process: servers
                .proxy_in_process
                .map(|addr| Arc::new(HttpPool::new(addr, args.connections))),
            store: servers
                .store
                .as_ref()
                .map(|store| Arc::new(HttpPool::new(store.runtime_http, args.connections))),
            runtime_grpc: load::grpc_channel(servers.runtime_grpc).await?,
            ceiling_grpc: load::grpc_channel(servers.ceiling.grpc).await?,
        })
    }

    pub(crate) async fn session(&self, mode: &str) -> anyhow::Result<String> {
        Self::session_on(&self.runtime, mode).await
    }

    /// Creates a session on the runtime behind `pool`.
    pub(crate) async fn session_on(pool: &HttpPool, mode: &str) -> anyhow::Result<String> {
        let (status, body) = pool
            .json(
                Method::POST,
                "/v1/sessions",
                &serde_json::json!({ "mode": mode }),
            )
            .await?;
        ensure!(status == StatusCode::OK, "create session: {status} {body}");
        Ok(body["sessionId"]
            .as_str()
            .context("sessionId in the answer")?
            .to_owned())
    }

    pub(crate) async fn rules(&self, session: &str, n: usize) -> anyhow::Result<()> {
        Self::rules_on(&self.runtime, session, n).await
    }

    /// Sets `n` rules on a session of the runtime behind `pool`.
    pub(crate) async fn rules_on(pool: &HttpPool, session: &str, n: usize) -> anyhow::Result<()> {
        let path = format!("/v1/sessions/{session}/rules");
        let (status, body) = pool.json(Method::POST, &path, &corpus::rules(n)).await?;
        ensure!(status == StatusCode::OK, "set {n} rules: {status} {body}");
        Ok(())
    }

    /// A replay session whose loaded case records `n` exchanges and whose rule replays them.
    pub(crate) async fn replay_session(&self, n: usize) -> anyhow::Result<String> {
        let session = self.session("replay").await?;
        let (case, rules) = corpus::replay_case(n);
        for (route, document) in [("load-case", case), ("rules", rules)] {
            let path = format!("/v1/sessions/{session}/{route}");
            let (status, body) = self.runtime.json(Method::POST, &path, &document).await?;
            ensure!(status == StatusCode::OK, "{route}: {status} {body}");
        }
        Ok(session)
    }

    /// The inject call of the last exchange of a [`Self::replay_session`] of `n` exchanges.
    pub(crate) async fn replay_call(&self, n: usize) -> anyhow::Result<Arc<Call>> {
        let session = self.replay_session(n).await?;
        let lookup = corpus::inject(&session, &corpus::replay_path(n - 1));
        Ok(Self::http(
            &self.runtime,
            "/v1/inject",
            PROTOBUF,
            lookup.encode_to_vec(),
            StatusCode::OK,
        ))
    }

    pub(crate) async fn extracted_spans(&self, session: &str) -> anyhow::Result<u64> {
        Self::extracted_spans_on(&self.runtime, session).await
    }

    /// Spans a capture session of the runtime behind `pool` holds.
    pub(crate) async fn extracted_spans_on(pool: &HttpPool, session: &str) -> anyhow::Result<u64> {
        let path = format!("/v1/sessions/{session}/stats");
        let (status, body) = pool
            .json(Method::GET, &path, &serde_json::Value::Null)
            .await?;
        ensure!(status == StatusCode::OK, "stats: {status} {body}");
        body["stats"]["extractedSpans"]
            .as_u64()
            .context("stats.extractedSpans")
    }

    pub(crate) fn http(
        pool: &Arc<HttpPool>,
        path: &'static str,
        content_type: &'static str,
        body: Vec<u8>,
        expect: StatusCode,
    ) -> Arc<Call> {
        Arc::new(Call::Http {
            pool: pool.clone(),
            path,
            content_type,
            accept: content_type,
            body: body.into(),
            expect,
        })
    }

    pub(crate) fn grpc(
        channel: &tonic::transport::Channel,
        path: &'static str,
        body: Vec<u8>,
        expect: tonic::Code,
    ) -> Arc<Call> {
        Arc::new(Call::Grpc {
            channel: channel.clone(),
            path,
            body: body.into(),
            expect,
        })
    }

    /// The inject scenarios against a replay session: (name, call), ceilings first.
    pub(crate) fn inject_calls(
        &self,
        session: &str,
        path: &str,
    ) -> anyhow::Result<Vec<(&'static str, Arc<Call>)>> {
        let hit = corpus::inject(session, path);
        let miss = corpus::inject(session, "/not/mocked");
        let hit_json = serde_json::to_vec(&hit).context("inject as OTLP JSON")?;
        Ok(vec![
            (
                report::CEILING_HTTP,
                Self::http(
                    &self.ceiling,
                    "/v1/inject",
                    PROTOBUF,
                    hit.encode_to_vec(),
                    StatusCode::OK,
                ),
            ),
            (
                report::INJECT_HIT,
                Self::http(
                    &self.runtime,
                    "/v1/inject",
                    PROTOBUF,
                    hit.encode_to_vec(),
                    StatusCode::OK,
                ),
            ),
            (
                report::INJECT_MISS,
                Self::http(
                    &self.runtime,
                    "/v1/inject",
                    PROTOBUF,
                    miss.encode_to_vec(),
                    StatusCode::NOT_FOUND,
                ),
            ),
            (
                report::INJECT_JSON,
                Self::http(&self.runtime, "/v1/inject", JSON, hit_json, StatusCode::OK),
            ),
            (
                report::CEILING_GRPC,
                Self::grpc(
                    &self.ceiling_grpc,
                    GRPC_INJECT,
                    hit.encode_to_vec(),
                    tonic::Code::Ok,
                ),
            ),
            (
                report::INJECT_GRPC,
                Self::grpc(
                    &self.runtime_grpc,
                    GRPC_INJECT,
                    hit.encode_to_vec(),
                    tonic::Code::Ok,
                ),
            ),
        ])
    }

    /// The proxy scenarios, the direct upstream (the ceiling) first; and the capture session.
    pub(crate) async fn proxy_calls(
        &self,
    ) -> anyhow::Result<(Vec<(&'static str, Arc<Call>)>, String)> {
        let proxy = self.proxy.as_ref().context("the proxy is not running")?;
        let in_process = (self.proxy_in_process.as_ref())
            .context("the proxy with the runtime in process is not running")?;
        let replay = self.session("replay").await?;
        let (status, body) = self
            .runtime
            .json(
                Method::POST,
                &format!("/v1/sessions/{replay}/rules"),
                &corpus::health_mock(),
            )
            .await?;
        ensure!(
            status == StatusCode::OK,
            "set the mock rule: {status} {body}"
        );
        let capture = self.session("capture").await?;
        let get = |pool: &Arc<HttpPool>, session: Option<&str>, expect| -> anyhow::Result<_> {
            let header = session
                .map(|id| anyhow::Ok((SESSION_HEADER.clone(), id.parse()?)))
                .transpose()?;
            Ok(Arc::new(Call::Get {
                pool: pool.clone(),
                path: HEALTH,
                header,
                expect,
            }))
        };
        let mocked = StatusCode::from_u16(corpus::MOCK_STATUS as u16)?;
        Ok((
            vec![
                (
                    report::PROXY_DIRECT,
                    get(&self.runtime, None, StatusCode::OK)?,
                ),
                (report::PROXY_PASS, get(proxy, None, StatusCode::OK)?),
                (report::PROXY_MOCK, get(proxy, Some(&replay), mocked)?),
                (
                    report::PROXY_MOCK_IN_PROCESS,
                    get(in_process, Some(&replay), mocked)?,
                ),
                (
                    report::PROXY_CAPTURE,
                    get(proxy, Some(&capture), StatusCode::OK)?,
                ),
            ],
            capture,
        ))
    }

    /// Waits (up to 10 s: uploads trail their answers) until the capture session holds
    /// `expected` spans; checks it holds exactly that many.
    pub(crate) async fn uploaded(
        &self,
        session: &str,
        expected: u64,
    ) -> anyhow::Result<Result<(), String>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let extracted = self.extracted_spans(session).await?;
            if extracted == expected {
                return Ok(Ok(()));
            }
            if extracted > expected || Instant::now() > deadline {
                return Ok(Err(format!(
                    "proxy capture hops: {expected} answered, {extracted} spans uploaded"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An export of `batch` spans for `session` over `protocol`, to the runtime or the sink.
    pub(crate) fn export_call(
        &self,
        protocol: Protocol,
        sink: bool,
        session: &str,
        batch: usize,
    ) -> anyhow::Result<Arc<Call>> {
        let request = corpus::export(session, batch);
        let (pool, channel) = if sink {
            (&self.ceiling, &self.ceiling_grpc)
        } else {
            (&self.runtime, &self.runtime_grpc)
        };
        Ok(match protocol {
            Protocol::HttpProtobuf => Self::http(
                pool,
                "/v1/traces",
                PROTOBUF,
                request.encode_to_vec(),
                StatusCode::OK,
            ),
            Protocol::HttpJson => Self::http(
                pool,
                "/v1/traces",
                JSON,
                serde_json::to_vec(&request).context("export as OTLP JSON")?,
                StatusCode::OK,
            ),
            Protocol::Grpc => Self::grpc(
                channel,
                GRPC_EXPORT,
                request.encode_to_vec(),
                tonic::Code::Ok,
            ),
        })
    }
}

/// OTLP export transports.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Protocol {
    HttpProtobuf,
    HttpJson,
    Grpc,
}

impl Protocol {
    pub(crate) const ALL: [Protocol; 3] =
        [Protocol::HttpProtobuf, Protocol::HttpJson, Protocol::Grpc];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Runs one export run and checks that every span acknowledged was received.
pub(crate) async fn ingest_once(
    args: &Args,
    clients: &Clients,
    servers: &Servers,
    protocol: Protocol,
    sink: bool,
) -> anyhow::Result<(Sample, Result<(), String>)> {
    let session = if sink {
        "sink".to_owned()
    } else {
        clients.session("capture").await?
    };
    let call = clients.export_call(protocol, sink, &session, args.batch)?;
    let before = servers.ceiling.spans.get();
    let sample =
        load::closed_loop(call, args.ingest_concurrency, args.warmup(), args.measure()).await;
    let sent = sample.ok * args.batch as u64;
    let received = if sink {
        servers.ceiling.spans.get() - before
    } else {
        clients.extracted_spans(&session).await?
    };
    let who = if sink { "sink" } else { "runtime" };
    let check = if sent == received && sample.errors == 0 {
        Ok(())
    } else {
        Err(format!(
            "{who} {}: sent {sent} spans in acknowledged requests, received {received}, {} failed requests",
            protocol.name(),
            sample.errors
        ))
    };
    Ok((sample, check))
}
