//! The host side of one filter instance: the per-stream data and HTTP calls its host functions
//! read and write, shared by the ABI (`abi.rs`) and the calls into the filter (`vm.rs`).

use super::codes::{buffer, map, status};
use super::head::Head;
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Memory, TypedFunc};

/// Cluster names a filter instance remembers the URL of, `--cluster` entries included.
const MAX_CLUSTERS: usize = 256;

/// What a stream's filter decided outside its callback's return value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Resume the held request.
    Continue,
    /// Answer locally.
    Local {
        /// Status code.
        status: u16,
        /// Headers (those HTTP cannot carry, pseudo and hop-by-hop ones left out).
        headers: http::HeaderMap,
        /// Body.
        body: Vec<u8>,
    },
}

/// An HTTP call's answer: its head and body.
pub(crate) type Message = (Head, Vec<u8>);

/// An HTTP call the filter dispatched during a callback, for the host to run.
#[derive(Debug, Clone)]
pub(crate) struct PendingCall {
    pub(crate) token: u32,
    /// The stream that dispatched it.
    pub(crate) context: u32,
    /// The cluster's base URL, resolved at dispatch.
    pub(crate) base: Arc<str>,
    pub(crate) head: Head,
    /// Shared, so a trace upload merged into an export can still be sent alone.
    pub(crate) body: bytes::Bytes,
    pub(crate) timeout: Duration,
}

/// One HTTP stream's data as the filter sees it.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub(crate) request_headers: Head,
    pub(crate) request_body: Vec<u8>,
    pub(crate) response_headers: Head,
    pub(crate) response_body: Vec<u8>,
    pub(crate) effect: Option<Effect>,
    /// HTTP calls dispatched by this stream and not answered yet.
    pub(crate) calls_in_flight: u32,
    /// The response went out; the context goes once `calls_in_flight` is zero.
    pub(crate) ended: bool,
}

/// The state behind the host functions.
#[derive(Default)]
pub(crate) struct HostState {
    pub(crate) plugin_configuration: Vec<u8>,
    pub(crate) effective: u32,
    /// Looked up at every host call: hashed cheaply (a stream number is not attacker input).
    pub(crate) streams: FxHashMap<u32, Stream>,
    /// Streams whose effect was set since the host last took them: answers are routed to
    /// their streams without scanning every live one.
    pub(crate) decided: Vec<u32>,
    pub(crate) call_response: Option<Message>,
    pub(crate) pending_calls: Vec<PendingCall>,
    pub(crate) next_token: u32,
    /// Cluster name → base URL.
    pub(crate) clusters: HashMap<String, Arc<str>>,
    /// Error lines logged while the filter starts, to explain a refusal; `None` afterwards.
    pub(crate) configure_errors: Option<Vec<String>>,
    /// The guest's memory and allocator, looked up once after instantiation.
    pub(crate) memory: Option<Memory>,
    pub(crate) allocate: Option<TypedFunc<i32, i32>>,
}

impl HostState {
    pub(crate) fn log(&mut self, level: i32, message: &str) {
        match level {
            0 => tracing::trace!(target: "softprobe::filter", "{message}"),
            1 => tracing::debug!(target: "softprobe::filter", "{message}"),
            2 => tracing::info!(target: "softprobe::filter", "{message}"),
            3 => tracing::warn!(target: "softprobe::filter", "{message}"),
            _ => {
                tracing::error!(target: "softprobe::filter", "{message}");
                if let Some(errors) = &mut self.configure_errors {
                    errors.push(message.to_owned());
                }
            }
        }
    }

    fn stream(&self) -> Option<&Stream> {
        self.streams.get(&self.effective)
    }

    fn stream_mut(&mut self) -> Option<&mut Stream> {
        self.streams.get_mut(&self.effective)
    }

    pub(crate) fn buffer(&self, kind: i32) -> Option<&[u8]> {
        match kind {
            buffer::REQUEST_BODY => self.stream().map(|s| s.request_body.as_slice()),
            buffer::RESPONSE_BODY => self.stream().map(|s| s.response_body.as_slice()),
            buffer::CALL_RESPONSE_BODY => {
                self.call_response.as_ref().map(|(_, body)| body.as_slice())
            }
            buffer::PLUGIN_CONFIGURATION => Some(&self.plugin_configuration),
            buffer::VM_CONFIGURATION => Some(&[]),
            _ => None,
        }
    }

    pub(crate) fn set_buffer(&mut self, kind: i32, start: usize, size: usize, bytes: &[u8]) -> i32 {
        let target = match kind {
            buffer::REQUEST_BODY => self.stream_mut().map(|s| &mut s.request_body),
            buffer::RESPONSE_BODY => self.stream_mut().map(|s| &mut s.response_body),
            _ => None,
        };
        let Some(target) = target else {
            return status::NOT_FOUND;
        };
        let start = start.min(target.len());
        let end = start.saturating_add(size).min(target.len());
        target.splice(start..end, bytes.iter().copied());
        status::OK
    }

    pub(crate) fn headers(&self, kind: i32) -> Option<&Head> {
        match kind {
            map::REQUEST_HEADERS => self.stream().map(|s| &s.request_headers),
            map::RESPONSE_HEADERS => self.stream().map(|s| &s.response_headers),
            map::CALL_RESPONSE_HEADERS => self.call_response.as_ref().map(|(headers, _)| headers),
            _ => None,
        }
    }

    pub(crate) fn headers_mut(&mut self, kind: i32) -> Option<&mut Head> {
        match kind {
            map::REQUEST_HEADERS => self.stream_mut().map(|s| &mut s.request_headers),
            map::RESPONSE_HEADERS => self.stream_mut().map(|s| &mut s.response_headers),
            _ => None,
        }
    }

    pub(crate) fn set_effect(&mut self, effect: Effect) {
        let context = self.effective;
        let Some(stream) = self.streams.get_mut(&context) else {
            return;
        };
        // A local reply is final; a later resume does not undo it.
        if matches!(stream.effect, Some(Effect::Local { .. })) {
            return;
        }
        if stream.effect.replace(effect).is_none() {
            self.decided.push(context);
        }
    }

    /// The base URL of a cluster: `--cluster` entries first, then the Istio-style
    /// `outbound|<port>||<host>` name the filter derives from its backend URL. A derived URL
    /// is remembered (up to [`MAX_CLUSTERS`] names), so a call costs one lookup.
    pub(crate) fn resolve(&mut self, cluster: &str) -> Option<Arc<str>> {
        if let Some(url) = self.clusters.get(cluster) {
            return Some(url.clone());
        }
        let mut parts = cluster.split('|');
        let url: Arc<str> = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("outbound"), Some(port), Some(_), Some(host))
                if !host.is_empty() && port.parse::<u16>().is_ok() =>
            {
                format!("http://{host}:{port}").into()
            }
            _ => return None,
        };
        if self.clusters.len() < MAX_CLUSTERS {
            self.clusters.insert(cluster.to_owned(), url.clone());
        }
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_resolve_from_flags_then_istio_names_remembered_up_to_a_cap() {
        let mut state = HostState {
            clusters: HashMap::from([("runtime".to_owned(), Arc::from("http://rt:1"))]),
            ..HostState::default()
        };
        assert_eq!(state.resolve("runtime").as_deref(), Some("http://rt:1"));
        let istio = "outbound|8080||api.local";
        assert_eq!(
            state.resolve(istio).as_deref(),
            Some("http://api.local:8080")
        );
        assert!(state.clusters.contains_key(istio), "remembered");
        for unknown in ["outbound|x||h", "outbound|80||", "inbound|80||h", "other"] {
            assert_eq!(state.resolve(unknown), None, "{unknown}");
        }
        for port in 0..MAX_CLUSTERS {
            state.resolve(&format!("outbound|{port}||h"));
        }
        assert_eq!(state.clusters.len(), MAX_CLUSTERS);
        assert_eq!(
            state.resolve("outbound|9999||late").as_deref(),
            Some("http://late:9999"),
            "past the cap a name still resolves"
        );
        assert_eq!(state.clusters.len(), MAX_CLUSTERS, "but is not remembered");
    }
}
