//! OpenAI → OpenAI-compatible servers (vLLM, TGI, another gateway): swap `model`, add the
//! deployment's defaults, and pass the response through untouched unless it is an error.

use super::{
    error_output, is_success, BodyMode, BodyOutput, ResponseContext, ResponseTranslator,
    Translator, UpstreamRequest,
};
use crate::config::{Config, Deployment, Provider};
use crate::error::GatewayError;
use crate::request::{Inference, InferenceBody};

pub struct OpenAiCompat;

impl Translator for OpenAiCompat {
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
        let defaults = if request.kind == Inference::Embeddings {
            Vec::new()
        } else {
            deployment_defaults(deployment, request)
        };
        Ok(UpstreamRequest {
            path: path.clone(),
            body: Some(request.splice(&deployment.upstream_model_json, &defaults)),
            response: Box::new(PassThroughResponse {
                buffered_error: None,
            }),
        })
    }
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

/// Successful responses (streams included) go through as they are; errors are buffered and
/// normalised to OpenAI's four-field shape.
pub struct PassThroughResponse {
    buffered_error: Option<u16>,
}

impl PassThroughResponse {
    pub fn new() -> Self {
        PassThroughResponse {
            buffered_error: None,
        }
    }
}

impl Default for PassThroughResponse {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseTranslator for PassThroughResponse {
    fn on_headers(&mut self, status: u16, _content_type: Option<&str>) -> BodyMode {
        if is_success(status) {
            BodyMode::PassThrough
        } else {
            self.buffered_error = Some(status);
            BodyMode::Buffer
        }
    }

    fn on_body(&mut self, chunk: &[u8], _end_of_stream: bool) -> BodyOutput {
        match self.buffered_error {
            Some(status) => error_output(status, chunk),
            None => BodyOutput::Unchanged,
        }
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
