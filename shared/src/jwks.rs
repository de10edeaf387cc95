//! Signing keys of an identity provider (a Cognito user pool, Auth0, any OIDC
//! issuer), read from its JWKS URL and kept for the life of the process, so a
//! warm function verifies tokens without a network call.
//!
//! A token whose `kid` is not known triggers one refetch, at most one per
//! [`JwksCache::min_refetch`]: rotating keys needs no redeploy, and a flood of
//! tokens with made-up ids cannot turn into a flood of requests. When the
//! endpoint cannot be reached, the keys already known keep working and a new
//! key fails closed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

/// A JWKS document larger than this is refused (providers publish a few KB).
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The longest a fetch may take: a `$connect` waits for it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// One usable key.
#[derive(Clone)]
pub struct VerificationKey {
    pub key: DecodingKey,
    /// The algorithm the key is for, when the JWKS says; a token must use it.
    pub algorithm: Option<Algorithm>,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The keys of one JWKS URL.
pub struct JwksCache {
    url: hyper::Uri,
    client: HttpsClient,
    keys: RwLock<HashMap<String, VerificationKey>>,
    /// When the last fetch started; held while fetching, so callers share one.
    last_fetch: Mutex<Option<Instant>>,
    min_refetch: Duration,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("JwksCache")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Why the keys could not be refreshed (logged; the token then fails closed).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("the request failed: {0}")]
    Request(String),
    #[error("the endpoint answered HTTP {0}")]
    Status(u16),
    #[error("the document is not a JWKS: {0}")]
    Document(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl JwksCache {
    /// A cache for `url` (already validated by the configuration).
    pub fn new(url: &str, min_refetch: Duration) -> Result<Self, String> {
        let url: hyper::Uri = url.parse().map_err(|error| format!("{error}"))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(JwksCache {
            url,
            client,
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
            min_refetch,
        })
    }

    pub fn min_refetch(&self) -> Duration {
        self.min_refetch
    }

    /// The key with id `kid`: from memory, or after one refetch when it is
    /// unknown and the last fetch is old enough. `None` fails the token.
    pub async fn key(&self, kid: &str) -> Option<VerificationKey> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Some(key.clone());
        }
        {
            let mut last_fetch = self.last_fetch.lock().await;
            // Another caller may have fetched while this one waited for the lock.
            if let Some(key) = self.keys.read().await.get(kid) {
                return Some(key.clone());
            }
            if last_fetch.is_some_and(|at| at.elapsed() < self.min_refetch) {
                tracing::info!(
                    kid,
                    "unknown signing key; the keys were fetched too recently to fetch again"
                );
                return None;
            }
            *last_fetch = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    tracing::info!(url = %self.url, keys = keys.len(), "signing keys fetched");
                    *self.keys.write().await = keys;
                }
                Err(error) => {
                    // The keys known before stay: only new ones fail closed.
                    tracing::warn!(url = %self.url, error = %error, "signing keys could not be fetched");
                }
            }
        }
        self.keys.read().await.get(kid).cloned()
    }

    async fn fetch(&self) -> Result<HashMap<String, VerificationKey>, FetchError> {
        let request = async {
            let response = self
                .client
                .get(self.url.clone())
                .await
                .map_err(|error| FetchError::Request(error.to_string()))?;
            if !response.status().is_success() {
                return Err(FetchError::Status(response.status().as_u16()));
            }
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|error| FetchError::Request(error.to_string()))?
                .to_bytes();
            Ok(body)
        };
        let body = tokio::time::timeout(FETCH_TIMEOUT, request)
            .await
            .map_err(|_| FetchError::Timeout(FETCH_TIMEOUT))??;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|error| FetchError::Document(error.to_string()))?;
        Ok(usable_keys(&set))
    }
}

/// The keys of `set` that can verify signatures, by id. Keys without an id, for
/// encryption only, or of a kind this build cannot use are left out (logged).
pub fn usable_keys(set: &JwkSet) -> HashMap<String, VerificationKey> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            tracing::debug!("skipping a JWKS key without a kid");
            continue;
        };
        if is_encryption_only(jwk) {
            continue;
        }
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                let algorithm = jwk
                    .common
                    .key_algorithm
                    .and_then(|algorithm| algorithm.to_string().parse::<Algorithm>().ok());
                keys.insert(kid, VerificationKey { key, algorithm });
            }
            Err(error) => tracing::warn!(kid, error = %error, "skipping a JWKS key that cannot verify"),
        }
    }
    keys
}

fn is_encryption_only(jwk: &Jwk) -> bool {
    matches!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
    )
}
