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

/// The personal channel of `user_id`.
pub fn personal_channel(user_id: &str) -> String {
    format!("{PERSONAL_PREFIX}{user_id}")
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
    if let Some(owner) = channel.strip_prefix(PERSONAL_PREFIX) {
        return match record.user_id.as_deref() {
            Some(user) if user == owner => Ok(()),
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
