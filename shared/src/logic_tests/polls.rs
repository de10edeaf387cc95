//! The fallback's poll: a channel's messages after a position, and a head
//! read a moment behind (polls read it eventually consistent) taken for
//! "nothing new", never for a lost position.

use airwave_protocol::http::ChannelPoll;
use airwave_protocol::Position;
use serde_json::json;

use super::support::{channel_message, Harness};
use crate::handlers::http::poll::read_channel;
use crate::history::ChannelHistory;
use crate::message::MessageRecord;
use crate::store::MessageStore;

async fn feed(test: &Harness, count: usize) -> String {
    let messages: Vec<MessageRecord> = (1..=count)
        .map(|n| channel_message(&format!("m{n}"), "feed", json!(n)))
        .collect();
    for message in &messages {
        test.store.put_message(message).await.unwrap();
    }
    let run: Vec<&MessageRecord> = messages.iter().collect();
    let positions = test
        .store
        .assign_positions("feed", &run, 600, test.now())
        .await
        .unwrap();
    positions[0].epoch.clone()
}

#[tokio::test]
async fn a_poll_answers_the_messages_after_its_position() {
    let test = Harness::new(|_| {});
    let epoch = feed(&test, 3).await;
    let answer = read_channel(
        &test.store,
        &test.config,
        "feed",
        Some(Position::new(epoch.clone(), 1)),
        test.now(),
    )
    .await
    .unwrap();
    let ChannelPoll::Read {
        position,
        recovered,
        publications,
        more,
    } = answer
    else {
        panic!("a read: {answer:?}");
    };
    assert_eq!(position, Some(Position::new(epoch, 3)));
    assert_eq!((recovered, more), (Some(true), false));
    let ids: Vec<&str> = publications.iter().map(|message| message.id.as_str()).collect();
    assert_eq!(ids, ["m2", "m3"]);
}

#[tokio::test]
async fn a_head_behind_the_clients_position_is_nothing_new_not_a_lost_position() {
    // What a poll sees when its eventually consistent read of the head lags
    // a position the client already has.
    let test = Harness::new(|_| {});
    let epoch = feed(&test, 3).await;
    let ahead = Position::new(epoch, 4);
    let answer = read_channel(&test.store, &test.config, "feed", Some(ahead.clone()), test.now())
        .await
        .unwrap();
    assert_eq!(
        answer,
        ChannelPoll::Read {
            position: Some(ahead),
            recovered: Some(true),
            publications: Vec::new(),
            more: false,
        }
    );
}
