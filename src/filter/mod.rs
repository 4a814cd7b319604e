//! The proxy-wasm shell: Envoy callbacks in, `session::Session` events; the session's
//! decisions out as host calls (`WasmStream`). It decides nothing.
//!
//! No SDK convenience methods (they unwrap host errors, and `get_map_value` unwraps UTF-8,
//! which a client controls). The calls every request makes — headers, bodies, shared data,
//! properties, local replies — go through `abi`, which takes every host status as a value: the
//! SDK's `hostcalls` panic on a status they do not expect. Header maps are parsed in place
//! (`header_map`). What still goes through `hostcalls` (log, clock, metrics, tick, callouts,
//! whose responses the SDK routes back to us) gets only the statuses its wrapper handles.

mod abi;
mod stats;

use crate::config::{self, Config};
use crate::header_map::HeaderNames;
use crate::host::{Host, SplitMix64};
use crate::session::{self, CalloutAnswer, Flow, Session, Ticker};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use stats::{Metrics, WasmStats};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

fn now_unix_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn entropy() -> u64 {
    crate::host::entropy(now_unix_ms())
}

fn flow(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
    seeds: RefCell<Option<SplitMix64>>,
    metrics: Rc<Metrics>,
    ticker: RefCell<Ticker>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match abi::buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Some(b) => b,
            None => {
                log(
                    LogLevel::Error,
                    "no plugin configuration; expected the gateway JSON",
                );
                return false;
            }
        };
        let now_ms = now_unix_ms();
        let (config, diagnostics) =
            config::check(&bytes, &|name| std::env::var(name).ok(), now_ms / 1000);
        for w in &diagnostics.warnings {
            log(LogLevel::Warn, &format!("config: {w}"));
        }
        for e in &diagnostics.errors {
            log(LogLevel::Error, &format!("invalid configuration: {e}"));
        }
        let Some(config) = config else {
            return false;
        };
        log(
            LogLevel::Info,
            &format!(
                "configured {} model groups, {} deployments",
                config.groups.len(),
                config.deployments.len()
            ),
        );
        // Every worker VM starts alike (same clock, same memory layout), so the seed must
        // come from the host's entropy (WASI random_get, through std's RandomState) or
        // workers would pick in lockstep and mint the same ids.
        let mut seeds = SplitMix64::new(entropy() ^ now_ms);
        let mut host = WasmHost::new(SplitMix64::new(seeds.next_u64()));
        crate::router::precreate(&config, &mut host);
        // The cache sweep and the deployments' gauges run on the tick.
        let _ = hostcalls::set_tick_period(Duration::from_secs(1));
        *self.seeds.borrow_mut() = Some(seeds);
        // Interned stat ids are per deployment index of one configuration.
        self.metrics = Rc::new(Metrics::default());
        let mut stats = WasmStats::new(&self.metrics, &config);
        *self.ticker.borrow_mut() = Ticker::new(&config, &mut stats);
        self.config = Some(Rc::new(config));
        true
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let seed = self
            .seeds
            .borrow_mut()
            .as_mut()
            .map(SplitMix64::next_u64)
            .unwrap_or(u64::from(context_id));
        Some(Box::new(Http {
            config: self.config.clone(),
            host: WasmHost::new(SplitMix64::new(seed ^ u64::from(context_id))),
            session: Session::new(),
            metrics: self.metrics.clone(),
            response_names: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn on_tick(&mut self) {
        let (Some(config), Some(seed)) = (
            &self.config,
            self.seeds.borrow_mut().as_mut().map(SplitMix64::next_u64),
        ) else {
            return;
        };
        let mut host = WasmHost::new(SplitMix64::new(seed));
        let mut stats = WasmStats::new(&self.metrics, config);
        self.ticker
            .borrow_mut()
            .tick(config, &mut host, &mut stats, &mut RootCalls);
    }
}

/// The root context's calls: their answers come to `Root`'s default
/// `on_http_call_response`, which reads nothing.
struct RootCalls;

impl session::TickCalls for RootCalls {
    fn send(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> bool {
        let timeout = Duration::from_millis(timeout_ms);
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), Some(body), vec![], timeout)
            .is_ok()
    }
}

struct WasmHost {
    rng: SplitMix64,
    /// The clock, read at most once per Envoy callback: the core asks for `now` several
    /// times while handling one (authorise, select, stamp the response) and each read is a
    /// host call. `callback` clears it as each callback starts.
    now_ms: Cell<Option<u64>>,
}

impl WasmHost {
    fn new(rng: SplitMix64) -> Self {
        WasmHost {
            rng,
            now_ms: Cell::new(None),
        }
    }

    /// A new Envoy callback: time has moved on.
    fn callback(&self) {
        self.now_ms.set(None);
    }
}

impl Host for WasmHost {
    fn now_unix_ms(&self) -> u64 {
        if let Some(now) = self.now_ms.get() {
            return now;
        }
        let now = now_unix_ms();
        self.now_ms.set(Some(now));
        now
    }
    fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
    /// Two fresh draws of host entropy (WASI random_get keys std's SipHash per VM, and each
    /// RandomState advances a per-VM counter, so draws never repeat within a VM), mixed with
    /// this context's generator.
    fn random_id(&mut self) -> [u8; 16] {
        let (a, b) = (entropy() ^ self.rng.next_u64(), entropy().rotate_left(17));
        ((u128::from(a) << 64) | u128::from(b)).to_le_bytes()
    }
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        abi::shared(key)
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        abi::set_shared(key, value, cas)
    }
}

/// The session's `Stream`, over this HTTP context's host calls.
struct WasmStream<'a> {
    stats: WasmStats<'a>,
    /// The response's header names, from the session's read of them (`HeaderNames`): kept
    /// by `Http` from the response head to its body callbacks.
    response_names: Option<HeaderNames>,
}

impl session::Stats for WasmStream<'_> {
    fn add(&mut self, stat: crate::metrics::Stat<'_>, by: i64) {
        self.stats.add(stat, by)
    }
    fn set(&mut self, stat: crate::metrics::Stat<'_>, value: u64) {
        self.stats.set(stat, value)
    }
    fn record(&mut self, stat: crate::metrics::Stat<'_>, value: u64) {
        self.stats.record(stat, value)
    }
    fn define(&mut self, stat: crate::metrics::Stat<'_>) {
        self.stats.define(stat)
    }
}

/// The first value of `name` in a serialised map, if it is text.
fn header<'a>(map: &'a [u8], name: &str) -> Option<&'a str> {
    crate::header_map::pairs(map)
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

impl session::Stream for WasmStream<'_> {
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        abi::set_header(MapType::HttpRequestHeaders, name, value);
    }
    fn request_body(&mut self, size: usize) -> Option<Vec<u8>> {
        abi::buffer(BufferType::HttpRequestBody, 0, size)
    }
    fn replace_request_body(&mut self, size: usize, body: &[u8]) -> bool {
        abi::set_buffer(BufferType::HttpRequestBody, 0, size, body)
    }
    /// One read of the whole map (a read costs the same host call whatever it returns): the
    /// values asked for, and every name, so that the writes after it can append.
    fn response_headers(&mut self, names: &[&str], out: &mut [Option<String>]) {
        let map = abi::header_map(MapType::HttpResponseHeaders);
        if map.is_empty() {
            // Not read (a response map always holds `:status`): every write replaces.
            self.response_names = Some(HeaderNames::unknown());
            return;
        }
        let pairs = crate::header_map::pairs(&map).map(|(k, v)| (k.as_bytes(), v));
        self.response_names = Some(HeaderNames::read(pairs, 16, names, out));
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        let absent = match (&mut self.response_names, value) {
            (Some(names), Some(_)) => names.add_if_absent(name.as_bytes()),
            _ => false,
        };
        match value {
            Some(v) if absent => abi::add_header(MapType::HttpResponseHeaders, name, v),
            _ => abi::set_header(MapType::HttpResponseHeaders, name, value),
        };
    }
    fn response_body(&mut self, size: usize) -> Option<Vec<u8>> {
        abi::buffer(BufferType::HttpResponseBody, 0, size)
    }
    fn replace_response_body(&mut self, size: usize, body: &[u8]) -> bool {
        abi::set_buffer(BufferType::HttpResponseBody, 0, size, body)
    }
    fn send_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
        abi::send_local_response(status, headers, body)
    }
    fn call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Option<u32> {
        let timeout = Duration::from_millis(timeout_ms);
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), body, vec![], timeout).ok()
    }
    fn resume_request(&mut self) {
        if hostcalls::resume_http_request().is_err() {
            log(LogLevel::Error, "could not resume the request");
        }
    }
    /// Filter state `wasm.llm_gateway`.
    fn set_access_record(&mut self, record: &[u8]) {
        abi::set_property(b"llm_gateway", record);
    }
    fn response_code_details(&mut self) -> Option<Vec<u8>> {
        abi::property(b"response\0code_details")
    }
    fn log(&mut self, level: session::LogLevel, message: &str) {
        let level = match level {
            session::LogLevel::Info => LogLevel::Info,
            session::LogLevel::Warn => LogLevel::Warn,
            session::LogLevel::Error => LogLevel::Error,
        };
        log(level, message);
    }
}

struct Http {
    config: Option<Rc<Config>>,
    host: WasmHost,
    session: Session,
    metrics: Rc<Metrics>,
    /// `WasmStream::response_names`, from the response head to its body callbacks.
    response_names: Option<HeaderNames>,
}

impl Http {
    /// A new callback: the clock moves on; the config and stream for the session.
    fn begin(&self) -> (Option<Rc<Config>>, Rc<Metrics>) {
        self.host.callback();
        (self.config.clone(), self.metrics.clone())
    }
}

/// The stream handed to the session: its stats resolve names against `config` (none when
/// the gateway has no configuration, so no stat is recorded).
fn stream_for<'a>(metrics: &'a Metrics, config: Option<&'a Config>) -> WasmStream<'a> {
    WasmStream {
        stats: WasmStats::maybe(metrics, config),
        response_names: None,
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (config, metrics) = self.begin();
        let config = config.as_deref();
        let mut stream = stream_for(&metrics, config);
        let headers = abi::header_map(MapType::HttpCallResponseHeaders);
        let body = if body_size > 0 {
            abi::buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        let answer = CalloutAnswer {
            status: header(&headers, ":status").and_then(|s| s.parse::<u16>().ok()),
            content_type: header(&headers, "content-type"),
            body,
        };
        self.session
            .on_callout(config, &mut self.host, &mut stream, token_id, answer);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let (config, metrics) = self.begin();
        let config = config.as_deref();
        let mut stream = stream_for(&metrics, config);
        let headers = if config.is_some() {
            abi::header_map(MapType::HttpRequestHeaders)
        } else {
            Vec::new()
        };
        let pairs = crate::header_map::pairs(&headers);
        flow(self.session.on_request_headers(
            config,
            &mut self.host,
            &mut stream,
            pairs,
            end_of_stream,
        ))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (config, metrics) = self.begin();
        let config = config.as_deref();
        let mut stream = stream_for(&metrics, config);
        flow(self.session.on_request_body(
            config,
            &mut self.host,
            &mut stream,
            body_size,
            end_of_stream,
        ))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let (config, metrics) = self.begin();
        let config = config.as_deref();
        let mut stream = stream_for(&metrics, config);
        let flow_out =
            self.session
                .on_response_headers(config, &mut self.host, &mut stream, end_of_stream);
        self.response_names = stream.response_names.take();
        flow(flow_out)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (config, metrics) = self.begin();
        let config = config.as_deref();
        let mut stream = stream_for(&metrics, config);
        stream.response_names = self.response_names.take();
        let flow_out = self.session.on_response_body(
            config,
            &mut self.host,
            &mut stream,
            body_size,
            end_of_stream,
        );
        self.response_names = stream.response_names.take();
        flow(flow_out)
    }

    fn on_log(&mut self) {
        let (config, metrics) = self.begin();
        let config = config.as_deref();
        let mut stream = stream_for(&metrics, config);
        self.session.on_log(config, &mut self.host, &mut stream);
    }
}
