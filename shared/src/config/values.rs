//! The checks each value read from the environment must pass.

use std::ops::RangeInclusive;

use super::forms::{
    AUDIENCE_FORM, CLAIM_FORM, ENDPOINT_FORM, FAILURE_QUEUE_URL_FORM, ISSUER_FORM, JWKS_URL_FORM, JWT_SECRET_FORM,
    OPERATOR_CLAIM_FORM, SERVER_KEYS_FORM, TABLE_NAME_FORM,
};
use super::raw::Number;
use super::{
    JwtSecret, OperatorClaim, FAILURE_QUEUE_URL, JWKS_URL, JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, MIN_JWT_SECRET_BYTES,
    OPERATOR_CLAIM, SERVER_KEYS,
};
use crate::server_keys::ServerKeys;
use crate::Error;

pub(super) fn parse_table_name(variable: &'static str, value: String) -> Result<String, Error> {
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

/// A number read from `variable`, if it lies in `range`.
pub(super) fn in_range<T: PartialOrd>(
    variable: &'static str,
    number: Number<T>,
    range: RangeInclusive<T>,
    expected: &'static str,
) -> Result<T, Error> {
    if range.contains(&number.value) {
        Ok(number.value)
    } else {
        Err(Error::ConfigInvalid {
            variable,
            value: number.text,
            expected,
        })
    }
}

/// The HS256 secret, never echoed back: an error shows its length alone.
pub(super) fn parse_jwt_secret(value: String) -> Result<JwtSecret, Error> {
    if value.len() >= MIN_JWT_SECRET_BYTES {
        Ok(JwtSecret::new(value))
    } else {
        Err(Error::ConfigInvalid {
            variable: JWT_SECRET,
            value: format!("<{} bytes, redacted>", value.len()),
            expected: JWT_SECRET_FORM,
        })
    }
}

pub(super) fn parse_issuer(value: String) -> Result<String, Error> {
    if value.len() <= 512 {
        Ok(value)
    } else {
        Err(Error::ConfigInvalid {
            variable: JWT_ISSUER,
            value,
            expected: ISSUER_FORM,
        })
    }
}

/// One audience or several, separated by commas.
pub(super) fn parse_audience(value: String) -> Result<Vec<String>, Error> {
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
    Ok(audience)
}

pub(super) fn parse_claim_name(variable: &'static str, value: String) -> Result<String, Error> {
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

pub(super) fn parse_operator_claim(value: String) -> Result<OperatorClaim, Error> {
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
/// `arn:{partition}:secretsmanager:{region}:{account id}:secret:{name}`.
pub(super) fn parse_secret_arn(variable: &'static str, expected: &'static str, value: String) -> Result<String, Error> {
    let parts: Vec<&str> = value.splitn(7, ':').collect();
    let well_formed = parts.len() == 7
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "secretsmanager"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|byte| byte.is_ascii_digit())
        && parts[5] == "secret"
        && !parts[6].is_empty()
        && !value.contains(char::is_whitespace);
    if well_formed {
        Ok(value)
    } else {
        Err(Error::ConfigInvalid {
            variable,
            value,
            expected,
        })
    }
}

/// The server keys in the environment; the error shows no key.
pub(super) fn parse_server_keys(value: String) -> Result<ServerKeys, Error> {
    ServerKeys::parse(&value).map_err(|why| Error::ConfigInvalid {
        variable: SERVER_KEYS,
        value: format!("<{} bytes, redacted: {why}>", value.len()),
        expected: SERVER_KEYS_FORM,
    })
}

pub(super) fn parse_jwks_url(value: String) -> Result<String, Error> {
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
pub(super) fn parse_queue_url(value: String) -> Result<String, Error> {
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

pub(super) fn parse_endpoint(variable: &'static str, value: String) -> Result<String, Error> {
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
