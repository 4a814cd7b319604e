//! The host calls the shell makes for every request (and its local replies), without the
//! SDK's wrappers: those
//! `panic!` on any status they do not expect — and a panic kills the VM, and with it every
//! later request on that worker. Here every status comes back as a value. The imports are
//! declared with the SDK's own types, so the two declarations agree.
//!
//! Data the host returns was allocated through the SDK's `proxy_on_memory_allocate` (a
//! `Vec<u8>` of capacity `size`, forgotten); ownership passes to us, exactly as in the SDK.

use proxy_wasm::types::{BufferType, MapType, Status};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_add_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_remove_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
    ) -> Status;
    fn proxy_get_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> Status;
    fn proxy_set_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> Status;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> Status;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> Status;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
}

/// What the host handed back: `Some` for a non-empty value (ours now), `None` otherwise.
///
/// # Safety
/// `data` and `size` must be what a host call returned with `Status::Ok`.
unsafe fn owned(status: Status, data: *mut u8, size: usize) -> Option<Vec<u8>> {
    match status {
        // SAFETY: see the module comment; the caller passes what the host just wrote.
        Status::Ok if !data.is_null() => Some(unsafe { Vec::from_raw_parts(data, size, size) }),
        _ => None,
    }
}

/// A header map as Envoy serialised it, for `header_map::pairs` to read in place (the SDK's
/// `get_map_bytes` copies each name and value). Empty when the map is not available.
pub fn header_map(map_type: MapType) -> Vec<u8> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    // SAFETY: the host writes `data` and `size`; `owned` takes them only on success.
    unsafe {
        let status = proxy_get_header_map_pairs(map_type, &mut data, &mut size);
        owned(status, data, size).unwrap_or_default()
    }
}

/// Replace a header (`Some`) or remove it (`None`); `false` when the host refused.
pub fn set_header(map_type: MapType, name: &str, value: Option<&str>) -> bool {
    // SAFETY: the host only reads the two slices, during the call.
    let status = unsafe {
        match value {
            Some(v) => proxy_replace_header_map_value(
                map_type,
                name.as_ptr(),
                name.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => proxy_remove_header_map_value(map_type, name.as_ptr(), name.len()),
        }
    };
    matches!(status, Status::Ok)
}

/// Append a header (the map may already hold the name: both values stay); `false` when the
/// host refused.
pub fn add_header(map_type: MapType, name: &str, value: &str) -> bool {
    // SAFETY: the host only reads the two slices, during the call.
    let status = unsafe {
        proxy_add_header_map_value(
            map_type,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    matches!(status, Status::Ok)
}

/// Up to `max_size` bytes of a body (or call response) buffer from `start`.
pub fn buffer(buffer_type: BufferType, start: usize, max_size: usize) -> Option<Vec<u8>> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    // SAFETY: as in `header_map`.
    unsafe {
        let status = proxy_get_buffer_bytes(buffer_type, start, max_size, &mut data, &mut size);
        owned(status, data, size)
    }
}

/// Replace `size` bytes from `start` of a buffer with `value`; `false` when the host refused.
pub fn set_buffer(buffer_type: BufferType, start: usize, size: usize, value: &[u8]) -> bool {
    // SAFETY: the host only reads `value`, during the call.
    let status =
        unsafe { proxy_set_buffer_bytes(buffer_type, start, size, value.as_ptr(), value.len()) };
    matches!(status, Status::Ok)
}

/// A shared-data value and its version: `None` when the key does not exist. An existing
/// but empty value comes back empty, with the version a compare-and-swap needs.
pub fn shared(key: &str) -> Option<(Vec<u8>, u32)> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    let mut cas = 0;
    // SAFETY: as in `header_map`.
    unsafe {
        let status = proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas);
        match (owned(status, data, size), cas) {
            (Some(value), _) => Some((value, cas)),
            (None, 0) => None,
            (None, _) if matches!(status, Status::Ok) => Some((Vec::new(), cas)),
            (None, _) => None,
        }
    }
}

/// Write a shared-data value, if its version is still `cas` when one is given.
pub fn set_shared(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    // SAFETY: the host only reads the two slices, during the call.
    let status = unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    };
    matches!(status, Status::Ok)
}

/// A property; `path` is its segments joined by NUL bytes, e.g. `b"response\0code_details"`.
pub fn property(path: &[u8]) -> Option<Vec<u8>> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    // SAFETY: as in `header_map`.
    unsafe {
        let status = proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size);
        owned(status, data, size)
    }
}

/// Set a property (a filter-state value); `false` when the host refused.
pub fn set_property(path: &[u8], value: &[u8]) -> bool {
    // SAFETY: the host only reads the two slices, during the call.
    let status =
        unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) };
    matches!(status, Status::Ok)
}

/// Answer the client ourselves: `status`, `headers`, `body`; `false` when the host refused.
pub fn send_local_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
    let headers = crate::header_map::serialise(headers);
    // SAFETY: the host only reads the slices, during the call. No details string (null, 0)
    // and no gRPC status (-1), as the SDK's `send_http_response` passes them.
    let status = unsafe {
        proxy_send_local_response(
            u32::from(status),
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    matches!(status, Status::Ok)
}
