//! The Lua scripts that make each multi-key change of a session one atomic step in Redis.

/// Registers a session in the global set within the live-session limit.
pub(super) const CREATE_GLOBAL: &str = r"
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1";

/// Creates a session's hash (mode, revision 0, optional policy written at 0).
pub(super) const CREATE: &str = r"
redis.call('HSET', KEYS[1], 'mode', ARGV[1], 'rev', 0, 'closed', 0)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'policy', ARGV[2], 'policy_rev', 0) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1";

/// Takes ARGV[1] bytes from the global capture budget of ARGV[2], or answers what is in use.
pub(super) const RESERVE: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return -1 - used end
redis.call('INCRBY', KEYS[1], ARGV[1])
return 0";

/// Adds a replica's inject counts (ARGV, in `STAT_FIELDS` order) to a session that still
/// exists: a closed session's hash must not come back as a hash of counters.
pub(super) const COUNT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local fields = {'injectedSpans', 'extractedSpans', 'strictMisses', 'injectMisses', 'injectedErrors', 'droppedSpans'}
for i, field in ipairs(fields) do
  if ARGV[i] ~= '0' then redis.call('HINCRBY', KEYS[1], field, ARGV[i]) end
end
return 1";

/// Keeps every key of a session alive for ARGV[1] ms more.
pub(super) const KEEP_ALIVE: &str = r"
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[1]) end
return 1";

/// Claims a `consume: once` rule; its key expires with the session's.
pub(super) const CLAIM: &str = r"
local claimed = redis.call('HSETNX', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return claimed";

/// Replaces one document: the revision goes up by exactly one, whichever replica writes.
pub(super) const REPLACE: &str = r"
if redis.call('HGET', KEYS[1], 'closed') ~= '0' then return -1 end
local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. '_rev', rev)
if KEYS[2] then redis.call('DEL', KEYS[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return rev";

/// The head and the documents written after the caller's revisions of them, in one read.
pub(super) const FETCH: &str = r"
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
pub(super) const APPEND: &str = r"
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
pub(super) const SEAL: &str = r"
local h = redis.call('HMGET', KEYS[1], 'closed', 'cap_spans', 'cap_bytes', 'droppedSpans')
if not h[1] then return -1 end
if h[1] ~= '0' and tonumber(ARGV[1]) - tonumber(h[1]) < tonumber(ARGV[2]) then return -2 end
redis.call('HSET', KEYS[1], 'closed', ARGV[1])
return {h[2] or '0', h[3] or '0', h[4] or '0', redis.call('LRANGE', KEYS[2], 0, -1)}";

/// Stores a written case and removes the session; only the closer that sealed it may.
pub(super) const FINISH: &str = r"
if redis.call('HGET', KEYS[1], 'closed') ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[5], ARGV[2], 'PX', ARGV[3]) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6])
return 1";

/// Appends misses (JSON) and keeps the last ARGV[1], counting the ones let go.
pub(super) const MISSES: &str = r"
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
pub(super) const UNSEAL: &str = r"
if redis.call('HGET', KEYS[1], 'closed') == ARGV[1] then redis.call('HSET', KEYS[1], 'closed', 0) end
return 1";
