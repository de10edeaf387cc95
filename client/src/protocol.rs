//! The Airwave client protocol, from the `airwave-protocol` crate the server
//! is built on too, plus how this client pairs a reply without an id (from a
//! server older than request ids) with its request.

pub use airwave_protocol::{
    parse_server_frame as parse_frame, ClientFrame, ErrorCode, Incoming, MessageFrame as Message, Position, Reply,
    ReplyFrame, Request, RequestId, Stats,
};

/// Whether `reply` can be the answer to `request`, for replies that carry no
/// id: an error answers anything.
pub fn answers(reply: &Reply, request: &Request) -> bool {
    match (reply, request) {
        (Reply::Error { .. }, _) => true,
        (Reply::Pong { .. }, Request::Ping) => true,
        (Reply::Subscribed { channel: a, .. }, Request::Subscribe { channel: b, .. }) => a == b,
        (Reply::Unsubscribed { channel: a }, Request::Unsubscribe { channel: b }) => a == b,
        (Reply::Published { .. }, Request::Publish { .. }) => true,
        (Reply::Stats(_), Request::Stats) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn replies_without_ids_answer_only_their_own_kind_of_request() {
        let sub_a = Request::Subscribe {
            channel: "a".into(),
            since: None,
        };
        let subscribed = |channel: &str| Reply::Subscribed {
            channel: channel.into(),
            position: None,
            recovered: None,
            publications: vec![],
        };
        assert!(answers(&subscribed("a"), &sub_a));
        assert!(!answers(&subscribed("b"), &sub_a));
        assert!(!answers(&Reply::Pong { expires_at: 1 }, &sub_a));
        let error = Reply::Error {
            code: ErrorCode::InvalidJson,
            message: String::new(),
        };
        assert!(answers(&error, &Request::Stats));
        let published = Reply::Published { message_id: "1".into() };
        assert!(answers(
            &published,
            &Request::Publish {
                channel: None,
                data: Value::Null
            }
        ));
        assert!(!answers(&published, &Request::Stats));
    }
}
