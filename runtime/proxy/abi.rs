//! The proxy-wasm ABI 0.2.1 as seen from the host: the header-map wire format,
//! and the host functions a filter imports, bound to a wasmtime `Linker`.

use super::HOP_BY_HOP;
use super::codes::status;
use super::head::Head;
use super::host::{Effect, HostState, PendingCall};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, ExternType, Linker, Module, Val};

/// Serializes header pairs the proxy-wasm way: count, then (key length, value length) pairs,
/// then each key and value followed by a NUL, all lengths little-endian u32.
pub(super) fn encode_map<'a, I>(pairs: impl Fn() -> I) -> Vec<u8>
where
    I: Iterator<Item = (&'a str, &'a [u8])>,
{
    let (count, bytes) = pairs().fold((0usize, 4usize), |(count, bytes), (key, value)| {
        (count + 1, bytes + 8 + key.len() + value.len() + 2)
    });
    let mut out = Vec::with_capacity(bytes);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (key, value) in pairs() {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs() {
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Parses the proxy-wasm header-map wire format into borrowed name and value bytes.
pub(super) fn decode_map(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(sizes.len());
    for (key_len, value_len) in sizes {
        let key = bytes.get(at..at.checked_add(key_len)?)?;
        at += key_len + 1;
        let value = bytes.get(at..at.checked_add(value_len)?)?;
        at += value_len + 1;
        pairs.push((key, value));
    }
    Some(pairs)
}

/// A local reply's headers: pairs HTTP cannot carry are left out rather than failing the
/// reply, as are pseudo-headers and hop-by-hop ones (they describe one connection).
fn reply_headers(pairs: &[(&[u8], &[u8])]) -> http::HeaderMap {
    let mut headers = http::HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) && !HOP_BY_HOP.contains(&name)
        {
            headers.append(name, value);
        }
    }
    headers
}

/// The `len` bytes at `ptr` in guest memory.
fn guest_bytes(memory: &[u8], ptr: i32, len: i32) -> Option<&[u8]> {
    let (start, len) = (usize::try_from(ptr).ok()?, usize::try_from(len).ok()?);
    memory.get(start..start.checked_add(len)?)
}

/// Copies `len` bytes at `ptr` out of guest memory.
fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let memory = caller.data().memory?;
    guest_bytes(memory.data(&caller), ptr, len).map(<[u8]>::to_vec)
}

fn read_string(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Option<String> {
    read(caller, ptr, len).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> Option<()> {
    let memory = caller.data().memory?;
    memory.write(caller, usize::try_from(ptr).ok()?, bytes).ok()
}

/// Hands `bytes` to the guest: allocates with its `proxy_on_memory_allocate`, copies, and
/// writes the pointer and size to the two out-parameters.
fn give(caller: &mut Caller<'_, HostState>, bytes: &[u8], out_ptr: i32, out_size: i32) -> i32 {
    let allocated = (|| {
        let allocate = caller.data().allocate.clone()?;
        let size = i32::try_from(bytes.len()).ok()?;
        let ptr = allocate.call(&mut *caller, size.max(1)).ok()?;
        write(caller, ptr, bytes)?;
        write(caller, out_ptr, &ptr.to_le_bytes())?;
        write(caller, out_size, &size.to_le_bytes())
    })();
    if allocated.is_some() {
        status::OK
    } else {
        status::INTERNAL_FAILURE
    }
}

/// Whether a filter log line at this proxy-wasm level would be written: when it would not,
/// the host does not even copy it out of the guest.
fn log_enabled(level: i32) -> bool {
    use tracing::{Level, enabled};
    const TARGET: &str = "softprobe::filter";
    match level {
        0 => enabled!(target: TARGET, Level::TRACE),
        1 => enabled!(target: TARGET, Level::DEBUG),
        2 => enabled!(target: TARGET, Level::INFO),
        3 => enabled!(target: TARGET, Level::WARN),
        _ => enabled!(target: TARGET, Level::ERROR),
    }
}

/// The lowest proxy-wasm level the host writes, for `proxy_get_log_level`: a filter that asks
/// skips formatting lines nobody reads. Never above error, so refusals still arrive.
fn log_level() -> i32 {
    (0..4).find(|level| log_enabled(*level)).unwrap_or(4)
}

/// Binds every host function the filter uses. Any other `env` import the module declares
/// answers `UNIMPLEMENTED` (properties: `NOT_FOUND`); other unknown imports trap if called.
pub(super) fn link(linker: &mut Linker<HostState>, module: &Module) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    for import in module.imports() {
        if let ("env", ExternType::Func(ty)) = (import.module(), import.ty()) {
            let answer = if import.name().contains("property") {
                status::NOT_FOUND
            } else {
                status::UNIMPLEMENTED
            };
            linker.func_new(
                "env",
                import.name(),
                ty,
                move |_caller, _params, results| {
                    for result in results.iter_mut() {
                        *result = match result {
                            Val::I64(_) => Val::I64(0),
                            _ => Val::I32(answer),
                        };
                    }
                    Ok(())
                },
            )?;
        }
    }
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
            // Refusals at start-up are kept whatever the level, to explain them.
            if log_enabled(level) || (level >= 4 && c.data().configure_errors.is_some()) {
                let message = read_string(&mut c, ptr, len).unwrap_or_default();
                c.data_mut().log(level, &message);
            }
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: Caller<'_, HostState>, out: i32| {
            write(&mut c, out, &log_level().to_le_bytes())
                .map_or(status::INTERNAL_FAILURE, |()| status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_, HostState>, out: i32| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            write(&mut c, out, &now.to_le_bytes()).map_or(status::INTERNAL_FAILURE, |()| status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Caller<'_, HostState>, context: i32| {
            c.data_mut().effective = context as u32;
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, HostState>,
         kind: i32,
         start: i32,
         max: i32,
         out_ptr: i32,
         out_size: i32| {
            let Some(whole) = c.data().buffer(kind) else {
                return status::NOT_FOUND;
            };
            let start = usize::try_from(start).unwrap_or(0).min(whole.len());
            let end = start
                .saturating_add(usize::try_from(max).unwrap_or(0))
                .min(whole.len());
            let slice = whole[start..end].to_vec();
            give(&mut c, &slice, out_ptr, out_size)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Caller<'_, HostState>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| {
            let Some(bytes) = read(&mut c, ptr, len) else {
                return status::BAD_ARGUMENT;
            };
            c.data_mut()
                .set_buffer(kind, start as usize, size as usize, &bytes)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, HostState>, kind: i32, out_ptr: i32, out_size: i32| {
            let Some(head) = c.data().headers(kind) else {
                return status::NOT_FOUND;
            };
            let encoded = encode_map(|| head.pairs());
            give(&mut c, &encoded, out_ptr, out_size)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_, HostState>, kind: i32, ptr: i32, len: i32| {
            let Some(bytes) = read(&mut c, ptr, len) else {
                return status::BAD_ARGUMENT;
            };
            let Some(pairs) = decode_map(&bytes) else {
                return status::BAD_ARGUMENT;
            };
            match c.data_mut().headers_mut(kind) {
                Some(head) => head
                    .set_all(&pairs)
                    .map_or(status::BAD_ARGUMENT, |()| status::OK),
                None => status::NOT_FOUND,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, HostState>,
         kind: i32,
         key_ptr: i32,
         key_len: i32,
         out_ptr: i32,
         out_size: i32| {
            let Some(memory) = c.data().memory else {
                return status::INTERNAL_FAILURE;
            };
            // The key is read in place: this runs a few times per request.
            let Some(key) = guest_bytes(memory.data(&c), key_ptr, key_len) else {
                return status::BAD_ARGUMENT;
            };
            let value = c
                .data()
                .headers(kind)
                .and_then(|head| head.value(&String::from_utf8_lossy(key)))
                .map(<[u8]>::to_vec);
            match value {
                Some(value) => give(&mut c, &value, out_ptr, out_size),
                None => status::NOT_FOUND,
            }
        },
    )?;
    for (name, replace) in [
        ("proxy_replace_header_map_value", true),
        ("proxy_add_header_map_value", false),
    ] {
        linker.func_wrap(
            "env",
            name,
            move |mut c: Caller<'_, HostState>,
                  kind: i32,
                  key_ptr: i32,
                  key_len: i32,
                  value_ptr: i32,
                  value_len: i32| {
                let (Some(key), Some(value)) = (
                    read(&mut c, key_ptr, key_len),
                    read(&mut c, value_ptr, value_len),
                ) else {
                    return status::BAD_ARGUMENT;
                };
                match c.data_mut().headers_mut(kind) {
                    Some(head) => head
                        .add(&key, &value, replace)
                        .map_or(status::BAD_ARGUMENT, |()| status::OK),
                    None => status::NOT_FOUND,
                }
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, HostState>, kind: i32, key_ptr: i32, key_len: i32| {
            let Some(key) = read_string(&mut c, key_ptr, key_len) else {
                return status::BAD_ARGUMENT;
            };
            let Some(head) = c.data_mut().headers_mut(kind) else {
                return status::NOT_FOUND;
            };
            head.remove(&key);
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Caller<'_, HostState>,
         code: i32,
         _details_ptr: i32,
         _details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         _grpc: i32| {
            let body = read(&mut c, body_ptr, body_len).unwrap_or_default();
            let headers = read(&mut c, headers_ptr, headers_len)
                .and_then(|b| decode_map(&b).map(|pairs| reply_headers(&pairs)))
                .unwrap_or_default();
            let status = u16::try_from(code).unwrap_or(500);
            c.data_mut().set_effect(Effect::Local {
                status,
                headers,
                body,
            });
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Caller<'_, HostState>, stream: i32| {
            // Only the request direction is ever held by this host.
            if stream == 0 {
                c.data_mut().set_effect(Effect::Continue);
            }
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: Caller<'_, HostState>, _stream: i32| {
            c.data_mut().set_effect(Effect::Local {
                status: 502,
                headers: http::HeaderMap::new(),
                body: Vec::new(),
            });
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Caller<'_, HostState>,
         upstream_ptr: i32,
         upstream_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         body_ptr: i32,
         body_len: i32,
         _trailers_ptr: i32,
         _trailers_len: i32,
         timeout_ms: i32,
         token_out: i32| {
            let Some(upstream) = read_string(&mut c, upstream_ptr, upstream_len) else {
                return status::BAD_ARGUMENT;
            };
            // A header HTTP cannot carry is refused here, where the filter can see why.
            let mut head = Head::default();
            let valid = read(&mut c, headers_ptr, headers_len)
                .and_then(|b| head.set_all(&decode_map(&b)?).ok());
            if valid.is_none() {
                return status::BAD_ARGUMENT;
            }
            let body = read(&mut c, body_ptr, body_len).unwrap_or_default();
            let state = c.data_mut();
            let Some(base) = state.resolve(&upstream) else {
                state.log(
                    3,
                    &format!("http call to unknown cluster {upstream:?}: pass --cluster NAME=URL"),
                );
                return status::BAD_ARGUMENT;
            };
            state.next_token += 1;
            let token = state.next_token;
            let context = state.effective;
            if let Some(stream) = state.streams.get_mut(&context) {
                stream.calls_in_flight += 1;
            }
            state.pending_calls.push(PendingCall {
                token,
                context,
                base,
                head,
                body: body.into(),
                timeout: Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(5000).max(1)),
            });
            write(&mut c, token_out, &token.to_le_bytes())
                .map_or(status::INTERNAL_FAILURE, |()| status::OK)
        },
    )?;
    link_wasi(linker)?;
    linker.define_unknown_imports_as_traps(module)
}

/// The WASI preview 1 calls Rust's std links into the filter.
fn link_wasi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const WASI: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        WASI,
        "random_get",
        |mut c: Caller<'_, HostState>, ptr: i32, len: i32| {
            let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            write(&mut c, ptr, &bytes).map_or(21, |()| 0)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, HostState>, _fd: i32, iovs: i32, count: i32, written_out: i32| {
            let mut written = 0u32;
            for i in 0..count.max(0) {
                let Some(iov) = read(&mut c, iovs + i * 8, 8) else {
                    return 21;
                };
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                if let Some(bytes) = read(&mut c, ptr, len) {
                    c.data_mut()
                        .log(2, String::from_utf8_lossy(&bytes).trim_end());
                    written += len as u32;
                }
            }
            write(&mut c, written_out, &written.to_le_bytes()).map_or(21, |()| 0)
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: Caller<'_, HostState>, count_out: i32, size_out: i32| {
            let ok = write(&mut c, count_out, &0u32.to_le_bytes())
                .and_then(|()| write(&mut c, size_out, &0u32.to_le_bytes()));
            ok.map_or(21, |()| 0)
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_get",
        |_c: Caller<'_, HostState>, _environ: i32, _buf: i32| 0,
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Caller<'_, HostState>, _id: i32, _precision: i64, out: i32| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            write(&mut c, out, &now.to_le_bytes()).map_or(21, |()| 0)
        },
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_c: Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the filter called proc_exit({code})"
            )))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip() {
        let pairs: Vec<(&str, &[u8])> =
            vec![(":method", b"GET"), ("x-a", b""), ("x-b", b"caf\xe9")];
        let encoded = encode_map(|| pairs.iter().copied());
        let decoded = decode_map(&encoded).unwrap();
        let expected: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        assert_eq!(decoded, expected);
        assert_eq!(
            decode_map(&[1, 0, 0, 0, 9]),
            None,
            "truncated maps are refused"
        );
    }
}
