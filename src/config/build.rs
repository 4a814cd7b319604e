//! Wire sections → the runtime `Config`, computed once: groups and aliases, selection
//! weights, router settings, keys. Every problem is collected; the config exists only when
//! there are none.

use super::load::Sections;
use super::wire::*;
use super::*;

pub(super) fn build(s: Sections, d: &mut Diagnostics, now_unix: u64) -> Option<Config> {
    let Sections {
        entries,
        mut router_settings,
        litellm_settings,
        general_settings: general,
    } = s;
    let default_timeout = routing::default_timeout(&router_settings, &litellm_settings, d);
    let defaults = DeploymentDefaults {
        timeout: default_timeout,
        drop_params: litellm_settings.drop_params.unwrap_or(false),
    };

    let mut groups: Vec<ModelGroup> = Vec::new();
    let mut model_index: HashMap<String, usize> = HashMap::new();
    let mut visible_models = Vec::new();
    let mut deployments = Vec::with_capacity(entries.len());
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut access_groups: HashMap<String, Vec<usize>> = HashMap::new();

    for entry in entries {
        let path = join_index("model_list", entry.index);
        let Some(name) = entry.name.filter(|n| !n.is_empty()) else {
            if entry.wire.is_some() {
                d.error(join_key(&path, "model_name"), "must not be empty");
            }
            continue;
        };
        let group = match model_index.get(&name) {
            Some(&g) => g,
            None => {
                let wildcard_prefix = name.strip_suffix('*').map(str::to_string);
                if name.matches('*').count() > usize::from(wildcard_prefix.is_some()) {
                    d.error(
                        join_key(&path, "model_name"),
                        "a wildcard model_name has one `*`, at its end (`*` or `openai/*`)",
                    );
                }
                groups.push(ModelGroup {
                    name: name.clone(),
                    header_name: header_safe(&name),
                    metric_label: crate::metrics::label(&name),
                    deployments: Vec::new(),
                    cumulative_weights: Vec::new(),
                    weights: Vec::new(),
                    orders: Vec::new(),
                    wildcard_prefix: wildcard_prefix.clone(),
                });
                let g = groups.len() - 1;
                model_index.insert(name.clone(), g);
                // A pattern is not a model: model lists name the explicit groups only.
                if wildcard_prefix.is_none() {
                    visible_models.push(name.clone());
                }
                g
            }
        };
        // An entry that could not be read still names its group, so settings that refer
        // to the group are not reported as wrong too.
        let Some(wire) = entry.wire else { continue };
        for access_group in wire.model_info.access_groups.iter().flatten() {
            let members = access_groups.entry(access_group.clone()).or_default();
            if !members.contains(&group) {
                members.push(group);
            }
        }
        let deployment = match validate_deployment(&path, entry.index, group, wire, defaults, d) {
            Ok(dep) => dep,
            Err(e) => {
                d.push(e);
                continue;
            }
        };
        let group_is_wildcard = groups
            .get(group)
            .is_some_and(|g| g.wildcard_prefix.is_some());
        if group_is_wildcard != deployment.wildcard.is_some() {
            d.error(
                join_key(&path, "litellm_params.model"),
                if group_is_wildcard {
                    "a wildcard model_name needs a wildcard model (`openai/*`), so the requested name can complete it"
                } else {
                    "a wildcard model (`openai/*`) needs a wildcard model_name (`*` or `openai/*`)"
                },
            );
            continue;
        }
        if let Some(previous) = ids.insert(deployment.id.clone(), entry.index) {
            d.error(
                format!("{path}.model_info.id"),
                format!(
                    "\"{}\" is already the id of model_list[{previous}]",
                    deployment.id
                ),
            );
            continue;
        }
        if let Some(g) = groups.get_mut(group) {
            g.deployments.push(deployments.len());
        }
        deployments.push(deployment);
    }

    let aliases = std::mem::take(&mut router_settings.model_group_alias);
    for (alias, target) in aliases {
        let path = format!("router_settings.model_group_alias.{alias}");
        let (target, hidden) = match target {
            WireAlias::Group(g) => (g, false),
            WireAlias::Detailed { model, hidden } => (model, hidden),
        };
        if alias.is_empty() {
            d.error(path, "alias must not be empty");
            continue;
        }
        let Some(&g) = model_index.get(&target) else {
            d.error(
                path,
                format!("names model group \"{target}\", which no model_list entry defines"),
            );
            continue;
        };
        if groups.get(g).map(|grp| grp.name == alias).unwrap_or(false) {
            continue;
        }
        if model_index.contains_key(&alias) {
            d.error(path, "alias is already a model group name");
            continue;
        }
        model_index.insert(alias.clone(), g);
        if !hidden {
            visible_models.push(alias);
        }
    }

    for g in &mut groups {
        g.cumulative_weights = selection_weights(&g.deployments, &deployments);
        let mut previous = 0.0;
        g.weights = g
            .cumulative_weights
            .iter()
            .map(|&c| {
                let w = c - previous;
                previous = c;
                w
            })
            .collect();
        let mut orders: Vec<u32> = g
            .deployments
            .iter()
            .filter_map(|&i| deployments.get(i).map(|d| d.order))
            .collect();
        orders.sort_unstable();
        orders.dedup();
        g.orders = orders;
    }

    let router = router_settings_of(&router_settings, &litellm_settings, &model_index, d);
    if router.tag_filtering && !deployments.iter().any(|dep| !dep.tags.is_empty()) {
        d.warn(
            "router_settings.enable_tag_filtering",
            "no deployment has litellm_params.tags: every request goes to every deployment",
        );
    }
    if !router.tag_filtering {
        if let Some(dep) = deployments.iter().find(|dep| !dep.tags.is_empty()) {
            d.warn(
                "router_settings.enable_tag_filtering",
                format!(
                    "is not true, so the tags of `{}` (and any other) do not route anything",
                    dep.id
                ),
            );
        }
    }
    let keys = key_ring(&general, &model_index, &access_groups, d);
    let key_header = general
        .litellm_key_header_name
        .as_deref()
        .map(str::trim)
        .map(str::to_ascii_lowercase);
    if let Some(h) = &key_header {
        let valid = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !h.starts_with("x-envoy-")
            && h != "x-llm-cluster";
        if !valid {
            d.error(
                "general_settings.litellm_key_header_name",
                "must be an HTTP header name (letters, digits, `-`), not an Envoy-internal one",
            );
        }
    }
    let route_defaults = general.envoy_route_defaults.as_ref().and_then(|r| {
        let path = "general_settings.envoy_route_defaults";
        if !(r.timeout_seconds.is_finite() && r.timeout_seconds > 0.0) {
            d.error(
                format!("{path}.timeout_seconds"),
                "must be a positive number of seconds",
            );
            return None;
        }
        if r.retry_on != crate::retry::ENVOY_RETRY_ON {
            // Envoy ORs a request's retry-on into the route's: a wider route could not be
            // narrowed for a request (a group of several deployments fails over instead).
            d.error(
                format!("{path}.retry_on"),
                format!("must be \"{}\", and so must the route's retry_policy.retry_on (a request can add retry conditions to the route's, never remove them)", crate::retry::ENVOY_RETRY_ON),
            );
            return None;
        }
        Some(crate::retry::RouteDefaults {
            timeout_ms: (r.timeout_seconds * 1000.0).round() as u64,
            num_retries: r.num_retries,
        })
    });
    let max_request_body_bytes = general
        .max_request_body_bytes
        .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES);
    if max_request_body_bytes == 0 {
        d.error(
            "general_settings.max_request_body_bytes",
            "must be greater than 0",
        );
    }
    let key_policy = crate::key_api::KeyPolicy::read(
        litellm_settings.default_key_generate_params.as_ref(),
        litellm_settings.upperbound_key_generate_params.as_ref(),
    )
    .unwrap_or_else(|(section, message)| {
        d.error(format!("litellm_settings.{section}"), message);
        Default::default()
    });
    let rate_limit = super::fleet_settings::rate_limit_service(
        general.rate_limit_service.as_ref(),
        &deployments,
        d,
    );
    let cache = match cache_settings(&litellm_settings) {
        Ok(c) => c,
        Err(e) => {
            d.push(e);
            None
        }
    };
    if !d.errors.is_empty() {
        return None;
    }

    let models_list_body = render_models_list(&visible_models, now_unix);
    let mut wildcards: Vec<(String, usize)> = groups
        .iter()
        .enumerate()
        .filter_map(|(i, g)| g.wildcard_prefix.clone().map(|p| (p, i)))
        .collect();
    // Most specific first; equal lengths keep config order (the sort is stable).
    wildcards.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
    let vllm_deployments = deployments
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d.provider, Provider::OpenAiCompatible { is_vllm: true, .. }))
        .map(|(i, _)| i)
        .collect();
    Some(Config {
        vllm_deployments,
        wildcards,
        deployments,
        groups,
        model_index,
        visible_models,
        keys,
        key_header,
        litellm_response_headers: general.litellm_response_headers.unwrap_or(true),
        litellm_test_switches: general.litellm_test_switches.unwrap_or(false),
        test_panics: false,
        route_defaults,
        rate_limit,
        access_groups,
        key_policy,
        drop_params: litellm_settings.drop_params.unwrap_or(false),
        router,
        cache,
        max_request_body_bytes,
        models_list_body,
        created: now_unix,
    })
}

fn key_ring(
    general: &WireGeneralSettings,
    model_index: &HashMap<String, usize>,
    access_groups: &HashMap<String, Vec<usize>>,
    d: &mut Diagnostics,
) -> crate::keys::KeyRing {
    let master_key = general.master_key.clone();
    if master_key.as_deref() == Some("") {
        d.error("general_settings.master_key", "must not be empty");
    }
    let signing_secret = general.key_signing_secret.clone().filter(|s| !s.is_empty());
    let mut statics = Vec::new();
    for (i, v) in general.virtual_keys.iter().enumerate() {
        // A name with `*` is a LiteLLM model pattern, matched against requested names.
        match static_key(i, v, &|m| {
            m.contains('*') || model_index.contains_key(m) || access_groups.contains_key(m)
        }) {
            Ok(k) => statics.push(k),
            Err(e) => d.push(e),
        }
    }
    crate::keys::KeyRing::new(
        master_key.as_deref().filter(|k| !k.is_empty()),
        signing_secret.as_deref(),
        statics,
        general.revoked_keys.clone(),
    )
}
