//! Reading the configuration from the environment: serde reads each variable
//! as its type (`RawEnv`), then each value is checked against its form.

use std::time::Duration;

use super::forms::{
    ATTEMPTS_FORM, ATTEMPTS_PER_IP_FORM, ATTEMPT_TIMEOUT_FORM, CAP_FORM, CONCURRENCY_FORM, HISTORY_SIZE_FORM,
    HISTORY_TTL_FORM, JWT_SECRET_ARN_FORM, MAX_CHANNELS_FORM, MESSAGE_RETENTION_FORM, OPERATION_TIMEOUT_FORM,
    POST_QUOTA_FORM, PUBLISH_RATE_FORM, PUBLISH_RATE_PER_IP_FORM, PUBLISH_RATE_PER_USER_FORM, REFETCH_FORM,
    SECRET_REFRESH_FORM, SERVER_KEY_SECRET_ARN_FORM, STATS_MAX_AGE_FORM, TTL_FORM, WINDOW_FORM,
};
use super::raw::{Flag, Number, RawEnv};
use super::values::{
    in_range, parse_audience, parse_claim_name, parse_endpoint, parse_issuer, parse_jwks_url, parse_jwt_secret,
    parse_operator_claim, parse_queue_url, parse_secret_arn, parse_server_keys, parse_table_name,
};
use super::*;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var_os(name).map(|value| value.to_string_lossy().into_owned()))
    }

    /// Reads variables through `lookup`, so the parsing rules can be exercised without
    /// touching the process environment. Unset and empty variables take their default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let raw = RawEnv::read(lookup)?;
        let defaults = Config::default();
        let table = |variable, value: Option<String>, default| match value {
            Some(value) => parse_table_name(variable, value),
            None => Ok(default),
        };
        let flag = |value: Option<Flag>, default| value.map_or(default, |Flag(on)| on);

        let connections_table = table(CONNECTIONS_TABLE, raw.connections_table, defaults.connections_table)?;
        let messages_table = table(MESSAGES_TABLE, raw.messages_table, defaults.messages_table)?;
        let subscriptions_table = table(
            SUBSCRIPTIONS_TABLE,
            raw.subscriptions_table,
            defaults.subscriptions_table,
        )?;
        let connection_ttl_seconds = number(
            CONNECTION_TTL_SECONDS,
            raw.connection_ttl_seconds,
            MIN_CONNECTION_TTL_SECONDS..=MAX_CONNECTION_TTL_SECONDS,
            TTL_FORM,
            defaults.connection_ttl_seconds,
        )?;
        let management_endpoint = raw
            .management_endpoint
            .map(|value| parse_endpoint(MANAGEMENT_ENDPOINT, value))
            .transpose()?;
        let fanout_concurrency = number(
            FANOUT_CONCURRENCY,
            raw.fanout_concurrency,
            1..=MAX_FANOUT_CONCURRENCY,
            CONCURRENCY_FORM,
            defaults.fanout_concurrency,
        )?;
        let post_max_attempts = number(
            POST_MAX_ATTEMPTS,
            raw.post_max_attempts,
            1..=10,
            ATTEMPTS_FORM,
            defaults.post_max_attempts,
        )?;
        let post_quota_per_second = number(
            POST_QUOTA_PER_SECOND,
            raw.post_quota_per_second,
            0..=MAX_POST_QUOTA_PER_SECOND,
            POST_QUOTA_FORM,
            defaults.post_quota_per_second,
        )?;
        let max_channels_per_connection = number(
            MAX_CHANNELS_PER_CONNECTION,
            raw.max_channels_per_connection,
            1..=100,
            MAX_CHANNELS_FORM,
            defaults.max_channels_per_connection,
        )?;
        let allow_client_publish = flag(raw.allow_client_publish, defaults.allow_client_publish);
        let allow_anonymous_publish = flag(raw.allow_anonymous_publish, defaults.allow_anonymous_publish);
        let admission_table = table(ADMISSION_TABLE, raw.admission_table, defaults.admission_table)?;
        let cap = |variable, value, default| number(variable, value, 0..=u64::from(u32::MAX), CAP_FORM, default);
        let admission = AdmissionLimits {
            attempts_per_ip: number(
                CONNECT_ATTEMPTS_PER_IP,
                raw.connect_attempts_per_ip,
                0..=u64::from(u32::MAX),
                ATTEMPTS_PER_IP_FORM,
                defaults.admission.attempts_per_ip,
            )?,
            window_seconds: number(
                CONNECT_WINDOW_SECONDS,
                raw.connect_window_seconds,
                1..=3_600,
                WINDOW_FORM,
                defaults.admission.window_seconds,
            )?,
            max_connections: cap(MAX_CONNECTIONS, raw.max_connections, defaults.admission.max_connections)?,
            max_connections_per_user: cap(
                MAX_CONNECTIONS_PER_USER,
                raw.max_connections_per_user,
                defaults.admission.max_connections_per_user,
            )?,
            max_connections_per_ip: cap(
                MAX_CONNECTIONS_PER_IP,
                raw.max_connections_per_ip,
                defaults.admission.max_connections_per_ip,
            )?,
        };
        let jwt_secret = raw.jwt_secret.map(parse_jwt_secret).transpose()?;
        let allow_stats = flag(raw.allow_stats, defaults.allow_stats);
        let history = HistorySettings {
            table: table(HISTORY_TABLE, raw.history_table, defaults.history.table)?,
            size: number(
                HISTORY_SIZE,
                raw.history_size,
                0..=MAX_HISTORY_SIZE,
                HISTORY_SIZE_FORM,
                defaults.history.size,
            )?,
            ttl_seconds: number(
                HISTORY_TTL_SECONDS,
                raw.history_ttl_seconds,
                60..=MAX_HISTORY_TTL_SECONDS,
                HISTORY_TTL_FORM,
                defaults.history.ttl_seconds,
            )?,
        };

        let claim = |variable, value: Option<String>, default| match value {
            Some(value) => parse_claim_name(variable, value),
            None => Ok(default),
        };
        let auth = AuthSettings {
            jwks_url: raw.jwks_url.map(parse_jwks_url).transpose()?,
            issuer: raw.jwt_issuer.map(parse_issuer).transpose()?,
            audience: raw.jwt_audience.map(parse_audience).transpose()?.unwrap_or_default(),
            allow_any_audience: flag(raw.jwt_allow_any_audience, defaults.auth.allow_any_audience),
            jwks_min_refetch_seconds: number(
                JWKS_MIN_REFETCH_SECONDS,
                raw.jwks_min_refetch_seconds,
                1..=3_600,
                REFETCH_FORM,
                defaults.auth.jwks_min_refetch_seconds,
            )?,
            jwt_secret_arn: raw
                .jwt_secret_arn
                .map(|arn| parse_secret_arn(JWT_SECRET_ARN, JWT_SECRET_ARN_FORM, arn))
                .transpose()?,
            jwt_secret_refresh_seconds: number(
                JWT_SECRET_REFRESH_SECONDS,
                raw.jwt_secret_refresh_seconds,
                1..=3_600,
                SECRET_REFRESH_FORM,
                defaults.auth.jwt_secret_refresh_seconds,
            )?,
            channels_claim: claim(CHANNELS_CLAIM, raw.channels_claim, defaults.auth.channels_claim)?,
            publish_claim: claim(PUBLISH_CLAIM, raw.publish_claim, defaults.auth.publish_claim)?,
            operator_claim: raw
                .operator_claim
                .map(parse_operator_claim)
                .transpose()?
                .unwrap_or(defaults.auth.operator_claim),
        };
        auth.check()?;
        // One source of the token secret: two would leave which one counts to chance.
        if let (Some(_), Some(arn)) = (&jwt_secret, &auth.jwt_secret_arn) {
            return Err(Error::ConfigInvalid {
                variable: JWT_SECRET_ARN,
                value: arn.clone(),
                expected: JWT_SECRET_ARN_FORM,
            });
        }
        let publish_rate = PublishRate {
            limit: number(
                PUBLISH_RATE_LIMIT,
                raw.publish_rate_limit,
                0..=1_000_000,
                PUBLISH_RATE_FORM,
                defaults.publish_rate.limit,
            )?,
            per_user: number(
                PUBLISH_RATE_LIMIT_PER_USER,
                raw.publish_rate_limit_per_user,
                0..=1_000_000,
                PUBLISH_RATE_PER_USER_FORM,
                defaults.publish_rate.per_user,
            )?,
            per_ip: number(
                PUBLISH_RATE_LIMIT_PER_IP,
                raw.publish_rate_limit_per_ip,
                0..=1_000_000,
                PUBLISH_RATE_PER_IP_FORM,
                defaults.publish_rate.per_ip,
            )?,
            window_seconds: number(
                PUBLISH_RATE_WINDOW_SECONDS,
                raw.publish_rate_window_seconds,
                1..=3_600,
                WINDOW_FORM,
                defaults.publish_rate.window_seconds,
            )?,
        };
        let user_cap_mode = raw.user_cap_mode.unwrap_or(defaults.user_cap_mode);
        let stats_max_age_seconds = number(
            STATS_MAX_AGE_SECONDS,
            raw.stats_max_age_seconds,
            1..=3_600,
            STATS_MAX_AGE_FORM,
            defaults.stats_max_age_seconds,
        )?;
        let message_retention_seconds = number(
            MESSAGE_RETENTION_SECONDS,
            raw.message_retention_seconds,
            60..=MAX_MESSAGE_RETENTION_SECONDS,
            MESSAGE_RETENTION_FORM,
            defaults.message_retention_seconds,
        )?;
        let failure_queue_url = raw.failure_queue_url.map(parse_queue_url).transpose()?;
        let millis = |variable, value: Option<Number<u64>>, range, form, default| match value {
            Some(value) => in_range(variable, value, range, form).map(Duration::from_millis),
            None => Ok(default),
        };
        let aws_timeouts = AwsTimeouts {
            attempt: millis(
                AWS_ATTEMPT_TIMEOUT_MS,
                raw.aws_attempt_timeout_ms,
                50..=60_000,
                ATTEMPT_TIMEOUT_FORM,
                defaults.aws_timeouts.attempt,
            )?,
            operation: millis(
                AWS_OPERATION_TIMEOUT_MS,
                raw.aws_operation_timeout_ms,
                100..=60_000,
                OPERATION_TIMEOUT_FORM,
                defaults.aws_timeouts.operation,
            )?,
        };

        let server_keys = raw.server_keys.map(parse_server_keys).transpose()?;
        let server_key_secret_arn = raw
            .server_key_secret_arn
            .map(|arn| parse_secret_arn(SERVER_KEY_SECRET_ARN, SERVER_KEY_SECRET_ARN_FORM, arn))
            .transpose()?;
        // One source of the keys, as for the token secret.
        if let (Some(_), Some(arn)) = (&server_keys, &server_key_secret_arn) {
            return Err(Error::ConfigInvalid {
                variable: SERVER_KEY_SECRET_ARN,
                value: arn.clone(),
                expected: SERVER_KEY_SECRET_ARN_FORM,
            });
        }

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
            server_keys,
            server_key_secret_arn,
            connecting_window: defaults.connecting_window,
        })
    }
}

/// The number a variable sets, checked against `range`, or `default` when unset.
fn number<T: PartialOrd>(
    variable: &'static str,
    value: Option<Number<T>>,
    range: std::ops::RangeInclusive<T>,
    expected: &'static str,
    default: T,
) -> Result<T, Error> {
    match value {
        Some(value) => in_range(variable, value, range, expected),
        None => Ok(default),
    }
}
