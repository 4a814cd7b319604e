//! Which model groups a caller may reach, and the only way to get something routable.
//!
//! Every path to a deployment — the OpenAI endpoints, `/vllm/*`, fallbacks named in the
//! request body or in the config, retries, cached answers, health probes — needs a
//! [`Target`], and the router takes nothing else. A `Target` can only be had from a
//! [`Scope`], which checks the principal, or from a `Target` already held: the operator's
//! configured fallbacks of a group the caller may use (LiteLLM's behaviour: the operator
//! chose them). A path that forgot the check would have no `Target` to route with.

use crate::config::Config;
use crate::error::{ErrorKind, GatewayError};
use crate::keys::Principal;

/// A model group this request may be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    group: usize,
}

impl Target {
    pub fn group(self) -> usize {
        self.group
    }

    /// The groups the operator configured as this group's fallbacks (`fallbacks`).
    pub fn config_fallbacks(self, config: &Config) -> Vec<Target> {
        Self::operator_chain(config.router.fallbacks.get(&self.group))
    }

    /// The groups the operator configured for prompts longer than this group's context
    /// window (`context_window_fallbacks`).
    pub fn config_context_window_fallbacks(self, config: &Config) -> Vec<Target> {
        Self::operator_chain(config.router.context_window_fallbacks.get(&self.group))
    }

    fn operator_chain(groups: Option<&Vec<usize>>) -> Vec<Target> {
        groups
            .map(|v| v.iter().map(|&group| Target { group }).collect())
            .unwrap_or_default()
    }
}

/// The groups a principal may use: every group, or those its key's `models` name (a group's
/// name or any of its aliases). Names that are not in the configuration narrow a key, never
/// widen it: a key whose names all left the config may use nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every group. Otherwise sorted, without duplicates.
    allowed: Option<Vec<usize>>,
    /// A key's `models` the config has no group or alias for — LiteLLM's patterns
    /// (`openai/*`, `bedrock/anthropic.*`) and plain names a wildcard group may serve: a
    /// requested name that matches one may be used, whichever group serves it.
    patterns: Vec<String>,
}

/// Whether `name` matches `pattern`, where each `*` stands for any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = rest.get(at + part.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    rest.ends_with(last)
}

impl Scope {
    pub fn of(config: &Config, principal: &Principal) -> Scope {
        match principal {
            Principal::Key(grant) if !grant.models.is_empty() => {
                // A name is a group, an alias, or one of LiteLLM's access groups.
                let mut allowed: Vec<usize> = grant
                    .models
                    .iter()
                    .flat_map(|m| {
                        let named = config.model_index.get(m).copied();
                        let in_access_group = config.access_groups.get(m).into_iter().flatten();
                        named.into_iter().chain(in_access_group.copied())
                    })
                    .collect();
                allowed.sort_unstable();
                allowed.dedup();
                Scope {
                    allowed: Some(allowed),
                    // Names the config does not know are matched against requested names:
                    // patterns, and names a wildcard group serves (`gpt-5.5` under `*`).
                    patterns: grant
                        .models
                        .iter()
                        .filter(|m| !config.model_index.contains_key(*m))
                        .cloned()
                        .collect(),
                }
            }
            _ => Scope {
                allowed: None,
                patterns: Vec::new(),
            },
        }
    }

    /// Whether a requested name matches one of the key's model patterns.
    fn pattern_allows(&self, requested: &str) -> bool {
        self.patterns.iter().any(|p| glob(p, requested))
    }

    pub fn is_unrestricted(&self) -> bool {
        self.allowed.is_none()
    }

    pub fn allows(&self, group: usize) -> bool {
        match &self.allowed {
            None => true,
            Some(groups) => groups.binary_search(&group).is_ok(),
        }
    }

    /// The group a requested name resolves to, if this caller may use it: 404 for a name
    /// the gateway does not know (listing only what the caller may use), 403 for one it may
    /// not use. `param` is the request field the name came from.
    pub fn admit(
        &self,
        config: &Config,
        requested: &str,
        param: &'static str,
    ) -> Result<Target, GatewayError> {
        let Some(group) = config.resolve_index(requested) else {
            return Err(self.not_found(config, requested).with_param(param));
        };
        if self.pattern_allows(requested) {
            return Ok(Target { group });
        }
        self.admit_group(group)
            .ok_or_else(|| self.not_allowed(config, requested, param))
    }

    /// A group by index, if this caller may use it.
    pub fn admit_group(&self, group: usize) -> Option<Target> {
        self.allows(group).then_some(Target { group })
    }

    /// Every group this caller may use, in config order.
    pub fn targets<'a>(&'a self, config: &'a Config) -> impl Iterator<Item = Target> + 'a {
        (0..config.groups.len()).filter_map(|g| self.admit_group(g))
    }

    /// Whether a visible model name (a group or an alias) is one this caller may use.
    pub fn shows(&self, config: &Config, name: &str) -> bool {
        config
            .model_index
            .get(name)
            .is_some_and(|&g| self.allows(g) || self.pattern_allows(name))
    }

    /// The visible names (groups and non-hidden aliases) this caller may use.
    pub fn visible_models<'a>(&'a self, config: &'a Config) -> impl Iterator<Item = &'a str> + 'a {
        config
            .visible_models
            .iter()
            .map(String::as_str)
            .filter(|m| self.shows(config, m))
    }

    /// 403 for a model this caller may not use.
    pub fn not_allowed(
        &self,
        config: &Config,
        requested: &str,
        param: &'static str,
    ) -> GatewayError {
        let may_use: Vec<&str> = self.visible_models(config).collect();
        key_model_access_denied(requested, param, &may_use)
    }

    /// 404 for an unknown model, listing the models this caller may use.
    pub fn not_found(&self, config: &Config, name: &str) -> GatewayError {
        let shown = printable(name);
        let available: Vec<&str> = self.visible_models(config).collect();
        GatewayError::new(
            ErrorKind::ModelNotFound,
            format!(
                "The model `{shown}` does not exist. Available models: {}",
                available.join(", ")
            ),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// What the response cache keys on: callers that may use the same groups may share
    /// answers, others never (an answer may have come from a fallback group the other caller
    /// may not use). Group names, not indices, so entries stay right across a reload.
    pub fn cache_scope(&self, config: &Config) -> String {
        match &self.allowed {
            None => "*".to_string(),
            Some(groups) => {
                let mut names: Vec<&str> = groups
                    .iter()
                    .filter_map(|&g| config.groups.get(g).map(|g| g.name.as_str()))
                    .collect();
                names.sort_unstable();
                let mut patterns: Vec<&str> = self.patterns.iter().map(String::as_str).collect();
                patterns.sort_unstable();
                if patterns.is_empty() {
                    format!("groups:{}", names.join("\n"))
                } else {
                    format!(
                        "groups:{}\npatterns:{}",
                        names.join("\n"),
                        patterns.join("\n")
                    )
                }
            }
        }
    }
}

/// LiteLLM's `key_model_access_denied` (403, code "403") for a model the caller may not
/// use, naming it, the field it came from, and what the key may use.
pub fn key_model_access_denied(
    requested: &str,
    param: &'static str,
    may_use: &[&str],
) -> GatewayError {
    GatewayError::new(
        ErrorKind::KeyModelAccessDenied,
        format!(
            "key not allowed to access model. This key can only access models={:?}. Tried to access `{}` (in `{param}`)",
            may_use,
            printable(requested)
        ),
    )
    .with_param(param)
    .with_code("403")
}

fn printable(name: &str) -> String {
    crate::error::shown(name, 128)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config() -> Config {
        let json = r#"{"model_list":[
            {"model_name":"a","litellm_params":{"model":"openai/a","api_base":"http://h:1"}},
            {"model_name":"b","litellm_params":{"model":"openai/b","api_base":"http://h:1"}},
            {"model_name":"c","litellm_params":{"model":"openai/c","api_base":"http://h:1"}}],
          "router_settings":{"model_group_alias":{"alias-b":"b","hidden-c":{"model":"c","hidden":true}},
                             "fallbacks":[{"a":["c"]}]},
          "general_settings":{"master_key":"sk-m","virtual_keys":[
            {"key":"sk-a","models":["a"]},
            {"key":"sk-alias","models":["alias-b"]},
            {"key":"sk-any"}]}}"#;
        parse(json.as_bytes(), &|_| None, 0).unwrap().0
    }

    fn scope(c: &Config, key: &str) -> Scope {
        let key = if key == "sk-gone" {
            // A key minted when the config still had its group.
            c.keys
                .mint(&crate::keys::Claims {
                    kid: "0".repeat(32),
                    models: vec!["gone-from-config".into()],
                    ..Default::default()
                })
                .unwrap()
        } else {
            key.to_string()
        };
        Scope::of(c, &c.keys.authenticate(Some(&key), 0).unwrap())
    }

    #[test]
    fn a_key_with_model_patterns_reaches_the_names_they_match() {
        assert!(glob("openai/*", "openai/gpt-4o") && !glob("openai/*", "anthropic/claude-2"));
        assert!(glob("bedrock/anthropic.*", "bedrock/anthropic.claude-3"));
        assert!(!glob("bedrock/anthropic.*", "bedrock/amazon.titan"));
        assert!(
            glob("*", "x")
                && glob("a*b*c", "aXbYc")
                && !glob("a*b*c", "aXc")
                && glob("gpt-4", "gpt-4")
        );
        let json = r#"{"model_list":[
            {"model_name":"*","litellm_params":{"model":"openai/*","api_base":"http://h:1"}},
            {"model_name":"gpt-4","litellm_params":{"model":"openai/gpt-4","api_base":"http://h:1"}}],
          "general_settings":{"master_key":"sk-m","virtual_keys":[{"key":"sk-p","models":["bedrock/anthropic.*"]}]}}"#;
        let c = parse(json.as_bytes(), &|_| None, 0).unwrap().0;
        let s = Scope::of(&c, &c.keys.authenticate(Some("sk-p"), 0).unwrap());
        assert!(
            s.admit(&c, "bedrock/anthropic.claude-3", "model").is_ok(),
            "served by `*`"
        );
        let e = s.admit(&c, "bedrock/amazon.titan", "model").unwrap_err();
        assert_eq!(
            (e.status(), e.kind.error_type()),
            (403, "key_model_access_denied")
        );
        assert_eq!(s.admit(&c, "gpt-4", "model").unwrap_err().status(), 403);
        // A plain name the config has no group for, served by the `*` group (a minted key:
        // static keys must name what the config has).
        let minted = c
            .keys
            .mint(&crate::keys::Claims {
                kid: "1".repeat(32),
                models: vec!["gpt-5.5".into()],
                ..Default::default()
            })
            .unwrap();
        let s = Scope::of(&c, &c.keys.authenticate(Some(&minted), 0).unwrap());
        assert!(s.admit(&c, "gpt-5.5", "model").is_ok());
        assert!(s.admit(&c, "gpt-5.6", "model").is_err());
    }

    #[test]
    fn a_key_naming_an_access_group_reaches_its_groups() {
        let json = r#"{"model_list":[
            {"model_name":"a","litellm_params":{"model":"openai/a","api_base":"http://h:1"},
             "model_info":{"access_groups":["beta"]}},
            {"model_name":"b","litellm_params":{"model":"openai/b","api_base":"http://h:1"},
             "model_info":{"access_groups":["beta","internal"]}},
            {"model_name":"c","litellm_params":{"model":"openai/c","api_base":"http://h:1"}}],
          "general_settings":{"master_key":"sk-m","virtual_keys":[{"key":"sk-beta","models":["beta"]}]}}"#;
        let c = parse(json.as_bytes(), &|_| None, 0).unwrap().0;
        let s = Scope::of(&c, &c.keys.authenticate(Some("sk-beta"), 0).unwrap());
        assert!(s.admit(&c, "a", "model").is_ok() && s.admit(&c, "b", "model").is_ok());
        assert_eq!(s.admit(&c, "c", "model").unwrap_err().status(), 403);
        assert_eq!(s.visible_models(&c).collect::<Vec<_>>(), ["a", "b"]);
        let listed: serde_json::Value =
            serde_json::from_slice(&crate::listing::access_groups_list(&c, &s)).unwrap();
        let ids: Vec<&str> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["beta", "internal"]);
    }

    #[test]
    fn a_key_reaches_the_groups_its_names_resolve_to() {
        let c = config();
        let a = scope(&c, "sk-a");
        assert_eq!(a.admit(&c, "a", "model").unwrap().group(), 0);
        let e = a.admit(&c, "b", "fallbacks").unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(e.param.as_deref(), Some("fallbacks"));
        assert!(e.message.contains("`b`"));
        let e = a.admit(&c, "nope", "model").unwrap_err();
        assert_eq!(e.status(), 404);
        assert!(e.message.ends_with("Available models: a"), "{}", e.message);

        let alias = scope(&c, "sk-alias");
        assert_eq!(alias.admit(&c, "b", "model").unwrap().group(), 1);
        assert_eq!(alias.admit(&c, "alias-b", "model").unwrap().group(), 1);
        assert!(alias.admit(&c, "hidden-c", "model").is_err());
        assert_eq!(
            alias.visible_models(&c).collect::<Vec<_>>(),
            ["b", "alias-b"]
        );
    }

    #[test]
    fn names_not_in_the_config_narrow_never_widen() {
        let c = config();
        let gone = scope(&c, "sk-gone");
        assert!(!gone.is_unrestricted());
        assert_eq!(gone.targets(&c).count(), 0);
        assert_eq!(gone.admit(&c, "a", "model").unwrap_err().status(), 403);
        // No `models` at all: every group, as LiteLLM.
        assert!(scope(&c, "sk-any").is_unrestricted());
        assert!(Scope::of(&c, &Principal::Master).is_unrestricted());
    }

    #[test]
    fn configured_fallbacks_come_from_a_held_target() {
        let c = config();
        let a = scope(&c, "sk-a");
        let target = a.admit(&c, "a", "model").unwrap();
        let chain: Vec<usize> = target
            .config_fallbacks(&c)
            .into_iter()
            .map(Target::group)
            .collect();
        assert_eq!(
            chain,
            vec![2],
            "the operator's fallback, though the key lists only `a`"
        );
        assert!(!a.allows(2));
    }

    #[test]
    fn equal_scopes_share_a_cache_scope_and_different_ones_do_not() {
        let c = config();
        assert_eq!(scope(&c, "sk-a").cache_scope(&c), "groups:a");
        assert_eq!(scope(&c, "sk-alias").cache_scope(&c), "groups:b");
        assert_ne!(
            scope(&c, "sk-a").cache_scope(&c),
            Scope::of(&c, &Principal::Master).cache_scope(&c)
        );
        // Its name is matched against requested names (a wildcard group may serve it).
        assert_eq!(
            scope(&c, "sk-gone").cache_scope(&c),
            "groups:\npatterns:gone-from-config"
        );
    }
}
