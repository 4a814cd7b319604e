//! One request's life in the gateway, decided here once for both shells.
//!
//! A shell hands the session what Envoy hands it (events: request head, request body,
//! response head, response body, a callout's answer, the end of the stream) and the session
//! performs its decisions through `Stream` (edit headers and bodies, reply, call out, record,
//! count) and `Host` (clock, randomness, shared records). What the shell returns to Envoy is
//! the session's `Flow`. No shell decides anything: when to fail over, what the answer's
//! headers say, how an attempt is settled, all of it is here and tested natively
//! (`tests.rs`, through `FakeStream` and `FakeHost`).

mod admit;
mod callout;
mod fan_out;
mod fan_out_admit;
pub mod fault;
mod response;
#[cfg(test)]
mod tests;
mod tick;

pub use tick::{TickCalls, Ticker};

use crate::access::KeyCharge;
use crate::config::Config;
use crate::error::{ErrorKind, GatewayError};
use crate::gateway::{self, BodyAction, Forward, HeadAction, LocalReply, Pending, Replay};
use crate::host::Host;
use crate::metrics::Stat;
use crate::router::Reservation;
use crate::translate::{BodyMode, ResponseTranslator};

/// The most response body held while translating a buffered (non-streaming) response.
pub const MAX_BUFFERED_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// What the shell tells Envoy after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Hold the stream (headers stop iteration, a body is buffered) until the session says
    /// otherwise (a reply, or a callout's answer).
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

/// The gateway's stats, as a shell's host keeps them.
pub trait Stats {
    /// Raise a counter (or, for a gauge, move it by `by`). `by == 0` still makes the stat
    /// exist: a key's token counters appear at 0 with its first answer.
    fn add(&mut self, stat: Stat<'_>, by: i64);
    /// Set a gauge.
    fn set(&mut self, stat: Stat<'_>, value: u64);
    /// Record a histogram value.
    fn record(&mut self, stat: Stat<'_>, value: u64);
    /// Make the stat exist (at 0) before its first event.
    fn define(&mut self, stat: Stat<'_>);
}

/// What the session can do to the HTTP stream in front of it, through the shell's host.
/// Reads return owned bytes: the wasm host copies anyway, the native host's views end with
/// the hook.
pub trait Stream: Stats {
    /// Set (`Some`) or remove (`None`) a request header.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// The request body as buffered so far (`size` bytes, as the event said).
    fn request_body(&mut self, size: usize) -> Option<Vec<u8>>;
    /// Replace the `size` bytes of buffered request body with `body`.
    fn replace_request_body(&mut self, size: usize, body: &[u8]) -> bool;
    /// The response headers named in `names`, into `out` at the same positions.
    fn response_headers(&mut self, names: &[&str], out: &mut [Option<String>]);
    fn set_response_header(&mut self, name: &str, value: Option<&str>);
    /// The response body this event holds (`size` bytes).
    fn response_body(&mut self, size: usize) -> Option<Vec<u8>>;
    fn replace_response_body(&mut self, size: usize, body: &[u8]) -> bool;
    /// Answer the client from the gateway; the upstream (if any) is not used.
    fn send_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool;
    /// An HTTP call to an Envoy cluster, answered through `Session::on_callout` with the
    /// returned token; `None` when Envoy could not send it (no such cluster).
    fn call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Option<u32>;
    /// Let a request held by `Flow::Pause` go on upstream (after a callout decided it).
    fn resume_request(&mut self);
    /// The request's access-log record (filter state read by Envoy's access loggers).
    fn set_access_record(&mut self, record: &[u8]);
    /// Envoy's `response.code_details` (why an upstream answer ended).
    fn response_code_details(&mut self) -> Option<Vec<u8>>;
    fn log(&mut self, level: LogLevel, message: &str);
}

/// A callout's answer, as the shell read it: no status means the call failed (connection
/// refused, reset, timeout).
pub struct CalloutAnswer<'a> {
    pub status: Option<u16>,
    pub content_type: Option<&'a str>,
    pub body: Vec<u8>,
}

/// One request, from its headers to its log.
pub struct Session {
    state: State,
    started_ms: u64,
    client: ClientHeaders,
    /// Where a test asked this request to panic (`fault`; never set unless enabled).
    panic_at: Option<fault::PanicAt>,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
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
    /// Waiting for the fleet's rate-limit service to admit the request.
    Admitting(Box<admit::Admitting>),
    /// A fan-out waiting for the fleet's rate-limit service to admit its key's requests.
    AdmittingFanOut(Box<fan_out_admit::FanOutAdmission>),
    /// LiteLLM's fan-out: a callout per model, answered once all are back.
    FanOut(Box<fan_out::FanOut>),
    /// We answered locally; the response events see our own reply and leave it alone.
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
    /// A failover call in flight: its token and the attempt it carries.
    failover: Option<(u32, Attempt)>,
    /// The caller's key charge, settled once with the answering attempt's usage.
    key_charge: Option<KeyCharge>,
    key_label: String,
    /// When the first response body byte passed (time to first token).
    first_body_ms: Option<u64>,
    /// The deployment whose in-flight gauge this request raised.
    in_flight: Option<usize>,
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

fn no_config() -> LocalReply {
    GatewayError::new(
        ErrorKind::ServiceUnavailable,
        "the gateway has no valid configuration",
    )
    .into()
}

impl Session {
    pub fn new() -> Self {
        Session {
            state: State::Head,
            started_ms: 0,
            client: ClientHeaders::default(),
            panic_at: None,
        }
    }

    /// The request's headers, as (lowercase name, value) pairs. Nothing a client sends may
    /// choose the cluster, set Envoy's knobs, or carry the client's key upstream.
    pub fn on_request_headers<'h>(
        &mut self,
        config: Option<&Config>,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
        end_of_stream: bool,
    ) -> Flow {
        self.started_ms = host.now_unix_ms();
        let Some(config) = config else {
            return self.reply(stream, no_config());
        };
        fn text(v: &[u8]) -> Option<&str> {
            std::str::from_utf8(v).ok()
        }
        let (mut method, mut path) = ("", "");
        let mut keys = crate::auth::KeyHeaders::default();
        let mut tags = None;
        let mut timeout = None;
        let mut content_length = None;
        let mut client = ClientHeaders::default();
        for (name, value) in headers {
            match name {
                ":method" => method = text(value).unwrap_or_default(),
                ":path" => path = text(value).unwrap_or_default(),
                "content-length" => {
                    content_length = text(value).and_then(|v| v.trim().parse().ok());
                }
                "content-type" => client.json = value == b"application/json",
                "x-request-id" => client.request_id = text(value).map(str::to_string),
                fault::HEADER if config.test_panics => self.panic_at = fault::PanicAt::parse(value),
                _ => {}
            }
            let key_header = crate::auth::key_header(name, config.key_header.as_deref());
            if let Some(which) = key_header {
                // The first of repeated key headers counts.
                keys.take(which, text(value));
                stream.set_request_header(name, None);
            } else if gateway::is_gateway_only_header(name) {
                if name == gateway::TAGS_HEADER {
                    tags = tags.or(text(value));
                } else if name == gateway::TIMEOUT_HEADER {
                    timeout = timeout.or(text(value));
                }
                stream.set_request_header(name, None);
            } else if let Some(i) = gateway::UPSTREAM_REQUEST_HEADERS_TO_REMOVE
                .iter()
                .position(|h| *h == name)
            {
                client.to_remove |= 1 << i;
            }
        }
        fault::check(&mut self.panic_at, fault::PanicAt::RequestHeaders);
        client.path = path.to_string();
        let head = gateway::RequestHead {
            method,
            path,
            key: keys.presented(),
            tags,
            timeout,
            content_length,
            end_of_stream,
        };
        let action = gateway::on_request_head(config, host, &head);
        self.client = client;
        match action {
            HeadAction::Reply(r) => self.reply(stream, r),
            HeadAction::ReadBody(pending) => {
                self.state = State::AwaitBody(pending);
                Flow::Pause
            }
            // A body-less pass-through: admitted on its key's rpm_limit by the fleet's service.
            HeadAction::Forward(f) if config.rate_limit.is_some() && f.key_charge.is_some() => {
                let replan = admit::Replan {
                    routed: None,
                    body_size: None,
                    asks: 0,
                    key_admitted: false,
                    key_tokens_admitted: false,
                    key_budget_admitted: false,
                    key_fleet_tokens: 0,
                    key_budget_units: 0,
                };
                self.admit(config, host, stream, f, replan)
            }
            HeadAction::Forward(f) => self.forward(config, stream, *f, None),
            HeadAction::Probe(probes) => self.probe(config, host, stream, probes),
        }
    }

    /// The request body so far (`body_size` bytes buffered); acted on once it is whole.
    pub fn on_request_body(
        &mut self,
        config: Option<&Config>,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        fault::check(&mut self.panic_at, fault::PanicAt::RequestBody);
        let (Some(config), State::AwaitBody(pending)) = (config, &self.state) else {
            return Flow::Continue;
        };
        if body_size as u64 > config.max_request_body_bytes {
            return self.reply(stream, gateway::too_large(config).into());
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        let pending = pending.clone();
        let body = stream.request_body(body_size).unwrap_or_default();
        match gateway::on_request_body(config, host, &pending, &body) {
            BodyAction::Forward(forward) if config.rate_limit.is_some() => {
                let replan = admit::Replan {
                    routed: Some((pending, body)),
                    body_size: Some(body_size),
                    asks: 0,
                    key_admitted: false,
                    key_tokens_admitted: false,
                    key_budget_admitted: false,
                    key_fleet_tokens: 0,
                    key_budget_units: 0,
                };
                self.admit(config, host, stream, forward, replan)
            }
            BodyAction::Forward(forward) => self.forward(config, stream, *forward, Some(body_size)),
            BodyAction::Reply(reply) => self.reply(stream, reply),
            BodyAction::FanOut(plan) if config.rate_limit.is_some() => {
                self.admit_fan_out(config, host, stream, plan)
            }
            BodyAction::FanOut(plan) => self.fan_out(config, host, stream, plan),
        }
    }

    fn reply(&mut self, stream: &mut dyn Stream, reply: LocalReply) -> Flow {
        if let Some(error_type) = reply.error_type {
            let name = crate::metrics::errors("", "gateway", error_type);
            stream.add(Stat::Named(&name), 1);
        }
        for name in &reply.metrics {
            stream.add(Stat::Named(name), 1);
        }
        self.state = State::Replied;
        let mut headers: Vec<(&str, &str)> = vec![("content-type", reply.content_type)];
        headers.extend(reply.headers.iter().map(|(k, v)| (*k, v.as_str())));
        if !stream.send_reply(reply.status, &headers, &reply.body) {
            stream.log(LogLevel::Error, "could not send a local reply");
        }
        Flow::Pause
    }

    /// Point the request at the chosen deployment; the route matches on `x-llm-cluster`.
    fn forward(
        &mut self,
        config: &Config,
        stream: &mut dyn Stream,
        forward: Forward,
        body_size: Option<usize>,
    ) -> Flow {
        let Some(deployment) = config.deployment(forward.deployment()) else {
            let missing = GatewayError::new(ErrorKind::ServiceUnavailable, "deployment missing");
            return self.reply(stream, missing.into());
        };
        if forward.path != self.client.path {
            stream.set_request_header(":path", Some(&forward.path));
        }
        stream.set_request_header(":authority", Some(&deployment.authority));
        // The client's own key headers were removed with its request headers.
        if let Some((name, value)) = &deployment.auth_header {
            stream.set_request_header(name, Some(value));
        }
        let mut digits = [0u8; 20];
        let knobs = gateway::upstream_knobs(&forward, config.route_defaults.as_ref());
        if let Some(ms) = knobs.timeout_ms {
            let ms = crate::json::decimal(ms, &mut digits);
            stream.set_request_header("x-envoy-upstream-rq-timeout-ms", Some(ms));
        }
        if let Some(first_byte) = forward.first_byte_timeout_ms {
            let ms = crate::json::decimal(first_byte, &mut digits);
            stream.set_request_header("x-envoy-upstream-rq-per-try-timeout-ms", Some(ms));
        }
        // Envoy retries what is safe to repeat on the same deployment; moving to another
        // deployment is the session's failover.
        if let Some(statuses) = knobs.statuses {
            stream.set_request_header("x-envoy-retriable-status-codes", Some(statuses));
        }
        if let Some(retry_on) = knobs.retry_on {
            stream.set_request_header("x-envoy-retry-on", Some(retry_on));
        }
        if let Some(max) = knobs.max_retries {
            let max = crate::json::decimal(u64::from(max), &mut digits);
            stream.set_request_header("x-envoy-max-retries", Some(max));
        }
        for (i, name) in gateway::UPSTREAM_REQUEST_HEADERS_TO_REMOVE
            .iter()
            .enumerate()
        {
            if self.client.to_remove & (1 << i) != 0 {
                stream.set_request_header(name, None);
            }
        }
        if let Some(body) = &forward.body {
            let length = crate::json::decimal(body.len() as u64, &mut digits);
            stream.set_request_header("content-length", Some(length));
            if !self.client.json {
                stream.set_request_header("content-type", Some("application/json"));
            }
            if !stream.replace_request_body(body_size.unwrap_or(0), body) {
                stream.log(LogLevel::Error, "could not replace the request body");
            }
        }
        stream.set_request_header("x-llm-cluster", Some(&deployment.cluster));
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
        stream.add(Stat::InFlight { deployment: index }, 1);
        self.state = State::Routed(Box::new(Routed {
            current: attempt_of(response, reservation, requested_model),
            mode: BodyMode::PassThrough,
            discarding: false,
            replay,
            failover: None,
            key_charge,
            key_label,
            first_body_ms: None,
            in_flight: Some(index),
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
        Flow::Continue
    }
}
