//! Test-only fault injection: what does each runtime do with a bug in the gateway?
//!
//! Off unless the gateway's environment says `LLM_GATEWAY_TEST_PANICS=1` (Envoy's process
//! environment for the native module, the VM's `vm_config.environment_variables` for the
//! `.wasm`), which `config::check` reads once into `Config::test_panics`. Then a request with
//! `x-llm-test-panic: <event>` makes the session panic in that event, so the integration
//! suite can show, on the real Envoy, what the README promises: the native module answers
//! that request 500 and Envoy lives on; the `.wasm`'s VM fails and Envoy reloads it. A client
//! cannot turn it on, and with it off the only cost is one `bool` read per event.

/// The environment variable that enables `x-llm-test-panic`.
pub const ENV: &str = "LLM_GATEWAY_TEST_PANICS";
/// The request header naming the event to panic in.
pub const HEADER: &str = "x-llm-test-panic";

/// The session events a test can make panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicAt {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
}

impl PanicAt {
    /// The header's value: the event's name as the hooks are called (`request_headers`, …).
    pub fn parse(value: &[u8]) -> Option<PanicAt> {
        match value {
            b"request_headers" => Some(PanicAt::RequestHeaders),
            b"request_body" => Some(PanicAt::RequestBody),
            b"response_headers" => Some(PanicAt::ResponseHeaders),
            b"response_body" => Some(PanicAt::ResponseBody),
            _ => None,
        }
    }
}

/// Whether the environment turns fault injection on (read at configure time).
pub fn enabled(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env(ENV).is_some_and(|v| v == "1")
}

/// Panic if `armed` names this event, disarming it first, so that the events the runtime's
/// recovery runs on this stream (a native 500's own response hooks) do not panic again.
pub fn check(armed: &mut Option<PanicAt>, event: PanicAt) {
    if *armed == Some(event) {
        *armed = None;
        injected(event);
    }
}

#[allow(clippy::panic)] // The one deliberate panic: what the tests inject.
#[cold]
fn injected(event: PanicAt) -> ! {
    panic!("{HEADER}: a panic injected in {event:?} ({ENV}=1)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_event_panics_and_only_once() {
        let mut armed = PanicAt::parse(b"response_headers");
        check(&mut armed, PanicAt::RequestHeaders);
        check(&mut armed, PanicAt::RequestBody);
        assert_eq!(armed, Some(PanicAt::ResponseHeaders));
        let caught = std::panic::catch_unwind(move || {
            let mut armed = armed;
            check(&mut armed, PanicAt::ResponseHeaders);
        });
        assert!(caught.is_err());
        let mut disarmed = None;
        check(&mut disarmed, PanicAt::ResponseHeaders);
        assert_eq!(PanicAt::parse(b"sometimes"), None);
    }

    #[test]
    fn only_the_value_1_enables_it() {
        assert!(enabled(&|n| (n == ENV).then(|| "1".to_string())));
        assert!(!enabled(&|n| (n == ENV).then(|| "true".to_string())));
        assert!(!enabled(&|_| None));
    }
}
