//! OpenAI → KServe v2 / Triton `/infer` (text generation and embeddings), and back.
//!
//! `/infer` refuses inputs a model does not declare, so only what the client set is sent:
//! `text_input` (BYTES), `max_tokens` (INT32), `exclude_input_in_output` (BOOL), and the
//! sampling parameters present in the request with their tensor datatypes (float → FP32,
//! `seed` → UINT64), named as TensorRT-LLM's ensemble names its inputs.

use super::text::{
    completion_body, estimate_tokens, parse_text_request, ChunkWriter, StopScanner, TextRequest,
    Usage,
};
use super::triton_generate::triton_error;
use super::{
    error_output, gateway_error_output, is_success, BodyMode, BodyOutput, ResponseContext,
    ResponseTranslator, Translator, UpstreamRequest, JSON, SSE,
};
use crate::config::{Config, Deployment, Provider, TritonMode};
use crate::error::{ErrorKind, GatewayError};
use crate::request::{Inference, InferenceBody};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct TritonInfer;

#[derive(Serialize)]
struct Tensor<'a> {
    name: &'a str,
    shape: Vec<usize>,
    datatype: &'a str,
    data: Value,
}

pub fn infer_text_body(id: &str, text: &TextRequest) -> Vec<u8> {
    let mut inputs = vec![
        Tensor {
            name: "text_input",
            shape: vec![1],
            datatype: "BYTES",
            data: json!([text.prompt]),
        },
        Tensor {
            name: "max_tokens",
            shape: vec![1],
            datatype: "INT32",
            data: json!([text.max_tokens]),
        },
        // Declared by both TensorRT-LLM's ensemble and vLLM's backend; without it they echo.
        Tensor {
            name: "exclude_input_in_output",
            shape: vec![1],
            datatype: "BOOL",
            data: json!([true]),
        },
    ];
    if let Some(t) = text.temperature {
        inputs.push(Tensor {
            name: "temperature",
            shape: vec![1],
            datatype: "FP32",
            data: json!([t]),
        });
    }
    if let Some(p) = text.top_p {
        inputs.push(Tensor {
            name: "top_p",
            shape: vec![1],
            datatype: "FP32",
            data: json!([p]),
        });
    }
    if let Some(s) = text.seed {
        inputs.push(Tensor {
            name: "seed",
            shape: vec![1],
            datatype: "UINT64",
            data: json!([s]),
        });
    }
    serde_json::to_vec(&json!({"id": id, "inputs": inputs})).unwrap_or_default()
}

pub fn infer_embeddings_body(id: &str, inputs: &[String]) -> Vec<u8> {
    let tensor = Tensor {
        name: "input_text",
        shape: vec![inputs.len()],
        datatype: "BYTES",
        data: json!(inputs),
    };
    serde_json::to_vec(&json!({"id": id, "inputs": [tensor]})).unwrap_or_default()
}

#[derive(Deserialize)]
struct EmbeddingParams {
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<Value>,
}

fn embedding_inputs(raw: &str) -> Result<Vec<String>, GatewayError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Input {
        One(String),
        Many(Vec<String>),
    }
    match serde_json::from_str::<Input>(raw) {
        Ok(Input::One(s)) => Ok(vec![s]),
        Ok(Input::Many(v)) if !v.is_empty() => Ok(v),
        _ => Err(GatewayError::invalid_request(
            "input must be a string or a list of strings (token ids are not supported by a Triton text model)",
        )
        .with_param("input")),
    }
}

impl Translator for TritonInfer {
    fn translate_request(
        &self,
        config: &Config,
        deployment: &Deployment,
        request: &InferenceBody<'_>,
        mut ctx: ResponseContext,
    ) -> Result<UpstreamRequest, GatewayError> {
        let Provider::Triton { mode, path, .. } = &deployment.provider else {
            return Err(GatewayError::new(
                ErrorKind::BadGateway,
                "deployment is not a Triton one",
            ));
        };
        match request.kind {
            Inference::Embeddings => {
                let params: EmbeddingParams = serde_json::from_str(request.text).map_err(|e| {
                    GatewayError::invalid_request(format!("invalid request parameters: {e}"))
                })?;
                if params.dimensions.as_ref().is_some_and(|d| !d.is_null()) && !config.drop_params {
                    return Err(GatewayError::invalid_request(
                        "dimensions not supported by this model's backend; remove it or set litellm_settings.drop_params: true",
                    )
                    .with_param("dimensions"));
                }
                let base64 = match params.encoding_format.as_deref() {
                    None | Some("float") => false,
                    Some("base64") => true,
                    Some(other) => {
                        return Err(GatewayError::invalid_request(format!(
                            "encoding_format must be \"float\" or \"base64\", not \"{other}\""
                        ))
                        .with_param("encoding_format"))
                    }
                };
                let inputs = embedding_inputs(request.payload.get())?;
                let prompt_tokens = inputs.iter().map(|s| estimate_tokens(s)).sum();
                Ok(UpstreamRequest {
                    path: path.clone(),
                    body: Some(infer_embeddings_body(&ctx.id, &inputs)),
                    response: Box::new(EmbeddingsResponse {
                        ctx,
                        base64,
                        rows: inputs.len(),
                        prompt_tokens,
                        status: 200,
                    }),
                })
            }
            _ if *mode == TritonMode::Embeddings => Err(GatewayError::invalid_request(
                "this model is a Triton embeddings model; use /v1/embeddings",
            )
            .with_param("model")),
            kind => {
                let text = parse_text_request(config, deployment, request)?;
                ctx.include_usage = text.include_usage;
                Ok(UpstreamRequest {
                    path: path.clone(),
                    body: Some(infer_text_body(&ctx.id, &text)),
                    response: Box::new(InferTextResponse {
                        ctx,
                        kind,
                        stream: text.stream,
                        max_tokens: text.max_tokens,
                        prompt_estimate: estimate_tokens(&text.prompt),
                        scanner: StopScanner::new(text.stop.clone()),
                        status: 200,
                        usage: None,
                    }),
                })
            }
        }
    }
}

#[derive(Deserialize)]
struct InferResponse {
    #[serde(default)]
    outputs: Vec<OutputTensor>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct OutputTensor {
    name: String,
    #[serde(default)]
    datatype: String,
    #[serde(default)]
    shape: Vec<u64>,
    #[serde(default)]
    data: Value,
}

/// Flatten nested `data` (row-major) into its leaves.
fn leaves(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| leaves(i, out)),
        other => out.push(other.clone()),
    }
}

fn parse_infer(status: u16, body: &[u8]) -> Result<InferResponse, GatewayError> {
    let parsed: InferResponse = serde_json::from_slice(body).map_err(|_| {
        GatewayError::new(
            ErrorKind::BadGateway,
            "Triton answered with a body that is not an infer response",
        )
    })?;
    if let Some(e) = &parsed.error {
        return Err(triton_error(status, e));
    }
    Ok(parsed)
}

struct InferTextResponse {
    ctx: ResponseContext,
    kind: Inference,
    stream: bool,
    max_tokens: u32,
    prompt_estimate: u64,
    scanner: StopScanner,
    status: u16,
    usage: Option<Usage>,
}

impl InferTextResponse {
    fn translate(&mut self, body: &[u8]) -> Result<(String, &'static str, Usage), GatewayError> {
        let parsed = parse_infer(self.status, body)?;
        let text_tensor = parsed
            .outputs
            .iter()
            .find(|o| o.name == "text_output")
            .or_else(|| parsed.outputs.iter().find(|o| o.datatype == "BYTES"))
            .ok_or_else(|| {
                GatewayError::new(ErrorKind::BadGateway, "Triton response has no text output")
            })?;
        let mut parts = Vec::new();
        leaves(&text_tensor.data, &mut parts);
        let raw: String = parts.iter().filter_map(Value::as_str).collect();
        let scalar = |name: &str| -> Option<u64> {
            let t = parsed.outputs.iter().find(|o| o.name == name)?;
            let mut v = Vec::new();
            leaves(&t.data, &mut v);
            v.first().and_then(Value::as_u64)
        };
        let mut text = self.scanner.push(&raw).into_owned();
        text.push_str(&self.scanner.finish());
        let completion = scalar("num_output_tokens").unwrap_or_else(|| estimate_tokens(&text));
        let prompt = scalar("num_input_tokens").unwrap_or(self.prompt_estimate);
        let reason = if !self.scanner.stopped() && completion >= u64::from(self.max_tokens) {
            "length"
        } else {
            "stop"
        };
        Ok((text, reason, Usage::new(prompt, completion)))
    }
}

impl ResponseTranslator for InferTextResponse {
    fn on_headers(&mut self, status: u16, _content_type: Option<&str>) -> BodyMode {
        self.status = status;
        BodyMode::Buffer
    }

    /// KServe v2 has no streaming: a streamed request gets the whole answer as one content
    /// chunk, framed as a normal OpenAI stream, so streaming clients still work.
    fn on_body(&mut self, body: &[u8], _end_of_stream: bool) -> BodyOutput {
        if !is_success(self.status) {
            return error_output(self.status, body);
        }
        let (text, reason, usage) = match self.translate(body) {
            Ok(t) => t,
            Err(e) => return gateway_error_output(&e),
        };
        self.usage = Some(usage);
        if !self.stream {
            return BodyOutput::Complete {
                status: 200,
                content_type: JSON,
                body: completion_body(&self.ctx, self.kind, &text, reason, usage),
            };
        }
        let writer = ChunkWriter::new(&self.ctx, self.kind);
        let mut out = Vec::with_capacity(text.len() + 512);
        writer.role(&mut out);
        if !text.is_empty() {
            writer.delta(&mut out, &text);
        }
        writer.finish(&mut out, reason);
        writer.usage(&mut out, usage);
        ChunkWriter::done(&mut out);
        BodyOutput::Complete {
            status: 200,
            content_type: SSE,
            body: out,
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

struct EmbeddingsResponse {
    ctx: ResponseContext,
    base64: bool,
    rows: usize,
    prompt_tokens: u64,
    status: u16,
}

impl EmbeddingsResponse {
    fn translate(&self, body: &[u8]) -> Result<Vec<u8>, GatewayError> {
        let parsed = parse_infer(self.status, body)?;
        let tensor = parsed
            .outputs
            .iter()
            .find(|o| o.name == "embeddings" || o.name == "embedding")
            .or_else(|| parsed.outputs.iter().find(|o| o.datatype.starts_with("FP")))
            .or_else(|| parsed.outputs.first())
            .ok_or_else(|| {
                GatewayError::new(ErrorKind::BadGateway, "Triton response has no outputs")
            })?;
        let mut flat = Vec::new();
        leaves(&tensor.data, &mut flat);
        let values: Vec<f64> = flat
            .iter()
            .map(|v| v.as_f64())
            .collect::<Option<_>>()
            .ok_or_else(|| {
                GatewayError::new(
                    ErrorKind::BadGateway,
                    "Triton embeddings output holds non-numbers",
                )
            })?;
        let (rows, dim) = match tensor.shape.as_slice() {
            [n, d] => (*n as usize, *d as usize),
            [d] if self.rows == 1 => (1, *d as usize),
            [1, n, d] => (*n as usize, *d as usize),
            _ => (self.rows, values.len().checked_div(self.rows).unwrap_or(0)),
        };
        if rows != self.rows || dim == 0 || rows.checked_mul(dim) != Some(values.len()) {
            return Err(GatewayError::new(
                ErrorKind::BadGateway,
                format!(
                    "Triton embeddings output has shape {:?} and {} values for {} inputs",
                    tensor.shape,
                    values.len(),
                    self.rows
                ),
            ));
        }
        let data: Vec<Value> = values
            .chunks(dim)
            .enumerate()
            .map(|(i, row)| {
                let embedding = if self.base64 {
                    let bytes: Vec<u8> =
                        row.iter().flat_map(|&f| (f as f32).to_le_bytes()).collect();
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(row)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        Ok(serde_json::to_vec(&json!({
            "object": "list",
            "data": data,
            "model": self.ctx.requested_model,
            "usage": {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens},
        }))
        .unwrap_or_default())
    }
}

impl ResponseTranslator for EmbeddingsResponse {
    fn on_headers(&mut self, status: u16, _content_type: Option<&str>) -> BodyMode {
        self.status = status;
        BodyMode::Buffer
    }

    fn usage(&self) -> Option<Usage> {
        is_success(self.status).then(|| Usage::new(self.prompt_tokens, 0))
    }

    fn on_body(&mut self, body: &[u8], _end_of_stream: bool) -> BodyOutput {
        if !is_success(self.status) {
            return error_output(self.status, body);
        }
        match self.translate(body) {
            Ok(body) => BodyOutput::Complete {
                status: 200,
                content_type: JSON,
                body,
            },
            Err(e) => gateway_error_output(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config(base: &str) -> Config {
        let json = format!(
            r#"{{"model_list":[{{"model_name":"m","litellm_params":{{"model":"triton/m","api_base":"http://127.0.0.1:8000{base}"}}}}]}}"#
        );
        parse(json.as_bytes(), &|_| None, 0).unwrap().0
    }

    fn ctx() -> ResponseContext {
        ResponseContext {
            requested_model: "m".into(),
            id: "req-1".into(),
            created: 1,
            include_usage: false,
        }
    }

    fn translate(
        c: &Config,
        kind: Inference,
        body: &[u8],
    ) -> Result<UpstreamRequest, GatewayError> {
        let req = InferenceBody::parse(kind, body).unwrap();
        TritonInfer.translate_request(c, &c.deployments[0], &req, ctx())
    }

    fn complete(out: BodyOutput) -> (u16, &'static str, Vec<u8>) {
        match out {
            BodyOutput::Complete {
                status,
                content_type,
                body,
            } => (status, content_type, body),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn text_request_has_typed_tensors() {
        let c = config("/v2/models/m/infer");
        let up = translate(
            &c,
            Inference::Chat,
            br#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}],"max_tokens":9,"temperature":0.5,"seed":4}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&up.body.unwrap()).unwrap();
        let inputs = v["inputs"].as_array().unwrap();
        let by = |n: &str| inputs.iter().find(|i| i["name"] == n).unwrap().clone();
        assert_eq!(by("text_input")["datatype"], "BYTES");
        assert_eq!(by("text_input")["shape"], json!([1]));
        // Every message is in the prompt, not only the first.
        let prompt = by("text_input")["data"][0].as_str().unwrap().to_string();
        assert!(prompt.contains('a') && prompt.contains('b') && prompt.contains('c'));
        assert_eq!(by("max_tokens")["datatype"], "INT32");
        assert_eq!(by("max_tokens")["data"], json!([9]));
        assert_eq!(by("temperature")["datatype"], "FP32");
        assert_eq!(by("seed")["datatype"], "UINT64");
        assert_eq!(by("exclude_input_in_output")["data"], json!([true]));
        assert_eq!(by("exclude_input_in_output")["datatype"], "BOOL");
        assert!(inputs.iter().all(|i| i["name"] != "top_p"));
    }

    #[test]
    fn text_response_and_fake_stream() {
        let c = config("/v2/models/m/infer");
        let mut up = translate(
            &c,
            Inference::Chat,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        up.response.on_headers(200, Some(JSON));
        let (s, _, body) = complete(up.response.on_body(
            br#"{"model_name":"m","outputs":[{"name":"text_output","datatype":"BYTES","shape":[1,1],"data":[["hello"]]}]}"#,
            true,
        ));
        assert_eq!(s, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hello");

        let mut up = translate(
            &c,
            Inference::Chat,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#,
        )
        .unwrap();
        up.response.on_headers(200, Some(JSON));
        let (_, ct, body) = complete(up.response.on_body(
            br#"{"outputs":[{"name":"text_output","datatype":"BYTES","shape":[1],"data":["hi"]}]}"#,
            true,
        ));
        assert_eq!(ct, SSE);
        let s = String::from_utf8(body).unwrap();
        assert!(s.contains("\"content\":\"hi\"") && s.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn embeddings_request_and_both_encodings() {
        let c = config("/v2/models/emb/infer");
        let up = translate(
            &c,
            Inference::Embeddings,
            br#"{"model":"m","input":["a","b"]}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&up.body.unwrap()).unwrap();
        assert_eq!(
            v["inputs"][0],
            json!({"name":"input_text","shape":[2],"datatype":"BYTES","data":["a","b"]})
        );
        let triton = br#"{"outputs":[{"name":"embeddings","datatype":"FP32","shape":[2,3],"data":[1.0,2.0,3.0,4.0,5.0,0.5]}]}"#;
        let mut up = translate(
            &c,
            Inference::Embeddings,
            br#"{"model":"m","input":["a","b"]}"#,
        )
        .unwrap();
        up.response.on_headers(200, None);
        let (_, _, body) = complete(up.response.on_body(triton, true));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"][1]["embedding"], json!([4.0, 5.0, 0.5]));
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["model"], "m");

        let mut up = translate(
            &c,
            Inference::Embeddings,
            br#"{"model":"m","input":["a","b"],"encoding_format":"base64"}"#,
        )
        .unwrap();
        up.response.on_headers(200, None);
        let (_, _, body) = complete(up.response.on_body(triton, true));
        let v: Value = serde_json::from_slice(&body).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["data"][1]["embedding"].as_str().unwrap())
            .unwrap();
        let floats: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(floats, vec![4.0, 5.0, 0.5]);
    }

    #[test]
    fn embeddings_shape_mismatch_and_errors() {
        let c = config("/v2/models/emb/embeddings");
        let mut up = translate(&c, Inference::Embeddings, br#"{"model":"m","input":"a"}"#).unwrap();
        up.response.on_headers(200, None);
        let (s, _, _) = complete(up.response.on_body(
            br#"{"outputs":[{"name":"e","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}]}"#,
            true,
        ));
        assert_eq!(s, 502);
        let mut up = translate(&c, Inference::Embeddings, br#"{"model":"m","input":"a"}"#).unwrap();
        up.response.on_headers(400, None);
        let (s, _, body) = complete(
            up.response
                .on_body(br#"{"error":"unexpected datatype"}"#, true),
        );
        assert_eq!(s, 400);
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("unexpected datatype"));
        assert!(translate(
            &c,
            Inference::Chat,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#
        )
        .is_err());
        assert!(translate(&c, Inference::Embeddings, br#"{"model":"m","input":[1,2]}"#).is_err());
    }
}
