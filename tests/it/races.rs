//! Subscribe, unsubscribe, ping and disconnect of one connection at the same
//! time, through a proxy that cancels a share of the transactions with a
//! conflict (and throttles a share of every request), as DynamoDB does under
//! load and moto never does. Given these operations racing, then the
//! connection's record and its subscription items still agree.
//!
//! The local DynamoDB applies one request at a time, so operations of several
//! requests interleave at request boundaries; a random pause before each one
//! varies the interleaving from round to round.

use std::collections::BTreeSet;
use std::time::Duration;

use airwave_local::DynamoDbFaults;
use airwave_shared::store::SubscribeOutcome;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::{ConnectionStore, DynamoStore, SubscriptionStore};
use airwave_tests::TestTables;

const ROUNDS: usize = 12;

fn faults(seed: u64) -> DynamoDbFaults {
    DynamoDbFaults {
        throttle_percent: 5,
        conflict_percent: 30,
        seed,
    }
}

async fn pause() {
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..6))).await;
}

/// (channel, expires_at) of every subscription item of `connection_id`.
async fn subscription_items(tables: &TestTables, connection_id: &str) -> BTreeSet<(String, i64)> {
    tables
        .scan_all(&tables.config.subscriptions_table)
        .await
        .into_iter()
        .filter(|item| {
            item.get("connection_id")
                .and_then(|id| id.as_s().ok())
                .map(String::as_str)
                == Some(connection_id)
        })
        .map(|item| {
            let channel = airwave_shared::store::channel_of_partition(item["channel"].as_s().unwrap()).to_owned();
            let expires_at = item["expires_at"].as_n().unwrap().parse().unwrap();
            (channel, expires_at)
        })
        .collect()
}

/// The record and its items agree: one item per listed channel, each with the
/// record's expiry, and no item without a record.
async fn assert_consistent(tables: &TestTables, connection_id: &str, context: &str) {
    let record = tables.store.get_connection(connection_id).await.unwrap();
    let items = subscription_items(tables, connection_id).await;
    let expected: BTreeSet<(String, i64)> = match &record {
        Some(record) => record
            .channels
            .iter()
            .map(|channel| (channel.clone(), record.expires_at))
            .collect(),
        None => BTreeSet::new(),
    };
    assert_eq!(items, expected, "{context}: record {record:?}");
}

async fn subscribe(store: &DynamoStore, connection_id: &str, channel: &str) -> Option<SubscribeOutcome> {
    pause().await;
    let record = store.get_connection(connection_id).await.unwrap()?;
    Some(
        store
            .subscribe(&record, channel, 50, epoch_seconds_now())
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn subscribe_and_unsubscribe_of_one_channel_at_once_leave_the_record_and_items_agreeing() {
    let tables = TestTables::create().await;
    let (store, proxy) = tables.faulty_store(faults(1)).await;
    tables.admit("racer=").await;
    for round in 0..ROUNDS {
        let unsubscribe = async {
            pause().await;
            store.unsubscribe("racer=", "prices").await.unwrap();
        };
        let (outcome, ()) = tokio::join!(subscribe(&store, "racer=", "prices"), unsubscribe);
        assert_eq!(outcome, Some(SubscribeOutcome::Subscribed));
        assert_consistent(&tables, "racer=", &format!("round {round}")).await;
    }
    assert!(
        proxy.counts().injected(airwave_local::dynamodb_faults::CONFLICT) > 0,
        "conflicts were injected: {:?}",
        proxy.counts()
    );
}

#[tokio::test]
async fn subscribes_and_unsubscribes_racing_a_disconnect_leave_nothing_behind() {
    let tables = TestTables::create().await;
    let (store, proxy) = tables.faulty_store(faults(3)).await;
    for round in 0..ROUNDS {
        let id = format!("leaver-{round}=");
        tables.admit(&id).await;
        tables.subscribe(&id, "kept").await;
        let disconnect = async {
            pause().await;
            store.remove_connection(&id).await.unwrap();
        };
        let unsubscribe = async {
            pause().await;
            store.unsubscribe(&id, "kept").await.unwrap();
        };
        let (first, second, (), ()) = tokio::join!(
            subscribe(&store, &id, "news"),
            subscribe(&store, &id, "sport"),
            disconnect,
            unsubscribe
        );
        // Each subscribe either got in before the disconnect or found no
        // connection; neither may leave an item behind.
        for outcome in [first, second].into_iter().flatten() {
            assert!(
                matches!(
                    outcome,
                    SubscribeOutcome::Subscribed | SubscribeOutcome::UnknownConnection
                ),
                "{outcome:?}"
            );
        }
        assert!(tables.store.get_connection(&id).await.unwrap().is_none());
        assert_eq!(
            subscription_items(&tables, &id).await,
            BTreeSet::new(),
            "round {round}: items outlived the connection"
        );
    }
    assert!(
        proxy.counts().injected(airwave_local::dynamodb_faults::CONFLICT) > 0,
        "conflicts were injected: {:?}",
        proxy.counts()
    );
}

#[tokio::test]
async fn concurrent_subscribes_never_pass_the_channel_limit() {
    let tables = TestTables::create().await;
    let (store, proxy) = tables.faulty_store(faults(4)).await;
    tables.admit("greedy=").await;
    let record = store.get_connection("greedy=").await.unwrap().unwrap();
    let attempts = (0..8).map(|index| {
        let store = &store;
        let record = &record;
        async move {
            pause().await;
            store
                .subscribe(record, &format!("c{index}"), 3, epoch_seconds_now())
                .await
                .unwrap()
        }
    });
    let outcomes = futures::future::join_all(attempts).await;
    let subscribed = outcomes
        .iter()
        .filter(|outcome| **outcome == SubscribeOutcome::Subscribed)
        .count();
    assert_eq!(subscribed, 3, "{outcomes:?}");
    assert_consistent(&tables, "greedy=", "after the race").await;
    assert!(
        proxy.counts().injected(airwave_local::dynamodb_faults::CONFLICT) > 0,
        "conflicts were injected: {:?}",
        proxy.counts()
    );
}

#[tokio::test]
async fn caps_stay_exact_when_transactions_conflict_and_requests_are_throttled() {
    // The admission transaction's conflict retries, which moto alone never
    // exercises: every admitted connection holds exactly one slot.
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections_per_ip = 5;
    })
    .await;
    let (store, proxy) = tables.faulty_store(faults(5)).await;
    let connects = (0..8).map(|index| {
        let store = &store;
        let tables = &tables;
        async move {
            pause().await;
            airwave_shared::handlers::handle_connect(
                store,
                None,
                None,
                &tables.config,
                airwave_tests::connect_event(&format!("capped-{index}="), "198.51.100.7"),
            )
            .await
            .unwrap()
            .status_code
        }
    });
    let statuses = futures::future::join_all(connects).await;
    let admitted = statuses.iter().filter(|status| **status == 200).count();
    assert_eq!(admitted, 5, "{statuses:?}");
    assert_eq!(tables.stored_connection_ids().await.len(), 5);
    for index in 0..8 {
        tables
            .store
            .remove_connection(&format!("capped-{index}="))
            .await
            .unwrap();
    }
    let open = tables.admission_counter("open#ip#198.51.100.7").await;
    assert_eq!(open, Some(0), "every slot given back");
    assert!(
        proxy.counts().injected(airwave_local::dynamodb_faults::CONFLICT) > 0,
        "conflicts were injected: {:?}",
        proxy.counts()
    );
}
