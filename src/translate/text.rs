//! What every text-in/text-out backend (Triton generate and infer) shares: reading the OpenAI
//! request into a prompt and sampling parameters, and writing OpenAI responses and chunks.

use super::ResponseContext;
use crate::config::{Config, Deployment, Provider, DEFAULT_TRITON_MAX_TOKENS};
use crate::error::GatewayError;
use crate::json::{write as write_json, write_str as write_json_str};
use crate::request::{Inference, InferenceBody};
use crate::template::{PromptTemplate, Role, TextMessage};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

/// The request as a text backend needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRequest {
    pub prompt: String,
    pub max_tokens: u32,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<u64>,
    /// The client's stops plus the template's own; enforced by the gateway too.
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The sampling fields we map, plus those a text backend cannot honour (kept as `Value` so
/// we can tell "absent" from "set").
/// `M`: the chat messages, read in the same pass (`Vec<ChatMessage>`), or `IgnoredAny`.
#[derive(Deserialize)]
struct TextParams<M> {
    messages: Option<M>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    stop: Option<StopField>,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
    best_of: Option<u32>,
    echo: Option<bool>,
    logprobs: Option<Value>,
    top_logprobs: Option<Value>,
    logit_bias: Option<Value>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    functions: Option<Value>,
    function_call: Option<Value>,
    response_format: Option<Value>,
    suffix: Option<Value>,
    audio: Option<Value>,
    modalities: Option<Value>,
}

#[derive(Deserialize)]
struct ChatMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(default, borrow)]
    content: Option<Content<'a>>,
}

enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part>),
}

/// By hand rather than `#[serde(untagged)]`, which buffers the whole content (most of a
/// request) into an intermediate tree and copies it twice; a string without escapes is
/// borrowed from the body.
impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, SeqAccess, Visitor};
        struct ContentVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
            type Value = Content<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(ContentVisitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_request(message)
}

/// Parameters a text backend cannot honour: refused by name, or dropped with `drop_params`.
fn unsupported_params<M>(p: &TextParams<M>) -> Vec<&'static str> {
    let set = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
    let falsy = |v: &Option<Value>| {
        v.as_ref()
            .is_none_or(|v| v.is_null() || v == &Value::Bool(false) || v == &Value::from(0))
    };
    let mut out = Vec::new();
    if p.n.is_some_and(|n| n > 1) {
        out.push("n");
    }
    if p.best_of.is_some_and(|n| n > 1) {
        out.push("best_of");
    }
    if p.echo == Some(true) {
        out.push("echo");
    }
    if !falsy(&p.logprobs) {
        out.push("logprobs");
    }
    if !falsy(&p.top_logprobs) {
        out.push("top_logprobs");
    }
    if set(&p.logit_bias)
        && p.logit_bias
            .as_ref()
            .is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty()))
    {
        out.push("logit_bias");
    }
    if p.tools
        .as_ref()
        .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
    {
        out.push("tools");
    }
    if p.tool_choice
        .as_ref()
        .is_some_and(|v| !v.is_null() && v != "none")
    {
        out.push("tool_choice");
    }
    if set(&p.functions) {
        out.push("functions");
    }
    if p.function_call
        .as_ref()
        .is_some_and(|v| !v.is_null() && v != "none")
    {
        out.push("function_call");
    }
    if p.response_format
        .as_ref()
        .is_some_and(|v| !v.is_null() && v.get("type").is_some_and(|t| t != "text"))
    {
        out.push("response_format");
    }
    if p.suffix.as_ref().is_some_and(|v| !v.is_null() && v != "") {
        out.push("suffix");
    }
    if set(&p.audio) {
        out.push("audio");
    }
    if p.modalities
        .as_ref()
        .is_some_and(|v| v.as_array().is_some_and(|a| a.iter().any(|m| m != "text")))
    {
        out.push("modalities");
    }
    out
}

pub fn parse_text_request(
    config: &Config,
    deployment: &Deployment,
    request: &InferenceBody<'_>,
) -> Result<TextRequest, GatewayError> {
    let template = match &deployment.provider {
        Provider::Triton { template, .. } => template,
        Provider::OpenAiCompatible { .. } => &PromptTemplate::Transcript,
    };
    // One pass over the body for the parameters and, for chat, the messages.
    match request.kind {
        Inference::Chat => {
            let mut params: TextParams<Vec<ChatMessage>> = parse_params(config, request)?;
            let messages = params.messages.take().unwrap_or_default();
            let prompt = template.render(&messages_to_text(messages, config.drop_params)?);
            finish_text_request(deployment, request, template, params, prompt)
        }
        Inference::Completions => {
            let params: TextParams<IgnoredAny> = parse_params(config, request)?;
            let prompt = prompt_text(request.payload.get())?;
            finish_text_request(deployment, request, template, params, prompt)
        }
        Inference::Embeddings => Err(invalid("embeddings are not a text generation request")),
    }
}

fn parse_params<'a, M: Deserialize<'a>>(
    config: &Config,
    request: &InferenceBody<'a>,
) -> Result<TextParams<M>, GatewayError> {
    let params: TextParams<M> = serde_json::from_str(request.text)
        .map_err(|e| invalid(format!("invalid request parameters: {e}")))?;
    let unsupported = unsupported_params(&params);
    if !unsupported.is_empty() && !config.drop_params {
        return Err(invalid(format!(
            "{} not supported by this model's backend (a text-only Triton model); remove them or set litellm_settings.drop_params: true",
            unsupported.join(", ")
        ))
        .with_param(unsupported.first().copied().unwrap_or_default()));
    }
    Ok(params)
}

fn finish_text_request<M>(
    deployment: &Deployment,
    request: &InferenceBody<'_>,
    template: &PromptTemplate,
    params: TextParams<M>,
    prompt: String,
) -> Result<TextRequest, GatewayError> {
    let mut stop: Vec<String> = match params.stop {
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(v)) => v,
        None => Vec::new(),
    };
    stop.retain(|s| !s.is_empty());
    if request.kind == Inference::Chat {
        for s in template.stop_sequences() {
            if !stop.iter().any(|x| x == s) {
                stop.push((*s).to_string());
            }
        }
    }
    let max_tokens = params
        .max_completion_tokens
        .or(params.max_tokens)
        .or(deployment.max_tokens)
        .unwrap_or(DEFAULT_TRITON_MAX_TOKENS);
    if max_tokens == 0 {
        return Err(invalid("max_tokens must be at least 1").with_param("max_tokens"));
    }
    Ok(TextRequest {
        prompt,
        max_tokens,
        temperature: params.temperature.or(deployment.temperature),
        top_p: params.top_p.or(deployment.top_p),
        seed: params.seed,
        stop,
        stream: request.stream,
        include_usage: params.stream_options.is_some_and(|o| o.include_usage),
    })
}

fn messages_to_text(
    messages: Vec<ChatMessage<'_>>,
    drop_params: bool,
) -> Result<Vec<TextMessage<'_>>, GatewayError> {
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = Role::parse(&m.role).ok_or_else(|| {
                invalid(format!("messages[{i}].role: unknown role \"{}\"", m.role)).with_param("messages")
            })?;
            let content = match m.content {
                None => Cow::Borrowed(""),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.iter().enumerate() {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(t)) => text.push_str(t),
                            _ if drop_params => {}
                            (kind, _) => {
                                return Err(invalid(format!(
                                    "messages[{i}].content[{j}]: content of type \"{kind}\" is not supported by a text-only backend"
                                ))
                                .with_param("messages"))
                            }
                        }
                    }
                    Cow::Owned(text)
                }
            };
            Ok(TextMessage { role, content })
        })
        .collect()
}

/// `/v1/completions` `prompt`: a string, or a list holding one string.
fn prompt_text(raw: &str) -> Result<String, GatewayError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Prompt {
        One(String),
        Many(Vec<String>),
    }
    match serde_json::from_str::<Prompt>(raw) {
        Ok(Prompt::One(s)) => Ok(s),
        Ok(Prompt::Many(mut v)) if v.len() == 1 => Ok(v.pop().unwrap_or_default()),
        Ok(Prompt::Many(_)) => {
            Err(invalid("this backend takes one prompt per request").with_param("prompt"))
        }
        Err(_) => Err(invalid(
            "prompt must be a string (token ids are not supported by a text backend)",
        )
        .with_param("prompt")),
    }
}

/// A rough token count for backends that report none: about four bytes of English per
/// token, the usual rule of thumb for BPE vocabularies. Never zero for non-empty text.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Normalise a backend's finish reason to OpenAI's.
pub fn finish_reason(backend: Option<&str>) -> Option<&'static str> {
    match backend? {
        "length" | "max_tokens" | "MAX_TOKENS" => Some("length"),
        "stop" | "eos" | "end_id" | "stop_words" | "abort" | "END_ID" | "STOP_WORDS" => {
            Some("stop")
        }
        _ => None,
    }
}

/// A complete `chat.completion` or `text_completion`.
pub fn completion_body(
    ctx: &ResponseContext,
    kind: Inference,
    text: &str,
    finish_reason: &str,
    usage: Usage,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + ctx.id.len() + ctx.requested_model.len() + 224);
    write_envelope(&mut out, ctx, kind.object_name());
    out.extend_from_slice(if kind == Inference::Chat {
        b"[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
    } else {
        b"[{\"index\":0,\"text\":"
    });
    write_json_str(&mut out, text);
    if kind == Inference::Chat {
        out.push(b'}');
    }
    out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
    write_json_str(&mut out, finish_reason);
    out.extend_from_slice(b"}],\"usage\":");
    write_json(&mut out, &usage);
    out.push(b'}');
    out
}

/// `{"id":…,"object":…,"created":…,"model":…,"choices":`: what every answer and every
/// stream chunk starts with.
fn write_envelope(out: &mut Vec<u8>, ctx: &ResponseContext, object: &str) {
    out.extend_from_slice(b"{\"id\":");
    write_json_str(out, &ctx.id);
    out.extend_from_slice(b",\"object\":\"");
    out.extend_from_slice(object.as_bytes());
    out.extend_from_slice(b"\",\"created\":");
    write_json(out, &ctx.created);
    out.extend_from_slice(b",\"model\":");
    write_json_str(out, &ctx.requested_model);
    out.extend_from_slice(b",\"choices\":");
}

/// What `completion_body` writes, as serde would: the tests' oracle.
#[cfg(test)]
fn completion_body_by_serde(
    ctx: &ResponseContext,
    kind: Inference,
    text: &str,
    finish_reason: &str,
    usage: Usage,
) -> Vec<u8> {
    let chat = kind == Inference::Chat;
    let body = CompletionBody {
        id: &ctx.id,
        object: kind.object_name(),
        created: ctx.created,
        model: &ctx.requested_model,
        choices: [CompletionChoice {
            index: 0,
            message: chat.then_some(AssistantMessage {
                role: "assistant",
                content: text,
            }),
            text: (!chat).then_some(text),
            logprobs: None,
            finish_reason,
        }],
        usage,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A `chat.completion` / `text_completion` body, serialised from borrowed fields (no JSON tree).
#[cfg(test)]
#[derive(Serialize)]
struct CompletionBody<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: Usage,
}

#[cfg(test)]
#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<AssistantMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[cfg(test)]
#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// Streaming chunks, as `data: …\n\n` events.
pub struct ChunkWriter {
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":`: the same for every chunk
    /// of a stream, so escaped and written once.
    envelope: Vec<u8>,
    kind: Inference,
    include_usage: bool,
}

impl ChunkWriter {
    pub fn new(ctx: &ResponseContext, kind: Inference) -> Self {
        let object = match kind {
            Inference::Chat => "chat.completion.chunk",
            _ => "text_completion",
        };
        let mut envelope = Vec::with_capacity(96 + ctx.id.len() + ctx.requested_model.len());
        envelope.extend_from_slice(b"data: ");
        write_envelope(&mut envelope, ctx, object);
        ChunkWriter {
            envelope,
            kind,
            include_usage: ctx.include_usage,
        }
    }

    /// One chunk, written straight into `out`: the envelope is the same for every chunk of a
    /// stream and `choices` is fixed JSON around the one string that varies, so no JSON tree is
    /// built per event.
    fn event(&self, out: &mut Vec<u8>, choices: &[&[u8]], text: &[&str], usage: Option<Usage>) {
        out.extend_from_slice(&self.envelope);
        for (i, part) in choices.iter().enumerate() {
            out.extend_from_slice(part);
            if let Some(t) = text.get(i) {
                write_json_str(out, t);
            }
        }
        if self.include_usage {
            out.extend_from_slice(b",\"usage\":");
            match usage {
                Some(u) => write_json(out, &u),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b"}\n\n");
    }

    /// The opening chunk: the assistant role with empty content (chat only).
    pub fn role(&self, out: &mut Vec<u8>) {
        if self.kind == Inference::Chat {
            self.event(
                out,
                &[br#"[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]"#],
                &[],
                None,
            );
        }
    }

    pub fn delta(&self, out: &mut Vec<u8>, text: &str) {
        let around: [&[u8]; 2] = match self.kind {
            Inference::Chat => [
                br#"[{"index":0,"delta":{"content":"#,
                br#"},"logprobs":null,"finish_reason":null}]"#,
            ],
            _ => [
                br#"[{"index":0,"text":"#,
                br#","logprobs":null,"finish_reason":null}]"#,
            ],
        };
        self.event(out, &around, &[text], None);
    }

    pub fn finish(&self, out: &mut Vec<u8>, reason: &str) {
        let around: [&[u8]; 2] = match self.kind {
            Inference::Chat => [
                br#"[{"index":0,"delta":{},"logprobs":null,"finish_reason":"#,
                b"}]",
            ],
            _ => [
                br#"[{"index":0,"text":"","logprobs":null,"finish_reason":"#,
                b"}]",
            ],
        };
        self.event(out, &around, &[reason], None);
    }

    /// The usage chunk (`choices: []`), only when the client asked for it.
    pub fn usage(&self, out: &mut Vec<u8>, usage: Usage) {
        if self.include_usage {
            self.event(out, &[b"[]"], &[], Some(usage));
        }
    }

    pub fn done(out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// Cuts generated text at the first stop sequence, also when a stop sequence arrives split
/// across stream deltas: it holds back just enough text to recognise one.
#[derive(Debug, Default)]
pub struct StopScanner {
    stops: Vec<String>,
    /// The distinct first bytes of the stops: a delta without any of them, with nothing
    /// held back, can neither hold a stop nor begin one, and passes without a search or copy.
    first_bytes: Vec<u8>,
    pending: String,
    hold: usize,
    stopped: bool,
}

impl StopScanner {
    pub fn new(stops: Vec<String>) -> Self {
        let hold = stops
            .iter()
            .map(|s| s.len())
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        let mut first_bytes: Vec<u8> = stops.iter().filter_map(|s| s.bytes().next()).collect();
        first_bytes.sort_unstable();
        first_bytes.dedup();
        StopScanner {
            stops,
            first_bytes,
            pending: String::new(),
            hold,
            stopped: false,
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Text that can be released now (without stop sequences, the delta itself).
    pub fn push<'a>(&mut self, delta: &'a str) -> std::borrow::Cow<'a, str> {
        if self.stopped {
            return std::borrow::Cow::Borrowed("");
        }
        if self.stops.is_empty()
            || (self.pending.is_empty() && !delta.bytes().any(|b| self.first_bytes.contains(&b)))
        {
            return std::borrow::Cow::Borrowed(delta);
        }
        self.pending.push_str(delta);
        if let Some(cut) = self.first_stop() {
            self.stopped = true;
            let mut out = std::mem::take(&mut self.pending);
            out.truncate(cut);
            return std::borrow::Cow::Owned(out);
        }
        let keep_from = self.pending.len() - self.held_suffix();
        let rest = self.pending.split_off(keep_from);
        std::borrow::Cow::Owned(std::mem::replace(&mut self.pending, rest))
    }

    /// The longest end of `pending` that could be the start of a stop sequence: only that
    /// much waits for the next delta, the rest is released at once.
    fn held_suffix(&self) -> usize {
        let longest = self.hold.min(self.pending.len());
        (1..=longest)
            .rev()
            .find(|&k| {
                let start = self.pending.len() - k;
                self.pending.is_char_boundary(start)
                    && self
                        .pending
                        .get(start..)
                        .is_some_and(|tail| self.stops.iter().any(|s| s.starts_with(tail)))
            })
            .unwrap_or(0)
    }

    /// The stream ended: whatever was held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_scanner_handles_split_stops() {
        let mut s = StopScanner::new(vec!["<|eot_id|>".into()]);
        let mut out = String::new();
        for piece in ["Hel", "lo <|eo", "t_id|> ignored", " more"] {
            out.push_str(&s.push(piece));
        }
        out.push_str(&s.finish());
        assert_eq!(out, "Hello ");
        assert!(s.stopped());

        let mut s = StopScanner::new(vec!["END".into()]);
        let mut out = String::new();
        for piece in ["é", "EN", "é", "x"] {
            out.push_str(&s.push(piece));
        }
        out.push_str(&s.finish());
        assert_eq!(out, "éENéx");
        assert!(!s.stopped());

        // Text that cannot begin a stop sequence is released at once, not held back.
        let mut s = StopScanner::new(vec!["<|im_end|>".into()]);
        assert_eq!(s.push("hello wor"), "hello wor");
        assert_eq!(s.push("ld <|im"), "ld ");
        assert_eq!(s.push("_start"), "<|im_start");
    }

    #[test]
    fn completion_body_is_what_serde_would_write() {
        for (model, id, text, finish) in [
            ("m", "chatcmpl-1", "plain", "stop"),
            (
                "my \"model\"\n",
                "id\u{1}",
                "say \"hi\"\n\\ \u{1F600} \u{7} é",
                "length",
            ),
            ("", "", "", ""),
        ] {
            let ctx = ResponseContext {
                requested_model: model.into(),
                id: id.into(),
                created: 1_700_000_000,
                include_usage: false,
            };
            for kind in [Inference::Chat, Inference::Completions] {
                let usage = Usage::new(3, 4);
                assert_eq!(
                    String::from_utf8(completion_body(&ctx, kind, text, finish, usage)).unwrap(),
                    String::from_utf8(completion_body_by_serde(&ctx, kind, text, finish, usage))
                        .unwrap()
                );
            }
        }
    }

    #[test]
    fn stop_scanner_matches_a_plain_search_however_the_text_is_split() {
        let stops = vec!["<|eot_id|>".to_string(), "\n\nUser:".to_string()];
        let reference = |text: &str| {
            let cut = stops.iter().filter_map(|s| text.find(s.as_str())).min();
            cut.map_or(text, |c| &text[..c]).to_string()
        };
        for text in [
            "plain words with no stop at all",
            "an answer<|eot_id|> and what follows",
            "a < b and c <| d <|eot_i e",
            "two lines\n\nUser: next turn",
            "é<|eot_id|>",
            "<|eot_id|>",
            "\n\nUse\n\nUser:",
        ] {
            let chars: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            for &a in &chars {
                for &b in chars.iter().filter(|&&b| b >= a) {
                    let mut scanner = StopScanner::new(stops.clone());
                    let mut out = String::new();
                    for piece in [&text[..a], &text[a..b], &text[b..]] {
                        out.push_str(&scanner.push(piece));
                    }
                    if !scanner.stopped() {
                        out.push_str(&scanner.finish());
                    }
                    assert_eq!(out, reference(text), "{text:?} split at {a}, {b}");
                }
            }
        }
    }

    #[test]
    fn estimates_are_never_zero_for_text() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a"), 1);
        assert_eq!(estimate_tokens("abcdefgh"), 2);
    }

    #[test]
    fn chunks_are_valid_json_whatever_the_text() {
        let awkward = "say \"hi\"\n\\ \u{1F600} \u{0007} </script>";
        for (kind, include_usage) in [
            (Inference::Chat, false),
            (Inference::Chat, true),
            (Inference::Completions, true),
        ] {
            let ctx = ResponseContext {
                requested_model: "my \"model\"/v1".into(),
                id: "chatcmpl-\u{e9}".into(),
                created: 1_700_000_000,
                include_usage,
            };
            let w = ChunkWriter::new(&ctx, kind);
            let mut out = Vec::new();
            w.role(&mut out);
            w.delta(&mut out, awkward);
            w.finish(&mut out, "stop");
            w.usage(&mut out, Usage::new(3, 4));
            ChunkWriter::done(&mut out);
            let text = String::from_utf8(out).unwrap();
            let events: Vec<&str> = text
                .split("\n\n")
                .filter(|e| !e.is_empty())
                .map(|e| e.strip_prefix("data: ").unwrap())
                .collect();
            assert_eq!(events.last(), Some(&"[DONE]"));
            let chunks: Vec<Value> = events[..events.len() - 1]
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            let chat = kind == Inference::Chat;
            assert_eq!(
                chunks.len(),
                usize::from(chat) + 2 + usize::from(include_usage)
            );
            for c in &chunks {
                assert_eq!(c["id"], ctx.id.as_str());
                assert_eq!(c["model"], ctx.requested_model.as_str());
                assert_eq!(c["created"], 1_700_000_000);
                let object = if chat {
                    "chat.completion.chunk"
                } else {
                    "text_completion"
                };
                assert_eq!(c["object"], object);
                assert_eq!(c.get("usage").is_some(), include_usage);
            }
            let delta = &chunks[usize::from(chat)]["choices"][0];
            let said = if chat {
                &delta["delta"]["content"]
            } else {
                &delta["text"]
            };
            assert_eq!(said, awkward);
            assert_eq!(delta["finish_reason"], Value::Null);
            let last = &chunks[usize::from(chat) + 1]["choices"][0];
            assert_eq!(last["finish_reason"], "stop");
            if include_usage {
                let u = &chunks[chunks.len() - 1];
                assert_eq!(u["choices"], serde_json::json!([]));
                assert_eq!(u["usage"]["total_tokens"], 7);
                assert_eq!(chunks[0]["usage"], Value::Null);
            }
            if chat {
                assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            }
        }
    }
}
