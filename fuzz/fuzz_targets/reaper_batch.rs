//! A DynamoDB stream batch of the connections table, decoded as the reaper
//! does: only a delete with a decodable old image gives a record.
#![no_main]

use airwave_shared::handlers::{decode_removed_connection, stream_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(records) = stream_records(payload) else {
        return;
    };
    for raw in records {
        let _ = decode_removed_connection(raw);
    }
});
