//! The session driven as Envoy drives it, through a recording `FakeStream` and `FakeHost`.

use super::*;
use crate::config::parse;
use crate::host::FakeHost;
use crate::metrics::StatKind;
use std::collections::{BTreeMap, HashMap};

const CONFIG: &str = r#"{
  "model_list": [
    {"model_name": "chat", "litellm_params": {"model": "hosted_vllm/a", "api_base": "http://127.0.0.1:9001/v1"}},
    {"model_name": "chat", "litellm_params": {"model": "openai/b", "api_base": "http://127.0.0.1:9002", "api_key": "up-key"}}
  ],
  "router_settings": {"routing_strategy": "simple-shuffle"},
  "general_settings": {"master_key": "sk-master"}
}"#;

fn config() -> Config {
    parse(CONFIG.as_bytes(), &|_| None, 1000).unwrap().0
}

type Pairs = Vec<(String, String)>;

/// What a shell would have done to Envoy, recorded.
#[derive(Default)]
struct FakeStream<'c> {
    request_headers: BTreeMap<String, Option<String>>,
    request_body: Vec<u8>,
    response_headers: HashMap<String, String>,
    response_body: Vec<u8>,
    reply: Option<(u16, Pairs, Vec<u8>)>,
    calls: Vec<(String, Pairs, Option<Vec<u8>>)>,
    record: Option<Vec<u8>>,
    counters: HashMap<String, i64>,
    gauges: HashMap<String, u64>,
    histograms: HashMap<String, Vec<u64>>,
    config: Option<&'c Config>,
    resumed: u32,
}

impl<'c> FakeStream<'c> {
    fn new(config: &'c Config) -> Self {
        FakeStream {
            config: Some(config),
            ..Default::default()
        }
    }

    fn name(&self, stat: Stat<'_>) -> String {
        match stat {
            Stat::Named(name) | Stat::NamedGauge(name) => name.to_string(),
            _ => stat.name(
                self.config
                    .expect("deployment stats need the configuration"),
            ),
        }
    }

    fn counter(&self, suffix: &str) -> i64 {
        self.counters
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| v)
            .sum()
    }
}

impl Stats for FakeStream<'_> {
    fn add(&mut self, stat: Stat<'_>, by: i64) {
        let name = self.name(stat);
        match stat.kind() {
            StatKind::Gauge => {
                let g = self.gauges.entry(name).or_default();
                *g = g.saturating_add_signed(by);
            }
            _ => *self.counters.entry(name).or_default() += by,
        }
    }
    fn set(&mut self, stat: Stat<'_>, value: u64) {
        let name = self.name(stat);
        self.gauges.insert(name, value);
    }
    fn record(&mut self, stat: Stat<'_>, value: u64) {
        let name = self.name(stat);
        self.histograms.entry(name).or_default().push(value);
    }
    fn define(&mut self, stat: Stat<'_>) {
        let name = self.name(stat);
        self.counters.entry(name).or_default();
    }
}

impl Stream for FakeStream<'_> {
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.request_headers
            .insert(name.to_string(), value.map(str::to_string));
    }
    fn request_body(&mut self, size: usize) -> Option<Vec<u8>> {
        assert_eq!(size, self.request_body.len());
        Some(self.request_body.clone())
    }
    fn replace_request_body(&mut self, size: usize, body: &[u8]) -> bool {
        assert_eq!(size, self.request_body.len());
        self.request_body = body.to_vec();
        true
    }
    fn response_headers(&mut self, names: &[&str], out: &mut [Option<String>]) {
        for (name, slot) in names.iter().zip(out.iter_mut()) {
            *slot = self.response_headers.get(*name).cloned();
        }
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => self
                .response_headers
                .insert(name.to_string(), v.to_string()),
            None => self.response_headers.remove(name),
        };
    }
    fn response_body(&mut self, size: usize) -> Option<Vec<u8>> {
        assert_eq!(size, self.response_body.len());
        Some(self.response_body.clone())
    }
    fn replace_response_body(&mut self, _size: usize, body: &[u8]) -> bool {
        self.response_body = body.to_vec();
        true
    }
    fn send_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
        assert!(self.reply.is_none(), "one reply per request");
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.reply = Some((status, headers, body.to_vec()));
        true
    }
    fn call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        _timeout_ms: u64,
    ) -> Option<u32> {
        if cluster == "missing" {
            return None;
        }
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.calls
            .push((cluster.to_string(), headers, body.map(<[u8]>::to_vec)));
        Some(self.calls.len() as u32)
    }
    fn resume_request(&mut self) {
        self.resumed += 1;
    }
    fn set_access_record(&mut self, record: &[u8]) {
        assert!(self.record.is_none(), "one access-log record per request");
        self.record = Some(record.to_vec());
    }
    fn response_code_details(&mut self) -> Option<Vec<u8>> {
        Some(b"via_upstream".to_vec())
    }
    fn log(&mut self, _level: LogLevel, _message: &str) {}
}

const CHAT: &[u8] = br#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#;
const ANSWER: &[u8] = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

/// A chat request up to its forwarding: the session and the stream it edited.
fn send_chat<'c>(
    config: &'c Config,
    host: &mut FakeHost,
    body: &[u8],
) -> (Session, FakeStream<'c>, Flow) {
    send_chat_as(config, host, body, "sk-master")
}

/// `send_chat` with another caller's key.
fn send_chat_as<'c>(
    config: &'c Config,
    host: &mut FakeHost,
    body: &[u8],
    key: &str,
) -> (Session, FakeStream<'c>, Flow) {
    let mut session = Session::new();
    let mut stream = FakeStream::new(config);
    let authorization = format!("Bearer {key}");
    let headers: [(&str, &[u8]); 5] = [
        (":method", b"POST"),
        (":path", b"/v1/chat/completions"),
        ("authorization", authorization.as_bytes()),
        ("content-type", b"application/json"),
        ("x-envoy-max-retries", b"9"),
    ];
    let head =
        session.on_request_headers(Some(config), host, &mut stream, headers.into_iter(), false);
    assert_eq!(head, Flow::Pause, "the body is read before routing");
    stream.request_body = body.to_vec();
    let flow = session.on_request_body(Some(config), host, &mut stream, body.len(), true);
    (session, stream, flow)
}

#[test]
fn a_request_is_pointed_at_a_deployment_and_its_answer_recorded() {
    let config = config();
    let mut host = FakeHost::new(7);
    let (mut session, mut stream, flow) = send_chat(&config, &mut host, CHAT);
    assert_eq!(flow, Flow::Continue);
    let h = &stream.request_headers;
    assert_eq!(
        h["authorization"], None,
        "the client's key never goes upstream"
    );
    assert_eq!(
        h["x-envoy-max-retries"].is_some(),
        h.contains_key("x-envoy-retry-on")
    );
    let cluster = h["x-llm-cluster"].clone().unwrap();
    let deployment = config
        .deployments
        .iter()
        .position(|d| d.cluster == cluster)
        .unwrap();
    assert_eq!(
        stream.gauges.values().sum::<u64>(),
        1,
        "one request in flight"
    );

    stream.response_headers = [(":status", "200"), ("content-type", "application/json")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let head = session.on_response_headers(Some(&config), &mut host, &mut stream, false);
    // The answer is held whole: its cost goes in its headers.
    assert_eq!(head, Flow::Pause);
    stream.response_body = ANSWER.to_vec();
    host.now_ms += 40;
    session.on_response_body(Some(&config), &mut host, &mut stream, ANSWER.len(), true);
    session.on_log(Some(&config), &mut host, &mut stream);

    assert_eq!(stream.counter(".status.2xx.requests"), 1);
    assert_eq!(stream.counter(".prompt_tokens"), 3);
    assert_eq!(stream.counter(".completion_tokens"), 2);
    assert_eq!(
        stream.gauges.values().sum::<u64>(),
        0,
        "in flight back to 0"
    );
    let duration = stream.name(Stat::Duration { deployment });
    assert_eq!(stream.histograms[&duration], vec![40]);
    let record: serde_json::Value = serde_json::from_slice(&stream.record.unwrap()).unwrap();
    assert_eq!(record["prompt_tokens"], 3);
    assert_eq!(record["key_alias"], "master");
    assert!(stream.reply.is_none());
}

#[test]
fn a_failed_deployment_hands_over_through_a_callout() {
    let config = config();
    let mut host = FakeHost::new(3);
    let (mut session, mut stream, _) = send_chat(&config, &mut host, CHAT);
    let first = stream.request_headers["x-llm-cluster"].clone().unwrap();
    stream
        .response_headers
        .insert(":status".into(), "503".into());
    let head = session.on_response_headers(Some(&config), &mut host, &mut stream, false);
    assert_eq!(head, Flow::Pause, "the failed answer is held");
    let (cluster, headers, body) = stream.calls.pop().unwrap();
    assert_ne!(cluster, first, "the other deployment");
    assert!(headers.iter().any(|(k, v)| k == ":method" && v == "POST"));
    assert!(body.is_some_and(|b| !b.is_empty()));
    assert_eq!(stream.counter(".failovers"), 1);
    // The failed body waits while the callout runs.
    stream.response_body = b"busy".to_vec();
    assert_eq!(
        session.on_response_body(Some(&config), &mut host, &mut stream, 4, true),
        Flow::Pause
    );
    let answer = CalloutAnswer {
        status: Some(200),
        content_type: Some("application/json"),
        body: ANSWER.to_vec(),
    };
    session.on_callout(Some(&config), &mut host, &mut stream, 1, answer);
    let (status, headers, body) = stream.reply.clone().unwrap();
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "x-litellm-attempted-fallbacks"
            || k == "x-litellm-model-id" && !v.is_empty()));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "ok");
    session.on_log(Some(&config), &mut host, &mut stream);
    assert_eq!(stream.counter(".status.2xx.requests"), 1, "recorded once");
    assert_eq!(stream.counter(".status.5xx.requests"), 0);
    assert_eq!(
        stream.gauges.values().sum::<u64>(),
        0,
        "{:?}",
        stream.gauges
    );
}

#[test]
fn a_callout_envoy_cannot_send_is_passed_over() {
    let mut config = config();
    for d in &mut config.deployments {
        d.cluster = "missing".into();
    }
    let mut host = FakeHost::new(3);
    let (mut session, mut stream, _) = send_chat(&config, &mut host, CHAT);
    stream
        .response_headers
        .insert(":status".into(), "503".into());
    session.on_response_headers(Some(&config), &mut host, &mut stream, false);
    assert!(
        stream.calls.is_empty(),
        "nothing to wait for: the upstream's 503 goes out"
    );
    stream.response_body = b"{}".to_vec();
    let body = session.on_response_body(Some(&config), &mut host, &mut stream, 2, true);
    assert_eq!(body, Flow::Continue);
    session.on_log(Some(&config), &mut host, &mut stream);
    assert_eq!(stream.counter(".status.5xx.requests"), 1);
}

#[test]
fn refusals_are_answered_locally_and_counted() {
    let config = config();
    let mut host = FakeHost::new(1);
    let mut session = Session::new();
    let mut stream = FakeStream::new(&config);
    let headers: [(&str, &[u8]); 2] = [(":method", b"POST"), (":path", b"/v1/chat/completions")];
    let flow = session.on_request_headers(
        Some(&config),
        &mut host,
        &mut stream,
        headers.into_iter(),
        false,
    );
    assert_eq!(flow, Flow::Pause);
    let (status, headers, body) = stream.reply.clone().unwrap();
    assert_eq!(status, 401);
    assert!(headers.contains(&("content-type".into(), "application/json".into())));
    assert!(String::from_utf8_lossy(&body).contains("\"error\""));
    assert_eq!(
        stream.counter(".origin.gateway.type.authentication_error.errors"),
        1
    );
    // The response events see the gateway's own reply and leave it alone.
    let after = session.on_response_headers(Some(&config), &mut host, &mut stream, false);
    assert_eq!(after, Flow::Continue);
    session.on_log(Some(&config), &mut host, &mut stream);
    assert!(stream.record.is_none());
}

#[test]
fn without_a_configuration_every_request_gets_a_503() {
    let mut host = FakeHost::new(1);
    let mut session = Session::new();
    let mut stream = FakeStream::default();
    let headers: [(&str, &[u8]); 1] = [(":method", b"GET")];
    session.on_request_headers(None, &mut host, &mut stream, headers.into_iter(), true);
    assert_eq!(stream.reply.unwrap().0, 503);
}

#[test]
fn health_probes_every_deployment_and_answers_once_all_are_back() {
    let config = config();
    let mut host = FakeHost::new(1);
    let mut session = Session::new();
    let mut stream = FakeStream::new(&config);
    let headers: [(&str, &[u8]); 3] = [
        (":method", b"GET"),
        (":path", b"/health"),
        ("authorization", b"Bearer sk-master"),
    ];
    let flow = session.on_request_headers(
        Some(&config),
        &mut host,
        &mut stream,
        headers.into_iter(),
        true,
    );
    assert_eq!(flow, Flow::Pause);
    assert_eq!(stream.calls.len(), 2);
    let ok = CalloutAnswer {
        status: Some(200),
        content_type: None,
        body: Vec::new(),
    };
    session.on_callout(Some(&config), &mut host, &mut stream, 1, ok);
    assert!(stream.reply.is_none(), "one probe still out");
    let failed = CalloutAnswer {
        status: None,
        content_type: None,
        body: Vec::new(),
    };
    session.on_callout(Some(&config), &mut host, &mut stream, 2, failed);
    let (_, _, body) = stream.reply.unwrap();
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["healthy_count"], 1);
    assert_eq!(report["unhealthy_count"], 1);
}

#[test]
fn a_fan_out_answers_every_model_in_order() {
    let config = config();
    let mut host = FakeHost::new(5);
    let body = br#"{"model":"chat, nope","messages":[{"role":"user","content":"hi"}]}"#;
    let (mut session, mut stream, flow) = send_chat(&config, &mut host, body);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(
        stream.calls.len(),
        1,
        "the unknown model is answered at once"
    );
    let answer = CalloutAnswer {
        status: Some(200),
        content_type: Some("application/json"),
        body: ANSWER.to_vec(),
    };
    session.on_callout(Some(&config), &mut host, &mut stream, 1, answer);
    let (status, _, body) = stream.reply.clone().unwrap();
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list[0]["choices"][0]["message"]["content"], "ok");
    assert!(list[1]["error"].is_object());
    session.on_log(Some(&config), &mut host, &mut stream);
    assert_eq!(stream.counter(".status.2xx.requests"), 1);
}

#[test]
fn the_ticker_defines_rare_counters_and_sets_limits_once() {
    let config = parse(
        br#"{"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m",
            "api_base": "http://127.0.0.1:1", "rpm": 60}}]}"#,
        &|_| None,
        0,
    )
    .unwrap()
    .0;
    let mut host = FakeHost::new(1);
    crate::router::precreate(&config, &mut host);
    let mut stream = FakeStream::new(&config);
    let mut ticker = Ticker::new(&config, &mut stream);
    assert_eq!(
        stream.counters.len(),
        3,
        "cooldowns, failovers, fallbacks at 0"
    );
    ticker.tick(&config, &mut host, &mut stream, &mut SentCalls::default());
    let limit = stream.name(Stat::DeploymentGauge {
        deployment: 0,
        name: "rpm_limit",
    });
    assert_eq!(stream.gauges[&limit], 60);
    stream.gauges.clear();
    ticker.tick(&config, &mut host, &mut stream, &mut SentCalls::default());
    assert!(stream.gauges.is_empty(), "nothing changed: nothing set");
}

/// Two deployments with rpm 2 each behind a fleet's rate-limit service.
fn fleet_config(mode: &str) -> Config {
    let json = format!(
        r#"{{"model_list": [
          {{"model_name": "chat", "litellm_params": {{"model": "openai/a", "api_base": "http://10.0.0.1:8000", "rpm": 2}}, "model_info": {{"id": "a"}}}},
          {{"model_name": "chat", "litellm_params": {{"model": "openai/b", "api_base": "http://10.0.0.2:8000", "rpm": 2}}, "model_info": {{"id": "b"}}}}],
         "general_settings": {{"master_key": "sk-master", "rate_limit_service": {{"address": "10.0.0.9:8081", "failure_mode": "{mode}", "instances": 2}}}}}}"#
    );
    crate::config::parse(json.as_bytes(), &|_| None, 0)
        .unwrap()
        .0
}

fn rls_answer(code: u8) -> CalloutAnswer<'static> {
    CalloutAnswer {
        status: Some(200),
        content_type: Some("application/grpc"),
        body: vec![0, 0, 0, 0, 2, 0x08, code],
    }
}

/// The deployment id the last call to the service asked about.
fn asked_about(stream: &FakeStream<'_>) -> String {
    let (cluster, headers, body) = stream.calls.last().unwrap();
    assert_eq!(cluster, "10.0.0.9:8081");
    assert!(headers
        .iter()
        .any(|(k, v)| k == ":path" && v.ends_with("/ShouldRateLimit")));
    let body = body.as_deref().unwrap();
    String::from_utf8_lossy(&body[body.len() - 1..]).into_owned()
}

#[test]
fn the_fleet_admits_before_sending_and_a_full_deployment_spills_to_its_sibling() {
    let config = fleet_config("local");
    let mut host = FakeHost::new(5);
    let (mut session, mut stream, flow) = send_chat(&config, &mut host, CHAT);
    assert_eq!(flow, Flow::Pause, "held for the service's answer");
    assert!(!stream.request_headers.contains_key("x-llm-cluster"));
    let first = asked_about(&stream);
    // OVER_LIMIT: the other deployment is asked, then admitted and the request resumed.
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(2));
    let second = asked_about(&stream);
    assert_ne!(first, second);
    assert_eq!(stream.resumed, 0);
    session.on_callout(Some(&config), &mut host, &mut stream, 2, rls_answer(1));
    assert_eq!(stream.resumed, 1);
    let cluster = stream.request_headers["x-llm-cluster"].clone().unwrap();
    assert_eq!(
        cluster,
        format!("10.0.0.{}:8000", if second == "a" { 1 } else { 2 })
    );
    assert_eq!(stream.counter(".fleet_over_limit"), 1);
    session.on_log(Some(&config), &mut host, &mut stream);

    // The full one is now skipped without a call; once both are full: 429, no call.
    let (_, stream, _) = send_chat(&config, &mut host, CHAT);
    assert_eq!(asked_about(&stream), second);
    let (mut session, mut stream, _) = send_chat(&config, &mut host, CHAT);
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(2));
    let (status, headers, _) = stream.reply.clone().unwrap();
    assert_eq!(status, 429);
    assert!(headers.iter().any(|(k, _)| k == "retry-after"));
    let (_, stream, _) = send_chat(&config, &mut host, CHAT);
    assert!(stream.calls.is_empty());
    assert_eq!(stream.reply.as_ref().unwrap().0, 429);
}

#[test]
fn a_service_that_does_not_answer_applies_the_failure_mode() {
    // local: routed again at once, held to rpm / instances = 1 per deployment here.
    let config = fleet_config("local");
    let mut host = FakeHost::new(5);
    let (mut session, mut stream, _) = send_chat(&config, &mut host, CHAT);
    let unanswered = CalloutAnswer {
        status: None,
        content_type: None,
        body: Vec::new(),
    };
    session.on_callout(Some(&config), &mut host, &mut stream, 1, unanswered);
    assert_eq!(stream.resumed, 1);
    assert_eq!(stream.calls.len(), 1, "no second call while it is down");
    assert!(stream.request_headers.contains_key("x-llm-cluster"));
    assert_eq!(stream.counter("reason.unreachable.failures"), 1);
    let statuses: Vec<Option<u16>> = (0..3)
        .map(|_| {
            let (_, stream, flow) = send_chat(&config, &mut host, CHAT);
            assert!(stream.calls.is_empty());
            (flow == Flow::Pause).then(|| stream.reply.as_ref().unwrap().0)
        })
        .collect();
    assert_eq!(
        statuses,
        vec![None, Some(429), Some(429)],
        "1 + 1 of 2 × rpm 2 / 2"
    );

    // deny: 503, and the key's and deployment's counts are given back.
    let config = fleet_config("deny");
    let mut host = FakeHost::new(5);
    let (mut session, mut stream, _) = send_chat(&config, &mut host, CHAT);
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(0));
    let (status, _, body) = stream.reply.clone().unwrap();
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("rate_limit_service_unavailable"));
    assert_eq!(stream.counter("reason.error.failures"), 1);
    assert_eq!(stream.resumed, 0);
}

#[test]
fn a_client_that_leaves_while_the_service_is_asked_gives_its_slot_back() {
    let config = fleet_config("local");
    let mut host = FakeHost::new(5);
    // More requests than the 2 × rpm 2 slots: each left gives its slot back.
    for _ in 0..6 {
        let (mut session, mut stream, flow) = send_chat(&config, &mut host, CHAT);
        assert_eq!(flow, Flow::Pause);
        assert_eq!(stream.calls.len(), 1, "asked, never refused locally");
        session.on_log(Some(&config), &mut host, &mut stream);
    }
}

/// Ten deployments with rpm 1, and a key with rpm_limit 2, behind a fleet's service.
fn fleet_config_with_key() -> Config {
    let deployments: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"model_name": "chat", "litellm_params": {{"model": "openai/m", "api_base": "http://10.0.1.{i}:8000", "rpm": 1}}, "model_info": {{"id": "d{i}"}}}}"#))
        .collect();
    let json = format!(
        r#"{{"model_list": [{}],
         "general_settings": {{"master_key": "sk-master", "virtual_keys": [{{"key": "sk-k", "rpm_limit": 2}}],
           "rate_limit_service": {{"address": "10.0.0.9:8081", "instances": 2}}}}}}"#,
        deployments.join(",")
    );
    crate::config::parse(json.as_bytes(), &|_| None, 0)
        .unwrap()
        .0
}

fn call_body(stream: &FakeStream<'_>, n: usize) -> Vec<u8> {
    stream.calls[n].2.clone().unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_key_with_rpm_limit_is_admitted_once_fleet_wide_before_its_deployment() {
    let config = fleet_config_with_key();
    let mut host = FakeHost::new(5);
    let (mut session, mut stream, flow) = send_chat_as(&config, &mut host, CHAT, "sk-k");
    assert_eq!(flow, Flow::Pause);
    // The key's descriptor first, with its own limit (2 per minute), never the key itself.
    let key_call = call_body(&stream, 0);
    assert!(contains(&key_call, b"\x0a\x03key\x12\x13static-"));
    assert!(
        contains(&key_call, b"\x12\x04\x08\x02\x10\x02"),
        "limit 2 per MINUTE"
    );
    assert!(!contains(&key_call, b"sk-k"));
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(1));
    assert_eq!(stream.resumed, 0, "its deployment is asked next");
    assert!(contains(&call_body(&stream, 1), b"deployment"));
    // The deployment is full: the sibling is asked, and the key is not counted again.
    session.on_callout(Some(&config), &mut host, &mut stream, 2, rls_answer(2));
    assert_eq!(stream.calls.len(), 3);
    assert!(contains(&call_body(&stream, 2), b"deployment"));
    session.on_callout(Some(&config), &mut host, &mut stream, 3, rls_answer(1));
    assert_eq!(stream.resumed, 1);
    session.on_log(Some(&config), &mut host, &mut stream);

    // The fleet says the key is used up: 429 until the minute ends, and this Envoy stops
    // asking for it.
    let (mut session, mut stream, _) = send_chat_as(&config, &mut host, CHAT, "sk-k");
    assert!(contains(&call_body(&stream, 0), b"key"));
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(2));
    let (status, headers, body) = stream.reply.clone().unwrap();
    assert_eq!(status, 429);
    let retry = host.now_ms / 1000 % 60;
    let expected = (60 - retry).to_string();
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "retry-after" && *v == expected),
        "{headers:?}: retry when the minute ends"
    );
    assert!(String::from_utf8_lossy(&body).contains("rate_limit_exceeded"));
    assert_eq!(stream.calls.len(), 1, "no deployment was asked");
    let (_, stream, _) = send_chat_as(&config, &mut host, CHAT, "sk-k");
    assert!(stream.calls.is_empty());
    assert_eq!(stream.reply.as_ref().unwrap().0, 429);
    // The master key has no rpm_limit: straight to its deployment.
    let (_, stream, _) = send_chat(&config, &mut host, CHAT);
    assert!(contains(&call_body(&stream, 0), b"deployment"));
}

#[test]
fn a_key_the_service_cannot_count_falls_back_to_its_share() {
    // local mode, 2 instances: rpm_limit 2 is 1 on this Envoy while the service is down.
    let json = r#"{"model_list": [{"model_name": "chat", "litellm_params": {"model": "openai/m", "api_base": "http://10.0.1.1:8000"}}],
        "general_settings": {"master_key": "sk-master", "virtual_keys": [{"key": "sk-k", "rpm_limit": 2}],
          "rate_limit_service": {"address": "10.0.0.9:8081", "instances": 2}}}"#;
    let config = crate::config::parse(json.as_bytes(), &|_| None, 0)
        .unwrap()
        .0;
    let mut host = FakeHost::new(5);
    let (mut session, mut stream, _) = send_chat_as(&config, &mut host, CHAT, "sk-k");
    let unanswered = CalloutAnswer {
        status: None,
        content_type: None,
        body: Vec::new(),
    };
    session.on_callout(Some(&config), &mut host, &mut stream, 1, unanswered);
    assert_eq!(stream.resumed, 1, "sent: its key's one request here");
    let (_, stream, _) = send_chat_as(&config, &mut host, CHAT, "sk-k");
    assert!(stream.calls.is_empty());
    assert_eq!(stream.reply.as_ref().unwrap().0, 429);
}

#[test]
fn a_request_that_would_ask_more_than_max_asks_times_gets_429_not_an_unasked_send() {
    let config = fleet_config_with_key();
    let mut host = FakeHost::new(5);
    let (mut session, mut stream, _) = send_chat(&config, &mut host, CHAT);
    let mut token = 1;
    while stream.reply.is_none() && stream.resumed == 0 {
        session.on_callout(Some(&config), &mut host, &mut stream, token, rls_answer(2));
        token += 1;
    }
    assert_eq!(stream.resumed, 0, "never sent unadmitted");
    assert_eq!(stream.calls.len(), 8, "MAX_ASKS calls, of ten deployments");
    let (status, headers, _) = stream.reply.clone().unwrap();
    assert_eq!(status, 429);
    assert!(headers.iter().any(|(k, _)| k == "retry-after"));
}

#[test]
fn a_body_less_pass_through_is_admitted_on_its_key() {
    let json = r#"{"model_list": [{"model_name": "v", "litellm_params": {"model": "hosted_vllm/m", "api_base": "http://10.0.1.1:8000", "rpm": 5}}],
        "general_settings": {"master_key": "sk-master", "virtual_keys": [{"key": "sk-k", "rpm_limit": 2}],
          "rate_limit_service": {"address": "10.0.0.9:8081", "instances": 2}}}"#;
    let config = crate::config::parse(json.as_bytes(), &|_| None, 0)
        .unwrap()
        .0;
    let mut host = FakeHost::new(5);
    let get = |host: &mut FakeHost| {
        let mut session = Session::new();
        let mut stream = FakeStream::new(&config);
        let headers: [(&str, &[u8]); 3] = [
            (":method", b"GET"),
            (":path", b"/vllm/v1/models"),
            ("authorization", b"Bearer sk-k"),
        ];
        let flow =
            session.on_request_headers(Some(&config), host, &mut stream, headers.into_iter(), true);
        (session, stream, flow)
    };
    let (mut session, mut stream, flow) = get(&mut host);
    assert_eq!(flow, Flow::Pause, "held for the key's admission");
    assert_eq!(stream.calls.len(), 1);
    assert!(contains(&call_body(&stream, 0), b"key"));
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(1));
    assert_eq!(stream.resumed, 1);
    assert_eq!(stream.calls.len(), 1, "its deployment is not asked");
    assert!(stream.request_headers.contains_key("x-llm-cluster"));
    session.on_log(Some(&config), &mut host, &mut stream);

    // Over the key's limit fleet-wide: 429, and nothing is sent.
    let (mut session, mut stream, _) = get(&mut host);
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(2));
    assert_eq!(stream.reply.as_ref().unwrap().0, 429);
    assert_eq!(stream.resumed, 0);

    // The service down in `local` mode: the key's share here (2 / 2 = 1) holds.
    let mut host = FakeHost::new(5);
    let (mut session, mut stream, _) = get(&mut host);
    let unanswered = CalloutAnswer {
        status: None,
        content_type: None,
        body: Vec::new(),
    };
    session.on_callout(Some(&config), &mut host, &mut stream, 1, unanswered);
    assert_eq!(stream.resumed, 1, "its one request here");
    let (_, stream, _) = get(&mut host);
    assert!(stream.calls.is_empty());
    assert_eq!(stream.reply.as_ref().unwrap().0, 429);
}

/// The upstream's JSON answer, saying `total` tokens, through to the end of the request.
fn answer_with_total_tokens(
    config: &Config,
    host: &mut FakeHost,
    session: &mut Session,
    stream: &mut FakeStream<'_>,
    total: u64,
) {
    let answer = String::from_utf8_lossy(ANSWER)
        .replace(r#""total_tokens":5"#, &format!(r#""total_tokens":{total}"#));
    stream.response_headers = [(":status", "200"), ("content-type", "application/json")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    session.on_response_headers(Some(config), host, stream, false);
    stream.response_body = answer.as_bytes().to_vec();
    session.on_response_body(Some(config), host, stream, answer.len(), true);
    session.on_log(Some(config), host, stream);
}

/// The tick's calls, kept.
#[derive(Default)]
struct SentCalls(Vec<(String, Vec<u8>)>);

impl super::TickCalls for SentCalls {
    fn send(
        &mut self,
        cluster: &str,
        _headers: &[(&str, &str)],
        body: &[u8],
        _timeout_ms: u64,
    ) -> bool {
        self.0.push((cluster.to_string(), body.to_vec()));
        true
    }
}

#[test]
fn a_deployment_with_tpm_is_charged_its_estimate_first_and_the_rest_reported_by_the_tick() {
    let json = r#"{"model_list": [
        {"model_name": "chat", "litellm_params": {"model": "openai/a", "api_base": "http://10.0.0.1:8000", "rpm": 10, "tpm": 1000}, "model_info": {"id": "a"}},
        {"model_name": "chat", "litellm_params": {"model": "openai/b", "api_base": "http://10.0.0.2:8000", "tpm": 1000}, "model_info": {"id": "b"}}],
        "router_settings": {"routing_strategy": "simple-shuffle"},
        "general_settings": {"master_key": "sk-master", "rate_limit_service": {"address": "10.0.0.9:8081", "instances": 2}}}"#;
    let config = crate::config::parse(json.as_bytes(), &|_| None, 0)
        .unwrap()
        .0;
    let mut host = FakeHost::new(5);
    let (mut session, mut stream, _) = send_chat(&config, &mut host, CHAT);
    let mut asked = vec![];
    let mut token = 1;
    // rpm (for a), then tpm; the tokens call charges the prompt estimate as its hits.
    while stream.resumed == 0 {
        let body = call_body(&stream, token as usize - 1);
        asked.push(if contains(&body, b"deployment_tpm") {
            "tpm"
        } else {
            "rpm"
        });
        session.on_callout(Some(&config), &mut host, &mut stream, token, rls_answer(1));
        token += 1;
    }
    assert_eq!(asked.last(), Some(&"tpm"));
    let tokens_call = call_body(&stream, asked.len() - 1);
    let (&estimate, rest) = tokens_call.split_last().unwrap();
    assert_eq!(
        rest.last(),
        Some(&0x18),
        "hits_addend = the prompt estimate"
    );
    assert!(estimate > 0 && estimate < 100);
    // The answer says 100 tokens: the tick reports the 100 - estimate not yet charged, once.
    answer_with_total_tokens(&config, &mut host, &mut session, &mut stream, 100);
    let mut ticker = Ticker::new(&config, &mut stream);
    let mut sent = SentCalls::default();
    ticker.tick(&config, &mut host, &mut stream, &mut sent);
    assert_eq!(sent.0.len(), 1, "one report");
    let (cluster, report) = &sent.0[0];
    assert_eq!(cluster, "10.0.0.9:8081");
    assert!(contains(report, b"deployment_tpm"));
    assert!(report.ends_with(&[0x18, 100 - estimate]), "{report:?}");
    let mut again = SentCalls::default();
    ticker.tick(&config, &mut host, &mut stream, &mut again);
    assert!(again.0.is_empty());

    // A tpm answer that says OVER_LIMIT spends the deployment's tokens here: the sibling next.
    let (mut session, mut stream, _) = send_chat(&config, &mut host, CHAT);
    let mut over = false;
    let mut token = 1;
    while stream.resumed == 0 && stream.reply.is_none() {
        let body = call_body(&stream, token as usize - 1);
        let tpm = contains(&body, b"deployment_tpm");
        let code = if tpm && !over {
            over = true;
            2
        } else {
            1
        };
        session.on_callout(
            Some(&config),
            &mut host,
            &mut stream,
            token,
            rls_answer(code),
        );
        token += 1;
    }
    assert!(over);
    assert_eq!(stream.resumed, 1, "sent to the other deployment");
    assert_eq!(stream.counter(".fleet_over_limit"), 1);
}

#[test]
fn a_key_with_tpm_limit_is_charged_its_estimate_once_and_over_it_gets_429() {
    let json = r#"{"model_list": [{"model_name": "chat", "litellm_params": {"model": "openai/m", "api_base": "http://10.0.1.1:8000"}}],
        "general_settings": {"master_key": "sk-master", "virtual_keys": [{"key": "sk-k", "tpm_limit": 1000}],
          "rate_limit_service": {"address": "10.0.0.9:8081", "instances": 2}}}"#;
    let config = crate::config::parse(json.as_bytes(), &|_| None, 0)
        .unwrap()
        .0;
    let mut host = FakeHost::new(5);
    let (mut session, mut stream, flow) = send_chat_as(&config, &mut host, CHAT, "sk-k");
    assert_eq!(flow, Flow::Pause);
    // One call, on the key's tokens, with its own limit (1000 per MINUTE) and the estimate.
    assert_eq!(stream.calls.len(), 1);
    let call = call_body(&stream, 0);
    assert!(contains(&call, b"\x0a\x07key_tpm\x12\x13static-"));
    assert!(
        contains(&call, b"\x12\x05\x08\xe8\x07\x10\x02"),
        "limit 1000 per MINUTE"
    );
    let (&estimate, rest) = call.split_last().unwrap();
    assert_eq!(rest.last(), Some(&0x18));
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(1));
    assert_eq!(stream.resumed, 1, "no deployment limit: sent");
    // The answer's 100 tokens: the tick reports 100 - estimate for the key.
    answer_with_total_tokens(&config, &mut host, &mut session, &mut stream, 100);
    let mut ticker = Ticker::new(&config, &mut stream);
    let mut sent = SentCalls::default();
    ticker.tick(&config, &mut host, &mut stream, &mut sent);
    assert_eq!(sent.0.len(), 1, "one report, for the key");
    assert!(contains(&sent.0[0].1, b"key_tpm"));
    assert!(sent.0[0].1.ends_with(&[0x18, 100 - estimate]));

    // Over the key's tpm_limit fleet-wide: 429, and refused here without a call after.
    let (mut session, mut stream, _) = send_chat_as(&config, &mut host, CHAT, "sk-k");
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(2));
    let (status, _, body) = stream.reply.clone().unwrap();
    assert_eq!(status, 429);
    assert!(String::from_utf8_lossy(&body).contains("tpm_limit"));
    let (_, stream, _) = send_chat_as(&config, &mut host, CHAT, "sk-k");
    assert!(stream.calls.is_empty());
    assert_eq!(stream.reply.as_ref().unwrap().0, 429);
}

#[test]
fn a_key_with_max_budget_is_charged_its_estimate_first_and_its_cost_reported_after() {
    let json = r#"{"model_list": [{"model_name": "chat", "litellm_params": {"model": "openai/m", "api_base": "http://10.0.1.1:8000",
          "input_cost_per_token": 0.0001, "output_cost_per_token": 0.001}}],
        "general_settings": {"master_key": "sk-master", "virtual_keys": [{"key": "sk-k", "max_budget": 0.01}],
          "rate_limit_service": {"address": "10.0.0.9:8081", "instances": 2}}}"#;
    let config = crate::config::parse(json.as_bytes(), &|_| None, 0)
        .unwrap()
        .0;
    let mut host = FakeHost::new(5);
    crate::router::precreate(&config, &mut host);
    let (mut session, mut stream, flow) = send_chat_as(&config, &mut host, CHAT, "sk-k");
    assert_eq!(flow, Flow::Pause);
    // One call, on the key's budget for its period (0: no budget_duration), with the budget
    // as its limit (100 units of 0.0001 USD per YEAR).
    assert_eq!(stream.calls.len(), 1);
    let call = call_body(&stream, 0);
    assert!(contains(&call, b"\x0a\x0akey_budget\x12\x13static-"));
    assert!(contains(&call, b"\x0a\x0dbudget_period\x12\x010"));
    assert!(
        contains(&call, b"\x12\x04\x08\x64\x10\x06"),
        "limit 100 per YEAR"
    );
    // Its estimate at the input price (0.0001 a token: a unit a token) is charged.
    let (&charged, rest) = call.split_last().unwrap();
    assert_eq!(rest.last(), Some(&0x18));
    assert!((1..23).contains(&charged), "{charged}");
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(1));
    assert_eq!(stream.resumed, 1, "sent");
    // 3 prompt + 2 completion tokens: 0.0023 USD, 23 units; the tick reports those not charged.
    answer_with_total_tokens(&config, &mut host, &mut session, &mut stream, 5);
    let mut ticker = Ticker::new(&config, &mut stream);
    let mut sent = SentCalls::default();
    ticker.tick(&config, &mut host, &mut stream, &mut sent);
    assert_eq!(sent.0.len(), 1, "one report, for the key's budget");
    assert!(contains(&sent.0[0].1, b"key_budget"));
    assert!(sent.0[0].1.ends_with(&[0x18, 23 - charged]));

    // Spent fleet-wide: LiteLLM's budget error, and refused here without a call after.
    let (mut session, mut stream, _) = send_chat_as(&config, &mut host, CHAT, "sk-k");
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(2));
    let (status, _, body) = stream.reply.clone().unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("budget_exceeded"));
    assert!(String::from_utf8_lossy(&body).contains("across the gateway fleet"));
    let (_, stream, _) = send_chat_as(&config, &mut host, CHAT, "sk-k");
    assert!(stream.calls.is_empty());
    assert_eq!(stream.reply.as_ref().unwrap().0, 400);
}

#[test]
fn a_fan_out_of_a_key_with_rpm_limit_is_admitted_once_for_all_its_arms() {
    let json = r#"{"model_list": [
        {"model_name": "a", "litellm_params": {"model": "openai/a", "api_base": "http://10.0.1.1:8000"}},
        {"model_name": "b", "litellm_params": {"model": "openai/b", "api_base": "http://10.0.1.2:8000"}}],
        "general_settings": {"master_key": "sk-master", "virtual_keys": [{"key": "sk-k", "rpm_limit": 3}],
          "rate_limit_service": {"address": "10.0.0.9:8081", "instances": 2}}}"#;
    let config = crate::config::parse(json.as_bytes(), &|_| None, 0)
        .unwrap()
        .0;
    let mut host = FakeHost::new(5);
    let body = br#"{"model":"a,b","messages":[{"role":"user","content":"hi"}]}"#;
    let (mut session, mut stream, flow) = send_chat_as(&config, &mut host, body, "sk-k");
    assert_eq!(flow, Flow::Pause);
    // One call, for both arms: hits_addend 2; no arm is sent before the answer.
    assert_eq!(stream.calls.len(), 1);
    let call = call_body(&stream, 0);
    assert!(contains(&call, b"\x0a\x03key"));
    assert!(call.ends_with(b"\x18\x02"), "{call:?}");
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(1));
    assert_eq!(stream.calls.len(), 3, "then both arms go out");
    assert_eq!(stream.resumed, 0, "a fan-out is answered, not resumed");
    session.on_log(Some(&config), &mut host, &mut stream);

    // OVER_LIMIT: 429 for the whole fan-out, nothing sent, the key full here.
    let (mut session, mut stream, _) = send_chat_as(&config, &mut host, body, "sk-k");
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(2));
    assert_eq!(stream.calls.len(), 1);
    assert_eq!(stream.reply.as_ref().unwrap().0, 429);
    let (_, stream, _) = send_chat_as(&config, &mut host, body, "sk-k");
    assert!(stream.calls.is_empty());
}

#[test]
fn a_fan_out_of_a_key_with_tpm_limit_and_max_budget_is_admitted_on_each_for_all_its_arms() {
    let json = r#"{"model_list": [
        {"model_name": "a", "litellm_params": {"model": "openai/a", "api_base": "http://10.0.1.1:8000", "input_cost_per_token": 0.0001}},
        {"model_name": "b", "litellm_params": {"model": "openai/b", "api_base": "http://10.0.1.2:8000", "input_cost_per_token": 0.0001}}],
        "general_settings": {"master_key": "sk-master", "virtual_keys": [{"key": "sk-k", "tpm_limit": 1000, "max_budget": 1.0}],
          "rate_limit_service": {"address": "10.0.0.9:8081", "instances": 2}}}"#;
    let config = crate::config::parse(json.as_bytes(), &|_| None, 0)
        .unwrap()
        .0;
    let mut host = FakeHost::new(5);
    crate::router::precreate(&config, &mut host);
    let body = br#"{"model":"a,b","messages":[{"role":"user","content":"hi"}]}"#;
    let (mut session, mut stream, flow) = send_chat_as(&config, &mut host, body, "sk-k");
    assert_eq!(flow, Flow::Pause);
    // No rpm_limit: the first call is on the key's tokens, both arms' estimates at once.
    assert_eq!(stream.calls.len(), 1);
    let tokens_call = call_body(&stream, 0);
    assert!(contains(&tokens_call, b"key_tpm"));
    let (&both, _) = tokens_call.split_last().unwrap();
    assert!(both >= 2 && both % 2 == 0, "two equal estimates: {both}");
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(1));
    // Then the budget: both estimates at the input price (a unit a token), still nothing sent.
    assert_eq!(stream.calls.len(), 2);
    let budget_call = call_body(&stream, 1);
    assert!(contains(&budget_call, b"key_budget"));
    assert_eq!(
        budget_call.last(),
        Some(&both),
        "one unit per estimated token"
    );
    session.on_callout(Some(&config), &mut host, &mut stream, 2, rls_answer(1));
    assert_eq!(stream.calls.len(), 4, "then both arms go out");
    session.on_log(Some(&config), &mut host, &mut stream);

    // The budget spent fleet-wide: 400 for the whole fan-out, nothing sent, spent here too.
    let (mut session, mut stream, _) = send_chat_as(&config, &mut host, body, "sk-k");
    session.on_callout(Some(&config), &mut host, &mut stream, 1, rls_answer(1));
    session.on_callout(Some(&config), &mut host, &mut stream, 2, rls_answer(2));
    assert_eq!(stream.calls.len(), 2);
    let (status, _, reply) = stream.reply.clone().unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&reply).contains("budget_exceeded"));
    // Refused here without a call: each model's error, as LiteLLM lists a fan-out's.
    let (_, stream, _) = send_chat_as(&config, &mut host, body, "sk-k");
    assert!(stream.calls.is_empty());
    let (_, _, reply) = stream.reply.clone().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&reply)
            .matches("budget_exceeded")
            .count(),
        2
    );
}

#[test]
fn a_test_panic_fires_only_with_the_switch_and_only_in_the_named_event() {
    let headers: [(&str, &[u8]); 4] = [
        (":method", b"POST"),
        (":path", b"/v1/chat/completions"),
        ("authorization", b"Bearer sk-master"),
        ("x-llm-test-panic", b"request_body"),
    ];
    let run = |config: &Config| {
        let mut host = FakeHost::new(7);
        let mut session = Session::new();
        let mut stream = FakeStream::new(config);
        let head = session.on_request_headers(
            Some(config),
            &mut host,
            &mut stream,
            headers.into_iter(),
            false,
        );
        assert_eq!(head, Flow::Pause, "no panic before the named event");
        stream.request_body = CHAT.to_vec();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.on_request_body(Some(config), &mut host, &mut stream, CHAT.len(), true)
        }))
    };
    let off = config();
    assert!(!off.test_panics);
    assert_eq!(
        run(&off).ok(),
        Some(Flow::Continue),
        "a client alone cannot"
    );
    let env = |name: &str| (name == fault::ENV).then(|| "1".to_string());
    let (on, warnings) = parse(CONFIG.as_bytes(), &env, 1000).unwrap();
    assert!(on.test_panics);
    assert!(
        warnings.iter().any(|w| w.contains(fault::ENV)),
        "{warnings:?}"
    );
    assert!(run(&on).is_err());
}
