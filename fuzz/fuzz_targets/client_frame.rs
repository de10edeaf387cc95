//! What the `$default` function reads from a client: any text gets a request
//! or the error reply for it, and a request survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    match airwave_shared::handlers::parse_client_frame(body) {
        Ok(frame) => {
            let text = serde_json::to_string(&frame).expect("a request serializes");
            let again = airwave_shared::handlers::parse_client_frame(&text).expect("and reads back");
            assert_eq!(again, frame);
        }
        Err(reply) => assert!(!reply.to_text().is_empty()),
    }
});
