//! Recovery on subscribe: a client that says where it left off gets
//! exactly the messages it missed, in order, or is told they cannot be
//! recovered, never a part of them.

use std::time::Duration;

use serde_json::{json, Value};

use super::support::{channel_message, Harness};
use crate::history::ChannelHistory;
use crate::message::MessageRecord;
use crate::store::MessageStore;

/// Harness with history kept `ttl_seconds`, one connection `reader=`, and
/// `count` messages published to `feed`; answers their epoch.
async fn feed_of(count: usize, ttl_seconds: u64) -> (Harness, String) {
    let test = Harness::new(|config| {
        config.admission.attempts_per_ip = 0;
        config.history.ttl_seconds = ttl_seconds;
        config.connection_ttl_seconds = 7_200;
    });
    assert_eq!(test.connect("reader=", "198.51.100.95", None).await.0, 200);
    let mut messages = Vec::new();
    for n in 1..=count {
        let message = channel_message(&format!("m{n}"), "feed", json!(n));
        test.store.put_message(&message).await.unwrap();
        messages.push(message);
    }
    let run: Vec<&MessageRecord> = messages.iter().collect();
    let positions = test
        .store
        .assign_positions("feed", &run, ttl_seconds, test.now())
        .await
        .unwrap();
    (test, positions[0].epoch.clone())
}

async fn subscribe_since(test: &Harness, epoch: &str, offset: u64) -> Value {
    let since = json!({"epoch": epoch, "offset": offset});
    test.reply_to(
        "reader=",
        json!({"action": "subscribe", "channel": "feed", "since": since}),
    )
    .await
}

fn recovered_ids(reply: &Value) -> Vec<&str> {
    reply["publications"]
        .as_array()
        .map(|frames| frames.iter().filter_map(|frame| frame["id"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_client_that_comes_back_gets_exactly_what_it_missed_in_order() {
    let (test, epoch) = feed_of(5, 3_600).await;
    let reply = subscribe_since(&test, &epoch, 2).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(recovered_ids(&reply), ["m3", "m4", "m5"]);
    assert_eq!(reply["position"], json!({"epoch": epoch, "offset": 5}));

    let up_to_date = subscribe_since(&test, &epoch, 5).await;
    assert_eq!(up_to_date["recovered"], true, "{up_to_date}");
    assert_eq!(recovered_ids(&up_to_date), Vec::<&str>::new());
}

#[tokio::test]
async fn a_position_of_another_epoch_cannot_be_recovered() {
    let (test, _) = feed_of(3, 3_600).await;
    let reply = subscribe_since(&test, "0123456789abcdef", 1).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(recovered_ids(&reply), Vec::<&str>::new());
}

#[tokio::test]
async fn messages_past_the_history_ttl_cannot_be_recovered() {
    let (test, epoch) = feed_of(3, 60).await;
    test.advance(Duration::from_secs(60));
    // The head lives on (30 days); its entries do not.
    assert!(test.store.channel_head("feed", test.now()).await.unwrap().is_some());
    let reply = subscribe_since(&test, &epoch, 1).await;
    assert_eq!(reply["recovered"], false, "{reply}");
}

#[tokio::test]
async fn an_offset_a_stopped_try_took_and_never_wrote_is_skipped() {
    let (test, epoch) = feed_of(1, 3_600).await;
    let (lost, third) = (
        channel_message("lost", "feed", json!(2)),
        channel_message("m3", "feed", json!(3)),
    );
    for item in [&lost, &third] {
        test.store.put_message(item).await.unwrap();
    }
    // A try that took offset 2 and was stopped before writing anything.
    let stopped = test
        .store
        .reserve_positions("feed", &[&lost], test.now())
        .await
        .unwrap();
    assert_eq!(stopped.positions[0].offset, 2);
    let position = test
        .store
        .assign_position("feed", &third, 3_600, test.now())
        .await
        .unwrap();
    assert_eq!(position.offset, 3);

    // The entry the client saw last is there (or, from the start, the epoch
    // is younger than the history TTL): nothing expired, so the missing
    // offset was never written, which the re-reads confirm on the test's clock.
    let reply = subscribe_since(&test, &epoch, 1).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(recovered_ids(&reply), ["m3"]);
    let reply = subscribe_since(&test, "", 0).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(recovered_ids(&reply), ["m1", "m3"]);
}
