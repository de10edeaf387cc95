//! The per-IP throttle: exactly the limit per window, each address apart,
//! and defaults that admit normal traffic.

use airwave_shared::Config;
use airwave_tests::{connect_event, LogCapture, TestTables};

use super::{at_time, connect_all, statuses, FIXTURE_REQUEST_TIME_MS};

#[tokio::test]
async fn two_hundred_concurrent_attempts_from_one_ip_admit_exactly_the_limit_then_a_new_window_admits_again() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 10;
        config.admission.window_seconds = 60;
    })
    .await;
    let logs = LogCapture::default();
    let _guard = logs.install();
    let events = (0..200)
        .map(|i| {
            at_time(
                connect_event(&format!("storm-{i:03}="), "198.51.100.9"),
                FIXTURE_REQUEST_TIME_MS,
            )
        })
        .collect();
    let responses = connect_all(&tables, events).await;
    let (admitted, refused) = statuses(&responses);
    assert_eq!(admitted, 10);
    assert_eq!(refused.len(), 190);
    assert!(refused.iter().all(|status| *status == 429), "{refused:?}");
    // A throttled attempt writes nothing but its count.
    assert_eq!(tables.stored_connection_ids().await.len(), 10);

    let refusal = logs
        .lines()
        .into_iter()
        .find(|line| line["fields"]["reason"] == "ip_throttled")
        .expect("a refusal line");
    assert_eq!(refusal["fields"]["source_ip"], "198.51.100.9");
    assert_eq!(refusal["fields"]["limit"], 10);
    assert!(refusal["fields"]["current"].as_u64().unwrap() > 10);

    // Another IP in the same window has its own count.
    let other = connect_all(
        &tables,
        vec![at_time(
            connect_event("other-ip=", "198.51.100.10"),
            FIXTURE_REQUEST_TIME_MS,
        )],
    )
    .await;
    assert_eq!(other[0].status_code, 200);

    let next_window = FIXTURE_REQUEST_TIME_MS + 60_000;
    let responses = connect_all(
        &tables,
        vec![at_time(connect_event("next-window=", "198.51.100.9"), next_window)],
    )
    .await;
    assert_eq!(responses[0].status_code, 200);
}

#[tokio::test]
async fn with_every_variable_unset_the_defaults_admit_normal_traffic() {
    let defaults = Config::from_lookup(|_| None).unwrap();
    let tables = TestTables::create_with(|config| {
        let names = (
            config.connections_table.clone(),
            config.messages_table.clone(),
            config.subscriptions_table.clone(),
            config.admission_table.clone(),
        );
        // The test's own timeouts: the local DynamoDB answers one request at
        // a time, so 120 concurrent connects queue longer than production's.
        let timeouts = config.aws_timeouts;
        *config = defaults.clone();
        (
            config.connections_table,
            config.messages_table,
            config.subscriptions_table,
            config.admission_table,
        ) = names;
        config.aws_timeouts = timeouts;
    })
    .await;
    // A busy office behind one address, and visitors from many others.
    let events = (0..60)
        .map(|i| connect_event(&format!("office-{i:02}="), "198.51.100.70"))
        .chain((0..60).map(|i| connect_event(&format!("visitor-{i:02}="), &format!("203.0.113.{i}"))))
        .collect();
    let (admitted, refused) = statuses(&connect_all(&tables, events).await);
    assert_eq!(admitted, 120, "refused: {refused:?}");
}
