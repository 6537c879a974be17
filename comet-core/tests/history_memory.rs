//! History holds a published payload's own bytes, not the buffer they were
//! sliced from (a body read over HTTP is a slice of the connection's read
//! buffer: keeping it kept kilobytes per message of a few dozen bytes).

use bytes::Bytes;
use comet_core::{Hub, Item, Payload, Start};
use tokio_stream::StreamExt;

#[tokio::test]
async fn a_stored_message_does_not_keep_the_buffer_its_payload_was_sliced_from() {
    let hub = Hub::new();
    let buffer = Bytes::from(vec![b'7'; 64 * 1024]);
    let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
    hub.publish("c", Payload::json_bytes(buffer.slice(100..102)).unwrap())
        .await
        .unwrap();
    drop(buffer);
    let mut sub = hub.subscribe(["c"], Start::oldest()).await.unwrap();
    let Some(Item::Message { message, .. }) = sub.next().await else {
        panic!("no message")
    };
    assert_eq!(message.data().as_ref(), b"77");
    let at = message.data().as_ptr() as usize;
    assert!(!range.contains(&at), "history keeps the 64 KiB buffer");
}
