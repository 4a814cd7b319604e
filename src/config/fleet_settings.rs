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
    if !deployments.iter().any(|x| x.rpm.is_some()) {
        d.warn(path, "no deployment has rpm: the service is never asked");
    }
    let address = address?;
    if d.errors.len() > before {
        return None;
    }
    Some(Service {
        cluster: w.cluster.clone().unwrap_or_else(|| address.host_port()),
        host: address.host,
        port: address.port,
        domain,
        timeout_ms,
        failure_mode,
        instances,
    })
}
