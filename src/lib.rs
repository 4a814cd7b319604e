//! llm-gateway: an OpenAI-compatible LLM gateway that runs inside Envoy as a proxy-wasm filter.
//!
//! Everything but `filter` (the proxy-wasm shell) and `native` (the dynamic-module shell) is a
//! pure core with no host import, tested natively. The shells map Envoy's callbacks to
//! `session` events and its decisions to host calls.

pub mod access;
pub mod answer_headers;
pub mod auth;
pub mod cache;

pub mod config;
pub mod error;
pub mod fan_out;
pub mod fast_hash;
pub mod fleet;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod gateway;
pub mod header_map;
pub mod health;
pub mod host;
pub mod json;
pub mod key_api;
pub mod key_table;
pub mod keys;
pub mod listing;
pub mod metrics;
pub mod mock;
pub mod passthrough;

pub mod render;
pub mod request;
pub mod retry;
pub mod router;
pub mod scope;
pub mod select;
pub mod session;
pub mod shared_store;
pub mod sse;
pub mod state;
pub mod swar;
pub mod tags;
pub mod template;
pub mod translate;

#[cfg(target_arch = "wasm32")]
mod filter;

/// The native shell (an Envoy dynamic module): only with the `native` feature, whose build
/// (`make build-native`) links against the callbacks Envoy exports.
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
mod native;
