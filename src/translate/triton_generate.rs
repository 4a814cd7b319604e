//! OpenAI chat/completions → Triton `/generate` and `/generate_stream`, and back.
//!
//! Every parameter goes as a top-level scalar (a matching input tensor, else a request
//! parameter — scalars are always accepted), never as an array inside `parameters`. List
//! values (`stop`) ride inside vLLM's `sampling_parameters` JSON string, and the gateway
//! enforces stops itself, since not every backend honours them.

use super::text::{
    completion_body, estimate_tokens, finish_reason, parse_text_request, ChunkWriter, StopScanner,
    TextRequest, Usage,
};
use super::{
    error_output, gateway_error_output, is_success, BodyMode, BodyOutput, ResponseContext,
    ResponseTranslator, Translator, UpstreamRequest, JSON, SSE,
};
use crate::config::{Config, Deployment, Provider};
use crate::error::{ErrorKind, GatewayError};
use crate::json;
use crate::request::{Inference, InferenceBody};
use crate::sse::SseParser;
use serde::Deserialize;

/// Bound on one upstream SSE event we will hold while reassembling it.
const MAX_EVENT_BYTES: usize = 1 << 20;

pub struct TritonGenerate;

/// The body `generate_body` writes, field for field; serde's rendering is the tests' oracle.
#[cfg(test)]
#[derive(serde::Serialize)]
struct GenerateBody<'a> {
    text_input: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    stream: bool,
    exclude_input_in_output: bool,
    return_finish_reason: bool,
    return_num_input_tokens: bool,
    return_num_output_tokens: bool,
    /// vLLM backend: sampling parameters as one JSON string (a scalar, so always accepted).
    sampling_parameters: String,
}

#[cfg(test)]
#[derive(serde::Serialize)]
struct SamplingParameters<'a> {
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
}

/// Written field by field: the prompt is most of the body, and `json::write_str` escapes it
/// several times faster than serde_json.
pub fn generate_body(text: &TextRequest) -> Vec<u8> {
    let sampling = sampling_parameters(text);
    let mut out = Vec::with_capacity(text.prompt.len() + 2 * sampling.len() + 224);
    out.extend_from_slice(b"{\"text_input\":");
    json::write_str(&mut out, &text.prompt);
    out.push(b',');
    write_scalars(&mut out, text);
    out.extend_from_slice(if text.stream {
        b",\"stream\":true"
    } else {
        b",\"stream\":false"
    });
    out.extend_from_slice(
        b",\"exclude_input_in_output\":true,\"return_finish_reason\":true,\
          \"return_num_input_tokens\":true,\"return_num_output_tokens\":true,\
          \"sampling_parameters\":",
    );
    json::write_str(&mut out, &sampling);
    out.push(b'}');
    out
}

/// `"max_tokens":…` and whichever of temperature, top_p and seed are set, in the order both
/// bodies use.
fn write_scalars(out: &mut Vec<u8>, text: &TextRequest) {
    out.extend_from_slice(b"\"max_tokens\":");
    json::write(out, &text.max_tokens);
    for (name, value) in [
        (&b",\"temperature\":"[..], text.temperature),
        (b",\"top_p\":", text.top_p),
    ] {
        if let Some(v) = value {
            out.extend_from_slice(name);
            json::write(out, &v);
        }
    }
    if let Some(seed) = text.seed {
        out.extend_from_slice(b",\"seed\":");
        json::write(out, &seed);
    }
}

/// vLLM's `sampling_parameters`, the JSON text that rides in one string field.
fn sampling_parameters(text: &TextRequest) -> String {
    let mut out = Vec::with_capacity(96);
    out.push(b'{');
    write_scalars(&mut out, text);
    if !text.stop.is_empty() {
        out.extend_from_slice(b",\"stop\":[");
        for (i, stop) in text.stop.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::write_str(&mut out, stop);
        }
        out.push(b']');
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

impl Translator for TritonGenerate {
    fn translate_request(
        &self,
        config: &Config,
        deployment: &Deployment,
        request: &InferenceBody<'_>,
        mut ctx: ResponseContext,
    ) -> Result<UpstreamRequest, GatewayError> {
        let Provider::Triton {
            path, stream_path, ..
        } = &deployment.provider
        else {
            return Err(GatewayError::new(
                ErrorKind::BadGateway,
                "deployment is not a Triton one",
            ));
        };
        if request.kind == Inference::Embeddings {
            return Err(GatewayError::invalid_request(
                "this model is served by Triton /generate, which does not produce embeddings",
            )
            .with_param("model"));
        }
        let text = parse_text_request(config, deployment, request)?;
        ctx.include_usage = text.include_usage;
        let body = generate_body(&text);
        let prompt_estimate = estimate_tokens(&text.prompt);
        let scanner = StopScanner::new(text.stop.clone());
        let response: Box<dyn ResponseTranslator> = if text.stream {
            Box::new(GenerateStream::new(
                ctx,
                request.kind,
                text.max_tokens,
                prompt_estimate,
                scanner,
            ))
        } else {
            Box::new(GenerateResponse {
                ctx,
                kind: request.kind,
                max_tokens: text.max_tokens,
                prompt_estimate,
                scanner,
                status: 200,
                usage: None,
            })
        };
        Ok(UpstreamRequest {
            path: if text.stream {
                stream_path.clone()
            } else {
                path.clone()
            },
            body: Some(body),
            response,
        })
    }
}

/// One `/generate` response or one `/generate_stream` event. Output tensors of one element
/// arrive as scalars, others as arrays; both are accepted.
#[derive(Deserialize, Default)]
pub struct GenerateOutput {
    #[serde(default)]
    pub text_output: Option<OneOrMany<String>>,
    #[serde(default)]
    pub finish_reason: Option<OneOrMany<String>>,
    #[serde(default)]
    pub num_input_tokens: Option<OneOrMany<u64>>,
    #[serde(default)]
    pub num_output_tokens: Option<OneOrMany<u64>>,
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

/// By hand rather than `#[serde(untagged)]`: untagged enums buffer every value into an
/// intermediate tree first, which cost more than the rest of a stream event's translation.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, IntoDeserializer, SeqAccess, Visitor};
        struct OneOrManyVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value or an array of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut values = Vec::new();
                while let Some(v) = seq.next_element()? {
                    values.push(v);
                }
                Ok(OneOrMany::Many(values))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
        }
        d.deserialize_any(OneOrManyVisitor(std::marker::PhantomData))
    }
}

impl OneOrMany<String> {
    pub fn joined(self) -> String {
        match self {
            OneOrMany::One(s) => s,
            OneOrMany::Many(v) => v.concat(),
        }
    }
}

impl<T: Copy> OneOrMany<T> {
    pub fn first(&self) -> Option<T> {
        match self {
            OneOrMany::One(v) => Some(*v),
            OneOrMany::Many(v) => v.first().copied(),
        }
    }
}

impl OneOrMany<String> {
    pub fn first_str(&self) -> Option<&str> {
        match self {
            OneOrMany::One(s) => Some(s),
            OneOrMany::Many(v) => v.first().map(String::as_str),
        }
    }
}

/// A Triton `error` value (a string, sometimes an object) as a gateway error.
pub fn triton_error(status: u16, error: &serde_json::Value) -> GatewayError {
    let message = match error {
        serde_json::Value::String(s) => crate::error::last_line_of_traceback(s),
        other => other.to_string(),
    };
    let kind = match status {
        s if s >= 400 => ErrorKind::Upstream(s),
        // An error under 200: Triton's own status mapping says nothing; the request reached
        // the model and failed there, which is an upstream failure.
        _ => ErrorKind::BadGateway,
    };
    GatewayError::new(kind, message)
}

struct GenerateResponse {
    ctx: ResponseContext,
    kind: Inference,
    max_tokens: u32,
    prompt_estimate: u64,
    scanner: StopScanner,
    status: u16,
    usage: Option<Usage>,
}

impl ResponseTranslator for GenerateResponse {
    fn on_headers(&mut self, status: u16, _content_type: Option<&str>) -> BodyMode {
        self.status = status;
        BodyMode::Buffer
    }

    fn on_body(&mut self, body: &[u8], _end_of_stream: bool) -> BodyOutput {
        if !is_success(self.status) {
            return error_output(self.status, body);
        }
        let Ok(out) = crate::json::from_bytes::<GenerateOutput>(body) else {
            return gateway_error_output(&GatewayError::new(
                ErrorKind::BadGateway,
                "Triton answered with a body that is not a generate response",
            ));
        };
        if let Some(e) = &out.error {
            return gateway_error_output(&triton_error(self.status, e));
        }
        let Some(raw) = out.text_output.map(OneOrMany::joined) else {
            return gateway_error_output(&GatewayError::new(
                ErrorKind::BadGateway,
                "Triton response has no text_output",
            ));
        };
        let mut text = self.scanner.push(&raw).into_owned();
        text.push_str(&self.scanner.finish());
        let completion = out
            .num_output_tokens
            .and_then(|n| n.first())
            .unwrap_or_else(|| estimate_tokens(&text));
        let prompt = out
            .num_input_tokens
            .and_then(|n| n.first())
            .unwrap_or(self.prompt_estimate);
        let reason = if self.scanner.stopped() {
            "stop"
        } else {
            out.finish_reason
                .as_ref()
                .and_then(|r| finish_reason(r.first_str()))
                .unwrap_or(if completion >= u64::from(self.max_tokens) {
                    "length"
                } else {
                    "stop"
                })
        };
        let usage = Usage::new(prompt, completion);
        self.usage = Some(usage);
        BodyOutput::Complete {
            status: 200,
            content_type: JSON,
            body: completion_body(&self.ctx, self.kind, &text, reason, usage),
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// `/generate_stream` SSE → OpenAI chunks. Triton sends no `[DONE]`: we add it at the end
/// of the upstream body, after the finish (and usage) chunks.
pub struct GenerateStream {
    writer: ChunkWriter,
    max_tokens: u32,
    prompt_estimate: u64,
    scanner: StopScanner,
    parser: SseParser,
    status: u16,
    started: bool,
    finished: bool,
    events: u64,
    text_bytes: usize,
    completion_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
    backend_finish: Option<&'static str>,
    usage: Option<Usage>,
}

impl GenerateStream {
    pub fn new(
        ctx: ResponseContext,
        kind: Inference,
        max_tokens: u32,
        prompt_estimate: u64,
        scanner: StopScanner,
    ) -> Self {
        GenerateStream {
            writer: ChunkWriter::new(&ctx, kind),
            max_tokens,
            prompt_estimate,
            scanner,
            parser: SseParser::new(MAX_EVENT_BYTES),
            status: 200,
            started: false,
            finished: false,
            events: 0,
            text_bytes: 0,
            completion_tokens: None,
            prompt_tokens: None,
            backend_finish: None,
            usage: None,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.writer.role(out);
        }
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.start(out);
        let event: GenerateOutput = match crate::json::from_bytes(data) {
            Ok(e) => e,
            Err(_) => {
                self.fail(
                    out,
                    &GatewayError::new(
                        ErrorKind::BadGateway,
                        "Triton sent an event that is not JSON",
                    ),
                );
                return;
            }
        };
        if let Some(e) = &event.error {
            self.fail(out, &triton_error(self.status, e));
            return;
        }
        self.events += 1;
        if let Some(n) = event.num_output_tokens.as_ref().and_then(OneOrMany::first) {
            // Streaming backends report the tokens of each response, so they add up.
            self.completion_tokens = Some(self.completion_tokens.unwrap_or(0) + n);
        }
        if let Some(n) = event.num_input_tokens.as_ref().and_then(OneOrMany::first) {
            self.prompt_tokens = Some(n);
        }
        if let Some(r) = event
            .finish_reason
            .as_ref()
            .and_then(|r| finish_reason(r.first_str()))
        {
            self.backend_finish = Some(r);
        }
        if let Some(delta) = event.text_output.map(OneOrMany::joined) {
            let released = self.scanner.push(&delta);
            self.emit(out, &released);
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, text: &str) {
        if !text.is_empty() {
            self.text_bytes += text.len();
            self.writer.delta(out, text);
        }
    }

    /// A mid-stream failure: an error event, then `[DONE]`.
    fn fail(&mut self, out: &mut Vec<u8>, e: &GatewayError) {
        // Text held back for stop detection was generated before the failure: deliver it.
        let held = self.scanner.finish();
        self.emit(out, &held);
        out.extend_from_slice(&e.to_sse_event());
        ChunkWriter::done(out);
        self.finished = true;
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.start(out);
        let rest = self.scanner.finish();
        self.emit(out, &rest);
        let completion = self
            .completion_tokens
            .unwrap_or_else(|| (self.text_bytes as u64).div_ceil(4).max(self.events.min(1)));
        let reason = if self.scanner.stopped() {
            "stop"
        } else {
            self.backend_finish
                .unwrap_or(if completion >= u64::from(self.max_tokens) {
                    "length"
                } else {
                    "stop"
                })
        };
        self.writer.finish(out, reason);
        let usage = Usage::new(
            self.prompt_tokens.unwrap_or(self.prompt_estimate),
            completion,
        );
        self.usage = Some(usage);
        self.writer.usage(out, usage);
        ChunkWriter::done(out);
        self.finished = true;
    }
}

impl ResponseTranslator for GenerateStream {
    fn on_headers(&mut self, status: u16, _content_type: Option<&str>) -> BodyMode {
        self.status = status;
        if is_success(status) {
            BodyMode::Stream { content_type: SSE }
        } else {
            // Nothing has been streamed yet: answer a plain JSON error with a real status.
            BodyMode::Buffer
        }
    }

    fn on_body(&mut self, chunk: &[u8], end_of_stream: bool) -> BodyOutput {
        if !is_success(self.status) {
            return error_output(self.status, chunk);
        }
        let mut out = Vec::with_capacity(chunk.len() * 4 + 256);
        let events = crate::sse::Events::of(&mut self.parser, chunk, end_of_stream);
        for event in events.iter() {
            self.on_event(event, &mut out);
        }
        if events.overflow && !self.finished {
            self.start(&mut out);
            self.fail(
                &mut out,
                &GatewayError::new(ErrorKind::BadGateway, "Triton stream event too large"),
            );
        }
        if end_of_stream {
            self.end(&mut out);
        }
        BodyOutput::Replace(out)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config(extra: &str) -> Config {
        let json = format!(
            r#"{{"model_list":[{{"model_name":"llama","litellm_params":{{"model":"triton/llama-3-8b","api_base":"http://127.0.0.1:8000/v2/models/llama/generate"{extra}}}}}]}}"#
        );
        parse(json.as_bytes(), &|_| None, 0).unwrap().0
    }

    #[test]
    fn generate_body_is_what_serde_would_write() {
        let cases = [
            TextRequest {
                prompt: "<s>[INST] a \"quoted\" line\nand a tab\t, é and \u{1} [/INST]".into(),
                max_tokens: 64,
                temperature: Some(0.2),
                top_p: Some(1.0),
                seed: Some(7),
                stop: vec!["</s>".into(), "\n\n".into()],
                stream: true,
                include_usage: false,
            },
            TextRequest {
                prompt: String::new(),
                max_tokens: 16,
                temperature: None,
                top_p: None,
                seed: None,
                stop: Vec::new(),
                stream: false,
                include_usage: true,
            },
            TextRequest {
                prompt: "x".repeat(1000),
                max_tokens: 1,
                temperature: Some(f64::NAN),
                top_p: None,
                seed: None,
                stop: Vec::new(),
                stream: false,
                include_usage: false,
            },
        ];
        for text in &cases {
            let sampling = SamplingParameters {
                max_tokens: text.max_tokens,
                temperature: text.temperature,
                top_p: text.top_p,
                seed: text.seed,
                stop: &text.stop,
            };
            let oracle = GenerateBody {
                text_input: &text.prompt,
                max_tokens: text.max_tokens,
                temperature: text.temperature,
                top_p: text.top_p,
                seed: text.seed,
                stream: text.stream,
                exclude_input_in_output: true,
                return_finish_reason: true,
                return_num_input_tokens: true,
                return_num_output_tokens: true,
                sampling_parameters: serde_json::to_string(&sampling).unwrap(),
            };
            assert_eq!(
                String::from_utf8(generate_body(text)).unwrap(),
                serde_json::to_string(&oracle).unwrap()
            );
        }
    }

    fn ctx() -> ResponseContext {
        ResponseContext {
            requested_model: "llama".into(),
            id: "chatcmpl-1".into(),
            created: 7,
            include_usage: false,
        }
    }

    fn translate(
        c: &Config,
        kind: Inference,
        body: &[u8],
    ) -> Result<UpstreamRequest, GatewayError> {
        let req = InferenceBody::parse(kind, body).unwrap();
        TritonGenerate.translate_request(c, &c.deployments[0], &req, ctx())
    }

    #[test]
    fn chat_request_is_flattened_with_scalars_only() {
        let c = config(r#","max_tokens":77"#);
        let up = translate(
            &c,
            Inference::Chat,
            br#"{"model":"llama","messages":[{"role":"system","content":"S"},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"temperature":0.2,"stop":["END"],"seed":3}"#,
        )
        .unwrap();
        assert_eq!(up.path, "/v2/models/llama/generate");
        let v: serde_json::Value = serde_json::from_slice(&up.body.unwrap()).unwrap();
        assert!(v["text_input"]
            .as_str()
            .unwrap()
            .starts_with("<|begin_of_text|><|start_header_id|>system"));
        assert_eq!(v["max_tokens"], 77);
        assert_eq!(v["temperature"], 0.2);
        assert_eq!(v["seed"], 3);
        assert_eq!(v["exclude_input_in_output"], true);
        assert!(v.get("parameters").is_none());
        for (k, val) in v.as_object().unwrap() {
            assert!(!val.is_array() && !val.is_object(), "{k} is not a scalar");
        }
        let sp: serde_json::Value =
            serde_json::from_str(v["sampling_parameters"].as_str().unwrap()).unwrap();
        assert_eq!(sp["stop"], serde_json::json!(["END", "<|eot_id|>"]));
    }

    #[test]
    fn message_contents_borrowed_decoded_joined_or_refused() {
        let c = config(r#","chat_template":"chatml""#);
        let prompt = |body: &[u8]| {
            let up = translate(&c, Inference::Chat, body).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&up.body.unwrap()).unwrap();
            v["text_input"].as_str().unwrap().to_string()
        };
        let p = prompt(
            br#"{"model":"llama","messages":[{"role":"system","content":null},{"role":"user","content":"a \"q\"\n\u00e9"},{"role":"assistant","content":[{"type":"text","text":"x"},{"type":"text","text":"y"}]}]}"#,
        );
        assert!(p.contains("a \"q\"\né"), "{p}");
        assert!(p.contains("xy"), "{p}");
        let err = translate(
            &c,
            Inference::Chat,
            br#"{"model":"llama","messages":[{"role":"user","content":5}]}"#,
        )
        .err()
        .unwrap();
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn streaming_posts_to_generate_stream_and_max_tokens_default() {
        let c = config("");
        let up = translate(
            &c,
            Inference::Completions,
            br#"{"model":"llama","prompt":"Once","stream":true}"#,
        )
        .unwrap();
        assert_eq!(up.path, "/v2/models/llama/generate_stream");
        let v: serde_json::Value = serde_json::from_slice(&up.body.unwrap()).unwrap();
        assert_eq!(v["text_input"], "Once");
        assert_eq!(v["max_tokens"], crate::config::DEFAULT_TRITON_MAX_TOKENS);
        assert_eq!(v["stream"], true);
    }

    #[test]
    fn unsupported_params_are_named_or_dropped() {
        let c = config("");
        let body = br#"{"model":"llama","messages":[{"role":"user","content":"x"}],"n":2,"logit_bias":{"1":2},"tools":[{"type":"function"}]}"#;
        let e = translate(&c, Inference::Chat, body).err().unwrap();
        assert_eq!(e.status(), 400);
        assert!(e.message.contains("n, logit_bias, tools"), "{}", e.message);
        let mut c = config("");
        c.drop_params = true;
        assert!(translate(&c, Inference::Chat, body).is_ok());
        let e = translate(
            &config(""),
            Inference::Embeddings,
            br#"{"model":"llama","input":"x"}"#,
        )
        .err()
        .unwrap();
        assert_eq!(e.status(), 400);
    }

    fn complete(out: BodyOutput) -> (u16, serde_json::Value) {
        match out {
            BodyOutput::Complete { status, body, .. } => {
                (status, serde_json::from_slice(&body).unwrap())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn generate_response_to_chat_completion() {
        let c = config("");
        let mut up = translate(
            &c,
            Inference::Chat,
            br#"{"model":"llama","messages":[{"role":"user","content":"x"}],"max_tokens":5}"#,
        )
        .unwrap();
        assert_eq!(up.response.on_headers(200, Some(JSON)), BodyMode::Buffer);
        let (status, v) = complete(up.response.on_body(
            br#"{"model_name":"llama","model_version":"1","text_output":"Hello there<|eot_id|>junk","num_input_tokens":9,"num_output_tokens":3}"#,
            true,
        ));
        assert_eq!(status, 200);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "llama");
        assert_eq!(v["choices"][0]["message"]["content"], "Hello there");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            v["usage"],
            serde_json::json!({"prompt_tokens":9,"completion_tokens":3,"total_tokens":12})
        );

        let mut up = translate(
            &c,
            Inference::Completions,
            br#"{"model":"llama","prompt":"x","max_tokens":2}"#,
        )
        .unwrap();
        up.response.on_headers(200, None);
        let (_, v) = complete(up.response.on_body(
            br#"{"text_output":["ab","cd"],"finish_reason":"length"}"#,
            true,
        ));
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "abcd");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 1);
    }

    #[test]
    fn tracebacks_are_cut_to_their_last_line() {
        let e = triton_error(
            400,
            &serde_json::json!("Traceback (most recent call last):\n  File \"/srv/m.py\", line 3\nRuntimeError: boom\n"),
        );
        assert_eq!(e.message, "RuntimeError: boom");
        assert_eq!(
            triton_error(400, &serde_json::json!("plain")).message,
            "plain"
        );
    }

    #[test]
    fn errors_under_200_and_with_status() {
        let c = config("");
        let body = br#"{"model":"llama","messages":[{"role":"user","content":"x"}]}"#;
        let mut up = translate(&c, Inference::Chat, body).unwrap();
        up.response.on_headers(200, Some(JSON));
        let (status, v) = complete(up.response.on_body(
            br#"{"error":"generate expects model to produce exactly 1 response"}"#,
            true,
        ));
        assert_eq!(status, 502);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exactly 1"));
        let mut up = translate(&c, Inference::Chat, body).unwrap();
        up.response.on_headers(404, Some(JSON));
        let (status, v) = complete(up.response.on_body(
            br#"{"error":"Request for unknown model: 'x' is not found"}"#,
            true,
        ));
        assert_eq!(status, 404);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let mut up = translate(&c, Inference::Chat, body).unwrap();
        up.response.on_headers(200, Some(JSON));
        let (status, _) = complete(up.response.on_body(b"<html>", true));
        assert_eq!(status, 502);
    }

    const UPSTREAM: &[u8] = b"data: {\"model_name\":\"m\",\"text_output\":\"The \"}\n\ndata: {\"text_output\":\"answer<|eo\"}\n\ndata: {\"text_output\":\"t_id|>\"}\n\n";

    fn run_stream(input: &[u8], cuts: &[usize], include_usage: bool) -> String {
        let c = config("");
        let body: &[u8] = if include_usage {
            br#"{"model":"llama","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}"#
        } else {
            br#"{"model":"llama","messages":[{"role":"user","content":"x"}],"stream":true}"#
        };
        let mut up = translate(&c, Inference::Chat, body).unwrap();
        assert_eq!(
            up.response.on_headers(200, Some("text/event-stream")),
            BodyMode::Stream { content_type: SSE }
        );
        let mut out = Vec::new();
        let mut last = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let end = cut == input.len();
            match up.response.on_body(&input[last..cut], end) {
                BodyOutput::Replace(b) => out.extend(b),
                other => panic!("{other:?}"),
            }
            last = cut;
        }
        if cuts.last() == Some(&input.len()) || input.is_empty() {
            // already ended
        }
        String::from_utf8(out).unwrap()
    }

    fn contents(sse: &str) -> (String, Vec<serde_json::Value>) {
        let mut text = String::new();
        let mut chunks = Vec::new();
        for line in sse.split("\n\n").filter(|l| !l.is_empty()) {
            let data = line.strip_prefix("data: ").unwrap();
            if data == "[DONE]" {
                chunks.push(serde_json::Value::Null);
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
            chunks.push(v);
        }
        (text, chunks)
    }

    #[test]
    fn stream_translation_is_the_same_for_every_split() {
        let whole = run_stream(UPSTREAM, &[], false);
        let (text, chunks) = contents(&whole);
        assert_eq!(text, "The answer");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let n = chunks.len();
        assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
        assert!(chunks[n - 1].is_null(), "ends with [DONE]");
        assert!(chunks
            .iter()
            .all(|c| c.is_null() || c["id"] == "chatcmpl-1"));
        for cut in 0..=UPSTREAM.len() {
            let (t, _) = contents(&run_stream(UPSTREAM, &[cut], false));
            assert_eq!(t, "The answer", "cut at {cut}");
        }
    }

    #[test]
    fn stream_usage_chunk_only_when_asked() {
        let (_, chunks) = contents(&run_stream(UPSTREAM, &[], true));
        let n = chunks.len();
        assert_eq!(chunks[n - 2]["choices"], serde_json::json!([]));
        assert!(
            chunks[n - 2]["usage"]["completion_tokens"]
                .as_u64()
                .unwrap()
                > 0
        );
        assert!(chunks[1]["usage"].is_null());
        let (_, chunks) = contents(&run_stream(UPSTREAM, &[], false));
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    }

    #[test]
    fn mid_stream_error_becomes_error_event_then_done() {
        let input = b"data: {\"text_output\":\"a\"}\n\ndata: {\"error\":\"boom\"}\n\ndata: {\"text_output\":\"b\"}\n\n";
        let out = run_stream(input, &[], false);
        let (text, chunks) = contents(&out);
        assert_eq!(text, "a");
        let n = chunks.len();
        assert_eq!(chunks[n - 2]["error"]["message"], "boom");
        assert!(chunks[n - 1].is_null());
        assert_eq!(out.matches("[DONE]").count(), 1);
    }
}
