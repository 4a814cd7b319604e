//! The native shell: the gateway as an Envoy dynamic module (ABI `v0.2.0`, Envoy 1.40), built
//! with `make build-native` into `libllm_gateway.so` and loaded by name `llm_gateway`. Envoy's
//! hooks in, `session::Session` events; the session's decisions out as ABI callbacks
//! (`stream::NativeStream`). It decides nothing — the same session the wasm shell drives.
//!
//! What differs from the wasm shell is only the host:
//! - one process, one copy of the module: the configuration is parsed once, shared records
//!   (`SharedStore`) are plain process memory under locks, exact across workers;
//! - metrics are the module's own, with labels (`stats`);
//! - a module thread posts to Envoy's main thread through the config scheduler every 200 ms
//!   (the HTTP-filter ABI has no timer): the stats' flush each time, the gateway's tick once a
//!   second (`module`).
//!
//! Never crash Envoy: a panic here would take the whole process down, so the module is built
//! with `panic = "unwind"` and every hook runs inside `guard` (`catch_unwind`); a request whose
//! hook panicked is answered 500 in OpenAI's error format. Pointers from Envoy are checked for
//! null; buffer views are copied before the hook returns; the filter's state is a `RefCell`
//! borrowed only while the session runs, and a local reply — the one callback that re-enters
//! the module synchronously — is sent after that borrow ends (`finish`).

mod abi;
mod config_calls;
mod module;
mod stats;
mod stream;

use crate::config::Config;
use crate::host::{Host, SplitMix64};
use crate::session::{self, CalloutAnswer, Flow, Session};
use crate::shared_store::SharedStore;
use abi::{ConfigEnvoy, EnvoyBuffer, EnvoyHeader, FilterEnvoy, ModuleBuffer, ModuleHeader};
use module::{configure, Module, Timer, EVENTS_PER_TICK};
use stats::{NativeStats, Target};
use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};
use stream::{NativeStream, Reply};

/// Envoy 1.40's ABI version, NUL-terminated.
static ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Shared records for the whole process: like proxy-wasm's shared data they outlive a
/// configuration (a reload keeps every deployment's counters and every key's spend).
fn store() -> &'static SharedStore {
    static STORE: OnceLock<SharedStore> = OnceLock::new();
    STORE.get_or_init(SharedStore::default)
}

fn log(level: session::LogLevel, message: &str) {
    let level = match level {
        session::LogLevel::Info => abi::LOG_INFO,
        session::LogLevel::Warn => abi::LOG_WARN,
        session::LogLevel::Error => abi::LOG_ERROR,
    };
    // SAFETY: the message outlives the call; Envoy copies it into its log.
    unsafe { abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn entropy() -> u64 {
    crate::host::entropy(now_unix_ms())
}

/// Run a hook's body; a panic becomes `fallback` instead of unwinding into Envoy.
fn guard<R>(fallback: R, body: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

fn flow(flow: Flow) -> u32 {
    match flow {
        Flow::Continue => abi::CONTINUE,
        Flow::Pause => abi::STOP,
    }
}

struct NativeHost {
    rng: SplitMix64,
    /// Read once per hook: the core asks for `now` several times per event.
    now_ms: Option<u64>,
}

impl NativeHost {
    fn new(seed: u64) -> Self {
        NativeHost {
            rng: SplitMix64::new(seed),
            now_ms: None,
        }
    }
}

impl Host for NativeHost {
    fn now_unix_ms(&self) -> u64 {
        self.now_ms.unwrap_or_else(now_unix_ms)
    }
    fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
    fn random_id(&mut self) -> [u8; 16] {
        let (a, b) = (entropy() ^ self.rng.next_u64(), entropy().rotate_left(17));
        ((u128::from(a) << 64) | u128::from(b)).to_le_bytes()
    }
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        store().get(key)
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        store().set(key, value, cas)
    }
}

/// One HTTP stream.
struct Filter {
    module: Arc<Module>,
    state: RefCell<FilterState>,
}

struct FilterState {
    session: Session,
    host: NativeHost,
    /// `NativeStream::response_names`, kept from the response head to its body hooks (the
    /// headers of a buffered answer are still ours to edit there).
    response_names: Option<crate::header_map::HeaderNames>,
}

impl Filter {
    /// Run one session event on this stream, then send the reply it decided on (if any)
    /// with no borrow held: Envoy runs our response hooks inside `send_response`.
    fn event(
        &self,
        filter_envoy: FilterEnvoy,
        run: impl FnOnce(&mut Session, &Config, &mut NativeHost, &mut NativeStream<'_>) -> Flow,
    ) -> Flow {
        let module = &*self.module;
        let mut stream = NativeStream {
            filter: filter_envoy,
            stats: NativeStats {
                families: &module.families,
                config: &module.config,
                target: Target::Filter(filter_envoy),
            },
            reply: None,
            route_changed: false,
            resume: false,
            response_names: None,
        };
        let flow = {
            // A hook re-entered while the session runs (never expected: replies are deferred)
            // leaves the stream as it is.
            let Ok(mut state) = self.state.try_borrow_mut() else {
                return Flow::Continue;
            };
            let FilterState {
                session,
                host,
                response_names,
            } = &mut *state;
            host.now_ms = Some(now_unix_ms());
            stream.response_names = response_names.take();
            let flow = run(session, &module.config, host, &mut stream);
            *response_names = stream.response_names.take();
            flow
        };
        if stream.route_changed {
            // SAFETY: the running hook's pointer.
            unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(filter_envoy) };
        }
        if stream.resume && stream.reply.is_none() {
            // SAFETY: the running hook's pointer; no borrow of the filter is held.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_continue_decoding(filter_envoy)
            };
        }
        if let Some(reply) = stream.reply.take() {
            send(filter_envoy, &reply);
            return Flow::Pause;
        }
        flow
    }
}

fn send(filter_envoy: FilterEnvoy, reply: &Reply) {
    let mut headers: Vec<ModuleHeader> = reply
        .headers
        .iter()
        .map(|(k, v)| ModuleHeader::of(k, v))
        .collect();
    // SAFETY: the running hook's pointer; headers and body outlive the call (Envoy copies).
    unsafe {
        abi::envoy_dynamic_module_callback_http_send_response(
            filter_envoy,
            u32::from(reply.status),
            headers.as_mut_ptr(),
            headers.len(),
            ModuleBuffer::of(&reply.body),
            ModuleBuffer::of(b"llm_gateway"),
        );
    }
}

/// A hook panicked: answer the client as the gateway would any internal failure.
fn fail_closed(filter_envoy: FilterEnvoy) -> u32 {
    // A 500 of OpenAI's `api_error` type, as an internal failure is in OpenAI's API.
    let body = crate::error::GatewayError::new(
        crate::error::ErrorKind::Upstream(500),
        "the gateway failed while handling this request",
    )
    .to_json();
    send(
        filter_envoy,
        &Reply {
            status: 500,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        },
    );
    abi::STOP
}

/// The filter behind Envoy's module pointer.
///
/// # Safety
/// `ptr` is null or a pointer `on_http_filter_new` returned and `on_http_filter_destroy` has
/// not yet freed.
unsafe fn filter<'a>(ptr: *const c_void) -> Option<&'a Filter> {
    // SAFETY: the caller's contract.
    unsafe { ptr.cast::<Filter>().as_ref() }
}

fn hook(
    filter_envoy: FilterEnvoy,
    filter_module: *const c_void,
    run: impl FnOnce(&mut Session, &Config, &mut NativeHost, &mut NativeStream<'_>) -> Flow,
) -> u32 {
    if filter_envoy.is_null() {
        return abi::CONTINUE;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Envoy passes back the pointer `on_http_filter_new` returned.
        let Some(filter) = (unsafe { filter(filter_module) }) else {
            return abi::CONTINUE;
        };
        flow(filter.event(filter_envoy, run))
    }));
    outcome.unwrap_or_else(|_| guard(abi::STOP, || fail_closed(filter_envoy)))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoy,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guard(std::ptr::null(), || {
        if config_envoy.is_null() {
            return std::ptr::null();
        }
        // SAFETY: Envoy's view of the filter_config bytes, valid during this hook.
        let bytes = unsafe { config.bytes() };
        if bytes.is_empty() {
            log(
                session::LogLevel::Error,
                "no filter_config; expected the gateway JSON as a StringValue",
            );
            return std::ptr::null();
        }
        let Some(module) = configure(config_envoy, bytes) else {
            return std::ptr::null();
        };
        let module = Arc::new(module);
        if let Ok(mut timer) = module.timer.lock() {
            *timer = Timer::start(config_envoy);
        }
        Arc::into_raw(module).cast()
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guard((), || {
        if config.is_null() {
            return;
        }
        // SAFETY: the pointer `config_new` made with `Arc::into_raw`, destroyed once.
        let module = unsafe { Arc::from_raw(config.cast::<Module>()) };
        // Stop the tick before Envoy's config (and its scheduler) goes.
        if let Ok(mut timer) = module.timer.lock() {
            timer.take();
        }
        drop(module);
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: ConfigEnvoy,
    config: *const c_void,
    _event_id: u64,
) {
    guard((), || {
        if config.is_null() || config_envoy.is_null() {
            return;
        }
        // SAFETY: the live config pointer (Envoy runs this on the main thread before destroy).
        let Some(module) = (unsafe { config.cast::<Module>().as_ref() }) else {
            return;
        };
        module.families.flush(config_envoy);
        let event = module
            .events
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !event.is_multiple_of(EVENTS_PER_TICK) {
            return;
        }
        let mut host = NativeHost::new(module.seed());
        let mut stats = NativeStats {
            families: &module.families,
            config: &module.config,
            target: Target::Config(module.config_envoy.0),
        };
        let mut calls = config_calls::ConfigCalls(config_envoy);
        if let Ok(mut ticker) = module.ticker.lock() {
            ticker.tick(&module.config, &mut host, &mut stats, &mut calls);
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: FilterEnvoy,
) -> *const c_void {
    guard(std::ptr::null(), || {
        if config.is_null() {
            return std::ptr::null();
        }
        let config = config.cast::<Module>();
        // SAFETY: the live pointer `config_new` made; one more owner for this stream.
        let module = unsafe {
            Arc::increment_strong_count(config);
            Arc::from_raw(config)
        };
        let seed = module.seed();
        let filter = Box::new(Filter {
            module,
            state: RefCell::new(FilterState {
                session: Session::new(),
                host: NativeHost::new(seed),
                response_names: None,
            }),
        });
        Box::into_raw(filter).cast_const().cast()
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module: *const c_void) {
    guard((), || {
        if filter_module.is_null() {
            return;
        }
        // SAFETY: the pointer `on_http_filter_new` boxed, destroyed once by Envoy.
        drop(unsafe { Box::from_raw(filter_module.cast::<Filter>().cast_mut()) });
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: FilterEnvoy,
    filter_module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(
        filter_envoy,
        filter_module,
        |session, config, host, stream| {
            let headers = stream::headers(filter_envoy, abi::REQUEST_HEADERS);
            session.on_request_headers(Some(config), host, stream, headers.pairs(), end_of_stream)
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy: FilterEnvoy,
    filter_module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(
        filter_envoy,
        filter_module,
        |session, config, host, stream| {
            let size = stream::body_size(
                filter_envoy,
                abi::BUFFERED_REQUEST_BODY,
                abi::RECEIVED_REQUEST_BODY,
            );
            session.on_request_body(Some(config), host, stream, size, end_of_stream)
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy: FilterEnvoy,
    _filter_module: *const c_void,
) -> u32 {
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: FilterEnvoy,
    filter_module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(
        filter_envoy,
        filter_module,
        |session, config, host, stream| {
            // A new response head (a local reply's, after an upstream's): names read afresh.
            stream.response_names = None;
            session.on_response_headers(Some(config), host, stream, end_of_stream)
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter_envoy: FilterEnvoy,
    filter_module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(
        filter_envoy,
        filter_module,
        |session, config, host, stream| {
            let size = stream::body_size(
                filter_envoy,
                abi::BUFFERED_RESPONSE_BODY,
                abi::RECEIVED_RESPONSE_BODY,
            );
            session.on_response_body(Some(config), host, stream, size, end_of_stream)
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy: FilterEnvoy,
    _filter_module: *const c_void,
) -> u32 {
    abi::CONTINUE
}

/// The end of the stream, before access logs are written (and, in 1.40, before
/// `on_http_filter_destroy`, where callbacks no longer work): the session's `on_log`.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter_envoy: FilterEnvoy,
    filter_module: *const c_void,
) {
    hook(
        filter_envoy,
        filter_module,
        |session, config, host, stream| {
            session.on_log(Some(config), host, stream);
            Flow::Continue
        },
    );
}

/// The answer of a callout (failover, `/health` probe, fan-out).
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter_envoy: FilterEnvoy,
    filter_module: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    hook(
        filter_envoy,
        filter_module,
        |session, config, host, stream| {
            let Ok(token) = u32::try_from(callout_id) else {
                return Flow::Continue;
            };
            let headers: &[EnvoyHeader] = if headers.is_null() || result != abi::CALLOUT_SUCCESS {
                &[]
            } else {
                // SAFETY: Envoy's array of `headers_size` pairs, valid during this hook.
                unsafe { std::slice::from_raw_parts(headers, headers_size) }
            };
            let chunks: &[EnvoyBuffer] = if body_chunks.is_null() || result != abi::CALLOUT_SUCCESS
            {
                &[]
            } else {
                // SAFETY: as above, `body_chunks_size` buffers.
                unsafe { std::slice::from_raw_parts(body_chunks, body_chunks_size) }
            };
            let mut status = None;
            let mut content_type = None;
            for h in headers {
                // SAFETY: Envoy's views, valid during this hook.
                let (k, v) = unsafe { h.pair() };
                match k {
                    b":status" => {
                        status = std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse::<u16>().ok())
                    }
                    b"content-type" => content_type = std::str::from_utf8(v).ok(),
                    _ => {}
                }
            }
            let mut body = Vec::new();
            for chunk in chunks {
                // SAFETY: Envoy's views, copied at once.
                body.extend_from_slice(unsafe { chunk.bytes() });
            }
            let answer = CalloutAnswer {
                status,
                content_type,
                body,
            };
            session.on_callout(Some(config), host, stream, token, answer);
            Flow::Continue
        },
    );
}

// Hooks Envoy requires for every HTTP filter; the gateway uses none of what they report.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy: FilterEnvoy,
    _filter_module: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy: FilterEnvoy,
    _filter_module: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy: FilterEnvoy,
    _filter_module: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy: FilterEnvoy,
    _filter_module: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy: FilterEnvoy,
    _filter_module: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy: FilterEnvoy,
    _filter_module: *const c_void,
    _event_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy: FilterEnvoy,
    _filter_module: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy: FilterEnvoy,
    _filter_module: *const c_void,
) {
}
