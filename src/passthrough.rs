//! `/vllm/*`: the native API of a vLLM (or other OpenAI-compatible) deployment, passed
//! through as a route like any other — admitted for the caller, counted against the key and
//! the deployment, recorded in stats and the access log.

use crate::access;
use crate::config::{Config, Deployment, Provider};
use crate::error::{ErrorKind, GatewayError};
use crate::gateway::{key_label, wildcard_deployment, Forward};
use crate::host::Host;
use crate::keys::Principal;
use crate::router::{self, Reservation};
use crate::scope::{Scope, Target};
use crate::translate::openai_compat::PassThroughResponse;

/// `/vllm/<rest>`: a route like any other. A body `model` is admitted for the caller and
/// picks a deployment of its group (with `model` swapped for the deployment's); without
/// one, the first vLLM deployment in config order that the caller may use and that can take
/// a request. The key's limits and the deployment's are counted, as for the OpenAI routes.
pub fn vllm_forward(
    config: &Config,
    host: &mut dyn Host,
    principal: &Principal,
    rest: &str,
    body: Option<&[u8]>,
) -> Result<Forward, GatewayError> {
    let scope = Scope::of(config, principal);
    let named = match body {
        Some(body) => body_model(body)?,
        None => None,
    };
    let estimated_tokens = body.map_or(0, |b| (b.len() as u64).div_ceil(4));
    // Admission first: a name the caller may not use is refused before anything is counted.
    let target = match &named {
        Some(m) => Some(scope.admit(config, &m.name, "model")?),
        None => None,
    };
    let rpm_share = crate::fleet::key_rpm_share(config, host, principal);
    let key_charge = access::charge(host, principal, estimated_tokens, rpm_share)?;
    let reserved = match target {
        Some(target) => pick_native(config, host, target, estimated_tokens),
        None => first_vllm(config, host, &scope, estimated_tokens),
    };
    let reservation = match reserved {
        Ok(r) => r,
        Err(e) => {
            if let Some(charge) = &key_charge {
                access::refund(host, charge);
            }
            return Err(e);
        }
    };
    let Some(deployment) = config.deployment(reservation.deployment) else {
        return Err(GatewayError::new(
            ErrorKind::ServiceUnavailable,
            "deployment missing",
        ));
    };
    let native_base_path = match &deployment.provider {
        Provider::OpenAiCompatible {
            native_base_path, ..
        } => native_base_path.as_str(),
        Provider::Triton { .. } => "",
    };
    let new_body = match (&named, body) {
        (Some(BodyModel { span, name }), Some(body)) => {
            let (Some(head), Some(tail)) = (body.get(..span.0), body.get(span.1..)) else {
                return Err(GatewayError::invalid_request("malformed body"));
            };
            // A wildcard deployment takes the requested name, as on the OpenAI routes.
            let completed = deployment
                .wildcard
                .as_ref()
                .map(|before| wildcard_deployment(config, deployment, before, name));
            let model_json = completed
                .as_ref()
                .map_or(&deployment.upstream_model_json, |d| &d.upstream_model_json);
            let mut out = Vec::with_capacity(body.len() + model_json.len());
            out.extend_from_slice(head);
            out.extend_from_slice(model_json.as_bytes());
            out.extend_from_slice(tail);
            Some(out)
        }
        _ => None,
    };
    Ok(Forward {
        path: format!("{native_base_path}{rest}"),
        body: new_body,
        response: Box::new(PassThroughResponse::observing(false)),
        timeout_ms: deployment.timeout_ms,
        first_byte_timeout_ms: None,
        envoy_retries: 0,
        retry_statuses: crate::gateway::StatusRetries::OFF,
        reservation,
        replay: None,
        requested_model: None,
        key_charge,
        key_label: key_label(principal),
        cache: None,
        show_api_base: crate::listing::shows_upstreams(principal),
        fallback_position: 0,
        mock_retries: 0,
    })
}

fn is_native_capable(d: &Deployment) -> bool {
    matches!(d.provider, Provider::OpenAiCompatible { .. })
}

/// A deployment of `target`'s group that serves native (vLLM/OpenAI-compatible) paths.
fn pick_native(
    config: &Config,
    host: &mut dyn Host,
    target: Target,
    estimated_tokens: u64,
) -> Result<Reservation, GatewayError> {
    let members = config
        .groups
        .get(target.group())
        .map(|g| g.deployments.as_slice())
        .unwrap_or_default();
    let others: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| !config.deployment(i).is_some_and(is_native_capable))
        .collect();
    if others.len() == members.len() {
        return Err(GatewayError::invalid_request(
            "the model named for /vllm pass-through is not served by a vLLM/OpenAI-compatible deployment",
        )
        .with_param("model"));
    }
    router::pick(config, host, target, estimated_tokens, &others)
}

/// The first `hosted_vllm`/`vllm` deployment, in config order, that the caller may use and
/// that is neither cooling down nor at its limits.
fn first_vllm(
    config: &Config,
    host: &mut dyn Host,
    scope: &Scope,
    estimated_tokens: u64,
) -> Result<Reservation, GatewayError> {
    if config.vllm_deployments.is_empty() {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            "no hosted_vllm deployment is configured for /vllm pass-through",
        )
        .with_code("not_found"));
    }
    let mut first_error = None;
    for &index in &config.vllm_deployments {
        let Some(target) = config
            .deployment(index)
            .and_then(|d| scope.admit_group(d.group))
        else {
            continue;
        };
        match router::reserve_deployment(config, host, target, index, estimated_tokens) {
            Ok(r) => return Ok(r),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        GatewayError::new(
            ErrorKind::KeyModelAccessDenied,
            "key not allowed to access model: this key may not use any vLLM deployment; name a model it may use in the body's `model`",
        )
        .with_code("403")
    }))
}

/// The `model` a pass-through body names, and the byte span of its JSON value.
struct BodyModel {
    name: String,
    span: (usize, usize),
}

/// A JSON object body's `model`; `None` when the body is not a JSON object or has no
/// `model` (it goes to the default vLLM deployment unchanged).
fn body_model(body: &[u8]) -> Result<Option<BodyModel>, GatewayError> {
    #[derive(serde::Deserialize)]
    struct ModelOnly<'a> {
        #[serde(borrow, default)]
        model: Option<&'a serde_json::value::RawValue>,
    }
    let looks_like_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !looks_like_object {
        return Ok(None);
    }
    let Ok(parsed) = serde_json::from_slice::<ModelOnly<'_>>(body) else {
        return Ok(None);
    };
    let Some(raw) = parsed.model else {
        return Ok(None);
    };
    let name = serde_json::from_str::<Option<String>>(raw.get()).map_err(|_| {
        GatewayError::invalid_request("`model` must be a string").with_param("model")
    })?;
    let Some(name) = name else {
        return Ok(None);
    };
    let start = (raw.get().as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    Ok(Some(BodyModel {
        name,
        span: (start, start + raw.get().len()),
    }))
}
