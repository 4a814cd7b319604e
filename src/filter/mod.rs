//! The proxy-wasm shell: Envoy callbacks in, core calls, host calls out. Nothing else.
//!
//! No SDK convenience methods (they unwrap host errors, and `get_map_value` unwraps UTF-8,
//! which a client controls). The calls every request makes — headers, bodies, shared data,
//! properties, local replies — go through `abi`, which takes every host status as a value: the SDK's
//! `hostcalls` panic on a status they do not expect. Header maps are parsed in place
//! (`header_map`). What still goes through `hostcalls` (log, clock, metrics, tick, callouts,
//! whose responses the SDK routes back to us) gets only the statuses its wrapper handles.

mod abi;
mod fan_out;

use crate::access::{self, KeyCharge};
use crate::answer_headers::{answer_headers, cost_header, AnswerFacts, AttemptHistory};
use crate::config::{self, Config};
use crate::gateway::{
    self, BodyAction, Forward, HeadAction, LocalReply, Pending, Replay, RequestHead,
};
use crate::host::{Host, SplitMix64};
use crate::metrics;
use crate::router::{self, Reservation};
use crate::translate::{BodyMode, BodyOutput, ResponseTranslator};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// The most response body we hold while translating a buffered (non-streaming) response.
const MAX_BUFFERED_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

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
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_unix_ms());
    h.finish()
}

#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
    seeds: RefCell<Option<SplitMix64>>,
    metrics: Rc<Metrics>,
    sweep_from: std::cell::Cell<u64>,
    ticks: std::cell::Cell<u64>,
}

/// Configs with more deployments refresh their gauges every tenth tick, not every tick:
/// each refresh reads every deployment's shared record.
const GAUGES_EVERY_TICK_UP_TO: usize = 200;

/// Cache slots each VM checks for expiry per tick (every second).
const CACHE_SWEEP_SLOTS: u64 = 256;

/// Envoy stats by name, defined once per VM on first use.
#[derive(Default)]
struct Metrics {
    ids: RefCell<HashMap<String, u32>>,
    /// Per deployment of the configuration these metrics belong to (a new configuration gets
    /// new `Metrics`): ids interned so a request formats no stat name and hashes no long one.
    routes: RefCell<Vec<RouteStats>>,
    /// Per deployment: the timer-refreshed gauges' ids and the values last set.
    gauges: RefCell<Vec<Option<DeploymentGauges>>>,
}

struct DeploymentGauges {
    cooling: Option<u32>,
    rpm_used: Option<u32>,
    tpm_used: Option<u32>,
    last: Option<router::Gauges>,
}

#[derive(Default)]
struct RouteStats {
    duration: Option<u32>,
    ttft: Option<u32>,
    in_flight: Option<u32>,
    by_key: HashMap<String, KeyStats>,
}

#[derive(Default, Clone, Copy)]
struct KeyStats {
    requests: [Option<u32>; 5],
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

#[derive(Clone, Copy)]
enum RouteStat {
    Duration,
    TimeToFirstToken,
    InFlight,
}

#[derive(Clone, Copy)]
enum KeyStat {
    Requests(u16),
    PromptTokens,
    CompletionTokens,
}

fn status_class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}

impl Metrics {
    fn id(&self, kind: MetricType, name: &str) -> Option<u32> {
        if let Some(&id) = self.ids.borrow().get(name) {
            return Some(id);
        }
        let id = hostcalls::define_metric(kind, name).ok()?;
        self.ids.borrow_mut().insert(name.to_string(), id);
        Some(id)
    }

    /// A deployment's stat, defined on first use.
    fn route_id(&self, config: &Config, deployment: usize, stat: RouteStat) -> Option<u32> {
        let mut routes = self.routes.borrow_mut();
        if routes.len() <= deployment {
            routes.resize_with(deployment + 1, RouteStats::default);
        }
        let route = routes.get_mut(deployment)?;
        let slot = match stat {
            RouteStat::Duration => &mut route.duration,
            RouteStat::TimeToFirstToken => &mut route.ttft,
            RouteStat::InFlight => &mut route.in_flight,
        };
        if slot.is_none() {
            let l = labels(config, deployment, "");
            let (kind, name) = match stat {
                RouteStat::Duration => (MetricType::Histogram, l.duration()),
                RouteStat::TimeToFirstToken => (MetricType::Histogram, l.time_to_first_token()),
                RouteStat::InFlight => (MetricType::Gauge, l.in_flight()),
            };
            *slot = hostcalls::define_metric(kind, &name).ok();
        }
        *slot
    }

    /// A (deployment, key) stat, defined on first use.
    fn key_id(&self, config: &Config, deployment: usize, key: &str, stat: KeyStat) -> Option<u32> {
        let mut routes = self.routes.borrow_mut();
        if routes.len() <= deployment {
            routes.resize_with(deployment + 1, RouteStats::default);
        }
        let route = routes.get_mut(deployment)?;
        if !route.by_key.contains_key(key) {
            route.by_key.insert(key.to_string(), KeyStats::default());
        }
        let stats = route.by_key.get_mut(key)?;
        let slot = match stat {
            KeyStat::Requests(status) => stats.requests.get_mut(status_class_index(status))?,
            KeyStat::PromptTokens => &mut stats.prompt_tokens,
            KeyStat::CompletionTokens => &mut stats.completion_tokens,
        };
        if slot.is_none() {
            let l = labels(config, deployment, key);
            let name = match stat {
                KeyStat::Requests(status) => l.requests(status),
                KeyStat::PromptTokens => l.prompt_tokens(),
                KeyStat::CompletionTokens => l.completion_tokens(),
            };
            *slot = hostcalls::define_metric(MetricType::Counter, &name).ok();
        }
        *slot
    }

    /// Set each deployment's timer gauges (cooling, this minute's requests and tokens) where
    /// they changed; the limits once, when first seen.
    fn refresh_gauges(&self, config: &Config, host: &WasmHost) {
        let mut all = self.gauges.borrow_mut();
        if all.len() < config.deployments.len() {
            all.resize_with(config.deployments.len(), || None);
        }
        for (i, slot) in all.iter_mut().enumerate() {
            let Some(now) = router::deployment_gauges(config, host, i) else {
                continue;
            };
            let g = slot.get_or_insert_with(|| {
                let l = labels(config, i, "");
                let define =
                    |name: &str| hostcalls::define_metric(MetricType::Gauge, &l.gauge(name)).ok();
                if let Some(d) = config.deployment(i) {
                    for (name, limit) in [("rpm_limit", d.rpm), ("tpm_limit", d.tpm)] {
                        if let (Some(id), Some(limit)) = (limit.and_then(|_| define(name)), limit) {
                            let _ = hostcalls::record_metric(id, limit);
                        }
                    }
                }
                DeploymentGauges {
                    cooling: define("cooling"),
                    rpm_used: define("rpm_used"),
                    tpm_used: define("tpm_used"),
                    last: None,
                }
            });
            let last = g.last.unwrap_or(router::Gauges {
                cooling: !now.cooling,
                rpm_used: u64::MAX,
                tpm_used: u64::MAX,
            });
            for (id, value, before) in [
                (g.cooling, u64::from(now.cooling), u64::from(last.cooling)),
                (g.rpm_used, now.rpm_used, last.rpm_used),
                (g.tpm_used, now.tpm_used, last.tpm_used),
            ] {
                if let (Some(id), true) = (id, value != before) {
                    let _ = hostcalls::record_metric(id, value);
                }
            }
            g.last = Some(now);
        }
    }

    /// Counters of rare events exist from the start, at 0: a counter Prometheus first sees
    /// at its first increment shows no increase for that event.
    fn predefine(&self, config: &Config) {
        for i in 0..config.deployments.len() {
            let l = labels(config, i, "");
            for name in [l.cooldowns(), l.failovers(), l.fallbacks()] {
                let _ = self.id(MetricType::Counter, &name);
            }
        }
    }

    /// A failover from `failed` began: counted, and as a fallback when it left the group.
    fn count_failover(&self, config: &Config, failed: usize, routed: &Routed) {
        let l = labels(config, failed, "");
        self.count(&l.failovers(), 1);
        let group_of = |i: usize| config.deployment(i).map(|d| d.group);
        let next = routed.failover.as_ref().map(|(_, a)| a.deployment);
        if next.is_some_and(|n| group_of(n) != group_of(failed)) {
            self.count(&l.fallbacks(), 1);
        }
    }

    fn count(&self, name: &str, by: u64) {
        if by > 0 {
            if let Some(id) = self.id(MetricType::Counter, name) {
                add(id, by);
            }
        }
    }
}

fn add(id: u32, by: u64) {
    if by > 0 {
        let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
    }
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
        match config {
            Some(config) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "configured {} model groups, {} deployments",
                        config.groups.len(),
                        config.deployments.len()
                    ),
                );
                // Every worker VM starts alike (same clock, same memory layout), so the seed
                // must come from the host's entropy (WASI random_get, through std's
                // RandomState) or workers would pick in lockstep and mint the same ids.
                let mut seeds = SplitMix64::new(entropy() ^ now_ms);
                let mut host = WasmHost::new(SplitMix64::new(seeds.next_u64()));
                router::precreate(&config, &mut host);
                // The cache sweep and the deployments' gauges run on the tick.
                let _ = hostcalls::set_tick_period(Duration::from_secs(1));
                *self.seeds.borrow_mut() = Some(seeds);
                // Interned stat ids are per deployment index of one configuration.
                self.metrics = Rc::new(Metrics::default());
                self.metrics.predefine(&config);
                self.config = Some(Rc::new(config));
                true
            }
            None => false,
        }
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
            state: State::Head,
            metrics: self.metrics.clone(),
            started_ms: 0,
            client: ClientHeaders::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    /// Free expired cache entries, a slice of the slots per tick; refresh the deployments'
    /// gauges.
    fn on_tick(&mut self) {
        let (Some(config), Some(seeds)) = (
            &self.config,
            self.seeds.borrow_mut().as_mut().map(SplitMix64::next_u64),
        ) else {
            return;
        };
        let tick = self.ticks.get();
        self.ticks.set(tick.wrapping_add(1));
        if config.deployments.len() <= GAUGES_EVERY_TICK_UP_TO || tick.is_multiple_of(10) {
            let host = WasmHost::new(SplitMix64::new(seeds));
            self.metrics.refresh_gauges(config, &host);
        }
        if let Some(cache) = &config.cache {
            let mut host = WasmHost::new(SplitMix64::new(seeds));
            let from = self.sweep_from.get();
            crate::cache::sweep(&mut host, cache, from, CACHE_SWEEP_SLOTS);
            let next = from + CACHE_SWEEP_SLOTS;
            self.sweep_from
                .set(if next >= cache.slots { 0 } else { next });
        }
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

enum State {
    Head,
    AwaitBody(Pending),
    Routed(Box<Routed>),
    /// `GET /health`: probes in flight (token, deployment) and the results so far.
    Probing {
        pending: Vec<(u32, usize)>,
        results: Vec<(usize, Result<u16, String>)>,
    },
    /// LiteLLM's fan-out: a callout per model, answered once all are back.
    FanOut(Box<fan_out::FanOut>),
    /// We answered locally; the response callbacks see our own reply and leave it alone.
    Replied,
}

/// One upstream attempt: how to read its response and what to settle afterwards.
struct Attempt {
    response: Box<dyn ResponseTranslator>,
    deployment: usize,
    reservation: Reservation,
    /// The model asked for, when a wildcard group answers (for the access log).
    requested_model: Option<String>,
    status: Option<u16>,
    first_byte_ms: Option<u64>,
    settled: bool,
}

struct Routed {
    current: Attempt,
    mode: BodyMode,
    /// A buffered response grew too large and was replaced by an error; drop the rest.
    discarding: bool,
    replay: Option<Replay>,
    /// A failover call in flight: its dispatch token and the attempt it carries.
    failover: Option<(u32, Attempt)>,
    /// The caller's key charge, settled once with the answering attempt's usage.
    key_charge: Option<KeyCharge>,
    key_label: String,
    /// When the first response body byte passed (time to first token).
    first_body_ms: Option<u64>,
    /// The in-flight gauge (of its deployment) this request raised.
    in_flight: Option<u32>,
    /// A failover attempt answered the client (its stats are already recorded).
    failover_answered: bool,
    /// Where to cache a successful answer, and the answer so far (`None` once too large).
    cache: Option<(crate::cache::Plan, Option<Vec<u8>>)>,
    /// The response reached its end of stream through this filter; only a response that did
    /// not can have been broken off by the upstream.
    response_complete: bool,
    /// For the answer's headers (`answer_headers`).
    show_api_base: bool,
    fallback_position: u32,
    mock_retries: u32,
    max_retries: u32,
    /// Retries Envoy made on the deployment before this answer (`x-envoy-attempt-count` − 1).
    envoy_retries_taken: u32,
    timeout_ms: u64,
}

struct Http {
    config: Option<Rc<Config>>,
    host: WasmHost,
    state: State,
    metrics: Rc<Metrics>,
    started_ms: u64,
    client: ClientHeaders,
}

/// What the client's request headers held that later steps would otherwise have to ask Envoy
/// about: every removal or overwrite of a header is a host call, so only what is there goes.
#[derive(Default)]
struct ClientHeaders {
    /// Which of `gateway::UPSTREAM_REQUEST_HEADERS_TO_REMOVE` were sent (bit per entry).
    to_remove: u8,
    /// `content-type` was exactly `application/json`, which every translated body also is.
    json: bool,
    /// The client's `:path`: an OpenAI-compatible upstream often takes the very same one.
    path: String,
    /// Envoy's `x-request-id`: LiteLLM's call id on the answer.
    request_id: Option<String>,
}

#[derive(Clone, Copy)]
struct Timing {
    started_ms: u64,
    first_body_ms: Option<u64>,
    now_ms: u64,
}

fn labels(config: &Config, deployment: usize, key: &str) -> metrics::Labels {
    metrics::Labels::of(config, deployment, key)
}

/// The first value of `name` in a serialised map, if it is text.
fn header<'a>(map: &'a [u8], name: &str) -> Option<&'a str> {
    crate::header_map::pairs(map)
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn set_request_header(name: &str, value: Option<&str>) {
    abi::set_header(MapType::HttpRequestHeaders, name, value);
}

/// What the answer's headers need to know (see `answer_headers`).
fn answer_facts<'a>(
    config: &'a Config,
    deployment: usize,
    routed: &Routed,
    call_id: Option<&'a str>,
) -> Option<AnswerFacts<'a>> {
    let history = AttemptHistory {
        tried: routed.replay.as_ref().map_or(0, |r| r.tried.len()),
        chain_position: routed.replay.as_ref().map(|r| r.position),
        fallback_position: routed.fallback_position,
        envoy_retries: routed.envoy_retries_taken,
        mock_retries: routed.mock_retries,
    };
    Some(AnswerFacts {
        deployment: config.deployment(deployment)?,
        attempted_retries: history.attempted_retries(),
        attempted_fallbacks: history.attempted_fallbacks(),
        max_retries: routed.max_retries,
        timeout_ms: routed.timeout_ms,
        show_api_base: routed.show_api_base,
        call_id,
        key_spend: routed.key_charge.as_ref().and_then(|c| c.spend_before),
    })
}

fn set_response_header(name: &str, value: Option<&str>) {
    abi::set_header(MapType::HttpResponseHeaders, name, value);
}

fn attempt_of(
    response: Box<dyn ResponseTranslator>,
    reservation: Reservation,
    requested_model: Option<String>,
) -> Attempt {
    Attempt {
        response,
        deployment: reservation.deployment,
        reservation,
        requested_model,
        status: None,
        first_byte_ms: None,
        settled: false,
    }
}

impl Http {
    fn reply(&mut self, reply: LocalReply) -> Action {
        if let Some(error_type) = reply.error_type {
            self.metrics
                .count(&metrics::errors("", "gateway", error_type), 1);
        }
        for name in &reply.metrics {
            self.metrics.count(name, 1);
        }
        self.state = State::Replied;
        let mut headers: Vec<(&str, &str)> = vec![("content-type", reply.content_type)];
        headers.extend(reply.headers.iter().map(|(k, v)| (*k, v.as_str())));
        if !abi::send_local_response(reply.status, &headers, &reply.body) {
            log(LogLevel::Error, "could not send a local reply");
        }
        Action::Pause
    }

    /// Settle an attempt on the router once: failure, tokens, latency.
    fn settle(metrics: &Metrics, config: &Config, host: &mut WasmHost, attempt: &mut Attempt) {
        if attempt.settled {
            return;
        }
        attempt.settled = true;
        let reservation = &attempt.reservation;
        let failure = attempt
            .status
            .filter(|&s| gateway::is_deployment_failure(s));
        let latency = attempt
            .first_byte_ms
            .map(|t| t.saturating_sub(reservation.started_ms));
        let began_cooling = router::settle(
            config,
            host,
            reservation,
            failure,
            attempt.response.usage().map(|u| u.total_tokens),
            latency,
        );
        if began_cooling {
            metrics.count(&labels(config, reservation.deployment, "").cooldowns(), 1);
        }
    }

    /// Point the request at the chosen deployment; the route matches on `x-llm-cluster`.
    fn forward(&mut self, config: &Config, forward: Forward, body_size: Option<usize>) -> Action {
        let Some(deployment) = config.deployment(forward.deployment()) else {
            return self.reply(
                crate::error::GatewayError::new(
                    crate::error::ErrorKind::ServiceUnavailable,
                    "deployment missing",
                )
                .into(),
            );
        };
        if forward.path != self.client.path {
            set_request_header(":path", Some(&forward.path));
        }
        set_request_header(":authority", Some(&deployment.authority));
        // The client's own key headers were removed with its request headers.
        if let Some((name, value)) = &deployment.auth_header {
            set_request_header(name, Some(value));
        }
        let mut digits = [0u8; 20];
        let knobs = gateway::upstream_knobs(&forward, config.route_defaults.as_ref());
        if let Some(ms) = knobs.timeout_ms {
            set_request_header(
                "x-envoy-upstream-rq-timeout-ms",
                Some(crate::json::decimal(ms, &mut digits)),
            );
        }
        if let Some(first_byte) = forward.first_byte_timeout_ms {
            set_request_header(
                "x-envoy-upstream-rq-per-try-timeout-ms",
                Some(crate::json::decimal(first_byte, &mut digits)),
            );
        }
        // Envoy retries what is safe to repeat on the same deployment; moving to another
        // deployment is the filter's failover.
        if let Some(statuses) = knobs.statuses {
            set_request_header("x-envoy-retriable-status-codes", Some(statuses));
        }
        if let Some(retry_on) = knobs.retry_on {
            set_request_header("x-envoy-retry-on", Some(retry_on));
        }
        if let Some(max) = knobs.max_retries {
            set_request_header(
                "x-envoy-max-retries",
                Some(crate::json::decimal(u64::from(max), &mut digits)),
            );
        }
        for (i, name) in gateway::UPSTREAM_REQUEST_HEADERS_TO_REMOVE
            .iter()
            .enumerate()
        {
            if self.client.to_remove & (1 << i) != 0 {
                set_request_header(name, None);
            }
        }
        if let Some(body) = &forward.body {
            set_request_header(
                "content-length",
                Some(crate::json::decimal(body.len() as u64, &mut digits)),
            );
            if !self.client.json {
                set_request_header("content-type", Some("application/json"));
            }
            let replaced = body_size.unwrap_or(0);
            if !abi::set_buffer(BufferType::HttpRequestBody, 0, replaced, body) {
                log(LogLevel::Error, "could not replace the request body");
            }
        }
        set_request_header("x-llm-cluster", Some(&deployment.cluster));
        let index = forward.deployment();
        let (max_retries, timeout_ms) = (forward.envoy_retries, forward.timeout_ms);
        let Forward {
            response,
            reservation,
            requested_model,
            replay,
            key_charge,
            key_label,
            cache,
            show_api_base,
            fallback_position,
            mock_retries,
            ..
        } = forward;
        let in_flight = self.metrics.route_id(config, index, RouteStat::InFlight);
        if let Some(id) = in_flight {
            let _ = hostcalls::increment_metric(id, 1);
        }
        self.state = State::Routed(Box::new(Routed {
            current: attempt_of(response, reservation, requested_model),
            mode: BodyMode::PassThrough,
            discarding: false,
            replay,
            failover: None,
            key_charge,
            key_label,
            first_body_ms: None,
            in_flight,
            failover_answered: false,
            cache: cache.map(|p| (p, Some(Vec::new()))),
            response_complete: false,
            show_api_base,
            fallback_position,
            mock_retries,
            max_retries,
            envoy_retries_taken: 0,
            timeout_ms,
        }));
        Action::Continue
    }

    /// Stats for the answer the client got: requests by status class, tokens, duration, TTFT,
    /// and errors by type.
    fn record_answer(
        metrics: &Metrics,
        config: &Config,
        key_label: &str,
        attempt: &Attempt,
        status: u16,
        t: Timing,
    ) {
        let d = attempt.deployment;
        let key = if key_label.is_empty() {
            "none"
        } else {
            key_label
        };
        if let Some(id) = metrics.key_id(config, d, key, KeyStat::Requests(status)) {
            add(id, 1);
        }
        if let Some(u) = attempt.response.usage() {
            if let Some(id) = metrics.key_id(config, d, key, KeyStat::PromptTokens) {
                add(id, u.prompt_tokens);
            }
            if let Some(id) = metrics.key_id(config, d, key, KeyStat::CompletionTokens) {
                add(id, u.completion_tokens);
            }
        }
        if let Some(id) = metrics.route_id(config, d, RouteStat::Duration) {
            let _ = hostcalls::record_metric(id, t.now_ms.saturating_sub(t.started_ms));
        }
        if let Some(first) = t.first_body_ms {
            if let Some(id) = metrics.route_id(config, d, RouteStat::TimeToFirstToken) {
                let _ = hostcalls::record_metric(id, first.saturating_sub(t.started_ms));
            }
        }
        if status >= 400 || status == 0 {
            let l = labels(config, d, key_label);
            metrics.count(
                &metrics::errors(
                    &l.group,
                    "upstream",
                    crate::error::upstream_error_type(status),
                ),
                1,
            );
        }
    }

    /// Settle the key's charge with the attempt that answered.
    fn settle_key(
        metrics: &Metrics,
        config: &Config,
        host: &mut WasmHost,
        charge: &mut Option<KeyCharge>,
        attempt: &Attempt,
        key_label: &str,
    ) {
        if let Some(charge) = charge.take() {
            let settled = access::settle(
                host,
                &charge,
                attempt.response.usage(),
                config.deployment(attempt.deployment),
            );
            let micro_usd = (settled.cost * 1e6).round() as u64;
            if micro_usd > 0 {
                metrics.count(&metrics::key_spend(key_label), micro_usd);
            }
            if let Some(used) = settled.budget_used {
                let name = metrics::key_budget_used(key_label);
                if let Some(id) = metrics.id(MetricType::Gauge, &name) {
                    let _ = hostcalls::record_metric(id, (used * 1000.0).round() as u64);
                }
            }
        }
    }

    /// Send every health probe through Envoy; answer once all are back.
    fn probe(&mut self, config: &Config, probes: Vec<gateway::Probe>) -> Action {
        let mut pending = Vec::new();
        let mut results = Vec::new();
        for p in probes {
            let Some(d) = config.deployment(p.deployment) else {
                continue;
            };
            let mut headers: Vec<(&str, &str)> = vec![
                (":method", "GET"),
                (":path", &p.path),
                (":authority", &d.authority),
            ];
            if let Some((name, value)) = &d.auth_header {
                headers.push((name, value.as_str()));
            }
            match hostcalls::dispatch_http_call(
                &d.cluster,
                headers,
                None,
                vec![],
                Duration::from_millis(gateway::HEALTH_PROBE_TIMEOUT_MS),
            ) {
                Ok(token) => pending.push((token, p.deployment)),
                Err(_) => results.push((
                    p.deployment,
                    Err(format!("no Envoy cluster `{}`", d.cluster)),
                )),
            }
        }
        if pending.is_empty() {
            let reply = gateway::health_report(config, &mut self.host, &results);
            return self.reply(reply);
        }
        self.state = State::Probing { pending, results };
        Action::Pause
    }

    /// Start the next failover attempt after a failure with `status`, if any is left; true
    /// when a call is in flight.
    fn start_failover(
        metrics: &Metrics,
        config: &Config,
        host: &mut WasmHost,
        routed: &mut Routed,
        status: u16,
    ) -> bool {
        let Some(replay) = routed.replay.as_mut() else {
            return false;
        };
        routed.failover = Self::next_call(metrics, config, host, replay, status);
        routed.failover.is_some()
    }

    /// The next attempt `replay` offers after a failure with `status`, sent as a callout;
    /// attempts Envoy cannot send are settled as 503s and passed over.
    fn next_call(
        metrics: &Metrics,
        config: &Config,
        host: &mut WasmHost,
        replay: &mut Replay,
        mut status: u16,
    ) -> Option<(u32, Attempt)> {
        while let Some(forward) = gateway::failover(config, host, replay, status) {
            match Self::call(metrics, config, host, forward) {
                Ok(call) => return Some(call),
                Err(()) => status = 503,
            }
        }
        None
    }

    /// Send `forward` to its deployment as an Envoy callout: its token and attempt, or (the
    /// attempt settled as a 503) `Err` when Envoy could not send it.
    fn call(
        metrics: &Metrics,
        config: &Config,
        host: &mut WasmHost,
        mut forward: Forward,
    ) -> Result<(u32, Attempt), ()> {
        let token = config.deployment(forward.deployment()).and_then(|d| {
            let mut digits = [0u8; 20];
            let timeout = crate::json::decimal(forward.timeout_ms, &mut digits);
            let mut headers: Vec<(&str, &str)> = vec![
                (":method", "POST"),
                (":path", &forward.path),
                (":authority", &d.authority),
                ("content-type", "application/json"),
                ("x-envoy-upstream-rq-timeout-ms", timeout),
            ];
            if let Some((name, value)) = &d.auth_header {
                headers.push((name, value.as_str()));
            }
            let body = forward.body.take().unwrap_or_default();
            hostcalls::dispatch_http_call(
                &d.cluster,
                headers,
                Some(&body),
                vec![],
                Duration::from_millis(forward.timeout_ms),
            )
            .ok()
        });
        let mut attempt = attempt_of(
            forward.response,
            forward.reservation,
            forward.requested_model,
        );
        match token {
            Some(token) => Ok((token, attempt)),
            None => {
                attempt.status = Some(503);
                Self::settle(metrics, config, host, &mut attempt);
                Err(())
            }
        }
    }
}

/// A callout's answer through its attempt's translator: status, content type and body as
/// the client gets them.
fn call_answer(
    attempt: &mut Attempt,
    status: u16,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let mode = attempt.response.on_headers(status, content_type);
    match attempt.response.on_body(&body, true) {
        BodyOutput::Complete {
            status,
            content_type,
            body,
        } => (status, content_type.to_string(), body),
        BodyOutput::Replace(out) => {
            let ct = match mode {
                BodyMode::Stream { content_type } => content_type.to_string(),
                _ => content_type.unwrap_or("application/json").to_string(),
            };
            (status, ct, out)
        }
        BodyOutput::Unchanged => (
            status,
            content_type.unwrap_or("application/json").to_string(),
            body,
        ),
    }
}

/// The status of a callout's answer; none at all means the call failed (connection refused,
/// reset, timeout): 503.
fn call_status(headers: &[u8]) -> u16 {
    header(headers, ":status")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(503)
}

fn call_body(body_size: usize) -> Vec<u8> {
    if body_size > 0 {
        abi::buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
    } else {
        Vec::new()
    }
}

impl Context for Http {
    /// A failover attempt answered: try the next one, or send its translated answer.
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.host.callback();
        let Some(config) = self.config.clone() else {
            return;
        };
        if let State::FanOut(fan) = &mut self.state {
            let reply = fan.answered(&self.metrics, &config, &mut self.host, token_id, body_size);
            if let Some(reply) = reply {
                // The fastest model answered: the others' answers will never be read.
                fan.abandon(&self.metrics, &config, &mut self.host);
                self.reply(reply);
            }
            return;
        }
        if let State::Probing { pending, results } = &mut self.state {
            let Some(at) = pending.iter().position(|(t, _)| *t == token_id) else {
                return;
            };
            let (_, deployment) = pending.swap_remove(at);
            let headers = abi::header_map(MapType::HttpCallResponseHeaders);
            let result = header(&headers, ":status")
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| "no answer (connection failed or timed out)".to_string());
            results.push((deployment, result));
            if pending.is_empty() {
                let results = std::mem::take(results);
                let reply = gateway::health_report(&config, &mut self.host, &results);
                self.reply(reply);
            }
            return;
        }
        let State::Routed(routed) = &mut self.state else {
            return;
        };
        let Some((token, mut attempt)) = routed.failover.take() else {
            return;
        };
        if token != token_id {
            routed.failover = Some((token, attempt));
            return;
        }
        let headers = abi::header_map(MapType::HttpCallResponseHeaders);
        let status = call_status(&headers);
        attempt.status = Some(status);
        attempt.first_byte_ms = Some(self.host.now_unix_ms());
        if gateway::is_deployment_failure(status) {
            Self::settle(&self.metrics, &config, &mut self.host, &mut attempt);
            if Self::start_failover(&self.metrics, &config, &mut self.host, routed, status) {
                self.metrics
                    .count_failover(&config, attempt.deployment, routed);
                return;
            }
        }
        let content_type = header(&headers, "content-type");
        let (status, content_type, body) =
            call_answer(&mut attempt, status, content_type, call_body(body_size));
        Self::settle(&self.metrics, &config, &mut self.host, &mut attempt);
        Self::settle_key(
            &self.metrics,
            &config,
            &mut self.host,
            &mut routed.key_charge,
            &attempt,
            &routed.key_label,
        );
        let now = self.host.now_unix_ms();
        let timing = Timing {
            started_ms: self.started_ms,
            first_body_ms: Some(*routed.first_body_ms.get_or_insert(now)),
            now_ms: now,
        };
        routed.failover_answered = true;
        expose_record(&config, &attempt, &routed.key_label);
        Self::record_answer(
            &self.metrics,
            &config,
            &routed.key_label,
            &attempt,
            status,
            timing,
        );
        let mut headers: Vec<(&str, std::borrow::Cow<'_, str>)> =
            vec![("content-type", content_type.as_str().into())];
        let call_id = self.client.request_id.as_deref();
        if let Some(facts) = answer_facts(&config, attempt.deployment, routed, call_id) {
            headers.extend(answer_headers(&config, &facts));
        }
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_ref())).collect();
        let sent = abi::send_local_response(status, &pairs, &body);
        self.state = State::Replied;
        if !sent {
            log(LogLevel::Error, "could not send the failover answer");
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.host.callback();
        self.started_ms = self.host.now_unix_ms();
        let Some(config) = self.config.clone() else {
            return self.reply(
                crate::error::GatewayError::new(
                    crate::error::ErrorKind::ServiceUnavailable,
                    "the gateway has no valid configuration",
                )
                .into(),
            );
        };
        let headers = abi::header_map(MapType::HttpRequestHeaders);
        fn text(v: &[u8]) -> Option<&str> {
            std::str::from_utf8(v).ok()
        }
        let (mut method, mut path) = ("", "");
        let mut keys = crate::auth::KeyHeaders::default();
        let mut tags = None;
        let mut timeout = None;
        let mut content_length = None;
        let mut client = ClientHeaders::default();
        // One pass over the client's headers. Nothing a client sends may choose the cluster,
        // set Envoy's knobs, or carry the client's key upstream.
        for (name, value) in crate::header_map::pairs(&headers) {
            match name {
                ":method" => method = text(value).unwrap_or_default(),
                ":path" => path = text(value).unwrap_or_default(),
                "content-length" => {
                    content_length = text(value).and_then(|v| v.trim().parse().ok());
                }
                "content-type" => client.json = value == b"application/json",
                "x-request-id" => client.request_id = text(value).map(str::to_string),
                _ => {}
            }
            let key_header = crate::auth::key_header(name, config.key_header.as_deref());
            if let Some(which) = key_header {
                // The first of repeated key headers counts.
                keys.take(which, text(value));
                set_request_header(name, None);
            } else if gateway::is_gateway_only_header(name) {
                if name == gateway::TAGS_HEADER {
                    tags = tags.or(text(value));
                } else if name == gateway::TIMEOUT_HEADER {
                    timeout = timeout.or(text(value));
                }
                set_request_header(name, None);
            } else if let Some(i) = gateway::UPSTREAM_REQUEST_HEADERS_TO_REMOVE
                .iter()
                .position(|h| *h == name)
            {
                client.to_remove |= 1 << i;
            }
        }
        client.path = path.to_string();
        self.client = client;
        let head = RequestHead {
            method,
            path,
            key: keys.presented(),
            tags,
            timeout,
            content_length,
            end_of_stream,
        };
        match gateway::on_request_head(&config, &mut self.host, &head) {
            HeadAction::Reply(r) => self.reply(r),
            HeadAction::ReadBody(pending) => {
                self.state = State::AwaitBody(pending);
                Action::Pause
            }
            HeadAction::Forward(f) => self.forward(&config, *f, None),
            HeadAction::Probe(probes) => self.probe(&config, probes),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.host.callback();
        let (Some(config), State::AwaitBody(pending)) = (self.config.clone(), &self.state) else {
            return Action::Continue;
        };
        if body_size as u64 > config.max_request_body_bytes {
            return self.reply(gateway::too_large(&config).into());
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let pending = pending.clone();
        let body = abi::buffer(BufferType::HttpRequestBody, 0, body_size).unwrap_or_default();
        match gateway::on_request_body(&config, &mut self.host, &pending, &body) {
            BodyAction::Forward(forward) => self.forward(&config, *forward, Some(body_size)),
            BodyAction::Reply(reply) => self.reply(reply),
            BodyAction::FanOut(plan) => self.fan_out(&config, plan),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.host.callback();
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        let State::Routed(routed) = &mut self.state else {
            return Action::Continue;
        };
        // Each header read is a host call: one read of the whole map when more than
        // `:status` is wanted (a translator reading the content type; Envoy's attempt count
        // where it may have retried and the answer reports it).
        let wants_attempts =
            crate::answer_headers::reads_attempt_count(&config, routed.max_retries);
        let wants_type = routed.current.response.reads_content_type();
        let (status, content_type) = if wants_attempts || wants_type {
            let map = abi::header_map(MapType::HttpResponseHeaders);
            if wants_attempts {
                routed.envoy_retries_taken = header(&map, "x-envoy-attempt-count")
                    .and_then(|v| v.parse::<u32>().ok())
                    .map_or(0, |n| n.saturating_sub(1));
            }
            let status = header(&map, ":status").and_then(|v| v.parse::<u16>().ok());
            let content_type = if wants_type {
                header(&map, "content-type").map(str::to_string)
            } else {
                None
            };
            (status, content_type)
        } else {
            let status = abi::header(MapType::HttpResponseHeaders, ":status")
                .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u16>().ok());
            (status, None)
        };
        let status = status.unwrap_or(502);
        routed.current.status = Some(status);
        routed.current.first_byte_ms = Some(self.host.now_unix_ms());
        routed.response_complete = end_of_stream;
        if gateway::is_deployment_failure(status) && routed.replay.is_some() {
            Self::settle(&self.metrics, &config, &mut self.host, &mut routed.current);
            let failed = routed.current.deployment;
            if Self::start_failover(&self.metrics, &config, &mut self.host, routed, status) {
                self.metrics.count_failover(&config, failed, routed);
                // Hold this failed answer; the failover's answer replaces it.
                return Action::Pause;
            }
        }
        let call_id = self.client.request_id.as_deref();
        if let Some(facts) = answer_facts(&config, routed.current.deployment, routed, call_id) {
            for (name, value) in answer_headers(&config, &facts) {
                set_response_header(name, Some(&value));
            }
        }
        routed.mode = routed
            .current
            .response
            .on_headers(status, content_type.as_deref());
        if routed.cache.is_some() {
            set_response_header("x-llm-cache", Some("miss"));
            if status != 200 {
                routed.cache = None;
            }
        }
        match &routed.mode {
            BodyMode::PassThrough | BodyMode::Observe => Action::Continue,
            BodyMode::Stream {
                content_type: stream_type,
            } => {
                set_response_header("content-length", None);
                set_response_header("content-encoding", None);
                if content_type.as_deref() != Some(*stream_type) {
                    set_response_header("content-type", Some(stream_type));
                }
                Action::Continue
            }
            // A response without a body has no buffer to replace (and the SDK's set_buffer
            // panics when the host refuses): it passes as it is.
            BodyMode::Buffer if end_of_stream => Action::Continue,
            BodyMode::Buffer => Action::Pause,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.host.callback();
        let State::Routed(routed) = &mut self.state else {
            return Action::Continue;
        };
        if routed.failover.is_some() {
            // The failed attempt's body waits (and is dropped) while the failover runs.
            return Action::Pause;
        }
        if routed.discarding {
            abi::set_buffer(BufferType::HttpResponseBody, 0, body_size, &[]);
            return Action::Continue;
        }
        if body_size > 0 && routed.first_body_ms.is_none() {
            routed.first_body_ms = Some(self.host.now_unix_ms());
        }
        let response = &mut routed.current.response;
        let action = match routed.mode {
            BodyMode::PassThrough => Action::Continue,
            BodyMode::Observe => {
                if let Some(chunk) = abi::buffer(BufferType::HttpResponseBody, 0, body_size) {
                    response.on_body(&chunk, end_of_stream);
                    keep_for_cache(&self.config, &mut routed.cache, &chunk);
                } else if end_of_stream {
                    response.on_body(&[], true);
                }
                Action::Continue
            }
            BodyMode::Stream { .. } => {
                let chunk =
                    abi::buffer(BufferType::HttpResponseBody, 0, body_size).unwrap_or_default();
                match response.on_body(&chunk, end_of_stream) {
                    BodyOutput::Unchanged => {}
                    BodyOutput::Replace(out) | BodyOutput::Complete { body: out, .. } => {
                        abi::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out);
                    }
                }
                Action::Continue
            }
            BodyMode::Buffer => {
                if body_size > MAX_BUFFERED_RESPONSE_BYTES {
                    let out = response.on_overflow();
                    apply_complete(out, body_size, routed.current.status);
                    routed.discarding = !end_of_stream;
                    return Action::Continue;
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                let body =
                    abi::buffer(BufferType::HttpResponseBody, 0, body_size).unwrap_or_default();
                let out = response.on_body(&body, true);
                match &out {
                    BodyOutput::Complete {
                        status: 200, body, ..
                    } => keep_for_cache(&self.config, &mut routed.cache, body),
                    BodyOutput::Unchanged if routed.current.status == Some(200) => {
                        keep_for_cache(&self.config, &mut routed.cache, &body)
                    }
                    _ => routed.cache = None,
                }
                apply_complete(out, body_size, routed.current.status);
                // The headers waited for this whole answer: its cost can go in them.
                if let (Some(config), Some(200)) = (&self.config, routed.current.status) {
                    let cost = config
                        .deployment(routed.current.deployment)
                        .zip(response.usage())
                        .and_then(|(d, usage)| cost_header(config, d, usage));
                    if let Some((name, value)) = cost {
                        set_response_header(name, Some(&value));
                    }
                }
                Action::Continue
            }
        };
        if end_of_stream {
            routed.response_complete = true;
            if let Some(config) = &self.config {
                if let (Some(settings), Some((plan, Some(answer)))) =
                    (&config.cache, routed.cache.take())
                {
                    crate::cache::put(&mut self.host, settings, &plan, &answer);
                }
            }
        }
        action
    }

    /// The stream is over (answered, failed, or abandoned): settle what is not yet settled.
    fn on_log(&mut self) {
        self.host.callback();
        let Some(config) = self.config.clone() else {
            return;
        };
        if let State::FanOut(fan) = &mut self.state {
            fan.abandon(&self.metrics, &config, &mut self.host);
            return;
        }
        if let State::Routed(routed) = &mut self.state {
            // An upstream that breaks off after its headers leaves a 2xx status behind; Envoy's
            // response details tell, and it counts as the deployment's failure.
            let broke_off = !routed.response_complete
                && abi::property(b"response\0code_details")
                    .is_some_and(|d| gateway::is_reset_after_headers(&d));
            if broke_off && !routed.failover_answered {
                routed.current.status = Some(502);
            }
            Self::settle(&self.metrics, &config, &mut self.host, &mut routed.current);
            if let Some((_, attempt)) = routed.failover.as_mut() {
                Self::settle(&self.metrics, &config, &mut self.host, attempt);
            }
            Self::settle_key(
                &self.metrics,
                &config,
                &mut self.host,
                &mut routed.key_charge,
                &routed.current,
                &routed.key_label,
            );
            if !routed.failover_answered {
                // The upstream's own answer went to the client (no failover answered).
                // Envoy's access loggers run after this callback and see the record.
                expose_record(&config, &routed.current, &routed.key_label);
                let status = routed.current.status.unwrap_or(0);
                let timing = Timing {
                    started_ms: self.started_ms,
                    first_body_ms: routed.first_body_ms,
                    now_ms: self.host.now_unix_ms(),
                };
                Self::record_answer(
                    &self.metrics,
                    &config,
                    &routed.key_label,
                    &routed.current,
                    status,
                    timing,
                );
            }
            if let Some(id) = routed.in_flight.take() {
                let _ = hostcalls::increment_metric(id, -1);
            }
        }
    }
}

/// Keep a copy of the answer for the cache, giving up once it outgrows an entry.
fn keep_for_cache(
    config: &Option<Rc<Config>>,
    cache: &mut Option<(crate::cache::Plan, Option<Vec<u8>>)>,
    chunk: &[u8],
) {
    let limit = config
        .as_ref()
        .and_then(|c| c.cache)
        .map_or(0, |c| c.max_entry_bytes) as usize;
    if let Some((_, kept)) = cache {
        if let Some(buf) = kept {
            if buf.len() + chunk.len() > limit {
                *kept = None;
            } else {
                buf.extend_from_slice(chunk);
            }
        }
    }
}

/// The request's access-log record (filter state `wasm.llm_gateway`), set once per request.
fn expose_record(config: &Config, attempt: &Attempt, key_label: &str) {
    let record = metrics::access_record(
        config,
        attempt.deployment,
        key_label,
        attempt.requested_model.as_deref(),
        attempt.response.usage(),
    );
    abi::set_property(b"llm_gateway", &record);
}

/// Replace a held response: status, content type, length and body together.
/// `upstream_status` is what the upstream sent: a status already right is not written again.
/// (The content type is written: reading the upstream's to compare would cost more.)
fn apply_complete(out: BodyOutput, replaced: usize, upstream_status: Option<u16>) {
    let mut digits = [0u8; 20];
    match out {
        BodyOutput::Complete {
            status,
            content_type,
            body,
        } => {
            if upstream_status != Some(status) {
                set_response_header(
                    ":status",
                    Some(crate::json::decimal(u64::from(status), &mut digits)),
                );
            }
            set_response_header("content-type", Some(content_type));
            let length = crate::json::decimal(body.len() as u64, &mut digits);
            set_response_header("content-length", Some(length));
            set_response_header("content-encoding", None);
            abi::set_buffer(BufferType::HttpResponseBody, 0, replaced, &body);
        }
        BodyOutput::Replace(body) => {
            set_response_header("content-encoding", None);
            let length = crate::json::decimal(body.len() as u64, &mut digits);
            set_response_header("content-length", Some(length));
            abi::set_buffer(BufferType::HttpResponseBody, 0, replaced, &body);
        }
        BodyOutput::Unchanged => {}
    }
}
