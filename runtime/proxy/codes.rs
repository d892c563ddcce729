//! The proxy-wasm ABI 0.2.1's enum values the host uses.

/// `proxy_status_t` values the host returns.
pub(super) mod status {
    pub(crate) const OK: i32 = 0;
    pub(crate) const NOT_FOUND: i32 = 1;
    pub(crate) const BAD_ARGUMENT: i32 = 2;
    pub(crate) const INTERNAL_FAILURE: i32 = 10;
    pub(crate) const UNIMPLEMENTED: i32 = 12;
}

/// `proxy_action_t`: what a stream callback asks the host to do.
pub(super) const ACTION_CONTINUE: i32 = 0;

/// Buffer types.
pub(super) mod buffer {
    pub(crate) const REQUEST_BODY: i32 = 0;
    pub(crate) const RESPONSE_BODY: i32 = 1;
    pub(crate) const CALL_RESPONSE_BODY: i32 = 4;
    pub(crate) const VM_CONFIGURATION: i32 = 6;
    pub(crate) const PLUGIN_CONFIGURATION: i32 = 7;
}

/// Header map types.
pub(super) mod map {
    pub(crate) const REQUEST_HEADERS: i32 = 0;
    pub(crate) const RESPONSE_HEADERS: i32 = 2;
    pub(crate) const CALL_RESPONSE_HEADERS: i32 = 6;
}
