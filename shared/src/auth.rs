//! Token authentication on `$connect`: a JWT whose `sub` becomes the
//! connection's user id, signed with the HS256 secret or with a key of an
//! identity provider's JWKS (RS256, ES256 and their longer variants), with
//! `iss` and the audience checked when they are configured, which they must
//! be with a JWKS (see [`crate::config::AuthSettings::check`]).
//!
//! The audience rule (one list, `AIRWAVE_JWT_AUDIENCE`, for every token): a
//! token with an `aud` claim is accepted when `aud` (a string, or a list of
//! strings) names one of the configured audiences. A token without `aud` is
//! accepted only when it is a Cognito-style access token: `token_use` is
//! `"access"` and `client_id` is one of the configured audiences. Anything
//! else is `token_wrong_audience`; an `aud` that names another application is
//! never rescued by a matching `client_id`.
//!
//! Browsers cannot set headers on a WebSocket handshake, so the token comes
//! either in the `token` query parameter or as one of the subprotocols offered
//! in `Sec-WebSocket-Protocol` (`new WebSocket(url, ["airwave.v1", token])`).

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::config::{JwtSecret, OperatorClaim};
use crate::jwks::JwksCache;
use crate::secrets::{HmacKeys, StoredSecret};
use crate::{Config, Error};

pub const TOKEN_QUERY_PARAMETER: &str = "token";
/// Clock skew tolerated on `exp` and `nbf` between the issuer and Lambda.
pub const LEEWAY_SECONDS: u64 = 30;

/// Why a token was refused; each is a 401 with this reason in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    Missing,
    Malformed,
    Expired,
    NotYetValid,
    BadSignature,
    /// Signed correctly, but without a usable `sub` or `exp`.
    InvalidClaims,
    /// An algorithm this deployment does not accept for it (an HS256 token
    /// where only a JWKS is configured, or a key used with another algorithm).
    WrongAlgorithm,
    /// Its `kid` is not among the identity provider's keys, even after a refetch.
    UnknownKey,
    WrongIssuer,
    WrongAudience,
    /// The HS256 secret could not be read from Secrets Manager, and none was
    /// read before: a 503, which clients retry.
    KeysUnavailable,
}

impl TokenRejection {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRejection::Missing => "token_missing",
            TokenRejection::Malformed => "token_malformed",
            TokenRejection::Expired => "token_expired",
            TokenRejection::NotYetValid => "token_not_yet_valid",
            TokenRejection::BadSignature => "token_bad_signature",
            TokenRejection::InvalidClaims => "token_invalid_claims",
            TokenRejection::WrongAlgorithm => "token_wrong_algorithm",
            TokenRejection::UnknownKey => "token_unknown_key",
            TokenRejection::WrongIssuer => "token_wrong_issuer",
            TokenRejection::WrongAudience => "token_wrong_audience",
            TokenRejection::KeysUnavailable => "token_keys_unavailable",
        }
    }

    /// The handshake's status: 401, or 503 when the fault is the server's.
    pub fn status(self) -> u16 {
        match self {
            TokenRejection::KeysUnavailable => 503,
            _ => 401,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    /// Required and checked by the validation; seconds, possibly fractional.
    #[serde(default)]
    exp: Option<f64>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// Who a valid token says the connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    /// The channel patterns of the token's channels claim, when it has one.
    pub allowed_channels: Option<Vec<String>>,
    /// The patterns of its publish claim, when it has one.
    pub allowed_publish: Option<Vec<String>>,
    /// When the token stops being valid (epoch seconds, `exp` plus the
    /// leeway): the connection it opened is closed then.
    pub token_expires_at: i64,
    /// Whether the token carries the operator right (the `stats` action).
    pub operator: bool,
}

/// Algorithms a JWKS key may sign with; HMAC never comes from a JWKS.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Checks `$connect` tokens. Built once per cold start, so the identity
/// provider's keys are fetched once and kept across invocations.
pub struct Authenticator {
    hmac: Option<Hmac>,
    jwks: Option<JwksCache>,
    issuer: Option<String>,
    /// Empty: the audience is not checked (HS256 only without an audience,
    /// or a JWKS with the named opt-out).
    audience: Vec<String>,
    channels_claim: String,
    publish_claim: String,
    operator_claim: OperatorClaim,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Authenticator")
            .field("hs256", &self.hmac)
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Where the HS256 keys come from.
#[derive(Debug)]
enum Hmac {
    /// `AIRWAVE_JWT_SECRET`, for local development.
    Fixed(HmacKeys),
    /// `AIRWAVE_JWT_SECRET_ARN`.
    Stored(StoredSecret),
}

impl Authenticator {
    /// From the configuration, with the AWS SDK's configuration to read the
    /// token secret from Secrets Manager with; `None` when authentication is
    /// off.
    pub fn from_config_and_aws(config: &Config, sdk_config: &aws_config::SdkConfig) -> Result<Option<Self>, Error> {
        let stored = config.auth.jwt_secret_arn.as_ref().map(|arn| {
            StoredSecret::new(
                aws_sdk_secretsmanager::Client::new(sdk_config),
                arn,
                Duration::from_secs(config.auth.jwt_secret_refresh_seconds),
            )
        });
        Self::build(config, stored)
    }

    /// From the configuration alone; `None` when authentication is off. A
    /// secret in Secrets Manager needs [`Authenticator::from_config_and_aws`].
    pub fn from_config(config: &Config) -> Result<Option<Self>, Error> {
        if let Some(arn) = &config.auth.jwt_secret_arn {
            return Err(Error::ConfigInvalid {
                variable: crate::config::JWT_SECRET_ARN,
                value: arn.clone(),
                expected: "a secret read with the AWS SDK: build the authenticator with from_config_and_aws",
            });
        }
        Self::build(config, None)
    }

    fn build(config: &Config, stored: Option<StoredSecret>) -> Result<Option<Self>, Error> {
        let auth = &config.auth;
        if !config.authentication_enabled() {
            return Ok(None);
        }
        // Also for a configuration built in code, not read from the environment.
        auth.check()?;
        let jwks = match &auth.jwks_url {
            Some(url) => Some(
                JwksCache::new(url, Duration::from_secs(auth.jwks_min_refetch_seconds)).map_err(|message| {
                    Error::ConfigInvalid {
                        variable: crate::config::JWKS_URL,
                        value: format!("{url} ({message})"),
                        expected: "an https URL of a JWKS document",
                    }
                })?,
            ),
            None => None,
        };
        let fixed = config
            .jwt_secret
            .as_ref()
            .map(|secret: &JwtSecret| Hmac::Fixed(HmacKeys::one(secret.as_bytes())));
        Ok(Some(Authenticator {
            hmac: fixed.or(stored.map(Hmac::Stored)),
            jwks,
            issuer: auth.issuer.clone(),
            audience: if auth.allow_any_audience {
                Vec::new()
            } else {
                auth.audience.clone()
            },
            channels_claim: auth.channels_claim.clone(),
            publish_claim: auth.publish_claim.clone(),
            operator_claim: auth.operator_claim.clone(),
        }))
    }

    /// Who the token says the connection is, or why it was refused. Only a
    /// token whose key id is not known yet costs a network call (at most one
    /// per refetch interval).
    pub async fn identify(&self, token: &str) -> Result<Identity, TokenRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        let key = if header.alg == Algorithm::HS256 {
            let kid = header.kid.as_deref();
            match self.hmac.as_ref().ok_or(TokenRejection::WrongAlgorithm)? {
                Hmac::Fixed(keys) => keys.key(kid).ok_or(TokenRejection::UnknownKey)?.clone(),
                Hmac::Stored(stored) => {
                    let keys = stored.keys_for(kid).await.ok_or(TokenRejection::KeysUnavailable)?;
                    keys.key(kid).ok_or(TokenRejection::UnknownKey)?.clone()
                }
            }
        } else if ASYMMETRIC.contains(&header.alg) {
            let jwks = self.jwks.as_ref().ok_or(TokenRejection::WrongAlgorithm)?;
            let kid = header.kid.as_deref().ok_or(TokenRejection::Malformed)?;
            let key = jwks.key(kid).await.ok_or(TokenRejection::UnknownKey)?;
            if key.algorithm.is_some_and(|algorithm| algorithm != header.alg) {
                return Err(TokenRejection::WrongAlgorithm);
            }
            key.key
        } else {
            return Err(TokenRejection::WrongAlgorithm);
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer must be present, not only right when present.
        let mut required = vec!["exp", "sub"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        // The audience is checked below, after the signature: a Cognito
        // access token names its audience in `client_id`, not `aud`.
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => TokenRejection::Expired,
            ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
            ErrorKind::InvalidSignature => TokenRejection::BadSignature,
            ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
            ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
            ErrorKind::InvalidAlgorithm => TokenRejection::WrongAlgorithm,
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                TokenRejection::Malformed
            }
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => TokenRejection::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenRejection::WrongAudience,
            _ => TokenRejection::InvalidClaims,
        })?;
        if !self.audience.is_empty() && !names_an_audience(&self.audience, &data.claims.other) {
            return Err(TokenRejection::WrongAudience);
        }
        let subject = data.claims.sub.as_deref().unwrap_or_default().trim();
        if subject.is_empty() || subject.len() > 256 {
            return Err(TokenRejection::InvalidClaims);
        }
        let patterns = |claim: &str| match data.claims.other.get(claim) {
            None => Ok(None),
            Some(value) => crate::permissions::patterns_from_claim(value)
                .map(Some)
                .ok_or(TokenRejection::InvalidClaims),
        };
        let expires = data.claims.exp.ok_or(TokenRejection::InvalidClaims)?;
        Ok(Identity {
            user_id: subject.to_owned(),
            allowed_channels: patterns(&self.channels_claim)?,
            allowed_publish: patterns(&self.publish_claim)?,
            token_expires_at: (expires as i64).saturating_add(LEEWAY_SECONDS as i64),
            operator: grants_operator(&self.operator_claim, data.claims.other.get(&self.operator_claim.claim)),
        })
    }

    /// The token's `sub`, or why it was refused.
    pub async fn verify(&self, token: &str) -> Result<String, TokenRejection> {
        self.identify(token).await.map(|identity| identity.user_id)
    }
}

/// The audience rule of the module documentation: `aud` names one of
/// `audiences`, or there is no `aud` and the token is an access token
/// (`token_use: "access"`) whose `client_id` is one of them.
fn names_an_audience(audiences: &[String], claims: &serde_json::Map<String, serde_json::Value>) -> bool {
    use serde_json::Value;
    let configured = |value: &Value| value.as_str().is_some_and(|named| audiences.iter().any(|a| a == named));
    match claims.get("aud") {
        Some(Value::Array(named)) => named.iter().any(configured),
        Some(named) => configured(named),
        None => {
            claims.get("token_use").and_then(Value::as_str) == Some("access")
                && claims.get("client_id").is_some_and(configured)
        }
    }
}

/// Whether a token's operator claim gives the operator right.
fn grants_operator(rule: &OperatorClaim, claim: Option<&serde_json::Value>) -> bool {
    use serde_json::Value;
    match (&rule.value, claim) {
        (None, Some(Value::Bool(true))) => true,
        (Some(wanted), Some(Value::String(value))) => value == wanted,
        (Some(wanted), Some(Value::Array(values))) => values.iter().any(|value| value.as_str() == Some(wanted)),
        _ => false,
    }
}

/// The token a `$connect` request carries: the `token` query parameter first,
/// then any offered subprotocol shaped like a JWT (three dot-separated parts).
pub fn token_from_request(request: &ApiGatewayWebsocketProxyRequest) -> Option<String> {
    if let Some(token) = request
        .query_string_parameters
        .first(TOKEN_QUERY_PARAMETER)
        .filter(|token| !token.is_empty())
    {
        return Some(token.to_owned());
    }
    offered_subprotocols(request)
        .into_iter()
        .find(|protocol| protocol.split('.').count() == 3)
}

/// The subprotocols the client offered, in order.
pub fn offered_subprotocols(request: &ApiGatewayWebsocketProxyRequest) -> Vec<String> {
    request
        .headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|protocol| protocol.trim().to_owned())
        .filter(|protocol| !protocol.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        crate::time::epoch_seconds_now()
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn verifier() -> Authenticator {
        let config = Config {
            jwt_secret: Some(JwtSecret::new(SECRET)),
            ..Config::default()
        };
        Authenticator::from_config(&config).unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_valid_token_yields_its_subject() {
        let token = sign(json!({"sub": "user-1", "exp": now() + 600}), SECRET);
        assert_eq!(verifier().verify(&token).await, Ok("user-1".to_owned()));
    }

    #[tokio::test]
    async fn each_bad_token_is_refused_with_its_reason() {
        let cases = [
            ("garbage", TokenRejection::Malformed),
            ("a.b.c", TokenRejection::Malformed),
            (
                &sign(json!({"sub": "u", "exp": now() - 3_600}), SECRET),
                TokenRejection::Expired,
            ),
            (
                &sign(json!({"sub": "u", "exp": now() + 7_200, "nbf": now() + 3_600}), SECRET),
                TokenRejection::NotYetValid,
            ),
            (
                &sign(
                    json!({"sub": "u", "exp": now() + 600}),
                    "another-secret-another-secret-xx",
                ),
                TokenRejection::BadSignature,
            ),
            (
                &sign(json!({"exp": now() + 600}), SECRET),
                TokenRejection::InvalidClaims,
            ),
            (&sign(json!({"sub": "u"}), SECRET), TokenRejection::InvalidClaims),
        ];
        for (token, expected) in cases {
            assert_eq!(verifier().verify(token).await, Err(expected), "{token}");
        }
    }

    #[tokio::test]
    async fn a_token_with_an_audience_is_accepted_when_none_is_configured() {
        let token = sign(json!({"sub": "user-2", "exp": now() + 600, "aud": "airwave"}), SECRET);
        assert_eq!(verifier().verify(&token).await, Ok("user-2".to_owned()));
    }

    #[tokio::test]
    async fn a_configured_issuer_and_audience_are_required() {
        let config = Config {
            jwt_secret: Some(JwtSecret::new(SECRET)),
            auth: crate::config::AuthSettings {
                issuer: Some("https://issuer.example".into()),
                audience: vec!["airwave".into()],
                ..Default::default()
            },
            ..Config::default()
        };
        let strict = Authenticator::from_config(&config).unwrap().unwrap();
        let claims = |iss: &str, aud: &str| json!({"sub": "u", "exp": now() + 600, "iss": iss, "aud": aud});
        let good = sign(claims("https://issuer.example", "airwave"), SECRET);
        assert_eq!(strict.verify(&good).await, Ok("u".to_owned()));
        let other_issuer = sign(claims("https://other.example", "airwave"), SECRET);
        assert_eq!(strict.verify(&other_issuer).await, Err(TokenRejection::WrongIssuer));
        let other_audience = sign(claims("https://issuer.example", "another-app"), SECRET);
        assert_eq!(strict.verify(&other_audience).await, Err(TokenRejection::WrongAudience));
        let no_issuer = sign(json!({"sub": "u", "exp": now() + 600, "aud": "airwave"}), SECRET);
        assert_eq!(strict.verify(&no_issuer).await, Err(TokenRejection::WrongIssuer));
    }

    #[tokio::test]
    async fn an_access_token_names_its_audience_in_client_id_and_an_id_token_in_aud() {
        let config = Config {
            jwt_secret: Some(JwtSecret::new(SECRET)),
            auth: crate::config::AuthSettings {
                issuer: Some("https://issuer.example".into()),
                audience: vec!["app-1".into(), "app-2".into()],
                ..Default::default()
            },
            ..Config::default()
        };
        let strict = Authenticator::from_config(&config).unwrap().unwrap();
        let token = |extra: serde_json::Value| {
            let mut claims = json!({"sub": "u", "exp": now() + 600, "iss": "https://issuer.example"});
            if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
                claims.extend(extra.clone());
            }
            sign(claims, SECRET)
        };
        let accepted = [
            json!({"token_use": "access", "client_id": "app-2"}),
            json!({"token_use": "id", "aud": "app-1"}),
            json!({"aud": ["other", "app-2"]}),
        ];
        for claims in accepted {
            assert_eq!(
                strict.verify(&token(claims.clone())).await,
                Ok("u".to_owned()),
                "{claims}"
            );
        }
        let refused = [
            json!({"token_use": "access", "client_id": "someone-elses-app"}),
            // Only an access token names its audience in client_id.
            json!({"token_use": "id", "client_id": "app-1"}),
            json!({"client_id": "app-1"}),
            // An aud that names another application is not rescued by client_id.
            json!({"token_use": "access", "client_id": "app-1", "aud": "another-app"}),
            json!({"aud": []}),
            json!({"aud": null}),
            json!({"aud": 7}),
            json!({}),
        ];
        for claims in refused {
            assert_eq!(
                strict.verify(&token(claims.clone())).await,
                Err(TokenRejection::WrongAudience),
                "{claims}"
            );
        }
    }

    #[test]
    fn a_jwks_configured_in_code_without_an_issuer_or_audience_is_refused_too() {
        let config = Config {
            auth: crate::config::AuthSettings {
                jwks_url: Some("https://idp.example/.well-known/jwks.json".into()),
                ..Default::default()
            },
            ..Config::default()
        };
        let message = Authenticator::from_config(&config).unwrap_err().to_string();
        assert!(message.contains(crate::config::JWT_ISSUER), "{message}");
    }

    #[tokio::test]
    async fn a_token_signed_with_another_algorithm_is_refused() {
        let token = encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub": "u", "exp": now() + 600}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(verifier().verify(&token).await, Err(TokenRejection::WrongAlgorithm));
        // `alg: none` has no signature to check and is never accepted.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"sub":"u","exp":9999999999}"#)
        );
        assert_eq!(verifier().verify(&none).await, Err(TokenRejection::Malformed));
    }

    fn b64(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }
}
