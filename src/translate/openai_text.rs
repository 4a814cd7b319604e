//! Chat requests to an OpenAI text-completion model (`text-completion-openai/`, e.g.
//! `gpt-3.5-turbo-instruct`): the messages become one prompt (the transcript template), sent
//! to `/v1/completions`; the answer, and its stream, come back as chat. Completions and
//! embeddings requests pass through as for any OpenAI-compatible deployment.

use super::openai_compat::OpenAiCompat;
use super::text::{
    completion_body, estimate_tokens, parse_text_request, ChunkWriter, StopScanner, Usage,
};
use super::{
    error_output, gateway_error_output, is_success, BodyMode, BodyOutput, ResponseContext,
    ResponseTranslator, Translator, UpstreamRequest, JSON, SSE,
};
use crate::config::{Config, Deployment, Provider};
use crate::error::{ErrorKind, GatewayError};
use crate::request::{Inference, InferenceBody};
use crate::sse::SseParser;

const MAX_EVENT_BYTES: usize = 1 << 20;
/// OpenAI's completions endpoint takes at most four stop sequences; the gateway enforces
/// the rest itself (the stop scanner).
const MAX_UPSTREAM_STOPS: usize = 4;

pub struct OpenAiTextCompletion;

impl Translator for OpenAiTextCompletion {
    fn translate_request(
        &self,
        config: &Config,
        deployment: &Deployment,
        request: &InferenceBody<'_>,
        mut ctx: ResponseContext,
    ) -> Result<UpstreamRequest, GatewayError> {
        if request.kind != Inference::Chat {
            return OpenAiCompat.translate_request(config, deployment, request, ctx);
        }
        let Provider::OpenAiCompatible {
            completions_path, ..
        } = &deployment.provider
        else {
            return Err(GatewayError::new(
                ErrorKind::BadGateway,
                "a text-completion deployment must be OpenAI-compatible",
            ));
        };
        let text = parse_text_request(config, deployment, request)?;
        ctx.include_usage = text.include_usage;
        let mut body = serde_json::json!({
            "model": deployment.upstream_model,
            "prompt": text.prompt,
            "max_tokens": text.max_tokens,
            "stream": text.stream,
        });
        if let Some(map) = body.as_object_mut() {
            if let Some(t) = text.temperature {
                map.insert("temperature".into(), t.into());
            }
            if let Some(p) = text.top_p {
                map.insert("top_p".into(), p.into());
            }
            if let Some(s) = text.seed {
                map.insert("seed".into(), s.into());
            }
            if !text.stop.is_empty() {
                let stops: Vec<&String> = text.stop.iter().take(MAX_UPSTREAM_STOPS).collect();
                map.insert("stop".into(), serde_json::json!(stops));
            }
            if text.stream {
                // The usage chunk, for token accounting; the client sees it only if it asked.
                map.insert(
                    "stream_options".into(),
                    serde_json::json!({"include_usage": true}),
                );
            }
        }
        let prompt_estimate = estimate_tokens(&text.prompt);
        let scanner = StopScanner::new(text.stop.clone());
        let response: Box<dyn ResponseTranslator> = if text.stream {
            Box::new(TextStream::new(ctx, prompt_estimate, scanner))
        } else {
            Box::new(TextAnswer {
                ctx,
                status: 200,
                prompt_estimate,
                scanner,
                usage: None,
            })
        };
        Ok(UpstreamRequest {
            path: completions_path.clone(),
            body: Some(serde_json::to_vec(&body).unwrap_or_default()),
            response,
        })
    }
}

#[derive(serde::Deserialize)]
struct TextChoice {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(serde::Deserialize)]
struct UpstreamUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(serde::Deserialize)]
struct TextCompletion {
    #[serde(default)]
    choices: Vec<TextChoice>,
    #[serde(default)]
    usage: Option<UpstreamUsage>,
}

fn finish(upstream: Option<&str>, stopped: bool) -> &'static str {
    if stopped {
        return "stop";
    }
    match upstream {
        Some("length") => "length",
        Some("content_filter") => "content_filter",
        _ => "stop",
    }
}

fn usage_of(u: Option<&UpstreamUsage>, prompt_estimate: u64, text: &str) -> Usage {
    Usage::new(
        u.and_then(|u| u.prompt_tokens).unwrap_or(prompt_estimate),
        u.and_then(|u| u.completion_tokens)
            .unwrap_or_else(|| estimate_tokens(text)),
    )
}

/// A whole `text_completion` answer, returned as a `chat.completion`.
struct TextAnswer {
    ctx: ResponseContext,
    status: u16,
    prompt_estimate: u64,
    scanner: StopScanner,
    usage: Option<Usage>,
}

impl ResponseTranslator for TextAnswer {
    fn on_headers(&mut self, status: u16, _content_type: Option<&str>) -> BodyMode {
        self.status = status;
        BodyMode::Buffer
    }

    fn on_body(&mut self, body: &[u8], _end_of_stream: bool) -> BodyOutput {
        if !is_success(self.status) {
            return error_output(self.status, body);
        }
        let Ok(answer) = serde_json::from_slice::<TextCompletion>(body) else {
            return gateway_error_output(&GatewayError::new(
                ErrorKind::BadGateway,
                "the text-completion upstream answered something that is not a completion",
            ));
        };
        let choice = answer.choices.first();
        let raw = choice.and_then(|c| c.text.as_deref()).unwrap_or("");
        let mut text = self.scanner.push(raw).into_owned();
        text.push_str(&self.scanner.finish());
        let reason = finish(
            choice.and_then(|c| c.finish_reason.as_deref()),
            self.scanner.stopped(),
        );
        let usage = usage_of(answer.usage.as_ref(), self.prompt_estimate, &text);
        self.usage = Some(usage);
        BodyOutput::Complete {
            status: 200,
            content_type: JSON,
            body: completion_body(&self.ctx, Inference::Chat, &text, reason, usage),
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// A `text_completion` stream, returned as `chat.completion.chunk`s.
struct TextStream {
    writer: ChunkWriter,
    prompt_estimate: u64,
    scanner: StopScanner,
    parser: SseParser,
    status: u16,
    started: bool,
    finished: bool,
    text: String,
    upstream_finish: Option<String>,
    upstream_usage: Option<(Option<u64>, Option<u64>)>,
    usage: Option<Usage>,
}

impl TextStream {
    fn new(ctx: ResponseContext, prompt_estimate: u64, scanner: StopScanner) -> Self {
        TextStream {
            writer: ChunkWriter::new(&ctx, Inference::Chat),
            prompt_estimate,
            scanner,
            parser: SseParser::new(MAX_EVENT_BYTES),
            status: 200,
            started: false,
            finished: false,
            text: String::new(),
            upstream_finish: None,
            upstream_usage: None,
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
        if self.finished || data == b"[DONE]" {
            return;
        }
        self.start(out);
        let Ok(chunk) = serde_json::from_slice::<TextCompletion>(data) else {
            self.fail(
                out,
                &GatewayError::new(
                    ErrorKind::BadGateway,
                    "the text-completion upstream sent an event that is not a completion chunk",
                ),
            );
            return;
        };
        if let Some(u) = &chunk.usage {
            self.upstream_usage = Some((u.prompt_tokens, u.completion_tokens));
        }
        if let Some(choice) = chunk.choices.first() {
            if let Some(r) = &choice.finish_reason {
                self.upstream_finish = Some(r.clone());
            }
            if let Some(delta) = choice.text.as_deref() {
                let released = self.scanner.push(delta).into_owned();
                self.emit(out, &released);
            }
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, text: &str) {
        if !text.is_empty() {
            self.text.push_str(text);
            self.writer.delta(out, text);
        }
    }

    fn fail(&mut self, out: &mut Vec<u8>, e: &GatewayError) {
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
        let reason = finish(self.upstream_finish.as_deref(), self.scanner.stopped());
        self.writer.finish(out, reason);
        let usage = match self.upstream_usage {
            Some((p, c)) => Usage::new(
                p.unwrap_or(self.prompt_estimate),
                c.unwrap_or_else(|| estimate_tokens(&self.text)),
            ),
            None => Usage::new(self.prompt_estimate, estimate_tokens(&self.text)),
        };
        self.usage = Some(usage);
        self.writer.usage(out, usage);
        ChunkWriter::done(out);
        self.finished = true;
    }
}

impl ResponseTranslator for TextStream {
    fn on_headers(&mut self, status: u16, _content_type: Option<&str>) -> BodyMode {
        self.status = status;
        if is_success(status) {
            BodyMode::Stream { content_type: SSE }
        } else {
            BodyMode::Buffer
        }
    }

    fn on_body(&mut self, chunk: &[u8], end_of_stream: bool) -> BodyOutput {
        if !is_success(self.status) {
            return error_output(self.status, chunk);
        }
        let mut out = Vec::with_capacity(chunk.len() * 2 + 256);
        let events = crate::sse::Events::of(&mut self.parser, chunk, end_of_stream);
        for event in events.iter() {
            self.on_event(event, &mut out);
        }
        if events.overflow && !self.finished {
            self.start(&mut out);
            self.fail(
                &mut out,
                &GatewayError::new(ErrorKind::BadGateway, "upstream stream event too large"),
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

    fn config() -> Config {
        let json = r#"{"model_list":[{"model_name":"instruct","litellm_params":{"model":"text-completion-openai/gpt-3.5-turbo-instruct","api_base":"http://h:1"}}]}"#;
        parse(json.as_bytes(), &|_| None, 0).unwrap().0
    }

    fn ctx() -> ResponseContext {
        ResponseContext {
            requested_model: "instruct".into(),
            id: "chatcmpl-x".into(),
            created: 1,
            include_usage: false,
        }
    }

    fn translate(body: &[u8]) -> UpstreamRequest {
        let c = config();
        let req = InferenceBody::parse(Inference::Chat, body).unwrap();
        OpenAiTextCompletion
            .translate_request(&c, &c.deployments[0], &req, ctx())
            .unwrap()
    }

    #[test]
    fn chat_goes_to_completions_as_one_prompt_and_comes_back_as_chat() {
        let up = translate(
            br#"{"model":"instruct","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"max_tokens":7,"temperature":0.5}"#,
        );
        assert_eq!(up.path, "/v1/completions");
        let sent: serde_json::Value = serde_json::from_slice(&up.body.unwrap()).unwrap();
        assert_eq!(sent["model"], "gpt-3.5-turbo-instruct");
        assert_eq!(sent["max_tokens"], 7);
        assert_eq!(sent["temperature"], 0.5);
        let prompt = sent["prompt"].as_str().unwrap();
        assert!(
            prompt.contains("Be brief.") && prompt.contains("Hi"),
            "{prompt}"
        );
        assert!(sent.get("messages").is_none());
        let mut r = up.response;
        r.on_headers(200, Some("application/json"));
        let out = r.on_body(
            br#"{"object":"text_completion","choices":[{"index":0,"text":"Hello!","finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
            true,
        );
        let BodyOutput::Complete { status, body, .. } = out else {
            panic!("expected a complete answer")
        };
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "Hello!");
        assert_eq!(v["usage"]["total_tokens"], 11);
        assert_eq!(r.usage().unwrap().completion_tokens, 2);
    }

    #[test]
    fn a_text_stream_becomes_chat_chunks_split_anywhere() {
        let events = "data: {\"choices\":[{\"text\":\"Hel\",\"index\":0,\"finish_reason\":null}]}\n\n\
                      data: {\"choices\":[{\"text\":\"lo\",\"index\":0,\"finish_reason\":\"length\"}]}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n\
                      data: [DONE]\n\n";
        for cut in 0..events.len() {
            let up = translate(
                br#"{"model":"instruct","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#,
            );
            let sent: serde_json::Value = serde_json::from_slice(&up.body.unwrap()).unwrap();
            assert_eq!(sent["stream_options"]["include_usage"], true);
            let mut r = up.response;
            assert!(matches!(
                r.on_headers(200, Some(SSE)),
                BodyMode::Stream { .. }
            ));
            let mut out = Vec::new();
            let (a, b) = events.as_bytes().split_at(cut);
            for (part, end) in [(a, false), (b, true)] {
                if let BodyOutput::Replace(bytes) = r.on_body(part, end) {
                    out.extend(bytes);
                }
            }
            let text = String::from_utf8(out).unwrap();
            let chunks: Vec<serde_json::Value> = text
                .split("\n\n")
                .filter_map(|e| e.strip_prefix("data: "))
                .filter(|d| *d != "[DONE]")
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            let content: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .collect();
            assert_eq!(content, "Hello", "cut at {cut}");
            assert!(chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk"));
            assert_eq!(
                chunks.last().unwrap()["choices"][0]["finish_reason"],
                "length"
            );
            assert!(text.ends_with("data: [DONE]\n\n"));
            assert_eq!(r.usage().unwrap().prompt_tokens, 4);
        }
    }

    #[test]
    fn completions_requests_pass_through() {
        let c = config();
        let req = InferenceBody::parse(
            Inference::Completions,
            br#"{"model":"instruct","prompt":"x"}"#,
        )
        .unwrap();
        let up = OpenAiTextCompletion
            .translate_request(&c, &c.deployments[0], &req, ctx())
            .unwrap();
        assert_eq!(up.path, "/v1/completions");
        let sent: serde_json::Value = serde_json::from_slice(&up.body.unwrap()).unwrap();
        assert_eq!(
            (sent["model"].as_str(), sent["prompt"].as_str()),
            (Some("gpt-3.5-turbo-instruct"), Some("x"))
        );
    }
}
