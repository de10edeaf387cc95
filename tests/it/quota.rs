//! The account's API Gateway quota: the local Management API answers 429
//! beyond it, as API Gateway does, and the fan-out paces its posts to the
//! quota it is configured with, so a broadcast at the quota is not throttled.

use std::time::Duration;

use airwave_local::{LocalManagementApi, Options, Quota};
use airwave_shared::fanout::FanOutSettings;
use airwave_shared::message::Audience;
use airwave_shared::FanOut;
use airwave_tests::TestTables;

const TARGETS: usize = 400;
/// Far below what the fan-out posts unpaced even on a busy machine, with
/// AWS's ratio of burst to rate (5,000 to 10,000 a second): half a second of
/// posts may arrive at once, as when a busy host delays a few and then lets
/// them go together.
const QUOTA: Quota = Quota {
    per_second: 100.0,
    burst: 50.0,
};
/// The same rate with a small burst, so that a fan-out posting too fast meets
/// many 429s and how it reacts to them shows.
const TIGHT_QUOTA: Quota = Quota {
    per_second: 100.0,
    burst: 20.0,
};

async fn broadcast_with_quota(quota: Quota, post_quota_per_second: u32) -> (usize, usize) {
    let tables = TestTables::create().await;
    let ids: Vec<String> = (0..TARGETS).map(|n| format!("quota-{n:05}=")).collect();
    tables.seed_connections(&ids).await;
    let gateway = LocalManagementApi::start_with(Options {
        quota: Some(quota),
        ..Options::default()
    })
    .await
    .unwrap();
    for id in &ids {
        gateway.connect(id);
    }
    let fanout = FanOut::new(
        &tables.sdk_config,
        &gateway.endpoint(),
        FanOutSettings {
            concurrency: 64,
            post_quota_per_second,
            // Throttled posts are retried until they pass.
            post_max_attempts: 10,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
            ..FanOutSettings::from(&tables.config)
        },
    );
    let report = fanout
        .broadcast(
            &tables.store,
            Audience::Everyone,
            b"{\"type\":\"message\",\"id\":\"q\"}",
        )
        .await
        .unwrap();
    let counts = gateway.post_counts();
    assert_eq!(counts.delivered, TARGETS, "every connection gets the message once");
    assert_eq!(report.delivered, TARGETS);
    (counts.delivered, counts.throttled)
}

#[tokio::test]
async fn a_broadcast_paced_to_the_quota_is_not_throttled() {
    let (delivered, throttled) = broadcast_with_quota(QUOTA, 100).await;
    println!("paced: {delivered} delivered, {throttled} throttled");
    // The pacer's bucket is smaller than the account's: nothing is refused.
    assert_eq!(throttled, 0);
}

#[tokio::test]
async fn an_unpaced_broadcast_meets_429s_and_still_delivers_through_retries() {
    let (delivered, throttled) = broadcast_with_quota(TIGHT_QUOTA, 0).await;
    println!("unpaced: {delivered} delivered, {throttled} throttled");
    assert!(
        throttled > 100,
        "without pacing the quota refuses many posts: {throttled}"
    );
}

#[tokio::test]
async fn a_fan_out_that_thinks_the_quota_is_higher_backs_off_on_429s() {
    let (delivered, throttled) = broadcast_with_quota(TIGHT_QUOTA, 1_000).await;
    println!("quota set 10x too high: {delivered} delivered, {throttled} throttled");
    let (_, unpaced) = broadcast_with_quota(TIGHT_QUOTA, 0).await;
    assert!(
        throttled < unpaced,
        "halving on 429s refuses fewer posts than not pacing: {throttled} vs {unpaced}"
    );
}
