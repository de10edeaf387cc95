//! Polling, the fallback transport's read side: a client without a socket
//! reads each channel's messages after its position, with the same frames
//! and positions subscribers get, a page at a time, under its subscribe
//! rights; and a position the history no longer covers says so.

use airwave_protocol::http::{ChannelPoll, PollResponse, POLL_PAGE, POLL_PATH};
use airwave_protocol::{MessageFrame, Position};
use serde_json::{json, Value};

use super::{ids, post, post_to, server, stack, token};

async fn poll(stack: &airwave_tests::stack::LocalStack, authorization: &str, channels: Value) -> PollResponse {
    let (status, answer) = post_to(
        stack,
        POLL_PATH,
        Some(authorization),
        &json!({ "channels": channels }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    serde_json::from_value(answer).expect("a poll answer")
}

fn read(answer: &PollResponse, channel: &str) -> (Option<Position>, Option<bool>, Vec<MessageFrame>, bool) {
    match answer.channels.get(channel) {
        Some(ChannelPoll::Read {
            position,
            recovered,
            publications,
            more,
        }) => (position.clone(), *recovered, publications.clone(), *more),
        other => panic!("{channel}: {other:?}"),
    }
}

/// Polls until the channel's position reaches `offset` (the stream delivers
/// a moment after the write), starting from `since`.
async fn poll_until(
    stack: &airwave_tests::stack::LocalStack,
    authorization: &str,
    channel: &str,
    since: &Position,
    offset: u64,
) -> Vec<MessageFrame> {
    let mut from = since.clone();
    let mut received = Vec::new();
    for _ in 0..300 {
        let answer = poll(stack, authorization, json!({ channel: from })).await;
        let (position, recovered, publications, _more) = read(&answer, channel);
        assert_eq!(recovered, Some(true), "{answer:?}");
        received.extend(publications);
        from = position.expect("a position");
        if from.offset >= offset {
            return received;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{channel} never reached offset {offset}: {received:?}");
}

#[tokio::test]
async fn a_poll_reads_what_was_published_since_with_the_subscribers_positions() {
    let stack = stack(|_| {}).await;
    let alice = format!("Bearer {}", token("alice", &[]));
    // No position yet: the channel's own, and nothing else.
    let first = poll(&stack, &alice, json!({"news": null})).await;
    let (start, recovered, publications, _) = read(&first, "news");
    let start = start.expect("positions are on");
    assert_eq!((recovered, publications.len()), (None, 0));

    let batch = json!({"messages": (1..=3).map(|n| json!({"channel": "news", "data": {"n": n}})).collect::<Vec<_>>()});
    let (status, published) = post(&stack, Some(&server()), &batch.to_string()).await;
    assert_eq!(status, 200, "{published}");
    let received = poll_until(&stack, &alice, "news", &start, 3).await;
    let received_ids: Vec<String> = received.iter().map(|message| message.id.clone()).collect();
    assert_eq!(received_ids, ids(&published), "each message once, in order");
    let offsets: Vec<u64> = received
        .iter()
        .map(|message| message.position.as_ref().map_or(0, |p| p.offset))
        .collect();
    assert_eq!(offsets, [1, 2, 3]);
    assert_eq!(received[2].data, json!({"n": 3}));
    assert_eq!(received[2].channel.as_deref(), Some("news"));

    // From the last position, nothing new: the same position, no messages.
    let again = poll(&stack, &alice, json!({"news": received[2].position})).await;
    let (position, recovered, publications, more) = read(&again, "news");
    assert_eq!(
        (position, recovered, publications.len(), more),
        (received[2].position.clone(), Some(true), 0, false)
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_long_backlog_comes_a_page_at_a_time_and_a_lost_position_says_so() {
    let stack = stack(|config| config.history.size = 1_000).await;
    let alice = format!("Bearer {}", token("alice", &[]));
    let total = POLL_PAGE + 20;
    for chunk in 0..total.div_ceil(25) {
        let messages: Vec<Value> = (chunk * 25 + 1..=(chunk * 25 + 25).min(total))
            .map(|n| json!({"channel": "feed", "data": n}))
            .collect();
        let (status, answer) = post(&stack, Some(&server()), &json!({ "messages": messages }).to_string()).await;
        assert_eq!(status, 200, "{answer}");
    }
    let start = Position::not_started();
    // Wait for the whole backlog to have positions.
    let mut head = start.clone();
    for _ in 0..300 {
        let answer = poll(&stack, &alice, json!({"feed": null})).await;
        head = read(&answer, "feed").0.expect("a position");
        if head.offset >= total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(head.offset, total);
    let page = poll(&stack, &alice, json!({"feed": Position::new(head.epoch.clone(), 0)})).await;
    let (position, recovered, publications, more) = read(&page, "feed");
    assert_eq!(
        (recovered, publications.len(), more),
        (Some(true), POLL_PAGE as usize, true)
    );
    assert_eq!(position.as_ref().map(|p| p.offset), Some(POLL_PAGE));
    let rest = poll(&stack, &alice, json!({ "feed": position })).await;
    let (position, _, publications, more) = read(&rest, "feed");
    assert_eq!((publications.len(), more), (20, false));
    assert_eq!(position.map(|p| p.offset), Some(total));

    // A position of another epoch cannot be recovered from: the answer says
    // so and gives the channel's position to go on from.
    let lost = poll(&stack, &alice, json!({"feed": {"epoch": "an-old-epoch", "offset": 3}})).await;
    let (position, recovered, publications, _) = read(&lost, "feed");
    assert_eq!((recovered, publications.len()), (Some(false), 0));
    assert_eq!(position.map(|p| p.offset), Some(total));
    stack.shutdown().await;
}

#[tokio::test]
async fn a_poll_reads_only_channels_its_token_may_subscribe_to() {
    let stack = stack(|_| {}).await;
    let limited = format!(
        "Bearer {}",
        airwave_tests::signed_token(
            super::SECRET,
            &json!({"sub": "carol", "exp": airwave_shared::time::epoch_seconds_now() + 600, "channels": ["news"]}),
        )
    );
    let answer = poll(
        &stack,
        &limited,
        json!({"news": null, "sports": null, "user:dave": null, "user:carol": null, "bad name!": null}),
    )
    .await;
    let code = |channel: &str| match answer.channels.get(channel) {
        Some(ChannelPoll::Refused { error }) => Some(error.code.clone()),
        _ => None,
    };
    assert_eq!(code("news"), None);
    assert_eq!(code("user:carol"), None, "a personal channel is its owner's");
    assert_eq!(code("sports").as_deref(), Some("channel_forbidden"));
    assert_eq!(code("user:dave").as_deref(), Some("channel_forbidden"));
    assert_eq!(code("bad name!").as_deref(), Some("invalid_channel"));

    let (status, refused) = post_to(&stack, POLL_PATH, None, r#"{"channels":{"news":null}}"#).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (401, Some("token_missing")),
        "{refused}"
    );
    let (status, refused) = post_to(&stack, POLL_PATH, Some(&limited), r#"{"channels":["news"]}"#).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{refused}"
    );
    // As many channels as a connection may have, and no more; the answer says how many.
    assert_eq!(answer.max_channels, 10);
    let eleven: serde_json::Map<String, Value> = (0..11).map(|n| (format!("news-{n}"), Value::Null)).collect();
    let (status, refused) = post_to(
        &stack,
        POLL_PATH,
        Some(&limited),
        &json!({ "channels": eleven }).to_string(),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("channel_limit")),
        "{refused}"
    );
    stack.shutdown().await;
}
