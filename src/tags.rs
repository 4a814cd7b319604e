//! Tag routing, as LiteLLM's (`router_settings.enable_tag_filtering`): a request's tags
//! (`tags`, `metadata.tags`, the `x-litellm-tags` header) pick among a group's deployments
//! by their `litellm_params.tags`, so free and paid traffic never share a deployment.
//!
//! - A tagged request goes to the deployments sharing a tag with it (with
//!   `tag_filtering_match_any: false`, having all of its tags); if none does, to those
//!   tagged `default`; if there are none either, it is refused.
//! - An untagged request goes to the `default` deployments if there are any, else to all.

use crate::config::Config;
use crate::error::GatewayError;

/// `x-litellm-tags: a, b` → `["a", "b"]`.
pub fn from_header(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// The deployments of `group` a request with `tags` may not use (to be excluded from the
/// pick); an error when it may use none.
pub fn excluded(
    config: &Config,
    group: usize,
    tags: &[String],
) -> Result<Vec<usize>, GatewayError> {
    if !config.router.tag_filtering {
        return Ok(Vec::new());
    }
    let Some(g) = config.groups.get(group) else {
        return Ok(Vec::new());
    };
    let tags_of = |i: usize| {
        config
            .deployment(i)
            .map(|d| d.tags.as_slice())
            .unwrap_or_default()
    };
    let is_default = |i: usize| tags_of(i).iter().any(|t| t == "default");
    let defaults: Vec<usize> = g
        .deployments
        .iter()
        .copied()
        .filter(|&i| is_default(i))
        .collect();
    let allowed: Vec<usize> = if tags.is_empty() {
        if defaults.is_empty() {
            return Ok(Vec::new());
        }
        defaults
    } else {
        let matches = |i: usize| {
            let own = tags_of(i);
            if config.router.tag_match_any {
                tags.iter().any(|t| own.contains(t))
            } else {
                tags.iter().all(|t| own.contains(t))
            }
        };
        let matching: Vec<usize> = g
            .deployments
            .iter()
            .copied()
            .filter(|&i| matches(i))
            .collect();
        match (matching.is_empty(), defaults.is_empty()) {
            (false, _) => matching,
            (true, false) => defaults,
            (true, true) => {
                let shown: Vec<String> = tags
                    .iter()
                    .take(8)
                    .map(|t| crate::error::shown(t, 64))
                    .collect();
                return Err(GatewayError::invalid_request(format!(
                    "no deployment of model group `{}` has the request's tags ({}) and none is tagged `default`",
                    g.name,
                    shown.join(", ")
                ))
                .with_param("tags")
                .with_code("no_deployments_with_tag_routing"));
            }
        }
    };
    Ok(g.deployments
        .iter()
        .copied()
        .filter(|i| !allowed.contains(i))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config(members: &str, match_any: bool) -> Config {
        let json = format!(
            r#"{{"model_list":[{members}],"router_settings":{{"enable_tag_filtering":true,"tag_filtering_match_any":{match_any}}}}}"#
        );
        parse(json.as_bytes(), &|_| None, 0).unwrap().0
    }

    fn member(host: &str, tags: &str) -> String {
        format!(
            r#"{{"model_name":"g","litellm_params":{{"model":"openai/m","api_base":"http://{host}:1","tags":{tags}}}}}"#
        )
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn tagged_requests_reach_only_their_tier() {
        let members = [
            member("free", r#"["free"]"#),
            member("paid", r#"["paid","premium"]"#),
        ]
        .join(",");
        let c = config(&members, true);
        assert_eq!(excluded(&c, 0, &tags(&["paid"])).unwrap(), vec![0]);
        assert_eq!(excluded(&c, 0, &tags(&["free"])).unwrap(), vec![1]);
        assert_eq!(
            excluded(&c, 0, &tags(&["free", "paid"])).unwrap(),
            Vec::<usize>::new()
        );
        let e = excluded(&c, 0, &tags(&["gold"])).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.message.contains("gold"));
        // Untagged, no default: every deployment.
        assert!(excluded(&c, 0, &[]).unwrap().is_empty());
        // All of the request's tags, when match_any is off.
        let c = config(&members, false);
        assert_eq!(
            excluded(&c, 0, &tags(&["paid", "premium"])).unwrap(),
            vec![0]
        );
        assert!(excluded(&c, 0, &tags(&["paid", "free"])).is_err());
    }

    #[test]
    fn default_deployments_take_untagged_and_unmatched_requests() {
        let members = [
            member("free", r#"["default"]"#),
            member("paid", r#"["paid"]"#),
        ]
        .join(",");
        let c = config(&members, true);
        assert_eq!(excluded(&c, 0, &[]).unwrap(), vec![1]);
        assert_eq!(excluded(&c, 0, &tags(&["gold"])).unwrap(), vec![1]);
        assert_eq!(excluded(&c, 0, &tags(&["paid"])).unwrap(), vec![0]);
        assert_eq!(from_header(" paid, ,premium "), tags(&["paid", "premium"]));
    }
}
