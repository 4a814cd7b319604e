//! OpenAI → OpenAI-compatible servers (vLLM, TGI, another gateway): swap `model`, add the
//! deployment's defaults, and pass the response through untouched unless it is an error.

use super::{
    error_output, is_success, BodyMode, BodyOutput, ResponseContext, ResponseTranslator,
    Translator, UpstreamRequest,
};
use crate::config::{Config, Deployment, ParamRules, Provider};
use crate::error::GatewayError;
use crate::request::{Inference, InferenceBody};
use crate::translate::text::Usage;

pub struct OpenAiCompat;

impl Translator for OpenAiCompat {
    fn writes_responses(&self) -> bool {
        false
    }

    fn translate_request(
        &self,
        _config: &Config,
        deployment: &Deployment,
        request: &InferenceBody<'_>,
        _ctx: ResponseContext,
    ) -> Result<UpstreamRequest, GatewayError> {
        let Provider::OpenAiCompatible {
            chat_path,
            completions_path,
            embeddings_path,
            params,
            ..
        } = &deployment.provider
        else {
            return Err(GatewayError::new(
                crate::error::ErrorKind::BadGateway,
                "deployment is not OpenAI-compatible",
            ));
        };
        let path = match request.kind {
            Inference::Chat => chat_path,
            Inference::Completions => completions_path,
            Inference::Embeddings => embeddings_path,
        };
        let mut defaults = if request.kind == Inference::Embeddings {
            Vec::new()
        } else {
            deployment_defaults(deployment, request)
        };
        let cuts = if request.kind == Inference::Chat && params.is_active() {
            apply_param_rules(params, request, &deployment.upstream_model, &mut defaults)?
        } else {
            Vec::new()
        };
        // Every response's tokens are counted. A stream reports them only when asked, so the
        // gateway asks, and removes the usage chunk again since this client did not. (A
        // provider that takes no `stream_options` is not asked; it may report them anyway.)
        let inject_usage = request.stream
            && !request.has_stream_options
            && request.kind != Inference::Embeddings
            && params.takes_stream_options();
        if inject_usage {
            defaults.push(("stream_options", r#"{"include_usage":true}"#.to_string()));
        }
        Ok(UpstreamRequest {
            path: path.clone(),
            body: Some(request.splice_cutting(&deployment.upstream_model_json, &defaults, &cuts)),
            response: if request.stream {
                Box::new(PassThroughResponse::observing(inject_usage))
            } else {
                Box::new(JsonResponse::default())
            },
        })
    }
}

/// The provider row's parameter rules, as LiteLLM applies them: a parameter the provider
/// does not take is a 400 naming every such one (or, with `drop_params`, removed);
/// `additional_drop_params` are removed; `max_completion_tokens` becomes `max_tokens` for
/// providers that take only that. Returns the members to cut.
fn apply_param_rules(
    rules: &ParamRules,
    request: &InferenceBody<'_>,
    model: &str,
    defaults: &mut Vec<(&'static str, String)>,
) -> Result<Vec<(usize, usize)>, GatewayError> {
    // Most requests carry none of the names the rules are about: one pass over the body's
    // quotes costs a few instructions per byte, where reading every member parses it.
    let named = |token: &[u8]| {
        rules.refused.iter().any(|n| n.as_bytes() == token)
            || rules.always_drop.iter().any(|n| n.as_bytes() == token)
            || (rules.max_tokens_only && token == b"max_completion_tokens")
    };
    if !quotes_any(request.body, named) {
        return Ok(Vec::new());
    }
    let members = request.members();
    let mut cuts = Vec::new();
    let mut refused: Vec<&str> = Vec::new();
    let has_max_tokens = members.iter().any(|(n, _, _)| n == "max_tokens");
    for (name, raw, span) in &members {
        let name = name.as_ref();
        if rules.always_drop.iter().any(|d| d == name) {
            cuts.push(*span);
        } else if rules.refused.contains(&name) {
            if rules.drop_refused {
                cuts.push(*span);
            } else {
                refused.push(name);
            }
        } else if name == "max_completion_tokens" && rules.max_tokens_only {
            cuts.push(*span);
            if !has_max_tokens {
                defaults.push(("max_tokens", raw.get().to_string()));
            }
        }
    }
    match refused.first() {
        None => Ok(cuts),
        Some(first) => {
            let list: Vec<String> = refused.iter().map(|p| format!("'{p}'")).collect();
            Err(GatewayError::invalid_request(format!(
                "{} does not support parameters: [{}], for model={}. To drop these, set `litellm_settings: drop_params: true` (or `drop_params: true` in the deployment's litellm_params)",
                rules.provider,
                list.join(", "),
                crate::error::shown(model, 200),
            ))
            .with_param(*first)
            .with_code("unsupported_params"))
        }
    }
}

/// Whether some `"token":` in `body` (the bytes between two consecutive quotes, then a
/// colon) satisfies `named`. Every key is such a token, so a member named so is never
/// missed; values are not (`"role":"user"` is not the `user` parameter), and an escaped
/// quote inside a string can only add candidates (the members are then read properly).
fn quotes_any(body: &[u8], named: impl Fn(&[u8]) -> bool) -> bool {
    let mut open: Option<usize> = None;
    let mut on_quote = |at: usize| -> bool {
        if let Some(start) = open {
            let is_key = body
                .get(at + 1..)
                .and_then(|rest| rest.iter().find(|b| !b.is_ascii_whitespace()))
                == Some(&b':');
            if is_key && body.get(start + 1..at).is_some_and(&named) {
                return true;
            }
        }
        open = Some(at);
        false
    };
    // Eight bytes at a time to the quotes (most of a body is text between them).
    let mut words = body.chunks_exact(8);
    let mut base = 0;
    for word in words.by_ref() {
        let w = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        let mut mask = crate::swar::eq_mask(w, b'"');
        while mask != 0 {
            let at = base + (mask.trailing_zeros() / 8) as usize;
            // A flag above a true quote may be a borrow's: look at the byte itself.
            if body.get(at) == Some(&b'"') && on_quote(at) {
                return true;
            }
            mask &= mask - 1;
        }
        base += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == b'"' && on_quote(base + i) {
            return true;
        }
    }
    false
}

/// `max_tokens`, `temperature`, `top_p` from `litellm_params`, where the request has none.
fn deployment_defaults(d: &Deployment, r: &InferenceBody<'_>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let (Some(v), false) = (d.max_tokens, r.has_max_tokens) {
        out.push(("max_tokens", v.to_string()));
    }
    if let (Some(v), false) = (d.temperature, r.has_temperature) {
        out.push(("temperature", json_number(v)));
    }
    if let (Some(v), false) = (d.top_p, r.has_top_p) {
        out.push(("top_p", json_number(v)));
    }
    out
}

fn json_number(v: f64) -> String {
    serde_json::Number::from_f64(v).map_or_else(|| "null".to_string(), |n| n.to_string())
}

/// A non-streaming answer: held whole (its client waits for all of it anyway), checked to be
/// JSON and its usage read, then passed on unchanged; a 200 that is not JSON becomes a 502.
#[derive(Default)]
pub struct JsonResponse {
    status: u16,
    usage: Option<Usage>,
}

impl ResponseTranslator for JsonResponse {
    fn on_headers(&mut self, status: u16, _content_type: Option<&str>) -> BodyMode {
        self.status = status;
        BodyMode::Buffer
    }

    fn on_body(&mut self, body: &[u8], _end_of_stream: bool) -> BodyOutput {
        if !is_success(self.status) {
            return error_output(self.status, body);
        }
        match serde_json::from_slice::<UsageOnly>(body) {
            Ok(parsed) => {
                self.usage = parsed.usage.and_then(|u| u.usage());
                BodyOutput::Unchanged
            }
            Err(_) => super::gateway_error_output(&GatewayError::new(
                crate::error::ErrorKind::BadGateway,
                "the upstream answered 200 with a body that is not a JSON object",
            )),
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// Streams and pass-through answers go through as they are (observed for usage where asked);
/// errors are buffered and normalised to OpenAI's four-field shape.
pub struct PassThroughResponse {
    buffered_error: Option<u16>,
    usage: Option<UsageObserver>,
}

impl PassThroughResponse {
    pub fn new() -> Self {
        PassThroughResponse {
            buffered_error: None,
            usage: None,
        }
    }

    /// Pass through, but read `usage` from the body (JSON, or an SSE stream's usage chunk);
    /// with `strip_usage_chunk`, also drop that chunk (one the client did not ask for).
    pub fn observing(strip_usage_chunk: bool) -> Self {
        PassThroughResponse {
            buffered_error: None,
            usage: Some(UsageObserver {
                strip_usage_chunk,
                ..UsageObserver::default()
            }),
        }
    }
}

/// Finds the token total in a passing body without holding more than it must: a JSON body
/// up to a bound, or each SSE event as it completes.
#[derive(Default)]
struct UsageObserver {
    sse: Option<crate::sse::SseParser>,
    json: Vec<u8>,
    usage: Option<Usage>,
    strip_usage_chunk: bool,
}

const MAX_OBSERVED_JSON: usize = 4 * 1024 * 1024;

#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<UsageTotals>,
    #[serde(default)]
    choices: Option<ChoiceCount>,
}

/// How many `choices` there are, counted without keeping them (no allocation).
struct ChoiceCount(usize);

impl<'de> serde::Deserialize<'de> for ChoiceCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Counter;
        impl<'de> serde::de::Visitor<'de> for Counter {
            type Value = ChoiceCount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut n = 0;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(ChoiceCount(n))
            }
        }
        d.deserialize_seq(Counter)
    }
}

#[derive(serde::Deserialize)]
struct UsageTotals {
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl UsageTotals {
    fn usage(&self) -> Option<Usage> {
        if self.total_tokens.is_none()
            && self.prompt_tokens.is_none()
            && self.completion_tokens.is_none()
        {
            return None;
        }
        let prompt = self.prompt_tokens.unwrap_or(0);
        let completion = self.completion_tokens.unwrap_or(0);
        let mut u = Usage::new(prompt, completion);
        if let Some(total) = self.total_tokens {
            u.total_tokens = total;
        }
        Some(u)
    }
}

/// Whether an event could carry a usage object: `"usage"`, then `:` and `{` (whitespace
/// allowed). Content chunks (no usage, or OpenAI's `"usage":null` on every chunk when usage
/// was asked for) are then not parsed at all. Inside a JSON string quotes are escaped, so
/// only a key matches; a nested `usage` key only costs the parse. A usage key spelled with
/// `\u` escapes would be missed.
fn may_hold_usage(event: &[u8]) -> bool {
    const KEY: &[u8] = b"\"usage\"";
    let mut rest = event;
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        let after = rest.get(at + KEY.len()..).unwrap_or_default();
        let mut value = after.iter().skip_while(|b| b.is_ascii_whitespace());
        if value.next() == Some(&b':') && value.find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return true;
        }
        rest = after;
    }
    false
}

impl UsageObserver {
    fn start(&mut self, content_type: Option<&str>) {
        if content_type.is_some_and(|c| c.starts_with("text/event-stream")) {
            self.sse = Some(crate::sse::SseParser::new(1 << 20));
        }
    }

    /// Read a chunk; in stripping mode, the chunk to send instead.
    fn feed(&mut self, chunk: &[u8], end: bool) -> Option<Vec<u8>> {
        let mut found = None;
        let strip = self.strip_usage_chunk && self.sse.is_some();
        let mut out = Vec::with_capacity(if strip { chunk.len() + 16 } else { 0 });
        let mut take = |event: &[u8]| {
            let mut usage_only = false;
            if event != b"[DONE]" && may_hold_usage(event) {
                if let Ok(UsageOnly {
                    usage: Some(u),
                    choices,
                }) = serde_json::from_slice(event)
                {
                    found = u.usage().or(found);
                    usage_only = choices.is_some_and(|c| c.0 == 0);
                }
            }
            if strip && !usage_only {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(event);
                out.extend_from_slice(b"\n\n");
            }
        };
        match &mut self.sse {
            Some(parser) => {
                let _ = parser.feed(chunk, &mut take);
                if end {
                    let _ = parser.finish(&mut take);
                }
            }
            None => {
                if self.json.len() + chunk.len() <= MAX_OBSERVED_JSON {
                    self.json.extend_from_slice(chunk);
                }
                if end {
                    take(&self.json);
                    self.json = Vec::new();
                }
            }
        }
        if found.is_some() {
            self.usage = found;
        }
        strip.then_some(out)
    }
}

impl Default for PassThroughResponse {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseTranslator for PassThroughResponse {
    fn reads_content_type(&self) -> bool {
        true
    }

    fn on_headers(&mut self, status: u16, content_type: Option<&str>) -> BodyMode {
        if !is_success(status) {
            self.buffered_error = Some(status);
            return BodyMode::Buffer;
        }
        // Only JSON and SSE bodies can carry a usage object: anything else (a `/vllm/metrics`
        // text page, say) passes without being copied into the filter.
        let may_hold_usage =
            content_type.is_none_or(|c| c.contains("json") || c.starts_with("text/event-stream"));
        match &mut self.usage {
            Some(observer) if may_hold_usage => {
                observer.start(content_type);
                if observer.strip_usage_chunk && observer.sse.is_some() {
                    BodyMode::Stream {
                        content_type: super::SSE,
                    }
                } else {
                    BodyMode::Observe
                }
            }
            _ => BodyMode::PassThrough,
        }
    }

    fn on_body(&mut self, chunk: &[u8], end_of_stream: bool) -> BodyOutput {
        if let Some(status) = self.buffered_error {
            return error_output(status, chunk);
        }
        if let Some(observer) = &mut self.usage {
            if let Some(out) = observer.feed(chunk, end_of_stream) {
                return BodyOutput::Replace(out);
            }
        }
        BodyOutput::Unchanged
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().and_then(|u| u.usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config() -> Config {
        let json = r#"{"model_list":[{"model_name":"m","litellm_params":{"model":"hosted_vllm/org/real","api_base":"http://h:9/prefix/v1/","max_tokens":64,"temperature":0.5}}]}"#;
        parse(json.as_bytes(), &|_| None, 0).unwrap().0
    }

    fn ctx() -> ResponseContext {
        ResponseContext {
            requested_model: "m".into(),
            id: "x".into(),
            created: 0,
            include_usage: false,
        }
    }

    #[test]
    fn only_events_that_may_hold_usage_are_parsed() {
        assert!(may_hold_usage(
            br#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(may_hold_usage(b"{\"usage\" :\n {\"total_tokens\":2}}"));
        assert!(!may_hold_usage(
            br#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#
        ));
        assert!(!may_hold_usage(
            br#"{"choices":[{"delta":{"content":"hi"}}]}"#
        ));
        assert!(!may_hold_usage(br#"{"usage""#));
        // Inside a string the quotes are escaped, so the words never match a key.
        assert!(!may_hold_usage(
            br#"{"choices":[{"delta":{"content":"\"usage\": {"}}]}"#
        ));
        // A nested object with a `usage` key matches: parsed, and found to hold nothing.
        assert!(may_hold_usage(br#"{"x":{"usage":{}}}"#));
        assert!(may_hold_usage(
            br#"{"a":"usage","usage":{"total_tokens":3}}"#
        ));
    }

    #[test]
    fn rewrites_path_model_and_defaults() {
        let c = config();
        let body =
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.9}"#;
        let req = InferenceBody::parse(Inference::Chat, body).unwrap();
        let up = OpenAiCompat
            .translate_request(&c, &c.deployments[0], &req, ctx())
            .unwrap();
        assert_eq!(up.path, "/prefix/v1/chat/completions");
        let v: serde_json::Value = serde_json::from_slice(&up.body.unwrap()).unwrap();
        assert_eq!(v["model"], "org/real");
        assert_eq!(v["max_tokens"], 64);
        assert_eq!(v["temperature"], 0.9);

        let body = br#"{"model":"m","input":"x"}"#;
        let req = InferenceBody::parse(Inference::Embeddings, body).unwrap();
        let up = OpenAiCompat
            .translate_request(&c, &c.deployments[0], &req, ctx())
            .unwrap();
        assert_eq!(up.path, "/prefix/v1/embeddings");
        assert_eq!(up.body.unwrap(), br#"{"model":"org/real","input":"x"}"#);
    }

    #[test]
    fn the_quote_scan_finds_every_key_a_parse_finds() {
        let bodies: &[&[u8]] = &[
            br#"{"a":"x\"logit_bias\"","logit_bias":1}"#,
            br#"{"a":"b","cc":"d","e":{"f":[1,"g"]},"hh" : 2,"i":"\"\"\"","jjjjjjjj":3}"#,
            br#"{"content":"say \"hi\"", "n" :2}"#,
            br#"{"x":"\\","n":1}"#,
        ];
        // At every alignment to the eight-byte words the scan reads.
        let shifted: Vec<Vec<u8>> = bodies
            .iter()
            .flat_map(|b| (0..8).map(move |n| [" ".repeat(n).as_bytes(), b].concat()))
            .collect();
        for body in &shifted {
            let body = body.as_slice();
            let v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(body).unwrap();
            for key in v.keys() {
                assert!(
                    quotes_any(body, |t| t == key.as_bytes()),
                    "{key} in {}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        assert!(!quotes_any(br#"{"model":"m","messages":[]}"#, |t| t == b"n"));
        // A value is not a key: a user message does not look like the `user` parameter.
        let chat = br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
        assert!(!quotes_any(chat, |t| t == b"user"));
        assert!(quotes_any(br#"{"user" : "u"}"#, |t| t == b"user"));
    }

    #[test]
    fn provider_parameter_rules_refuse_drop_and_rename() {
        let json = r#"{"model_list":[
          {"model_name":"mi","litellm_params":{"model":"mistral/mistral-large-latest","api_key":"k"}},
          {"model_name":"mid","litellm_params":{"model":"mistral/mistral-small","drop_params":true,
            "additional_drop_params":["user_tier"]}},
          {"model_name":"fw","litellm_params":{"model":"fireworks_ai/llama-v3p1-8b-instruct"}},
          {"model_name":"g","litellm_params":{"model":"groq/llama3-8b-8192","additional_drop_params":["x"]}}]}"#;
        let c = parse(json.as_bytes(), &|_| None, 0).unwrap().0;
        let send = |i: usize, body: &[u8]| {
            let req = InferenceBody::parse(Inference::Chat, body)?;
            OpenAiCompat
                .translate_request(&c, &c.deployments[i], &req, ctx())
                .map(|up| serde_json::from_slice::<serde_json::Value>(&up.body.unwrap()).unwrap())
        };
        let body = br#"{"model":"mi","messages":[{"role":"user","content":"x"}],"logit_bias":{"1":2},"n":2,"top_k":5,"temperature":0}"#;
        let e = send(0, body).unwrap_err();
        assert_eq!((e.status(), e.param.as_deref()), (400, Some("logit_bias")));
        assert!(
            e.message
                .contains("mistral does not support parameters: ['logit_bias', 'n']"),
            "{}",
            e.message
        );
        // drop_params on the deployment: refused ones go, the provider's own (`top_k`) stay.
        let v = send(1, br#"{"user_tier":"a","model":"mid","messages":[{"role":"user","content":"x"}],"logit_bias":{"1":2},"top_k":5,"max_completion_tokens":7}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model":"mistral-small","messages":[{"role":"user","content":"x"}],"top_k":5,"max_tokens":7})
        );
        // Fireworks: its model namespace, and max_completion_tokens sent as max_tokens.
        let v = send(
            2,
            br#"{"model":"fw","messages":[],"max_completion_tokens":3}"#,
        );
        assert!(v.is_err(), "empty messages are still refused first");
        let v = send(2, br#"{"model":"fw","messages":[{"role":"user","content":"x"}],"max_completion_tokens":3}"#).unwrap();
        assert_eq!(
            v["model"],
            "accounts/fireworks/models/llama-v3p1-8b-instruct"
        );
        assert_eq!(
            (v["max_tokens"].as_u64(), v.get("max_completion_tokens")),
            (Some(3), None)
        );
        // groq takes every OpenAI parameter; additional_drop_params still apply.
        let v = send(
            3,
            br#"{"model":"g","messages":[{"role":"user","content":"x"}],"logit_bias":{},"x":1}"#,
        )
        .unwrap();
        assert!(v.get("logit_bias").is_some() && v.get("x").is_none());
        // Streams to a provider that takes no stream_options are not given one.
        let v = send(
            0,
            br#"{"model":"mi","messages":[{"role":"user","content":"x"}],"stream":true}"#,
        )
        .unwrap();
        assert!(v.get("stream_options").is_none());
        let v = send(
            3,
            br#"{"model":"g","messages":[{"role":"user","content":"x"}],"stream":true}"#,
        )
        .unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn usage_is_observed_in_json_and_in_streams_split_anywhere() {
        let json = br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}"#;
        for cut in 0..json.len() {
            let mut r = PassThroughResponse::observing(false);
            assert_eq!(
                r.on_headers(200, Some("application/json")),
                BodyMode::Observe
            );
            assert_eq!(r.on_body(&json[..cut], false), BodyOutput::Unchanged);
            r.on_body(&json[cut..], true);
            assert_eq!(r.usage().map(|u| u.total_tokens), Some(11));
        }
        let sse = b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        for cut in 0..sse.len() {
            let mut r = PassThroughResponse::observing(false);
            r.on_headers(200, Some("text/event-stream"));
            r.on_body(&sse[..cut], false);
            r.on_body(&sse[cut..], true);
            assert_eq!(r.usage(), Some(Usage::new(2, 3)), "cut at {cut}");
        }
        let mut r = PassThroughResponse::new();
        assert_eq!(r.on_headers(200, None), BodyMode::PassThrough);
        assert_eq!(r.usage(), None);
    }

    #[test]
    fn injected_usage_chunk_is_counted_and_stripped_for_every_split() {
        let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3,\"total_tokens\":5}}\n\ndata: [DONE]\n\n";
        for cut in 0..sse.len() {
            let mut r = PassThroughResponse::observing(true);
            assert_eq!(
                r.on_headers(200, Some("text/event-stream")),
                BodyMode::Stream {
                    content_type: super::super::SSE
                }
            );
            let mut out = Vec::new();
            for (part, end) in [(&sse[..cut], false), (&sse[cut..], true)] {
                if let BodyOutput::Replace(b) = r.on_body(part, end) {
                    out.extend(b);
                }
            }
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n",
                "cut at {cut}"
            );
            assert_eq!(r.usage(), Some(Usage::new(2, 3)));
        }
    }

    #[test]
    fn streams_ask_for_usage_unless_the_client_chose() {
        let c = config();
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let req = InferenceBody::parse(Inference::Chat, body).unwrap();
        let up = OpenAiCompat
            .translate_request(&c, &c.deployments[0], &req, ctx())
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&up.body.unwrap()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":false}}"#;
        let req = InferenceBody::parse(Inference::Chat, body).unwrap();
        let up = OpenAiCompat
            .translate_request(&c, &c.deployments[0], &req, ctx())
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&up.body.unwrap()).unwrap();
        assert_eq!(
            v["stream_options"]["include_usage"], false,
            "the client's choice stands"
        );
    }

    #[test]
    fn non_streaming_answers_are_checked_and_counted() {
        let mut r = JsonResponse::default();
        assert_eq!(
            r.on_headers(200, Some("application/json")),
            BodyMode::Buffer
        );
        assert_eq!(
            r.on_body(
                br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
                true
            ),
            BodyOutput::Unchanged
        );
        assert_eq!(r.usage(), Some(Usage::new(1, 2)));
        let mut r = JsonResponse::default();
        r.on_headers(200, Some("text/html"));
        match r.on_body(b"<html>maintenance</html>", true) {
            BodyOutput::Complete { status, .. } => assert_eq!(status, 502),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_are_normalised_and_success_passes() {
        let mut r = PassThroughResponse::new();
        assert_eq!(
            r.on_headers(200, Some("text/event-stream")),
            BodyMode::PassThrough
        );
        assert_eq!(r.on_body(b"data: x\n\n", false), BodyOutput::Unchanged);
        let mut r = PassThroughResponse::new();
        assert_eq!(
            r.on_headers(400, Some("application/json")),
            BodyMode::Buffer
        );
        match r.on_body(br#"{"object":"error","message":"bad","code":400}"#, true) {
            BodyOutput::Complete { status, body, .. } => {
                assert_eq!(status, 400);
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["error"]["message"], "bad");
            }
            other => panic!("{other:?}"),
        }
    }
}
