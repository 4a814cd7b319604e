//! LiteLLM's fan-out: `"model": "a,b"` sends the same request to each model named and
//! answers with the list of their answers, in the order named (LiteLLM's
//! `Router.abatch_completion`, which its proxy calls for a comma in `model`). Each model is a
//! request of its own — the caller's key, scope, limits, routing, failover and retries apply
//! to each — and a model that fails is its error object in the list, as LiteLLM returns the
//! exception in its place.
//!
//! A name with a comma that the config has as a group or alias is that group, not a fan-out.

use crate::config::Config;
use crate::error::GatewayError;
use crate::gateway::LocalReply;
use serde_json::value::RawValue;

/// At most this many models in one fan-out: each is a full request upstream.
pub const MAX_MODELS: usize = 8;

/// The models a `model` value fans out to, or `None` when it names one model.
pub fn names<'a>(config: &Config, model: &'a str) -> Option<Vec<&'a str>> {
    if !model.contains(',') || config.model_index.contains_key(model) {
        return None;
    }
    Some(model.split(',').map(str::trim).collect())
}

/// Refuse what cannot be fanned out, before anything is charged or sent.
pub fn check(names: &[&str], stream: bool) -> Result<(), GatewayError> {
    let refuse = |m: String| Err(GatewayError::invalid_request(m).with_param("model"));
    if names.iter().any(|n| n.is_empty()) {
        return refuse(
            "`model` names several models, one of them empty (`a,,b` or a trailing comma)".into(),
        );
    }
    if names.len() > MAX_MODELS {
        return refuse(format!(
            "`model` names more than {MAX_MODELS} models; send several requests"
        ));
    }
    if stream {
        // LiteLLM cannot send several streams in one answer either.
        return refuse("`model` names several models, which cannot be streamed in one answer: leave `stream` out or send one request per model".into());
    }
    Ok(())
}

/// A model whose request Envoy could not send (no cluster for any deployment left).
pub fn unsent() -> GatewayError {
    GatewayError::new(
        crate::error::ErrorKind::ServiceUnavailable,
        "no deployment of this model could be called (Envoy has no cluster for it)",
    )
}

/// The reply, once it can be given: with `first_success` (LiteLLM's `fastest_response`), the
/// first model to answer 2xx, alone, as soon as it has (the others are then abandoned); when
/// none does, the first model's error. Otherwise the list, once every model has answered.
/// `answers` holds each model's answer so far, in the order named.
pub fn ready(answers: &[Option<(u16, &[u8])>], first_success: bool) -> Option<LocalReply> {
    if first_success {
        if let Some((status, body)) = answers
            .iter()
            .flatten()
            .find(|(status, _)| (200..300).contains(status))
        {
            return Some(LocalReply::json(*status, body.to_vec()));
        }
        if answers.iter().all(Option::is_some) {
            let (status, body) = answers.iter().flatten().next()?;
            return Some(LocalReply::json(*status, body.to_vec()));
        }
        return None;
    }
    let all: Option<Vec<(u16, &[u8])>> = answers.iter().copied().collect();
    all.map(|a| combine(&a))
}

/// One answer per model, in order: the JSON list LiteLLM's proxy sends, with status 200.
/// An answer that is not JSON (it should not happen: every answer is translated or an
/// OpenAI-format error) becomes an `api_error` object in its place.
pub fn combine(answers: &[(u16, &[u8])]) -> LocalReply {
    let mut out = Vec::with_capacity(answers.iter().map(|(_, b)| b.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, (status, body)) in answers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match serde_json::from_slice::<&RawValue>(body) {
            Ok(raw) => out.extend_from_slice(raw.get().as_bytes()),
            Err(_) => {
                let e = serde_json::json!({"error": {
                    "message": format!("the model answered {status} with a body that is not JSON"),
                    "type": "api_error", "param": null, "code": status.to_string(),
                }});
                out.extend_from_slice(e.to_string().as_bytes());
            }
        }
    }
    out.push(b']');
    LocalReply::json(200, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let json = br#"{"model_list":[
                {"model_name":"a","litellm_params":{"model":"openai/a","api_base":"http://h:1/v1"}},
                {"model_name":"x,y","litellm_params":{"model":"openai/xy","api_base":"http://h:1/v1"}}]}"#;
        crate::config::parse(json, &|_| None, 1000).unwrap().0
    }

    #[test]
    fn a_comma_fans_out_unless_the_config_has_the_name() {
        let c = config();
        assert_eq!(names(&c, "a"), None);
        assert_eq!(names(&c, "x,y"), None);
        assert_eq!(names(&c, "a, b"), Some(vec!["a", "b"]));
        assert_eq!(names(&c, "a,b,a"), Some(vec!["a", "b", "a"]));
    }

    #[test]
    fn streams_empty_names_and_long_lists_are_refused() {
        assert!(check(&["a", "b"], false).is_ok());
        assert_eq!(check(&["a", "b"], true).unwrap_err().status(), 400);
        assert_eq!(check(&["a", ""], false).unwrap_err().status(), 400);
        assert_eq!(check(&["m"; 9], false).unwrap_err().status(), 400);
        assert!(check(&["m"; 8], false).is_ok());
    }

    #[test]
    fn the_fastest_success_answers_alone_and_the_list_waits_for_all() {
        let ok: &[u8] = br#"{"id":"b"}"#;
        let err: &[u8] = br#"{"error":{"type":"rate_limit_error"}}"#;
        assert!(
            ready(&[None, Some((429, err))], true).is_none(),
            "a failure: wait for the rest"
        );
        let r = ready(&[None, Some((200, ok))], true).unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, ok),
            "the first success, alone"
        );
        let r = ready(&[Some((503, err)), Some((429, err))], true).unwrap();
        assert_eq!(r.status, 503, "none succeeded: the first model's error");
        assert!(
            ready(&[None, Some((200, ok))], false).is_none(),
            "the list waits"
        );
        assert_eq!(
            ready(&[Some((429, err)), Some((200, ok))], false)
                .unwrap()
                .status,
            200
        );
    }

    #[test]
    fn answers_are_listed_in_order_errors_included() {
        let ok = br#"{"id":"1","object":"chat.completion"}"#;
        let err = br#"{"error":{"message":"no","type":"rate_limit_error"}}"#;
        let r = combine(&[(200, ok), (429, err), (502, b"oops")]);
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let list = v.as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0]["id"], "1");
        assert_eq!(list[1]["error"]["type"], "rate_limit_error");
        assert_eq!(list[2]["error"]["type"], "api_error");
        assert_eq!(list[2]["error"]["code"], "502");
    }
}
