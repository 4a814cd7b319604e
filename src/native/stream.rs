//! The session's `Stream` over one HTTP stream's ABI callbacks. Each method is one or two
//! callbacks; reads copy out of Envoy's buffers at once (their views end with the hook).
//!
//! A local reply is the one call that re-enters the module synchronously (Envoy runs the
//! response path, our own response hooks included, inside `send_response`), so `send_reply`
//! only records the reply: the shell sends it once the session's event has returned and no
//! borrow of the filter's state is held.

use super::abi::{self, EnvoyBuffer, FilterEnvoy, ModuleBuffer, ModuleHeader};
use super::stats::NativeStats;
use crate::header_map::HeaderNames;
use crate::session::{self, Stats};

/// A local reply the session decided on, sent by the shell after the event.
pub(super) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub(super) struct NativeStream<'a> {
    pub(super) filter: FilterEnvoy,
    pub(super) stats: NativeStats<'a>,
    pub(super) reply: Option<Reply>,
    /// A request header changed: the route (chosen on `x-llm-cluster`) must be chosen again.
    pub(super) route_changed: bool,
    /// The session let a held request go on: continued once the hook's edits are done.
    pub(super) resume: bool,
    /// The response's header names (Fx hashes), read once per response head (by the first
    /// read or write, kept across its body hooks by the shell): a name not among them is
    /// appended (`http_add_header`), which spares Envoy the search-and-remove of
    /// `http_set_header`. A hash collision only means a plain set.
    pub(super) response_names: Option<HeaderNames>,
}

/// The chunks of one body buffer, concatenated onto `out`.
fn append_chunks(filter: FilterEnvoy, body_type: u32, out: &mut Vec<u8>) {
    // SAFETY: `filter` is the pointer Envoy handed the running hook.
    let count =
        unsafe { abi::envoy_dynamic_module_callback_http_get_body_chunks_size(filter, body_type) };
    if count == 0 {
        return;
    }
    let mut chunks = vec![EnvoyBuffer::NULL; count];
    // SAFETY: `chunks` has room for the `count` buffers Envoy reported.
    let ok = unsafe {
        abi::envoy_dynamic_module_callback_http_get_body_chunks(
            filter,
            body_type,
            chunks.as_mut_ptr(),
        )
    };
    if !ok {
        return;
    }
    for chunk in chunks {
        // SAFETY: Envoy's chunk views, valid until this hook returns; copied at once.
        out.extend_from_slice(unsafe { chunk.bytes() });
    }
}

/// The size of a body held so far plus the chunk of this event.
pub(super) fn body_size(filter: FilterEnvoy, buffered: u32, received: u32) -> usize {
    // SAFETY: `filter` is the running hook's pointer.
    unsafe {
        abi::envoy_dynamic_module_callback_http_get_body_size(filter, buffered)
            + abi::envoy_dynamic_module_callback_http_get_body_size(filter, received)
    }
}

/// The whole body so far: what Envoy buffered for us, then this event's chunk.
fn read_body(filter: FilterEnvoy, buffered: u32, received: u32, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    append_chunks(filter, buffered, &mut out);
    append_chunks(filter, received, &mut out);
    out
}

/// Replace the whole body: drain both buffers, then the new bytes as this event's chunk
/// (Envoy appends it to the buffered part, now empty, when the stream continues).
fn replace_body(filter: FilterEnvoy, buffered: u32, received: u32, body: &[u8]) -> bool {
    // SAFETY: the running hook's pointer; `body` outlives the call (Envoy copies it).
    unsafe {
        let held = abi::envoy_dynamic_module_callback_http_get_body_size(filter, buffered);
        let chunk = abi::envoy_dynamic_module_callback_http_get_body_size(filter, received);
        if held > 0 {
            abi::envoy_dynamic_module_callback_http_drain_body(filter, buffered, held);
        }
        if chunk > 0 {
            abi::envoy_dynamic_module_callback_http_drain_body(filter, received, chunk);
        }
        abi::envoy_dynamic_module_callback_http_append_body(
            filter,
            received,
            ModuleBuffer::of(body),
        ) || abi::envoy_dynamic_module_callback_http_append_body(
            filter,
            buffered,
            ModuleBuffer::of(body),
        )
    }
}

/// One read of a header map: its names, and the values of `wanted` into `out`.
fn read_names(
    filter: FilterEnvoy,
    map: u32,
    wanted: &[&str],
    out: &mut [Option<String>],
) -> HeaderNames {
    // SAFETY: the running hook's pointer.
    let count = unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(filter, map) };
    if count == 0 {
        return HeaderNames::with_capacity(0);
    }
    let mut raw = vec![abi::EnvoyHeader::NULL; count];
    // SAFETY: `raw` has room for the `count` headers Envoy reported.
    if !unsafe {
        abi::envoy_dynamic_module_callback_http_get_headers(filter, map, raw.as_mut_ptr())
    } {
        return HeaderNames::unknown();
    }
    // SAFETY: Envoy's views, read before anything else runs.
    let pairs = raw.iter().map(|h| unsafe { h.pair() });
    HeaderNames::read(pairs, count, wanted, out)
}

fn add_header(filter: FilterEnvoy, map: u32, name: &str, value: &str) {
    // SAFETY: the running hook's pointer; both buffers outlive the call (Envoy copies them).
    unsafe {
        abi::envoy_dynamic_module_callback_http_add_header(
            filter,
            map,
            ModuleBuffer::of(name.as_bytes()),
            ModuleBuffer::of(value.as_bytes()),
        );
    }
}

fn set_header(filter: FilterEnvoy, map: u32, name: &str, value: Option<&str>) {
    let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
    // SAFETY: the running hook's pointer; both buffers outlive the call (Envoy copies them).
    unsafe {
        abi::envoy_dynamic_module_callback_http_set_header(
            filter,
            map,
            ModuleBuffer::of(name.as_bytes()),
            value,
        );
    }
}

/// Every header of a map, copied out of Envoy's memory (the session removes headers while it
/// reads them, and a setter ends Envoy's views): one buffer for all the bytes.
pub(super) struct HeaderCopy {
    bytes: Vec<u8>,
    /// (name start, name end, value end) per header; each value starts where its name ends.
    spans: Vec<(usize, usize, usize)>,
}

impl HeaderCopy {
    pub(super) fn pairs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.spans.iter().filter_map(|&(start, name_end, end)| {
            let name = std::str::from_utf8(self.bytes.get(start..name_end)?).ok()?;
            Some((name, self.bytes.get(name_end..end)?))
        })
    }
}

pub(super) fn headers(filter: FilterEnvoy, map: u32) -> HeaderCopy {
    let mut copy = HeaderCopy {
        bytes: Vec::new(),
        spans: Vec::new(),
    };
    // SAFETY: the running hook's pointer.
    let count = unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(filter, map) };
    if count == 0 {
        return copy;
    }
    let mut raw = vec![abi::EnvoyHeader::NULL; count];
    // SAFETY: `raw` has room for the `count` headers Envoy reported.
    let ok = unsafe {
        abi::envoy_dynamic_module_callback_http_get_headers(filter, map, raw.as_mut_ptr())
    };
    if !ok {
        return copy;
    }
    copy.bytes
        .reserve(raw.iter().map(|h| h.key_length + h.value_length).sum());
    copy.spans.reserve(count);
    for h in raw {
        // SAFETY: Envoy's views, copied at once.
        let (k, v) = unsafe { h.pair() };
        let start = copy.bytes.len();
        copy.bytes.extend_from_slice(k);
        let name_end = copy.bytes.len();
        copy.bytes.extend_from_slice(v);
        copy.spans.push((start, name_end, copy.bytes.len()));
    }
    copy
}

impl Stats for NativeStream<'_> {
    fn add(&mut self, stat: crate::metrics::Stat<'_>, by: i64) {
        self.stats.add(stat, by)
    }
    fn set(&mut self, stat: crate::metrics::Stat<'_>, value: u64) {
        self.stats.set(stat, value)
    }
    fn record(&mut self, stat: crate::metrics::Stat<'_>, value: u64) {
        self.stats.record(stat, value)
    }
    fn define(&mut self, stat: crate::metrics::Stat<'_>) {
        self.stats.define(stat)
    }
}

impl session::Stream for NativeStream<'_> {
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        set_header(self.filter, abi::REQUEST_HEADERS, name, value);
        self.route_changed = true;
    }
    fn request_body(&mut self, size: usize) -> Option<Vec<u8>> {
        Some(read_body(
            self.filter,
            abi::BUFFERED_REQUEST_BODY,
            abi::RECEIVED_REQUEST_BODY,
            size,
        ))
    }
    fn replace_request_body(&mut self, _size: usize, body: &[u8]) -> bool {
        replace_body(
            self.filter,
            abi::BUFFERED_REQUEST_BODY,
            abi::RECEIVED_REQUEST_BODY,
            body,
        )
    }
    fn response_headers(&mut self, names: &[&str], out: &mut [Option<String>]) {
        // One read of the whole map answers every name and learns the names for the writes.
        self.response_names = Some(read_names(self.filter, abi::RESPONSE_HEADERS, names, out));
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        let filter = self.filter;
        let names = self
            .response_names
            .get_or_insert_with(|| read_names(filter, abi::RESPONSE_HEADERS, &[], &mut []));
        match value {
            Some(v) if names.add_if_absent(name.as_bytes()) => {
                add_header(filter, abi::RESPONSE_HEADERS, name, v);
            }
            _ => set_header(filter, abi::RESPONSE_HEADERS, name, value),
        }
    }
    fn response_body(&mut self, size: usize) -> Option<Vec<u8>> {
        Some(read_body(
            self.filter,
            abi::BUFFERED_RESPONSE_BODY,
            abi::RECEIVED_RESPONSE_BODY,
            size,
        ))
    }
    fn replace_response_body(&mut self, _size: usize, body: &[u8]) -> bool {
        replace_body(
            self.filter,
            abi::BUFFERED_RESPONSE_BODY,
            abi::RECEIVED_RESPONSE_BODY,
            body,
        )
    }
    fn send_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
        self.reply = Some(Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        });
        true
    }
    fn call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Option<u32> {
        let mut pairs = ModuleHeader::all(headers);
        let mut id = 0u64;
        // SAFETY: the running hook's pointer; headers, cluster and body outlive the call
        // (Envoy copies them into the callout's request).
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_http_callout(
                self.filter,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                pairs.as_mut_ptr(),
                pairs.len(),
                ModuleBuffer::of(body.unwrap_or_default()),
                timeout_ms,
            )
        };
        if result != abi::CALLOUT_INIT_SUCCESS {
            return None;
        }
        u32::try_from(id).ok()
    }
    fn resume_request(&mut self) {
        self.resume = true;
    }
    /// Filter state `llm_gateway` (`%FILTER_STATE(llm_gateway:PLAIN)%`).
    fn set_access_record(&mut self, record: &[u8]) {
        // SAFETY: the running hook's pointer; both buffers outlive the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.filter,
                ModuleBuffer::of(b"llm_gateway"),
                ModuleBuffer::of(record),
            );
        }
    }
    fn response_code_details(&mut self) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::NULL;
        // SAFETY: the running hook's pointer; `value` is a valid out pointer.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.filter,
                abi::ATTRIBUTE_RESPONSE_CODE_DETAILS,
                &mut value,
            )
        };
        // SAFETY: Envoy's view, copied at once.
        found.then(|| unsafe { value.bytes() }.to_vec())
    }
    fn log(&mut self, level: session::LogLevel, message: &str) {
        super::log(level, message);
    }
}
