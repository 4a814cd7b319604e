//! LiteLLM settings the gateway does not implement, and what becomes of each. A setting that
//! decides who may do what, or where traffic goes, is never silently dropped: the config is
//! refused, naming the key and why. Settings that are only LiteLLM's own bookkeeping (its
//! database, alerting, logging callbacks, verbosity) are ignored with a warning that says so.

/// What happens to a LiteLLM key the gateway does not implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The config is refused: honouring it is impossible here and ignoring it would change
    /// security or routing.
    Refuse(&'static str),
    /// Accepted and ignored, for this reason.
    Ignore(&'static str),
}

const GUARDRAILS: &str =
    "guardrails do not run in this gateway: requests would reach the models unchecked";
const AUTH: &str = "this gateway checks keys itself (master key, virtual and signed keys); a custom or external auth scheme cannot run inside Envoy, so requests would be let in by other rules than the ones written";
const ACCESS: &str = "this access rule is not enforced by the gateway; enforce it in Envoy (RBAC, ext_authz) and remove the key here";
const LIMIT: &str = "this limit is not enforced by the gateway; leaving it in would promise a limit that does not hold";
const KEY_POLICY: &str = "teams do not exist in this gateway (keys are signed and stateless; see the README's Keys section): team settings would not apply";
const CONTENT_POLICY: &str =
    "the gateway does not detect content-policy refusals, so these fallbacks would never be taken";
const PASS_THROUGH: &str = "only the /vllm/* pass-through exists; these routes would not be served";
const DATABASE: &str =
    "LiteLLM's database: this gateway keeps none (keys are signed and stateless)";
const ALERTING: &str = "LiteLLM's alerting and spend reports: use Envoy's stats and access log";
const LOGGING: &str =
    "LiteLLM's logging: the gateway logs through Envoy (access log, stats, log level)";
const REDIS: &str = "LiteLLM's Redis for shared limits: limits here are exact per Envoy without it";
const HEALTH: &str =
    "background health checks do not run; GET /health probes every deployment on demand";
const UI: &str = "LiteLLM's admin UI does not exist here";
const SERVER: &str = "LiteLLM's server process settings: Envoy is the server";
const PRE_CALL: &str = "context-window checks always apply: a prompt longer than every deployment's max_input_tokens goes to context_window_fallbacks";

/// Keys by path (`[*]` for any list index), with their verdict.
const TABLE: &[(&str, Verdict)] = &[
    ("guardrails", Verdict::Refuse(GUARDRAILS)),
    ("litellm_settings.guardrails", Verdict::Refuse(GUARDRAILS)),
    (
        "model_list[*].litellm_params.guardrails",
        Verdict::Refuse(GUARDRAILS),
    ),
    ("general_settings.guardrails", Verdict::Refuse(GUARDRAILS)),
    ("general_settings.custom_auth", Verdict::Refuse(AUTH)),
    (
        "general_settings.custom_auth_settings",
        Verdict::Refuse(AUTH),
    ),
    ("general_settings.enable_jwt_auth", Verdict::Refuse(AUTH)),
    ("general_settings.litellm_jwtauth", Verdict::Refuse(AUTH)),
    ("general_settings.enable_oauth2_auth", Verdict::Refuse(AUTH)),
    (
        "general_settings.oauth2_config_mappings",
        Verdict::Refuse(AUTH),
    ),
    ("general_settings.allowed_ips", Verdict::Refuse(ACCESS)),
    ("general_settings.allowed_routes", Verdict::Refuse(ACCESS)),
    (
        "general_settings.admin_only_routes",
        Verdict::Refuse(ACCESS),
    ),
    ("general_settings.public_routes", Verdict::Refuse(ACCESS)),
    ("general_settings.enforced_params", Verdict::Refuse(ACCESS)),
    (
        "general_settings.enforce_user_param",
        Verdict::Refuse(ACCESS),
    ),
    ("general_settings.block_robots", Verdict::Ignore(UI)),
    (
        "general_settings.pass_through_endpoints",
        Verdict::Refuse(PASS_THROUGH),
    ),
    (
        "general_settings.max_parallel_requests",
        Verdict::Refuse(LIMIT),
    ),
    (
        "general_settings.global_max_parallel_requests",
        Verdict::Refuse(LIMIT),
    ),
    ("litellm_settings.max_budget", Verdict::Refuse(LIMIT)),
    ("litellm_settings.budget_duration", Verdict::Refuse(LIMIT)),
    (
        "litellm_settings.max_internal_user_budget",
        Verdict::Refuse(LIMIT),
    ),
    (
        "litellm_settings.default_team_settings",
        Verdict::Refuse(KEY_POLICY),
    ),
    (
        "litellm_settings.content_policy_fallbacks",
        Verdict::Refuse(CONTENT_POLICY),
    ),
    (
        "router_settings.content_policy_fallbacks",
        Verdict::Refuse(CONTENT_POLICY),
    ),
    (
        "router_settings.enable_pre_call_checks",
        Verdict::Ignore(PRE_CALL),
    ),
    ("general_settings.database_url", Verdict::Ignore(DATABASE)),
    (
        "general_settings.database_connection_pool_limit",
        Verdict::Ignore(DATABASE),
    ),
    (
        "general_settings.database_connection_timeout",
        Verdict::Ignore(DATABASE),
    ),
    (
        "general_settings.store_model_in_db",
        Verdict::Ignore(DATABASE),
    ),
    (
        "general_settings.disable_spend_logs",
        Verdict::Ignore(DATABASE),
    ),
    (
        "general_settings.proxy_batch_write_at",
        Verdict::Ignore(DATABASE),
    ),
    ("general_settings.alerting", Verdict::Ignore(ALERTING)),
    (
        "general_settings.alerting_threshold",
        Verdict::Ignore(ALERTING),
    ),
    ("general_settings.alert_types", Verdict::Ignore(ALERTING)),
    (
        "general_settings.alert_to_webhook_url",
        Verdict::Ignore(ALERTING),
    ),
    ("general_settings.alerting_args", Verdict::Ignore(ALERTING)),
    (
        "general_settings.spend_report_frequency",
        Verdict::Ignore(ALERTING),
    ),
    (
        "general_settings.background_health_checks",
        Verdict::Ignore(HEALTH),
    ),
    (
        "general_settings.health_check_interval",
        Verdict::Ignore(HEALTH),
    ),
    (
        "general_settings.health_check_details",
        Verdict::Ignore(HEALTH),
    ),
    ("general_settings.ui_access_mode", Verdict::Ignore(UI)),
    (
        "general_settings.disable_master_key_return",
        Verdict::Ignore(UI),
    ),
    ("general_settings.num_workers", Verdict::Ignore(SERVER)),
    ("general_settings.otel", Verdict::Ignore(LOGGING)),
    ("litellm_settings.set_verbose", Verdict::Ignore(LOGGING)),
    ("litellm_settings.json_logs", Verdict::Ignore(LOGGING)),
    (
        "litellm_settings.success_callback",
        Verdict::Ignore(LOGGING),
    ),
    (
        "litellm_settings.failure_callback",
        Verdict::Ignore(LOGGING),
    ),
    ("litellm_settings.callbacks", Verdict::Ignore(LOGGING)),
    (
        "litellm_settings.service_callback",
        Verdict::Ignore(LOGGING),
    ),
    (
        "litellm_settings.callback_settings",
        Verdict::Ignore(LOGGING),
    ),
    (
        "litellm_settings.turn_off_message_logging",
        Verdict::Ignore(LOGGING),
    ),
    (
        "litellm_settings.redact_user_api_key_info",
        Verdict::Ignore(LOGGING),
    ),
    ("litellm_settings.telemetry", Verdict::Ignore(LOGGING)),
    ("router_settings.redis_host", Verdict::Ignore(REDIS)),
    ("router_settings.redis_port", Verdict::Ignore(REDIS)),
    ("router_settings.redis_password", Verdict::Ignore(REDIS)),
    ("router_settings.redis_url", Verdict::Ignore(REDIS)),
    ("litellm_settings.cache_params.host", Verdict::Ignore(REDIS)),
    ("litellm_settings.cache_params.port", Verdict::Ignore(REDIS)),
    (
        "litellm_settings.cache_params.password",
        Verdict::Ignore(REDIS),
    ),
];

/// Callback names that are guardrails or moderation rather than logging: a config listing
/// one is refused like `guardrails`.
const GUARDRAIL_CALLBACKS: &[&str] = &[
    "lakera_prompt_injection",
    "presidio",
    "llamaguard_moderations",
    "llmguard_moderations",
    "google_text_moderation",
    "openai_moderations",
    "hide_secrets",
    "detect_prompt_injection",
    "aporia",
    "bedrock_guardrails",
    "aim",
    "pangea",
    "lasso",
    "azure_content_safety",
];

/// The verdict for an unknown key at `path` (`model_list[3].x` matches `model_list[*].x`).
pub fn classify(path: &str) -> Option<Verdict> {
    let normal = wildcard_indices(path);
    TABLE
        .iter()
        .find(|(p, _)| *p == normal)
        .map(|&(_, verdict)| verdict)
}

/// A guardrail among LiteLLM's callback lists (`callbacks: ["presidio", "langfuse"]`).
pub fn guardrail_callback(value: &serde_json::Value) -> Option<String> {
    let names: Vec<&str> = match value {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    names
        .into_iter()
        .find(|n| GUARDRAIL_CALLBACKS.contains(n))
        .map(str::to_string)
}

fn wildcard_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[*");
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified_by_path_with_any_index() {
        assert!(matches!(classify("guardrails"), Some(Verdict::Refuse(_))));
        assert!(matches!(
            classify("model_list[12].litellm_params.guardrails"),
            Some(Verdict::Refuse(_))
        ));
        assert!(matches!(
            classify("general_settings.database_url"),
            Some(Verdict::Ignore(_))
        ));
        assert_eq!(classify("general_settings.something_new"), None);
        assert_eq!(
            guardrail_callback(&serde_json::json!(["langfuse", "presidio"])).as_deref(),
            Some("presidio")
        );
        assert_eq!(guardrail_callback(&serde_json::json!(["prometheus"])), None);
    }
}
