//! The Airwave client protocol, from the `airwave-protocol` crate the server
//! is built on too, plus how this client pairs a reply without an id (a pong,
//! which API Gateway gives itself, or any reply from a server older than
//! request ids) with its request.

pub use airwave_protocol::{
    parse_server_frame as parse_frame, ClientFrame, ErrorCode, Incoming, MessageFrame as Message, Position, Reply,
    ReplyFrame, Request, RequestId, Stats, SUBPROTOCOL, UNSUPPORTED_VERSION_STATUS,
};

/// Whether `reply` can be the answer to `request`, for replies that carry no
/// id: an error answers anything.
pub fn answers(reply: &Reply, request: &Request) -> bool {
    match (reply, request) {
        (Reply::Error { .. }, _) => true,
        (Reply::Pong, Request::Ping) => true,
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
        assert!(!answers(&Reply::Pong, &sub_a));
        assert!(!answers(&subscribed("a"), &Request::Ping));
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

    #[test]
    fn a_pong_without_an_id_answers_the_ping() {
        // Exactly what the `ping` route's mock integration sends.
        let Incoming::Reply { id, reply } = parse_frame(r#"{"type":"pong"}"#).unwrap() else {
            panic!("a pong is a reply");
        };
        assert_eq!((id, &reply), (None, &Reply::Pong));
        assert!(answers(&reply, &Request::Ping));
        assert!(!answers(&reply, &Request::Stats));
        // A server that still echoes the id and adds fields is read the same way.
        let Incoming::Reply { id, reply } = parse_frame(r#"{"type":"pong","expires_at":1,"id":7}"#).unwrap() else {
            panic!("a pong is a reply");
        };
        assert_eq!((id, reply), (Some(RequestId::Number(7)), Reply::Pong));
    }
}
