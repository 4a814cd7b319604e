//! The rate-limit service's own configuration, written from the gateway's: every descriptor
//! the filter sends has its limit there, so the standard service enforces exactly the
//! config's limits and nobody writes them twice by hand.
//!
//! Both files are YAML whose scalars are written as JSON strings and numbers (JSON's
//! double-quoted strings are YAML's), so no YAML writer is needed.

use super::budget::{budget_units, BUDGET_PERIOD_KEY, KEY_BUDGET_KEY};
use super::{DEPLOYMENT_RPM_KEY, DEPLOYMENT_TPM_KEY, KEY_RPM_KEY, KEY_TPM_KEY};
use crate::config::Config;

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The descriptors the filter asks about, as (key, value, limit per minute): the deployments
/// with `rpm`, those with `tpm` (counted in tokens), in config order, then the virtual keys
/// with `rpm_limit` by id. Keys minted by
/// `/key/generate` are not here: their descriptors carry their own limit, which
/// envoyproxy/ratelimit honours and Limitador does not.
fn limited(config: &Config) -> Vec<(&'static str, &str, u64)> {
    let deployments = config
        .deployments
        .iter()
        .filter_map(|d| d.rpm.map(|rpm| (DEPLOYMENT_RPM_KEY, d.id.as_str(), rpm)));
    let tokens = config
        .deployments
        .iter()
        .filter_map(|d| d.tpm.map(|tpm| (DEPLOYMENT_TPM_KEY, d.id.as_str(), tpm)));
    let keys = config.keys.static_grants().into_iter().flat_map(|g| {
        [(KEY_RPM_KEY, g.rpm), (KEY_TPM_KEY, g.tpm)]
            .into_iter()
            .filter_map(|(key, limit)| limit.map(|l| (key, g.id.as_str(), l)))
    });
    deployments.chain(tokens).chain(keys).collect()
}

/// The virtual keys with `max_budget`, as (id, budget in `budget::UNIT_USD` units): each
/// period of a key's budget is its own counter (`budget_period = <n>` under the key's entry),
/// per YEAR (`fleet::budget`).
fn budgets(config: &Config) -> Vec<(&str, u32)> {
    config
        .keys
        .static_grants()
        .into_iter()
        .filter_map(|g| g.budget.map(|b| (g.id.as_str(), budget_units(b))))
        .collect()
}

/// Seconds in the YEAR unit budgets are counted in (envoyproxy/ratelimit's 365 days).
const YEAR_SECONDS: u64 = 365 * 86_400;

/// An envoyproxy/ratelimit `config.yaml` (its `RUNTIME_ROOT/…/config/` directory): the
/// domain and one descriptor per limit the filter asks about (`limited`), per minute.
pub fn envoy_ratelimit(config: &Config) -> Option<String> {
    let service = config.rate_limit.as_ref()?;
    let mut out = format!(
        "# Rendered by `llm-gateway render --ratelimit-config`: the limits of the gateway's config.\ndomain: {}\ndescriptors:\n",
        quoted(&service.domain)
    );
    let mut any = false;
    for (key, id, rpm) in limited(config) {
        any = true;
        out.push_str(&format!(
            "  - key: {}\n    value: {}\n    rate_limit:\n      unit: minute\n      requests_per_unit: {rpm}\n",
            quoted(key),
            quoted(id)
        ));
    }
    for (id, units) in budgets(config) {
        any = true;
        out.push_str(&format!(
            "  - key: {}\n    value: {}\n    descriptors:\n      - key: {}\n        rate_limit:\n          unit: year\n          requests_per_unit: {units}\n",
            quoted(KEY_BUDGET_KEY),
            quoted(id),
            quoted(BUDGET_PERIOD_KEY)
        ));
    }
    if !any {
        out.push_str("  []\n");
    }
    Some(out)
}

/// A CEL string literal (single-quoted) for a Limitador condition.
fn cel_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' | '\'' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A Limitador limits file (`limitador-server LIMITS_FILE`): one limit per deployment with
/// `rpm` and per virtual key with `rpm_limit`, in the namespace Limitador takes from the
/// request's domain, per 60 s.
pub fn limitador(config: &Config) -> Option<String> {
    let service = config.rate_limit.as_ref()?;
    let mut out = String::from(
        "# Rendered by `llm-gateway render --limitador-limits`: the limits of the gateway's config.\n---\n",
    );
    let mut any = false;
    for (key, id, rpm) in limited(config) {
        any = true;
        let condition = format!("descriptors[0][{}] == {}", cel_string(key), cel_string(id));
        out.push_str(&format!(
            "- namespace: {}\n  max_value: {rpm}\n  seconds: 60\n  conditions:\n    - {}\n  variables: []\n",
            quoted(&service.domain),
            quoted(&condition)
        ));
    }
    for (id, units) in budgets(config) {
        any = true;
        let condition = format!(
            "descriptors[0][{}] == {}",
            cel_string(KEY_BUDGET_KEY),
            cel_string(id)
        );
        let variable = format!("descriptors[0][{}]", cel_string(BUDGET_PERIOD_KEY));
        out.push_str(&format!(
            "- namespace: {}\n  max_value: {units}\n  seconds: {YEAR_SECONDS}\n  conditions:\n    - {}\n  variables:\n    - {}\n",
            quoted(&service.domain),
            quoted(&condition),
            quoted(&variable)
        ));
    }
    if !any {
        out.push_str("[]\n");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let json = r#"{"model_list": [
          {"model_name": "m", "litellm_params": {"model": "openai/a", "api_base": "http://127.0.0.1:9001", "rpm": 30}, "model_info": {"id": "it's \"a\""}},
          {"model_name": "m", "litellm_params": {"model": "openai/b", "api_base": "http://127.0.0.1:9002", "rpm": 45, "tpm": 9000}},
          {"model_name": "m", "litellm_params": {"model": "openai/c", "api_base": "http://127.0.0.1:9003"}}],
         "general_settings": {"master_key": "sk-m", "virtual_keys": [{"key": "sk-a", "rpm_limit": 10, "tpm_limit": 5000}, {"key": "sk-b"}, {"key": "sk-c", "max_budget": 2.5, "budget_duration": "30d"}],
           "rate_limit_service": {"address": "rls:8081", "domain": "fleet", "instances": 2}}}"#;
        crate::config::parse(json.as_bytes(), &|_| None, 0)
            .unwrap()
            .0
    }

    #[test]
    fn every_limited_deployment_is_a_descriptor_with_its_rpm() {
        let out = envoy_ratelimit(&config()).unwrap();
        assert!(out.contains("domain: \"fleet\"\n"));
        assert!(out.contains(
            "  - key: \"deployment\"\n    value: \"it's \\\"a\\\"\"\n    rate_limit:\n      unit: minute\n      requests_per_unit: 30\n"
        ));
        assert!(out.contains("    value: \"m/1\"\n    rate_limit:\n      unit: minute\n      requests_per_unit: 45\n"));
        // The key with rpm_limit, by its id (never the key itself).
        assert!(out.contains("  - key: \"key\"\n    value: \"static-"));
        assert!(out.contains("      requests_per_unit: 10\n"));
        assert!(!out.contains("sk-a"));
        // tpm: its own descriptor, counted in tokens.
        assert!(out.contains("  - key: \"deployment_tpm\"\n    value: \"m/1\"\n    rate_limit:\n      unit: minute\n      requests_per_unit: 9000\n"));
        // The deployment without rpm and the key without rpm_limit are never asked about.
        assert!(out.contains("  - key: \"key_tpm\"\n    value: \"static-"));
        assert!(out.contains("      requests_per_unit: 5000\n"));
        // A budget: the key's entry, then one counter per period, in 0.0001 USD per YEAR.
        assert!(out.contains("  - key: \"key_budget\"\n    value: \"static-"));
        assert!(out.contains("    descriptors:\n      - key: \"budget_period\"\n        rate_limit:\n          unit: year\n          requests_per_unit: 25000\n"));
        assert_eq!(out.matches("- key:").count(), 7);
    }

    #[test]
    fn limitador_gets_the_same_limits_as_cel_conditions() {
        let out = limitador(&config()).unwrap();
        assert_eq!(out.matches("- namespace: \"fleet\"").count(), 6);
        assert!(out.contains("  max_value: 25000\n  seconds: 31536000\n  conditions:\n    - \"descriptors[0]['key_budget'] == 'static-"));
        assert!(out.contains("  variables:\n    - \"descriptors[0]['budget_period']\"\n"));
        assert!(out.contains("  max_value: 9000\n  seconds: 60\n  conditions:\n    - \"descriptors[0]['deployment_tpm'] == 'm/1'\"\n"));
        assert!(out.contains("  max_value: 10\n  seconds: 60\n  conditions:\n    - \"descriptors[0]['key'] == 'static-"));
        assert!(out.contains(
            "  max_value: 30\n  seconds: 60\n  conditions:\n    - \"descriptors[0]['deployment'] == 'it\\\\'s \\\"a\\\"'\"\n"
        ));
        assert!(out.contains("descriptors[0]['deployment'] == 'm/1'"));
    }

    #[test]
    fn without_a_service_there_is_nothing_to_write() {
        let json = br#"{"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/a", "api_base": "http://127.0.0.1:9001", "rpm": 30}}]}"#;
        let c = crate::config::parse(json, &|_| None, 0).unwrap().0;
        assert_eq!(envoy_ratelimit(&c), None);
        assert_eq!(limitador(&c), None);
    }
}
