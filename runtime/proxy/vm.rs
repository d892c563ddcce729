//! The filter in wasmtime: the module compiled once, and instances of it (one per worker), each
//! with the host-side state its host calls read and write and the calls into its `proxy_on_*`
//! exports.

use super::head::Head;
use super::host::{Effect, HostState, Message, PendingCall, Stream};
use super::{abi, codes};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use wasmtime::{Engine, Instance, Linker, Module, Store, TypedFunc};

/// Typed handles on the filter's exports.
struct Exports {
    context_create: TypedFunc<(i32, i32), ()>,
    request_headers: TypedFunc<(i32, i32, i32), i32>,
    request_body: TypedFunc<(i32, i32, i32), i32>,
    response_headers: TypedFunc<(i32, i32, i32), i32>,
    response_body: TypedFunc<(i32, i32, i32), i32>,
    http_call_response: TypedFunc<(i32, i32, i32, i32, i32), ()>,
    done: TypedFunc<i32, i32>,
    log: TypedFunc<i32, ()>,
    delete: TypedFunc<i32, ()>,
}

/// Why a filter could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read the filter {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The module is not a usable proxy-wasm filter.
    #[error("{0}")]
    Invalid(String),
    /// The filter refused its configuration.
    #[error("the filter refused its configuration: {0}")]
    Configuration(String),
}

/// Set (to anything) to write `/tmp/perf-<pid>.map` for the compiled filter.
const PERFMAP_ENV: &str = "SOFTPROBE_PROXY_PERFMAP";

/// The root context id; stream contexts count up from it.
const ROOT_CONTEXT: u32 = 1;

/// The filter module, compiled once and instantiated once per worker.
pub(crate) struct Filter {
    module: Module,
    linker: Linker<HostState>,
    configuration: Vec<u8>,
    clusters: HashMap<String, Arc<str>>,
}

/// A loaded, configured filter instance.
pub(crate) struct Vm {
    store: Store<HostState>,
    exports: Exports,
    next_context: u32,
}

fn invalid(what: impl std::fmt::Display) -> LoadError {
    LoadError::Invalid(what.to_string())
}

impl Filter {
    /// Reads, checks and compiles the module; `configuration` goes to every instance's
    /// `on_configure`.
    pub(crate) fn compile(
        path: &Path,
        configuration: &[u8],
        clusters: HashMap<String, String>,
    ) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        crate::commands::proxy_wasm_exports(&bytes).map_err(LoadError::Invalid)?;
        let mut settings = wasmtime::Config::new();
        if std::env::var_os(PERFMAP_ENV).is_some() {
            // `perf report` then names the filter's functions (from an unstripped module).
            settings.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&settings).map_err(invalid)?;
        let module = Module::new(&engine, &bytes)
            .map_err(|err| invalid(format!("cannot compile {}: {err}", path.display())))?;
        let mut linker = Linker::new(&engine);
        abi::link(&mut linker, &module).map_err(invalid)?;
        Ok(Self {
            module,
            linker,
            configuration: configuration.to_vec(),
            clusters: clusters
                .into_iter()
                .map(|(name, url)| (name, url.into()))
                .collect(),
        })
    }

    /// A new instance: runs its start-up and `on_configure`.
    pub(crate) fn instantiate(&self) -> Result<Vm, LoadError> {
        let state = HostState {
            plugin_configuration: self.configuration.clone(),
            effective: ROOT_CONTEXT,
            clusters: self.clusters.clone(),
            configure_errors: Some(Vec::new()),
            ..HostState::default()
        };
        let mut store = Store::new(self.module.engine(), state);
        let instance = self
            .linker
            .instantiate(&mut store, &self.module)
            .map_err(|err| invalid(format!("cannot instantiate the filter: {err}")))?;
        // Looked up once here rather than by name in every host call.
        let memory = instance.get_memory(&mut store, "memory");
        let allocate = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .ok();
        store.data_mut().memory = memory;
        store.data_mut().allocate = allocate;
        if let Ok(initialize) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            initialize
                .call(&mut store, ())
                .map_err(|err| invalid(format!("the filter's _initialize failed: {err}")))?;
        }
        let exports = exports(&instance, &mut store)?;
        let vm_start = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "proxy_on_vm_start")
            .map_err(invalid)?;
        let configure = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "proxy_on_configure")
            .map_err(invalid)?;
        let root = ROOT_CONTEXT as i32;
        exports
            .context_create
            .call(&mut store, (root, 0))
            .map_err(invalid)?;
        vm_start.call(&mut store, (root, 0)).map_err(invalid)?;
        let size = self.configuration.len() as i32;
        let accepted = configure.call(&mut store, (root, size)).map_err(invalid)?;
        let reasons = store.data_mut().configure_errors.take().unwrap_or_default();
        if accepted == 0 {
            let reason = if reasons.is_empty() {
                "no reason logged".to_owned()
            } else {
                reasons.join("; ")
            };
            return Err(LoadError::Configuration(reason));
        }
        Ok(Vm {
            store,
            exports,
            next_context: ROOT_CONTEXT + 1,
        })
    }
}

impl Vm {
    fn enter(&mut self, context: u32) {
        self.store.data_mut().effective = context;
    }

    /// Creates a stream context holding these request headers and body.
    pub(crate) fn create_stream(&mut self, headers: Head, body: Vec<u8>) -> wasmtime::Result<u32> {
        let context = self.next_context;
        self.next_context += 1;
        self.store.data_mut().streams.insert(
            context,
            Stream {
                request_headers: headers,
                request_body: body,
                ..Stream::default()
            },
        );
        self.enter(context);
        let created = self
            .exports
            .context_create
            .call(&mut self.store, (context as i32, ROOT_CONTEXT as i32));
        if created.is_err() {
            self.store.data_mut().streams.remove(&context);
        }
        created.map(|()| context)
    }

    /// Delivers the request: headers, then the body when there is one. Returns whether the
    /// filter let it continue without holding it.
    pub(crate) fn on_request(&mut self, context: u32) -> wasmtime::Result<bool> {
        self.enter(context);
        let (count, body_len) = {
            let stream = &self.store.data().streams[&context];
            (
                stream.request_headers.len() as i32,
                stream.request_body.len() as i32,
            )
        };
        let mut action = self.exports.request_headers.call(
            &mut self.store,
            (context as i32, count, i32::from(body_len == 0)),
        )?;
        if body_len > 0 {
            self.enter(context);
            action = self
                .exports
                .request_body
                .call(&mut self.store, (context as i32, body_len, 1))?;
        }
        Ok(action == codes::ACTION_CONTINUE)
    }

    /// Delivers the upstream response.
    pub(crate) fn on_response(
        &mut self,
        context: u32,
        headers: Head,
        body: Vec<u8>,
    ) -> wasmtime::Result<()> {
        let count = headers.len() as i32;
        let body_len = body.len() as i32;
        if let Some(stream) = self.store.data_mut().streams.get_mut(&context) {
            stream.response_headers = headers;
            stream.response_body = body;
        }
        self.enter(context);
        self.exports.response_headers.call(
            &mut self.store,
            (context as i32, count, i32::from(body_len == 0)),
        )?;
        if body_len > 0 {
            self.enter(context);
            self.exports
                .response_body
                .call(&mut self.store, (context as i32, body_len, 1))?;
        }
        Ok(())
    }

    /// Delivers an HTTP call's answer (`None`: it failed or timed out, as Envoy reports it).
    /// Once a stream's last call is answered and its response was sent, the stream ends.
    pub(crate) fn on_call_response(
        &mut self,
        call: &PendingCall,
        response: Option<Message>,
    ) -> wasmtime::Result<()> {
        let (headers, body) = response.unwrap_or_default();
        let (count, len) = (headers.len() as i32, body.len() as i32);
        self.store.data_mut().call_response = Some((headers, body));
        self.enter(ROOT_CONTEXT);
        let result = self.exports.http_call_response.call(
            &mut self.store,
            (ROOT_CONTEXT as i32, call.token as i32, count, len, 0),
        );
        self.store.data_mut().call_response = None;
        if let Some(stream) = self.store.data_mut().streams.get_mut(&call.context) {
            stream.calls_in_flight = stream.calls_in_flight.saturating_sub(1);
            if stream.ended && stream.calls_in_flight == 0 {
                self.finish(call.context);
            }
        }
        result
    }

    /// What to forward of the request as the filter left it: `forward` gets its head and
    /// headers (the filter may still read them) and the body, which moves out: the filter is
    /// done with it once the request leaves.
    pub(crate) fn take_request<T>(
        &mut self,
        context: u32,
        forward: impl FnOnce(&Head, Vec<u8>) -> T,
    ) -> Option<T> {
        let stream = self.store.data_mut().streams.get_mut(&context)?;
        let body = std::mem::take(&mut stream.request_body);
        Some(forward(&stream.request_headers, body))
    }

    /// The response headers and body as the filter left them; they move out.
    pub(crate) fn take_response(&mut self, context: u32) -> Option<Message> {
        self.store.data_mut().streams.get_mut(&context).map(|s| {
            (
                std::mem::take(&mut s.response_headers),
                std::mem::take(&mut s.response_body),
            )
        })
    }

    /// The decisions the filter made since the last take, by stream.
    pub(crate) fn take_decisions(&mut self) -> Vec<(u32, Effect)> {
        let state = self.store.data_mut();
        let decided = std::mem::take(&mut state.decided);
        decided
            .into_iter()
            .filter_map(|context| {
                let effect = state.streams.get_mut(&context)?.effect.take()?;
                Some((context, effect))
            })
            .collect()
    }

    /// The HTTP calls dispatched since the last take.
    pub(crate) fn take_calls(&mut self) -> Vec<PendingCall> {
        std::mem::take(&mut self.store.data_mut().pending_calls)
    }

    /// The stream's response went out (or its client left): the stream ends now, or when its
    /// last HTTP call is answered, so an upload answer still finds its context.
    pub(crate) fn end(&mut self, context: u32) {
        let Some(stream) = self.store.data_mut().streams.get_mut(&context) else {
            return;
        };
        stream.ended = true;
        if stream.calls_in_flight == 0 {
            self.finish(context);
        }
    }

    /// Finishes a stream: done, log, delete.
    fn finish(&mut self, context: u32) {
        for call in [
            self.exports
                .done
                .call(&mut self.store, context as i32)
                .map(|_| ()),
            self.exports.log.call(&mut self.store, context as i32),
            self.exports.delete.call(&mut self.store, context as i32),
        ] {
            if let Err(err) = call {
                tracing::warn!(context, %err, "Filter callback failed at stream end.");
            }
        }
        self.store.data_mut().streams.remove(&context);
    }
}

fn exports(instance: &Instance, store: &mut Store<HostState>) -> Result<Exports, LoadError> {
    Ok(Exports {
        context_create: instance
            .get_typed_func(&mut *store, "proxy_on_context_create")
            .map_err(invalid)?,
        request_headers: instance
            .get_typed_func(&mut *store, "proxy_on_request_headers")
            .map_err(invalid)?,
        request_body: instance
            .get_typed_func(&mut *store, "proxy_on_request_body")
            .map_err(invalid)?,
        response_headers: instance
            .get_typed_func(&mut *store, "proxy_on_response_headers")
            .map_err(invalid)?,
        response_body: instance
            .get_typed_func(&mut *store, "proxy_on_response_body")
            .map_err(invalid)?,
        http_call_response: instance
            .get_typed_func(&mut *store, "proxy_on_http_call_response")
            .map_err(invalid)?,
        done: instance
            .get_typed_func(&mut *store, "proxy_on_done")
            .map_err(invalid)?,
        log: instance
            .get_typed_func(&mut *store, "proxy_on_log")
            .map_err(invalid)?,
        delete: instance
            .get_typed_func(&mut *store, "proxy_on_delete")
            .map_err(invalid)?,
    })
}
