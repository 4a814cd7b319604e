//! Calls the module's tick sends outside any request (the fleet's token reports), as the
//! config-level callouts of ABI 1.38+. Their answers are not read: the hook below only lets
//! Envoy hand them back.

use super::abi::{self, ConfigEnvoy, EnvoyBuffer, EnvoyHeader, ModuleBuffer, ModuleHeader};
use crate::session::TickCalls;
use std::ffi::c_void;

/// The filter config the calls go out from (the one whose scheduler runs the tick).
pub(super) struct ConfigCalls(pub(super) ConfigEnvoy);

impl TickCalls for ConfigCalls {
    fn send(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> bool {
        if self.0.is_null() {
            return false;
        }
        let mut pairs = ModuleHeader::all(headers);
        let mut id = 0u64;
        // SAFETY: the config pointer Envoy handed the running (main-thread) hook; cluster,
        // headers and body outlive the call (Envoy copies them into the callout's request).
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.0,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                pairs.as_mut_ptr(),
                pairs.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        result == abi::CALLOUT_INIT_SUCCESS
    }
}

/// A config-level callout finished. Nothing waits for it: a report's answer changes nothing
/// (a lost report leaves the tokens counted in this Envoy's own record only).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy: ConfigEnvoy,
    _config: *const c_void,
    _callout_id: u64,
    _result: u32,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _body_chunks: *const EnvoyBuffer,
    _body_chunks_size: usize,
) {
}
