//! Newline-delimited JSON envelopes (`application/x-ndjson`), one per line,
//! for `fetch` streaming. On the wire it is `transport=stream`.

use crate::{
    envelope,
    transport::{Format, Transport},
    Chunks, Cursor, Message, StreamFormat,
};
use bytes::Bytes;
use http::HeaderValue;

/// ndjson, picked by `Accept: application/x-ndjson` too. Browsers keep the
/// response whole, so it ends after the route's byte budget.
pub(crate) fn transport() -> Transport {
    Transport::built_in(
        "stream",
        Some("application/x-ndjson"),
        false,
        |_request, _params, route| {
            Ok(Format::Stream {
                format: Box::new(Ndjson),
                byte_budget: Some(route.byte_budget),
            })
        },
    )
}

/// Newline-delimited JSON envelopes.
pub(crate) struct Ndjson;

impl StreamFormat for Ndjson {
    fn message(&self, message: &Message, cursor: &Cursor, out: &mut Chunks) {
        if cursor.len() == 1 {
            out.push(envelope::one_channel_line(message, cursor));
        } else {
            out.push(envelope::one_line_prefix(message));
            out.push(envelope::cursor_tail(cursor, b"\n"));
        }
    }

    fn heartbeat(&self) -> Option<Bytes> {
        Some(Bytes::from_static(b"{\"type\":\"heartbeat\"}\n"))
    }

    fn content_type(&self) -> HeaderValue {
        HeaderValue::from_static("application/x-ndjson")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;
    use crate::{
        envelope::{write, Json},
        transport::{test_frame as frame, test_item as item},
    };
    use bytes::BytesMut;

    #[tokio::test]
    async fn a_line_is_the_envelope_and_a_line_feed() {
        let it = item(Payload::json(&serde_json::json!([1, {"b": null}])).unwrap()).await;
        let mut envelope = BytesMut::new();
        write(&mut envelope, &it, Json::Plain);
        assert_eq!(
            frame(&Ndjson, &it),
            format!("{}\n", String::from_utf8(envelope.to_vec()).unwrap())
        );
    }
}
