//! A DynamoDB stream batch of the messages table, decoded record by record as
//! the stream-processor does, then each message's audience, frame size,
//! frame, and the coalesced frames of the whole batch.
#![no_main]

use airwave_shared::handlers::{decode_message_record, stream_records, DecodedMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(records) = stream_records(payload) else {
        return;
    };
    let mut frames = Vec::new();
    for raw in records {
        if let DecodedMessage::Message(message) = decode_message_record(&raw) {
            let _ = message.audience();
            if message.check_frame_size().is_ok() {
                frames.push(message.frame(None));
            }
        }
    }
    for frame in airwave_shared::coalesce::coalesce_for_api_gateway(&frames) {
        assert!(frame.len() <= airwave_shared::message::MAX_FRAME_BYTES || frames.len() == 1);
    }
});
