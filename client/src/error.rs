//! The crate's one error type.

use std::sync::Arc;

/// Everything that can go wrong between this client and an Airwave endpoint.
///
/// It is `Clone` (sources are behind `Arc`) because one connection failure has to be handed to
/// every request that was waiting on that connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The URL does not parse or is not `ws://` / `wss://`.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The server answered the WebSocket handshake with an HTTP status instead of upgrading.
    #[error("{}", handshake_message(*status))]
    Handshake { status: u16 },
    /// TCP, TLS or WebSocket failure while connecting or on an open socket.
    #[error("connection failed: {0}")]
    Connect(#[source] Arc<tokio_tungstenite::tungstenite::Error>),
    /// An HTTP API request failed before an answer came (connection, TLS).
    #[error("HTTP request failed: {0}")]
    Http(String),
    /// The TLS configuration could not be built (e.g. no root certificates on this system).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// Nothing came back in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The reconnect policy ran out of attempts; `last` is the error of the final attempt.
    #[error("gave up after {attempts} connection attempts: {last}")]
    GaveUp { attempts: u32, last: Box<Error> },
    /// The server replied `{"type":"error",...}`.
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    /// The socket dropped after a non-idempotent request (publish) was sent and before its reply:
    /// it may or may not have been applied, so it is not sent again.
    #[error("connection dropped before the reply arrived")]
    Disconnected,
    /// The client was closed (or dropped) while the request was pending.
    #[error("client closed")]
    Closed,
    /// The server sent a reply this request cannot have (a protocol mismatch).
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
    /// The token provider failed (or took longer than the connect timeout). Retried with the
    /// backoff like a failed connection attempt.
    #[error("could not get a token: {0}")]
    Token(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The connection's token expired and the client has no token provider to get a fresh one
    /// ([`ClientConfig::with_token`](crate::ClientConfig::with_token) is fixed), so it stopped.
    #[error("the token expired and a fixed token cannot be renewed: {message}")]
    TokenExpired { message: String },
    /// The server closed this connection to make room for a newer one of the same user (over the
    /// per-user connection cap). The client does not reconnect by itself, or the two connections
    /// would evict each other in turn; [`Client::connect`](crate::Client::connect) does, on purpose.
    #[error("evicted by the server, not reconnecting: {message}")]
    Evicted { message: String },
}

impl Error {
    /// Whether trying again (with backoff) cannot help: bad URL or TLS setup, a handshake refused
    /// for a reason that will not go away (401, 403 and other 4xx except 408 and 429), or a
    /// retry policy that already gave up.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::InvalidUrl(_)
            | Error::Tls(_)
            | Error::GaveUp { .. }
            | Error::Closed
            | Error::TokenExpired { .. }
            | Error::Evicted { .. } => true,
            Error::Handshake { status } => (400..500).contains(status) && *status != 408 && *status != 429,
            _ => false,
        }
    }

    /// The protocol's error code when the server refused (`rate_limited`, `token_expired`,
    /// `evicted`, ...), as on the wire.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            Error::TokenExpired { .. } => Some("token_expired"),
            Error::Evicted { .. } => Some("evicted"),
            _ => None,
        }
    }
}

fn handshake_message(status: u16) -> String {
    match status {
        401 => "handshake refused: 401 Unauthorized (missing, wrong or expired token)".to_owned(),
        403 => "handshake refused: 403 Forbidden (over a connection cap, or not allowed)".to_owned(),
        429 => "handshake refused: 429 Too Many Requests (throttled)".to_owned(),
        crate::protocol::UNSUPPORTED_VERSION_STATUS => format!(
            "handshake refused: 426 Upgrade Required (the server does not speak {}, this client's protocol version)",
            crate::protocol::SUBPROTOCOL
        ),
        s => format!("handshake refused with HTTP status {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_version_says_which_this_client_speaks_and_is_permanent() {
        let error = Error::Handshake { status: 426 };
        assert!(error.to_string().contains("airwave.v1"), "{error}");
        assert!(error.is_permanent(), "retrying cannot help");
    }

    #[test]
    fn auth_and_cap_refusals_are_permanent_throttling_and_5xx_are_not() {
        for status in [400, 401, 403, 404] {
            assert!(Error::Handshake { status }.is_permanent(), "{status}");
        }
        for status in [408, 429, 500, 502, 503] {
            assert!(!Error::Handshake { status }.is_permanent(), "{status}");
        }
        assert!(!Error::Timeout("connecting").is_permanent());
        assert!(Error::InvalidUrl("x".into()).is_permanent());
        assert!(Error::Evicted { message: String::new() }.is_permanent());
        assert!(!Error::Token(Arc::new(std::io::Error::other("idp down"))).is_permanent());
    }

    #[test]
    fn refusals_carry_their_wire_code() {
        let limited = Error::Server {
            code: "rate_limited".into(),
            message: "slow down".into(),
        };
        assert_eq!(limited.code(), Some("rate_limited"));
        assert_eq!(Error::Evicted { message: String::new() }.code(), Some("evicted"));
        assert_eq!(Error::Disconnected.code(), None);
    }
}
