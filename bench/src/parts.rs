//! A full run, part by part: inject, ingest, scaling, proxy, the capture and case write
//! figures, and the Redis store against the in-memory one.

use super::*;

pub(crate) async fn run(args: &Args, servers: &Servers) -> anyhow::Result<Report> {
    let clients = Clients::new(args, servers).await?;
    let mut report = Report::new();
    report.batch = args.batch;
    let session = clients.session("replay").await?;
    clients.rules(&session, 1).await?;
    let calls = clients.inject_calls(&session, &corpus::rule_path(0))?;

    if args.only.contains(&Part::Inject) {
        // The replay action next to the mock hit: a case of 1 and of 10,000 exchanges.
        let mut with_replay = calls.clone();
        with_replay.push((report::REPLAY_ONE, clients.replay_call(1).await?));
        with_replay.push((report::REPLAY_MANY, clients.replay_call(10_000).await?));
        inject_part(args, &with_replay, &mut report).await;
    }
    if args.only.contains(&Part::Ingest) {
        ingest_part(args, &clients, servers, &mut report).await?;
    }
    if args.only.contains(&Part::Scaling) {
        scaling_part(args, &clients, &calls, &mut report).await?;
    }
    if args.only.contains(&Part::Proxy) {
        proxy_part(args, &clients, &mut report).await?;
    }
    if args.only.contains(&Part::Capture) {
        eprintln!(
            "capture: {} spans held, then written on close",
            args.capture_spans
        );
        let (per_span, written) = capture_and_close(args, &clients).await?;
        report.bytes_per_span = Some(per_span);
        report.case_write = Some(written);
    }
    if args.only.contains(&Part::Store) {
        store_part(args, &clients, servers, &mut report).await?;
    }
    Ok(report)
}

/// Runs of several scenarios that are compared with each other (latencies at a fixed rate,
/// or maximum throughput): the measured window of each is cut into `--slices` slices taken in
/// turn, so a burst of noise on this shared machine lands on all of them alike instead of on
/// whichever scenario happened to be running. `run` measures one call for one slice, given its
/// warm-up and window.
pub(crate) async fn interleaved<F, Fut>(
    args: &Args,
    calls: &[(&'static str, Arc<Call>)],
    run: F,
) -> Vec<Sample>
where
    F: Fn(Arc<Call>, Duration, Duration) -> Fut,
    Fut: std::future::Future<Output = Sample>,
{
    let slices = args.slices.max(1);
    let mut merged: Vec<Option<Sample>> = calls.iter().map(|_| None).collect();
    for slice in 0..slices {
        for ((_, call), total) in calls.iter().zip(&mut merged) {
            let warmup = if slice == 0 {
                args.warmup()
            } else {
                Duration::ZERO
            };
            let sample = run(call.clone(), warmup, args.measure() / slices as u32).await;
            match total {
                Some(total) => total.merge(sample),
                None => *total = Some(sample),
            }
        }
    }
    merged.into_iter().flatten().collect()
}

/// [`interleaved`] at a fixed arrival rate.
pub(crate) async fn interleaved_at(
    args: &Args,
    calls: &[(&'static str, Arc<Call>)],
    rate: f64,
) -> Vec<Sample> {
    interleaved(args, calls, |call, warmup, window| {
        load::fixed_rate(call, rate, warmup, window)
    })
    .await
}

pub(crate) async fn inject_part(
    args: &Args,
    calls: &[(&'static str, Arc<Call>)],
    report: &mut Report,
) {
    eprintln!(
        "inject: fixed-rate ladder and closed-loop maximum, {} reps",
        args.reps
    );
    for rep in 0..args.reps {
        for &rate in &args.rates {
            let samples = interleaved_at(args, calls, rate).await;
            for ((name, _), sample) in calls.iter().zip(samples) {
                report.add(Row::rate(name, rate), rep, sample);
            }
        }
        let samples = interleaved(args, calls, |call, warmup, window| {
            load::closed_loop(call, args.concurrency, warmup, window)
        })
        .await;
        for ((name, _), sample) in calls.iter().zip(samples) {
            report.add(Row::max(name), rep, sample);
        }
    }
}

pub(crate) async fn ingest_part(
    args: &Args,
    clients: &Clients,
    servers: &Servers,
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!("ingest: closed loop, {} spans per request", args.batch);
    for rep in 0..args.reps {
        for protocol in Protocol::ALL {
            for sink in [true, false] {
                let (sample, check) = ingest_once(args, clients, servers, protocol, sink).await?;
                if let Err(failure) = check {
                    report.failures.push(failure);
                }
                report.add(Row::ingest(protocol.name(), sink), rep, sample);
            }
        }
    }
    Ok(())
}

pub(crate) async fn scaling_part(
    args: &Args,
    clients: &Clients,
    calls: &[(&'static str, Arc<Call>)],
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!(
        "scaling: {} rules, then {} sessions",
        args.rules, args.sessions
    );
    let big = clients.session("replay").await?;
    clients.rules(&big, args.rules).await?;
    let big_call = Clients::http(
        &clients.runtime,
        "/v1/inject",
        PROTOBUF,
        corpus::inject(&big, &corpus::rule_path(args.rules - 1)).encode_to_vec(),
        StatusCode::OK,
    );
    let small_call = calls
        .iter()
        .find(|(name, _)| *name == report::INJECT_HIT)
        .map(|(_, call)| call.clone())
        .context("the hit call")?;
    let pair = [
        (report::ONE_RULE_ONE_SESSION, small_call.clone()),
        (report::MANY_RULES, big_call),
    ];
    for rep in 0..args.reps {
        let samples = interleaved_at(args, &pair, args.scale_rate).await;
        for ((name, _), sample) in pair.iter().zip(samples) {
            report.add(Row::scale(name), rep, sample);
        }
    }

    let before = alloc::live_bytes();
    create_sessions(&clients.runtime, args.sessions).await?;
    report.bytes_per_session = Some((alloc::live_bytes() - before) as f64 / args.sessions as f64);
    for rep in 0..args.reps {
        let sample = load::fixed_rate(
            small_call.clone(),
            args.scale_rate,
            args.warmup(),
            args.measure(),
        )
        .await;
        report.add(Row::scale(report::MANY_SESSIONS), rep, sample);
    }
    Ok(())
}

/// The proxy against the upstream it fronts, closed loop: throughput at
/// `--proxy-connections`, latency at one connection (one request at a time); then checks
/// that every capture hop uploaded its span.
pub(crate) async fn proxy_part(
    args: &Args,
    clients: &Clients,
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!(
        "proxy: closed loop at {} connections and at 1, {} reps",
        args.proxy_connections, args.reps
    );
    report.proxy_connections = args.proxy_connections;
    let (calls, capture) = clients.proxy_calls().await?;
    let mut captured = 0;
    for rep in 0..args.reps {
        for connections in [args.proxy_connections, 1] {
            let samples = interleaved(args, &calls, |call, warmup, window| {
                load::closed_loop(call, connections, warmup, window)
            })
            .await;
            for ((name, _), sample) in calls.iter().zip(samples) {
                if *name == report::PROXY_CAPTURE {
                    captured += sample.ok + sample.errors;
                }
                report.add(Row::proxy(name, connections), rep, sample);
            }
        }
    }
    if let Err(failure) = clients.uploaded(&capture, captured).await? {
        report.failures.push(failure);
    }
    Ok(())
}

/// Creates `n` idle replay sessions on the runtime behind `pool`, 16 requests in flight.
pub(crate) async fn create_sessions(pool: &Arc<HttpPool>, n: usize) -> anyhow::Result<()> {
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in (w..n).step_by(16) {
                    let (status, body) = pool
                        .json(
                            Method::POST,
                            "/v1/sessions",
                            &serde_json::json!({"mode": "replay"}),
                        )
                        .await?;
                    ensure!(status == StatusCode::OK, "create session: {status} {body}");
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await.context("session worker")??;
    }
    Ok(())
}

/// Case writing: bytes held per captured span, and the close that writes them.
pub(crate) struct CaseWrite {
    pub(crate) spans: usize,
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
}

/// Captures `capture_spans` spans (HTTP protobuf, one request at a time), measures the live
/// bytes they hold, then closes the session and times the case write.
pub(crate) async fn capture_and_close(
    args: &Args,
    clients: &Clients,
) -> anyhow::Result<(f64, CaseWrite)> {
    let session = clients.session("capture").await?;
    let before = alloc::live_bytes();
    let spans = capture(args, &clients.runtime, &session).await?;
    let per_span = (alloc::live_bytes() - before) as f64 / spans as f64;
    let started = Instant::now();
    let (status, closed) = clients
        .runtime
        .json(
            Method::POST,
            &format!("/v1/sessions/{session}/close"),
            &serde_json::Value::Null,
        )
        .await?;
    let elapsed = started.elapsed();
    ensure!(status == StatusCode::OK, "close: {status} {closed}");
    let path = closed["capturePath"].as_str().context("capturePath")?;
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("case {path}"))?
        .len();
    Ok((
        per_span,
        CaseWrite {
            spans,
            bytes,
            elapsed,
        },
    ))
}

/// Exports about `--capture-spans` spans into the capture `session` of the runtime behind
/// `pool` (HTTP protobuf, one request at a time) and checks it holds them all; answers how
/// many it sent.
async fn capture(args: &Args, pool: &HttpPool, session: &str) -> anyhow::Result<usize> {
    let batch = args.batch.min(args.capture_spans).max(1);
    let body: bytes::Bytes = corpus::export(session, batch).encode_to_vec().into();
    let batches = args.capture_spans.div_ceil(batch);
    for _ in 0..batches {
        let (status, _) = pool
            .send(Method::POST, "/v1/traces", PROTOBUF, PROTOBUF, body.clone())
            .await?;
        ensure!(status == StatusCode::OK, "capture export: {status}");
    }
    let spans = batches * batch;
    let extracted = Clients::extracted_spans_on(pool, session).await?;
    ensure!(
        extracted == spans as u64,
        "captured {extracted} of {spans} spans"
    );
    Ok(spans)
}

/// The Redis store against the in-memory one, interleaved in every rep: inject hits (the
/// fixed-rate ladder and the closed-loop maximum), then HTTP protobuf ingest into a fresh
/// capture session per store; then the Redis memory that idle sessions and captured spans
/// take (`used_memory` before and after).
pub(crate) async fn store_part(
    args: &Args,
    clients: &Clients,
    servers: &Servers,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (Some(redis_pool), Some(StoreServers { redis, .. })) = (&clients.store, &servers.store)
    else {
        bail!("the Redis store is not running");
    };
    eprintln!(
        "store: Redis against memory, inject and ingest interleaved, {} reps; then Redis memory",
        args.reps
    );
    let stores = [
        (
            report::INJECT_MEMORY,
            report::INGEST_MEMORY,
            &clients.runtime,
        ),
        (report::INJECT_REDIS, report::INGEST_REDIS, redis_pool),
    ];
    let mut injects = Vec::new();
    for (name, _, pool) in stores {
        let session = Clients::session_on(pool, "replay").await?;
        Clients::rules_on(pool, &session, 1).await?;
        let hit = corpus::inject(&session, &corpus::rule_path(0));
        let call = Clients::http(
            pool,
            "/v1/inject",
            PROTOBUF,
            hit.encode_to_vec(),
            StatusCode::OK,
        );
        injects.push((name, call));
    }
    // Redis commands per request of the Redis runtime: only its scenarios reach Redis.
    let (mut inject_calls, mut injected) = (Commands::default(), 0);
    let (mut export_calls, mut exported) = (Commands::default(), 0);
    let is_redis = |name: &str| name == report::INJECT_REDIS || name == report::INGEST_REDIS;
    for rep in 0..args.reps {
        let before = redis.commands()?;
        for &rate in &args.rates {
            let samples = interleaved_at(args, &injects, rate).await;
            for ((name, _), sample) in injects.iter().zip(samples) {
                if is_redis(name) {
                    injected += sample.ok + sample.errors;
                }
                report.add(Row::rate(name, rate), rep, sample);
            }
        }
        let samples = interleaved(args, &injects, |call, warmup, window| {
            load::closed_loop(call, args.concurrency, warmup, window)
        })
        .await;
        for ((name, _), sample) in injects.iter().zip(samples) {
            if is_redis(name) {
                injected += sample.ok + sample.errors;
            }
            report.add(Row::max(name), rep, sample);
        }
        inject_calls.add_delta(&before, &redis.commands()?);

        let mut exports = Vec::new();
        let mut sessions = Vec::new();
        for (_, name, pool) in stores {
            let session = Clients::session_on(pool, "capture").await?;
            let call = Clients::http(
                pool,
                "/v1/traces",
                PROTOBUF,
                corpus::export(&session, args.batch).encode_to_vec(),
                StatusCode::OK,
            );
            exports.push((name, call));
            sessions.push((pool, session));
        }
        let before = redis.commands()?;
        let samples = interleaved(args, &exports, |call, warmup, window| {
            load::closed_loop(call, args.ingest_concurrency, warmup, window)
        })
        .await;
        export_calls.add_delta(&before, &redis.commands()?);
        for (((name, _), sample), (pool, session)) in exports.iter().zip(samples).zip(&sessions) {
            let sent = sample.ok * args.batch as u64;
            let received = Clients::extracted_spans_on(pool, session).await?;
            if sent != received || sample.errors > 0 {
                report.failures.push(format!(
                    "{name}: sent {sent} spans in acknowledged requests, received {received}, {} \
                     failed requests",
                    sample.errors
                ));
            }
            if is_redis(name) {
                exported += sample.ok + sample.errors;
            }
            report.add(Row::store_ingest(name), rep, sample);
        }
    }
    report.redis_commands = vec![
        (report::INJECT_REDIS, inject_calls, injected),
        (report::INGEST_REDIS, export_calls, exported),
    ];

    eprintln!(
        "store: Redis memory of {} idle sessions, then of {} captured spans",
        args.sessions, args.capture_spans
    );
    let before = redis.used_memory()?;
    create_sessions(redis_pool, args.sessions).await?;
    let after = redis.used_memory()?;
    report.redis_bytes_per_session = Some((after as f64 - before as f64) / args.sessions as f64);
    let session = Clients::session_on(redis_pool, "capture").await?;
    let before = redis.used_memory()?;
    let spans = capture(args, redis_pool, &session).await?;
    let after = redis.used_memory()?;
    report.redis_bytes_per_span = Some((after as f64 - before as f64) / spans as f64);
    Ok(())
}
