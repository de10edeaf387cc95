//! Test support: a fresh pair of tables on the local DynamoDB-compatible server
//! for every test (`tables`), events in the exact shape AWS sends (`events`),
//! tokens (`identity`), a log capture (`logs`) and request counters
//! (`operations`, `request_timer`).

pub mod cost;
mod events;
pub mod http_api;
mod identity;
mod logs;
mod operations;
mod request_timer;
pub mod soak;
pub mod stack;
mod tables;

pub use request_timer::RequestTimer;

pub use events::{
    channel_message_image, connect_event, connect_event_with_token, disconnect_event, insert_record, message_event,
    message_image, stream_batch_fixture, stream_event, CONNECT_EVENT, DISCONNECT_EVENT, MESSAGE_EVENT,
    STREAM_BATCH_EVENT,
};
pub use identity::{authenticator, signed_token, token_for, token_with_kid};
pub use logs::{CaptureGuard, LogCapture};
pub use operations::OperationCounter;
pub use tables::TestTables;

/// A lock that a panicked holder cannot make unusable: test bookkeeping is
/// read after the fact, whatever happened.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Set by `make test` (through `infra/with-moto.sh`) to the local server's URL.
pub const DYNAMODB_ENDPOINT_VARIABLE: &str = "AIRWAVE_TEST_DYNAMODB_ENDPOINT";

/// A client's WebSocket to the local gateway.
pub type TestSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads `socket` until the server closes it, and answers the `closing`
/// frame it was told why in (code, message), if any.
pub async fn read_until_closed(socket: &mut TestSocket) -> Option<(airwave_protocol::ErrorCode, String)> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut closing = None;
    while let Some(Ok(frame)) = socket.next().await {
        match frame {
            Message::Text(text) => {
                if let Ok(airwave_protocol::Incoming::Closing { code, message }) =
                    airwave_protocol::parse_server_frame(&text)
                {
                    closing = Some((code, message));
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    closing
}
