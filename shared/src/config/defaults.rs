//! The value each setting takes when its variable is unset or empty, and the
//! bounds some settings are checked against.

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
/// One refetch a minute at most: key rotation is picked up within a minute,
/// and tokens with made-up key ids cannot flood the identity provider.
pub const DEFAULT_JWKS_MIN_REFETCH_SECONDS: u64 = 60;
/// How long the token secret read from Secrets Manager is used before it is
/// read again: a rotation reaches every warm function within this.
pub const DEFAULT_JWT_SECRET_REFRESH_SECONDS: u64 = 300;
pub const DEFAULT_CHANNELS_CLAIM: &str = "channels";
pub const DEFAULT_PUBLISH_CLAIM: &str = "publish";
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

/// How long after API Gateway accepted a connection a 410 may still mean "not
/// connected yet": `$connect` may take up to its 29 s integration timeout,
/// and the record is written before the handshake completes.
pub const CONNECTING_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);
