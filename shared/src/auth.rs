//! Token authentication on `$connect`: an HS256 JWT whose `sub` becomes the
//! connection's user id.
//!
//! Browsers cannot set headers on a WebSocket handshake, so the token comes
//! either in the `token` query parameter or as one of the subprotocols offered
//! in `Sec-WebSocket-Protocol` (`new WebSocket(url, ["airwave", token])`).

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::JwtSecret;

/// The subprotocol Airwave answers with when a client offers it.
pub const SUBPROTOCOL: &str = "airwave";
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
    /// Signed correctly, but without a usable `sub` or `exp`, or with another algorithm.
    InvalidClaims,
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
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
}

/// Checks tokens against one secret.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenVerifier { .. }")
    }
}

impl TokenVerifier {
    pub fn new(secret: &JwtSecret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        // No audience is configured; checking `aud` would refuse every token
        // that carries one, which most identity providers' tokens do.
        validation.validate_aud = false;
        TokenVerifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The token's `sub`, or why it was refused.
    pub fn verify(&self, token: &str) -> Result<String, TokenRejection> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TokenRejection::Expired,
                ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
                ErrorKind::InvalidSignature => TokenRejection::BadSignature,
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    TokenRejection::Malformed
                }
                _ => TokenRejection::InvalidClaims,
            })?;
        let subject = data.claims.sub.as_deref().unwrap_or_default().trim();
        if subject.is_empty() || subject.len() > 256 {
            return Err(TokenRejection::InvalidClaims);
        }
        Ok(subject.to_owned())
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

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(&JwtSecret::new(SECRET))
    }

    #[test]
    fn a_valid_token_yields_its_subject() {
        let token = sign(json!({"sub": "user-1", "exp": now() + 600}), SECRET);
        assert_eq!(verifier().verify(&token), Ok("user-1".to_owned()));
    }

    #[test]
    fn each_bad_token_is_refused_with_its_reason() {
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
            assert_eq!(verifier().verify(token), Err(expected), "{token}");
        }
    }

    #[test]
    fn a_token_with_an_audience_is_accepted() {
        let token = sign(json!({"sub": "user-2", "exp": now() + 600, "aud": "airwave"}), SECRET);
        assert_eq!(verifier().verify(&token), Ok("user-2".to_owned()));
    }

    #[test]
    fn a_token_signed_with_another_algorithm_is_refused() {
        let token = encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub": "u", "exp": now() + 600}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(verifier().verify(&token).is_err());
    }
}
