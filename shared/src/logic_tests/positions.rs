//! Positions per run: a run of one channel's messages takes a block of
//! consecutive offsets of the channel's epoch; a retried message keeps the
//! position it got; a channel quiet past its head's TTL starts a new epoch.

use std::time::Duration;

use airwave_protocol::Position;
use serde_json::json;

use super::support::{channel_message, Harness};
use crate::history::{ChannelHistory, HEAD_TTL_SECONDS};
use crate::message::MessageRecord;
use crate::store::MessageStore;

const TTL: u64 = 3_600;

/// A producer's message for `channel`, written to the messages table.
async fn produce(test: &Harness, id: &str, channel: &str) -> MessageRecord {
    let message = channel_message(id, channel, json!({"id": id}));
    test.store.put_message(&message).await.unwrap();
    message
}

async fn assign(test: &Harness, channel: &str, run: &[&MessageRecord]) -> Vec<Position> {
    test.store
        .assign_positions(channel, run, TTL, test.now())
        .await
        .unwrap()
}

fn offsets(positions: &[Position]) -> Vec<u64> {
    positions.iter().map(|position| position.offset).collect()
}

#[tokio::test]
async fn a_run_takes_consecutive_offsets_of_one_epoch_and_the_next_run_goes_on_from_them() {
    let test = Harness::new(|_| {});
    let (a, b, c) = (
        produce(&test, "a", "feed").await,
        produce(&test, "b", "feed").await,
        produce(&test, "c", "feed").await,
    );
    let first = assign(&test, "feed", &[&a, &b]).await;
    let second = assign(&test, "feed", &[&c]).await;
    assert_eq!(offsets(&first), [1, 2]);
    assert_eq!(offsets(&second), [3]);
    assert!(first
        .iter()
        .chain(&second)
        .all(|position| position.epoch == first[0].epoch));
    let head = test.store.channel_head("feed", test.now()).await.unwrap();
    assert_eq!(head, Some(second[0].clone()));
    // Another channel counts on its own.
    let other = produce(&test, "d", "other").await;
    assert_eq!(offsets(&assign(&test, "other", &[&other]).await), [1]);
}

#[tokio::test]
async fn a_retried_run_keeps_its_positions_and_the_messages_after_it_take_the_next() {
    let test = Harness::new(|_| {});
    let (a, b, c) = (
        produce(&test, "a", "feed").await,
        produce(&test, "b", "feed").await,
        produce(&test, "c", "feed").await,
    );
    let first = assign(&test, "feed", &[&a, &b]).await;
    // The batch comes again, with a record more.
    let retried = assign(&test, "feed", &[&a, &b, &c]).await;
    assert_eq!(retried[..2], first[..]);
    assert_eq!(offsets(&retried), [1, 2, 3]);
}

#[tokio::test]
async fn one_id_twice_in_a_run_gets_one_position() {
    let test = Harness::new(|_| {});
    let (a, b) = (produce(&test, "a", "feed").await, produce(&test, "b", "feed").await);
    assert_eq!(offsets(&assign(&test, "feed", &[&a, &a, &b]).await), [1, 1, 2]);
    let head = test.store.channel_head("feed", test.now()).await.unwrap().unwrap();
    assert_eq!(head.offset, 2);
}

#[tokio::test]
async fn a_channel_quiet_past_its_heads_ttl_starts_a_new_epoch() {
    let test = Harness::new(|_| {});
    let a = produce(&test, "a", "feed").await;
    let first = assign(&test, "feed", &[&a]).await;
    test.advance(Duration::from_secs(HEAD_TTL_SECONDS as u64 - 1));
    assert!(test.store.channel_head("feed", test.now()).await.unwrap().is_some());
    test.advance(Duration::from_secs(1));
    assert_eq!(test.store.channel_head("feed", test.now()).await.unwrap(), None);

    let b = produce(&test, "b", "feed").await;
    let second = assign(&test, "feed", &[&b]).await;
    assert_eq!(second[0].offset, 1);
    assert_ne!(second[0].epoch, first[0].epoch);
}

#[tokio::test]
async fn a_retry_writes_again_the_entries_an_earlier_try_left_out() {
    let test = Harness::new(|_| {});
    let (a, b) = (produce(&test, "a", "feed").await, produce(&test, "b", "feed").await);
    let positions = assign(&test, "feed", &[&a, &b]).await;
    // That try claimed both positions but wrote only the first entry.
    test.store.forget_history_entry("feed", 2);
    assign(&test, "feed", &[&a, &b]).await;
    let read = test
        .store
        .read_history("feed", &positions[0].epoch, (1, 2), 1 << 20, test.now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read.iter().map(|frame| frame.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[tokio::test]
async fn a_claim_gives_an_item_without_an_expiry_the_retention_and_a_gone_item_still_gets_a_position() {
    let test = Harness::new(|config| config.message_retention_seconds = 86_400);
    let kept = produce(&test, "kept", "feed").await;
    let gone = MessageRecord {
        message_id: "gone".to_owned(),
        ..kept.clone()
    };
    let positions = assign(&test, "feed", &[&kept, &gone]).await;
    assert_eq!(offsets(&positions), [1, 2]);
    assert_eq!(
        test.store.message("kept").unwrap().expires_at,
        Some(test.now() + 86_400)
    );
    assert!(test.store.message("gone").is_none());
}
