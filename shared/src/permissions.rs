//! Who may subscribe to what. A token's claims name the channels its
//! connection may subscribe to; every authenticated user also has a personal
//! channel, `user:{sub}`, that only that user may subscribe to.
//!
//! - A pattern is a channel name, or a prefix ending in `*` (`news:*` matches
//!   `news:eu` and `news:`; a lone `*` matches every channel).
//! - A token without the claim may subscribe to every channel but the personal
//!   channels of others: deployments that want every channel closed by default
//!   give each token the claim (an empty list leaves only the personal channel).
//! - Without authentication there are no users, so no personal channels: a
//!   `user:` channel is refused and every other channel is open.
//!
//! Publishing from clients (when the deployment allows it at all) needs a
//! right from the token's publish claim, with the same patterns; publishing to
//! every connection needs the entry [`EVERYONE`]. Without authentication any
//! connection may publish anywhere but to personal channels.

use crate::connection::ConnectionRecord;

/// The publish-claim entry that allows a message to every connection.
pub const EVERYONE: &str = "$everyone";

/// The prefix of personal channels.
pub const PERSONAL_PREFIX: &str = "user:";

/// Marks a personal channel named by a hash of its `sub`.
const HASHED_MARKER: char = '@';
/// Hex digits of the SHA-256 a hashed personal channel keeps (232 bits):
/// `user:@` and these fill the 64 characters a channel name may have.
const HASHED_HEX_DIGITS: usize = crate::channel::MAX_CHANNEL_NAME_BYTES - PERSONAL_PREFIX.len() - 1;

/// The personal channel of `user_id` (a token's `sub`): `user:{sub}` when that
/// is a valid channel name and the sub does not start with `@`; otherwise
/// `user:@` and the first 58 hex digits of the sub's SHA-256. So every sub,
/// however long or odd, has exactly one personal channel, and no plain sub
/// can name a hashed one (they never start with `@`).
pub fn personal_channel(user_id: &str) -> String {
    let plain = format!("{PERSONAL_PREFIX}{user_id}");
    if !user_id.starts_with(HASHED_MARKER) && crate::channel::validate_channel_name(&plain).is_ok() {
        return plain;
    }
    let hex = crate::channel::sha256_hex(user_id);
    format!("{PERSONAL_PREFIX}{HASHED_MARKER}{}", &hex[..HASHED_HEX_DIGITS])
}

/// Why a subscribe is refused (`channel_forbidden`, and this in the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another user's personal channel, or any personal channel without authentication.
    PersonalChannel,
    /// Not among the channels the token's claim allows.
    NotInClaims,
    /// An authenticated connection whose token has no publish right for it.
    NoPublishRight,
}

impl Refusal {
    pub fn explain(self) -> &'static str {
        match self {
            Refusal::PersonalChannel => "a personal channel (user:{sub}) is only for the user whose token has that sub",
            Refusal::NotInClaims => "the connection's token does not allow this channel",
            Refusal::NoPublishRight => {
                "the connection's token has no right to publish here ($everyone for every connection)"
            }
        }
    }
}

fn matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

/// Whether the connection `record` may subscribe to `channel`.
pub fn may_subscribe(record: &ConnectionRecord, channel: &str) -> Result<(), Refusal> {
    if channel.starts_with(PERSONAL_PREFIX) {
        return match record.user_id.as_deref() {
            Some(user) if personal_channel(user) == channel => Ok(()),
            _ => Err(Refusal::PersonalChannel),
        };
    }
    match &record.allowed_channels {
        None => Ok(()),
        Some(patterns) if patterns.iter().any(|pattern| matches(pattern, channel)) => Ok(()),
        Some(_) => Err(Refusal::NotInClaims),
    }
}

/// Whether the connection `record` may publish to `channel` (`None`: every connection).
pub fn may_publish(record: &ConnectionRecord, channel: Option<&str>) -> Result<(), Refusal> {
    // A personal channel is its owner's whatever the claims say: a publish
    // right of `*` does not reach into another user's.
    if let Some(channel) = channel.filter(|channel| channel.starts_with(PERSONAL_PREFIX)) {
        let owner = record.user_id.as_deref().map(personal_channel);
        if owner.as_deref() != Some(channel) {
            return Err(Refusal::PersonalChannel);
        }
    }
    let Some(_user) = record.user_id.as_deref() else {
        return match channel {
            Some(channel) if channel.starts_with(PERSONAL_PREFIX) => Err(Refusal::PersonalChannel),
            _ => Ok(()),
        };
    };
    let rights = record.allowed_publish.as_deref().unwrap_or_default();
    let allowed = match channel {
        None => rights.iter().any(|right| right == EVERYONE),
        Some(channel) => rights.iter().any(|right| right != EVERYONE && matches(right, channel)),
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal::NoPublishRight)
    }
}

/// A claim's value as a list of patterns: a JSON array of strings, or one
/// string of names separated by spaces or commas (as OAuth scopes are).
pub fn patterns_from_claim(value: &serde_json::Value) -> Option<Vec<String>> {
    match value {
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(serde_json::Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        serde_json::Value::String(text) => Some(
            text.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|part| !part.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(user: Option<&str>, allowed: Option<&[&str]>) -> ConnectionRecord {
        ConnectionRecord {
            connection_id: "c=".into(),
            source_ip: "198.51.100.1".into(),
            user_id: user.map(str::to_owned),
            connected_at_ms: 0,
            expires_at: 0,
            domain_name: None,
            stage: None,
            channels: vec![],
            slot_total: None,
            slot_user: None,
            slot_ip: None,
            allowed_channels: allowed.map(|patterns| patterns.iter().map(|p| p.to_string()).collect()),
            allowed_publish: None,
            token_expires_at: None,
            operator: false,
        }
    }

    #[test]
    fn publishing_needs_a_right_per_channel_and_a_separate_one_for_everyone() {
        let mut writer = record(Some("w"), None);
        assert_eq!(may_publish(&writer, Some("chat:1")), Err(Refusal::NoPublishRight));
        writer.allowed_publish = Some(vec!["chat:*".into()]);
        assert_eq!(may_publish(&writer, Some("chat:1")), Ok(()));
        assert_eq!(may_publish(&writer, Some("prices")), Err(Refusal::NoPublishRight));
        assert_eq!(may_publish(&writer, None), Err(Refusal::NoPublishRight));
        writer.allowed_publish = Some(vec!["*".into()]);
        assert_eq!(
            may_publish(&writer, None),
            Err(Refusal::NoPublishRight),
            "* is every channel, not everyone"
        );
        writer.allowed_publish = Some(vec![EVERYONE.into()]);
        assert_eq!(may_publish(&writer, None), Ok(()));
        assert_eq!(may_publish(&writer, Some("chat:1")), Err(Refusal::NoPublishRight));
        let anonymous = record(None, None);
        assert_eq!(may_publish(&anonymous, Some("chat:1")), Ok(()));
        assert_eq!(may_publish(&anonymous, None), Ok(()));
        assert_eq!(may_publish(&anonymous, Some("user:w")), Err(Refusal::PersonalChannel));
    }

    #[test]
    fn a_personal_channel_is_its_owners_alone() {
        let alice = record(Some("alice"), None);
        assert_eq!(may_subscribe(&alice, "user:alice"), Ok(()));
        assert_eq!(may_subscribe(&alice, "user:bob"), Err(Refusal::PersonalChannel));
        // Not even a claim of every channel opens another user's.
        let admin = record(Some("admin"), Some(&["*"]));
        assert_eq!(may_subscribe(&admin, "user:bob"), Err(Refusal::PersonalChannel));
        // Without authentication there are no personal channels.
        let anonymous = record(None, None);
        assert_eq!(may_subscribe(&anonymous, "user:alice"), Err(Refusal::PersonalChannel));
        assert_eq!(may_subscribe(&anonymous, "prices"), Ok(()));
    }

    #[test]
    fn no_publish_right_reaches_into_another_users_personal_channel() {
        let mut writer = record(Some("alice"), None);
        writer.allowed_publish = Some(vec!["*".into()]);
        assert_eq!(may_publish(&writer, Some("user:bob")), Err(Refusal::PersonalChannel));
        assert_eq!(
            may_publish(&writer, Some("user:alice")),
            Ok(()),
            "the owner, with a right"
        );
        writer.allowed_publish = Some(vec!["prices".into()]);
        assert_eq!(
            may_publish(&writer, Some("user:alice")),
            Err(Refusal::NoPublishRight),
            "the owner still needs a right"
        );
    }

    #[test]
    fn every_sub_has_one_valid_personal_channel() {
        assert_eq!(personal_channel("auth0|5f1c"), "user:auth0|5f1c");
        let long = "x".repeat(300);
        let odd = "CN=Jane Doe/O=Example";
        for sub in [long.as_str(), odd, "@alice", "émile"] {
            let channel = personal_channel(sub);
            assert!(channel.starts_with("user:@"), "{channel}");
            assert!(crate::channel::validate_channel_name(&channel).is_ok(), "{channel}");
            assert_eq!(may_subscribe(&record(Some(sub), None), &channel), Ok(()));
            assert_eq!(
                may_subscribe(&record(Some("someone-else"), Some(&["*"])), &channel),
                Err(Refusal::PersonalChannel)
            );
        }
        assert_ne!(personal_channel(&long), personal_channel(&"x".repeat(301)));
    }

    #[test]
    fn claims_allow_exact_names_and_prefixes_and_nothing_else() {
        let reader = record(Some("u"), Some(&["prices", "news:*"]));
        assert_eq!(may_subscribe(&reader, "prices"), Ok(()));
        assert_eq!(may_subscribe(&reader, "news:eu"), Ok(()));
        assert_eq!(may_subscribe(&reader, "prices.eu"), Err(Refusal::NotInClaims));
        assert_eq!(may_subscribe(&reader, "newsroom"), Err(Refusal::NotInClaims));
        assert_eq!(
            may_subscribe(&reader, "user:u"),
            Ok(()),
            "the personal channel needs no claim"
        );
        let none = record(Some("u"), Some(&[]));
        assert_eq!(may_subscribe(&none, "prices"), Err(Refusal::NotInClaims));
        let unlisted = record(Some("u"), None);
        assert_eq!(may_subscribe(&unlisted, "anything"), Ok(()));
    }

    #[test]
    fn a_claim_is_a_list_or_a_space_separated_string() {
        assert_eq!(
            patterns_from_claim(&json!(["a", "b:*", 3])),
            Some(vec!["a".into(), "b:*".into()])
        );
        assert_eq!(
            patterns_from_claim(&json!("a b:*,c")),
            Some(vec!["a".into(), "b:*".into(), "c".into()])
        );
        assert_eq!(patterns_from_claim(&json!(true)), None);
    }
}
