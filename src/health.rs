//! What the gateway says about its own health and surface: `GET /health` (probe every
//! deployment the caller may use, cool down the ones that fail), `/health/readiness`, and
//! `GET /routes`.

use crate::config::{Config, Provider};
use crate::gateway::LocalReply;
use crate::host::Host;
use crate::router;
use crate::scope::Scope;

/// One health check: a GET on a deployment's cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub deployment: usize,
    pub path: String,
}

/// Seconds a health probe may take before the deployment counts as unhealthy.
pub const HEALTH_PROBE_TIMEOUT_MS: u64 = 5_000;

/// What each deployment of the groups in `scope` is asked, in config order: Triton's
/// readiness, vLLM's `/health`, else the model list.
pub fn health_probes(config: &Config, scope: &Scope) -> Vec<Probe> {
    let mut members: Vec<usize> = scope
        .targets(config)
        .filter_map(|t| config.groups.get(t.group()))
        .flat_map(|g| g.deployments.iter().copied())
        .collect();
    members.sort_unstable();
    members
        .into_iter()
        .filter_map(|i| config.deployment(i).map(|d| (i, d)))
        .map(|(i, d)| {
            let path = match &d.provider {
                Provider::Triton { path, .. } => {
                    // The server root of `…/v2/models/<m>/generate`.
                    let root = path
                        .find("/v2/")
                        .map_or("", |at| path.get(..at).unwrap_or(""));
                    format!("{root}/v2/health/ready")
                }
                Provider::OpenAiCompatible {
                    native_base_path,
                    is_vllm: true,
                    ..
                } => format!("{native_base_path}/health"),
                Provider::OpenAiCompatible { health_path, .. } => health_path.clone(),
            };
            Probe {
                deployment: i,
                path,
            }
        })
        .collect()
}

/// LiteLLM's `/health` answer from probe results (`Ok(status)` or a transport error);
/// deployments that failed are cooled down for every worker.
pub fn health_report(
    config: &Config,
    host: &mut dyn Host,
    results: &[(usize, Result<u16, String>)],
) -> LocalReply {
    let mut healthy = Vec::new();
    let mut unhealthy = Vec::new();
    let mut cooled = Vec::new();
    for (index, result) in results {
        let Some(d) = config.deployment(*index) else {
            continue;
        };
        let entry = |error: Option<String>| {
            let mut v = serde_json::json!({
                "model": d.model, "api_base": d.api_base, "model_id": d.id,
                "model_name": config.groups.get(d.group).map(|g| g.name.as_str()),
            });
            if let (Some(e), Some(map)) = (error, v.as_object_mut()) {
                map.insert("error".into(), serde_json::Value::String(e));
            }
            v
        };
        match result {
            Ok(status) if (200..300).contains(status) => healthy.push(entry(None)),
            Ok(status) => {
                if router::cool_down(config, host, *index) {
                    cooled.push(*index);
                }
                unhealthy.push(entry(Some(format!(
                    "health check answered status {status}"
                ))));
            }
            Err(e) => {
                if router::cool_down(config, host, *index) {
                    cooled.push(*index);
                }
                unhealthy.push(entry(Some(e.clone())));
            }
        }
    }
    let body = serde_json::json!({
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
        "healthy_count": healthy.len(),
        "unhealthy_count": unhealthy.len(),
    });
    let mut reply = LocalReply::json(200, serde_json::to_vec(&body).unwrap_or_default());
    reply.metrics = cooled
        .iter()
        .map(|&i| crate::metrics::Labels::of(config, i, "").cooldowns())
        .collect();
    reply
}

/// LiteLLM's `/health/readiness` fields that mean something here: the version is the
/// gateway's (clients read `litellm_version` as "which proxy answered").
pub fn readiness(config: &Config) -> Vec<u8> {
    let body = serde_json::json!({
        "status": "healthy",
        "db": "Not connected",
        "cache": config.cache.as_ref().map(|_| "local"),
        "litellm_version": crate::answer_headers::VERSION,
        "gateway": "llm-gateway",
        "success_callbacks": [],
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `GET /routes`, in LiteLLM's shape: every endpoint this gateway answers.
pub const ROUTES: &str = r#"{"routes":[
{"path":"/v1/chat/completions","methods":["POST"],"name":"chat_completion"},
{"path":"/chat/completions","methods":["POST"],"name":"chat_completion"},
{"path":"/v1/completions","methods":["POST"],"name":"completion"},
{"path":"/completions","methods":["POST"],"name":"completion"},
{"path":"/v1/embeddings","methods":["POST"],"name":"embeddings"},
{"path":"/embeddings","methods":["POST"],"name":"embeddings"},
{"path":"/openai/deployments/{model}/chat/completions","methods":["POST"],"name":"chat_completion"},
{"path":"/openai/deployments/{model}/completions","methods":["POST"],"name":"completion"},
{"path":"/openai/deployments/{model}/embeddings","methods":["POST"],"name":"embeddings"},
{"path":"/v1/models","methods":["GET"],"name":"model_list"},
{"path":"/models","methods":["GET"],"name":"model_list"},
{"path":"/v1/models/{model_id}","methods":["GET"],"name":"model_info"},
{"path":"/v1/model/info","methods":["GET"],"name":"model_info_v1"},
{"path":"/v1/model_group/info","methods":["GET"],"name":"model_group_info"},
{"path":"/vllm/{endpoint}","methods":["GET","POST","PUT","DELETE","PATCH"],"name":"vllm_proxy_route"},
{"path":"/health","methods":["GET"],"name":"health_endpoint"},
{"path":"/health/liveliness","methods":["GET"],"name":"health_liveliness"},
{"path":"/health/readiness","methods":["GET"],"name":"health_readiness"},
{"path":"/health/readiness/details","methods":["GET"],"name":"health_readiness_details"},
{"path":"/v1/health/live","methods":["GET"],"name":"health_live"},
{"path":"/v1/health/ready","methods":["GET"],"name":"health_ready"},
{"path":"/key/generate","methods":["POST"],"name":"generate_key_fn"},
{"path":"/key/info","methods":["GET"],"name":"info_key_fn"},
{"path":"/routes","methods":["GET"],"name":"get_routes"}]}"#;
