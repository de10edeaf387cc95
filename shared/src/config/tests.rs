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

#[test]
fn a_value_that_is_not_of_its_type_is_refused_with_the_variable_the_value_and_the_form() {
    for (variable, value, form) in [
        (CONNECTION_TTL_SECONDS, "abc", forms::TTL_FORM),
        (FANOUT_CONCURRENCY, "1e3", forms::CONCURRENCY_FORM),
        (MAX_CONNECTIONS, "-0", forms::CAP_FORM),
        (ALLOW_STATS, "yes", forms::BOOL_FORM),
        (USER_CAP_MODE, "Refuse", forms::USER_CAP_MODE_FORM),
    ] {
        match config_from(&[(variable, value)]) {
            Err(Error::ConfigInvalid {
                variable: refused,
                value: given,
                expected,
            }) => assert_eq!((refused, given.as_str(), expected), (variable, value, form)),
            other => panic!("{variable}={value}: {other:?}"),
        }
    }
}

#[test]
fn an_out_of_range_number_is_shown_as_it_was_given() {
    let message = config_from(&[(POST_MAX_ATTEMPTS, "+011")]).unwrap_err().to_string();
    assert!(message.contains("\"+011\""), "{message}");
}

#[test]
fn values_are_trimmed_and_flags_read_in_any_case_but_the_secret_is_kept_as_given() {
    let secret = format!(" {} ", "s".repeat(MIN_JWT_SECRET_BYTES));
    let config = config_from(&[
        (CONNECTION_TTL_SECONDS, " 900 "),
        (HISTORY_TABLE, " prod-history "),
        (ALLOW_STATS, "True"),
        (USER_CAP_MODE, " evict_oldest "),
        (MANAGEMENT_ENDPOINT, "   "),
        (JWT_SECRET, &secret),
    ])
    .unwrap();
    assert_eq!(config.connection_ttl_seconds, 900);
    assert_eq!(config.history.table, "prod-history");
    assert!(config.allow_stats);
    assert_eq!(config.user_cap_mode, UserCapMode::EvictOldest);
    assert_eq!(config.management_endpoint, None);
    assert_eq!(config.jwt_secret, Some(JwtSecret::new(secret)));
}

#[test]
fn every_variable_is_read_and_has_a_form() {
    for variable in ALL_VARIABLES {
        assert!(forms::form_of(variable).is_some(), "{variable} has no form");
        // "~" is no number, flag, mode, table name, URL or claim, and too short
        // a secret: a variable that is read either refuses it by name or takes it.
        match config_from(&[(variable, "~")]) {
            Err(Error::ConfigInvalid { variable: refused, .. }) => assert_eq!(refused, *variable),
            Err(other) => panic!("{variable}: {other}"),
            Ok(config) => assert_ne!(config, Config::default(), "{variable} is not read"),
        }
    }
}

#[test]
fn the_secret_arn_names_a_secrets_manager_secret_and_turns_authentication_on() {
    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:airwave/jwt-AbCdEf";
    let config = config_from(&[(JWT_SECRET_ARN, ARN)]).unwrap();
    assert_eq!(config.auth.jwt_secret_arn.as_deref(), Some(ARN));
    assert_eq!(config.auth.jwt_secret_refresh_seconds, 300);
    assert!(config.authentication_enabled());
    for bad in [
        "airwave/jwt",
        "arn:aws:ssm:eu-west-1:123456789012:parameter/jwt",
        "arn:aws:secretsmanager:eu-west-1:1234:secret:jwt",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:",
    ] {
        let message = config_from(&[(JWT_SECRET_ARN, bad)]).unwrap_err().to_string();
        assert!(message.contains(JWT_SECRET_ARN), "{message}");
        assert!(message.contains("arn:aws:secretsmanager:{region}"), "{message}");
    }
}

#[test]
fn one_source_of_the_token_secret() {
    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:airwave/jwt-AbCdEf";
    let secret = "0123456789abcdef0123456789abcdef";
    let message = config_from(&[(JWT_SECRET, secret), (JWT_SECRET_ARN, ARN)])
        .unwrap_err()
        .to_string();
    assert!(message.contains(JWT_SECRET_ARN), "{message}");
    assert!(!message.contains(secret), "{message}");
    let message = config_from(&[(JWT_SECRET_REFRESH_SECONDS, "0")])
        .unwrap_err()
        .to_string();
    assert!(message.contains(JWT_SECRET_REFRESH_SECONDS), "{message}");
}
