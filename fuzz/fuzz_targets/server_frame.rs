//! What a client reads from the server: any text is a frame or an error, and
//! pushed messages survive a round trip, alone or in a batch.
#![no_main]

use airwave_protocol::{parse_server_frame, Incoming, MessageFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Incoming::Messages(messages)) = parse_server_frame(text) {
        let batch = MessageFrame::batch_text(messages.clone());
        match parse_server_frame(&batch) {
            Ok(Incoming::Messages(again)) => assert_eq!(again, messages),
            other => panic!("a batch read back as {other:?}"),
        }
        for message in &messages {
            match parse_server_frame(&message.to_text()) {
                Ok(Incoming::Messages(again)) => assert_eq!(again, vec![message.clone()]),
                other => panic!("a message read back as {other:?}"),
            }
        }
    }
});
