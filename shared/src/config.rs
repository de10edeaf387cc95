//! Configuration, read once per cold start from the environment.

use crate::Error;

pub const CONNECTIONS_TABLE: &str = "AIRWAVE_CONNECTIONS_TABLE";
pub const MESSAGES_TABLE: &str = "AIRWAVE_MESSAGES_TABLE";
pub const SUBSCRIPTIONS_TABLE: &str = "AIRWAVE_SUBSCRIPTIONS_TABLE";
pub const CONNECTION_TTL_SECONDS: &str = "AIRWAVE_CONNECTION_TTL_SECONDS";
pub const MANAGEMENT_ENDPOINT: &str = "AIRWAVE_MANAGEMENT_ENDPOINT";
pub const FANOUT_CONCURRENCY: &str = "AIRWAVE_FANOUT_CONCURRENCY";
pub const POST_MAX_ATTEMPTS: &str = "AIRWAVE_POST_MAX_ATTEMPTS";
pub const POST_QUOTA_PER_SECOND: &str = "AIRWAVE_POST_QUOTA_PER_SECOND";
pub const MAX_CHANNELS_PER_CONNECTION: &str = "AIRWAVE_MAX_CHANNELS_PER_CONNECTION";
pub const ALLOW_CLIENT_PUBLISH: &str = "AIRWAVE_ALLOW_CLIENT_PUBLISH";
pub const ADMISSION_TABLE: &str = "AIRWAVE_ADMISSION_TABLE";
pub const CONNECT_ATTEMPTS_PER_IP: &str = "AIRWAVE_CONNECT_ATTEMPTS_PER_IP";
pub const CONNECT_WINDOW_SECONDS: &str = "AIRWAVE_CONNECT_WINDOW_SECONDS";
pub const MAX_CONNECTIONS: &str = "AIRWAVE_MAX_CONNECTIONS";
pub const MAX_CONNECTIONS_PER_USER: &str = "AIRWAVE_MAX_CONNECTIONS_PER_USER";
pub const MAX_CONNECTIONS_PER_IP: &str = "AIRWAVE_MAX_CONNECTIONS_PER_IP";
pub const JWT_SECRET: &str = "AIRWAVE_JWT_SECRET";
pub const ALLOW_STATS: &str = "AIRWAVE_ALLOW_STATS";
pub const JWKS_URL: &str = "AIRWAVE_JWKS_URL";
pub const JWT_ISSUER: &str = "AIRWAVE_JWT_ISSUER";
pub const JWT_AUDIENCE: &str = "AIRWAVE_JWT_AUDIENCE";
pub const JWT_ALLOW_ANY_AUDIENCE: &str = "AIRWAVE_JWT_ALLOW_ANY_AUDIENCE";
pub const JWKS_MIN_REFETCH_SECONDS: &str = "AIRWAVE_JWKS_MIN_REFETCH_SECONDS";
pub const CHANNELS_CLAIM: &str = "AIRWAVE_CHANNELS_CLAIM";
pub const PUBLISH_CLAIM: &str = "AIRWAVE_PUBLISH_CLAIM";
pub const HISTORY_TABLE: &str = "AIRWAVE_HISTORY_TABLE";
pub const HISTORY_SIZE: &str = "AIRWAVE_HISTORY_SIZE";
pub const HISTORY_TTL_SECONDS: &str = "AIRWAVE_HISTORY_TTL_SECONDS";
pub const OPERATOR_CLAIM: &str = "AIRWAVE_OPERATOR_CLAIM";
pub const PUBLISH_RATE_LIMIT: &str = "AIRWAVE_PUBLISH_RATE_LIMIT";
pub const PUBLISH_RATE_WINDOW_SECONDS: &str = "AIRWAVE_PUBLISH_RATE_WINDOW_SECONDS";
pub const PUBLISH_RATE_LIMIT_PER_USER: &str = "AIRWAVE_PUBLISH_RATE_LIMIT_PER_USER";
pub const PUBLISH_RATE_LIMIT_PER_IP: &str = "AIRWAVE_PUBLISH_RATE_LIMIT_PER_IP";
pub const ALLOW_ANONYMOUS_PUBLISH: &str = "AIRWAVE_ALLOW_ANONYMOUS_PUBLISH";
pub const USER_CAP_MODE: &str = "AIRWAVE_USER_CAP_MODE";
pub const STATS_MAX_AGE_SECONDS: &str = "AIRWAVE_STATS_MAX_AGE_SECONDS";
pub const AWS_ATTEMPT_TIMEOUT_MS: &str = "AIRWAVE_AWS_ATTEMPT_TIMEOUT_MS";
pub const AWS_OPERATION_TIMEOUT_MS: &str = "AIRWAVE_AWS_OPERATION_TIMEOUT_MS";
pub const MESSAGE_RETENTION_SECONDS: &str = "AIRWAVE_MESSAGE_RETENTION_SECONDS";
pub const FAILURE_QUEUE_URL: &str = "AIRWAVE_FAILURE_QUEUE_URL";

/// Every variable the code reads, for documentation and template checks.
pub const ALL_VARIABLES: &[&str] = &[
    CONNECTIONS_TABLE,
    MESSAGES_TABLE,
    SUBSCRIPTIONS_TABLE,
    CONNECTION_TTL_SECONDS,
    MANAGEMENT_ENDPOINT,
    FANOUT_CONCURRENCY,
    POST_MAX_ATTEMPTS,
    POST_QUOTA_PER_SECOND,
    MAX_CHANNELS_PER_CONNECTION,
    ALLOW_CLIENT_PUBLISH,
    ADMISSION_TABLE,
    CONNECT_ATTEMPTS_PER_IP,
    CONNECT_WINDOW_SECONDS,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_USER,
    MAX_CONNECTIONS_PER_IP,
    JWT_SECRET,
    ALLOW_STATS,
    HISTORY_TABLE,
    HISTORY_SIZE,
    HISTORY_TTL_SECONDS,
    JWKS_URL,
    JWT_ISSUER,
    JWT_AUDIENCE,
    JWT_ALLOW_ANY_AUDIENCE,
    JWKS_MIN_REFETCH_SECONDS,
    CHANNELS_CLAIM,
    PUBLISH_CLAIM,
    OPERATOR_CLAIM,
    PUBLISH_RATE_LIMIT,
    PUBLISH_RATE_WINDOW_SECONDS,
    PUBLISH_RATE_LIMIT_PER_USER,
    PUBLISH_RATE_LIMIT_PER_IP,
    ALLOW_ANONYMOUS_PUBLISH,
    USER_CAP_MODE,
    STATS_MAX_AGE_SECONDS,
    AWS_ATTEMPT_TIMEOUT_MS,
    AWS_OPERATION_TIMEOUT_MS,
    MESSAGE_RETENTION_SECONDS,
    FAILURE_QUEUE_URL,
];

pub const DEFAULT_CONNECTIONS_TABLE: &str = "airwave-connections";
pub const DEFAULT_MESSAGES_TABLE: &str = "airwave-messages";
pub const DEFAULT_SUBSCRIPTIONS_TABLE: &str = "airwave-subscriptions";
pub const DEFAULT_ADMISSION_TABLE: &str = "airwave-admission";
pub const DEFAULT_HISTORY_TABLE: &str = "airwave-history";
/// Messages per channel a reconnecting client can recover; also the most one
/// recovery replays.
pub const DEFAULT_HISTORY_SIZE: u64 = 100;
pub const MAX_HISTORY_SIZE: u64 = 10_000;
/// As long as API Gateway keeps a connection open: a client that was away
/// longer reloads its state instead.
pub const DEFAULT_HISTORY_TTL_SECONDS: u64 = 7_200;
pub const MAX_HISTORY_TTL_SECONDS: u64 = 7 * 86_400;
/// How long an item stays in the messages table when its writer set no
/// `expires_at`: the table is a queue for the stream, not an archive, and a
/// day is far longer than the stream needs (what clients recover comes from
/// the history table).
pub const DEFAULT_MESSAGE_RETENTION_SECONDS: u64 = 86_400;
pub const MAX_MESSAGE_RETENTION_SECONDS: u64 = 365 * 86_400;
/// Generous enough for a busy office behind one NAT address reconnecting after
/// a network blip, small enough to stop a client stuck in a reconnect loop.
pub const DEFAULT_CONNECT_ATTEMPTS_PER_IP: u64 = 120;
pub const DEFAULT_CONNECT_WINDOW_SECONDS: u64 = 60;
/// HS256 keys shorter than the hash output are easy to brute-force.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// API Gateway closes every WebSocket after two hours. The record's expiry is
/// set once, at `$connect`, a minute past that: the `$disconnect` that follows
/// the close removes it first, and the sweep only meets the connections whose
/// `$disconnect` never came.
pub const DEFAULT_CONNECTION_TTL_SECONDS: u64 = 7_260;
pub const MAX_CONNECTION_TTL_SECONDS: u64 = 7_260;
pub const MIN_CONNECTION_TTL_SECONDS: u64 = 60;
/// Enough posts in flight to reach the default post quota from one
/// invocation at 20 ms a post (10,000/s x 0.02 s = 200).
pub const DEFAULT_FANOUT_CONCURRENCY: usize = 256;
pub const MAX_FANOUT_CONCURRENCY: usize = 1_000;
/// Five attempts make a post that fails 15 % of the time transiently fail for
/// good less than once in ten thousand.
pub const DEFAULT_POST_MAX_ATTEMPTS: u32 = 5;
/// API Gateway's default account quota in most regions: 10,000 requests a
/// second, `@connections` included.
pub const DEFAULT_POST_QUOTA_PER_SECOND: u32 = 10_000;
pub const MAX_POST_QUOTA_PER_SECOND: u32 = 1_000_000;
pub const DEFAULT_MAX_CHANNELS_PER_CONNECTION: usize = 10;
/// Off by default: producers publish by writing to the messages table, and a
/// browser that can publish can reach every other browser.
pub const DEFAULT_ALLOW_CLIENT_PUBLISH: bool = false;
/// Off by default: a connection without a user is anyone, and the only limits
/// that hold it are its own and its IP's.
pub const DEFAULT_ALLOW_ANONYMOUS_PUBLISH: bool = false;

const TABLE_NAME_FORM: &str = "a DynamoDB table name: 3 to 255 characters of a-z, A-Z, 0-9, '_', '-' or '.'";
const TTL_FORM: &str = "whole seconds from 60 to 7260 (API Gateway closes every connection after 2 hours; 60 s more lets its $disconnect come first)";
const ENDPOINT_FORM: &str =
    "an http(s) URL with the stage, such as https://abc123.execute-api.eu-west-1.amazonaws.com/prod";
const CONCURRENCY_FORM: &str = "a whole number of concurrent posts from 1 to 1000";
const ATTEMPTS_FORM: &str = "a whole number of attempts per post from 1 to 10";
const POST_QUOTA_FORM: &str = "a whole number of posts per second from 0 (no pacing) to 1000000";
const MAX_CHANNELS_FORM: &str = "a whole number of channels per connection from 1 to 100";
const BOOL_FORM: &str = "true or false";
const ATTEMPTS_PER_IP_FORM: &str = "a whole number of connection attempts per IP per window, 0 for no limit";
const WINDOW_FORM: &str = "whole seconds from 1 to 3600";
const CAP_FORM: &str = "a whole number of open connections, 0 for no cap";
const HISTORY_SIZE_FORM: &str =
    "a whole number of messages per channel from 0 (no positions, history or recovery) to 10000";
const HISTORY_TTL_FORM: &str = "whole seconds from 60 to 604800 (7 days)";
const MESSAGE_RETENTION_FORM: &str = "whole seconds from 60 to 31536000 (a year)";
const FAILURE_QUEUE_URL_FORM: &str =
    "the URL of an SQS queue, https://sqs.{region}.amazonaws.com/{12-digit account id}/{queue name} (http only for a local server)";
const JWKS_URL_FORM: &str =
    "the https URL of the identity provider's JWKS, such as https://cognito-idp.{region}.amazonaws.com/{pool}/.well-known/jwks.json (http only for localhost)";
const ISSUER_FORM: &str = "the issuer tokens must name in iss, such as https://cognito-idp.{region}.amazonaws.com/{userPoolId} or https://{tenant}.auth0.com/";
const AUDIENCE_FORM: &str =
    "one audience, or several separated by commas, that tokens must name in aud (a Cognito access token: in client_id)";
const JWKS_ISSUER_FORM: &str = "the issuer of the JWKS URL's tokens, which every token must name in iss (required with AIRWAVE_JWKS_URL), such as https://cognito-idp.{region}.amazonaws.com/{userPoolId} or https://{tenant}.auth0.com/";
const JWKS_AUDIENCE_FORM: &str = "the audience of this deployment's tokens (required with AIRWAVE_JWKS_URL): the app client id of a Cognito user pool or the API identifier of Auth0, several separated by commas; or AIRWAVE_JWT_ALLOW_ANY_AUDIENCE=true to accept the provider's tokens for any application";
const ANY_AUDIENCE_FORM: &str =
    "false when AIRWAVE_JWT_AUDIENCE is set: an audience and \"any audience\" contradict each other";
const REFETCH_FORM: &str = "whole seconds from 1 to 3600 between fetches of the JWKS for an unknown key id";
/// One refetch a minute at most: key rotation is picked up within a minute,
/// and tokens with made-up key ids cannot flood the identity provider.
pub const DEFAULT_JWKS_MIN_REFETCH_SECONDS: u64 = 60;
pub const DEFAULT_CHANNELS_CLAIM: &str = "channels";
pub const DEFAULT_PUBLISH_CLAIM: &str = "publish";
const CLAIM_FORM: &str = "a claim name: 1 to 128 characters of A-Z, a-z, 0-9, '_', '-', '.', ':' or '/'";
const JWT_SECRET_FORM: &str = "an HS256 secret of at least 32 bytes";
const OPERATOR_CLAIM_FORM: &str =
    "a claim name (the claim must be true), or claim=value (the claim must be that string or a list holding it), such as cognito:groups=operators";
const PUBLISH_RATE_FORM: &str = "a whole number of publishes per connection per window, 0 for no limit";
const PUBLISH_RATE_PER_USER_FORM: &str =
    "a whole number of publishes per user (all of its connections) per window, 0 for no limit";
const PUBLISH_RATE_PER_IP_FORM: &str =
    "a whole number of publishes per source IP (all of its connections) per window, 0 for no limit";
const USER_CAP_MODE_FORM: &str = "refuse (a new connection over the per-user cap is refused) or evict_oldest (the user's oldest connection is closed to make room)";
const STATS_MAX_AGE_FORM: &str = "whole seconds from 1 to 3600 that one count of the stats is answered from";
pub const DEFAULT_OPERATOR_CLAIM: &str = "operator";
/// A chat message every half second on average, in bursts of up to 20.
pub const DEFAULT_PUBLISH_RATE_LIMIT: u64 = 20;
/// The same as one connection: a person's rate does not grow with their tabs.
pub const DEFAULT_PUBLISH_RATE_LIMIT_PER_USER: u64 = 20;
/// Ten people at the full per-connection rate behind one NAT address.
pub const DEFAULT_PUBLISH_RATE_LIMIT_PER_IP: u64 = 200;
pub const DEFAULT_PUBLISH_RATE_WINDOW_SECONDS: u64 = 10;
/// Counting scans two tables; once a minute bounds what repeated calls cost.
pub const DEFAULT_STATS_MAX_AGE_SECONDS: u64 = 60;
/// A post or a DynamoDB call answers in tens of milliseconds; one that has not
/// answered in 3 s is stuck, and trying again is better than waiting.
pub const DEFAULT_AWS_ATTEMPT_TIMEOUT_MS: u64 = 3_000;
/// Room for the five attempts of a post with their backoff.
pub const DEFAULT_AWS_OPERATION_TIMEOUT_MS: u64 = 15_000;
const ATTEMPT_TIMEOUT_FORM: &str = "whole milliseconds from 50 to 60000 that one attempt of an AWS call may take";
const OPERATION_TIMEOUT_FORM: &str =
    "whole milliseconds from 100 to 60000 that an AWS call may take, its retries included";

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
    /// How young a connection must be for API Gateway's 410 about it to be
    /// doubted: it answers 410 while a handshake is still in progress too.
    /// Not read from the environment; tests shorten it.
    pub connecting_window: std::time::Duration,
}

/// How long one attempt of an AWS call, and the call with its retries, may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsTimeouts {
    pub attempt: std::time::Duration,
    pub operation: std::time::Duration,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        AwsTimeouts {
            attempt: std::time::Duration::from_millis(DEFAULT_AWS_ATTEMPT_TIMEOUT_MS),
            operation: std::time::Duration::from_millis(DEFAULT_AWS_OPERATION_TIMEOUT_MS),
        }
    }
}

/// The publish allowances, each counted in the same fixed windows of
/// `window_seconds`; a limit of 0 is no limit. See [`crate::rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRate {
    /// Publishes per connection.
    pub limit: u64,
    /// Publishes per user (a token's `sub`), over all of its connections.
    pub per_user: u64,
    /// Publishes per source IP, over all of its connections.
    pub per_ip: u64,
    pub window_seconds: u64,
}

impl Default for PublishRate {
    fn default() -> Self {
        PublishRate {
            limit: DEFAULT_PUBLISH_RATE_LIMIT,
            per_user: DEFAULT_PUBLISH_RATE_LIMIT_PER_USER,
            per_ip: DEFAULT_PUBLISH_RATE_LIMIT_PER_IP,
            window_seconds: DEFAULT_PUBLISH_RATE_WINDOW_SECONDS,
        }
    }
}

/// What `$connect` does when a user already has as many connections as the
/// per-user cap allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserCapMode {
    /// Refuse the new connection (403).
    #[default]
    Refuse,
    /// Close the user's oldest connection and admit the new one: a user who
    /// opens a new tab expects it to work.
    EvictOldest,
}

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

/// Channel positions and the history that recovery replays from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySettings {
    pub table: String,
    /// Messages per channel kept for recovery; 0 turns positions, history and
    /// recovery off (messages are delivered as before, without a position).
    pub size: u64,
    /// How long a message stays recoverable.
    pub ttl_seconds: u64,
}

impl HistorySettings {
    pub fn enabled(&self) -> bool {
        self.size > 0
    }
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            table: DEFAULT_HISTORY_TABLE.to_owned(),
            size: DEFAULT_HISTORY_SIZE,
            ttl_seconds: DEFAULT_HISTORY_TTL_SECONDS,
        }
    }
}

/// Limits applied on `$connect`; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub attempts_per_ip: u64,
    pub window_seconds: u64,
    pub max_connections: u64,
    pub max_connections_per_user: u64,
    pub max_connections_per_ip: u64,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            attempts_per_ip: DEFAULT_CONNECT_ATTEMPTS_PER_IP,
            window_seconds: DEFAULT_CONNECT_WINDOW_SECONDS,
            max_connections: 0,
            max_connections_per_user: 0,
            max_connections_per_ip: 0,
        }
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
            connecting_window: crate::fanout::CONNECTING_WINDOW,
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var_os(name).map(|value| value.to_string_lossy().into_owned()))
    }

    /// Reads variables through `lookup`, so the parsing rules can be exercised without
    /// touching the process environment. Unset and empty variables take their default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let read = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let defaults = Config::default();

        let connections_table = match read(CONNECTIONS_TABLE) {
            Some(value) => parse_table_name(CONNECTIONS_TABLE, value)?,
            None => defaults.connections_table,
        };
        let messages_table = match read(MESSAGES_TABLE) {
            Some(value) => parse_table_name(MESSAGES_TABLE, value)?,
            None => defaults.messages_table,
        };
        let subscriptions_table = match read(SUBSCRIPTIONS_TABLE) {
            Some(value) => parse_table_name(SUBSCRIPTIONS_TABLE, value)?,
            None => defaults.subscriptions_table,
        };
        let connection_ttl_seconds = match read(CONNECTION_TTL_SECONDS) {
            Some(value) => parse_in_range(
                CONNECTION_TTL_SECONDS,
                value,
                MIN_CONNECTION_TTL_SECONDS..=MAX_CONNECTION_TTL_SECONDS,
                TTL_FORM,
            )?,
            None => defaults.connection_ttl_seconds,
        };
        let management_endpoint = match read(MANAGEMENT_ENDPOINT) {
            Some(value) => Some(parse_endpoint(MANAGEMENT_ENDPOINT, value)?),
            None => None,
        };
        let fanout_concurrency = match read(FANOUT_CONCURRENCY) {
            Some(value) => parse_in_range(FANOUT_CONCURRENCY, value, 1..=MAX_FANOUT_CONCURRENCY, CONCURRENCY_FORM)?,
            None => defaults.fanout_concurrency,
        };
        let post_max_attempts = match read(POST_MAX_ATTEMPTS) {
            Some(value) => parse_in_range(POST_MAX_ATTEMPTS, value, 1..=10, ATTEMPTS_FORM)?,
            None => defaults.post_max_attempts,
        };
        let post_quota_per_second = match read(POST_QUOTA_PER_SECOND) {
            Some(value) => parse_in_range(
                POST_QUOTA_PER_SECOND,
                value,
                0..=MAX_POST_QUOTA_PER_SECOND,
                POST_QUOTA_FORM,
            )?,
            None => defaults.post_quota_per_second,
        };
        let max_channels_per_connection = match read(MAX_CHANNELS_PER_CONNECTION) {
            Some(value) => parse_in_range(MAX_CHANNELS_PER_CONNECTION, value, 1..=100, MAX_CHANNELS_FORM)?,
            None => defaults.max_channels_per_connection,
        };
        let allow_client_publish = match read(ALLOW_CLIENT_PUBLISH) {
            Some(value) => parse_bool(ALLOW_CLIENT_PUBLISH, value)?,
            None => defaults.allow_client_publish,
        };
        let allow_anonymous_publish = match read(ALLOW_ANONYMOUS_PUBLISH) {
            Some(value) => parse_bool(ALLOW_ANONYMOUS_PUBLISH, value)?,
            None => defaults.allow_anonymous_publish,
        };
        let admission_table = match read(ADMISSION_TABLE) {
            Some(value) => parse_table_name(ADMISSION_TABLE, value)?,
            None => defaults.admission_table,
        };
        let cap = |variable: &'static str, default: u64| match read(variable) {
            Some(value) => parse_in_range(variable, value, 0..=u64::from(u32::MAX), CAP_FORM),
            None => Ok(default),
        };
        let admission = AdmissionLimits {
            attempts_per_ip: match read(CONNECT_ATTEMPTS_PER_IP) {
                Some(value) => parse_in_range(
                    CONNECT_ATTEMPTS_PER_IP,
                    value,
                    0..=u64::from(u32::MAX),
                    ATTEMPTS_PER_IP_FORM,
                )?,
                None => defaults.admission.attempts_per_ip,
            },
            window_seconds: match read(CONNECT_WINDOW_SECONDS) {
                Some(value) => parse_in_range(CONNECT_WINDOW_SECONDS, value, 1..=3_600, WINDOW_FORM)?,
                None => defaults.admission.window_seconds,
            },
            max_connections: cap(MAX_CONNECTIONS, defaults.admission.max_connections)?,
            max_connections_per_user: cap(MAX_CONNECTIONS_PER_USER, defaults.admission.max_connections_per_user)?,
            max_connections_per_ip: cap(MAX_CONNECTIONS_PER_IP, defaults.admission.max_connections_per_ip)?,
        };
        // Not trimmed or echoed back in an error: it is a secret.
        let jwt_secret = match lookup(JWT_SECRET).filter(|value| !value.is_empty()) {
            Some(value) if value.len() >= MIN_JWT_SECRET_BYTES => Some(JwtSecret(value)),
            Some(value) => {
                return Err(Error::ConfigInvalid {
                    variable: JWT_SECRET,
                    value: format!("<{} bytes, redacted>", value.len()),
                    expected: JWT_SECRET_FORM,
                })
            }
            None => None,
        };
        let allow_stats = match read(ALLOW_STATS) {
            Some(value) => parse_bool(ALLOW_STATS, value)?,
            None => defaults.allow_stats,
        };
        let history = HistorySettings {
            table: match read(HISTORY_TABLE) {
                Some(value) => parse_table_name(HISTORY_TABLE, value)?,
                None => defaults.history.table,
            },
            size: match read(HISTORY_SIZE) {
                Some(value) => parse_in_range(HISTORY_SIZE, value, 0..=MAX_HISTORY_SIZE, HISTORY_SIZE_FORM)?,
                None => defaults.history.size,
            },
            ttl_seconds: match read(HISTORY_TTL_SECONDS) {
                Some(value) => parse_in_range(
                    HISTORY_TTL_SECONDS,
                    value,
                    60..=MAX_HISTORY_TTL_SECONDS,
                    HISTORY_TTL_FORM,
                )?,
                None => defaults.history.ttl_seconds,
            },
        };

        let auth = AuthSettings {
            jwks_url: match read(JWKS_URL) {
                Some(value) => Some(parse_jwks_url(value)?),
                None => None,
            },
            issuer: match read(JWT_ISSUER) {
                Some(value) if value.len() <= 512 => Some(value),
                Some(value) => {
                    return Err(Error::ConfigInvalid {
                        variable: JWT_ISSUER,
                        value,
                        expected: ISSUER_FORM,
                    })
                }
                None => None,
            },
            audience: match read(JWT_AUDIENCE) {
                Some(value) => {
                    let audience: Vec<String> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|part| !part.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if audience.is_empty() || audience.iter().any(|part| part.len() > 512) {
                        return Err(Error::ConfigInvalid {
                            variable: JWT_AUDIENCE,
                            value,
                            expected: AUDIENCE_FORM,
                        });
                    }
                    audience
                }
                None => Vec::new(),
            },
            allow_any_audience: match read(JWT_ALLOW_ANY_AUDIENCE) {
                Some(value) => parse_bool(JWT_ALLOW_ANY_AUDIENCE, value)?,
                None => false,
            },
            jwks_min_refetch_seconds: match read(JWKS_MIN_REFETCH_SECONDS) {
                Some(value) => parse_in_range(JWKS_MIN_REFETCH_SECONDS, value, 1..=3_600, REFETCH_FORM)?,
                None => DEFAULT_JWKS_MIN_REFETCH_SECONDS,
            },
            channels_claim: match read(CHANNELS_CLAIM) {
                Some(value) => parse_claim_name(CHANNELS_CLAIM, value)?,
                None => DEFAULT_CHANNELS_CLAIM.to_owned(),
            },
            publish_claim: match read(PUBLISH_CLAIM) {
                Some(value) => parse_claim_name(PUBLISH_CLAIM, value)?,
                None => DEFAULT_PUBLISH_CLAIM.to_owned(),
            },
            operator_claim: match read(OPERATOR_CLAIM) {
                Some(value) => parse_operator_claim(value)?,
                None => OperatorClaim::default(),
            },
        };
        auth.check()?;
        let publish_rate = PublishRate {
            limit: match read(PUBLISH_RATE_LIMIT) {
                Some(value) => parse_in_range(PUBLISH_RATE_LIMIT, value, 0..=1_000_000, PUBLISH_RATE_FORM)?,
                None => defaults.publish_rate.limit,
            },
            per_user: match read(PUBLISH_RATE_LIMIT_PER_USER) {
                Some(value) => parse_in_range(
                    PUBLISH_RATE_LIMIT_PER_USER,
                    value,
                    0..=1_000_000,
                    PUBLISH_RATE_PER_USER_FORM,
                )?,
                None => defaults.publish_rate.per_user,
            },
            per_ip: match read(PUBLISH_RATE_LIMIT_PER_IP) {
                Some(value) => parse_in_range(
                    PUBLISH_RATE_LIMIT_PER_IP,
                    value,
                    0..=1_000_000,
                    PUBLISH_RATE_PER_IP_FORM,
                )?,
                None => defaults.publish_rate.per_ip,
            },
            window_seconds: match read(PUBLISH_RATE_WINDOW_SECONDS) {
                Some(value) => parse_in_range(PUBLISH_RATE_WINDOW_SECONDS, value, 1..=3_600, WINDOW_FORM)?,
                None => defaults.publish_rate.window_seconds,
            },
        };
        let user_cap_mode = match read(USER_CAP_MODE).as_deref() {
            None | Some("refuse") => UserCapMode::Refuse,
            Some("evict_oldest") => UserCapMode::EvictOldest,
            Some(other) => {
                return Err(Error::ConfigInvalid {
                    variable: USER_CAP_MODE,
                    value: other.to_owned(),
                    expected: USER_CAP_MODE_FORM,
                })
            }
        };
        let stats_max_age_seconds = match read(STATS_MAX_AGE_SECONDS) {
            Some(value) => parse_in_range(STATS_MAX_AGE_SECONDS, value, 1..=3_600, STATS_MAX_AGE_FORM)?,
            None => defaults.stats_max_age_seconds,
        };
        let message_retention_seconds = match read(MESSAGE_RETENTION_SECONDS) {
            Some(value) => parse_in_range(
                MESSAGE_RETENTION_SECONDS,
                value,
                60..=MAX_MESSAGE_RETENTION_SECONDS,
                MESSAGE_RETENTION_FORM,
            )?,
            None => defaults.message_retention_seconds,
        };
        let failure_queue_url = read(FAILURE_QUEUE_URL).map(parse_queue_url).transpose()?;
        let millis = |variable, range, form, default| match read(variable) {
            Some(value) => parse_in_range(variable, value, range, form).map(std::time::Duration::from_millis),
            None => Ok(default),
        };
        let aws_timeouts = AwsTimeouts {
            attempt: millis(
                AWS_ATTEMPT_TIMEOUT_MS,
                50..=60_000,
                ATTEMPT_TIMEOUT_FORM,
                defaults.aws_timeouts.attempt,
            )?,
            operation: millis(
                AWS_OPERATION_TIMEOUT_MS,
                100..=60_000,
                OPERATION_TIMEOUT_FORM,
                defaults.aws_timeouts.operation,
            )?,
        };

        Ok(Config {
            connections_table,
            messages_table,
            subscriptions_table,
            connection_ttl_seconds,
            management_endpoint,
            fanout_concurrency,
            post_max_attempts,
            post_quota_per_second,
            max_channels_per_connection,
            allow_client_publish,
            allow_anonymous_publish,
            admission_table,
            admission,
            jwt_secret,
            allow_stats,
            history,
            auth,
            publish_rate,
            user_cap_mode,
            stats_max_age_seconds,
            aws_timeouts,
            message_retention_seconds,
            failure_queue_url,
            connecting_window: defaults.connecting_window,
        })
    }

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
                expected: "0 unless AIRWAVE_JWT_SECRET or AIRWAVE_JWKS_URL is set: the per-user cap counts authenticated users",
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

    /// Whether `$connect` requires a token: an HS256 secret, a JWKS, or both.
    pub fn authentication_enabled(&self) -> bool {
        self.jwt_secret.is_some() || self.auth.jwks_url.is_some()
    }

    /// The Management API endpoint, for the functions that post to connections.
    pub fn require_management_endpoint(&self) -> Result<&str, Error> {
        self.management_endpoint.as_deref().ok_or(Error::ConfigMissing {
            variable: MANAGEMENT_ENDPOINT,
            expected: ENDPOINT_FORM,
        })
    }
}

fn parse_table_name(variable: &'static str, value: String) -> Result<String, Error> {
    let valid_length = (3..=255).contains(&value.len());
    let valid_characters = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid_length && valid_characters {
        Ok(value)
    } else {
        Err(Error::ConfigInvalid {
            variable,
            value,
            expected: TABLE_NAME_FORM,
        })
    }
}

fn parse_in_range<T>(
    variable: &'static str,
    value: String,
    range: std::ops::RangeInclusive<T>,
    expected: &'static str,
) -> Result<T, Error>
where
    T: std::str::FromStr + PartialOrd,
{
    match value.parse::<T>() {
        Ok(parsed) if range.contains(&parsed) => Ok(parsed),
        _ => Err(Error::ConfigInvalid {
            variable,
            value,
            expected,
        }),
    }
}

fn parse_bool(variable: &'static str, value: String) -> Result<bool, Error> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::ConfigInvalid {
            variable,
            value,
            expected: BOOL_FORM,
        }),
    }
}

fn parse_claim_name(variable: &'static str, value: String) -> Result<String, Error> {
    let valid = value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
    if valid {
        Ok(value)
    } else {
        Err(Error::ConfigInvalid {
            variable,
            value,
            expected: CLAIM_FORM,
        })
    }
}

fn parse_operator_claim(value: String) -> Result<OperatorClaim, Error> {
    let invalid = |value: String| Error::ConfigInvalid {
        variable: OPERATOR_CLAIM,
        value,
        expected: OPERATOR_CLAIM_FORM,
    };
    let (claim, role) = match value.split_once('=') {
        Some((claim, role)) => (claim.to_owned(), Some(role.to_owned())),
        None => (value.clone(), None),
    };
    let claim = parse_claim_name(OPERATOR_CLAIM, claim).map_err(|_| invalid(value.clone()))?;
    if claim.is_empty() || role.as_ref().is_some_and(|role| role.is_empty() || role.len() > 256) {
        return Err(invalid(value));
    }
    Ok(OperatorClaim { claim, value: role })
}

/// https, or http only to this machine (a local identity provider in tests).
fn parse_jwks_url(value: String) -> Result<String, Error> {
    let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|prefix| value.starts_with(prefix));
    let well_formed = value.len() <= 2_048 && !value.contains(char::is_whitespace);
    if well_formed && (value.starts_with("https://") || local) && value.parse::<hyper::Uri>().is_ok() {
        Ok(value)
    } else {
        Err(Error::ConfigInvalid {
            variable: JWKS_URL,
            value,
            expected: JWKS_URL_FORM,
        })
    }
}

/// `{scheme}://{host}/{account id}/{queue name}`: https, or http only to this
/// machine (moto's server in tests and `make dev`); the account id is 12
/// digits and the name is what SQS accepts (1 to 80 characters of A-Z, a-z,
/// 0-9, '-' and '_', and a `.fifo` suffix for a FIFO queue).
fn parse_queue_url(value: String) -> Result<String, Error> {
    let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|prefix| value.starts_with(prefix));
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://").filter(|_| local));
    let valid = rest.is_some_and(|rest| {
        let mut parts = rest.trim_end_matches('/').split('/');
        let (Some(host), Some(account), Some(name), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let base = name.strip_suffix(".fifo").unwrap_or(name);
        !host.is_empty()
            && !host.contains(char::is_whitespace)
            && account.len() == 12
            && account.chars().all(|c| c.is_ascii_digit())
            && (1..=80).contains(&name.len())
            && !base.is_empty()
            && base
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    });
    if valid {
        Ok(value.trim_end_matches('/').to_owned())
    } else {
        Err(Error::ConfigInvalid {
            variable: FAILURE_QUEUE_URL,
            value,
            expected: FAILURE_QUEUE_URL_FORM,
        })
    }
}

fn parse_endpoint(variable: &'static str, value: String) -> Result<String, Error> {
    let has_scheme = value.starts_with("https://") || value.starts_with("http://");
    let has_host = value.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
    if has_scheme && has_host && !value.contains(char::is_whitespace) {
        Ok(value.trim_end_matches('/').to_owned())
    } else {
        Err(Error::ConfigInvalid {
            variable,
            value,
            expected: ENDPOINT_FORM,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config_from(pairs: &[(&str, &str)]) -> Result<Config, Error> {
        let vars: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn unset_variables_take_the_documented_defaults() {
        let config = config_from(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.connection_ttl_seconds, 7_260);
        assert_eq!(config.connections_table, "airwave-connections");
    }

    #[test]
    fn set_variables_override_the_defaults() {
        let config = config_from(&[
            (CONNECTIONS_TABLE, "prod-connections"),
            (MESSAGES_TABLE, "prod.messages"),
            (CONNECTION_TTL_SECONDS, "900"),
            (
                MANAGEMENT_ENDPOINT,
                "https://abc.execute-api.eu-west-1.amazonaws.com/prod/",
            ),
            (FANOUT_CONCURRENCY, "16"),
            (SUBSCRIPTIONS_TABLE, "prod-subscriptions"),
            (POST_MAX_ATTEMPTS, "3"),
            (POST_QUOTA_PER_SECOND, "2500"),
            (MAX_CHANNELS_PER_CONNECTION, "4"),
            (ALLOW_CLIENT_PUBLISH, "TRUE"),
            (ADMISSION_TABLE, "prod-admission"),
            (CONNECT_ATTEMPTS_PER_IP, "10"),
            (CONNECT_WINDOW_SECONDS, "5"),
            (MAX_CONNECTIONS, "1000"),
            (MAX_CONNECTIONS_PER_USER, "5"),
            (MAX_CONNECTIONS_PER_IP, "0"),
            (JWT_SECRET, "0123456789abcdef0123456789abcdef"),
            (ALLOW_STATS, "true"),
            (HISTORY_TABLE, "prod-history"),
            (HISTORY_SIZE, "500"),
            (HISTORY_TTL_SECONDS, "86400"),
        ])
        .unwrap();
        assert_eq!(config.connections_table, "prod-connections");
        assert_eq!(config.messages_table, "prod.messages");
        assert_eq!(config.connection_ttl_seconds, 900);
        assert_eq!(
            config.require_management_endpoint().unwrap(),
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod"
        );
        assert_eq!(config.fanout_concurrency, 16);
        assert_eq!(config.subscriptions_table, "prod-subscriptions");
        assert_eq!(config.post_max_attempts, 3);
        assert_eq!(config.post_quota_per_second, 2_500);
        assert_eq!(config.max_channels_per_connection, 4);
        assert!(config.allow_client_publish);
        assert_eq!(config.admission_table, "prod-admission");
        assert_eq!(
            config.admission,
            AdmissionLimits {
                attempts_per_ip: 10,
                window_seconds: 5,
                max_connections: 1000,
                max_connections_per_user: 5,
                max_connections_per_ip: 0,
            }
        );
        assert_eq!(
            config.jwt_secret,
            Some(JwtSecret::new("0123456789abcdef0123456789abcdef"))
        );
        assert!(config.allow_stats);
        assert_eq!(
            config.history,
            HistorySettings {
                table: "prod-history".into(),
                size: 500,
                ttl_seconds: 86_400
            }
        );
    }

    #[test]
    fn the_jwt_secret_never_appears_in_debug_output_or_errors() {
        let secret = "a-secret-that-must-not-leak-0123456789";
        let config = config_from(&[(JWT_SECRET, secret)]).unwrap();
        assert!(!format!("{config:?}").contains(secret));
        let short = "short-secret";
        let message = config_from(&[(JWT_SECRET, short)]).unwrap_err().to_string();
        assert!(message.contains(JWT_SECRET), "{message}");
        assert!(message.contains("32 bytes"), "{message}");
        assert!(!message.contains(short), "{message}");
    }

    #[test]
    fn a_malformed_value_names_the_variable_and_the_expected_form() {
        for (variable, value) in [
            (CONNECTION_TTL_SECONDS, "24h"),
            (CONNECTION_TTL_SECONDS, "86400"),
            (CONNECTIONS_TABLE, "a b"),
            (MANAGEMENT_ENDPOINT, "abc.execute-api.amazonaws.com"),
            (FANOUT_CONCURRENCY, "0"),
            (POST_MAX_ATTEMPTS, "11"),
            (POST_QUOTA_PER_SECOND, "10k"),
            (MAX_CHANNELS_PER_CONNECTION, "-1"),
            (ALLOW_CLIENT_PUBLISH, "yes"),
            (CONNECT_ATTEMPTS_PER_IP, "-5"),
            (CONNECT_WINDOW_SECONDS, "0"),
            (MAX_CONNECTIONS, "lots"),
            (MAX_CONNECTIONS_PER_USER, "1.5"),
            (ALLOW_STATS, "1"),
            (HISTORY_SIZE, "10001"),
            (HISTORY_TTL_SECONDS, "30"),
            (HISTORY_TABLE, "h/x"),
            (PUBLISH_RATE_LIMIT_PER_USER, "-1"),
            (PUBLISH_RATE_LIMIT_PER_IP, "lots"),
            (ALLOW_ANONYMOUS_PUBLISH, "yes"),
            (JWT_ALLOW_ANY_AUDIENCE, "1"),
        ] {
            let message = config_from(&[(variable, value)]).unwrap_err().to_string();
            assert!(message.contains(variable), "{message}");
            assert!(message.contains(value), "{message}");
            assert!(message.contains("expected"), "{message}");
        }
    }

    #[test]
    fn publish_limits_per_user_and_per_ip_and_anonymous_publishing_are_read() {
        let config = config_from(&[]).unwrap();
        assert_eq!((config.publish_rate.per_user, config.publish_rate.per_ip), (20, 200));
        assert!(!config.allow_anonymous_publish);
        let config = config_from(&[
            (PUBLISH_RATE_LIMIT_PER_USER, "0"),
            (PUBLISH_RATE_LIMIT_PER_IP, "50"),
            (ALLOW_ANONYMOUS_PUBLISH, "true"),
        ])
        .unwrap();
        assert_eq!((config.publish_rate.per_user, config.publish_rate.per_ip), (0, 50));
        assert!(config.allow_anonymous_publish);
    }

    #[test]
    fn a_jwks_without_an_issuer_or_an_audience_refuses_to_start() {
        const URL: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_X/.well-known/jwks.json";
        const ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_X";
        let refusal = |pairs: &[(&str, &str)]| config_from(pairs).unwrap_err().to_string();

        let message = refusal(&[(JWKS_URL, URL), (JWT_AUDIENCE, "client-1")]);
        assert!(message.contains(JWT_ISSUER), "{message}");
        assert!(message.contains("https://cognito-idp."), "{message}");
        // The opt-out covers the audience, never the issuer.
        let message = refusal(&[(JWKS_URL, URL), (JWT_ALLOW_ANY_AUDIENCE, "true")]);
        assert!(message.contains(JWT_ISSUER), "{message}");

        let message = refusal(&[(JWKS_URL, URL), (JWT_ISSUER, ISSUER)]);
        assert!(message.contains(JWT_AUDIENCE), "{message}");
        assert!(message.contains(JWT_ALLOW_ANY_AUDIENCE), "{message}");

        let message = refusal(&[(JWT_AUDIENCE, "client-1"), (JWT_ALLOW_ANY_AUDIENCE, "true")]);
        assert!(message.contains(JWT_ALLOW_ANY_AUDIENCE), "{message}");

        let config = config_from(&[
            (JWKS_URL, URL),
            (JWT_ISSUER, ISSUER),
            (JWT_AUDIENCE, "client-1, client-2"),
        ])
        .unwrap();
        assert_eq!(config.auth.audience, ["client-1", "client-2"]);
        let config = config_from(&[(JWKS_URL, URL), (JWT_ISSUER, ISSUER), (JWT_ALLOW_ANY_AUDIENCE, "true")]).unwrap();
        assert!(config.auth.allow_any_audience && config.auth.audience.is_empty());
        // HS256 alone still needs neither: the secret is this deployment's own.
        assert!(config_from(&[(JWT_SECRET, &"s".repeat(MIN_JWT_SECRET_BYTES))]).is_ok());
    }

    #[test]
    fn a_per_user_cap_without_a_secret_is_refused_only_where_caps_are_enforced() {
        // The message function gets the caps (for stats) but never the secret.
        let config = config_from(&[(MAX_CONNECTIONS_PER_USER, "5")]).unwrap();
        let message = config.require_admission_settings().unwrap_err().to_string();
        assert!(message.contains(MAX_CONNECTIONS_PER_USER), "{message}");
        assert!(message.contains(JWT_SECRET), "{message}");
        let secret = "s".repeat(MIN_JWT_SECRET_BYTES);
        let config = config_from(&[(MAX_CONNECTIONS_PER_USER, "5"), (JWT_SECRET, &secret)]).unwrap();
        assert!(config.require_admission_settings().is_ok());
    }

    #[test]
    fn the_failure_queue_url_is_an_sqs_queue_url_and_required_where_it_is_needed() {
        for url in [
            "https://sqs.eu-west-1.amazonaws.com/123456789012/airwave-StreamFailureQueue-AbC123",
            "http://127.0.0.1:4566/000000000000/airwave-stream-failure",
            "https://sqs.us-east-1.amazonaws.com/123456789012/failures.fifo",
        ] {
            let config = config_from(&[(FAILURE_QUEUE_URL, url)]).unwrap();
            assert_eq!(config.require_failure_queue_url().unwrap(), url);
        }
        for malformed in [
            "airwave-stream-failure",
            "https://sqs.us-east-1.amazonaws.com/airwave-stream-failure",
            "https://sqs.us-east-1.amazonaws.com/12345/q",
            "http://sqs.us-east-1.amazonaws.com/123456789012/q",
            "https://sqs.us-east-1.amazonaws.com/123456789012/a queue",
        ] {
            let message = config_from(&[(FAILURE_QUEUE_URL, malformed)]).unwrap_err().to_string();
            assert!(message.contains(FAILURE_QUEUE_URL), "{message}");
            assert!(message.contains(malformed), "{message}");
            assert!(message.contains("expected"), "{message}");
        }
        let message = config_from(&[])
            .unwrap()
            .require_failure_queue_url()
            .unwrap_err()
            .to_string();
        assert!(message.contains(FAILURE_QUEUE_URL), "{message}");
        assert!(message.contains("https://sqs."), "{message}");
    }

    #[test]
    fn a_missing_management_endpoint_is_reported_when_it_is_needed() {
        let message = config_from(&[])
            .unwrap()
            .require_management_endpoint()
            .unwrap_err()
            .to_string();
        assert!(message.contains(MANAGEMENT_ENDPOINT), "{message}");
        assert!(message.contains("https://"), "{message}");
    }
}
