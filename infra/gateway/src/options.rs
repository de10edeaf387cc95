//! What a gateway is started with, and API Gateway's own limits as the
//! defaults. Its own module, since the connection registry, the WebSocket side
//! and the Management API all read it.

use std::net::SocketAddr;
use std::time::Duration;

use airwave_local::Quota;

/// API Gateway's limit for one incoming frame.
pub(crate) const DEFAULT_MAX_FRAME_BYTES: usize = 32 * 1024;
/// API Gateway's limit for one message (frames put together, and Management API posts).
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// API Gateway closes a connection without messages for 10 minutes.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// API Gateway closes every connection after 2 hours.
pub(crate) const DEFAULT_MAX_CONNECTION_DURATION: Duration = Duration::from_secs(2 * 60 * 60);

/// Settings of a [`Gateway`](crate::Gateway).
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Where to listen; port 0 picks a free one.
    pub address: SocketAddr,
    /// The stage: clients connect to `/{stage}` (or `/`), the Management API is
    /// at `/{stage}/@connections/{id}` (or `/@connections/{id}`).
    pub stage: String,
    /// `requestContext.apiId` in events.
    pub api_id: String,
    /// Close a connection that sent no message for this long.
    pub idle_timeout: Duration,
    /// Close every connection after this long.
    pub max_connection_duration: Duration,
    /// A larger incoming frame closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// A larger incoming message closes the connection with 1009; a larger
    /// Management API post is refused with 413.
    pub max_message_bytes: usize,
    /// The account's quota over every Management API request (429 beyond
    /// it); `None` for none.
    pub management_quota: Option<Quota>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            stage: "local".to_owned(),
            api_id: "local".to_owned(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connection_duration: DEFAULT_MAX_CONNECTION_DURATION,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            management_quota: Some(Quota::default()),
        }
    }
}
