//! Tokens as an identity provider signs them, and the authenticator that
//! checks them.

use airwave_shared::Config;
use serde_json::{json, Value};

/// The authenticator the connect function builds at cold start, for `config`.
pub fn authenticator(config: &Config) -> Option<airwave_shared::auth::Authenticator> {
    airwave_shared::auth::Authenticator::from_config(config).expect("a valid authentication setup")
}

/// An HS256 token over `claims`, signed with `secret` as an identity provider would.
pub fn signed_token(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of a JSON object cannot fail")
}

/// An HS256 token for `user`, valid for ten minutes, naming the secret it is
/// signed with in `kid`, as an issuer does during a rotation.
pub fn token_with_kid(secret: &str, kid: &str, user: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    let exp = airwave_shared::time::epoch_seconds_now() + 600;
    jsonwebtoken::encode(
        &header,
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of a JSON object cannot fail")
}

/// A token for `user` that is valid for the next ten minutes.
pub fn token_for(secret: &str, user: &str) -> String {
    let exp = airwave_shared::time::epoch_seconds_now() + 600;
    signed_token(secret, &json!({"sub": user, "exp": exp}))
}
