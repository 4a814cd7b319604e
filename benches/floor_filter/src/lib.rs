//! A proxy-wasm filter that does nothing but hold each body until its end, written against the
//! raw ABI (no SDK) so that nothing but Envoy's own cost per callback is measured.

/// Proxy-Wasm's `Continue` for header and body callbacks.
const CONTINUE: u32 = 0;
/// `StopIteration` for headers, `StopIterationAndBuffer` for bodies.
const HOLD: u32 = 1;

fn hold_until(end_of_stream: u32) -> u32 {
    if end_of_stream != 0 {
        CONTINUE
    } else {
        HOLD
    }
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut buffer: Vec<u8> = Vec::with_capacity(size);
    let pointer = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    pointer
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context: u32, _parent: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_context: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: usize, end: u32) -> u32 {
    hold_until(end)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_context: u32, _size: usize, end: u32) -> u32 {
    hold_until(end)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_context: u32, _headers: usize, end: u32) -> u32 {
    hold_until(end)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_context: u32, _size: usize, end: u32) -> u32 {
    hold_until(end)
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_context: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_done(_context: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(_context: u32) {}
