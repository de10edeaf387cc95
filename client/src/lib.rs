//! Client for Airwave's WebSocket API.
//!
//! [`Client`] keeps one logical connection: it opens at most one socket at a time, reconnects
//! with capped, fully jittered exponential [`Backoff`] when the socket drops, subscribes again to
//! its channels after a reconnect, pings when it has sent nothing for 9 minutes (under API
//! Gateway's 10-minute idle timeout) and replaces a socket whose ping goes unanswered, drops
//! messages whose id it has already delivered ([`RecentIds`]), delivers each channel's messages
//! in position order ([`ChannelOrder`]) and, after a reconnect, recovers what the channel
//! published meanwhile.
//!
//! With [`ClientConfig::with_token_provider`] it gets a fresh token before every connection
//! attempt, and when the server says the token expired it reconnects at once with a new one. When
//! the server evicts the connection (the user went over their connection cap) it does not come
//! back by itself: it emits [`Event::Evicted`] and stays disconnected.
//!
//! ```no_run
//! # async fn demo() -> Result<(), airwave_client::Error> {
//! use airwave_client::{Client, ClientConfig, Event};
//!
//! let config = ClientConfig::new("wss://example.execute-api.eu-west-1.amazonaws.com/prod")?.with_token("secret");
//! let (client, mut events) = Client::new(config);
//! client.subscribe("prices").await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Message(message) = event {
//!         println!("{} {}", message.id, message.data);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod backoff;
pub mod client;
pub mod dedup;
pub mod error;
pub mod http;
pub mod order;
pub mod protocol;

pub use backoff::{Backoff, Delays};
pub use client::{Client, ClientConfig, Event, Events};
pub use dedup::RecentIds;
pub use error::Error;
pub use order::{ChannelOrder, Notice};
pub use protocol::{
    parse_frame, ErrorCode, Incoming, Message, Position, Reply, Request, RequestId, Stats, SUBPROTOCOL,
};
