//! `general_settings.rate_limit_service`: Envoy's global rate-limit service, validated.

use super::wire::WireRateLimitService;
use super::{is_token, Deployment, Diagnostics, Url};
use crate::fleet::{FailureMode, Service};

pub const DEFAULT_DOMAIN: &str = "llm-gateway";
/// Kuadrant's and Envoy's rate-limit filter's default: a slow service costs a request little.
pub const DEFAULT_TIMEOUT_MS: u64 = 20;

pub fn rate_limit_service(
    wire: Option<&WireRateLimitService>,
    deployments: &[Deployment],
    d: &mut Diagnostics,
) -> Option<Service> {
    let w = wire?;
    let path = "general_settings.rate_limit_service";
    let before = d.errors.len();
    let address = Url::parse(&format!("http://{}", w.address.trim()))
        .ok()
        .filter(|u| {
            u.explicit_port && u.path.is_empty() && u.query.is_empty() && !u.host.is_empty()
        });
    if address.is_none() {
        d.error(
            format!("{path}.address"),
            format!(
                "\"{}\" must be host:port (the service's gRPC address)",
                w.address
            ),
        );
    }
    let domain = w
        .domain
        .clone()
        .unwrap_or_else(|| DEFAULT_DOMAIN.to_string());
    if !is_token(&domain) {
        d.error(
            format!("{path}.domain"),
            "must be a non-empty name of visible ASCII characters",
        );
    }
    let timeout_ms = w.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=60_000).contains(&timeout_ms) {
        d.error(
            format!("{path}.timeout_ms"),
            "must be between 1 and 60000 milliseconds",
        );
    }
    let failure_mode = match w.failure_mode.as_deref() {
        None => FailureMode::Local,
        Some(m) => FailureMode::parse(m).unwrap_or_else(|| {
            d.error(
                format!("{path}.failure_mode"),
                format!("\"{m}\" must be one of local, allow, deny"),
            );
            FailureMode::Local
        }),
    };
    let instances = w.instances.unwrap_or(1);
    if instances == 0 {
        d.error(format!("{path}.instances"), "must be at least 1");
    }
    if failure_mode == FailureMode::Local && w.instances.is_none() {
        d.warn(
            format!("{path}.instances"),
            "not set: while the service is down, each Envoy enforces the whole limit (set it to the number of gateways)",
        );
    }
    if let Some(c) = &w.cluster {
        if !is_token(c) {
            d.error(
                format!("{path}.cluster"),
                "must be a non-empty Envoy cluster name of visible ASCII characters",
            );
        }
    }
    if !deployments
        .iter()
        .any(|x| x.rpm.is_some() || x.tpm.is_some())
    {
        d.warn(
            path,
            "no deployment has rpm or tpm: the service is asked about keys' rpm_limit only",
        );
    }
    let address = address?;
    if d.errors.len() > before {
        return None;
    }
    Some(Service {
        cluster: w.cluster.clone().unwrap_or_else(|| address.host_port()),
        authority: address.host_port(),
        frames: deployments
            .iter()
            .map(|x| crate::fleet::deployment_frame(&domain, x))
            .collect(),
        host: address.host,
        port: address.port,
        domain,
        timeout_ms,
        failure_mode,
        instances,
    })
}

#[cfg(test)]
mod tests {
    fn errors_of(service: &str) -> Vec<(String, String)> {
        let json = format!(
            r#"{{"model_list": [{{"model_name": "m", "litellm_params": {{"model": "openai/a", "api_base": "http://127.0.0.1:9001", "rpm": 5}}}}],
               "general_settings": {{"rate_limit_service": {service}}}}}"#
        );
        let (_, d) = crate::config::check(json.as_bytes(), &|_| None, 0);
        d.errors
            .iter()
            .map(|e| (e.path.clone(), e.message.clone()))
            .collect()
    }

    #[test]
    fn every_bad_field_is_named_by_its_path() {
        let errors = errors_of(
            r#"{"address": "rls", "domain": "", "timeout_ms": 0, "failure_mode": "open", "instances": 0, "cluster": "a b"}"#,
        );
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        let base = "general_settings.rate_limit_service";
        for field in [
            "address",
            "domain",
            "timeout_ms",
            "failure_mode",
            "instances",
            "cluster",
        ] {
            assert!(
                paths.contains(&format!("{base}.{field}").as_str()),
                "{field}: {errors:?}"
            );
        }
        assert!(errors.iter().any(|(_, m)| m.contains("local, allow, deny")));
        assert!(
            !errors_of(r#"{"adress": "rls:8081"}"#).is_empty(),
            "unknown keys refused"
        );
    }

    #[test]
    fn defaults_and_the_cluster_name() {
        let json = br#"{"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/a", "api_base": "http://127.0.0.1:9001", "rpm": 5}}],
               "general_settings": {"rate_limit_service": {"address": "ratelimit:8081"}}}"#;
        let (config, d) = crate::config::check(json, &|_| None, 0);
        let s = config.unwrap().rate_limit.unwrap();
        assert_eq!(
            (
                s.cluster.as_str(),
                s.domain.as_str(),
                s.timeout_ms,
                s.instances
            ),
            ("ratelimit:8081", "llm-gateway", 20, 1)
        );
        assert_eq!(s.failure_mode, crate::fleet::FailureMode::Local);
        assert!(d
            .warnings
            .iter()
            .any(|w| w.path.ends_with("rate_limit_service.instances")));
    }
}
