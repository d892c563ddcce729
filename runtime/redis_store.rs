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

use dashmap::DashMap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo as _, Pipeline, RedisFuture, Script, Value};
use softprobe_pipeline::budget::OverBudget;
use softprobe_pipeline::capture::{CaptureLimits, Captured};
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

/// A connection to one Redis server or to a Redis Cluster; cheap to clone (multiplexed).
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// What `--store` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory`: this process's memory, the default.
    Memory,
    /// One server: `redis://[user:password@]host:port[/db]`, `rediss://…` for TLS.
    Single(String),
    /// A cluster, by one or more of its nodes: `redis+cluster://host:port[,host:port…]`
    /// (`rediss+cluster://` for TLS).
    Cluster(Vec<String>),
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let usage = "expected memory, redis://host:port[/db], rediss://…, or redis+cluster://host:port[,host:port…]";
        if url == "memory" {
            return Ok(Self::Memory);
        }
        if let Some((scheme, rest)) = url.split_once("+cluster://") {
            if scheme != "redis" && scheme != "rediss" {
                return Err(format!("unknown store scheme in {url:?}; {usage}"));
            }
            // Credentials written once, before the first node, apply to every node.
            let (credentials, nodes) = match rest.rsplit_once('@') {
                Some((credentials, nodes)) => (format!("{credentials}@"), nodes),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> = nodes
                .split(',')
                .filter(|node| !node.is_empty())
                .map(|node| format!("{scheme}://{credentials}{node}"))
                .collect();
            if nodes.is_empty() {
                return Err(format!("no cluster node in {url:?}; {usage}"));
            }
            return Ok(Self::Cluster(nodes));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            url.into_connection_info()
                .map_err(|err| format!("invalid store URL {url:?}: {err}"))?;
            return Ok(Self::Single(url.to_owned()));
        }
        Err(format!("unknown store {url:?}; {usage}"))
    }
}

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

/// Registers a session in the global set within the live-session limit.
const CREATE_GLOBAL: &str = r"
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1";

/// Creates a session's hash (mode, revision 0, optional policy written at 0).
const CREATE: &str = r"
redis.call('HSET', KEYS[1], 'mode', ARGV[1], 'rev', 0, 'closed', 0)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'policy', ARGV[2], 'policy_rev', 0) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1";

/// Takes ARGV[1] bytes from the global capture budget of ARGV[2], or answers what is in use.
const RESERVE: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return -1 - used end
redis.call('INCRBY', KEYS[1], ARGV[1])
return 0";

/// Adds a replica's inject counts (ARGV, in `STAT_FIELDS` order) to a session that still
/// exists: a closed session's hash must not come back as a hash of counters.
const COUNT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local fields = {'injectedSpans', 'extractedSpans', 'strictMisses', 'injectMisses', 'injectedErrors', 'droppedSpans'}
for i, field in ipairs(fields) do
  if ARGV[i] ~= '0' then redis.call('HINCRBY', KEYS[1], field, ARGV[i]) end
end
return 1";

/// Keeps every key of a session alive for ARGV[1] ms more.
const KEEP_ALIVE: &str = r"
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[1]) end
return 1";

/// Claims a `consume: once` rule; its key expires with the session's.
const CLAIM: &str = r"
local claimed = redis.call('HSETNX', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return claimed";

/// Replaces one document: the revision goes up by exactly one, whichever replica writes.
const REPLACE: &str = r"
if redis.call('HGET', KEYS[1], 'closed') ~= '0' then return -1 end
local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. '_rev', rev)
if KEYS[2] then redis.call('DEL', KEYS[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return rev";

/// The head and the documents written after the caller's revisions of them, in one read.
const FETCH: &str = r"
local h = redis.call('HMGET', KEYS[1], 'mode', 'rev', 'closed', 'case_rev', 'rules_rev', 'policy_rev', 'fixtures_rev')
if not h[1] then return false end
local out = {h[1], h[2], h[3]}
local kinds = {'case', 'rules', 'policy', 'fixtures'}
for i, kind in ipairs(kinds) do
  local rev = h[3 + i]
  if rev and rev ~= ARGV[i] then
    table.insert(out, kind)
    table.insert(out, rev)
    table.insert(out, redis.call('HGET', KEYS[1], kind))
  end
end
return out";

/// Appends one capture document within the session's limits, unless a close sealed it.
const APPEND: &str = r"
local h = redis.call('HMGET', KEYS[1], 'closed', 'cap_spans', 'cap_bytes')
if not h[1] then return 0 end
if h[1] ~= '0' then return 0 end
local n = tonumber(ARGV[2])
if tonumber(h[2] or '0') + n > tonumber(ARGV[3]) or tonumber(h[3] or '0') + #ARGV[1] > tonumber(ARGV[4]) then
  redis.call('HINCRBY', KEYS[1], 'droppedSpans', n)
  return -1
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'cap_spans', n)
redis.call('HINCRBY', KEYS[1], 'cap_bytes', #ARGV[1])
redis.call('HINCRBY', KEYS[1], 'extractedSpans', n)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1";

/// Seals a session for its close and returns what its case is written from. A seal older
/// than ARGV[2] ms (its closer died) may be taken over.
const SEAL: &str = r"
local h = redis.call('HMGET', KEYS[1], 'closed', 'cap_spans', 'cap_bytes', 'droppedSpans')
if not h[1] then return -1 end
if h[1] ~= '0' and tonumber(ARGV[1]) - tonumber(h[1]) < tonumber(ARGV[2]) then return -2 end
redis.call('HSET', KEYS[1], 'closed', ARGV[1])
return {h[2] or '0', h[3] or '0', h[4] or '0', redis.call('LRANGE', KEYS[2], 0, -1)}";

/// Stores a written case and removes the session; only the closer that sealed it may.
const FINISH: &str = r"
if redis.call('HGET', KEYS[1], 'closed') ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[5], ARGV[2], 'PX', ARGV[3]) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6])
return 1";

/// Appends misses (JSON) and keeps the last ARGV[1], counting the ones let go.
const MISSES: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
local over = redis.call('LLEN', KEYS[2]) - tonumber(ARGV[1])
if over > 0 then
  redis.call('LTRIM', KEYS[2], over, -1)
  redis.call('HINCRBY', KEYS[1], 'missesDropped', over)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1";

/// Reopens a session whose case could not be written.
const UNSEAL: &str = r"
if redis.call('HGET', KEYS[1], 'closed') == ARGV[1] then redis.call('HSET', KEYS[1], 'closed', 0) end
return 1";

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

    /// Appends one capture document of `spans` spans; acknowledged only once Redis holds it.
    pub async fn append(
        &self,
        id: &str,
        encoded: &[u8],
        spans: usize,
    ) -> Result<Appended, StoreError> {
        let result: i64 = self
            .script(
                APPEND,
                &[&key(id, "s"), &key(id, "cap")],
                &[
                    encoded,
                    spans.to_string().as_bytes(),
                    self.capture.max_spans.to_string().as_bytes(),
                    self.capture.max_bytes.to_string().as_bytes(),
                    &self.ttl_ms(),
                ],
            )
            .await?;
        Ok(match result {
            1 => Appended::Kept,
            -1 => Appended::Full,
            _ => Appended::Gone,
        })
    }

    /// Holds `bytes` against the capture budget shared by every replica, for an export to be
    /// appended whole or refused whole.
    pub async fn reserve(&self, bytes: usize) -> Result<Result<(), OverBudget>, StoreError> {
        let limit = self.max_capture_bytes_total;
        let answer: i64 = self
            .script(
                RESERVE,
                &[CAPTURE_BYTES],
                &[bytes.to_string().as_bytes(), limit.to_string().as_bytes()],
            )
            .await?;
        Ok(match answer {
            0 => Ok(()),
            used => Err(OverBudget {
                what: "capture buffers",
                flag: "--max-capture-bytes-total",
                limit,
                used: usize::try_from(-1 - used).unwrap_or(0),
                wanted: bytes,
            }),
        })
    }

    /// Gives bytes back to the shared capture budget (refused appends, closed captures).
    pub async fn release(&self, bytes: usize) -> Result<(), StoreError> {
        if bytes > 0 {
            let _: i64 = self
                .run(redis::cmd("DECRBY").arg(CAPTURE_BYTES).arg(bytes))
                .await?;
        }
        Ok(())
    }

    /// Records why a session's case could not be written, for listings on any replica (the
    /// field goes with the session once a retry writes it).
    pub async fn set_write_error(&self, id: &str, error: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key(id, "s")).arg("write_error").arg(error);
        let _: i64 = self.run(&cmd).await?;
        Ok(())
    }

    /// Why the session's case could not be written, if it could not.
    pub async fn write_error(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.run(redis::cmd("HGET").arg(key(id, "s")).arg("write_error"))
            .await
    }

    /// The capture so far, without sealing (a live download); `None` when unknown.
    pub async fn peek(&self, id: &str) -> Result<Option<Captured>, StoreError> {
        let hash = key(id, "s");
        let (closed, spans, bytes, dropped): (
            Option<String>,
            Option<usize>,
            Option<usize>,
            Option<u64>,
        ) = self
            .run(
                redis::cmd("HMGET")
                    .arg(&hash)
                    .arg("closed")
                    .arg("cap_spans")
                    .arg("cap_bytes")
                    .arg("droppedSpans"),
            )
            .await?;
        if closed.is_none() {
            return Ok(None);
        }
        let encoded: Vec<Vec<u8>> = self
            .run(redis::cmd("LRANGE").arg(key(id, "cap")).arg(0).arg(-1))
            .await?;
        Ok(Some(Captured {
            encoded: encoded.into_iter().map(bytes::Bytes::from).collect(),
            spans: spans.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
            dropped_spans: dropped.unwrap_or(0),
        }))
    }

    /// Seals a session for its close: from now on its appends are refused. Returns the seal
    /// (to finish or undo the close with) and the capture; `Ok(None)` when the session is
    /// unknown or another close holds it.
    pub async fn seal(
        &self,
        id: &str,
        stale_after: Duration,
    ) -> Result<Option<(String, Captured)>, StoreError> {
        let seal = now_ms().to_string();
        let reply: Value = self
            .script(
                SEAL,
                &[&key(id, "s"), &key(id, "cap")],
                &[
                    seal.as_bytes(),
                    (stale_after.as_millis() as u64).to_string().as_bytes(),
                ],
            )
            .await?;
        let Value::Array(parts) = reply else {
            return Ok(None);
        };
        let [spans, bytes, dropped, encoded] = parts.as_slice() else {
            return Err(unavailable("unexpected reply to the seal"));
        };
        let number = |v: &Value| -> u64 {
            redis::from_redis_value::<String>(v.clone())
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let encoded: Vec<Vec<u8>> =
            redis::from_redis_value(encoded.clone()).map_err(unavailable)?;
        Ok(Some((
            seal,
            Captured {
                encoded: encoded.into_iter().map(bytes::Bytes::from).collect(),
                spans: number(spans) as usize,
                bytes: number(bytes) as usize,
                dropped_spans: number(dropped),
            },
        )))
    }

    /// Finishes a close sealed with `seal`: keeps the written case (if any) for any replica
    /// to serve, removes the session and gives its `captured_bytes` back to the budget.
    pub async fn finish(
        &self,
        id: &str,
        seal: &str,
        case: Option<&[u8]>,
        captured_bytes: usize,
    ) -> Result<(), StoreError> {
        let keys = [
            key(id, "s"),
            key(id, "cap"),
            key(id, "fired:case"),
            key(id, "fired:session"),
            key(id, "case"),
            key(id, "misses"),
        ];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let _: i64 = self
            .script(
                FINISH,
                &keys,
                &[
                    seal.as_bytes(),
                    case.unwrap_or_default(),
                    (self.case_ttl.as_millis() as u64).to_string().as_bytes(),
                ],
            )
            .await?;
        let _: i64 = self.run(redis::cmd("ZREM").arg(SESSIONS).arg(id)).await?;
        self.release(captured_bytes).await
    }

    /// Reopens a session whose case could not be written.
    pub async fn unseal(&self, id: &str, seal: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .script(UNSEAL, &[&key(id, "s")], &[seal.as_bytes()])
            .await?;
        Ok(())
    }

    /// A closed capture's case, while it is kept.
    pub async fn written_case(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(redis::cmd("GET").arg(key(id, "case"))).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_or_say_what_is_expected() {
        assert_eq!(
            "redis://127.0.0.1:6379/2".parse::<StoreUrl>().unwrap(),
            StoreUrl::Single("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(
            "redis+cluster://:pw@a:1,b:2".parse::<StoreUrl>().unwrap(),
            StoreUrl::Cluster(vec!["redis://:pw@a:1".into(), "redis://:pw@b:2".into()])
        );
        assert_eq!("memory".parse::<StoreUrl>().unwrap(), StoreUrl::Memory);
        for bad in [
            "Memory",
            "http://x",
            "redis+cluster://",
            "mongo+cluster://a:1",
        ] {
            let err = bad.parse::<StoreUrl>().unwrap_err();
            assert!(err.contains("redis://"), "{bad}: {err}");
        }
    }
}
