//! What a caller may see of the configuration: `/v1/models`, `/v1/models/{id}`,
//! `/v1/model/info` and `/v1/model_group/info` list only the groups the caller may use, and
//! upstream addresses only to the master key. (No answer ever carries an upstream's key.)

use crate::config::{render_model_object, render_models_list, Config, Deployment};
use crate::error::GatewayError;
use crate::keys::Principal;
use crate::scope::Scope;
use serde_json::json;

/// `/v1/models`: the prerendered list for an unrestricted caller, else the part it may use.
pub fn models_list(config: &Config, scope: &Scope) -> Vec<u8> {
    if scope.is_unrestricted() {
        return config.models_list_body.clone();
    }
    let allowed: Vec<&str> = scope.visible_models(config).collect();
    render_models_list(&allowed, config.created)
}

/// `/v1/models?only_model_access_groups=true`: LiteLLM's access groups (in name order) that
/// hold a group this caller may use, in the models list's shape.
pub fn access_groups_list(config: &Config, scope: &Scope) -> Vec<u8> {
    let mut names: Vec<&str> = config
        .access_groups
        .iter()
        .filter(|(_, groups)| groups.iter().any(|&g| scope.allows(g)))
        .map(|(name, _)| name.as_str())
        .collect();
    names.sort_unstable();
    render_models_list(&names, config.created)
}

/// `/v1/models/{id}`: a visible name this caller may use, else 404 as for any unknown model.
pub fn model_object(config: &Config, scope: &Scope, id: &str) -> Result<Vec<u8>, GatewayError> {
    let visible = config.visible_models.iter().any(|m| m == id) && scope.shows(config, id);
    if visible {
        Ok(render_model_object(id, config.created))
    } else {
        Err(scope.not_found(config, id))
    }
}

/// Whether this caller may see where deployments are: only the master key may.
pub fn shows_upstreams(principal: &Principal) -> bool {
    matches!(principal, Principal::Master)
}

/// `/v1/model/info`: one entry per deployment of a group the caller may use; `api_base`
/// only for the master key.
pub fn model_info(config: &Config, scope: &Scope, show_upstreams: bool) -> Vec<u8> {
    let data: Vec<serde_json::Value> = config
        .deployments
        .iter()
        .filter(|d| scope.allows(d.group))
        .map(|d| {
            let mut params = json!({
                "model": d.model, "rpm": d.rpm, "tpm": d.tpm,
                "weight": d.weight, "order": d.order, "timeout": d.timeout_ms as f64 / 1000.0,
            });
            if let (true, Some(map)) = (show_upstreams, params.as_object_mut()) {
                map.insert("api_base".into(), json!(d.api_base));
            }
            json!({
                "model_name": config.groups.get(d.group).map(|g| g.name.as_str()).unwrap_or_default(),
                "litellm_params": params,
                "model_info": {
                    "id": d.id, "max_input_tokens": d.max_input_tokens,
                    "input_cost_per_token": d.input_cost_per_token,
                    "output_cost_per_token": d.output_cost_per_token,
                },
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "data": data })).unwrap_or_default()
}

/// `/v1/model_group/info`: one entry per visible name (groups and non-hidden aliases) the
/// caller may use, limits summed over the group's deployments.
pub fn model_group_info(config: &Config, scope: &Scope) -> Vec<u8> {
    let data: Vec<serde_json::Value> = scope
        .visible_models(config)
        .filter_map(|name| {
            let g = config.resolve_model(name)?;
            let members: Vec<&Deployment> = g
                .deployments
                .iter()
                .filter_map(|&i| config.deployment(i))
                .collect();
            let mut providers: Vec<&str> = members
                .iter()
                .filter_map(|d| d.model.split_once('/').map(|(p, _)| p))
                .collect();
            providers.dedup();
            let sum = |f: fn(&Deployment) -> Option<u64>| -> Option<u64> {
                members.iter().map(|d| f(d)).sum::<Option<u64>>()
            };
            let first = members.first();
            Some(json!({
                "model_group": name,
                "providers": providers,
                "max_input_tokens": members.iter().filter_map(|d| d.max_input_tokens).min(),
                "input_cost_per_token": first.and_then(|d| d.input_cost_per_token),
                "output_cost_per_token": first.and_then(|d| d.output_cost_per_token),
                "rpm": sum(|d| d.rpm),
                "tpm": sum(|d| d.tpm),
            }))
        })
        .collect();
    serde_json::to_vec(&json!({ "data": data })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config() -> Config {
        let json = r#"{"model_list":[
            {"model_name":"a","litellm_params":{"model":"openai/a","api_base":"http://a-host:1","api_key":"up-secret","rpm":3}},
            {"model_name":"b","litellm_params":{"model":"hosted_vllm/b","api_base":"http://b-host:2/v1"}}],
          "router_settings":{"model_group_alias":{"alias-a":"a"}},
          "general_settings":{"master_key":"sk-m","virtual_keys":[{"key":"sk-a","models":["alias-a"]}]}}"#;
        parse(json.as_bytes(), &|_| None, 7).unwrap().0
    }

    fn ids(body: &[u8], field: &str) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[field].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_restricted_key_sees_only_its_groups_and_no_addresses() {
        let c = config();
        let key = c.keys.authenticate(Some("sk-a"), 0).unwrap();
        let scope = Scope::of(&c, &key);
        assert_eq!(ids(&models_list(&c, &scope), "id"), ["a", "alias-a"]);
        let info = model_info(&c, &scope, shows_upstreams(&key));
        assert_eq!(ids(&info, "model_name"), ["a"]);
        let text = String::from_utf8(info).unwrap();
        assert!(
            !text.contains("a-host") && !text.contains("b-host"),
            "{text}"
        );
        assert!(!text.contains("up-secret"));
        assert_eq!(
            ids(&model_group_info(&c, &scope), "model_group"),
            ["a", "alias-a"]
        );
        assert!(model_object(&c, &scope, "alias-a").is_ok());
        let e = model_object(&c, &scope, "b").unwrap_err();
        assert_eq!(e.status(), 404);
        assert!(!e.message.contains("`b`.") && e.message.ends_with("a, alias-a"));
    }

    #[test]
    fn the_master_key_sees_everything_with_addresses_but_no_keys() {
        let c = config();
        let scope = Scope::of(&c, &Principal::Master);
        let info = model_info(&c, &scope, shows_upstreams(&Principal::Master));
        assert_eq!(ids(&info, "model_name"), ["a", "b"]);
        let text = String::from_utf8(info).unwrap();
        assert!(text.contains("http://a-host:1") && !text.contains("up-secret"));
        // An open gateway has no master key: nobody is shown addresses.
        assert!(!shows_upstreams(&Principal::Open));
        assert_eq!(
            ids(&model_group_info(&c, &scope), "model_group"),
            ["a", "b", "alias-a"]
        );
    }
}
