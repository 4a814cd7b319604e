//! LiteLLM's `mock_response`: a request carrying one is answered by the gateway itself, in
//! the shape the real model would have used (chat or completions, whole or streamed), after
//! the caller's key and model have been checked. As in LiteLLM's proxy, only callers trusted
//! with it get one (the master key, an open gateway, or a key minted with
//! `metadata.allow_client_mock_response: true`); anyone else's is removed and the request
//! goes upstream as if it had none.

use crate::config::Config;
use crate::error::{ErrorKind, GatewayError};
use crate::gateway::LocalReply;
use crate::keys::Principal;
use crate::request::{Inference, InferenceBody, TestSwitches};
use crate::scope::Target;
use crate::translate::ResponseContext;
use serde_json::json;

/// Whether this caller's `mock_response` is honoured.
pub fn may_mock(principal: &Principal) -> bool {
    match principal {
        Principal::Open | Principal::Master => true,
        Principal::Key(grant) => grant
            .minted
            .as_ref()
            .is_some_and(crate::keys::Claims::allows_mock_response),
    }
}

/// The answer to a mocked request, or `None` for an endpoint that has no mock (embeddings).
pub fn reply(
    config: &Config,
    group: usize,
    request: &InferenceBody<'_>,
    content: &str,
    ctx: &ResponseContext,
) -> Option<LocalReply> {
    let prompt_tokens = (request.payload.get().len() as u64).div_ceil(4);
    let completion_tokens = (content.len() as u64).div_ceil(4).max(1);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let (object, choice, delta, last) = match request.kind {
        Inference::Chat => (
            "chat.completion",
            json!({"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}),
            json!({"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": null}),
            json!({"index": 0, "delta": {}, "finish_reason": "stop"}),
        ),
        Inference::Completions => (
            "text_completion",
            json!({"index": 0, "text": content, "logprobs": null, "finish_reason": "stop"}),
            json!({"index": 0, "text": content, "logprobs": null, "finish_reason": null}),
            json!({"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"}),
        ),
        Inference::Embeddings => return None,
    };
    let answer = |object: &str, choice: serde_json::Value, usage: Option<&serde_json::Value>| {
        json!({"id": ctx.id, "object": object, "created": ctx.created,
               "model": ctx.requested_model, "choices": [choice], "usage": usage})
    };
    let mut reply = if request.stream {
        let chunk_object = match request.kind {
            Inference::Chat => "chat.completion.chunk",
            _ => "text_completion",
        };
        let mut body = Vec::new();
        for chunk in [
            answer(chunk_object, delta, None),
            answer(chunk_object, last, Some(&usage)),
        ] {
            body.extend_from_slice(b"data: ");
            body.extend_from_slice(&serde_json::to_vec(&chunk).unwrap_or_default());
            body.extend_from_slice(b"\n\n");
        }
        body.extend_from_slice(b"data: [DONE]\n\n");
        let mut reply = LocalReply::json(200, body);
        reply.content_type = "text/event-stream";
        reply
    } else {
        let whole = answer(object, choice, Some(&usage));
        LocalReply::json(200, serde_json::to_vec(&whole).unwrap_or_default())
    };
    if let Some(g) = config.groups.get(group) {
        reply
            .headers
            .push(("x-llm-model-group", g.header_name.clone()));
    }
    reply.headers.push(("x-llm-mock", "true".to_string()));
    Some(reply)
}

/// LiteLLM's test switches are honoured only where the operator turned them on
/// (`general_settings.litellm_test_switches`, for running LiteLLM's own e2e tests): a client
/// could otherwise force failovers and timeouts.
pub fn check_test_switches(config: &Config, switches: &TestSwitches) -> Result<(), GatewayError> {
    let refuse = |field: &str, why: &str| {
        Err(GatewayError::invalid_request(format!("{field}: {why}")).with_param(field.to_string()))
    };
    if !config.litellm_test_switches {
        let field = match switches {
            TestSwitches {
                fallbacks: true, ..
            } => "mock_testing_fallbacks",
            TestSwitches { timeout: true, .. } => "mock_timeout",
            TestSwitches {
                rate_limit_error: true,
                ..
            } => "mock_testing_rate_limit_error",
            _ => "mock_testing_context_fallbacks",
        };
        return refuse(
            field,
            "LiteLLM's test switches are off here; general_settings.litellm_test_switches: true turns them on (for tests)",
        );
    }
    Ok(())
}

/// `mock_timeout`: LiteLLM's `litellm.Timeout` (408) after the time the request would have
/// had (its `timeout`, else the first deployment's), said in `x-litellm-timeout`; nothing is
/// sent upstream.
pub fn timeout_reply(config: &Config, first: Target, request: &InferenceBody<'_>) -> LocalReply {
    let deployment_timeout = config
        .groups
        .get(first.group())
        .and_then(|g| g.deployments.first())
        .and_then(|&d| config.deployment(d))
        .map_or(600_000, |d| d.timeout_ms);
    let ms = request.overrides.timeout_ms.unwrap_or(deployment_timeout);
    let seconds = crate::answer_headers::seconds(ms);
    let mut reply = LocalReply::from(
        GatewayError::new(
            ErrorKind::Timeout,
            format!("litellm.Timeout: mock_timeout: the request timed out after {seconds} s"),
        )
        .with_code("408"),
    );
    reply.headers.push(("x-litellm-timeout", seconds));
    reply
}

/// `mock_testing_rate_limit_error` with no retry allowed: LiteLLM's mock 429 itself.
pub fn rate_limit_failure(model: &str) -> GatewayError {
    let mut e = GatewayError::new(
        ErrorKind::RateLimited,
        format!(
            "litellm.RateLimitError: This is a mock rate limit error for model={}",
            crate::error::shown(model, 128)
        ),
    )
    .with_code("429");
    e.retry_after = Some(1);
    e
}

/// `mock_testing_fallbacks` with no fallback to go to: LiteLLM's mock failure itself.
pub fn fallback_failure(model: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::Upstream(500),
        format!(
            "litellm.InternalServerError: This is a mock exception for model={}, to trigger a fallback. Fallbacks=[]",
            crate::error::shown(model, 128)
        ),
    )
}
