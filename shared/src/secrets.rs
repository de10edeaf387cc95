//! The HS256 token secrets: one secret, or several by key id (`kid`) so that a
//! rotation logs nobody out, held in Secrets Manager and read by the connect
//! function with its own role, never from its environment.
//!
//! The secret's value is the secret itself, or a JSON object of secrets by
//! key id (`{"2026-12": "…", "2026-06": "…"}`). With one secret, a token's
//! `kid`, if any, is not looked at; with several, a token must name one of
//! them in `kid`. The value is read at the first token, used for
//! `AIRWAVE_JWT_SECRET_REFRESH_SECONDS`, and read again then, or at once
//! (at most once a second) for a token whose `kid` is not known yet. A read
//! that fails keeps the keys read before; with none, `crate::auth` refuses
//! tokens as `token_keys_unavailable` (503, which clients retry).
//!
//! [`StoredSecret`] reads any secret this way; the HTTP API's server keys
//! (`crate::server_keys`) are the other one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use tokio::sync::Mutex;

use crate::config::MIN_JWT_SECRET_BYTES;

/// The HMAC keys of one reading of the secret.
#[derive(Clone)]
pub enum HmacKeys {
    One(DecodingKey),
    ByKid(BTreeMap<String, DecodingKey>),
}

impl std::fmt::Debug for HmacKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HmacKeys::One(_) => formatter.write_str("HmacKeys::One(<redacted>)"),
            HmacKeys::ByKid(keys) => formatter
                .debug_tuple("HmacKeys::ByKid")
                .field(&keys.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl HmacKeys {
    /// One secret.
    pub fn one(secret: &[u8]) -> Self {
        HmacKeys::One(DecodingKey::from_secret(secret))
    }

    /// A secret's value: a JSON object of secrets by key id, or else the
    /// secret itself. The error never shows a secret.
    pub fn parse(value: &str) -> Result<Self, String> {
        let trimmed = value.trim_start();
        if !trimmed.starts_with('{') {
            return if value.len() >= MIN_JWT_SECRET_BYTES {
                Ok(HmacKeys::one(value.as_bytes()))
            } else {
                Err(format!("the secret is shorter than {MIN_JWT_SECRET_BYTES} bytes"))
            };
        }
        let by_kid: BTreeMap<String, String> = serde_json::from_str(trimmed)
            .map_err(|_| "the value is not a JSON object of secrets (strings) by key id".to_owned())?;
        if by_kid.is_empty() {
            return Err("the JSON object holds no secret".to_owned());
        }
        let mut keys = BTreeMap::new();
        for (kid, secret) in by_kid {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(format!(
                    "the secret of key id {kid:?} is shorter than {MIN_JWT_SECRET_BYTES} bytes"
                ));
            }
            keys.insert(kid, DecodingKey::from_secret(secret.as_bytes()));
        }
        Ok(HmacKeys::ByKid(keys))
    }

    /// The key a token with `kid` is checked with, if there is one.
    pub fn key(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        match self {
            HmacKeys::One(key) => Some(key),
            HmacKeys::ByKid(keys) => kid.and_then(|kid| keys.get(kid)),
        }
    }
}

/// What a secret's value is read into: the HS256 keys, or the server keys.
pub trait SecretValue: Sized + Send + Sync {
    /// The value read, or why it is unusable (never showing the secret).
    fn parse(value: &str) -> Result<Self, String>;
}

impl SecretValue for HmacKeys {
    fn parse(value: &str) -> Result<Self, String> {
        HmacKeys::parse(value)
    }
}

/// A secret in Secrets Manager, read when needed and kept between
/// invocations.
pub struct StoredSecret<T = HmacKeys> {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
    refresh: Duration,
    read: Mutex<Reading<T>>,
}

struct Reading<T> {
    /// Shared with the requests being checked, so a check copies no key.
    value: Option<Arc<T>>,
    /// When the last read started (a failed one too).
    at: Option<Instant>,
}

/// No two reads within this, however many unknown keys arrive.
const MIN_REREAD: Duration = Duration::from_secs(1);

impl<T> std::fmt::Debug for StoredSecret<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StoredSecret")
            .field("arn", &self.arn)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

impl<T: SecretValue> StoredSecret<T> {
    pub fn new(client: aws_sdk_secretsmanager::Client, arn: impl Into<String>, refresh: Duration) -> Self {
        StoredSecret {
            client,
            arn: arn.into(),
            refresh,
            read: Mutex::new(Reading { value: None, at: None }),
        }
    }

    /// The value read within the refresh interval, read again first when it
    /// is older, or when `lacks` says it cannot answer (a key rotated in
    /// since), at most once a second. `None` when it was never read.
    pub async fn current(&self, lacks: impl Fn(&T) -> bool) -> Option<Arc<T>> {
        let mut reading = self.read.lock().await;
        let since = reading.at.map(|at| at.elapsed());
        let stale = since.is_none_or(|since| since >= self.refresh);
        let unknown = reading.value.as_deref().is_some_and(&lacks);
        if stale || (unknown && since.is_none_or(|since| since >= MIN_REREAD)) {
            reading.at = Some(Instant::now());
            match self.read_secret().await {
                Ok(value) => reading.value = Some(Arc::new(value)),
                // The value read before stays in use: a Secrets Manager
                // outage must not log everyone out.
                Err(error) => tracing::error!(arn = %self.arn, %error, "a secret could not be read"),
            }
        }
        reading.value.clone()
    }

    async fn read_secret(&self) -> Result<T, String> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.arn)
            .send()
            .await
            .map_err(|error| aws_sdk_secretsmanager::error::DisplayErrorContext(&error).to_string())?;
        let value = output
            .secret_string()
            .ok_or_else(|| "the secret has no string value".to_owned())?;
        T::parse(value)
    }
}

impl StoredSecret<HmacKeys> {
    /// The keys to check a token with `kid` against: those read within the
    /// refresh interval, unless they do not know `kid`.
    pub async fn keys_for(&self, kid: Option<&str>) -> Option<Arc<HmacKeys>> {
        self.current(|keys| keys.key(kid).is_none()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn one_secret_checks_every_token_whatever_its_kid() {
        let keys = HmacKeys::parse(LONG).unwrap();
        assert!(keys.key(None).is_some());
        assert!(keys.key(Some("any")).is_some());
    }

    #[test]
    fn secrets_by_kid_need_a_known_kid() {
        let value = format!(r#"{{"2026-12": "{LONG}", "2026-06": "{LONG}x"}}"#);
        let keys = HmacKeys::parse(&value).unwrap();
        assert!(keys.key(Some("2026-12")).is_some());
        assert!(keys.key(Some("2026-06")).is_some());
        assert!(keys.key(Some("2025-12")).is_none());
        assert!(keys.key(None).is_none());
    }

    #[test]
    fn a_bad_value_is_refused_without_showing_a_secret() {
        for value in [
            "short".to_owned(),
            "{}".to_owned(),
            r#"{"k": 5}"#.to_owned(),
            r#"{"k": "short-secret-value"}"#.to_owned(),
            "{not json".to_owned(),
        ] {
            let message = HmacKeys::parse(&value).unwrap_err();
            assert!(!message.contains("short-secret-value"), "{message}");
        }
    }
}
