//! OpenAI-shaped errors: every failure the gateway produces leaves through here.

use serde::Serialize;

/// The error kinds of the public contract (section 5), each with its status and OpenAI `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    ModelNotFound,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    /// LiteLLM's `budget_exceeded`: 400, as LiteLLM answers it.
    BudgetExceeded,
    /// LiteLLM's `key_model_access_denied`: 403.
    KeyModelAccessDenied,
    /// LiteLLM's `expired_key`: 401.
    ExpiredKey,
    BadGateway,
    ServiceUnavailable,
    Timeout,
    /// An upstream error whose status we keep as it is.
    Upstream(u16),
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::BudgetExceeded => 400,
            ErrorKind::Authentication | ErrorKind::ExpiredKey => 401,
            ErrorKind::Permission | ErrorKind::KeyModelAccessDenied => 403,
            ErrorKind::ModelNotFound | ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::BadGateway => 502,
            ErrorKind::ServiceUnavailable => 503,
            // LiteLLM's `litellm.Timeout` is a 408; its clients retry on it.
            ErrorKind::Timeout => 408,
            ErrorKind::Upstream(status) => status,
        }
    }

    pub fn error_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::ModelNotFound
            | ErrorKind::NotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::PayloadTooLarge => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::KeyModelAccessDenied => "key_model_access_denied",
            ErrorKind::ExpiredKey => "expired_key",
            ErrorKind::BadGateway => "api_error",
            ErrorKind::ServiceUnavailable => "service_unavailable_error",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::Upstream(status) => upstream_error_type(status),
        }
    }
}

/// A name a client sent, fit to quote in a message: control characters dropped, at most
/// `max` characters.
pub fn shown(name: &str, max: usize) -> String {
    name.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The OpenAI `type` for an upstream status we pass on.
pub fn upstream_error_type(status: u16) -> &'static str {
    match status {
        400 | 404 | 405 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        503 => "service_unavailable_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Seconds for a `retry-after` header (429s).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    error_type: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The JSON body: always the four keys OpenAI clients expect.
    pub fn to_json(&self) -> Vec<u8> {
        let envelope = Envelope {
            error: Body {
                message: &self.message,
                error_type: self.kind.error_type(),
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        };
        // Serialising plain strings cannot fail; the fallback keeps the no-panic rule honest.
        serde_json::to_vec(&envelope).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"api_error","param":null,"code":null}}"#
                .to_vec()
        })
    }

    /// The error as one SSE event, for failures after a stream has started.
    pub fn to_sse_event(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.message.len() + 96);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.to_json());
        out.extend_from_slice(b"\n\n");
        out
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.status())
    }
}

/// Normalise an upstream error body into the OpenAI shape, keeping its status.
///
/// Handles OpenAI's own shape (passed on with missing keys filled), vLLM's integer `code`,
/// its older flat `{"object":"error","message":…}`, Triton's `{"error":"…"}`, and anything
/// else (Envoy's plain-text local replies among them).
pub fn normalise_upstream_error(status: u16, body: &[u8]) -> GatewayError {
    let kind = match status {
        504 => ErrorKind::Timeout,
        s if s >= 400 => ErrorKind::Upstream(s),
        _ => ErrorKind::BadGateway,
    };
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let mut error = match parsed.as_ref() {
        Some(serde_json::Value::Object(map)) => match map.get("error") {
            Some(serde_json::Value::String(message)) => {
                GatewayError::new(kind, last_line_of_traceback(message))
            }
            Some(serde_json::Value::Object(inner)) => {
                let message = inner
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("upstream error");
                let mut e = GatewayError::new(kind, last_line_of_traceback(message));
                e.param = inner.get("param").and_then(json_scalar_to_string);
                e.code = inner.get("code").and_then(json_scalar_to_string);
                e
            }
            _ => match map.get("message").and_then(|m| m.as_str()) {
                Some(message) => GatewayError::new(kind, message),
                None => GatewayError::new(kind, describe_raw(status, body)),
            },
        },
        _ => GatewayError::new(kind, describe_raw(status, body)),
    };
    if error.kind == ErrorKind::Timeout && error.code.is_none() {
        error.code = Some("408".to_string());
    }
    if status == 503 && error.code.is_none() && is_envoy_connect_failure(body) {
        error.kind = ErrorKind::ServiceUnavailable;
    }
    error
}

/// A Python server's exception often arrives as a whole traceback, server paths included;
/// clients get its last line (`RuntimeError: …`), the part that explains the failure.
pub fn last_line_of_traceback(message: &str) -> String {
    if message
        .trim_start()
        .starts_with("Traceback (most recent call last)")
    {
        if let Some(line) = message.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
            return line.to_string();
        }
    }
    message.to_string()
}

fn json_scalar_to_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_envoy_connect_failure(body: &[u8]) -> bool {
    body.starts_with(b"upstream connect error") || body.starts_with(b"no healthy upstream")
}

/// A short, safe description of a non-JSON upstream body.
fn describe_raw(status: u16, body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body.get(..body.len().min(MAX)).unwrap_or_default());
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    if text.is_empty() {
        format!("upstream answered status {status} with no usable body")
    } else {
        format!("upstream answered status {status}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(e: &GatewayError) -> serde_json::Value {
        serde_json::from_slice(&e.to_json()).unwrap()
    }

    #[test]
    fn body_has_all_four_keys() {
        let v = parse(&GatewayError::invalid_request("bad"));
        let err = v["error"].as_object().unwrap();
        assert_eq!(err.len(), 4);
        assert_eq!(err["message"], "bad");
        assert_eq!(err["type"], "invalid_request_error");
        assert!(err["param"].is_null() && err["code"].is_null());
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(ErrorKind::ModelNotFound.status(), 404);
        assert_eq!(ErrorKind::PayloadTooLarge.status(), 413);
        assert_eq!(ErrorKind::Timeout.error_type(), "timeout_error");
        assert_eq!(ErrorKind::ServiceUnavailable.status(), 503);
        // LiteLLM's own statuses for the errors it defines.
        assert_eq!(ErrorKind::Timeout.status(), 408);
        assert_eq!(
            (
                ErrorKind::BudgetExceeded.status(),
                ErrorKind::BudgetExceeded.error_type()
            ),
            (400, "budget_exceeded")
        );
        assert_eq!(ErrorKind::KeyModelAccessDenied.status(), 403);
        assert_eq!(ErrorKind::ExpiredKey.error_type(), "expired_key");
    }

    #[test]
    fn triton_error_string_is_translated() {
        let e = normalise_upstream_error(404, br#"{"error":"Request for unknown model"}"#);
        assert_eq!(e.status(), 404);
        assert_eq!(e.message, "Request for unknown model");
        assert_eq!(parse(&e)["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn vllm_integer_code_becomes_string() {
        let e = normalise_upstream_error(
            400,
            br#"{"error":{"message":"too long","type":"BadRequestError","param":null,"code":400}}"#,
        );
        assert_eq!(e.code.as_deref(), Some("400"));
        assert_eq!(e.message, "too long");
    }

    #[test]
    fn envoy_plain_text_reply_is_wrapped() {
        let e = normalise_upstream_error(
            503,
            b"upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        );
        assert_eq!(e.status(), 503);
        assert_eq!(e.kind, ErrorKind::ServiceUnavailable);
        assert!(e.message.contains("connection failure"));
        let e = normalise_upstream_error(504, b"upstream request timeout");
        assert_eq!(parse(&e)["error"]["type"], "timeout_error");
    }

    #[test]
    fn control_characters_never_reach_the_message() {
        let e = normalise_upstream_error(500, b"bad\r\nInjected: header");
        assert!(!e.message.contains('\n') && !e.message.contains('\r'));
    }
}
