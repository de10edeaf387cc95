//! Token authentication: the HS256 secret, the identity provider, and the
//! claims every token must carry.

use super::forms::{ANY_AUDIENCE_FORM, JWKS_AUDIENCE_FORM, JWKS_ISSUER_FORM};
use super::{
    DEFAULT_CHANNELS_CLAIM, DEFAULT_JWKS_MIN_REFETCH_SECONDS, DEFAULT_JWT_SECRET_REFRESH_SECONDS,
    DEFAULT_OPERATOR_CLAIM, DEFAULT_PUBLISH_CLAIM, JWT_ALLOW_ANY_AUDIENCE, JWT_AUDIENCE, JWT_ISSUER,
};
use crate::Error;

/// The token claim that gives the operator right (the `stats` action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorClaim {
    pub claim: String,
    /// `None`: the claim must be `true`. `Some(v)`: the claim must be the
    /// string `v` or a list holding it (group claims such as `cognito:groups`).
    pub value: Option<String>,
}

impl Default for OperatorClaim {
    fn default() -> Self {
        OperatorClaim {
            claim: DEFAULT_OPERATOR_CLAIM.to_owned(),
            value: None,
        }
    }
}

/// JWKS verification and the `iss` / `aud` checks; see [`crate::auth`].
///
/// With a JWKS URL, tokens fail closed: an issuer is required, and an
/// audience unless `allow_any_audience` says otherwise ([`AuthSettings::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    /// The audiences a token must name (in `aud`, or a Cognito access
    /// token's `client_id`). Empty: not checked, which only an HS256-only
    /// deployment or `allow_any_audience` may have.
    pub audience: Vec<String>,
    /// The named opt-out: tokens of the JWKS's provider for any application
    /// are accepted (the issuer is still checked).
    pub allow_any_audience: bool,
    pub jwks_min_refetch_seconds: u64,
    /// The Secrets Manager secret holding the HS256 secret, or secrets by key
    /// id (`kid`), read by the function with its own role (never in its
    /// environment), and read again every `jwt_secret_refresh_seconds`.
    pub jwt_secret_arn: Option<String>,
    pub jwt_secret_refresh_seconds: u64,
    /// The token claim listing the channels a connection may subscribe to.
    pub channels_claim: String,
    /// The token claim listing the channels a connection may publish to.
    pub publish_claim: String,
    pub operator_claim: OperatorClaim,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            jwks_url: None,
            issuer: None,
            audience: Vec::new(),
            allow_any_audience: false,
            jwks_min_refetch_seconds: DEFAULT_JWKS_MIN_REFETCH_SECONDS,
            jwt_secret_arn: None,
            jwt_secret_refresh_seconds: DEFAULT_JWT_SECRET_REFRESH_SECONDS,
            channels_claim: DEFAULT_CHANNELS_CLAIM.to_owned(),
            publish_claim: DEFAULT_PUBLISH_CLAIM.to_owned(),
            operator_claim: OperatorClaim::default(),
        }
    }
}

impl AuthSettings {
    /// Whether tokens of an identity provider fail closed. A JWKS is often
    /// shared (a Cognito user pool, an Auth0 tenant, a public OIDC issuer),
    /// and a signature only says the provider minted the token, not for whom:
    /// the issuer ties the key set to its provider, and the audience ties the
    /// token to this deployment. So a JWKS URL needs an issuer, always, and an
    /// audience unless `allow_any_audience` opts out of that check by name.
    pub fn check(&self) -> Result<(), Error> {
        if self.allow_any_audience && !self.audience.is_empty() {
            return Err(Error::ConfigInvalid {
                variable: JWT_ALLOW_ANY_AUDIENCE,
                value: "true".to_owned(),
                expected: ANY_AUDIENCE_FORM,
            });
        }
        if self.jwks_url.is_none() {
            return Ok(());
        }
        if self.issuer.is_none() {
            return Err(Error::ConfigMissing {
                variable: JWT_ISSUER,
                expected: JWKS_ISSUER_FORM,
            });
        }
        if self.audience.is_empty() && !self.allow_any_audience {
            return Err(Error::ConfigMissing {
                variable: JWT_AUDIENCE,
                expected: JWKS_AUDIENCE_FORM,
            });
        }
        Ok(())
    }
}

/// The token-signing secret. Its `Debug` never shows the value, so a logged
/// config cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret(String);

impl JwtSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        JwtSecret(secret.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("JwtSecret(<redacted>)")
    }
}
