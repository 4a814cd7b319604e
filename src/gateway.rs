//! The request lifecycle as pure decisions: what to do with the request head, and with the
//! whole body once it is buffered. The filter turns these decisions into host calls.

use crate::access::{self, KeyCharge};
use crate::cache;
use crate::config::{Config, Deployment, Provider, TritonMode};
use crate::error::{ErrorKind, GatewayError};
use crate::host::Host;
use crate::keys::Principal;
use crate::request::{classify, Endpoint, Inference, InferenceBody};
use crate::router::{self, Reservation};
use crate::scope::{Scope, Target};
use crate::translate::openai_compat::OpenAiCompat;
use crate::translate::triton_generate::TritonGenerate;
use crate::translate::triton_infer::TritonInfer;
use crate::translate::{ResponseContext, ResponseTranslator, Translator, JSON};
use crate::{key_api, listing};

pub use crate::health::{health_probes, health_report, Probe, HEALTH_PROBE_TIMEOUT_MS};

/// Request headers removed before any upstream. The gateway reads upstream bodies (to
/// translate them, normalise errors and count tokens), so it asks for them uncompressed:
/// Triton, for one, gzips `/infer` answers for clients that accept it. Compression towards
/// the client stays Envoy's job (its compressor filter).
pub const UPSTREAM_REQUEST_HEADERS_TO_REMOVE: [&str; 1] = ["accept-encoding"];

use crate::retry::same_deployment_retries;
pub use crate::retry::{
    failover, is_deployment_failure, is_reset_after_headers, upstream_knobs, Replay, RouteDefaults,
    StatusRetries, UpstreamKnobs, ENVOY_RETRY_ON,
};

/// LiteLLM's request-tags header (tag routing); consumed here, never sent upstream.
pub const TAGS_HEADER: &str = "x-litellm-tags";

/// Client headers removed before routing (besides the key headers): nothing a client sends
/// may choose the cluster or set Envoy's knobs, and the gateway's own inputs stay here.
pub fn is_gateway_only_header(name: &str) -> bool {
    name.starts_with("x-envoy-")
        || name == "x-llm-cluster"
        || name == TAGS_HEADER
        || name == TIMEOUT_HEADER
}

/// LiteLLM's per-request timeout header (seconds); the body's `timeout` wins over it.
pub const TIMEOUT_HEADER: &str = "x-litellm-timeout";

/// What the filter knows at request-header time.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The client key (`auth::KeyHeaders::presented`).
    pub key: Option<&'a str>,
    /// The `x-litellm-tags` header.
    pub tags: Option<&'a str>,
    /// The `x-litellm-timeout` header.
    pub timeout: Option<&'a str>,
    pub content_length: Option<u64>,
    /// The request has no body.
    pub end_of_stream: bool,
}

/// A response the filter sends itself.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    /// The OpenAI error type when this reply is an error (for metrics).
    pub error_type: Option<&'static str>,
    /// Counters to raise by one when this reply is sent (cache hits, cooldowns, refusals).
    pub metrics: Vec<String>,
}

impl LocalReply {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        LocalReply {
            status,
            content_type: JSON,
            body,
            headers: Vec::new(),
            error_type: None,
            metrics: Vec::new(),
        }
    }
}

impl From<GatewayError> for LocalReply {
    fn from(e: GatewayError) -> Self {
        let mut reply = LocalReply::json(e.status(), e.to_json());
        reply.error_type = Some(e.kind.error_type());
        if let Some(secs) = e.retry_after {
            reply.headers.push(("retry-after", secs.to_string()));
        }
        if let ErrorKind::MethodNotAllowed = e.kind {
            if let Some(allow) = e.param.as_ref() {
                reply.headers.push(("allow", allow.clone()));
            }
        }
        reply
    }
}

/// A request on its way to a deployment: only ever made from a router reservation, which
/// only exists for a group the caller may use (`scope`).
pub struct Forward {
    pub path: String,
    /// `None`: the body (if any) goes upstream unchanged.
    pub body: Option<Vec<u8>>,
    pub response: Box<dyn ResponseTranslator>,
    /// Upstream timeout for this attempt (the whole response).
    pub timeout_ms: u64,
    /// For streams with `stream_timeout`: the time the upstream has to start answering
    /// (Envoy's per-try timeout, which ends at the response headers, measured here).
    pub first_byte_timeout_ms: Option<u64>,
    /// Envoy retries on the same deployment: connection failures and resets, and for a
    /// group of one deployment also the statuses `retry_statuses` says.
    pub envoy_retries: u32,
    pub retry_statuses: StatusRetries,
    /// The deployment, counted on the router; settled once the response is known.
    pub reservation: Reservation,
    /// What it takes to try another deployment or group if this one fails.
    pub replay: Option<Replay>,
    /// The model the client asked for, when a wildcard group serves it (for the access log).
    pub requested_model: Option<String>,
    /// What the caller's key was charged, settled when the request ends.
    pub key_charge: Option<KeyCharge>,
    /// The caller as a stat label: the key's alias, `master`, or `none`.
    pub key_label: String,
    /// Store a successful answer in the response cache under this plan.
    pub cache: Option<crate::cache::Plan>,
    /// The caller may see the deployment's `api_base` (LiteLLM's answer header).
    pub show_api_base: bool,
    /// Groups of the request's chain passed over before this one (fallbacks taken).
    pub fallback_position: u32,
    /// Tries LiteLLM's `mock_testing_rate_limit_error` pretends were made (reported only).
    pub mock_retries: u32,
}

impl Forward {
    pub fn deployment(&self) -> usize {
        self.reservation.deployment
    }
}

/// A request waiting for its body: where it goes and who sent it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub endpoint: Endpoint,
    pub principal: Principal,
    /// Tags from the `x-litellm-tags` header (only read when tag routing is on).
    pub header_tags: Vec<String>,
    /// The `x-litellm-timeout` header, in milliseconds.
    pub header_timeout_ms: Option<u64>,
}

/// What to do once the whole body is in.
pub enum BodyAction {
    Forward(Box<Forward>),
    Reply(LocalReply),
    /// LiteLLM's fan-out (`"model": "a,b"`): one request per model, sent as callouts, then
    /// one answer: theirs listed, or the fastest success (`fan_out::ready`).
    FanOut(FanOutPlan),
}

/// A fan-out's requests, and whether the first model to succeed answers alone (LiteLLM's
/// `fastest_response`) instead of the list of all.
pub struct FanOutPlan {
    pub arms: Vec<FanArm>,
    pub first_success: bool,
}

/// One model of a fan-out: a request to send, or its answer already known (refused, mocked).
pub enum FanArm {
    Call(Box<Forward>),
    Answered(LocalReply),
}

pub enum HeadAction {
    Reply(LocalReply),
    /// `GET /health`: call each probe through Envoy, then `health_report`.
    Probe(Vec<Probe>),
    /// Buffer the body, then call `on_request_body`.
    ReadBody(Pending),
    Forward(Box<Forward>),
}

pub fn on_request_head(config: &Config, host: &mut dyn Host, head: &RequestHead<'_>) -> HeadAction {
    let endpoint = classify(head.method, head.path);
    let principal = match access::authorize(config, &endpoint, head.key, host.now_unix_ms() / 1000)
    {
        Ok(p) => p,
        Err(e) => return HeadAction::Reply(e.into()),
    };
    if head
        .content_length
        .is_some_and(|len| len > config.max_request_body_bytes)
    {
        return HeadAction::Reply(too_large(config).into());
    }
    let header_tags = match head.tags {
        Some(v) if config.router.tag_filtering => crate::tags::from_header(v),
        _ => Vec::new(),
    };
    let header_timeout_ms = head
        .timeout
        .and_then(crate::answer_headers::request_timeout_ms);
    match endpoint {
        Endpoint::Inference(_) | Endpoint::AzureDeployment(..) | Endpoint::KeyGenerate => {
            if head.end_of_stream {
                HeadAction::Reply(
                    GatewayError::invalid_request("request body is empty; expected a JSON object")
                        .into(),
                )
            } else {
                HeadAction::ReadBody(Pending {
                    endpoint,
                    principal,
                    header_tags,
                    header_timeout_ms,
                })
            }
        }
        Endpoint::Vllm(rest) => {
            if head.end_of_stream {
                match crate::passthrough::vllm_forward(config, host, &principal, &rest, None) {
                    Ok(f) => HeadAction::Forward(Box::new(f)),
                    Err(e) => HeadAction::Reply(e.into()),
                }
            } else {
                HeadAction::ReadBody(Pending {
                    endpoint: Endpoint::Vllm(rest),
                    principal,
                    header_tags,
                    header_timeout_ms,
                })
            }
        }
        Endpoint::HealthProbe => {
            HeadAction::Probe(health_probes(config, &Scope::of(config, &principal)))
        }
        other => HeadAction::Reply(local_endpoint(config, host, &principal, &other)),
    }
}

pub fn too_large(config: &Config) -> GatewayError {
    GatewayError::new(
        ErrorKind::PayloadTooLarge,
        format!(
            "request body exceeds the gateway limit of {} bytes",
            config.max_request_body_bytes
        ),
    )
}

fn local_endpoint(
    config: &Config,
    host: &dyn Host,
    principal: &Principal,
    endpoint: &Endpoint,
) -> LocalReply {
    let scope = || Scope::of(config, principal);
    match endpoint {
        Endpoint::ListModels => LocalReply::json(200, listing::models_list(config, &scope())),
        Endpoint::ListAccessGroups => {
            LocalReply::json(200, listing::access_groups_list(config, &scope()))
        }
        Endpoint::GetModel(id) => match listing::model_object(config, &scope(), id) {
            Ok(body) => LocalReply::json(200, body),
            Err(e) => e.into(),
        },
        Endpoint::Liveliness => LocalReply::json(200, br#""I'm alive!""#.to_vec()),
        Endpoint::Readiness | Endpoint::ReadinessDetails => {
            LocalReply::json(200, crate::health::readiness(config))
        }
        Endpoint::Routes => LocalReply::json(200, crate::health::ROUTES.as_bytes().to_vec()),
        Endpoint::V1Live => LocalReply::json(200, br#"{"message":"Service is live."}"#.to_vec()),
        Endpoint::V1Ready => {
            if !router::any_usable(config, host) {
                GatewayError::new(ErrorKind::ServiceUnavailable, "Service is not ready.").into()
            } else {
                LocalReply::json(200, br#"{"message":"Service is ready."}"#.to_vec())
            }
        }
        Endpoint::ModelInfo => LocalReply::json(
            200,
            listing::model_info(config, &scope(), listing::shows_upstreams(principal)),
        ),
        Endpoint::ModelGroupInfo => {
            LocalReply::json(200, listing::model_group_info(config, &scope()))
        }
        // Probing happens at header time (`HeadAction::Probe`); a body never comes here.
        Endpoint::HealthProbe => LocalReply::json(
            200,
            br#"{"healthy_endpoints":[],"unhealthy_endpoints":[],"healthy_count":0,"unhealthy_count":0}"#.to_vec(),
        ),
        Endpoint::KeyInfo(queried) => {
            key_api::info(config, host, principal, queried.as_deref()).unwrap_or_else(LocalReply::from)
        }
        Endpoint::KeyGenerate => {
            GatewayError::invalid_request("POST a JSON body to /key/generate").into()
        }
        Endpoint::MethodNotAllowed(allowed) => GatewayError::new(
            ErrorKind::MethodNotAllowed,
            format!("method not allowed; use {allowed}"),
        )
        .with_param(*allowed)
        .into(),
        Endpoint::NotFound
        | Endpoint::Inference(_)
        | Endpoint::AzureDeployment(..)
        | Endpoint::Vllm(_) => {
            GatewayError::new(ErrorKind::NotFound, "no such endpoint")
                .with_code("not_found")
                .into()
        }
    }
}

/// The whole request body has arrived.
pub fn on_request_body(
    config: &Config,
    host: &mut dyn Host,
    pending: &Pending,
    body: &[u8],
) -> BodyAction {
    if body.len() as u64 > config.max_request_body_bytes {
        return BodyAction::Reply(too_large(config).into());
    }
    let forwarded = match &pending.endpoint {
        Endpoint::Inference(kind) => match inference(config, host, pending, *kind, body) {
            Ok(action) => return action,
            Err(e) => Err(e),
        },
        Endpoint::AzureDeployment(kind, model) => {
            let body = crate::request::with_model(body, model);
            match inference(config, host, pending, *kind, &body) {
                Ok(action) => return action,
                Err(e) => Err(e),
            }
        }
        Endpoint::Vllm(rest) => {
            crate::passthrough::vllm_forward(config, host, &pending.principal, rest, Some(body))
        }
        Endpoint::KeyGenerate => {
            return BodyAction::Reply(
                key_api::generate(config, host, body).unwrap_or_else(LocalReply::from),
            )
        }
        other => return BodyAction::Reply(local_endpoint(config, host, &pending.principal, other)),
    };
    match forwarded {
        Ok(f) => BodyAction::Forward(Box::new(f)),
        Err(e) => BodyAction::Reply(e.into()),
    }
}

/// Each model of a fan-out as a request of its own (its `model` set to the one name, so
/// none fans out again): checked, charged and routed as if the client had sent it alone.
fn fan_out(
    config: &Config,
    host: &mut dyn Host,
    pending: &Pending,
    kind: Inference,
    body: &[u8],
    names: &[&str],
    first_success: bool,
) -> BodyAction {
    let arms = names
        .iter()
        .map(|name| {
            let one = crate::request::with_model(body, name);
            match inference(config, host, pending, kind, &one) {
                Ok(BodyAction::Forward(mut forward)) => {
                    // A callout needs the body even where the upstream takes it unchanged.
                    forward.body.get_or_insert(one);
                    FanArm::Call(forward)
                }
                Ok(BodyAction::Reply(reply)) => FanArm::Answered(reply),
                Ok(BodyAction::FanOut(_)) => FanArm::Answered(
                    GatewayError::invalid_request("a fan-out inside a fan-out").into(),
                ),
                Err(e) => FanArm::Answered(e.into()),
            }
        })
        .collect();
    BodyAction::FanOut(FanOutPlan {
        arms,
        first_success,
    })
}

fn inference(
    config: &Config,
    host: &mut dyn Host,
    pending: &Pending,
    kind: Inference,
    body: &[u8],
) -> Result<BodyAction, GatewayError> {
    let principal = &pending.principal;
    let mut request = InferenceBody::parse(kind, body)?;
    // LiteLLM applies a key's own aliases before anything else looks at the name; the
    // model they give is then checked against the key's `models` like any other.
    if let Some(to) = principal.model_alias(&request.model) {
        request.model = to.to_string();
    }
    request.overrides.timeout_ms = request.overrides.timeout_ms.or(pending.header_timeout_ms);
    let tags = if config.router.tag_filtering {
        let mut tags = request.request_tags()?;
        tags.extend(pending.header_tags.iter().cloned());
        tags
    } else {
        Vec::new()
    };
    if let Some(names) = crate::fan_out::names(config, &request.model) {
        crate::fan_out::check(&names, request.stream)?;
        let first_success = request.fastest_response;
        return Ok(fan_out(
            config,
            host,
            pending,
            kind,
            body,
            &names,
            first_success,
        ));
    }
    let scope = Scope::of(config, principal);
    let switches = request.test_switches;
    if switches.any() {
        crate::mock::check_test_switches(config, &switches)?;
    }
    let first = scope.admit(config, &request.model, "model")?;
    // Fallbacks from the body are the client's choice: each must be a group it may use,
    // checked before anything is read from the cache or sent.
    let body_fallbacks = admit_all(config, &scope, &request.overrides.fallbacks, "fallbacks")?;
    let body_window_fallbacks = admit_all(
        config,
        &scope,
        &request.overrides.context_window_fallbacks,
        "context_window_fallbacks",
    )?;
    if let Some(content) = request.mock_response.as_deref() {
        if crate::mock::may_mock(principal) {
            let ctx = response_context(host, kind, &request.model);
            if let Some(reply) = crate::mock::reply(config, first.group(), &request, content, &ctx)
            {
                return Ok(BodyAction::Reply(reply));
            }
        }
    }
    let cache_plan = cache_plan(config, &scope, first, &request, &tags, body);
    if let (Some(plan), Some(settings)) = (&cache_plan, &config.cache) {
        if plan.read {
            if let Some(answer) = cache::get(host, settings, plan) {
                return Ok(BodyAction::Reply(cached_reply(
                    config,
                    first.group(),
                    answer,
                )));
            }
        }
    }
    let prompt_tokens = (request.payload.get().len() as u64).div_ceil(4);
    let estimated_tokens = prompt_tokens + request.max_tokens.unwrap_or(0);
    let groups = group_chain(
        config,
        first,
        body_fallbacks,
        body_window_fallbacks,
        &request,
        prompt_tokens,
    )?;
    if switches.timeout {
        return Ok(BodyAction::Reply(crate::mock::timeout_reply(
            config, first, &request,
        )));
    }
    // `mock_testing_fallbacks`: the first group fails, as LiteLLM's mock does.
    let skip = usize::from(switches.fallbacks);
    if skip >= groups.len() {
        return Err(crate::mock::fallback_failure(&request.model));
    }
    let rpm_share = crate::fleet::key_rpm_share(config, host, principal);
    let key_charge = match access::charge(host, principal, estimated_tokens, rpm_share) {
        Ok(charge) => charge,
        Err(e) => {
            let reason = match (e.kind, e.code.as_deref()) {
                (ErrorKind::BudgetExceeded, _) => "budget",
                (_, Some("max_parallel_requests_exceeded")) => "parallel",
                _ => "rate_limit",
            };
            let mut reply = LocalReply::from(e);
            reply
                .metrics
                .push(crate::metrics::key_refusals(&key_label(principal), reason));
            return Ok(BodyAction::Reply(reply));
        }
    };
    let chain = Chain {
        groups,
        start: skip,
    };
    let routed = route(config, host, body, &request, chain, estimated_tokens, tags);
    // `mock_testing_rate_limit_error`: as if a first try had got a 429 and been retried.
    let routed = match routed {
        Ok(mut forward) if switches.rate_limit_error => {
            if forward.envoy_retries == 0 {
                router::settle(config, host, &forward.reservation, None, Some(0), None);
                Err(crate::mock::rate_limit_failure(&request.model))
            } else {
                forward.mock_retries = 1;
                Ok(forward)
            }
        }
        other => other,
    };
    match routed {
        Ok(mut forward) => {
            forward.key_charge = key_charge;
            forward.key_label = key_label(principal);
            forward.show_api_base = listing::shows_upstreams(principal);
            forward.cache = cache_plan.filter(|p| p.write);
            Ok(BodyAction::Forward(Box::new(forward)))
        }
        Err(e) => {
            // Nothing was served: the key gets its request and tokens back.
            if let Some(charge) = &key_charge {
                access::refund(host, charge);
            }
            Err(e)
        }
    }
}

fn route(
    config: &Config,
    host: &mut dyn Host,
    body: &[u8],
    request: &InferenceBody<'_>,
    chain: Chain,
    estimated_tokens: u64,
    tags: Vec<String>,
) -> Result<Forward, GatewayError> {
    let Chain { groups, start } = chain;
    // The most retries any failure could allow: whether a copy of the body is worth keeping.
    let configured = config.router.most_retries();
    let mut first_error = None;
    for (position, &target) in groups.iter().enumerate().skip(start) {
        let Some(group) = config.groups.get(target.group()) else {
            continue;
        };
        let picked = crate::tags::excluded(config, target.group(), &tags)
            .and_then(|excluded| router::pick(config, host, target, estimated_tokens, &excluded));
        match picked {
            Ok(reservation) => {
                // The request's num_retries, else the deployment's, else the router's.
                let deployment_retries = config
                    .deployment(reservation.deployment)
                    .and_then(|d| d.num_retries);
                let retries = request
                    .overrides
                    .num_retries
                    .or(deployment_retries)
                    .unwrap_or(configured);
                // The body is kept only when there is somewhere else to send it.
                let elsewhere =
                    position + 1 < groups.len() || (retries > 0 && group.deployments.len() > 1);
                let replay = elsewhere.then(|| Replay {
                    kind: request.kind,
                    body: body.to_vec(),
                    groups: groups.clone(),
                    position,
                    tried: vec![reservation.deployment],
                    num_retries: request.overrides.num_retries,
                    retries_used: 0,
                    fallback_messages: request
                        .overrides
                        .fallback_messages
                        .iter()
                        .filter_map(|(name, m)| Some((config.resolve_index(name)?, m.clone())))
                        .collect(),
                    estimated_tokens,
                    tags,
                });
                let mut forward = attempt(config, host, request, reservation, replay)?;
                forward.fallback_position = position as u32;
                return Ok(forward);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        GatewayError::new(ErrorKind::ServiceUnavailable, "no model group to route to")
    }))
}

/// The groups a request may go to, and the one to start at (`mock_testing_fallbacks`
/// starts past the first, as if it had failed).
struct Chain {
    groups: Vec<Target>,
    start: usize,
}

/// Each name of a body's fallback list as a group the caller may use: 404 for a name the
/// gateway does not know, 403 for one the caller may not use, naming it and the field.
fn admit_all(
    config: &Config,
    scope: &Scope,
    names: &Option<Vec<String>>,
    param: &'static str,
) -> Result<Option<Vec<Target>>, GatewayError> {
    names
        .as_ref()
        .map(|names| {
            names
                .iter()
                .map(|n| scope.admit(config, n, param))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
}

/// How this request uses the response cache: non-streaming requests only, keyed by the
/// group, the endpoint, the caller's model scope and the normalised body.
fn cache_plan(
    config: &Config,
    scope: &Scope,
    target: Target,
    request: &InferenceBody<'_>,
    tags: &[String],
    body: &[u8],
) -> Option<cache::Plan> {
    let settings = config.cache.as_ref()?;
    let controls = request.overrides.cache;
    if request.stream || !(controls.read || controls.write) {
        return None;
    }
    // Callers that may use different groups never share answers, nor do requests whose
    // tags send them to different deployments.
    let mut scope = scope.cache_scope(config);
    if !tags.is_empty() {
        let mut sorted: Vec<&str> = tags.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        scope.push_str("\ntags:");
        scope.push_str(&sorted.join(","));
    }
    let name = config.groups.get(target.group())?.name.as_str();
    let endpoint = request.kind.object_name();
    Some(cache::Plan {
        hash: cache::key(name, endpoint, &scope, body)?,
        read: controls.read,
        write: controls.write,
        ttl_ms: controls.ttl_ms.unwrap_or(settings.ttl_ms),
    })
}

fn cached_reply(config: &Config, group: usize, answer: Vec<u8>) -> LocalReply {
    let mut reply = LocalReply::json(200, answer);
    reply.headers.push(("x-llm-cache", "hit".to_string()));
    if let Some(g) = config.groups.get(group) {
        reply
            .headers
            .push(("x-llm-model-group", g.header_name.clone()));
        reply
            .metrics
            .push(crate::metrics::cache_hits(&g.metric_label));
    }
    reply
}

/// The caller as a stat label: a key's alias (never the key), `master`, or `none`.
pub fn key_label(principal: &Principal) -> String {
    match principal {
        Principal::Open => "none".into(),
        Principal::Master => "master".into(),
        Principal::Key(g) => crate::metrics::label(g.alias.as_deref().unwrap_or("unnamed")),
    }
}

/// The groups a request may use, in order: the one it names (or, when the prompt is longer
/// than that group's context window, its context-window fallbacks), then its fallbacks.
/// The body's lists (already admitted for the caller) replace the operator's.
fn group_chain(
    config: &Config,
    first: Target,
    body_fallbacks: Option<Vec<Target>>,
    body_window_fallbacks: Option<Vec<Target>>,
    request: &InferenceBody<'_>,
    prompt_tokens: u64,
) -> Result<Vec<Target>, GatewayError> {
    // LiteLLM's `mock_testing_context_fallbacks`: as if the prompt were too long for the
    // first group, so its context_window_fallbacks are used.
    let too_long_for_first = request.test_switches.context_fallbacks;
    let fits = |t: Target| -> bool {
        let Some(group) = config.groups.get(t.group()) else {
            return false;
        };
        group.deployments.iter().any(|&i| {
            config
                .deployment(i)
                .is_some_and(|d| d.max_input_tokens.is_none_or(|max| prompt_tokens <= max))
        })
    };
    let head = if fits(first) && !too_long_for_first {
        first
    } else {
        let window =
            body_window_fallbacks.unwrap_or_else(|| first.config_context_window_fallbacks(config));
        match window.into_iter().find(|&t| fits(t)) {
            Some(t) => t,
            None => {
                return Err(GatewayError::invalid_request(format!(
                    "the prompt (about {prompt_tokens} tokens) exceeds the context window of `{}`, and no context_window_fallbacks group fits it",
                    request.model
                ))
                .with_param("messages")
                .with_code("context_length_exceeded"))
            }
        }
    };
    let mut chain = vec![head];
    let fallbacks = body_fallbacks.unwrap_or_else(|| head.config_fallbacks(config));
    for t in fallbacks {
        if chain.len() > crate::config::MAX_FALLBACKS {
            break;
        }
        if !chain.contains(&t) {
            chain.push(t);
        }
    }
    Ok(chain)
}

/// Translate the request for the reserved deployment; a request the deployment cannot take
/// (400) releases the reservation.
pub(crate) fn attempt(
    config: &Config,
    host: &mut dyn Host,
    request: &InferenceBody<'_>,
    reservation: Reservation,
    replay: Option<Replay>,
) -> Result<Forward, GatewayError> {
    let Some(configured) = config.deployment(reservation.deployment) else {
        return Err(GatewayError::new(
            ErrorKind::ServiceUnavailable,
            "deployment missing",
        ));
    };
    // A wildcard deployment sends the requested name on: `openai/gpt-4o` asked of
    // `openai/*` goes upstream as `gpt-4o`.
    let completed = configured
        .wildcard
        .as_ref()
        .map(|before| wildcard_deployment(config, configured, before, &request.model));
    let deployment = completed.as_ref().unwrap_or(configured);
    let translator = translator_for(deployment);
    let ctx = if translator.writes_responses() {
        response_context(host, request.kind, &request.model)
    } else {
        ResponseContext::default()
    };
    let (envoy_retries, retry_statuses) =
        same_deployment_retries(config, configured, request.overrides.num_retries);
    match translator.translate_request(config, deployment, request, ctx) {
        Ok(upstream) => Ok(Forward {
            path: upstream.path,
            body: upstream.body,
            response: upstream.response,
            timeout_ms: request
                .overrides
                .timeout_ms
                .unwrap_or(deployment.timeout_ms),
            first_byte_timeout_ms: deployment
                .stream_timeout_ms
                .filter(|_| request.stream && request.overrides.timeout_ms.is_none()),
            envoy_retries,
            retry_statuses,
            reservation,
            replay,
            requested_model: completed.map(|_| request.model.clone()),
            key_charge: None,
            key_label: String::new(),
            cache: None,
            show_api_base: false,
            fallback_position: 0,
            mock_retries: 0,
        }),
        Err(e) => {
            router::settle(config, host, &reservation, None, Some(0), None);
            Err(e)
        }
    }
}

/// A wildcard deployment completed with the requested name: the part after the group's
/// prefix (the whole name when the request came through a fallback to this group).
pub(crate) fn wildcard_deployment(
    config: &Config,
    deployment: &Deployment,
    before: &str,
    requested: &str,
) -> Deployment {
    let prefix = config
        .groups
        .get(deployment.group)
        .and_then(|g| g.wildcard_prefix.as_deref())
        .unwrap_or("");
    let rest = requested.strip_prefix(prefix).unwrap_or(requested);
    let upstream = format!("{before}{rest}");
    Deployment {
        upstream_model_json: serde_json::to_string(&upstream).unwrap_or_default(),
        upstream_model: upstream,
        ..deployment.clone()
    }
}

fn response_context(host: &mut dyn Host, kind: Inference, model: &str) -> ResponseContext {
    let prefix = match kind {
        Inference::Chat => "chatcmpl-",
        Inference::Completions => "cmpl-",
        Inference::Embeddings => "embd-",
    };
    // 24 hex digits after the prefix, written without `format!` (this runs for every request).
    let (high, low) = (host.random_u64(), host.random_u64() as u32);
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    for shift in (0..16).rev() {
        id.push(hex_digit(high >> (shift * 4)));
    }
    for shift in (0..8).rev() {
        id.push(hex_digit(u64::from(low) >> (shift * 4)));
    }
    ResponseContext {
        requested_model: model.to_string(),
        id,
        created: host.now_unix_ms() / 1000,
        include_usage: false,
    }
}

fn hex_digit(v: u64) -> char {
    char::from_digit((v & 0xf) as u32, 16).unwrap_or('0')
}

fn translator_for(deployment: &Deployment) -> &'static dyn Translator {
    match deployment.provider {
        Provider::OpenAiCompatible {
            text_completion: true,
            ..
        } => &crate::translate::openai_text::OpenAiTextCompletion,
        Provider::OpenAiCompatible { .. } => &OpenAiCompat,
        Provider::Triton {
            mode: TritonMode::Generate,
            ..
        } => &TritonGenerate,
        Provider::Triton { .. } => &TritonInfer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::host::FakeHost;

    const CONFIG: &str = r#"{
      "model_list": [
        {"model_name": "chat", "litellm_params": {"model": "hosted_vllm/real-chat", "api_base": "http://127.0.0.1:9001/v1"}},
        {"model_name": "chat", "litellm_params": {"model": "openai/other-chat", "api_base": "http://127.0.0.1:9002", "api_key": "up-key"}},
        {"model_name": "emb", "litellm_params": {"model": "openai/e5", "api_base": "http://127.0.0.1:9002"}}
      ],
      "router_settings": {"model_group_alias": {"gpt-4o": "chat", "secret": {"model": "chat", "hidden": true}}},
      "general_settings": {"master_key": "sk-master"}
    }"#;

    fn config() -> Config {
        parse(CONFIG.as_bytes(), &|_| None, 1000).unwrap().0
    }

    /// A group as the master key may use it.
    fn all(c: &Config, group: usize) -> Target {
        Scope::of(c, &Principal::Master).admit_group(group).unwrap()
    }

    fn head<'a>(method: &'a str, path: &'a str, key: Option<&'a str>) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            key,
            tags: None,
            timeout: None,
            content_length: None,
            end_of_stream: method == "GET",
        }
    }

    fn master(endpoint: Endpoint) -> Pending {
        Pending {
            endpoint,
            principal: Principal::Master,
            header_tags: Vec::new(),
            header_timeout_ms: None,
        }
    }

    fn forwarded(a: BodyAction) -> Forward {
        match a {
            BodyAction::Forward(f) => *f,
            BodyAction::Reply(r) => panic!(
                "expected a forward, got {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
            BodyAction::FanOut(_) => panic!("expected a forward, got a fan-out"),
        }
    }

    fn replied(a: BodyAction) -> LocalReply {
        match a {
            BodyAction::Reply(r) => r,
            BodyAction::Forward(_) | BodyAction::FanOut(_) => panic!("expected a local reply"),
        }
    }

    fn reply(a: HeadAction) -> LocalReply {
        match a {
            HeadAction::Reply(r) => r,
            _ => panic!("expected a local reply"),
        }
    }

    fn json(r: &LocalReply) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn response_ids_are_prefix_and_24_hex_digits() {
        let mut a = FakeHost::new(9);
        let mut b = FakeHost::new(9);
        let ctx = response_context(&mut a, Inference::Chat, "m");
        let expected = format!(
            "chatcmpl-{:016x}{:08x}",
            b.random_u64(),
            b.random_u64() as u32
        );
        assert_eq!(ctx.id, expected);
        assert_eq!(
            response_context(&mut a, Inference::Embeddings, "m")
                .id
                .len(),
            5 + 24
        );
    }

    #[test]
    fn master_key_is_required_except_for_health() {
        let c = config();
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("GET", "/v1/models", None),
        ));
        assert_eq!(r.status, 401);
        assert_eq!(json(&r)["error"]["type"], "authentication_error");
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("GET", "/v1/models", Some("sk-wrong")),
        ));
        assert_eq!(r.status, 401);
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("GET", "/v1/models", Some("sk-master")),
        ));
        assert_eq!(r.status, 200);
        let ids: Vec<String> = json(&r)["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, vec!["chat", "emb", "gpt-4o"]);
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("GET", "/v1/health/live", None),
        ));
        assert_eq!(json(&r)["message"], "Service is live.");
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("POST", "/v1/chat/completions", Some("nope")),
        ));
        assert_eq!(r.status, 401);
    }

    #[test]
    fn model_lookup_hides_hidden_aliases() {
        let c = config();
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("GET", "/v1/models/gpt-4o", Some("sk-master")),
        ));
        assert_eq!(json(&r)["id"], "gpt-4o");
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("GET", "/v1/models/secret", Some("sk-master")),
        ));
        assert_eq!(r.status, 404);
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("GET", "/v2/whatever", Some("sk-master")),
        ));
        assert_eq!(r.status, 404);
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("DELETE", "/v1/models", Some("sk-master")),
        ));
        assert_eq!(r.status, 405);
    }

    #[test]
    fn content_length_over_limit_is_413() {
        let c = config();
        let mut h = head("POST", "/v1/chat/completions", Some("sk-master"));
        h.content_length = Some(c.max_request_body_bytes + 1);
        assert_eq!(
            reply(on_request_head(&c, &mut FakeHost::new(0), &h)).status,
            413
        );
    }

    #[test]
    fn hidden_alias_routes_and_rewrites() {
        let c = config();
        let mut host = FakeHost::new(1);
        let body = br#"{"model":"secret","messages":[{"role":"user","content":"hi"}]}"#;
        let f = forwarded(on_request_body(
            &c,
            &mut host,
            &master(Endpoint::Inference(Inference::Chat)),
            body,
        ));
        let d = &c.deployments[f.deployment()];
        assert_eq!(d.group, 0);
        let v: serde_json::Value = serde_json::from_slice(&f.body.unwrap()).unwrap();
        assert_eq!(v["model"], d.upstream_model.as_str());
        assert_eq!(f.path, "/v1/chat/completions");
    }

    #[test]
    fn unknown_model_lists_available() {
        let c = config();
        let mut host = FakeHost::new(1);
        let body = br#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#;
        let r = replied(on_request_body(
            &c,
            &mut host,
            &master(Endpoint::Inference(Inference::Chat)),
            body,
        ));
        assert_eq!(r.status, 404);
        let v = json(&r);
        assert_eq!(v["error"]["code"], "model_not_found");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chat, emb, gpt-4o"));
        assert!(!v["error"]["message"].as_str().unwrap().contains("secret"));
    }

    #[test]
    fn health_probes_and_report() {
        let cfg = r#"{"model_list":[
          {"model_name":"t","litellm_params":{"model":"triton/x","api_base":"http://h:8000/v2/models/x/generate"}},
          {"model_name":"v","litellm_params":{"model":"hosted_vllm/x","api_base":"http://h:8001/v1","api_key":"secret"}},
          {"model_name":"o","litellm_params":{"model":"openai/x","api_base":"http://h:8002/base"}}]}"#;
        let c = parse(cfg.as_bytes(), &|_| None, 0).unwrap().0;
        let paths: Vec<String> = health_probes(&c, &Scope::of(&c, &Principal::Master))
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            vec!["/v2/health/ready", "/health", "/base/v1/models"]
        );
        let mut host = FakeHost::new(1);
        crate::router::precreate(&c, &mut host);
        let r = health_report(
            &c,
            &mut host,
            &[
                (0, Ok(200)),
                (1, Err("connection refused".into())),
                (2, Ok(503)),
            ],
        );
        let v = json(&r);
        assert_eq!(v["healthy_count"], 1);
        assert_eq!(v["unhealthy_count"], 2);
        assert_eq!(v["unhealthy_endpoints"][0]["error"], "connection refused");
        assert!(!String::from_utf8(r.body).unwrap().contains("secret"));
        // The unhealthy ones are cooled down: only `t` can be picked now.
        assert!(crate::router::pick(&c, &mut host, all(&c, 1), 0, &[]).is_err());
        assert!(crate::router::pick(&c, &mut host, all(&c, 0), 0, &[]).is_ok());
    }

    #[test]
    fn the_body_is_kept_for_failover_only_when_there_is_somewhere_to_go() {
        let c = config();
        let mut host = FakeHost::new(1);
        let chat = br#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#;
        let f = forwarded(on_request_body(
            &c,
            &mut host,
            &master(Endpoint::Inference(Inference::Chat)),
            chat,
        ));
        assert!(f.replay.is_some(), "two deployments in the group");
        let emb = br#"{"model":"emb","input":"x"}"#;
        let f = forwarded(on_request_body(
            &c,
            &mut host,
            &master(Endpoint::Inference(Inference::Embeddings)),
            emb,
        ));
        assert!(
            f.replay.is_none(),
            "one deployment, no fallbacks: nothing to replay"
        );
    }

    #[test]
    fn resets_after_headers_are_recognised() {
        assert!(is_reset_after_headers(
            b"upstream_reset_after_response_started{protocol_error}"
        ));
        assert!(!is_reset_after_headers(
            b"upstream_reset_before_response_started{connection_termination}"
        ));
        assert!(!is_reset_after_headers(b"via_upstream"));
    }

    #[test]
    fn vllm_pass_through_targets() {
        let c = config();
        let mut host = FakeHost::new(3);
        match on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("GET", "/vllm/metrics", Some("sk-master")),
        ) {
            HeadAction::Forward(f) => {
                assert_eq!(f.deployment(), 0);
                assert_eq!(f.path, "/metrics");
                assert!(f.body.is_none());
            }
            _ => panic!("expected forward"),
        }
        let body = br#"{"model":"emb","text_1":"a","text_2":"b"}"#;
        let f = forwarded(on_request_body(
            &c,
            &mut host,
            &master(Endpoint::Vllm("/score".into())),
            body,
        ));
        assert_eq!(f.deployment(), 2);
        assert_eq!(
            f.body.unwrap(),
            br#"{"model":"e5","text_1":"a","text_2":"b"}"#
        );
        let f = forwarded(on_request_body(
            &c,
            &mut host,
            &master(Endpoint::Vllm("/tokenize".into())),
            b"not json",
        ));
        assert_eq!(f.deployment(), 0);
        assert!(f.body.is_none());
    }

    /// Two vLLM groups and an OpenAI one; `sk-a` may use only `a`, whose operator fallback
    /// is `c`. `b` has an rpm limit of 1.
    const SCOPED: &str = r#"{
      "model_list": [
        {"model_name": "a", "litellm_params": {"model": "hosted_vllm/ra", "api_base": "http://127.0.0.1:9001/v1"}},
        {"model_name": "b", "litellm_params": {"model": "hosted_vllm/rb", "api_base": "http://127.0.0.1:9002/v1", "rpm": 1}},
        {"model_name": "c", "litellm_params": {"model": "openai/rc", "api_base": "http://127.0.0.1:9003"}},
        {"model_name": "a2", "litellm_params": {"model": "hosted_vllm/ra2", "api_base": "http://127.0.0.1:9004/v1"}}
      ],
      "router_settings": {"fallbacks": [{"a": ["c"]}]},
      "general_settings": {"master_key": "sk-master", "virtual_keys": [
        {"key": "sk-a", "models": ["a"], "rpm_limit": 2},
        {"key": "sk-b", "models": ["b"]},
        {"key": "sk-c", "models": ["c"]},
        {"key": "sk-a2", "models": ["a2"]}]}
    }"#;

    fn scoped() -> (Config, FakeHost) {
        let c = parse(SCOPED.as_bytes(), &|_| None, 1000).unwrap().0;
        let mut h = FakeHost::new(5);
        crate::router::precreate(&c, &mut h);
        (c, h)
    }

    fn as_key(c: &Config, key: &str, endpoint: Endpoint) -> Pending {
        Pending {
            endpoint,
            principal: c.keys.authenticate(Some(key), 0).unwrap(),
            header_tags: Vec::new(),
            header_timeout_ms: None,
        }
    }

    fn chat(c: &Config, h: &mut FakeHost, key: &str, body: &str) -> BodyAction {
        let pending = as_key(c, key, Endpoint::Inference(Inference::Chat));
        on_request_body(c, h, &pending, body.as_bytes())
    }

    #[test]
    fn a_comma_in_model_fans_out_one_request_per_model_each_checked_alone() {
        let (c, mut h) = scoped();
        let body = r#"{"model":"a, c","messages":[{"role":"user","content":"x"}]}"#;
        let BodyAction::FanOut(FanOutPlan { arms, .. }) = chat(&c, &mut h, "sk-master", body)
        else {
            panic!("expected a fan-out");
        };
        let sent: Vec<String> = arms
            .iter()
            .map(|arm| match arm {
                FanArm::Call(f) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(f.body.as_deref().unwrap()).unwrap();
                    v["model"].as_str().unwrap().to_string()
                }
                FanArm::Answered(r) => panic!("{} {}", r.status, String::from_utf8_lossy(&r.body)),
            })
            .collect();
        assert_eq!(sent, ["ra", "rc"]);
        // A key allowed `a` only: `c` is refused in its place, `a` still goes.
        let BodyAction::FanOut(FanOutPlan { arms, .. }) = chat(&c, &mut h, "sk-a", body) else {
            panic!("expected a fan-out");
        };
        assert!(matches!(&arms[0], FanArm::Call(_)));
        assert!(matches!(&arms[1], FanArm::Answered(r) if r.status == 403));
        // One answer cannot carry several streams.
        let streamed = body.replace("\"messages\"", "\"stream\":true,\"messages\"");
        assert_eq!(
            replied(chat(&c, &mut h, "sk-master", &streamed)).status,
            400
        );
    }

    #[test]
    fn a_minted_keys_aliases_rename_the_model_and_never_widen_the_key() {
        let (c, mut h) = scoped();
        let minted = key_api::generate(
            &c,
            &mut h,
            br#"{"models":["a"],"aliases":{"fast":"a","wide":"b"}}"#,
        )
        .unwrap();
        let v = json(&minted);
        assert_eq!(v["aliases"]["fast"], "a");
        let key = v["key"].as_str().unwrap().to_string();
        let body = r#"{"model":"fast","messages":[{"role":"user","content":"x"}]}"#;
        let f = forwarded(chat(&c, &mut h, &key, body));
        let sent: serde_json::Value = serde_json::from_slice(f.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent["model"], "ra");
        // `wide` names `b`, which the key may not use.
        let r = replied(chat(&c, &mut h, &key, &body.replace("fast", "wide")));
        assert_eq!(r.status, 403);
    }

    #[test]
    fn mock_response_is_answered_for_trusted_callers_and_removed_for_others() {
        let (c, mut h) = scoped();
        let body = r#"{"model":"a","messages":[{"role":"user","content":"x"}],"mock_response":"hi there"}"#;
        let r = replied(chat(&c, &mut h, "sk-master", body));
        let v = json(&r);
        assert_eq!(v["choices"][0]["message"]["content"], "hi there");
        assert_eq!(
            (v["object"].as_str(), v["model"].as_str()),
            (Some("chat.completion"), Some("a"))
        );
        let streamed = body.replace("\"mock_response\"", "\"stream\":true,\"mock_response\"");
        let r = replied(chat(&c, &mut h, "sk-master", &streamed));
        assert_eq!(r.content_type, "text/event-stream");
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.contains("\"content\":\"hi there\"") && text.ends_with("data: [DONE]\n\n"));
        // The key's model check comes first.
        let other = body.replace("\"a\"", "\"b\"");
        assert_eq!(replied(chat(&c, &mut h, "sk-a", &other)).status, 403);
        // A key not trusted with mocks: the field is removed and the request goes upstream.
        let f = forwarded(chat(&c, &mut h, "sk-a", body));
        let sent: serde_json::Value = serde_json::from_slice(f.body.as_deref().unwrap()).unwrap();
        assert!(sent.get("mock_response").is_none(), "{sent}");
        // A minted key with LiteLLM's flag is trusted.
        let minted = key_api::generate(
            &c,
            &mut h,
            br#"{"models":["a"],"metadata":{"allow_client_mock_response":true}}"#,
        )
        .unwrap();
        let key = json(&minted)["key"].as_str().unwrap().to_string();
        assert_eq!(
            json(&replied(chat(&c, &mut h, &key, body)))["choices"][0]["message"]["content"],
            "hi there"
        );
        // LiteLLM's other test switches are refused by name.
        let switch = r#"{"model":"a","messages":[{"role":"user","content":"x"}],"mock_testing_fallbacks":true}"#;
        let r = replied(chat(&c, &mut h, "sk-master", switch));
        assert_eq!(
            (r.status, json(&r)["error"]["param"].as_str()),
            (400, Some("mock_testing_fallbacks"))
        );
    }

    #[test]
    fn mock_testing_context_fallbacks_takes_the_context_window_fallback_when_switched_on() {
        let cfg = SCOPED.replace(
            r#""general_settings": {"#,
            r#""general_settings": {"litellm_test_switches": true, "#,
        );
        let cfg = cfg.replace(
            r#""fallbacks": [{"a": ["c"]}]"#,
            r#""fallbacks": [{"a": ["c"]}], "context_window_fallbacks": [{"a": ["a2"]}]"#,
        );
        let c = parse(cfg.as_bytes(), &|_| None, 1000).unwrap().0;
        let mut h = FakeHost::new(5);
        crate::router::precreate(&c, &mut h);
        let body = r#"{"model":"a","messages":[{"role":"user","content":"x"}],"mock_testing_context_fallbacks":true}"#;
        let f = forwarded(chat(&c, &mut h, "sk-master", body));
        let sent: serde_json::Value = serde_json::from_slice(f.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent["model"], "ra2", "the context-window fallback answers");
        assert!(
            sent.get("mock_testing_context_fallbacks").is_none(),
            "never sent upstream"
        );
        // A group without context-window fallbacks: LiteLLM's context-window error.
        let r = replied(chat(
            &c,
            &mut h,
            "sk-master",
            &body.replace("\"a\"", "\"c\""),
        ));
        assert_eq!(
            (r.status, json(&r)["error"]["code"].as_str()),
            (400, Some("context_length_exceeded"))
        );
    }

    #[test]
    fn body_fallbacks_must_be_groups_the_key_may_use() {
        let (c, mut h) = scoped();
        let before = h.shared.clone();
        for body in [
            r#"{"model":"a","messages":[{"role":"user","content":"x"}],"fallbacks":["b"]}"#,
            r#"{"model":"a","messages":[{"role":"user","content":"x"}],"fallbacks":[{"a":["b"]}]}"#,
            r#"{"model":"a","messages":[{"role":"user","content":"x"}],"context_window_fallbacks":["b"]}"#,
        ] {
            let r = replied(chat(&c, &mut h, "sk-a", body));
            assert_eq!(r.status, 403, "{body}");
            let v = json(&r);
            assert_eq!(v["error"]["type"], "key_model_access_denied");
            assert!(v["error"]["message"].as_str().unwrap().contains("`b`"));
        }
        let r = replied(chat(
            &c,
            &mut h,
            "sk-a",
            r#"{"model":"a","messages":[{"role":"user","content":"x"}],"fallbacks":["nope"]}"#,
        ));
        assert_eq!(r.status, 404);
        assert_eq!(json(&r)["error"]["param"], "fallbacks");
        assert_eq!(
            h.shared, before,
            "nothing reserved or charged for a refused request"
        );
        // The master key may name any group.
        let f = forwarded(on_request_body(
            &c,
            &mut h,
            &master(Endpoint::Inference(Inference::Chat)),
            br#"{"model":"a","messages":[{"role":"user","content":"x"}],"fallbacks":["b"]}"#,
        ));
        let groups: Vec<usize> = f.replay.unwrap().groups.iter().map(|t| t.group()).collect();
        assert_eq!(groups, vec![0, 1]);
    }

    #[test]
    fn a_key_may_be_served_by_its_groups_configured_fallbacks() {
        let (c, mut h) = scoped();
        let f = forwarded(chat(
            &c,
            &mut h,
            "sk-a",
            r#"{"model":"a","messages":[{"role":"user","content":"x"}]}"#,
        ));
        let mut replay = f.replay.expect("a has a configured fallback");
        let groups: Vec<usize> = replay.groups.iter().map(|t| t.group()).collect();
        assert_eq!(groups, vec![0, 2], "the operator's fallback `c`, never `b`");
        let next = failover(&c, &mut h, &mut replay, 500).expect("c takes over");
        assert_eq!(c.deployments[next.deployment()].group, 2);
        assert!(failover(&c, &mut h, &mut replay, 500).is_none());
    }

    #[test]
    fn a_restricted_key_is_told_only_the_models_it_may_use() {
        let (c, mut h) = scoped();
        let r = replied(chat(
            &c,
            &mut h,
            "sk-a",
            r#"{"model":"zzz","messages":[{"role":"user","content":"x"}]}"#,
        ));
        assert_eq!(r.status, 404);
        let message = json(&r)["error"]["message"].as_str().unwrap().to_string();
        assert!(message.ends_with("Available models: a"), "{message}");
    }

    fn vllm(
        c: &Config,
        h: &mut FakeHost,
        key: &str,
        rest: &str,
        body: Option<&str>,
    ) -> Result<Forward, LocalReply> {
        let principal = c.keys.authenticate(Some(key), 0).unwrap();
        match body {
            None => match on_request_head(
                c,
                h,
                &RequestHead {
                    method: "GET",
                    path: &format!("/vllm{rest}"),
                    key: Some(key),
                    tags: None,
                    timeout: None,
                    content_length: None,
                    end_of_stream: true,
                },
            ) {
                HeadAction::Forward(f) => Ok(*f),
                HeadAction::Reply(r) => Err(r),
                _ => panic!("neither forward nor reply"),
            },
            Some(b) => {
                let pending = Pending {
                    endpoint: Endpoint::Vllm(rest.into()),
                    principal,
                    header_tags: Vec::new(),
                    header_timeout_ms: None,
                };
                match on_request_body(c, h, &pending, b.as_bytes()) {
                    BodyAction::Forward(f) => Ok(*f),
                    BodyAction::Reply(r) => Err(r),
                    BodyAction::FanOut(_) => panic!("a fan-out on /vllm"),
                }
            }
        }
    }

    #[test]
    fn vllm_pass_through_is_a_route_like_any_other() {
        let (c, mut h) = scoped();
        // A body model: admitted for the key, else 404/403, never "the first one".
        let e = vllm(
            &c,
            &mut h,
            "sk-a",
            "/score",
            Some(r#"{"model":"nonexistent"}"#),
        )
        .err()
        .unwrap();
        assert_eq!(e.status, 404);
        assert_eq!(json(&e)["error"]["code"], "model_not_found");
        let e = vllm(&c, &mut h, "sk-a", "/score", Some(r#"{"model":"b"}"#))
            .err()
            .unwrap();
        assert_eq!(e.status, 403);
        let e = vllm(&c, &mut h, "sk-a", "/score", Some(r#"{"model":7}"#))
            .err()
            .unwrap();
        assert_eq!(e.status, 400);
        let f = vllm(
            &c,
            &mut h,
            "sk-a",
            "/score",
            Some(r#"{"model":"a","text_1":"x"}"#),
        )
        .unwrap();
        assert_eq!(f.deployment(), 0);
        assert_eq!(
            f.body.as_deref(),
            Some(&br#"{"model":"ra","text_1":"x"}"#[..])
        );
        assert!(f.key_charge.is_some(), "the key is charged");
        // No body model: the first vLLM deployment the key may use.
        let f = vllm(&c, &mut h, "sk-a2", "/metrics", None).unwrap();
        assert_eq!(f.deployment(), 3);
        assert_eq!(f.path, "/metrics");
        let f = vllm(&c, &mut h, "sk-a2", "/tokenize", Some("not json")).unwrap();
        assert_eq!((f.deployment(), f.body), (3, None));
        // A key with no vLLM group: 403, nothing sent.
        let e = vllm(&c, &mut h, "sk-c", "/metrics", None).err().unwrap();
        assert_eq!(e.status, 403);
        // Naming its own OpenAI-compatible group, it reaches that group's native path.
        let f = vllm(&c, &mut h, "sk-c", "/score", Some(r#"{"model":"c"}"#)).unwrap();
        assert_eq!((f.deployment(), f.path.as_str()), (2, "/score"));
    }

    #[test]
    fn vllm_pass_through_counts_the_keys_and_the_deployments_limits() {
        let (c, mut h) = scoped();
        // sk-a: rpm_limit 2.
        assert!(vllm(&c, &mut h, "sk-a", "/metrics", None).is_ok());
        assert!(vllm(&c, &mut h, "sk-a", "/metrics", None).is_ok());
        let e = vllm(&c, &mut h, "sk-a", "/metrics", None).err().unwrap();
        assert_eq!(e.status, 429);
        // b's deployment: rpm 1.
        assert!(vllm(&c, &mut h, "sk-b", "/metrics", None).is_ok());
        let e = vllm(&c, &mut h, "sk-b", "/metrics", None).err().unwrap();
        assert_eq!(e.status, 429);
        // A cooling deployment is skipped: a2 is cooled, so a2's key has nowhere to go.
        crate::router::cool_down(&c, &mut h, 3);
        let e = vllm(&c, &mut h, "sk-a2", "/metrics", None).err().unwrap();
        assert_eq!(e.status, 503);
        // The master key's first vLLM deployment is `a`.
        assert_eq!(
            vllm(&c, &mut h, "sk-master", "/metrics", None)
                .unwrap()
                .deployment(),
            0
        );
    }

    #[test]
    fn health_probes_only_what_the_scope_allows() {
        let (c, _) = scoped();
        let all: Vec<usize> = health_probes(&c, &Scope::of(&c, &Principal::Master))
            .into_iter()
            .map(|p| p.deployment)
            .collect();
        assert_eq!(all, vec![0, 1, 2, 3]);
        let key = c.keys.authenticate(Some("sk-b"), 0).unwrap();
        let only: Vec<usize> = health_probes(&c, &Scope::of(&c, &key))
            .into_iter()
            .map(|p| p.deployment)
            .collect();
        assert_eq!(only, vec![1]);
    }

    #[test]
    fn retry_policy_decides_retries_by_kind_of_failure() {
        let cfg = r#"{"model_list":[
            {"model_name":"g","litellm_params":{"model":"openai/a","api_base":"http://a:1"}},
            {"model_name":"g","litellm_params":{"model":"openai/b","api_base":"http://b:1"}},
            {"model_name":"g","litellm_params":{"model":"openai/c","api_base":"http://c:1"}}],
          "router_settings":{"num_retries":1,"retry_policy":{"RateLimitErrorRetries":0,"InternalServerErrorRetries":2}}}"#;
        let c = parse(cfg.as_bytes(), &|_| None, 0).unwrap().0;
        let mut h = FakeHost::new(3);
        crate::router::precreate(&c, &mut h);
        let body = br#"{"model":"g","messages":[{"role":"user","content":"x"}]}"#;
        let f = forwarded(on_request_body(
            &c,
            &mut h,
            &master(Endpoint::Inference(Inference::Chat)),
            body,
        ));
        let mut replay = f.replay.expect("three deployments");
        assert!(
            failover(&c, &mut h, &mut replay.clone(), 429).is_none(),
            "no retry after a 429"
        );
        assert!(failover(&c, &mut h, &mut replay, 500).is_some());
        assert!(
            failover(&c, &mut h, &mut replay, 500).is_some(),
            "two after a 500"
        );
        assert!(
            failover(&c, &mut h, &mut replay, 500).is_none(),
            "and no deployment is left"
        );
        // Timeouts have no entry: num_retries (1).
        let f = forwarded(on_request_body(
            &c,
            &mut h,
            &master(Endpoint::Inference(Inference::Chat)),
            body,
        ));
        let mut replay = f.replay.unwrap();
        assert!(failover(&c, &mut h, &mut replay, 504).is_some());
        assert!(failover(&c, &mut h, &mut replay, 504).is_none());
    }

    #[test]
    fn headers_the_route_already_sets_are_not_sent() {
        let cfg = r#"{"model_list":[{"model_name":"g","litellm_params":{"model":"openai/a","api_base":"http://a:1"}}]}"#;
        let c = parse(cfg.as_bytes(), &|_| None, 0).unwrap().0;
        let mut h = FakeHost::new(3);
        let pending = master(Endpoint::Inference(Inference::Chat));
        let send = |h: &mut FakeHost, extra: &str| {
            let body =
                format!(r#"{{"model":"g","messages":[{{"role":"user","content":"x"}}]{extra}}}"#);
            forwarded(on_request_body(&c, h, &pending, body.as_bytes()))
        };
        let f = send(&mut h, "");
        // No route defaults: every knob, as the shipped route sets none.
        let all = upstream_knobs(&f, None);
        assert_eq!(all.timeout_ms, Some(600_000));
        assert_eq!(all.max_retries, Some(2));
        assert!(all.retry_on.is_some());
        // The route as `render` writes it: the timeout and the count are the route's; a group
        // of one still adds 429 and 5xx to the route's retry conditions.
        let route = crate::retry::route_defaults_for(&c).unwrap();
        assert_ne!(f.retry_statuses.retry_on, ENVOY_RETRY_ON);
        assert_eq!(
            upstream_knobs(&f, Some(&route)),
            UpstreamKnobs {
                retry_on: Some(f.retry_statuses.retry_on),
                ..UpstreamKnobs::default()
            }
        );
        // A request that differs says how.
        let quick = send(&mut h, r#","timeout":5"#);
        assert_eq!(upstream_knobs(&quick, Some(&route)).timeout_ms, Some(5_000));
        // A group of several deployments retries connections only: nothing to send.
        let cfg2 = cfg.replace(
            "]}",
            r#",{"model_name":"g","litellm_params":{"model":"openai/b","api_base":"http://b:1"}}]}"#,
        );
        let c2 = parse(cfg2.as_bytes(), &|_| None, 0).unwrap().0;
        let body = br#"{"model":"g","messages":[{"role":"user","content":"x"}]}"#;
        let f2 = forwarded(on_request_body(&c2, &mut h, &pending, body));
        let route2 = crate::retry::route_defaults_for(&c2).unwrap();
        assert_eq!(upstream_knobs(&f2, Some(&route2)), UpstreamKnobs::default());
        // No retries where the route would retry: an explicit 0.
        let none = send(&mut h, r#","num_retries":0"#);
        assert_eq!(
            upstream_knobs(&none, Some(&route)),
            UpstreamKnobs {
                max_retries: Some(0),
                ..UpstreamKnobs::default()
            }
        );
        assert_eq!(
            upstream_knobs(&none, None).max_retries,
            None,
            "nothing to undo on a bare route"
        );
    }

    #[test]
    fn a_groups_own_retry_policy_replaces_the_routers() {
        let cfg = r#"{"model_list":[
            {"model_name":"g","litellm_params":{"model":"openai/a","api_base":"http://a:1"}},
            {"model_name":"g","litellm_params":{"model":"openai/b","api_base":"http://b:1"}},
            {"model_name":"h","litellm_params":{"model":"openai/c","api_base":"http://c:1"}},
            {"model_name":"h","litellm_params":{"model":"openai/d","api_base":"http://d:1"}}],
          "router_settings":{"num_retries":1,"retry_policy":{"RateLimitErrorRetries":1},
            "model_group_retry_policy":{"g":{"RateLimitErrorRetries":0}}}}"#;
        let c = parse(cfg.as_bytes(), &|_| None, 0).unwrap().0;
        let mut h = FakeHost::new(3);
        crate::router::precreate(&c, &mut h);
        let replay_for = |h: &mut FakeHost, model: &str| {
            let body =
                format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"x"}}]}}"#);
            let pending = master(Endpoint::Inference(Inference::Chat));
            forwarded(on_request_body(&c, h, &pending, body.as_bytes()))
                .replay
                .expect("two deployments")
        };
        let mut g = replay_for(&mut h, "g");
        assert!(
            failover(&c, &mut h, &mut g, 429).is_none(),
            "g: no retry after a 429"
        );
        let mut hr = replay_for(&mut h, "h");
        assert!(
            failover(&c, &mut h, &mut hr, 429).is_some(),
            "h: the router's policy"
        );
        // An unknown group is named by its path.
        let bad = cfg.replace(r#""g":{"RateLimitErrorRetries":0}"#, r#""nope":{}"#);
        let e = parse(bad.as_bytes(), &|_| None, 0).unwrap_err();
        assert!(
            e.to_string().contains("model_group_retry_policy.nope"),
            "{e}"
        );
    }

    #[test]
    fn stream_timeout_bounds_time_to_first_byte_of_streams_only() {
        let cfg = r#"{"model_list":[{"model_name":"g","litellm_params":{"model":"openai/a","api_base":"http://a:1","timeout":60,"stream_timeout":5}}]}"#;
        let c = parse(cfg.as_bytes(), &|_| None, 0).unwrap().0;
        let mut h = FakeHost::new(3);
        let pending = master(Endpoint::Inference(Inference::Chat));
        let stream = br#"{"model":"g","stream":true,"messages":[{"role":"user","content":"x"}]}"#;
        let f = forwarded(on_request_body(&c, &mut h, &pending, stream));
        assert_eq!(
            (f.timeout_ms, f.first_byte_timeout_ms),
            (60_000, Some(5_000))
        );
        let plain = br#"{"model":"g","messages":[{"role":"user","content":"x"}]}"#;
        let f = forwarded(on_request_body(&c, &mut h, &pending, plain));
        assert_eq!((f.timeout_ms, f.first_byte_timeout_ms), (60_000, None));
        let own = br#"{"model":"g","stream":true,"timeout":2,"messages":[{"role":"user","content":"x"}]}"#;
        let f = forwarded(on_request_body(&c, &mut h, &pending, own));
        assert_eq!(
            (f.timeout_ms, f.first_byte_timeout_ms),
            (2_000, None),
            "the request's own timeout wins"
        );
    }

    fn chat_to(c: &Config, model: &str) -> Forward {
        let mut h = FakeHost::new(2);
        crate::router::precreate(c, &mut h);
        let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"x"}}]}}"#);
        forwarded(on_request_body(
            c,
            &mut h,
            &master(Endpoint::Inference(Inference::Chat)),
            body.as_bytes(),
        ))
    }

    #[test]
    fn providers_from_the_table_default_base_path_and_key_header() {
        let cfg = r#"{"model_list":[
            {"model_name":"o","litellm_params":{"model":"openai/gpt-4o","api_key":"sk-o"}},
            {"model_name":"bare","litellm_params":{"model":"gpt-4o-mini"}},
            {"model_name":"az","litellm_params":{"model":"azure/my-gpt","api_base":"https://res.openai.azure.com/","api_key":"az-key","api_version":"2024-06-01"}},
            {"model_name":"az-default","litellm_params":{"model":"azure/d","api_base":"https://res.openai.azure.com"}},
            {"model_name":"groq","litellm_params":{"model":"groq/llama3-8b-8192","api_key":"g"}},
            {"model_name":"pplx","litellm_params":{"model":"perplexity/sonar"}},
            {"model_name":"local","litellm_params":{"model":"ollama/llama3"}},
            {"model_name":"mine","litellm_params":{"model":"groq/x","api_base":"http://127.0.0.1:9/openai/v1"}},
            {"model_name":"foundry","litellm_params":{"model":"azure_ai/mistral-large","api_base":"https://r.services.ai.azure.com","api_key":"f","api_version":"2024-05-01-preview"}},
            {"model_name":"serverless","litellm_params":{"model":"azure_ai/x","api_base":"https://m.eastus2.models.ai.azure.com/v1","api_key":"s"}},
            {"model_name":"az-q","litellm_params":{"model":"azure/d","api_base":"https://res.openai.azure.com/?extra=1"}}]}"#;
        let (c, _) = parse(cfg.as_bytes(), &|_| None, 0).unwrap();
        let d = |name: &str| &c.deployments[c.resolve_model(name).unwrap().deployments[0]];
        assert_eq!(
            (d("o").cluster.as_str(), d("o").authority.as_str()),
            ("api.openai.com:443", "api.openai.com")
        );
        assert_eq!(
            d("o").auth_header,
            Some(("authorization", "Bearer sk-o".to_string()))
        );
        assert_eq!(chat_to(&c, "o").path, "/v1/chat/completions");
        assert_eq!(d("bare").model, "gpt-4o-mini");
        assert_eq!(d("bare").upstream_model, "gpt-4o-mini");
        assert_eq!(d("bare").cluster, "api.openai.com:443");
        assert_eq!(
            chat_to(&c, "az").path,
            "/openai/deployments/my-gpt/chat/completions?api-version=2024-06-01"
        );
        assert_eq!(
            d("az").auth_header,
            Some(("api-key", "az-key".to_string())),
            "Azure's header, no Bearer"
        );
        assert!(chat_to(&c, "az-default").path.ends_with(&format!(
            "api-version={}",
            crate::config::providers::AZURE_DEFAULT_API_VERSION
        )));
        assert_eq!(d("groq").cluster, "api.groq.com:443");
        assert_eq!(chat_to(&c, "groq").path, "/openai/v1/chat/completions");
        assert_eq!(chat_to(&c, "pplx").path, "/chat/completions");
        assert_eq!(d("local").cluster, "localhost:11434");
        assert_eq!(chat_to(&c, "local").path, "/v1/chat/completions");
        assert_eq!(
            (
                d("mine").cluster.as_str(),
                chat_to(&c, "mine").path.as_str()
            ),
            ("127.0.0.1:9", "/openai/v1/chat/completions"),
            "an explicit api_base wins"
        );
        // azure_ai/ as LiteLLM calls it: `/models` and `api-key` on Foundry's hosts,
        // Bearer and the base as given elsewhere; api-version only when configured.
        assert_eq!(
            chat_to(&c, "foundry").path,
            "/models/chat/completions?api-version=2024-05-01-preview"
        );
        assert_eq!(d("foundry").auth_header, Some(("api-key", "f".to_string())));
        assert_eq!(chat_to(&c, "serverless").path, "/v1/chat/completions");
        assert_eq!(
            d("serverless").auth_header,
            Some(("authorization", "Bearer s".to_string()))
        );
        assert_eq!(
            chat_to(&c, "az-q").path,
            format!(
                "/openai/deployments/d/chat/completions?api-version={}&extra=1",
                crate::config::providers::AZURE_DEFAULT_API_VERSION
            )
        );
    }

    #[test]
    fn unsupported_providers_are_named_with_the_reason_first() {
        for (model, why) in [
            ("bedrock/anthropic.claude-v2", "AWS request signing"),
            ("vertex_ai/gemini-pro", "Google OAuth"),
            ("anthropic/claude-3", "Messages API"),
            ("llama-3", "no provider prefix"),
        ] {
            let cfg = format!(
                r#"{{"model_list":[{{"model_name":"m","litellm_params":{{"model":"{model}","api_base":"http://h:1"}}}}]}}"#
            );
            let e = parse(cfg.as_bytes(), &|_| None, 0).unwrap_err();
            assert_eq!(e.path, "model_list[0].litellm_params.model");
            assert!(e.message.contains(why), "{model}: {}", e.message);
        }
        let cfg = r#"{"model_list":[{"model_name":"m","litellm_params":{"model":"azure/x"}}]}"#;
        let e = parse(cfg.as_bytes(), &|_| None, 0).unwrap_err();
        assert!(
            e.path.ends_with("api_base") && e.message.contains("azure/"),
            "{}",
            e.message
        );
    }

    #[test]
    fn wildcard_groups_serve_names_no_group_has_most_specific_first() {
        let cfg = r#"{"model_list":[
            {"model_name":"gpt-4o","litellm_params":{"model":"openai/explicit","api_base":"http://e:1"}},
            {"model_name":"*","litellm_params":{"model":"openai/*","api_base":"http://any:1"}},
            {"model_name":"groq/*","litellm_params":{"model":"groq/*","api_base":"http://groq:1"}}],
          "general_settings":{"master_key":"sk-m","virtual_keys":[{"key":"sk-g","models":["groq/*"]}]}}"#;
        let (c, _) = parse(cfg.as_bytes(), &|_| None, 0).unwrap();
        let upstream = |f: &Forward| -> String {
            let v: serde_json::Value = serde_json::from_slice(f.body.as_ref().unwrap()).unwrap();
            v["model"].as_str().unwrap().to_string()
        };
        let f = chat_to(&c, "gpt-4o");
        assert_eq!(
            (c.deployments[f.deployment()].group, upstream(&f)),
            (0, "explicit".into()),
            "explicit groups win"
        );
        let f = chat_to(&c, "groq/llama3-8b");
        assert_eq!(
            (c.deployments[f.deployment()].group, upstream(&f)),
            (2, "llama3-8b".into())
        );
        assert_eq!(f.requested_model.as_deref(), Some("groq/llama3-8b"));
        let f = chat_to(&c, "o3-mini");
        assert_eq!(
            (c.deployments[f.deployment()].group, upstream(&f)),
            (1, "o3-mini".into())
        );
        assert_eq!(
            c.visible_models,
            vec!["gpt-4o"],
            "patterns are not listed as models"
        );
        let mut h = FakeHost::new(4);
        let f = forwarded(on_request_body(
            &c,
            &mut h,
            &master(Endpoint::Vllm("/tokenize".into())),
            br#"{"model":"groq/llama3-8b","prompt":"x"}"#,
        ));
        assert_eq!(
            upstream(&f),
            "llama3-8b",
            "the pass-through completes a wildcard too"
        );
        // A key may name a wildcard group, and reaches only what it matches.
        let key = c.keys.authenticate(Some("sk-g"), 0).unwrap();
        let scope = crate::scope::Scope::of(&c, &key);
        assert!(scope.admit(&c, "groq/mixtral", "model").is_ok());
        assert_eq!(
            scope.admit(&c, "o3-mini", "model").unwrap_err().status(),
            403
        );
        // A wildcard name needs a wildcard model, and the other way round.
        for bad in [
            r#"{"model_name":"x/*","litellm_params":{"model":"openai/x","api_base":"http://h:1"}}"#,
            r#"{"model_name":"x","litellm_params":{"model":"openai/*","api_base":"http://h:1"}}"#,
            r#"{"model_name":"t/*","litellm_params":{"model":"triton/*","api_base":"http://h:1/v2/models/m/generate"}}"#,
        ] {
            let cfg = format!(r#"{{"model_list":[{bad}]}}"#);
            assert!(parse(cfg.as_bytes(), &|_| None, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn readiness_says_the_version_and_routes_lists_every_endpoint() {
        let c = config();
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("GET", "/health/readiness", None),
        ));
        let v = json(&r);
        assert_eq!(
            (v["status"].as_str(), v["litellm_version"].as_str()),
            (Some("healthy"), Some(env!("CARGO_PKG_VERSION")))
        );
        // LiteLLM's /routes answers without a key (its e2e test calls it so): it lists
        // endpoints, nothing of the configuration.
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("GET", "/routes", None),
        ));
        assert_eq!(r.status, 200);
        let details = |key| {
            reply(on_request_head(
                &c,
                &mut FakeHost::new(0),
                &head("GET", "/health/readiness/details", key),
            ))
        };
        assert_eq!(details(None).status, 401);
        assert!(json(&details(Some("sk-master")))["litellm_version"].is_string());
        let r = reply(on_request_head(
            &c,
            &mut FakeHost::new(0),
            &head("GET", "/routes", Some("sk-master")),
        ));
        let paths: Vec<String> = json(&r)["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect();
        for p in [
            "/v1/chat/completions",
            "/vllm/{endpoint}",
            "/key/generate",
            "/routes",
        ] {
            assert!(paths.iter().any(|x| x == p), "{p}");
        }
        // Every listed path (with an example for the parameters) is one the gateway answers.
        for p in &paths {
            let concrete = p
                .replace("{model_id}", "chat")
                .replace("{endpoint}", "metrics");
            let e = crate::request::classify("GET", &concrete);
            assert!(!matches!(e, Endpoint::NotFound), "{p}");
        }
    }
}
