//! Server keys: the credential a backend publishes over the HTTP API with
//! (`Authorization: Key <key>`). A key is a random string of at least
//! [`MIN_SERVER_KEY_BYTES`] printable characters without a `.`, so no client
//! token (a JWT, three dot-separated parts) can ever be one, and a client
//! token is never read as a key: the two travel under different schemes.
//!
//! The keys come from a Secrets Manager secret (`AIRWAVE_SERVER_KEY_SECRET_ARN`)
//! whose value lists one or more keys, so a key can be rotated without a
//! refused request: add the new key, move the backends to it, remove the old
//! one. `AIRWAVE_SERVER_KEYS` holds them in the environment instead, for
//! local stacks and tests.

use std::sync::Arc;

use crate::secrets::{SecretValue, StoredSecret};

/// How long keys read from Secrets Manager are used before they are read
/// again; an unknown key is looked up at once (at most once a second).
pub const SERVER_KEYS_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);

/// The shortest key accepted: 256 bits of a hex or base64 random string.
pub const MIN_SERVER_KEY_BYTES: usize = 32;

/// The keys a server may present. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKeys(Vec<String>);

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "ServerKeys(<{} redacted>)", self.0.len())
    }
}

impl ServerKeys {
    /// Keys separated by commas, whitespace or newlines, or a JSON array of
    /// strings. The error never shows a key.
    pub fn parse(value: &str) -> Result<Self, String> {
        let keys: Vec<String> = if value.trim_start().starts_with('[') {
            serde_json::from_str(value.trim())
                .map_err(|_| "the value is not a JSON array of keys (strings)".to_owned())?
        } else {
            value
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if keys.is_empty() {
            return Err("the value holds no key".to_owned());
        }
        for (n, key) in keys.iter().enumerate() {
            if key.len() < MIN_SERVER_KEY_BYTES {
                return Err(format!("key {} is shorter than {MIN_SERVER_KEY_BYTES} bytes", n + 1));
            }
            if key.contains('.') || !key.bytes().all(|byte| byte.is_ascii_graphic() && byte != b',') {
                return Err(format!(
                    "key {} must be printable ASCII without '.', ',' or spaces",
                    n + 1
                ));
            }
        }
        Ok(ServerKeys(keys))
    }

    /// Whether `presented` is one of the keys. Every key is compared in
    /// full, so the time taken says nothing about how much of one matched.
    pub fn accepts(&self, presented: &str) -> bool {
        self.0.iter().fold(false, |found, key| {
            found | constant_time_eq(key.as_bytes(), presented.as_bytes())
        })
    }
}

impl SecretValue for ServerKeys {
    fn parse(value: &str) -> Result<Self, String> {
        ServerKeys::parse(value)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}

/// Where the HTTP function finds the server keys.
#[derive(Debug)]
pub enum ServerKeySource {
    /// None configured: only client tokens may publish over HTTP.
    None,
    /// From the environment.
    Fixed(ServerKeys),
    /// From Secrets Manager, read again as [`StoredSecret`] does.
    Stored(StoredSecret<ServerKeys>),
}

/// The outcome of checking a presented key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    Accepted,
    Refused,
    /// The secret could not be read, and never was: a 503, which callers retry.
    Unavailable,
}

impl ServerKeySource {
    /// The keys the configuration names: from the environment, from Secrets
    /// Manager (read with the function's own role, again every
    /// [`SERVER_KEYS_REFRESH`] and at once for an unknown key), or none.
    pub fn from_config_and_aws(config: &crate::Config, sdk_config: &aws_config::SdkConfig) -> Self {
        match (&config.server_keys, &config.server_key_secret_arn) {
            (Some(keys), _) => ServerKeySource::Fixed(keys.clone()),
            (None, Some(arn)) => ServerKeySource::Stored(StoredSecret::new(
                aws_sdk_secretsmanager::Client::new(sdk_config),
                arn,
                SERVER_KEYS_REFRESH,
            )),
            (None, None) => ServerKeySource::None,
        }
    }

    pub async fn check(&self, presented: &str) -> KeyCheck {
        let keys: Option<Arc<ServerKeys>> = match self {
            ServerKeySource::None => return KeyCheck::Refused,
            ServerKeySource::Fixed(keys) => {
                return if keys.accepts(presented) {
                    KeyCheck::Accepted
                } else {
                    KeyCheck::Refused
                }
            }
            ServerKeySource::Stored(stored) => stored.current(|keys| !keys.accepts(presented)).await,
        };
        match keys {
            Some(keys) if keys.accepts(presented) => KeyCheck::Accepted,
            Some(_) => KeyCheck::Refused,
            None => KeyCheck::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "sk_0123456789abcdef0123456789abcdef";
    const KEY_B: &str = "sk_fedcba9876543210fedcba9876543210";

    #[test]
    fn listed_keys_are_accepted_and_nothing_else() {
        for value in [
            format!("{KEY_A},{KEY_B}"),
            format!("{KEY_A}\n{KEY_B}\n"),
            format!(r#"["{KEY_A}","{KEY_B}"]"#),
        ] {
            let keys = ServerKeys::parse(&value).unwrap();
            assert!(keys.accepts(KEY_A) && keys.accepts(KEY_B), "{value}");
            assert!(!keys.accepts(&KEY_A[..KEY_A.len() - 1]));
            assert!(!keys.accepts(""));
            assert!(!keys.accepts(&format!("{KEY_A}x")));
        }
    }

    #[test]
    fn a_key_that_could_be_a_token_or_is_short_is_refused_without_showing_it() {
        for value in [
            "",
            "short-key",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
            "[1]",
        ] {
            let why = ServerKeys::parse(value).unwrap_err();
            assert!(value.is_empty() || !why.contains(value), "{why}");
        }
        assert!(!format!("{:?}", ServerKeys::parse(KEY_A).unwrap()).contains(KEY_A));
    }

    #[tokio::test]
    async fn without_keys_every_key_is_refused() {
        assert_eq!(ServerKeySource::None.check(KEY_A).await, KeyCheck::Refused);
        let fixed = ServerKeySource::Fixed(ServerKeys::parse(KEY_A).unwrap());
        assert_eq!(fixed.check(KEY_A).await, KeyCheck::Accepted);
        assert_eq!(fixed.check(KEY_B).await, KeyCheck::Refused);
    }
}
