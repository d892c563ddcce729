//! The shared session store on Redis (`--store redis://…`): what several runtimes behind one
//! load balancer must agree on lives here, so any replica serves any request of any session.
//!
//! Every key of a session shares the hash tag `{<session id>}`, so each script touches one
//! Redis Cluster slot. Per session:
//! - `softprobe:{id}:s`, a hash: `mode`, `rev` (gap-free: only scripts bump it), `closed` (0,
//!   or the time a close sealed it), each document with the revision it was written at
//!   (`rules`, `rules_rev`, …), the capture's counters and the session's stats;
//! - `softprobe:{id}:cap`, a list: the capture's trace documents (OTLP protobuf), in order;
//! - `softprobe:{id}:fired:case` / `…:fired:session`: the `consume: once` rules used up;
//! - `softprobe:{id}:misses`: the last misses (JSON), as `…/misses` lists them;
//! - `softprobe:{id}:case`: a closed capture's case, kept for `--store-case-ttl`.
//!
//! and one global sorted set, `softprobe:sessions` (id → last use, ms), for the live-session
//! limit, listings and idle expiry. Every key of a session expires after twice the idle
//! timeout without use, so a store outlives no abandoned session for long.

mod capture;
mod connection;
mod scripts;

pub use connection::StoreUrl;

use connection::Connection;
use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, IntoConnectionInfo as _, Script, Value};
use scripts::{CLAIM, COUNT, CREATE, CREATE_GLOBAL, FETCH, KEEP_ALIVE, MISSES, REPLACE};
use softprobe_pipeline::capture::CaptureLimits;
use softprobe_pipeline::misses::{MAX_MISSES, Miss};
use softprobe_pipeline::mode::Mode;
use softprobe_pipeline::store::{DocumentKind, StoreError, StoreLimits};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a Redis call may take before the request is answered `store_unavailable`.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// The global set of live sessions.
const SESSIONS: &str = "softprobe:sessions";
/// Bytes of every open capture, across replicas (`--max-capture-bytes-total`).
const CAPTURE_BYTES: &str = "softprobe:capture-bytes";

/// A session's head: what every inject checks its cached copy against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The session's mode.
    pub mode: Mode,
    /// Its revision.
    pub revision: u64,
    /// Whether a close has sealed it.
    pub closed: bool,
}

/// A session's documents written after a cached copy's.
#[derive(Debug)]
pub struct Fetched {
    /// The head they belong to.
    pub head: Head,
    /// (kind, revision written at, bytes as posted).
    pub documents: Vec<(DocumentKind, u64, bytes::Bytes)>,
}

/// Why an append was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Kept; acknowledged.
    Kept,
    /// The session is unknown, or sealed by a close.
    Gone,
    /// A capture limit is reached; the spans are counted as dropped.
    Full,
}

/// A session's counters, as `…/stats` reports them; inject outcomes count into the first,
/// third, fourth and fifth.
pub const STAT_FIELDS: [&str; 6] = [
    "injectedSpans",
    "extractedSpans",
    "strictMisses",
    "injectMisses",
    "injectedErrors",
    "droppedSpans",
];

/// The Redis store.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    /// Keys of a session expire after this long unused: twice the idle timeout.
    key_ttl: Duration,
    /// How long a closed capture's case stays fetchable.
    case_ttl: Duration,
    capture: CaptureLimits,
    max_sessions: usize,
    max_capture_bytes_total: usize,
    /// Inject outcomes counted here and not yet added in Redis, by session.
    unflushed: Arc<DashMap<String, [u64; 6]>>,
}

/// How often a replica adds its inject counts to Redis: one command per session per period,
/// instead of one per inject.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

fn key(id: &str, suffix: &str) -> String {
    format!("softprobe:{{{id}}}:{suffix}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

impl RedisStore {
    /// Connects to `url` (a password in `SOFTPROBE_STORE_PASSWORD` applies when the URL has
    /// none). Fails when the store cannot be reached now.
    pub async fn connect(
        url: &StoreUrl,
        limits: &StoreLimits,
        case_ttl: Duration,
    ) -> Result<Self, String> {
        let password = std::env::var("SOFTPROBE_STORE_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty());
        let connection = match url {
            StoreUrl::Memory => return Err("the memory store is not Redis".to_owned()),
            StoreUrl::Single(url) => {
                let mut info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| e.to_string())?;
                if info.redis_settings().password().is_none()
                    && let Some(password) = &password
                {
                    let settings = info.redis_settings().clone().set_password(password);
                    info = info.set_redis_settings(settings);
                }
                let client = redis::Client::open(info).map_err(|e| e.to_string())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(STORE_TIMEOUT))
                    .set_response_timeout(Some(STORE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let manager = tokio::time::timeout(
                    STORE_TIMEOUT,
                    ConnectionManager::new_with_config(client, config),
                )
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
                Connection::Single(manager)
            }
            StoreUrl::Cluster(nodes) => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(STORE_TIMEOUT)
                    .response_timeout(STORE_TIMEOUT)
                    .retries(1);
                if let Some(password) = &password {
                    builder = builder.password(password);
                }
                let client = builder.build().map_err(|e| e.to_string())?;
                let connection = tokio::time::timeout(STORE_TIMEOUT, client.get_async_connection())
                    .await
                    .map_err(|_| "timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
                Connection::Cluster(connection)
            }
        };
        let store = Self {
            connection,
            key_ttl: limits
                .idle_timeout
                .saturating_mul(2)
                .max(Duration::from_secs(60)),
            case_ttl,
            capture: limits.capture,
            max_sessions: limits.max_sessions,
            max_capture_bytes_total: limits.max_capture_bytes_total,
            unflushed: Arc::default(),
        };
        store.ping().await.map_err(|err| err.to_string())?;
        let flushing = store.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(FLUSH_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                flushing.flush().await;
            }
        });
        Ok(store)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        tokio::time::timeout(STORE_TIMEOUT, cmd.query_async(&mut connection))
            .await
            .map_err(|_| unavailable("no answer within 2 s"))?
            .map_err(unavailable)
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &str,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, StoreError> {
        let script = Script::new(script);
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.connection.clone();
        tokio::time::timeout(STORE_TIMEOUT, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| unavailable("no answer within 2 s"))?
            .map_err(unavailable)
    }

    /// Whether the store answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.run(&redis::cmd("PING")).await?;
        Ok(())
    }

    fn ttl_ms(&self) -> Vec<u8> {
        (self.key_ttl.as_millis() as u64).to_string().into_bytes()
    }

    /// Registers a new session within the global live-session limit.
    pub async fn create(
        &self,
        id: &str,
        mode: Mode,
        policy: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let admitted: i64 = self
            .script(
                CREATE_GLOBAL,
                &[SESSIONS],
                &[
                    id.as_bytes(),
                    now_ms().to_string().as_bytes(),
                    self.max_sessions.to_string().as_bytes(),
                ],
            )
            .await?;
        if admitted == 0 {
            return Err(StoreError::TooManySessions {
                limit: self.max_sessions,
            });
        }
        let created = self
            .script::<i64>(
                CREATE,
                &[&key(id, "s")],
                &[
                    mode.as_str().as_bytes(),
                    policy.unwrap_or_default(),
                    &self.ttl_ms(),
                ],
            )
            .await;
        if let Err(err) = created {
            // Best effort: the sweep removes it otherwise.
            let _ = self
                .run::<i64>(redis::cmd("ZREM").arg(SESSIONS).arg(id))
                .await;
            return Err(err);
        }
        Ok(())
    }

    /// The session's head; `None` when it is unknown.
    pub async fn head(&self, id: &str) -> Result<Option<Head>, StoreError> {
        let (mode, revision, closed): (Option<String>, Option<u64>, Option<String>) = self
            .run(
                redis::cmd("HMGET")
                    .arg(key(id, "s"))
                    .arg("mode")
                    .arg("rev")
                    .arg("closed"),
            )
            .await?;
        Ok(head(mode, revision, closed))
    }

    /// The head and the documents written after `cached` (each kind's revision in the cached
    /// copy); `None` when the session is unknown.
    pub async fn fetch(
        &self,
        id: &str,
        cached: [Option<u64>; 4],
    ) -> Result<Option<Fetched>, StoreError> {
        let revisions: Vec<Vec<u8>> = cached
            .iter()
            .map(|r| r.map_or_else(|| b"none".to_vec(), |r| r.to_string().into_bytes()))
            .collect();
        let args: Vec<&[u8]> = revisions.iter().map(Vec::as_slice).collect();
        let reply: Option<Vec<Value>> = self.script(FETCH, &[&key(id, "s")], &args).await?;
        let Some(reply) = reply else {
            return Ok(None);
        };
        let text =
            |value: &Value| -> Option<String> { redis::from_redis_value(value.clone()).ok() };
        let mode = reply.first().and_then(text);
        let revision = reply.get(1).and_then(text).and_then(|r| r.parse().ok());
        let closed = reply.get(2).and_then(text);
        let Some(head) = head(mode, revision, closed) else {
            return Ok(None);
        };
        let mut documents = Vec::new();
        for entry in reply[3..].chunks(3) {
            let [kind, rev, raw] = entry else { break };
            let kind = text(kind).unwrap_or_default();
            let Some(kind) = DocumentKind::ALL.into_iter().find(|k| k.as_str() == kind) else {
                continue;
            };
            let rev = text(rev).and_then(|r| r.parse().ok()).unwrap_or(0);
            let raw: Vec<u8> = redis::from_redis_value(raw.clone()).map_err(unavailable)?;
            documents.push((kind, rev, bytes::Bytes::from(raw)));
        }
        Ok(Some(Fetched { head, documents }))
    }

    /// Replaces one document; returns the new revision, `None` when the session is unknown or
    /// closing.
    pub async fn replace(
        &self,
        id: &str,
        kind: DocumentKind,
        raw: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        let fired = match kind {
            DocumentKind::Case => Some(key(id, "fired:case")),
            DocumentKind::Rules => Some(key(id, "fired:session")),
            DocumentKind::Policy | DocumentKind::Fixtures => None,
        };
        let hash = key(id, "s");
        let mut keys = vec![hash.as_str()];
        keys.extend(fired.as_deref());
        let revision: i64 = self
            .script(
                REPLACE,
                &keys,
                &[kind.as_str().as_bytes(), raw, &self.ttl_ms()],
            )
            .await?;
        Ok(u64::try_from(revision).ok())
    }

    /// Claims a `consume: once` rule for this answer; false when another request (on any
    /// replica) used it up first.
    pub async fn claim(&self, id: &str, layer: &str, position: usize) -> Result<bool, StoreError> {
        let fired = key(id, &format!("fired:{layer}"));
        let claimed: i64 = self
            .script(
                CLAIM,
                &[&fired],
                &[position.to_string().as_bytes(), &self.ttl_ms()],
            )
            .await?;
        Ok(claimed == 1)
    }

    /// Counts an inject outcome in the session's stats ([`STAT_FIELDS`] index `field`): here
    /// at once, in Redis within [`FLUSH_EVERY`].
    pub fn count(&self, id: &str, field: usize) {
        self.unflushed.entry(id.to_owned()).or_insert([0; 6])[field] += 1;
    }

    /// Adds the counts of this replica to Redis. Counts that fail to go are kept for the next
    /// flush; those of a session that is gone are dropped with it.
    pub async fn flush(&self) {
        let ids: Vec<String> = self.unflushed.iter().map(|e| e.key().clone()).collect();
        for id in ids {
            let Some((_, counts)) = self.unflushed.remove(&id) else {
                continue;
            };
            let numbers: Vec<String> = counts.iter().map(u64::to_string).collect();
            let args: Vec<&[u8]> = numbers.iter().map(|n| n.as_bytes()).collect();
            let sent: Result<i64, StoreError> = self.script(COUNT, &[&key(&id, "s")], &args).await;
            if sent.is_err() {
                let mut kept = self.unflushed.entry(id).or_insert([0; 6]);
                for (slot, n) in kept.iter_mut().zip(counts) {
                    *slot += n;
                }
            }
        }
    }

    /// Adds misses (as JSON) to the session's, keeping the last [`MAX_MISSES`].
    pub async fn add_misses(&self, id: &str, misses: &[Miss]) -> Result<(), StoreError> {
        let max = MAX_MISSES.to_string();
        let ttl = self.ttl_ms();
        let encoded: Vec<Vec<u8>> = misses
            .iter()
            .filter_map(|miss| serde_json::to_vec(miss).ok())
            .collect();
        let mut args: Vec<&[u8]> = vec![max.as_bytes(), &ttl];
        args.extend(encoded.iter().map(Vec::as_slice));
        let _: i64 = self
            .script(MISSES, &[&key(id, "s"), &key(id, "misses")], &args)
            .await?;
        Ok(())
    }

    /// The session's kept misses (JSON, oldest first) and how many older ones were let go.
    pub async fn misses(&self, id: &str) -> Result<(Vec<serde_json::Value>, u64), StoreError> {
        let kept: Vec<Vec<u8>> = self
            .run(redis::cmd("LRANGE").arg(key(id, "misses")).arg(0).arg(-1))
            .await?;
        let dropped: Option<u64> = self
            .run(redis::cmd("HGET").arg(key(id, "s")).arg("missesDropped"))
            .await?;
        let kept = kept
            .iter()
            .filter_map(|miss| serde_json::from_slice(miss).ok())
            .collect();
        Ok((kept, dropped.unwrap_or(0)))
    }

    /// Marks a session used now (for idle expiry) and keeps its keys alive.
    pub async fn touch(&self, id: &str) -> Result<(), StoreError> {
        let ttl = self.key_ttl.as_millis() as u64;
        let _: i64 = self
            .run(
                redis::cmd("ZADD")
                    .arg(SESSIONS)
                    .arg("XX")
                    .arg(now_ms())
                    .arg(id),
            )
            .await?;
        let keys = ["s", "cap", "misses", "fired:case", "fired:session"].map(|k| key(id, k));
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let _: i64 = self
            .script(KEEP_ALIVE, &keys, &[ttl.to_string().as_bytes()])
            .await?;
        Ok(())
    }

    /// The session's counters, in [`STAT_FIELDS`] order; `None` when it is unknown.
    pub async fn stats(&self, id: &str) -> Result<Option<[u64; 6]>, StoreError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(key(id, "s")).arg("mode").arg(&STAT_FIELDS[..]);
        let values: Vec<Option<u64>> = {
            let reply: Vec<Option<String>> = self.run(&cmd).await?;
            if reply.first().is_none_or(Option::is_none) {
                return Ok(None);
            }
            reply[1..]
                .iter()
                .map(|v| v.as_deref().and_then(|v| v.parse().ok()))
                .collect()
        };
        let mut stats = self.unflushed.get(id).map_or([0; 6], |counts| *counts);
        for (slot, value) in stats.iter_mut().zip(values) {
            *slot += value.unwrap_or(0);
        }
        Ok(Some(stats))
    }

    /// Every live session's id.
    pub async fn ids(&self) -> Result<Vec<String>, StoreError> {
        self.run(redis::cmd("ZRANGE").arg(SESSIONS).arg(0).arg(-1))
            .await
    }

    /// Sessions unused for longer than `idle`.
    pub async fn idle(&self, idle: Duration) -> Result<Vec<String>, StoreError> {
        let before = now_ms().saturating_sub(idle.as_millis() as u64);
        self.run(
            redis::cmd("ZRANGEBYSCORE")
                .arg(SESSIONS)
                .arg("-inf")
                .arg(before),
        )
        .await
    }

    /// Forgets an id whose keys are gone (expired while no replica ran).
    pub async fn forget(&self, id: &str) -> Result<(), StoreError> {
        let _: i64 = self.run(redis::cmd("ZREM").arg(SESSIONS).arg(id)).await?;
        Ok(())
    }
}

fn head(mode: Option<String>, revision: Option<u64>, closed: Option<String>) -> Option<Head> {
    let mode = mode?;
    let mode = Mode::ALL.into_iter().find(|m| m.as_str() == mode)?;
    Some(Head {
        mode,
        revision: revision.unwrap_or(0),
        closed: closed.is_none_or(|c| c != "0"),
    })
}
