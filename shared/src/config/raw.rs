//! The environment as serde reads it: every variable that is set, as its
//! type, before any check of its value.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use figment::providers::Serialized;
use figment::Figment;
use serde::de::{Error as _, Unexpected};
use serde::{Deserialize, Deserializer};

use super::forms::form_of;
use super::{UserCapMode, ALL_VARIABLES, JWT_SECRET};
use crate::Error;

/// What the environment sets, each field named after its variable without the
/// `AIRWAVE_` prefix, as figment's `Env::prefixed("AIRWAVE_")` would name it.
/// `None` is an unset or empty variable, which takes its default. No `Debug`:
/// it holds the secret. In alphabetical order, as in a reference: the groups
/// of settings are `Config`'s.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawEnv {
    pub admission_table: Option<String>,
    pub allow_anonymous_publish: Option<Flag>,
    pub allow_client_publish: Option<Flag>,
    pub allow_stats: Option<Flag>,
    pub aws_attempt_timeout_ms: Option<Number<u64>>,
    pub aws_operation_timeout_ms: Option<Number<u64>>,
    pub channels_claim: Option<String>,
    pub connect_attempts_per_ip: Option<Number<u64>>,
    pub connect_window_seconds: Option<Number<u64>>,
    pub connection_ttl_seconds: Option<Number<u64>>,
    pub connections_table: Option<String>,
    pub failure_queue_url: Option<String>,
    pub fanout_concurrency: Option<Number<usize>>,
    pub history_size: Option<Number<u64>>,
    pub history_table: Option<String>,
    pub history_ttl_seconds: Option<Number<u64>>,
    pub jwks_min_refetch_seconds: Option<Number<u64>>,
    pub jwks_url: Option<String>,
    pub jwt_allow_any_audience: Option<Flag>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_secret: Option<String>,
    pub jwt_secret_arn: Option<String>,
    pub jwt_secret_refresh_seconds: Option<Number<u64>>,
    pub management_endpoint: Option<String>,
    pub max_channels_per_connection: Option<Number<usize>>,
    pub max_connections: Option<Number<u64>>,
    pub max_connections_per_ip: Option<Number<u64>>,
    pub max_connections_per_user: Option<Number<u64>>,
    pub message_retention_seconds: Option<Number<u64>>,
    pub messages_table: Option<String>,
    pub operator_claim: Option<String>,
    pub post_max_attempts: Option<Number<u32>>,
    pub post_quota_per_second: Option<Number<u32>>,
    pub publish_claim: Option<String>,
    pub publish_rate_limit: Option<Number<u64>>,
    pub publish_rate_limit_per_ip: Option<Number<u64>>,
    pub publish_rate_limit_per_user: Option<Number<u64>>,
    pub publish_rate_window_seconds: Option<Number<u64>>,
    pub server_key_secret_arn: Option<String>,
    pub server_keys: Option<String>,
    pub stats_max_age_seconds: Option<Number<u64>>,
    pub subscriptions_table: Option<String>,
    pub user_cap_mode: Option<UserCapMode>,
}

impl RawEnv {
    /// Reads every variable through `lookup`. Values are trimmed, except the
    /// secret, whose every byte is the key; a value serde cannot read as its
    /// field's type is refused with the variable's name and form.
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let given: BTreeMap<&'static str, String> = ALL_VARIABLES
            .iter()
            .filter_map(|&variable| {
                let value = lookup(variable)?;
                let value = if variable == JWT_SECRET {
                    value
                } else {
                    value.trim().to_owned()
                };
                (!value.is_empty()).then_some((variable, value))
            })
            .collect();
        let fields: BTreeMap<String, &str> = given
            .iter()
            .map(|(variable, value)| (field_name(variable), value.as_str()))
            .collect();
        Figment::from(Serialized::defaults(fields))
            .extract()
            .map_err(|error| unreadable(&error, &given))
    }
}

/// The field of `RawEnv` a variable is read into.
fn field_name(variable: &str) -> String {
    variable
        .strip_prefix("AIRWAVE_")
        .unwrap_or(variable)
        .to_ascii_lowercase()
}

/// The error for a value serde could not read: figment names the field, and
/// the field names the variable, its value as given and its form. The secret
/// is read as text, which never fails, so it is never shown here.
fn unreadable(error: &figment::Error, given: &BTreeMap<&'static str, String>) -> Error {
    let field = error.path.first();
    let refused = given
        .iter()
        .find(|(variable, _)| field.is_some_and(|field| *field == field_name(variable)))
        .and_then(|(variable, value)| Some((*variable, value, form_of(variable)?)));
    match refused {
        Some((variable, value, expected)) => Error::ConfigInvalid {
            variable,
            value: value.clone(),
            expected,
        },
        // figment names the field of each value it cannot read, and the tests
        // give every variable a form: this is for a slip in either, and it
        // shows the field, never a value.
        None => Error::ConfigInvalid {
            variable: "AIRWAVE_*",
            value: error.path.join("."),
            expected: "a field that names a variable with a form",
        },
    }
}

/// A whole number as Rust parses it (so "-0", "1e3" and "1.0" are refused),
/// with the text it was read from, which an out-of-range error shows as given.
pub(super) struct Number<T> {
    pub value: T,
    pub text: String,
}

impl<'de, T> Deserialize<'de> for Number<T>
where
    T: FromStr,
    T::Err: Display,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.parse() {
            Ok(value) => Ok(Number { value, text }),
            Err(error) => Err(D::Error::custom(error)),
        }
    }
}

/// `true` or `false` in any case; figment's own reading of a flag would take
/// yes, on and 1 as well.
pub(super) struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_lowercase().as_str() {
            "true" => Ok(Flag(true)),
            "false" => Ok(Flag(false)),
            _ => Err(D::Error::invalid_value(Unexpected::Str(&text), &"true or false")),
        }
    }
}
