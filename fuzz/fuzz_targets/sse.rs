#![no_main]
// See llm_gateway::fuzz_targets::sse.
libfuzzer_sys::fuzz_target!(|data: &[u8]| llm_gateway::fuzz_targets::sse(data));
