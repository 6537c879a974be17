//! Any `Last-Event-ID` and `If-None-Match` values give parameters or a 4xx,
//! never a panic, on every transport; a cursor taken from a header is the
//! one its token decodes to.
#![no_main]

use comet_core::Cursor;
use comet_protocol::{SubscribeParams, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The input is split at its first NUL into the two header values.
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (last_event_id, rest) = data.split_at(split);
    let if_none_match = rest.get(1..).unwrap_or_default();
    let value = |bytes: &[u8]| http::HeaderValue::from_bytes(bytes).ok();
    let headers = [
        (value(last_event_id), None),
        (None, value(if_none_match)),
        (value(last_event_id), value(if_none_match)),
    ];
    for (id, tag) in headers {
        let mut request = http::Request::get("/?channel=a");
        if let Some(id) = &id {
            request = request.header("last-event-id", id);
        }
        if let Some(tag) = &tag {
            request = request.header("if-none-match", tag);
        }
        let (parts, ()) = request.body(()).unwrap().into_parts();
        let all = Transport::all();
        for transport in all.iter().map(Some).chain([None]) {
            match SubscribeParams::from_request(&parts, transport) {
                Err(error) => assert!(error.status().is_client_error()),
                Ok(params) => {
                    // Last-Event-ID, when it names a cursor, wins.
                    let named = id
                        .as_ref()
                        .and_then(|v| v.to_str().ok())
                        .map(str::trim)
                        .filter(|s| !s.is_empty());
                    if let Some(token) = named {
                        let cursor = params.cursor.expect("a cursor from Last-Event-ID");
                        assert_eq!(Some(&cursor), Cursor::decode(token).ok().as_ref());
                        assert_eq!(cursor.encode(), token);
                    }
                }
            }
        }
    }
});
