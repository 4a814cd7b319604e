//! Entry points for the fuzzers (`fuzz/`, `make fuzz`): each takes arbitrary bytes and drives
//! one part of the core the way the filter would. Any panic is a bug: in Envoy it would kill
//! the worker's VM. `cargo test` also runs each on a fixed set of pseudo-random inputs.

use crate::config::{parse, Config};
use crate::gateway::{self, BodyAction, HeadAction, RequestHead};
use crate::host::FakeHost;
use crate::keys::Principal;
use crate::request::{Inference, InferenceBody};
use crate::sse::SseParser;
use crate::translate::{BodyMode, ResponseContext};
use std::sync::OnceLock;

const CONFIG: &str = r#"{
  "model_list": [
    {"model_name": "chat", "litellm_params": {"model": "hosted_vllm/m", "api_base": "http://h:1/v1", "rpm": 1000, "tpm": 100000}},
    {"model_name": "chat", "litellm_params": {"model": "openai/m", "api_base": "http://h:2", "order": 2}},
    {"model_name": "gen", "litellm_params": {"model": "triton/llama-3", "api_base": "http://h:3/v2/models/m/generate"},
     "model_info": {"max_input_tokens": 100}},
    {"model_name": "infer", "litellm_params": {"model": "triton/m", "api_base": "http://h:3/v2/models/m/infer", "prompt_template": "mistral"}},
    {"model_name": "emb", "litellm_params": {"model": "triton/e", "api_base": "http://h:3/v2/models/e/embeddings"}}
  ],
  "router_settings": {"routing_strategy": "usage-based-routing", "model_group_alias": {"a": "chat"},
                      "fallbacks": [{"gen": ["chat"]}], "context_window_fallbacks": [{"gen": ["infer"]}]},
  "litellm_settings": {"cache": true, "cache_params": {"slots": 16}},
  "general_settings": {"master_key": "sk-m", "virtual_keys": [{"key": "sk-k", "models": ["a"], "rpm_limit": 5, "max_budget": 1}]}
}"#;

fn config() -> Option<&'static Config> {
    static CELL: OnceLock<Option<Config>> = OnceLock::new();
    CELL.get_or_init(|| parse(CONFIG.as_bytes(), &|_| None, 0).ok().map(|(c, _)| c))
        .as_ref()
}

fn host() -> FakeHost {
    let mut h = FakeHost::new(7);
    if let Some(c) = config() {
        crate::router::precreate(c, &mut h);
    }
    h
}

/// Configuration parsing and validation.
pub fn config_parse(data: &[u8]) {
    let _ = parse(
        data,
        &|name| (name == "SET").then(|| "value".to_string()),
        0,
    );
}

/// The SSE parser on `data` cut into pieces whose sizes the data chooses.
pub fn sse(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 17) + 1;
    let mut parser = SseParser::new(4096);
    let mut events = 0usize;
    for piece in rest.chunks(step) {
        let _ = parser.feed(piece, &mut |_| events += 1);
    }
    let _ = parser.finish(&mut |_| events += 1);
}

/// A whole request: the first byte picks method, path and key; the rest is the body.
pub fn request(data: &[u8]) {
    let Some(config) = config() else { return };
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let paths = [
        "/v1/chat/completions",
        "/completions",
        "/v1/embeddings",
        "/vllm/score",
        "/key/generate",
        "/v1/models",
        "/v1/models/a",
        "/key/info?key=sk-k",
        "/health",
        "/v1/health/ready",
    ];
    let path = paths
        .get(usize::from(pick) % paths.len())
        .copied()
        .unwrap_or("/");
    let key = [Some("sk-m"), Some("sk-k"), None, Some("sk-lgw1_x.y")]
        .get(usize::from(pick >> 4) % 4)
        .copied()
        .flatten();
    let method = if pick & 0x80 == 0 { "POST" } else { "GET" };
    let mut h = host();
    let head = RequestHead {
        method,
        path,
        key,
        tags: (pick & 0x40 != 0).then_some("paid, free"),
        timeout: (pick & 0x20 != 0).then_some("0.5"),
        content_length: Some(body.len() as u64),
        end_of_stream: body.is_empty(),
    };
    if let HeadAction::ReadBody(pending) = gateway::on_request_head(config, &mut h, &head) {
        if let BodyAction::Forward(f) = gateway::on_request_body(config, &mut h, &pending, body) {
            let mut f = *f;
            if let Some(mut replay) = f.replay.take() {
                let _ = gateway::failover(config, &mut h, &mut replay, 500 + u16::from(pick & 3));
            }
        }
    }
}

/// A response for each kind of backend, status and chunking chosen by the data.
pub fn response(data: &[u8]) {
    let Some(config) = config() else { return };
    let [which, status_byte, step, rest @ ..] = data else {
        return;
    };
    let requests: [(&str, Inference, &[u8]); 6] = [
        (
            "chat",
            Inference::Chat,
            br#"{"model":"chat","messages":[{"role":"user","content":"x"}]}"#,
        ),
        (
            "chat",
            Inference::Chat,
            br#"{"model":"chat","messages":[{"role":"user","content":"x"}],"stream":true}"#,
        ),
        (
            "gen",
            Inference::Chat,
            br#"{"model":"gen","messages":[{"role":"user","content":"x"}]}"#,
        ),
        (
            "gen",
            Inference::Completions,
            br#"{"model":"gen","prompt":"x","stream":true,"stop":["ab"]}"#,
        ),
        (
            "infer",
            Inference::Chat,
            br#"{"model":"infer","messages":[{"role":"user","content":"x"}],"stream":true}"#,
        ),
        (
            "emb",
            Inference::Embeddings,
            br#"{"model":"emb","input":["a","b"],"encoding_format":"base64"}"#,
        ),
    ];
    let Some((_, kind, body)) = requests.get(usize::from(*which) % requests.len()) else {
        return;
    };
    let Ok(request) = InferenceBody::parse(*kind, body) else {
        return;
    };
    let Some(group) = config.resolve_model(&request.model) else {
        return;
    };
    let Some(deployment) = group
        .deployments
        .first()
        .and_then(|&i| config.deployment(i))
    else {
        return;
    };
    let ctx = ResponseContext {
        requested_model: request.model.clone(),
        id: "id".into(),
        created: 0,
        include_usage: true,
    };
    let translator: &dyn crate::translate::Translator = match deployment.provider {
        crate::config::Provider::OpenAiCompatible { .. } => {
            &crate::translate::openai_compat::OpenAiCompat
        }
        crate::config::Provider::Triton {
            mode: crate::config::TritonMode::Generate,
            ..
        } => &crate::translate::triton_generate::TritonGenerate,
        crate::config::Provider::Triton { .. } => &crate::translate::triton_infer::TritonInfer,
    };
    let Ok(mut up) = translator.translate_request(config, deployment, &request, ctx) else {
        return;
    };
    let status = [200u16, 200, 200, 400, 404, 429, 500, 503]
        .get(usize::from(*status_byte) % 8)
        .copied()
        .unwrap_or(200);
    let content_type = if status_byte & 0x80 == 0 {
        Some("text/event-stream")
    } else {
        Some("application/json")
    };
    match up.response.on_headers(status, content_type) {
        BodyMode::Buffer => {
            let _ = up.response.on_body(rest, true);
        }
        _ => {
            let step = usize::from(*step % 31) + 1;
            let pieces: Vec<&[u8]> = rest.chunks(step).collect();
            for (i, piece) in pieces.iter().enumerate() {
                let _ = up.response.on_body(piece, i + 1 == pieces.len());
            }
            if pieces.is_empty() {
                let _ = up.response.on_body(&[], true);
            }
        }
    }
    let _ = up.response.usage();
}

/// Key verification on arbitrary keys, and the date and duration parsers.
pub fn keys(data: &[u8]) {
    let Some(config) = config() else { return };
    let text = String::from_utf8_lossy(data);
    let _ = config.keys.authenticate(Some(&text), 1_800_000_000);
    let with_prefix = format!("{}{}", crate::keys::MINTED_PREFIX, text);
    if let Ok(Principal::Key(_)) = config.keys.authenticate(Some(&with_prefix), 0) {
        // A random token verified: only possible with a forged HMAC, which must not happen.
        std::process::abort();
    }
    let _ = crate::keys::parse_rfc3339(&text);
    let _ = crate::keys::parse_duration(&text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::SplitMix64;

    /// A short, deterministic run of every target on the host's stable toolchain; `make fuzz`
    /// runs them under libFuzzer for real.
    #[test]
    fn every_target_survives_pseudo_random_inputs() {
        let mut rng = SplitMix64::new(2026);
        let seeds: [&[u8]; 6] = [
            CONFIG.as_bytes(),
            b"data: {\"text_output\":\"x\"}\n\ndata: {\"error\":\"e\"}\n\n",
            br#"{"model":"chat","messages":[{"role":"user","content":"x"}],"fallbacks":["gen"],"cache":{"no-cache":true}}"#,
            br#"{"outputs":[{"name":"embeddings","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}]}"#,
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n",
            b"",
        ];
        for round in 0..3000u64 {
            let seed = seeds[(round % seeds.len() as u64) as usize];
            let mut data = seed.to_vec();
            // Mutate: flip, insert and cut bytes at pseudo-random places.
            for _ in 0..(rng.next_u64() % 8) {
                let r = rng.next_u64();
                let at = if data.is_empty() {
                    0
                } else {
                    (r as usize >> 8) % data.len()
                };
                match r % 3 {
                    0 if !data.is_empty() => data[at] ^= (r >> 32) as u8,
                    1 => data.insert(at, (r >> 40) as u8),
                    _ => data.truncate(at),
                }
            }
            let prefixed: Vec<u8> = std::iter::once((round % 251) as u8)
                .chain(std::iter::once((round / 7 % 256) as u8))
                .chain(std::iter::once((round / 13 % 256) as u8))
                .chain(data.iter().copied())
                .collect();
            config_parse(&data);
            sse(&prefixed);
            request(&prefixed);
            response(&prefixed);
            keys(&data);
        }
    }
}
