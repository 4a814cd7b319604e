//! `model_list` entries: provider, upstream paths, auth header, limits, template.

use super::providers;
use super::*;
use crate::template::{CustomTemplate, PromptTemplate};

/// LiteLLM's simple-shuffle rule: weights from `weight`, else `rpm`, else `tpm`, else equal.
/// Returned as running sums so a request picks with one binary search.
pub(super) fn selection_weights(members: &[usize], deployments: &[Deployment]) -> Vec<f64> {
    let ds: Vec<&Deployment> = members.iter().filter_map(|&i| deployments.get(i)).collect();
    // LiteLLM looks only at the first deployment; any one setting a weight is less
    // order-dependent, and a member without one counts as weight 1.
    let raw: Vec<f64> = if ds.iter().any(|d| d.weight.is_some()) {
        ds.iter().map(|d| d.weight.unwrap_or(1.0)).collect()
    } else if ds.iter().all(|d| d.rpm.is_some()) {
        ds.iter().map(|d| d.rpm.unwrap_or(0) as f64).collect()
    } else if ds.iter().all(|d| d.tpm.is_some()) {
        ds.iter().map(|d| d.tpm.unwrap_or(0) as f64).collect()
    } else {
        vec![1.0; ds.len()]
    };
    let raw = if raw.iter().sum::<f64>() > 0.0 {
        raw
    } else {
        vec![1.0; ds.len()]
    };
    let mut total = 0.0;
    raw.iter()
        .map(|w| {
            total += w.max(0.0);
            total
        })
        .collect()
}

/// Settings from `litellm_settings`/`router_settings` a deployment falls back on.
#[derive(Debug, Clone, Copy)]
pub(super) struct DeploymentDefaults {
    pub timeout: f64,
    pub drop_params: bool,
}

pub(super) fn validate_deployment(
    path: &str,
    index: usize,
    group: usize,
    d: WireDeployment,
    defaults: DeploymentDefaults,
    diag: &mut Diagnostics,
) -> Result<Deployment, ConfigError> {
    let default_timeout = defaults.timeout;
    let p = d.litellm_params;
    let params = format!("{path}.litellm_params");
    let model_path = format!("{path}.litellm_params.model");
    // LiteLLM takes a bare OpenAI model name (`gpt-4o`) for `openai/gpt-4o`.
    let (prefix, upstream_model) = match p.model.split_once('/') {
        Some(split) => split,
        None if providers::is_bare_openai_model(&p.model) => ("openai", p.model.as_str()),
        None => {
            return Err(err(
                &model_path,
                format!(
                    "\"{}\" has no provider prefix (and is not an OpenAI model name); write provider/model, e.g. hosted_vllm/{}",
                    p.model, p.model
                ),
            ))
        }
    };
    if upstream_model.is_empty() {
        return Err(err(
            &model_path,
            "model name after the provider prefix is empty",
        ));
    }
    // The provider first: a user of an unsupported one learns that before anything else.
    let row = providers::find(prefix);
    if row.is_none() && prefix != "triton" {
        let why = providers::unsupported(prefix)
            .unwrap_or("it is not one of the OpenAI-compatible providers the gateway knows");
        return Err(err(
            &model_path,
            format!("`{prefix}/` is not supported: {why} (supported: triton/, hosted_vllm/, vllm/, openai/, azure/ and the OpenAI-compatible providers in the README)"),
        ));
    }
    let base_path = format!("{path}.litellm_params.api_base");
    let api_base = match (p.api_base.as_deref(), row.and_then(|r| r.default_base)) {
        (Some(b), _) => b,
        (None, Some(default)) => default,
        (None, None) => {
            return Err(err(
                &base_path,
                format!("is required for `{prefix}/` (it has no default endpoint)"),
            ))
        }
    };
    let url = Url::parse(api_base).map_err(|m| err(&base_path, m))?;

    // Problems in fields that do not depend on each other are all reported, not only the
    // first (the fatal ones above return at once: nothing else can be checked without them).
    let mut more: Vec<ConfigError> = Vec::new();
    let template = custom_template(&p).map_or_else(
        || match p.prompt_template.as_deref() {
            Some(name) => PromptTemplate::named(name).ok_or_else(|| {
                err(
                    format!("{path}.litellm_params.prompt_template"),
                    format!("unknown template \"{name}\"; use llama3, llama2, mistral, chatml or transcript"),
                )
            }),
            None => Ok(PromptTemplate::infer_from_model_name(upstream_model)),
        },
        Ok,
    );
    let template = template.unwrap_or_else(|e| {
        more.push(e);
        PromptTemplate::infer_from_model_name(upstream_model)
    });

    let provider = match (prefix, row) {
        (_, Some(row)) => {
            let paths = providers::paths(
                row.paths,
                &url.host,
                &url.path,
                upstream_model,
                p.api_version.as_deref(),
            );
            let params = ParamRules {
                provider: row.prefix,
                refused: row.refused_params(),
                drop_refused: p.drop_params.unwrap_or(defaults.drop_params),
                always_drop: p.additional_drop_params.clone().unwrap_or_default(),
                max_tokens_only: row.max_tokens_only,
            };
            Provider::OpenAiCompatible {
                params,
                chat_path: with_query(paths.chat, &url.query),
                completions_path: with_query(paths.completions, &url.query),
                embeddings_path: with_query(paths.embeddings, &url.query),
                native_base_path: paths.native_base,
                health_path: paths.health,
                is_vllm: row.is_vllm,
                text_completion: row.text_completion,
            }
        }
        _ => {
            let trimmed = url.path.trim_end_matches('/');
            let (mode, path_, stream_path) = if let Some(stem) =
                trimmed.strip_suffix("/generate_stream")
            {
                (
                    TritonMode::Generate,
                    format!("{stem}/generate"),
                    trimmed.to_string(),
                )
            } else if trimmed.ends_with("/generate") {
                (
                    TritonMode::Generate,
                    trimmed.to_string(),
                    format!("{trimmed}_stream"),
                )
            } else if trimmed.ends_with("/infer") {
                (TritonMode::Infer, trimmed.to_string(), trimmed.to_string())
            } else if trimmed.ends_with("/embeddings") {
                (
                    TritonMode::Embeddings,
                    trimmed.to_string(),
                    trimmed.to_string(),
                )
            } else {
                return Err(err(
                    &base_path,
                    format!("a triton api_base must end in /generate, /infer or /embeddings (got \"{}\")", url.path),
                ));
            };
            Provider::Triton {
                mode,
                path: with_query(path_, &url.query),
                stream_path: with_query(stream_path, &url.query),
                template,
            }
        }
    };

    let key_header = row.map_or("authorization", |r| r.key_header.name_for(&url.host));
    let auth_header = match p.api_key.as_deref() {
        Some(k) => {
            let k = k.to_string();
            let control = k.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
            if control {
                more.push(err(
                    format!("{path}.litellm_params.api_key"),
                    "contains a control character",
                ));
            }
            (!k.is_empty() && !control).then(|| {
                let value = if key_header == "authorization" {
                    format!("Bearer {k}")
                } else {
                    k
                };
                (key_header, value)
            })
        }
        None => None,
    };

    let cluster = match p.cluster {
        Some(c) if is_token(&c) => c,
        Some(_) => {
            more.push(err(
                format!("{path}.litellm_params.cluster"),
                "must be a non-empty Envoy cluster name of visible ASCII characters",
            ));
            url.host_port()
        }
        None => url.host_port(),
    };
    let mut timeout = p.timeout.unwrap_or(default_timeout);
    if !(timeout.is_finite() && timeout > 0.0) {
        more.push(err(
            format!("{path}.litellm_params.timeout"),
            "must be a positive number of seconds",
        ));
        timeout = default_timeout;
    }
    let weight = p.weight;
    if weight.is_some_and(|w| !(w.is_finite() && w >= 0.0)) {
        more.push(err(
            format!("{path}.litellm_params.weight"),
            "must be a number ≥ 0",
        ));
    }
    let id = match d.model_info.id {
        Some(id) if !id.is_empty() => id,
        Some(_) => {
            more.push(err(format!("{path}.model_info.id"), "must not be empty"));
            format!("{}/{}", d.model_name, index)
        }
        None => format!("{}/{}", d.model_name, index),
    };
    // Fireworks names its models `accounts/fireworks/models/<name>`; LiteLLM completes them.
    let namespaced = row.map_or_else(
        || upstream_model.to_string(),
        |r| r.upstream_model(upstream_model),
    );
    let upstream_model_json =
        serde_json::to_string(&namespaced).map_err(|e| err(&model_path, e.to_string()))?;
    let mut limit = |name: &str, on_entry: Option<u64>, in_params: Option<u64>| {
        if let (Some(e), Some(p)) = (on_entry, in_params) {
            if e != p {
                diag.warn(
                    format!("{path}.{name}"),
                    format!("differs from litellm_params.{name} ({p}); {e} is used, as in LiteLLM"),
                );
            }
        }
        on_entry.or(in_params)
    };
    let rpm = limit("rpm", d.rpm, p.rpm);
    let tpm = limit("tpm", d.tpm, p.tpm);
    let stream_timeout_ms = match p.stream_timeout {
        Some(t) if !(t.is_finite() && t > 0.0) => {
            more.push(err(
                format!("{params}.stream_timeout"),
                "must be a positive number of seconds",
            ));
            None
        }
        Some(t) => Some((t * 1000.0).round() as u64),
        None => None,
    };
    if p.max_retries.is_some() {
        diag.warn(
            format!("{params}.max_retries"),
            "ignored: it is the OpenAI client's own retry count in LiteLLM; here num_retries decides retries",
        );
    }
    let versioned = matches!(
        row.map(|r| r.paths),
        Some(providers::PathStyle::Azure | providers::PathStyle::AzureAi)
    );
    if p.api_version.is_some() && !versioned {
        diag.warn(
            format!("{params}.api_version"),
            format!("ignored: `{prefix}/` deployments have no API version"),
        );
    }
    let tags: Vec<String> = p.tags.clone().unwrap_or_default();
    let wildcard = match upstream_model.strip_suffix('*') {
        Some(before) if row.is_some() && !before.contains('*') => {
            Some(row.map_or_else(|| before.to_string(), |r| r.upstream_model(before)))
        }
        Some(_) if row.is_none() => {
            return Err(err(
                &model_path,
                "a wildcard deployment must be OpenAI-compatible (not triton/)",
            ))
        }
        Some(_) => return Err(err(&model_path, "a wildcard model has one `*`, at its end")),
        None if upstream_model.contains('*') => {
            return Err(err(&model_path, "a wildcard model has one `*`, at its end"))
        }
        None => None,
    };
    let mut more = more.into_iter();
    if let Some(first) = more.next() {
        for e in more {
            diag.push(e);
        }
        return Err(first);
    }
    Ok(Deployment {
        state_key: format!("llm_gateway.deployment.{id}"),
        fleet_tokens_key: format!("llm_gateway.deployment.{id}/fleet-tokens"),
        fleet_unasked_key: format!("llm_gateway.deployment.{id}/fleet-unasked"),
        cooldown_key: format!("llm_gateway.cooldown.{id}"),
        header_id: header_safe(&id),
        metric_label: crate::metrics::label(&id),
        id,
        group,
        provider,
        upstream_model: namespaced,
        model: p.model.clone(),
        api_base: api_base.to_string(),
        api_base_header: header_safe(api_base),
        upstream_model_json,
        cluster,
        authority: url.authority(),
        auth_header,
        weight,
        rpm,
        tpm,
        order: p.order.unwrap_or(0),
        timeout_ms: (timeout * 1000.0).round() as u64,
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        max_input_tokens: d.model_info.max_input_tokens,
        input_cost_per_token: d.model_info.input_cost_per_token.or(p.input_cost_per_token),
        output_cost_per_token: d
            .model_info
            .output_cost_per_token
            .or(p.output_cost_per_token),
        tags,
        stream_timeout_ms,
        num_retries: p.num_retries,
        wildcard,
    })
}

/// `path` with `api_base`'s own query added (after any the path already has).
fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else if path.contains('?') {
        format!("{path}&{query}")
    } else {
        format!("{path}?{query}")
    }
}

fn custom_template(p: &WireLitellmParams) -> Option<PromptTemplate> {
    let any = p.roles.is_some()
        || p.initial_prompt_value.is_some()
        || p.final_prompt_value.is_some()
        || p.bos_token.is_some()
        || p.eos_token.is_some();
    any.then(|| {
        PromptTemplate::Custom(CustomTemplate {
            roles: p
                .roles
                .iter()
                .flatten()
                .map(|(role, t)| {
                    (
                        role.clone(),
                        (t.pre_message.clone(), t.post_message.clone()),
                    )
                })
                .collect(),
            initial_prompt_value: p.initial_prompt_value.clone().unwrap_or_default(),
            final_prompt_value: p.final_prompt_value.clone().unwrap_or_default(),
            bos_token: p.bos_token.clone().unwrap_or_default(),
            eos_token: p.eos_token.clone().unwrap_or_default(),
        })
    })
}
