//! Any query string and cursor headers give parameters or a 4xx, never a panic.
#![no_main]

use comet_protocol::{SubscribeParams, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The input is split into a query and a Last-Event-ID / If-None-Match value.
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (query, header) = data.split_at(split);
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    if let Err(error) = SubscribeParams::from_query(Some(query)) {
        assert!(error.status().is_client_error());
    }
    let Ok(uri) = http::Uri::builder()
        .path_and_query(format!("/?{query}"))
        .build()
    else {
        return;
    };
    let mut request = http::Request::get(uri);
    if let Ok(value) = http::HeaderValue::from_bytes(header.get(1..).unwrap_or_default()) {
        request = request
            .header("last-event-id", value.clone())
            .header("if-none-match", value);
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    for transport in Transport::all() {
        if let Err(error) = SubscribeParams::from_request(&parts, Some(&transport)) {
            assert!(error.status().is_client_error());
        }
    }
});
