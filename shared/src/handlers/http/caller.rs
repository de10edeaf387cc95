//! Who is calling the HTTP API: a server with a key, a client with its
//! token, or (where tokens are off) an anonymous client.

use airwave_protocol::http::SERVER_KEY_SCHEME;
use aws_lambda_events::http::HeaderMap;

use crate::auth::{Authenticator, Identity, TokenRejection};
use crate::connection::ConnectionRecord;
use crate::server_keys::{KeyCheck, ServerKeySource};

/// A caller the API admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Presented a server key: may publish to any channel, user or everyone.
    Server,
    /// Presented a client token: the rights its socket would have.
    Client { identity: Identity, source_ip: String },
    /// No token, where the deployment checks none: an anonymous socket's rights.
    Anonymous { source_ip: String },
}

impl Caller {
    /// Reads the `Authorization` header: `Key <server key>` or `Bearer <token>`.
    pub async fn identify(
        headers: &HeaderMap,
        source_ip: &str,
        authenticator: Option<&Authenticator>,
        server_keys: &ServerKeySource,
    ) -> Result<Caller, CallerRefusal> {
        let header = match headers.get("authorization").map(|value| value.to_str()) {
            None => None,
            Some(Ok(value)) => Some(value.trim()),
            Some(Err(_)) => return Err(CallerRefusal::Malformed),
        };
        let Some(header) = header.filter(|value| !value.is_empty()) else {
            return match authenticator {
                // Tokens are checked here, so a request without one is refused.
                Some(_) => Err(CallerRefusal::Token(TokenRejection::Missing)),
                None => Ok(Caller::Anonymous {
                    source_ip: source_ip.to_owned(),
                }),
            };
        };
        let (scheme, credential) = header.split_once(' ').ok_or(CallerRefusal::Malformed)?;
        let credential = credential.trim();
        if scheme.eq_ignore_ascii_case(SERVER_KEY_SCHEME) {
            return match server_keys.check(credential).await {
                KeyCheck::Accepted => Ok(Caller::Server),
                KeyCheck::Refused => Err(CallerRefusal::BadServerKey),
                KeyCheck::Unavailable => Err(CallerRefusal::KeysUnavailable),
            };
        }
        if !scheme.eq_ignore_ascii_case("Bearer") {
            return Err(CallerRefusal::Malformed);
        }
        match authenticator {
            Some(authenticator) => match authenticator.identify(credential).await {
                Ok(identity) => Ok(Caller::Client {
                    identity,
                    source_ip: source_ip.to_owned(),
                }),
                Err(rejection) => Err(CallerRefusal::Token(rejection)),
            },
            // As on a socket, a token is not read where none is checked.
            None => Ok(Caller::Anonymous {
                source_ip: source_ip.to_owned(),
            }),
        }
    }

    /// Whose idempotency keys and HTTP allowance these are: the server, a
    /// user, or an anonymous caller's address.
    pub fn scope(&self) -> String {
        match self {
            Caller::Server => "server".to_owned(),
            Caller::Client { identity, .. } => format!("user:{}", identity.user_id),
            Caller::Anonymous { source_ip } => format!("ip:{source_ip}"),
        }
    }

    /// The rights a client caller's socket would have, as its record would
    /// hold them, for `crate::permissions` and `crate::rate`; `None` for a
    /// server, which may do anything.
    pub fn rights(&self, now: i64) -> Option<ConnectionRecord> {
        let (identity, source_ip) = match self {
            Caller::Server => return None,
            Caller::Client { identity, source_ip } => (Some(identity), source_ip),
            Caller::Anonymous { source_ip } => (None, source_ip),
        };
        Some(ConnectionRecord {
            // The per-connection allowance is the caller's whole over HTTP.
            connection_id: format!("http:{}", self.scope()),
            source_ip: source_ip.clone(),
            user_id: identity.map(|identity| identity.user_id.clone()),
            connected_at_ms: now.saturating_mul(1_000),
            expires_at: now,
            domain_name: None,
            stage: None,
            channels: Vec::new(),
            slot_total: None,
            slot_user: None,
            slot_ip: None,
            allowed_channels: identity.and_then(|identity| identity.allowed_channels.clone()),
            allowed_publish: identity.and_then(|identity| identity.allowed_publish.clone()),
            token_expires_at: identity.map(|identity| identity.token_expires_at),
            operator: identity.is_some_and(|identity| identity.operator),
        })
    }

    /// What the log calls it.
    pub fn kind(&self) -> &'static str {
        match self {
            Caller::Server => "server",
            Caller::Client { .. } => "client",
            Caller::Anonymous { .. } => "anonymous",
        }
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerRefusal {
    /// Not `Key <key>` or `Bearer <token>`.
    Malformed,
    /// A server key that is not one of the keys (or none are configured).
    BadServerKey,
    /// The server keys could not be read from Secrets Manager, ever.
    KeysUnavailable,
    /// The client token was refused, as a handshake would refuse it.
    Token(TokenRejection),
}

impl CallerRefusal {
    pub fn status(self) -> u16 {
        match self {
            CallerRefusal::KeysUnavailable => 503,
            CallerRefusal::Token(rejection) => rejection.status(),
            _ => 401,
        }
    }

    /// The error code: a token's refusal reason, as a refused handshake logs it.
    pub fn code(self) -> &'static str {
        match self {
            CallerRefusal::Malformed => "authorization_malformed",
            CallerRefusal::BadServerKey => "server_key_refused",
            CallerRefusal::KeysUnavailable => "server_keys_unavailable",
            CallerRefusal::Token(rejection) => rejection.as_str(),
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            CallerRefusal::Malformed => {
                "the Authorization header must be `Key <server key>` or `Bearer <client token>`"
            }
            CallerRefusal::BadServerKey => "the server key is not one of this deployment's keys",
            CallerRefusal::KeysUnavailable => "the server keys cannot be read now; retry",
            CallerRefusal::Token(TokenRejection::Missing) => {
                "this deployment needs `Authorization: Bearer <client token>` or `Key <server key>`"
            }
            CallerRefusal::Token(TokenRejection::KeysUnavailable) => "the token keys cannot be read now; retry",
            CallerRefusal::Token(_) => "the client token was refused, as a socket's handshake would refuse it",
        }
    }
}
