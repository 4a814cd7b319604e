//! `llm-gateway render`: a LiteLLM config in, a complete Envoy bootstrap out — listener, the
//! filter with the config embedded, one cluster per upstream, the `x-llm-cluster` route,
//! admin on loopback, stats tags. Pure: the binary does the file and YAML work.

use crate::config::{Config, Url};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub port: u16,
    pub admin_port: u16,
    pub wasm_path: String,
    /// ECDS: the filter's config comes from this file and reloads when it changes.
    pub reloadable: Option<String>,
    pub runtime: Runtime,
}

/// Which build of the gateway Envoy loads: the same core, the same JSON config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// The `.wasm` in Envoy's V8 (Istio, Envoy Gateway, any Envoy).
    #[default]
    Wasm,
    /// `libllm_gateway.so`, an Envoy dynamic module found by name `llm_gateway` on
    /// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` (Envoy 1.40's ABI).
    Native,
}

impl Runtime {
    pub fn parse(name: &str) -> Option<Runtime> {
        match name {
            "wasm" => Some(Runtime::Wasm),
            "native" => Some(Runtime::Native),
            _ => None,
        }
    }

    /// The filter-state key the access-log record is read from.
    pub fn access_record_key(self) -> &'static str {
        match self {
            Runtime::Wasm => "wasm.llm_gateway",
            Runtime::Native => "llm_gateway",
        }
    }

    fn type_url(self) -> &'static str {
        match self {
            Runtime::Wasm => "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            Runtime::Native => "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        }
    }

    fn filter_name(self) -> &'static str {
        match self {
            Runtime::Wasm => "envoy.filters.http.wasm",
            Runtime::Native => "envoy.filters.http.dynamic_modules",
        }
    }
}

/// Environment variables the config reads (`os.environ/NAME`), passed from Envoy's own.
fn env_names(gateway_json: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => {
                if let Some(name) = s.strip_prefix(crate::config::env::PREFIX) {
                    if !out.iter().any(|n| n == name) {
                        out.push(name.to_string());
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(gateway_json, &mut out);
    out
}

fn cluster(name: &str, url: &Url) -> Value {
    let is_ip = url.host.parse::<std::net::IpAddr>().is_ok()
        || url
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let mut c = json!({
        "name": name,
        "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "5s",
        // Translated answers are held whole: room for the filter's 16 MiB bound.
        "per_connection_buffer_limit_bytes": 16_777_216,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": host, "port_value": url.port}}}}]}]},
    });
    if url.https {
        // The system's CA bundle, SNI for the host, and the certificate checked against it:
        // by name (a SAN matcher) and, with auto_sni/auto_san_validation, against the
        // :authority each request carries.
        let mut validation =
            json!({"trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"}});
        if !is_ip {
            if let Some(v) = validation.as_object_mut() {
                v.insert(
                    "match_typed_subject_alt_names".into(),
                    json!([{"san_type": "DNS", "matcher": {"exact": host}}]),
                );
            }
        }
        if let Some(map) = c.as_object_mut() {
            map.insert(
                "transport_socket".into(),
                json!({"name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": host,
                    "common_tls_context": {"validation_context": validation}
                }}),
            );
            map.insert(
                "typed_extension_protocol_options".into(),
                json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "upstream_http_protocol_options": {"auto_sni": true, "auto_san_validation": true},
                    "explicit_http_config": {"http_protocol_options": {}}
                }}),
            );
        }
    }
    c
}

pub fn stats_tags() -> Value {
    let prefix = r"^wasmcustom\.llm_gateway\.";
    json!([
        {"tag_name": "model_group", "regex": format!(r"{prefix}(group\.([^.]+)\.)")},
        {"tag_name": "deployment", "regex": format!(r"{prefix}group\.[^.]+\.(deployment\.([^.]+)\.)")},
        {"tag_name": "key_alias", "regex": format!(r"{prefix}(?:group\.[^.]+\.deployment\.[^.]+\.|keys\.)(key\.([^.]+)\.)")},
        {"tag_name": "status_class", "regex": format!(r"{prefix}group\.[^.]+\.deployment\.[^.]+\.key\.[^.]+\.(status\.([^.]+)\.)")},
        {"tag_name": "origin", "regex": format!(r"{prefix}group\.[^.]+\.(origin\.([^.]+)\.)")},
        {"tag_name": "error_type", "regex": format!(r"{prefix}group\.[^.]+\.origin\.[^.]+\.(type\.([^.]+)\.)")},
        {"tag_name": "reason", "regex": format!(r"{prefix}(?:keys\.key\.[^.]+\.|rate_limit_service\.)(reason\.([^.]+)\.)")},
    ])
}

/// The wasm filter's plugin config: the gateway JSON embedded, the VM's environment.
fn plugin_config(gateway_json: &Value, wasm_path: &str) -> Value {
    let mut vm_config = json!({
        "vm_id": "llm_gateway",
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": wasm_path}},
    });
    // LiteLLM's `environment_variables` become the VM's; other names come from Envoy's own.
    let key_values: serde_json::Map<String, Value> = crate::config::env::declared(gateway_json)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let from_host: Vec<String> = env_names(gateway_json)
        .into_iter()
        .filter(|n| !key_values.contains_key(n))
        .collect();
    if !from_host.is_empty() || !key_values.is_empty() {
        let mut vars = serde_json::Map::new();
        if !from_host.is_empty() {
            vars.insert("host_env_keys".into(), json!(from_host));
        }
        if !key_values.is_empty() {
            vars.insert("key_values".into(), Value::Object(key_values));
        }
        if let Some(map) = vm_config.as_object_mut() {
            map.insert("environment_variables".into(), Value::Object(vars));
        }
    }
    json!({
        "name": "llm_gateway",
        "root_id": "llm_gateway",
        "allow_on_headers_stop_iteration": true,
        // A panicked VM is replaced (after 1 s, then backing off) instead of failing every
        // later request on its worker with an empty 503 (Envoy's default, FAIL_CLOSED).
        "failure_policy": "FAIL_RELOAD",
        "vm_config": vm_config,
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": serde_json::to_string(gateway_json).unwrap_or_default()},
    })
}

/// The dynamic module's filter config: the module by name (`do_not_close`: a config reload
/// keeps the module, and with it the shared records in its memory), the same JSON as the
/// wasm plugin's, as a StringValue the module reads raw. The environment is Envoy's own.
fn module_config(gateway_json: &Value) -> Value {
    json!({
        "@type": Runtime::Native.type_url(),
        "dynamic_module_config": {"name": "llm_gateway", "do_not_close": true},
        "filter_name": "llm_gateway",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": serde_json::to_string(gateway_json).unwrap_or_default()},
    })
}

/// The filter's typed config for the chosen runtime.
fn filter_typed_config(gateway_json: &Value, opts: &RenderOptions) -> Value {
    match opts.runtime {
        Runtime::Wasm => json!({"@type": Runtime::Wasm.type_url(),
                                "config": plugin_config(gateway_json, &opts.wasm_path)}),
        Runtime::Native => module_config(gateway_json),
    }
}

/// `gateway_json` telling the filter what the rendered route sets
/// (`general_settings.envoy_route_defaults`, from `retry::route_defaults_for`), so that it
/// sends a timeout or retry header only for requests that differ.
pub fn with_route_defaults(gateway_json: &Value, config: &Config) -> Value {
    let mut out = gateway_json.clone();
    if let (Some(d), Value::Object(top)) = (crate::retry::route_defaults_for(config), &mut out) {
        let general = top
            .entry("general_settings")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(general) = general {
            general.insert(
                "envoy_route_defaults".into(),
                json!({"timeout_seconds": d.timeout_ms as f64 / 1000.0,
                       "retry_on": crate::retry::ENVOY_RETRY_ON,
                       "num_retries": d.num_retries}),
            );
        }
    }
    out
}

/// The rate-limit service's cluster: gRPC, so HTTP/2 (plaintext, as the services serve it
/// by default).
fn rate_limit_cluster(service: &crate::fleet::Service) -> Value {
    let url = Url {
        https: false,
        host: service.host.clone(),
        port: service.port,
        explicit_port: true,
        path: String::new(),
        query: String::new(),
    };
    let mut c = cluster(&service.cluster, &url);
    if let Value::Object(map) = &mut c {
        map.insert(
            "typed_extension_protocol_options".into(),
            json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }}),
        );
        map.insert("connect_timeout".into(), json!("1s"));
    }
    c
}

/// The Envoy bootstrap for a validated config (`gateway_json` is what the filter will read).
pub fn envoy_bootstrap(gateway_json: &Value, config: &Config, opts: &RenderOptions) -> Value {
    let gateway_json = &with_route_defaults(gateway_json, config);
    let mut clusters: BTreeMap<String, Value> = BTreeMap::new();
    for d in &config.deployments {
        if let Ok(url) = Url::parse(&d.api_base) {
            clusters
                .entry(d.cluster.clone())
                .or_insert_with(|| cluster(&d.cluster, &url));
        }
    }
    if let Some(service) = &config.rate_limit {
        clusters
            .entry(service.cluster.clone())
            .or_insert_with(|| rate_limit_cluster(service));
    }
    let name = opts.runtime.filter_name();
    let gateway_filter = match &opts.reloadable {
        // The filter's config is an extension config discovered from a file: editing the file
        // (atomically, by rename) reconfigures every worker without a restart.
        Some(path) => json!({"name": name, "config_discovery": {
            "config_source": {"path_config_source": {"path": path, "watched_directory": {
                "path": std::path::Path::new(path).parent().map(|p| p.display().to_string()).unwrap_or_else(|| ".".into())}},
                "resource_api_version": "V3"},
            "type_urls": [opts.runtime.type_url()]}}),
        None => json!({"name": name, "typed_config": filter_typed_config(gateway_json, opts)}),
    };
    let log_format = format!(
        "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\" %RESPONSE_CODE% %DURATION%ms \
         upstream=%UPSTREAM_HOST% llm=%FILTER_STATE({}:PLAIN)%\n",
        opts.runtime.access_record_key()
    );
    // The wasm build's stats are flat names whose segments these tags turn into labels; the
    // native module's metrics carry their labels themselves.
    let stats_config = match opts.runtime {
        Runtime::Wasm => json!({"stats_tags": stats_tags()}),
        Runtime::Native => json!({}),
    };
    // Retries the filter asks for (x-envoy-retry-on, for a group of one deployment) wait
    // what an upstream's `retry-after` says, as LiteLLM does, up to a minute; 429 is the
    // status `retriable-status-codes` means (5xx has its own retry-on word).
    // The timeout and retries most deployments take are the route's own (and the filter is
    // told so): a request that takes them sends no header for them.
    let defaults = crate::retry::route_defaults_for(config);
    let mut retry_policy = json!({"retriable_status_codes": [429], "rate_limited_retry_back_off": {
            "reset_headers": [{"name": "retry-after", "format": "SECONDS"}],
            "max_interval": "60s"}});
    let timeout = match &defaults {
        Some(d) => {
            if let Value::Object(p) = &mut retry_policy {
                p.insert("retry_on".into(), json!(crate::retry::ENVOY_RETRY_ON));
                p.insert("num_retries".into(), json!(d.num_retries));
            }
            format!("{}.{:03}s", d.timeout_ms / 1000, d.timeout_ms % 1000)
        }
        None => "0s".to_string(),
    };
    let routed = json!({"cluster_header": "x-llm-cluster", "timeout": timeout,
        "retry_policy": retry_policy});
    json!({
        "node": {"id": "llm-gateway", "cluster": "llm-gateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": opts.admin_port}}},
        "stats_config": stats_config,
        "static_resources": {
            "listeners": [{
                "name": "llm_gateway",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": opts.port}},
                "per_connection_buffer_limit_bytes": config.max_request_body_bytes.saturating_mul(2).max(1 << 20),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "llm_gateway",
                        "stream_idle_timeout": "600s",
                        "access_log": [{"name": "envoy.access_loggers.stdout", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                            "log_format": {"text_format_source": {"inline_string": log_format}}}}],
                        "route_config": {"name": "llm_routes", "virtual_hosts": [{
                            "name": "llm", "domains": ["*"],
                            // x-envoy-attempt-count on answers: Envoy's own retries of a
                            // group of one, for x-litellm-attempted-retries.
                            "include_attempt_count_in_response": true,
                            "routes": [
                                {"match": {"prefix": "/", "headers": [{"name": "x-llm-cluster", "present_match": true}]},
                                 "route": routed,
                                 "request_headers_to_remove": ["x-llm-cluster"]},
                                {"match": {"prefix": "/"}, "direct_response": {"status": 404, "body": {"inline_string":
                                    r#"{"error":{"message":"no such endpoint","type":"invalid_request_error","param":null,"code":"not_found"}}"#}},
                                 "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}]}]}]},
                        "http_filters": [gateway_filter, {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    }}]}],
            }],
            "clusters": clusters.into_values().collect::<Vec<_>>(),
        },
    })
}

/// The ECDS resource file for `--reloadable`: the filter's config as a discovery response.
pub fn ecds_resource(gateway_json: &Value, opts: &RenderOptions) -> Value {
    json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": opts.runtime.filter_name(),
            "typed_config": filter_typed_config(gateway_json, opts)
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn one_cluster_per_upstream_with_tls_for_https() {
        let gateway = json!({"model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/x", "api_base": "http://10.0.0.1:8000/v1"}},
            {"model_name": "a", "litellm_params": {"model": "openai/y", "api_base": "http://10.0.0.1:8000"}},
            {"model_name": "b", "litellm_params": {"model": "openai/z", "api_base": "https://api.example.com/v1",
                                                   "api_key": "os.environ/UPSTREAM_KEY"}}]});
        let (config, _) = parse(gateway.to_string().as_bytes(), &|_| Some("k".into()), 0).unwrap();
        let opts = RenderOptions {
            port: 4000,
            admin_port: 9901,
            wasm_path: "/x.wasm".into(),
            reloadable: None,
            runtime: Runtime::Wasm,
        };
        let out = envoy_bootstrap(&gateway, &config, &opts);
        let clusters = out["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 2);
        let tls = clusters
            .iter()
            .find(|c| c["name"] == "api.example.com:443")
            .unwrap();
        assert_eq!(tls["type"], "STRICT_DNS");
        assert_eq!(
            tls["transport_socket"]["typed_config"]["sni"],
            "api.example.com"
        );
        assert_eq!(
            tls["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
                ["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            "api.example.com"
        );
        let http = &tls["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert_eq!(http["upstream_http_protocol_options"]["auto_sni"], true);
        let plain = clusters
            .iter()
            .find(|c| c["name"] == "10.0.0.1:8000")
            .unwrap();
        assert_eq!(plain["type"], "STATIC");
        assert!(plain.get("transport_socket").is_none());
        let hcm = &out["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let plugin = &hcm["http_filters"][0]["typed_config"]["config"];
        assert_eq!(plugin["allow_on_headers_stop_iteration"], true);
        assert_eq!(plugin["failure_policy"], "FAIL_RELOAD");
        assert_eq!(
            plugin["vm_config"]["environment_variables"]["host_env_keys"],
            json!(["UPSTREAM_KEY"])
        );
        // The CLI hands both forms the gateway JSON with the route's defaults in it.
        let told = with_route_defaults(&gateway, &config);
        let ecds = ecds_resource(&told, &opts);
        assert_eq!(
            ecds["resources"][0]["typed_config"]["config"], *plugin,
            "one plugin config for both forms"
        );
        let embedded: Value =
            serde_json::from_str(plugin["configuration"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(embedded, told);
        // The route sets what most deployments take; the filter is told the same values.
        let route = &hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"];
        assert_eq!(route["timeout"], "600.000s");
        assert_eq!(route["retry_policy"]["num_retries"], 2);
        let said = &embedded["general_settings"]["envoy_route_defaults"];
        assert_eq!(said["retry_on"], route["retry_policy"]["retry_on"]);
        assert_eq!(said["timeout_seconds"], 600.0);
        let (reparsed, _) =
            parse(embedded.to_string().as_bytes(), &|_| Some("k".into()), 0).unwrap();
        assert_eq!(
            reparsed.route_defaults,
            crate::retry::route_defaults_for(&config)
        );
        assert_eq!(
            out["admin"]["address"]["socket_address"]["address"],
            "127.0.0.1"
        );
    }

    #[test]
    fn the_native_runtime_loads_the_module_by_name_with_the_same_json() {
        let gateway = json!({"model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/x", "api_base": "http://10.0.0.1:8000/v1"}}]});
        let (config, _) = parse(gateway.to_string().as_bytes(), &|_| None, 0).unwrap();
        let wasm = RenderOptions {
            port: 4000,
            admin_port: 9901,
            wasm_path: "/x.wasm".into(),
            reloadable: None,
            runtime: Runtime::Wasm,
        };
        let native = RenderOptions {
            runtime: Runtime::Native,
            ..wasm.clone()
        };
        let hcm = |out: &Value| {
            out["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                ["typed_config"]
                .clone()
        };
        let (w, n) = (
            hcm(&envoy_bootstrap(&gateway, &config, &wasm)),
            hcm(&envoy_bootstrap(&gateway, &config, &native)),
        );
        let filter = &n["http_filters"][0];
        assert_eq!(filter["name"], "envoy.filters.http.dynamic_modules");
        let typed = &filter["typed_config"];
        assert_eq!(typed["dynamic_module_config"]["name"], "llm_gateway");
        assert_eq!(typed["filter_name"], "llm_gateway");
        assert_eq!(
            typed["filter_config"]["value"],
            w["http_filters"][0]["typed_config"]["config"]["configuration"]["value"],
            "the same gateway JSON"
        );
        assert_eq!(w["route_config"], n["route_config"], "the same route");
        let format = |h: &Value| {
            h["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert!(format(&n).contains("%FILTER_STATE(llm_gateway:PLAIN)%"));
        assert!(format(&w).contains("%FILTER_STATE(wasm.llm_gateway:PLAIN)%"));
        let reloadable = RenderOptions {
            reloadable: Some("/etc/gw/ecds.yaml".into()),
            ..native.clone()
        };
        let ecds = ecds_resource(&gateway, &reloadable);
        assert_eq!(
            ecds["resources"][0]["typed_config"]["filter_name"],
            "llm_gateway"
        );
        let discovered = hcm(&envoy_bootstrap(&gateway, &config, &reloadable));
        assert_eq!(
            discovered["http_filters"][0]["config_discovery"]["type_urls"][0],
            Runtime::Native.type_url()
        );
    }

    #[test]
    fn every_table_provider_renders_its_cluster() {
        for row in crate::config::providers::OPENAI_COMPATIBLE {
            let base = row
                .default_base
                .unwrap_or("https://given.example.test/base");
            let url = Url::parse(base).unwrap();
            let gateway = json!({"model_list": [{"model_name": "m", "litellm_params": {
                "model": format!("{}/some-model", row.prefix),
                "api_base": if row.default_base.is_none() { Some(base) } else { None }}}]});
            let (config, _) = parse(gateway.to_string().as_bytes(), &|_| None, 0).unwrap();
            let d = &config.deployments[0];
            assert_eq!(d.cluster, url.host_port(), "{}", row.prefix);
            let opts = RenderOptions {
                port: 4000,
                admin_port: 9901,
                wasm_path: "/x.wasm".into(),
                reloadable: None,
                runtime: Runtime::Wasm,
            };
            let out = envoy_bootstrap(&gateway, &config, &opts);
            let cluster = &out["static_resources"]["clusters"][0];
            assert_eq!(cluster["name"], d.cluster.as_str());
            let addr = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                ["address"]["socket_address"];
            assert_eq!(
                (
                    addr["address"].as_str().unwrap(),
                    addr["port_value"].as_u64().unwrap()
                ),
                (url.host.as_str(), u64::from(url.port)),
                "{}",
                row.prefix
            );
            let sni = &cluster["transport_socket"]["typed_config"]["sni"];
            if url.https {
                assert_eq!(sni, url.host.as_str(), "{}", row.prefix);
            } else {
                assert!(sni.is_null(), "{}", row.prefix);
            }
        }
    }
}
