//! The Airwave client protocol, defined once. The server (`airwave-shared`),
//! the Rust client and the JSON Schema that other-language clients are checked
//! against (`protocol/schema.json`) all come from these types.
//!
//! Every frame is one JSON object in a WebSocket text frame. A client sends
//! requests (`{"action": ...}`), each of which may carry an `id` that its reply
//! repeats; the server answers with replies and pushes messages
//! (`{"type": ...}`). The version is negotiated in the handshake's
//! subprotocol ([`SUBPROTOCOL`]).

pub mod http;
mod position;
mod reply;
mod request;
mod server;
mod version;

pub use position::{Position, EPOCH_CHARS};
pub use reply::{ErrorCode, Reply, ReplyFrame, Stats};
pub use request::{ClientFrame, Request, RequestId};
pub use server::{parse_server_frame, Closing, Incoming, MessageFrame, ServerFrame};
pub use version::{
    negotiate, Negotiated, LEGACY_SUBPROTOCOL, SUBPROTOCOL, UNSUPPORTED_VERSION_REASON, UNSUPPORTED_VERSION_STATUS,
};

/// The JSON Schema of every frame, both directions, as committed in
/// `protocol/schema.json`.
pub fn json_schema() -> serde_json::Value {
    let client = schemars::schema_for!(ClientFrame);
    let server = schemars::schema_for!(ServerFrame);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Airwave client protocol",
        "description": "Frames a client sends (client) and receives (server), and the HTTP API's bodies (http). Generated from the airwave-protocol crate; do not edit by hand.",
        "client": client,
        "server": server,
        "http": {
            "publish_request": schemars::schema_for!(http::PublishBody),
            "publish_response": schemars::schema_for!(http::PublishResponse),
            "poll_request": schemars::schema_for!(http::PollRequest),
            "poll_response": schemars::schema_for!(http::PollResponse),
            "error": schemars::schema_for!(http::HttpErrorBody),
        },
    })
}
