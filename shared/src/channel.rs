//! Channel names: what a client may subscribe and publish to.

use crate::Error;

pub const MAX_CHANNEL_NAME_BYTES: usize = 64;

/// The SHA-256 of `text` in lower-case hex: how an id from outside that is
/// too long or too odd for a key or a channel name is named instead.
pub(crate) fn sha256_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A channel name is 1 to 64 characters of `A-Z a-z 0-9 _ - . : | @`, so it is
/// safe as a DynamoDB key and in a log line. `|` and `@` are there because
/// identity providers put them in user ids (`auth0|5f…`), which personal
/// channels (`user:{sub}`) carry.
pub fn validate_channel_name(name: &str) -> Result<(), Error> {
    let valid_characters = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '|' | '@'));
    if !name.is_empty() && name.len() <= MAX_CHANNEL_NAME_BYTES && valid_characters {
        Ok(())
    } else {
        Err(Error::InvalidChannel {
            name: name.chars().take(MAX_CHANNEL_NAME_BYTES + 16).collect(),
            length: name.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for name in [
            "prices",
            "room:42",
            "eu-west.alerts",
            "a",
            &"x".repeat(64),
            "user:auth0|5f1c",
            "user:a@b.c",
        ] {
            assert!(validate_channel_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn empty_long_and_odd_names_are_refused() {
        for name in ["", &"x".repeat(65), "has space", "slash/name", "émoji", "new\nline"] {
            assert!(validate_channel_name(name).is_err(), "{name:?}");
        }
    }
}
