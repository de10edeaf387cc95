//! Reading the configuration from the environment.

use super::forms::*;
use super::values::*;
use super::*;

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
            Some(value) if value.len() >= MIN_JWT_SECRET_BYTES => Some(JwtSecret::new(value)),
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
}
