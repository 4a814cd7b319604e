#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]
//! Micro-benchmarks of the hot pure functions, natively, so a regression shows without Envoy:
//! `cargo bench` (or `make bench`, which also runs the Envoy benchmark).
//! (A benchmark harness, not the filter: panicking on a broken fixture is the right outcome.)

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use llm_gateway::config::{parse, Config};
use llm_gateway::gateway::{on_request_body, BodyAction, Pending};
use llm_gateway::host::FakeHost;
use llm_gateway::keys::Principal;
use llm_gateway::request::{Endpoint, Inference};
use llm_gateway::translate::BodyMode;
use std::hint::black_box;

fn config(extra_deployments: usize) -> Config {
    let mut models = vec![
        r#"{"model_name":"chat","litellm_params":{"model":"hosted_vllm/m","api_base":"http://u:1/v1"}}"#.to_string(),
        r#"{"model_name":"gen","litellm_params":{"model":"triton/llama-3","api_base":"http://u:1/v2/models/m/generate"}}"#.to_string(),
        r#"{"model_name":"infer","litellm_params":{"model":"triton/m","api_base":"http://u:1/v2/models/m/infer"}}"#.to_string(),
    ];
    for i in 0..extra_deployments {
        models.push(format!(
            r#"{{"model_name":"g{}","litellm_params":{{"model":"openai/m{i}","api_base":"http://h{i}:8000"}}}}"#,
            i % 250
        ));
    }
    let json = format!(
        r#"{{"model_list":[{}],"general_settings":{{"master_key":"sk-bench"}}}}"#,
        models.join(",")
    );
    parse(json.as_bytes(), &|_| None, 0).unwrap().0
}

/// A ~1 KB chat request, as the Envoy benchmark sends.
fn chat_body(model: &str, stream: bool) -> Vec<u8> {
    let text = "Summarise the following paragraph in one sentence. ".repeat(14);
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"{text}"}}],"temperature":0.2,"max_tokens":64,"stream":{stream}}}"#
    )
    .into_bytes()
}

fn forward(c: &Config, host: &mut FakeHost, body: &[u8]) -> Box<llm_gateway::gateway::Forward> {
    let pending = Pending {
        endpoint: Endpoint::Inference(Inference::Chat),
        principal: Principal::Master,
        header_tags: Vec::new(),
        header_timeout_ms: None,
    };
    match on_request_body(c, host, &pending, body) {
        BodyAction::Forward(f) => f,
        BodyAction::Reply(r) => panic!("{} {}", r.status, String::from_utf8_lossy(&r.body)),
        BodyAction::FanOut(_) => panic!("a fan-out"),
    }
}

fn benches(crit: &mut Criterion) {
    let small = config(0);
    let mut host = FakeHost::new(1);
    llm_gateway::router::precreate(&small, &mut host);
    let chat = chat_body("chat", false);
    let gen = chat_body("gen", false);

    crit.bench_function("request rewrite: openai-compatible (splice)", |b| {
        b.iter(|| black_box(forward(&small, &mut host, black_box(&chat))))
    });
    crit.bench_function("request rewrite: triton generate (template + JSON)", |b| {
        b.iter(|| black_box(forward(&small, &mut host, black_box(&gen))))
    });

    let triton_answer = br#"{"model_name":"m","model_version":"1","text_output":"A short answer of a few words.","finish_reason":"stop","num_input_tokens":240,"num_output_tokens":8}"#;
    crit.bench_function("response: triton generate -> chat.completion", |b| {
        b.iter_batched(
            || forward(&small, &mut host, &gen),
            |mut f| {
                f.response.on_headers(200, Some("application/json"));
                black_box(f.response.on_body(triton_answer, true))
            },
            BatchSize::SmallInput,
        )
    });

    let events: Vec<u8> = (0..20)
        .flat_map(|i| {
            format!("data: {{\"text_output\":\"token{i} \",\"num_output_tokens\":1}}\n\n")
                .into_bytes()
        })
        .collect();
    let gen_stream = chat_body("gen", true);
    crit.bench_function(
        "stream: triton generate_stream, 20 events -> OpenAI chunks",
        |b| {
            b.iter_batched(
                || forward(&small, &mut host, &gen_stream),
                |mut f| {
                    assert!(matches!(
                        f.response.on_headers(200, Some("text/event-stream")),
                        BodyMode::Stream { .. }
                    ));
                    black_box(f.response.on_body(&events, true))
                },
                BatchSize::SmallInput,
            )
        },
    );

    let large = config(1000);
    let mut large_host = FakeHost::new(2);
    llm_gateway::router::precreate(&large, &mut large_host);
    let g7 = chat_body("g7", false);
    crit.bench_function(
        "selection + rewrite, 1,000-deployment config (group of 4)",
        |b| b.iter(|| black_box(forward(&large, &mut large_host, black_box(&g7)))),
    );

    let json = {
        let mut models = Vec::new();
        for i in 0..1000 {
            models.push(format!(
                r#"{{"model_name":"g{}","litellm_params":{{"model":"openai/m{i}","api_base":"http://h{i}:8000"}}}}"#,
                i % 250
            ));
        }
        format!(r#"{{"model_list":[{}]}}"#, models.join(","))
    };
    crit.bench_function("configure: parse + validate 1,000 deployments", |b| {
        b.iter(|| black_box(parse(black_box(json.as_bytes()), &|_| None, 0).unwrap()))
    });
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = benches
}
criterion_main!(hot_paths);
