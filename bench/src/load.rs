//! The load generator: a keep-alive HTTP/1.1 connection pool, a raw-bytes gRPC client, an
//! open-model fixed-rate driver that measures latency from each request's *scheduled* send time
//! (no coordinated omission), and a closed-loop driver for maximum throughput.

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use softprobe::proto::RawCodec;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

/// Keep-alive HTTP/1.1 connections to one address, at most `max` at a time; a request waits
/// for a free connection (and that wait counts in its latency).
pub(crate) struct HttpPool {
    addr: SocketAddr,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    permits: Semaphore,
}

impl HttpPool {
    pub(crate) fn new(addr: SocketAddr, max: usize) -> Self {
        Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string()).expect("an address is a valid host"),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max),
        }
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one request and reads the whole answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &'static str,
        accept: &'static str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(CONTENT_TYPE, content_type)
            .header(ACCEPT, accept)
            .body(Full::new(body))
            .context("request")?;
        self.exchange(request).await
    }

    /// `GET path` with one extra header when given.
    pub(crate) async fn get(
        &self,
        path: &str,
        header: Option<&(HeaderName, HeaderValue)>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::get(path);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        self.exchange(request.body(Full::default()).context("request")?)
            .await
    }

    /// Sends `request` (with this pool's `host`) on a free connection; reads the whole answer.
    async fn exchange(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let _permit = self.permits.acquire().await.context("pool closed")?;
        let idle = self.idle.lock().expect("pool lock").pop();
        let mut sender = match idle {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        sender.ready().await.context("connection not ready")?;
        request.headers_mut().insert(HOST, self.host.clone());
        let response = sender.send_request(request).await.context("send")?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        self.idle.lock().expect("pool lock").push(sender);
        Ok((status, body))
    }

    /// `POST path` with a JSON body; answers status and JSON.
    pub(crate) async fn json(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let (status, bytes) = self
            .send(
                method,
                path,
                "application/json",
                "application/json",
                body.to_string().into(),
            )
            .await?;
        let value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{path}: answer is not JSON ({status})"))?;
        Ok((status, value))
    }
}

/// gRPC method paths.
pub(crate) const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
pub(crate) const GRPC_INJECT: &str = "/softprobe.v1.InjectService/Inject";

/// Opens a gRPC (HTTP/2) channel.
pub(crate) async fn grpc_channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("gRPC connect {addr}"))
}

/// One request of a scenario, with the answer that counts as correct.
#[derive(Clone)]
pub(crate) enum Call {
    /// `POST path` over the HTTP pool; correct when the status is `expect`.
    Http {
        pool: Arc<HttpPool>,
        path: &'static str,
        content_type: &'static str,
        accept: &'static str,
        body: Bytes,
        expect: StatusCode,
    },
    /// `GET path` over the HTTP pool, with one extra header when given; correct when the
    /// status is `expect`.
    Get {
        pool: Arc<HttpPool>,
        path: &'static str,
        header: Option<(HeaderName, HeaderValue)>,
        expect: StatusCode,
    },
    /// A unary gRPC call with an encoded message; correct when the code is `expect`.
    Grpc {
        channel: Channel,
        path: &'static str,
        body: Bytes,
        expect: tonic::Code,
    },
}

impl Call {
    /// Sends once; `true` when the answer is the expected one.
    pub(crate) async fn run(&self) -> bool {
        match self {
            Call::Http {
                pool,
                path,
                content_type,
                accept,
                body,
                expect,
            } => matches!(
                pool.send(Method::POST, path, content_type, accept, body.clone()).await,
                Ok((status, _)) if status == *expect
            ),
            Call::Get {
                pool,
                path,
                header,
                expect,
            } => matches!(
                pool.get(path, header.as_ref()).await,
                Ok((status, _)) if status == *expect
            ),
            Call::Grpc {
                channel,
                path,
                body,
                expect,
            } => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                if grpc.ready().await.is_err() {
                    return false;
                }
                let path = hyper::http::uri::PathAndQuery::from_static(path);
                let code = match grpc
                    .unary(tonic::Request::new(body.clone()), path, RawCodec)
                    .await
                {
                    Ok(_) => tonic::Code::Ok,
                    Err(status) => status.code(),
                };
                code == *expect
            }
        }
    }
}

/// What one run measured.
pub(crate) struct Sample {
    /// Latency in nanoseconds of the requests scheduled in the measured window.
    pub(crate) latency: Histogram<u64>,
    /// Requests completed in the measured window.
    pub(crate) completed: u64,
    /// Wrong answers or failures over the whole run (warm-up included).
    pub(crate) errors: u64,
    /// Correct answers over the whole run (warm-up included).
    pub(crate) ok: u64,
    /// The measured window.
    pub(crate) window: Duration,
    /// CPU the server threads used over the whole run (warm-up included), the store
    /// process's included.
    pub(crate) server_cpu: Duration,
    /// Of `server_cpu`, what the store process (the store part's `redis-server`) used.
    pub(crate) store_cpu: Duration,
    /// Share of the machine's CPU used by other processes during the run, in percent.
    pub(crate) others_cpu_pct: f64,
}

impl Sample {
    pub(crate) fn per_second(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64()
    }

    pub(crate) fn p(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(quantile))
    }

    /// Server CPU per request over the whole run.
    pub(crate) fn server_cpu_per_request(&self) -> Duration {
        self.server_cpu / (self.ok + self.errors).max(1) as u32
    }

    /// Store process CPU per request over the whole run.
    pub(crate) fn store_cpu_per_request(&self) -> Duration {
        self.store_cpu / (self.ok + self.errors).max(1) as u32
    }

    /// Adds a later window of the same scenario.
    pub(crate) fn merge(&mut self, other: Sample) {
        let _ = self.latency.add(&other.latency);
        self.completed += other.completed;
        self.errors += other.errors;
        self.ok += other.ok;
        self.window += other.window;
        self.server_cpu += other.server_cpu;
        self.store_cpu += other.store_cpu;
        self.others_cpu_pct = self.others_cpu_pct.max(other.others_cpu_pct);
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

#[derive(Default)]
struct Tally {
    completed: u64,
    errors: u64,
    total: u64,
}

struct Recorder {
    latency: Histogram<u64>,
    tally: Tally,
}

/// Open model: request `i` is scheduled at `start + i / rate` by a pacing thread regardless of
/// how earlier requests fare; latency runs from the scheduled time to the end of the answer.
pub(crate) async fn fixed_rate(
    call: Arc<Call>,
    rate: f64,
    warmup: Duration,
    measure: Duration,
) -> Sample {
    let recorder = Arc::new(Mutex::new(Recorder {
        latency: histogram(),
        tally: Tally::default(),
    }));
    let cpu = Cpu::now();
    let start = Instant::now() + Duration::from_millis(2);
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let handle = tokio::runtime::Handle::current();
    let pacer_recorder = recorder.clone();
    // Every request task holds a sender; `recv` answers `None` once the last one is dropped.
    // The tasks are detached rather than joined: a kept `JoinHandle` keeps its task's memory,
    // and the generator then faulted in (and zeroed) a fresh 2 MiB huge page every ~230 ms at
    // 5k req/s, stalling the pacer for 2-4 ms and the p99 of every scenario with it.
    let (running, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            for i in 0u64.. {
                let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
                if scheduled >= end {
                    break;
                }
                let now = Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                let (call, recorder, running) =
                    (call.clone(), pacer_recorder.clone(), running.clone());
                handle.spawn(async move {
                    let ok = call.run().await;
                    let latency = scheduled.elapsed();
                    let mut r = recorder.lock().expect("recorder lock");
                    r.tally.total += 1;
                    if !ok {
                        r.tally.errors += 1;
                    } else if scheduled >= measure_from {
                        r.tally.completed += 1;
                        let nanos = latency.as_nanos().clamp(1_000, 60_000_000_000) as u64;
                        r.latency.saturating_record(nanos);
                    }
                    drop(running);
                });
            }
        })
        .expect("spawn the pacing thread");
    tokio::task::spawn_blocking(move || pacer.join().expect("pacing thread"))
        .await
        .expect("join the pacer");
    let _ = tokio::time::timeout(Duration::from_secs(10), all_done.recv()).await;
    let Recorder { latency, tally } = std::mem::replace(
        &mut *recorder.lock().expect("recorder lock"),
        Recorder {
            latency: histogram(),
            tally: Tally::default(),
        },
    );
    cpu.sample(latency, tally, measure)
}

/// Closed model: `concurrency` workers send back to back; for maximum throughput only (its
/// latency suffers from coordinated omission by construction).
pub(crate) async fn closed_loop(
    call: Arc<Call>,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> Sample {
    let cpu = Cpu::now();
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                let mut tally = Tally::default();
                while Instant::now() < end {
                    let sent = Instant::now();
                    let ok = call.run().await;
                    let done = Instant::now();
                    tally.total += 1;
                    if !ok {
                        tally.errors += 1;
                    } else if sent >= measure_from && done <= end {
                        tally.completed += 1;
                        let nanos = (done - sent).as_nanos().clamp(1_000, 60_000_000_000) as u64;
                        latency.saturating_record(nanos);
                    }
                }
                (latency, tally)
            })
        })
        .collect();
    let mut latency = histogram();
    let mut tally = Tally::default();
    for worker in workers {
        let (h, t) = worker.await.expect("worker");
        latency.add(&h).expect("same histogram bounds");
        tally.completed += t.completed;
        tally.errors += t.errors;
        tally.total += t.total;
    }
    cpu.sample(latency, tally, measure)
}

/// CPU counters at the start of a run.
struct Cpu {
    server: Duration,
    store: Duration,
    others: u64,
    machine: (u64, u64),
}

impl Cpu {
    fn now() -> Self {
        Self {
            server: server_cpu(),
            store: store_cpu(),
            others: others_ticks(),
            machine: machine_ticks(),
        }
    }

    fn sample(self, latency: Histogram<u64>, tally: Tally, window: Duration) -> Sample {
        let store = store_cpu().saturating_sub(self.store);
        let server = server_cpu().saturating_sub(self.server) + store;
        let others = others_ticks().saturating_sub(self.others);
        let (steal, total) = machine_ticks();
        let steal = steal.saturating_sub(self.machine.0);
        let total = total.saturating_sub(self.machine.1).max(1);
        Sample {
            latency,
            completed: tally.completed,
            errors: tally.errors,
            ok: tally.total - tally.errors,
            window,
            server_cpu: server,
            store_cpu: store,
            others_cpu_pct: (others + steal) as f64 * 100.0 / total as f64,
        }
    }
}

/// Linux reports thread and process CPU in clock ticks of 1/100 s (USER_HZ).
const TICK: Duration = Duration::from_millis(10);

/// utime + stime of a `/proc/.../stat` line, in ticks, and the thread's name.
fn stat_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((&stat[open + 1..close], utime + stime))
}

/// CPU used so far by the server runtime's threads (named `bench-server`), the runtime's
/// connection workers and the proxy's workers.
pub(crate) fn server_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let ticks: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            stat_ticks(&stat)
                .filter(|(name, _)| {
                    [
                        crate::SERVER_THREAD,
                        crate::RUNTIME_THREAD,
                        crate::PROXY_THREAD,
                    ]
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
                })
                .map(|(_, t)| t)
        })
        .sum();
    TICK * ticks as u32
}

/// The process of the session store under test (the store part's `redis-server`): its CPU
/// counts as the server's, not as other processes'.
static STORE_PID: OnceLock<u32> = OnceLock::new();

/// Counts `pid`'s CPU as the server's from now on.
pub(crate) fn count_as_store(pid: u32) {
    let _ = STORE_PID.set(pid);
}

/// CPU used so far by the store process, if one runs.
fn store_cpu() -> Duration {
    let ticks = STORE_PID
        .get()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .and_then(|stat| stat_ticks(&stat).map(|(_, ticks)| ticks))
        .unwrap_or(0);
    TICK * ticks as u32
}

/// CPU used so far by every other process on the machine (their own and their reaped
/// children's), in ticks. Counted per process rather than as the machine's busy time less
/// ours, which also holds the kernel's softirq work for our own loopback traffic.
fn others_ticks() -> u64 {
    let me = std::process::id().to_string();
    let store = STORE_PID.get().map(u32::to_string);
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return 0;
    };
    processes
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name != me
                && Some(name.as_ref()) != store.as_deref()
                && name.bytes().all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| {
            // utime, stime, cutime, cstime: fields 14 to 17, the 12th to 15th after the name.
            let after_name = &stat[stat.rfind(')')? + 1..];
            let fields = after_name.split_whitespace().skip(11).take(4);
            Some(fields.filter_map(|v| v.parse::<u64>().ok()).sum::<u64>())
        })
        .sum()
}

/// (steal, total) ticks of the whole machine from `/proc/stat`: steal is time the hypervisor
/// gave to other guests.
fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    (values.get(7).copied().unwrap_or(0), values.iter().sum())
}
