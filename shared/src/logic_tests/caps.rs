//! The caps on open connections: exactly the cap is admitted, a removal
//! gives exactly its slots back, and a connection whose `$disconnect` never
//! came frees its slot once its TTL has passed.

use std::time::Duration;

use serde_json::json;

use super::support::Harness;

#[tokio::test]
async fn a_user_gets_exactly_the_cap_and_a_disconnect_frees_exactly_one() {
    let test = Harness::authenticated(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections_per_user = 3;
    });
    let alice = test.token("alice");
    let mut statuses = Vec::new();
    for n in 0..5 {
        statuses.push(
            test.connect(&format!("alice-{n}="), "198.51.100.20", Some(&alice))
                .await,
        );
    }
    assert_eq!(
        statuses.iter().map(|(status, _)| *status).collect::<Vec<_>>(),
        [200, 200, 200, 403, 403]
    );
    assert_eq!(statuses[3].1, "user_cap_reached");
    assert_eq!(test.store.open_count("open#user#alice"), Some(3));
    // Another user is not held by alice's cap.
    assert_eq!(
        test.connect("bob-0=", "198.51.100.20", Some(&test.token("bob")))
            .await
            .0,
        200
    );

    test.disconnect("alice-0=").await;
    assert_eq!(test.store.open_count("open#user#alice"), Some(2));
    // A repeated $disconnect gives nothing back twice.
    test.disconnect("alice-0=").await;
    assert_eq!(test.store.open_count("open#user#alice"), Some(2));
    assert_eq!(test.connect("alice-5=", "198.51.100.20", Some(&alice)).await.0, 200);
    assert_eq!(test.connect("alice-6=", "198.51.100.20", Some(&alice)).await.0, 403);
}

#[tokio::test]
async fn an_ip_cap_frees_the_slot_of_a_connection_past_its_ttl_with_its_subscriptions() {
    let test = Harness::new(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections_per_ip = 1;
        config.connection_ttl_seconds = 600;
    });
    assert_eq!(test.connect("first=", "198.51.100.30", None).await.0, 200);
    for channel in ["prices", "news"] {
        let reply = test
            .reply_to("first=", json!({"action": "subscribe", "channel": channel}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
    }
    let (status, reason) = test.connect("second=", "198.51.100.30", None).await;
    assert_eq!((status, reason.as_str()), (403, "ip_cap_reached"));

    // No $disconnect ever arrives; the record's TTL passes, and DynamoDB
    // has not deleted it yet.
    test.advance(Duration::from_secs(600));
    assert_eq!(test.connect("third=", "198.51.100.30", None).await.0, 200);
    assert_eq!(test.connection_ids().await, ["third="]);
    assert_eq!(test.store.open_count("open#ip#198.51.100.30"), Some(1));
    assert_eq!(test.store.subscription_items(), Vec::<(String, String)>::new());
}

#[tokio::test]
async fn the_total_cap_counts_every_connection_and_refuses_with_its_count() {
    let test = Harness::new(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections = 2;
    });
    assert_eq!(test.connect("a=", "198.51.100.40", None).await.0, 200);
    assert_eq!(test.connect("b=", "198.51.100.41", None).await.0, 200);
    let (status, reason) = test.connect("c=", "198.51.100.42", None).await;
    assert_eq!((status, reason.as_str()), (403, "total_cap_reached"));
    // A repeated $connect of an admitted connection takes no second slot.
    assert_eq!(test.connect("a=", "198.51.100.40", None).await.0, 200);
    assert_eq!(test.store.open_count("open#total"), Some(2));
    test.disconnect("b=").await;
    assert_eq!(test.connect("c=", "198.51.100.42", None).await.0, 200);
    assert_eq!(test.store.open_count("open#total"), Some(2));
}
