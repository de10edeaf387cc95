//! `$connect` and `$disconnect` through the real handlers and the local DynamoDB.

use airwave_shared::handlers::{handle_connect, handle_disconnect};
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::ConnectionStore;
use airwave_tests::{connect_event, disconnect_event, TestTables};

#[tokio::test]
async fn connect_stores_the_record_with_its_ttl_and_source_ip() {
    let tables = TestTables::create().await;
    let before = epoch_seconds_now();

    let response = tables.connect(connect_event("conn-A=", "198.51.100.23")).await;
    let after = epoch_seconds_now();

    assert_eq!(response.status_code, 200);
    let record = tables
        .store
        .get_connection("conn-A=")
        .await
        .unwrap()
        .expect("record stored");
    assert_eq!(record.source_ip, "198.51.100.23");
    let ttl = tables.config.connection_ttl_seconds as i64;
    assert!(
        (before + ttl..=after + ttl).contains(&record.expires_at),
        "expires_at {} not within [{}, {}]",
        record.expires_at,
        before + ttl,
        after + ttl
    );
    assert_eq!(
        record.connected_at_ms, 1795378544317,
        "API Gateway's connectedAt is kept"
    );
    assert_eq!(record.stage.as_deref(), Some("prod"));
    assert_eq!(record.user_id, None);
}

#[tokio::test]
async fn the_ttl_follows_the_configuration() {
    let mut tables = TestTables::create().await;
    tables.config.connection_ttl_seconds = 600;
    let before = epoch_seconds_now();

    tables.connect(connect_event("conn-short=", "198.51.100.23")).await;

    let record = tables
        .store
        .get_connection("conn-short=")
        .await
        .unwrap()
        .expect("record stored");
    assert!(record.expires_at >= before + 600 && record.expires_at <= epoch_seconds_now() + 600);
}

#[tokio::test]
async fn connect_without_a_connection_id_is_refused_and_stores_nothing() {
    let tables = TestTables::create().await;
    let mut event = connect_event("ignored", "198.51.100.23");
    event.payload.request_context.connection_id = None;

    let response = tables.connect(event).await;

    assert_eq!(response.status_code, 400);
    assert!(tables.stored_connection_ids().await.is_empty());
}

#[tokio::test]
async fn connect_without_a_source_ip_is_refused_and_stores_nothing() {
    let tables = TestTables::create().await;
    let mut event = connect_event("conn-no-ip=", "ignored");
    event.payload.request_context.identity.source_ip = None;

    let response = tables.connect(event).await;

    assert_eq!(response.status_code, 400);
    assert!(tables.stored_connection_ids().await.is_empty());
}

#[tokio::test]
async fn connect_fails_loudly_when_the_table_is_missing() {
    let mut tables = TestTables::create().await;
    tables.config.connections_table = "no-such-table".to_owned();
    let store = airwave_shared::DynamoStore::new(tables.dynamodb.clone(), &tables.config);

    let error = handle_connect(
        &store,
        airwave_tests::authenticator(&tables.config).as_ref(),
        None,
        &tables.config,
        connect_event("conn-B=", "198.51.100.23"),
    )
    .await
    .unwrap_err();

    let message = error.to_string();
    assert!(
        message.contains("PutItem") && message.contains("no-such-table"),
        "{message}"
    );
}

#[tokio::test]
async fn disconnect_removes_the_record_and_is_idempotent() {
    let tables = TestTables::create().await;
    tables.connect(connect_event("conn-A=", "198.51.100.23")).await;
    tables.connect(connect_event("conn-B=", "198.51.100.24")).await;

    let first = handle_disconnect(&tables.store, disconnect_event("conn-A="))
        .await
        .unwrap();
    let second = handle_disconnect(&tables.store, disconnect_event("conn-A="))
        .await
        .unwrap();

    assert_eq!(first.status_code, 200);
    assert_eq!(second.status_code, 200, "deleting an id that is already gone succeeds");
    assert_eq!(tables.stored_connection_ids().await, vec!["conn-B=".to_owned()]);
}

#[tokio::test]
async fn disconnect_of_an_id_never_seen_succeeds() {
    let tables = TestTables::create().await;

    let response = handle_disconnect(&tables.store, disconnect_event("never-connected="))
        .await
        .unwrap();

    assert_eq!(response.status_code, 200);
}
