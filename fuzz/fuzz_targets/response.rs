#![no_main]
// See llm_gateway::fuzz_targets::response.
libfuzzer_sys::fuzz_target!(|data: &[u8]| llm_gateway::fuzz_targets::response(data));
