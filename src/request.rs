//! What a client asked for: the endpoint from method and path, and a borrowed view of an
//! inference body that validates it in one pass and keeps `model`'s byte span for splicing.

use crate::error::{ErrorKind, GatewayError};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inference {
    Chat,
    Completions,
    Embeddings,
}

impl Inference {
    pub fn object_name(self) -> &'static str {
        match self {
            Inference::Chat => "chat.completion",
            Inference::Completions => "text_completion",
            Inference::Embeddings => "list",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Inference(Inference),
    /// Azure OpenAI's client routes, as LiteLLM serves them:
    /// `/openai/deployments/{model}/chat/completions|completions|embeddings`; the path's
    /// model is the one asked for.
    AzureDeployment(Inference, String),
    ListModels,
    /// `/models?only_model_access_groups=true`: LiteLLM's access groups instead of models.
    ListAccessGroups,
    GetModel(String),
    /// `/health/liveliness`, `/health/liveness`.
    Liveliness,
    /// `/health/readiness`.
    Readiness,
    /// `/health/readiness/details`: the same, for a caller with a key (LiteLLM moved its
    /// version there).
    ReadinessDetails,
    V1Live,
    V1Ready,
    /// `/health`: probes deployments (needs the master key).
    HealthProbe,
    ModelInfo,
    ModelGroupInfo,
    KeyGenerate,
    /// `GET /routes`: the endpoints this gateway serves (LiteLLM's route list).
    Routes,
    /// `GET /key/info[?key=…]`.
    KeyInfo(Option<String>),
    /// `/vllm/<rest>`: `rest` starts with `/` and keeps the query string.
    Vllm(String),
    MethodNotAllowed(&'static str),
    NotFound,
}

impl Endpoint {
    /// Endpoints any client may call without a key.
    pub fn is_public(&self) -> bool {
        matches!(
            self,
            Endpoint::Liveliness
                | Endpoint::Readiness
                | Endpoint::V1Live
                | Endpoint::V1Ready
                | Endpoint::Routes
        )
    }
}

pub fn classify(method: &str, full_path: &str) -> Endpoint {
    if let Some(rest) = full_path.strip_prefix("/vllm/") {
        return Endpoint::Vllm(format!("/{rest}"));
    }
    let path = full_path.split_once('?').map_or(full_path, |(p, _)| p);
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let bare = path
        .strip_prefix("/v1")
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    let get = method == "GET" || method == "HEAD";
    let post = method == "POST";
    if let Some((model, kind)) = azure_route(path) {
        return if post {
            Endpoint::AzureDeployment(kind, model)
        } else {
            Endpoint::MethodNotAllowed("POST")
        };
    }
    let want = |ok: bool, e: Endpoint, allowed: &'static str| {
        if ok {
            e
        } else {
            Endpoint::MethodNotAllowed(allowed)
        }
    };
    match bare {
        "/chat/completions" => want(post, Endpoint::Inference(Inference::Chat), "POST"),
        "/completions" => want(post, Endpoint::Inference(Inference::Completions), "POST"),
        "/embeddings" => want(post, Endpoint::Inference(Inference::Embeddings), "POST"),
        "/models" => {
            let groups_only = query_param(full_path, "only_model_access_groups")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let e = if groups_only {
                Endpoint::ListAccessGroups
            } else {
                Endpoint::ListModels
            };
            want(get, e, "GET")
        }
        "/model/info" => want(get, Endpoint::ModelInfo, "GET"),
        "/model_group/info" => want(get, Endpoint::ModelGroupInfo, "GET"),
        "/key/generate" => want(post, Endpoint::KeyGenerate, "POST"),
        "/routes" => want(get, Endpoint::Routes, "GET"),
        "/key/info" => want(get, Endpoint::KeyInfo(query_param(full_path, "key")), "GET"),
        _ => match path {
            "/health/liveliness" | "/health/liveness" => want(get, Endpoint::Liveliness, "GET"),
            "/health/readiness" => want(get, Endpoint::Readiness, "GET"),
            "/health/readiness/details" => want(get, Endpoint::ReadinessDetails, "GET"),
            "/v1/health/live" => want(get, Endpoint::V1Live, "GET"),
            "/v1/health/ready" => want(get, Endpoint::V1Ready, "GET"),
            "/health" => want(get, Endpoint::HealthProbe, "GET"),
            _ => match bare.strip_prefix("/models/") {
                Some(id) if !id.is_empty() => {
                    want(get, Endpoint::GetModel(percent_decode(id)), "GET")
                }
                _ => Endpoint::NotFound,
            },
        },
    }
}

/// `/openai/deployments/{model}/{endpoint}` (with or without `/v1` before it): the
/// percent-decoded model and the endpoint.
fn azure_route(path: &str) -> Option<(String, Inference)> {
    let rest = path
        .strip_prefix("/v1")
        .unwrap_or(path)
        .strip_prefix("/openai/deployments/")?;
    let (model, kind) = [
        ("/chat/completions", Inference::Chat),
        ("/completions", Inference::Completions),
        ("/embeddings", Inference::Embeddings),
    ]
    .into_iter()
    .find_map(|(suffix, kind)| rest.strip_suffix(suffix).map(|m| (m, kind)))?;
    (!model.is_empty()).then(|| (percent_decode(model), kind))
}

/// A body with its `model` set to `model` (the Azure routes name it in the path, which wins,
/// as in LiteLLM). A body that is not a JSON object is returned as it is, for the parser to
/// refuse.
pub fn with_model(body: &[u8], model: &str) -> Vec<u8> {
    with_member(body, "model", serde_json::Value::String(model.to_string()))
}

/// A body with one top-level member set (a rare path: the body is parsed and written
/// again). A body that is not a JSON object is returned as it is, for the parser to refuse.
fn with_member(body: &[u8], name: &str, value: serde_json::Value) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut fields)) => {
            fields.insert(name.into(), value);
            serde_json::to_vec(&fields).unwrap_or_else(|_| body.to_vec())
        }
        _ => body.to_vec(),
    }
}

/// One query parameter, percent-decoded (`+` as space).
pub fn query_param(full_path: &str, name: &str) -> Option<String> {
    let (_, query) = full_path.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(&v.replace('+', " ")))
    })
}

/// `%XX` decoding for a path segment; malformed escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fields every provider needs, borrowed from the body. Parsing it validates the whole
/// document's syntax without building a tree; unknown fields are skipped.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow, default)]
    top_p: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    // LiteLLM's per-request router knobs: read here, never sent upstream.
    #[serde(borrow, default)]
    num_retries: Option<&'a RawValue>,
    #[serde(borrow, default)]
    fallbacks: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context_window_fallbacks: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timeout: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request_timeout: Option<&'a RawValue>,
    #[serde(borrow, default)]
    caching: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cache: Option<&'a RawValue>,
    // LiteLLM's request tags (tag routing): `tags` is the gateway's and never sent upstream;
    // `metadata` (which OpenAI also defines) passes on, its `tags` read here.
    #[serde(borrow, default)]
    tags: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    // LiteLLM's test switches: consumed, never sent upstream.
    #[serde(borrow, default)]
    mock_response: Option<&'a RawValue>,
    #[serde(borrow, default)]
    mock_testing_fallbacks: Option<&'a RawValue>,
    #[serde(borrow, default)]
    mock_testing_context_fallbacks: Option<&'a RawValue>,
    #[serde(borrow, default)]
    mock_testing_rate_limit_error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    mock_timeout: Option<&'a RawValue>,
    // LiteLLM's fan-out race: consumed, never sent upstream.
    #[serde(borrow, default)]
    fastest_response: Option<&'a RawValue>,
}

/// LiteLLM's per-request cache controls: `caching: false`, or
/// `cache: {"no-cache": true, "no-store": true, "ttl": 60}`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CacheControls {
    pub read: bool,
    pub write: bool,
    pub ttl_ms: Option<u64>,
}

/// LiteLLM's per-request overrides of the router settings.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RouterOverrides {
    pub num_retries: Option<u32>,
    /// Model names to fall back to, in order.
    pub fallbacks: Option<Vec<String>>,
    /// LiteLLM's fallbacks with their own messages (`{"model": "m", "messages": [...]}`):
    /// the model name and the raw JSON of the messages to send it instead.
    pub fallback_messages: Vec<(String, String)>,
    pub context_window_fallbacks: Option<Vec<String>>,
    pub timeout_ms: Option<u64>,
    pub cache: CacheControls,
}

/// A validated inference request, borrowing the client's body.
#[derive(Debug)]
pub struct InferenceBody<'a> {
    pub body: &'a [u8],
    /// `body`, known to be UTF-8 (checked once, when parsed).
    pub text: &'a str,
    pub kind: Inference,
    pub model: String,
    /// Byte range of the `model` value (quotes included) inside `body`.
    pub model_span: (usize, usize),
    pub stream: bool,
    /// The raw JSON of `messages` / `prompt` / `input`, whichever the endpoint takes.
    pub payload: &'a RawValue,
    pub has_max_tokens: bool,
    /// `max_completion_tokens`, else `max_tokens`, when a number.
    pub max_tokens: Option<u64>,
    pub has_temperature: bool,
    pub has_top_p: bool,
    pub has_stream_options: bool,
    pub overrides: RouterOverrides,
    /// Byte ranges of gateway-only members (with one adjacent comma), cut before upstream.
    pub gateway_only: Vec<(usize, usize)>,
    /// `tags` and `metadata` as sent, read only when tag routing is on.
    pub tags: Option<&'a RawValue>,
    pub metadata: Option<&'a RawValue>,
    /// LiteLLM's `mock_response`: the answer's content, when the caller may ask for one.
    pub mock_response: Option<String>,
    /// LiteLLM's `fastest_response`: a fan-out answers with the first model that succeeds.
    pub fastest_response: bool,
    /// LiteLLM's test switches (`mock_testing_*`, `mock_timeout`), read and never sent.
    pub test_switches: TestSwitches,
}

/// LiteLLM's test switches: a request that asks the proxy to act as if something failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestSwitches {
    /// `mock_testing_fallbacks`: the first model fails, so the fallbacks are used.
    pub fallbacks: bool,
    pub context_fallbacks: bool,
    pub rate_limit_error: bool,
    /// `mock_timeout`: the request times out.
    pub timeout: bool,
}

impl TestSwitches {
    pub fn any(&self) -> bool {
        self.fallbacks || self.context_fallbacks || self.rate_limit_error || self.timeout
    }
}

impl<'a> InferenceBody<'a> {
    pub fn parse(kind: Inference, body: &'a [u8]) -> Result<InferenceBody<'a>, GatewayError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(GatewayError::invalid_request(
                "request body is empty; expected a JSON object",
            ));
        }
        // serde would also read a struct from a JSON array; the API takes objects only.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(GatewayError::invalid_request(
                "request body must be a JSON object",
            ));
        }
        // UTF-8 checked once for the whole body: parsing from `str` then borrows every raw
        // member without validating it again (from bytes, serde_json re-checks each one).
        let text = std::str::from_utf8(body).map_err(|e| {
            GatewayError::invalid_request(format!("request body is not valid UTF-8: {e}"))
        })?;
        let env: Envelope<'a> = serde_json::from_str(text).map_err(|e| {
            GatewayError::invalid_request(format!("request body is not valid JSON: {e}"))
        })?;
        let raw_model = env.model.ok_or_else(|| {
            GatewayError::invalid_request("missing required parameter: model").with_param("model")
        })?;
        let model: String = serde_json::from_str(raw_model.get()).map_err(|_| {
            GatewayError::invalid_request("model must be a string").with_param("model")
        })?;
        let start = (raw_model.get().as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        let end = start + raw_model.get().len();
        if body.get(start..end) != Some(raw_model.get().as_bytes()) {
            return Err(GatewayError::new(
                ErrorKind::InvalidRequest,
                "could not locate model in body",
            ));
        }
        let (field, payload) = match kind {
            Inference::Chat => ("messages", env.messages),
            Inference::Completions => ("prompt", env.prompt),
            Inference::Embeddings => ("input", env.input),
        };
        let payload = payload.ok_or_else(|| {
            GatewayError::invalid_request(format!("missing required parameter: {field}"))
                .with_param(field)
        })?;
        check_payload_shape(kind, field, payload)?;
        let number =
            |v: Option<&RawValue>| v.and_then(|r| serde_json::from_str::<u64>(r.get()).ok());
        let mut gateway_only = Vec::new();
        let fallbacks = gateway_member(body, env.fallbacks, &mut gateway_only)
            .map(|r| fallback_entries(r, "fallbacks"))
            .transpose()?;
        let overrides = RouterOverrides {
            num_retries: gateway_member(body, env.num_retries, &mut gateway_only)
                .map(|r| serde_json::from_str::<u32>(r.get()))
                .transpose()
                .map_err(|_| {
                    GatewayError::invalid_request("num_retries must be a non-negative integer")
                        .with_param("num_retries")
                })?,
            fallbacks: fallbacks.as_ref().map(|(names, _)| names.clone()),
            fallback_messages: fallbacks.map(|(_, messages)| messages).unwrap_or_default(),
            context_window_fallbacks: gateway_member(
                body,
                env.context_window_fallbacks,
                &mut gateway_only,
            )
            .map(|r| fallback_names(r, "context_window_fallbacks"))
            .transpose()?,
            timeout_ms: [env.timeout, env.request_timeout]
                .into_iter()
                .filter_map(|v| gateway_member(body, v, &mut gateway_only))
                .map(|r| {
                    serde_json::from_str::<f64>(r.get())
                        .ok()
                        .filter(|t| t.is_finite() && *t > 0.0)
                        .map(|t| (t * 1000.0).round() as u64)
                        .ok_or_else(|| {
                            GatewayError::invalid_request(
                                "timeout must be a positive number of seconds",
                            )
                            .with_param("timeout")
                        })
                })
                .collect::<Result<Vec<u64>, _>>()?
                .into_iter()
                .min(),
            cache: cache_controls(
                gateway_member(body, env.caching, &mut gateway_only),
                gateway_member(body, env.cache, &mut gateway_only),
            )?,
        };
        let tags = gateway_member(body, env.tags, &mut gateway_only);
        let mock_response = gateway_member(body, env.mock_response, &mut gateway_only)
            .map(|raw| {
                serde_json::from_str::<String>(raw.get()).map_err(|_| {
                    GatewayError::invalid_request("mock_response must be a string")
                        .with_param("mock_response")
                })
            })
            .transpose()?;
        let mut switch = |field: &'static str, raw: Option<&RawValue>| {
            let raw = gateway_member(body, raw, &mut gateway_only);
            match raw.map(RawValue::get) {
                None | Some("false") | Some("null") => Ok(false),
                Some("true") => Ok(true),
                Some(_) => Err(GatewayError::invalid_request(format!(
                    "{field} must be true or false"
                ))
                .with_param(field)),
            }
        };
        let test_switches = TestSwitches {
            fallbacks: switch("mock_testing_fallbacks", env.mock_testing_fallbacks)?,
            context_fallbacks: switch(
                "mock_testing_context_fallbacks",
                env.mock_testing_context_fallbacks,
            )?,
            rate_limit_error: switch(
                "mock_testing_rate_limit_error",
                env.mock_testing_rate_limit_error,
            )?,
            timeout: switch("mock_timeout", env.mock_timeout)?,
        };
        let fastest_response = switch("fastest_response", env.fastest_response)?;
        Ok(InferenceBody {
            body,
            text,
            kind,
            model,
            model_span: (start, end),
            stream: env.stream.unwrap_or(false),
            payload,
            has_max_tokens: is_set(env.max_tokens) || is_set(env.max_completion_tokens),
            max_tokens: number(env.max_completion_tokens).or(number(env.max_tokens)),
            has_temperature: is_set(env.temperature),
            has_top_p: is_set(env.top_p),
            has_stream_options: is_set(env.stream_options),
            overrides,
            gateway_only,
            tags,
            metadata: env.metadata,
            mock_response,
            test_switches,
            fastest_response,
        })
    }

    /// The body with `model` replaced by `model_json` (a JSON string literal) and `defaults`
    /// (`"key":value` members) added at the front; everything else byte for byte.
    pub fn splice(&self, model_json: &str, defaults: &[(&str, String)]) -> Vec<u8> {
        self.splice_cutting(model_json, defaults, &[])
    }

    /// `splice`, also leaving out the members at `cuts` (ranges from `member_span`).
    pub fn splice_cutting(
        &self,
        model_json: &str,
        defaults: &[(&str, String)],
        cuts: &[(usize, usize)],
    ) -> Vec<u8> {
        let (start, end) = self.model_span;
        let extra: usize = defaults.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out = Vec::with_capacity(self.body.len() + model_json.len() + extra);
        let merged;
        let cuts: &[(usize, usize)] = if cuts.is_empty() && self.gateway_only.len() < 2 {
            &self.gateway_only
        } else {
            let mut all: Vec<(usize, usize)> = self.gateway_only.clone();
            all.extend_from_slice(cuts);
            merged = merge_cuts(self.body, all);
            &merged
        };
        let head = without(self.body, 0, start, cuts);
        let tail = without(self.body, end, self.body.len(), cuts);
        let (head, tail) = (head.as_slice(), tail.as_slice());
        match head.iter().position(|&b| b == b'{') {
            Some(brace) if !defaults.is_empty() => {
                out.extend_from_slice(head.get(..=brace).unwrap_or_default());
                for (k, v) in defaults {
                    out.push(b'"');
                    out.extend_from_slice(k.as_bytes());
                    out.extend_from_slice(b"\":");
                    out.extend_from_slice(v.as_bytes());
                    out.push(b',');
                }
                out.extend_from_slice(head.get(brace + 1..).unwrap_or_default());
            }
            _ => out.extend_from_slice(head),
        }
        out.extend_from_slice(model_json.as_bytes());
        out.extend_from_slice(tail);
        out
    }
}

/// Member cuts sorted and merged. Two cuts overlap only where the first member took the
/// comma after it and the next one the comma before it, the same comma: their union then
/// takes the comma after the second (or, when it is last, the one before the first), so
/// exactly one comma goes per member.
fn merge_cuts(body: &[u8], mut cuts: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    cuts.sort_unstable();
    let ws = |b: &u8| b.is_ascii_whitespace();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(cuts.len());
    for (s, e) in cuts {
        match out.last_mut() {
            // The same member twice (a gateway-only one also cut as a parameter).
            Some(last) if s >= last.0 && e <= last.1 => {}
            Some(last) if s < last.1 => {
                let mut end = e.max(last.1);
                let next = body.get(end..).and_then(|t| t.iter().position(|b| !ws(b)));
                match next.map(|n| end + n) {
                    Some(at) if body.get(at) == Some(&b',') => end = at + 1,
                    _ => {
                        let head = body.get(..last.0).unwrap_or_default();
                        if let Some(p) = head.iter().rposition(|b| !ws(b)) {
                            if body.get(p) == Some(&b',') {
                                last.0 = p;
                            }
                        }
                    }
                }
                last.1 = end;
            }
            _ => out.push((s, e)),
        }
    }
    out
}

/// `body[from..to]` without the bytes of `cuts` (sorted, non-overlapping ranges).
fn without(body: &[u8], from: usize, to: usize, cuts: &[(usize, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(to.saturating_sub(from));
    let mut at = from;
    for &(s, e) in cuts {
        let (s, e) = (s.max(from), e.min(to));
        if s >= e {
            continue;
        }
        out.extend_from_slice(body.get(at..s).unwrap_or_default());
        at = e;
    }
    out.extend_from_slice(body.get(at..to).unwrap_or_default());
    out
}

/// Record the byte range of the member whose value is `raw` — `"key": value` plus one
/// adjacent comma — so it can be cut from the body; returns `raw` for parsing.
fn gateway_member<'a>(
    body: &[u8],
    raw: Option<&'a RawValue>,
    cuts: &mut Vec<(usize, usize)>,
) -> Option<&'a RawValue> {
    let raw = raw?;
    let value_start = (raw.get().as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    let value_end = value_start + raw.get().len();
    let before = body.get(..value_start)?;
    let colon = before.iter().rposition(|&b| b == b':')?;
    let key_end = before.get(..colon)?.iter().rposition(|&b| b == b'"')?;
    let key_start = before.get(..key_end)?.iter().rposition(|&b| b == b'"')?;
    let ws = |b: &u8| b.is_ascii_whitespace();
    let mut start = key_start;
    let mut end = value_end;
    let prev = before.get(..key_start)?.iter().rposition(|b| !ws(b));
    if let Some(p) = prev.filter(|&p| body.get(p) == Some(&b',')) {
        start = p;
    } else if let Some(n) = body.get(value_end..)?.iter().position(|b| !ws(b)) {
        if body.get(value_end + n) == Some(&b',') {
            end = value_end + n + 1;
        }
    }
    let at = cuts.partition_point(|&(s, _)| s < start);
    cuts.insert(at, (start, end));
    Some(raw)
}

impl<'a> InferenceBody<'a> {
    /// Every top-level member but `model`: its name, raw value and the byte range to cut
    /// it by (`"name": value` with one adjacent comma). Read only for providers whose
    /// table row says what to do with some parameters.
    pub fn members(&self) -> Vec<(std::borrow::Cow<'a, str>, &'a RawValue, (usize, usize))> {
        #[derive(Deserialize)]
        struct Members<'b>(
            #[serde(borrow)] std::collections::BTreeMap<std::borrow::Cow<'b, str>, &'b RawValue>,
        );
        let Ok(Members(all)) = serde_json::from_str::<Members<'a>>(self.text) else {
            return Vec::new();
        };
        all.into_iter()
            .filter(|(name, _)| name != "model")
            .filter_map(|(name, raw)| {
                let mut span = Vec::with_capacity(1);
                gateway_member(self.body, Some(raw), &mut span)?;
                let range = span.first().copied()?;
                Some((name, raw, range))
            })
            .collect()
    }
}

impl InferenceBody<'_> {
    /// The request's tags: `tags`, then `metadata.tags` (LiteLLM's two places). 400 when
    /// either is not a list of strings.
    pub fn request_tags(&self) -> Result<Vec<String>, GatewayError> {
        #[derive(Deserialize)]
        struct Metadata {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let bad = |field: &'static str| {
            GatewayError::invalid_request(format!("{field} must be a list of strings"))
                .with_param(field)
        };
        let mut out: Vec<String> = match self.tags {
            Some(raw) => serde_json::from_str::<Option<Vec<String>>>(raw.get())
                .map_err(|_| bad("tags"))?
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if let Some(raw) = self.metadata {
            if raw.get().trim_start().starts_with('{') {
                let m: Metadata =
                    serde_json::from_str(raw.get()).map_err(|_| bad("metadata.tags"))?;
                out.extend(m.tags.unwrap_or_default());
            }
        }
        Ok(out)
    }
}

/// `["a","b"]` or LiteLLM's `[{"group": ["a","b"]}]`: the names to fall back to, in order.
fn fallback_names(raw: &RawValue, field: &str) -> Result<Vec<String>, GatewayError> {
    fallback_entries(raw, field).map(|(names, _)| names)
}

/// A fallback list: names, LiteLLM's `{model: [fallbacks]}` maps, and fallbacks with their
/// own messages (`{"model": "m", "messages": [...]}`); the names in order, and the
/// messages of those that have some.
#[allow(clippy::type_complexity)]
fn fallback_entries(
    raw: &RawValue,
    field: &str,
) -> Result<(Vec<String>, Vec<(String, String)>), GatewayError> {
    // (An untagged enum reads through serde's buffer, which cannot lend a `RawValue`.)
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Name(String),
        WithMessages {
            model: String,
            messages: Vec<serde_json::Value>,
        },
        Map(std::collections::BTreeMap<String, Vec<String>>),
    }
    let entries: Vec<Entry> = serde_json::from_str(raw.get()).map_err(|_| {
        GatewayError::invalid_request(format!(
            "{field} must be a list of model names, of {{model: [fallbacks]}} or of {{\"model\": name, \"messages\": [...]}}"
        ))
        .with_param(field)
    })?;
    let mut names = Vec::new();
    let mut messages = Vec::new();
    for e in entries {
        match e {
            Entry::Name(n) => names.push(n),
            Entry::WithMessages { model, messages: m } => {
                if m.is_empty() {
                    return Err(GatewayError::invalid_request(format!(
                        "{field}: the messages of fallback `{}` must be a non-empty list",
                        crate::error::shown(&model, 128)
                    ))
                    .with_param(field));
                }
                let json = serde_json::to_string(&m).unwrap_or_default();
                messages.push((model.clone(), json));
                names.push(model);
            }
            Entry::Map(m) => names.extend(m.into_values().flatten()),
        }
    }
    Ok((names, messages))
}

/// A chat body with its `messages` replaced by `messages` (raw JSON): a fallback with its
/// own messages. A body that is not a JSON object is returned as it is.
pub fn with_messages(body: &[u8], messages: &str) -> Vec<u8> {
    match serde_json::from_str::<serde_json::Value>(messages) {
        Ok(new) => with_member(body, "messages", new),
        Err(_) => body.to_vec(),
    }
}

fn cache_controls(
    caching: Option<&RawValue>,
    cache: Option<&RawValue>,
) -> Result<CacheControls, GatewayError> {
    #[derive(Deserialize, Default)]
    struct Cache {
        #[serde(rename = "no-cache", default)]
        no_cache: bool,
        #[serde(rename = "no-store", default)]
        no_store: bool,
        #[serde(default)]
        ttl: Option<f64>,
    }
    let enabled = match caching {
        Some(raw) => serde_json::from_str::<Option<bool>>(raw.get())
            .map_err(|_| {
                GatewayError::invalid_request("caching must be true or false").with_param("caching")
            })?
            .unwrap_or(true),
        None => true,
    };
    let c: Cache = match cache {
        Some(raw) => serde_json::from_str::<Option<Cache>>(raw.get())
            .map_err(|_| {
                GatewayError::invalid_request("cache must be an object like {\"no-cache\": true}")
                    .with_param("cache")
            })?
            .unwrap_or_default(),
        None => Cache::default(),
    };
    Ok(CacheControls {
        read: enabled && !c.no_cache,
        write: enabled && !c.no_store,
        ttl_ms: c
            .ttl
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(|t| (t * 1000.0) as u64),
    })
}

fn is_set(v: Option<&RawValue>) -> bool {
    v.is_some_and(|r| r.get() != "null")
}

fn check_payload_shape(kind: Inference, field: &str, raw: &RawValue) -> Result<(), GatewayError> {
    let text = raw.get().trim_start();
    let ok = match kind {
        Inference::Chat => text.starts_with('[') && !is_empty_array(text),
        Inference::Completions | Inference::Embeddings => {
            (text.starts_with('"') || text.starts_with('[')) && !is_empty_array(text)
        }
    };
    if ok {
        Ok(())
    } else {
        let expected = match kind {
            Inference::Chat => "a non-empty array of messages",
            _ => "a string or a non-empty array",
        };
        Err(GatewayError::invalid_request(format!("{field} must be {expected}")).with_param(field))
    }
}

fn is_empty_array(text: &str) -> bool {
    text.strip_prefix('[')
        .map(|rest| rest.trim_start().starts_with(']'))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            classify(
                "POST",
                "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01"
            ),
            Endpoint::AzureDeployment(super::Inference::Chat, "gpt-4o".into())
        );
        assert_eq!(
            classify("POST", "/v1/openai/deployments/my%20emb/embeddings"),
            Endpoint::AzureDeployment(super::Inference::Embeddings, "my emb".into())
        );
        assert_eq!(
            classify("GET", "/openai/deployments/m/completions"),
            Endpoint::MethodNotAllowed("POST")
        );
        assert_eq!(
            classify("POST", "/openai/deployments//chat/completions"),
            Endpoint::NotFound
        );
        let v: serde_json::Value =
            serde_json::from_slice(&with_model(br#"{"model":"x","input":"a"}"#, "y")).unwrap();
        assert_eq!(v, serde_json::json!({"model":"y","input":"a"}));

        use Endpoint::*;
        assert_eq!(
            classify("POST", "/v1/chat/completions"),
            Inference(super::Inference::Chat)
        );
        assert_eq!(
            classify("POST", "/chat/completions"),
            Inference(super::Inference::Chat)
        );
        assert_eq!(
            classify("POST", "/v1/embeddings?x=1"),
            Inference(super::Inference::Embeddings)
        );
        assert_eq!(
            classify("GET", "/v1/chat/completions"),
            MethodNotAllowed("POST")
        );
        assert_eq!(classify("GET", "/v1/models"), ListModels);
        assert_eq!(classify("GET", "/models/"), ListModels);
        assert_eq!(
            classify("GET", "/v1/models?only_model_access_groups=True"),
            ListAccessGroups
        );
        assert_eq!(
            classify("GET", "/v1/models/meta%2Fllama"),
            GetModel("meta/llama".into())
        );
        assert_eq!(
            classify("GET", "/v1/models/org/name"),
            GetModel("org/name".into())
        );
        assert_eq!(classify("GET", "/health/liveliness"), Liveliness);
        assert_eq!(classify("GET", "/v1/health/ready"), V1Ready);
        assert_eq!(classify("GET", "/health"), HealthProbe);
        assert_eq!(
            classify("GET", "/vllm/metrics?a=b"),
            Vllm("/metrics?a=b".into())
        );
        assert_eq!(classify("GET", "/v1/nope"), NotFound);
        assert_eq!(
            classify("GET", "/key/info?key=sk-a%2Bb&x=1"),
            KeyInfo(Some("sk-a+b".into()))
        );
        assert_eq!(classify("GET", "/key/info"), KeyInfo(None));
        assert_eq!(classify("GET", "/v1"), NotFound);
        assert!(Liveliness.is_public() && !ListModels.is_public());
    }

    #[test]
    fn parse_and_splice_keeps_everything_else() {
        let body = br#"{ "messages": [{"role":"user","content":"hi \"model\""}], "model" : "gpt-4", "stream": true }"#;
        let req = InferenceBody::parse(super::Inference::Chat, body).unwrap();
        assert_eq!(req.model, "gpt-4");
        assert!(req.stream);
        let out = req.splice("\"llama\"", &[]);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{ "messages": [{"role":"user","content":"hi \"model\""}], "model" : "llama", "stream": true }"#
        );
        let out = req.splice("\"llama\"", &[("max_tokens", "512".into())]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["max_tokens"], 512);
        assert_eq!(v["model"], "llama");
    }

    #[test]
    fn gateway_only_params_are_read_and_cut() {
        let body = br#"{"num_retries": 1, "model":"m","messages":[{"role":"user","content":"x"}],"fallbacks":[{"m":["b"]}],"timeout":2.5,"max_tokens":9}"#;
        let req = InferenceBody::parse(super::Inference::Chat, body).unwrap();
        assert_eq!(req.overrides.num_retries, Some(1));
        assert_eq!(req.overrides.fallbacks, Some(vec!["b".to_string()]));
        assert_eq!(req.overrides.timeout_ms, Some(2500));
        assert_eq!(req.max_tokens, Some(9));
        let out = req.splice("\"up\"", &[]);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{ "model":"up","messages":[{"role":"user","content":"x"}],"max_tokens":9}"#
        );
        let body = br#"{"model":"m","prompt":"x","request_timeout":3,"fallbacks":["a","b"]}"#;
        let req = InferenceBody::parse(super::Inference::Completions, body).unwrap();
        assert_eq!(
            req.overrides.fallbacks,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        let v: serde_json::Value =
            serde_json::from_slice(&req.splice("\"up\"", &[("top_p", "1".into())])).unwrap();
        assert_eq!(v, serde_json::json!({"top_p":1,"model":"up","prompt":"x"}));
        let e = InferenceBody::parse(
            super::Inference::Completions,
            br#"{"model":"m","prompt":"x","timeout":-1}"#,
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn any_set_of_members_cuts_to_the_same_object_without_them() {
        let bodies: &[&[u8]] = &[
            br#"{"a":1,"tags":["t"],"messages":[{"role":"user","content":"x"}],"model":"m","b":{"c":[2]},"num_retries":1,"d":"e"}"#,
            br#"{ "model" : "m" , "a" : 1 , "messages" : [{"role":"user","content":"x"}] , "b" : 2 }"#,
            br#"{"num_retries":1,"tags":["t"],"a":1,"b":2,"model":"m","messages":[{"content":"x"}]}"#,
        ];
        for body in bodies {
            let req = InferenceBody::parse(super::Inference::Chat, body).unwrap();
            let members = req.members();
            let names: Vec<&str> = members.iter().map(|(n, _, _)| n.as_ref()).collect();
            assert!(!names.contains(&"model"));
            for mask in 0u32..(1 << members.len()) {
                let picked: Vec<usize> = (0..members.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .collect();
                let cuts: Vec<(usize, usize)> = picked.iter().map(|&i| members[i].2).collect();
                let out = req.splice_cutting("\"up\"", &[("x", "0".into())], &cuts);
                let got: serde_json::Value = serde_json::from_slice(&out)
                    .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
                let mut want: serde_json::Value = serde_json::from_slice(body).unwrap();
                let obj = want.as_object_mut().unwrap();
                for gone in ["tags", "num_retries"] {
                    obj.remove(gone);
                }
                for &i in &picked {
                    obj.remove(names[i]);
                }
                obj.insert("model".into(), "up".into());
                obj.insert("x".into(), 0.into());
                assert_eq!(got, want, "{}", String::from_utf8_lossy(&out));
            }
        }
    }

    #[test]
    fn fallbacks_take_litellm_three_shapes() {
        let raw: Box<RawValue> = serde_json::from_str(
            r#"["a", {"b": ["c", "d"]}, {"model": "e", "messages": [{"role": "user", "content": "x"}]}]"#,
        )
        .unwrap();
        let (names, messages) = fallback_entries(&raw, "fallbacks").unwrap();
        assert_eq!(names, ["a", "c", "d", "e"]);
        assert_eq!(
            messages,
            [(
                "e".to_string(),
                r#"[{"content":"x","role":"user"}]"#.to_string()
            )]
        );
        let empty: Box<RawValue> =
            serde_json::from_str(r#"[{"model": "e", "messages": []}]"#).unwrap();
        assert_eq!(
            fallback_entries(&empty, "fallbacks").unwrap_err().status(),
            400
        );
        let body = with_messages(br#"{"model":"m","messages":[1]}"#, r#"[2]"#);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"model":"m","messages":[2]})
        );
    }

    #[test]
    fn escaped_model_names_are_decoded() {
        let body = br#"{"model":"a\/b\u00e9","prompt":"x"}"#;
        let req = InferenceBody::parse(super::Inference::Completions, body).unwrap();
        assert_eq!(req.model, "a/bé");
    }

    #[test]
    fn invalid_bodies_are_400_with_param() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"{", "not valid JSON"),
            (b"[1]", "JSON object"),
            (br#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (br#"{"model":5,"messages":[]}"#, "model must be a string"),
            (br#"{"model":"m"}"#, "messages"),
            (br#"{"model":"m","messages":[]}"#, "non-empty"),
            (br#"{"model":"m","messages":"hi"}"#, "non-empty"),
            (
                br#"{"model":"m","messages":[{}],"stream":"yes"}"#,
                "not valid JSON",
            ),
            (br#"{"model":"m","model":"n","messages":[{}]}"#, "duplicate"),
        ];
        for (body, needle) in cases {
            let e = InferenceBody::parse(super::Inference::Chat, body).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(
                e.message.contains(needle),
                "{:?} -> {}",
                String::from_utf8_lossy(body),
                e.message
            );
        }
        let e = InferenceBody::parse(super::Inference::Embeddings, br#"{"model":"m","input":5}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
    }
}
