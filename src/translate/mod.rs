//! One module per backend direction, behind one pair of traits: a `Translator` rewrites the
//! request for a deployment, and the `ResponseTranslator` it returns maps the upstream
//! response (headers, then body chunks up to end of stream) back to OpenAI.

pub mod openai_compat;
pub mod openai_text;
pub mod text;
pub mod triton_generate;
pub mod triton_infer;

use crate::config::{Config, Deployment};
use crate::error::GatewayError;
use crate::request::InferenceBody;

/// Facts about the request a response translator needs, owned so it outlives the body.
#[derive(Debug, Clone, Default)]
pub struct ResponseContext {
    /// The model name the client asked for: what OpenAI responses report as `model`.
    pub requested_model: String,
    /// `chatcmpl-…` / `cmpl-…` style id for synthesised responses.
    pub id: String,
    pub created: u64,
    pub include_usage: bool,
}

/// The rewritten request for one deployment.
pub struct UpstreamRequest {
    pub path: String,
    /// `None`: the client's body goes upstream unchanged.
    pub body: Option<Vec<u8>>,
    pub response: Box<dyn ResponseTranslator>,
}

pub trait Translator {
    /// Whether its answers are written by the gateway and so need `ResponseContext`'s id and
    /// model; a pass-through translator gets an empty one (no id drawn, nothing copied).
    fn writes_responses(&self) -> bool {
        true
    }

    fn translate_request(
        &self,
        config: &Config,
        deployment: &Deployment,
        request: &InferenceBody<'_>,
        ctx: ResponseContext,
    ) -> Result<UpstreamRequest, GatewayError>;
}

/// How the filter treats the response body, decided once the status is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyMode {
    /// Leave the body alone (no body callbacks do any work).
    PassThrough,
    /// Hold headers and body; `on_body` is called once with the whole body.
    Buffer,
    /// Translate chunk by chunk; the filter drops `content-length` and sets this content type.
    Stream { content_type: &'static str },
    /// Leave the body alone but show each chunk to `on_body` (to read `usage`).
    Observe,
}

#[derive(Debug, PartialEq)]
pub enum BodyOutput {
    /// Send the chunk as it came.
    Unchanged,
    /// Send these bytes instead of the chunk.
    Replace(Vec<u8>),
    /// The whole (buffered) response, with the status and content type it should carry.
    Complete {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
}

pub trait ResponseTranslator {
    /// Whether `on_headers` looks at the upstream's content type (otherwise it gets `None`):
    /// reading a header copies it into the filter's memory, which costs more than writing one.
    fn reads_content_type(&self) -> bool {
        false
    }
    fn on_headers(&mut self, status: u16, content_type: Option<&str>) -> BodyMode;
    /// For `Stream`: each chunk, in order; the last call has `end_of_stream` (its chunk may be
    /// empty). For `Buffer`: one call with the whole body.
    fn on_body(&mut self, chunk: &[u8], end_of_stream: bool) -> BodyOutput;
    /// Token counts of the response, when the backend reported them or they were counted.
    fn usage(&self) -> Option<text::Usage> {
        None
    }

    /// The stream or buffer grew past what we are willing to hold.
    fn on_overflow(&mut self) -> BodyOutput {
        let e = GatewayError::new(
            crate::error::ErrorKind::BadGateway,
            "upstream response too large to translate",
        );
        BodyOutput::Complete {
            status: e.status(),
            content_type: JSON,
            body: e.to_json(),
        }
    }
}

pub const JSON: &str = "application/json";
pub const SSE: &str = "text/event-stream";

/// An upstream error response, whatever its shape, as an OpenAI error with its status.
pub fn error_output(status: u16, body: &[u8]) -> BodyOutput {
    let e = crate::error::normalise_upstream_error(status, body);
    BodyOutput::Complete {
        status: e.status(),
        content_type: JSON,
        body: e.to_json(),
    }
}

pub fn gateway_error_output(e: &GatewayError) -> BodyOutput {
    BodyOutput::Complete {
        status: e.status(),
        content_type: JSON,
        body: e.to_json(),
    }
}

pub fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}
