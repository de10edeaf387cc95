//! Configuration, read once per cold start from the environment.
//!
//! Each file holds one idea: the variables' names, their defaults and bounds,
//! the forms they expect, the environment as serde reads it (with figment),
//! the checks of a value, the making of a `Config` from both, and the settings
//! structs by what they govern. Every public item is re-exported here, as
//! `config::NAME`.

mod auth;
mod defaults;
mod env;
mod forms;
mod history;
mod limits;
mod names;
mod raw;
mod timeouts;
mod values;

#[cfg(test)]
mod tests;

pub use auth::{AuthSettings, JwtSecret, OperatorClaim};
pub use defaults::*;
pub use history::HistorySettings;
pub use limits::{AdmissionLimits, PublishRate, UserCapMode};
pub use names::*;
pub use timeouts::AwsTimeouts;

use crate::Error;
use forms::{ENDPOINT_FORM, FAILURE_QUEUE_URL_FORM};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub connections_table: String,
    pub messages_table: String,
    pub subscriptions_table: String,
    pub connection_ttl_seconds: u64,
    /// Where the Management API lives; `None` is allowed for functions that never post.
    pub management_endpoint: Option<String>,
    pub fanout_concurrency: usize,
    /// Attempts per post, first included, for throttling (429) and 5xx answers.
    pub post_max_attempts: u32,
    /// Posts per second one fan-out starts at most (the account's quota);
    /// 0 does not pace.
    pub post_quota_per_second: u32,
    pub max_channels_per_connection: usize,
    pub allow_client_publish: bool,
    /// Whether a connection without a user (no token) may publish, where
    /// clients may publish at all.
    pub allow_anonymous_publish: bool,
    /// Holds the per-IP attempt counters and the open-connection counters.
    pub admission_table: String,
    pub admission: AdmissionLimits,
    /// `Some` turns token authentication on for `$connect`.
    pub jwt_secret: Option<JwtSecret>,
    /// Whether clients may send the `stats` action.
    pub allow_stats: bool,
    pub history: HistorySettings,
    /// Tokens from identity providers, and the claims every token must carry.
    pub auth: AuthSettings,
    /// Client publishes each connection, user and source IP may make per window.
    pub publish_rate: PublishRate,
    /// What a full per-user cap does to a new connection.
    pub user_cap_mode: UserCapMode,
    /// How long one count of the stats is answered from.
    pub stats_max_age_seconds: u64,
    /// The bounds on every AWS call.
    pub aws_timeouts: AwsTimeouts,
    /// How long a message item is kept when its writer set no `expires_at`.
    pub message_retention_seconds: u64,
    /// The SQS queue poison stream records are reported to (the stream
    /// mappings' on-failure destination); required by the stream-processor.
    pub failure_queue_url: Option<String>,
    /// The keys servers publish over the HTTP API with, from the environment
    /// (local stacks); see [`crate::server_keys`].
    pub server_keys: Option<crate::server_keys::ServerKeys>,
    /// The Secrets Manager secret holding them, in a deployment.
    pub server_key_secret_arn: Option<String>,
    /// How young a connection must be for API Gateway's 410 about it to be
    /// doubted: it answers 410 while a handshake is still in progress too.
    /// Not read from the environment; tests shorten it.
    pub connecting_window: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connections_table: DEFAULT_CONNECTIONS_TABLE.to_owned(),
            messages_table: DEFAULT_MESSAGES_TABLE.to_owned(),
            subscriptions_table: DEFAULT_SUBSCRIPTIONS_TABLE.to_owned(),
            connection_ttl_seconds: DEFAULT_CONNECTION_TTL_SECONDS,
            management_endpoint: None,
            fanout_concurrency: DEFAULT_FANOUT_CONCURRENCY,
            post_max_attempts: DEFAULT_POST_MAX_ATTEMPTS,
            post_quota_per_second: DEFAULT_POST_QUOTA_PER_SECOND,
            max_channels_per_connection: DEFAULT_MAX_CHANNELS_PER_CONNECTION,
            allow_client_publish: DEFAULT_ALLOW_CLIENT_PUBLISH,
            allow_anonymous_publish: DEFAULT_ALLOW_ANONYMOUS_PUBLISH,
            admission_table: DEFAULT_ADMISSION_TABLE.to_owned(),
            admission: AdmissionLimits::default(),
            jwt_secret: None,
            allow_stats: false,
            history: HistorySettings::default(),
            auth: AuthSettings::default(),
            publish_rate: PublishRate::default(),
            user_cap_mode: UserCapMode::default(),
            stats_max_age_seconds: DEFAULT_STATS_MAX_AGE_SECONDS,
            message_retention_seconds: DEFAULT_MESSAGE_RETENTION_SECONDS,
            aws_timeouts: AwsTimeouts::default(),
            failure_queue_url: None,
            server_keys: None,
            server_key_secret_arn: None,
            connecting_window: CONNECTING_WINDOW,
        }
    }
}

impl Config {
    /// The queue poison records are reported to, for the stream-processor:
    /// without it a record that can never succeed would have nowhere to go
    /// but the log, so the function refuses to start instead.
    pub fn require_failure_queue_url(&self) -> Result<&str, Error> {
        self.failure_queue_url.as_deref().ok_or(Error::ConfigMissing {
            variable: FAILURE_QUEUE_URL,
            expected: FAILURE_QUEUE_URL_FORM,
        })
    }

    /// What `$connect` needs beyond well-formed values: a per-user cap counts
    /// authenticated users, so it needs a token secret. Only `$connect` enforces
    /// caps; the message function reads the caps just to report them in stats,
    /// and the template does not give it the secret.
    pub fn require_admission_settings(&self) -> Result<(), Error> {
        if self.admission.max_connections_per_user > 0 && !self.authentication_enabled() {
            // Without tokens there are no users, and a cap that silently does
            // nothing is worse than a refusal to start.
            return Err(Error::ConfigInvalid {
                variable: MAX_CONNECTIONS_PER_USER,
                value: self.admission.max_connections_per_user.to_string(),
                expected: "0 unless AIRWAVE_JWT_SECRET, AIRWAVE_JWT_SECRET_ARN or AIRWAVE_JWKS_URL is set: the per-user cap counts authenticated users",
            });
        }
        if self.user_cap_mode == UserCapMode::EvictOldest {
            if self.admission.max_connections_per_user == 0 {
                return Err(Error::ConfigInvalid {
                    variable: USER_CAP_MODE,
                    value: "evict_oldest".to_owned(),
                    expected: "refuse unless AIRWAVE_MAX_CONNECTIONS_PER_USER is above 0: eviction makes room under the per-user cap",
                });
            }
            // Evicting closes the oldest connection through the Management API.
            self.require_management_endpoint()?;
        }
        Ok(())
    }

    /// Whether `$connect` requires a token: an HS256 secret (in the
    /// environment or in Secrets Manager), a JWKS, or both.
    pub fn authentication_enabled(&self) -> bool {
        self.jwt_secret.is_some() || self.auth.jwt_secret_arn.is_some() || self.auth.jwks_url.is_some()
    }

    /// The Management API endpoint, for the functions that post to connections.
    pub fn require_management_endpoint(&self) -> Result<&str, Error> {
        self.management_endpoint.as_deref().ok_or(Error::ConfigMissing {
            variable: MANAGEMENT_ENDPOINT,
            expected: ENDPOINT_FORM,
        })
    }
}
