//! Who may subscribe to what, through the real `$connect` and `$default`
//! handlers and the local DynamoDB: personal channels are their owner's alone,
//! a token's channels claim limits the rest, and a refused subscribe gets
//! `channel_forbidden` and changes nothing.

use airwave_protocol::{ErrorCode, Reply};
use airwave_shared::config::JwtSecret;
use airwave_shared::handlers::handle_message;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::ConnectionStore;
use airwave_tests::{connect_event_with_token, message_event, signed_token, TestTables};
use serde_json::{json, Value};

const SECRET: &str = "permissions-secret-permissions-secret";

async fn tables(configure: impl FnOnce(&mut airwave_shared::Config)) -> TestTables {
    TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        configure(config);
    })
    .await
}

/// Connects `id` with a token carrying `claims` (plus `exp`).
async fn connect(tables: &TestTables, id: &str, mut claims: Value) {
    claims["exp"] = json!(epoch_seconds_now() + 600);
    let event = connect_event_with_token(id, "198.51.100.30", &signed_token(SECRET, &claims));
    assert_eq!(tables.connect(event).await.status_code, 200, "{id}");
}

async fn subscribe(tables: &TestTables, id: &str, channel: &str) -> Reply {
    let body = json!({"action": "subscribe", "channel": channel}).to_string();
    let response = handle_message(&tables.store, &tables.config, message_event(id, &body))
        .await
        .unwrap();
    let Some(airwave_shared::aws_lambda_events::encodings::Body::Text(text)) = response.body else {
        panic!("a text reply");
    };
    serde_json::from_str(&text).unwrap()
}

fn refused(reply: &Reply) -> bool {
    matches!(
        reply,
        Reply::Error {
            code: ErrorCode::ChannelForbidden,
            ..
        }
    )
}

#[tokio::test]
async fn a_user_cannot_subscribe_to_another_users_personal_channel() {
    let tables = tables(|config| config.jwt_secret = Some(JwtSecret::new(SECRET))).await;
    connect(&tables, "alice=", json!({"sub": "alice"})).await;
    connect(&tables, "bob=", json!({"sub": "bob"})).await;

    assert!(matches!(
        subscribe(&tables, "alice=", "user:alice").await,
        Reply::Subscribed { .. }
    ));
    let reply = subscribe(&tables, "bob=", "user:alice").await;
    assert!(refused(&reply), "{reply:?}");

    // Nothing changed for bob: no subscription item, no channel on his record.
    assert_eq!(
        tables.stored_subscriptions().await,
        vec![("user:alice".to_owned(), "alice=".to_owned())]
    );
    assert!(tables
        .store
        .get_connection("bob=")
        .await
        .unwrap()
        .unwrap()
        .channels
        .is_empty());
}

#[tokio::test]
async fn a_tokens_channels_claim_allows_its_names_and_prefixes_and_nothing_else() {
    let tables = tables(|config| config.jwt_secret = Some(JwtSecret::new(SECRET))).await;
    connect(
        &tables,
        "reader=",
        json!({"sub": "reader", "channels": ["prices", "news:*"]}),
    )
    .await;
    connect(&tables, "locked=", json!({"sub": "locked", "channels": []})).await;
    connect(&tables, "legacy=", json!({"sub": "legacy"})).await;

    for channel in ["prices", "news:eu", "user:reader"] {
        assert!(
            matches!(subscribe(&tables, "reader=", channel).await, Reply::Subscribed { .. }),
            "{channel}"
        );
    }
    for channel in ["orders", "newsroom", "prices.eu"] {
        assert!(refused(&subscribe(&tables, "reader=", channel).await), "{channel}");
    }
    // An empty claim leaves only the personal channel.
    assert!(refused(&subscribe(&tables, "locked=", "prices").await));
    assert!(matches!(
        subscribe(&tables, "locked=", "user:locked").await,
        Reply::Subscribed { .. }
    ));
    // A token without the claim keeps the public channels (as before claims).
    assert!(matches!(
        subscribe(&tables, "legacy=", "orders").await,
        Reply::Subscribed { .. }
    ));
    let reader = tables.store.get_connection("reader=").await.unwrap().unwrap();
    assert_eq!(reader.channels.len(), 3, "only the allowed channels were added");
}

#[tokio::test]
async fn the_claim_name_is_configurable() {
    let tables = tables(|config| {
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.auth.channels_claim = "https://example.com/channels".into();
    })
    .await;
    connect(
        &tables,
        "c=",
        json!({"sub": "c", "https://example.com/channels": "prices alerts:*"}),
    )
    .await;
    assert!(matches!(
        subscribe(&tables, "c=", "alerts:fire").await,
        Reply::Subscribed { .. }
    ));
    assert!(refused(&subscribe(&tables, "c=", "orders").await));
}

#[tokio::test]
async fn without_authentication_personal_channels_do_not_exist_and_the_rest_are_open() {
    let tables = tables(|_| {}).await;
    tables.admit("anon=").await;
    assert!(refused(&subscribe(&tables, "anon=", "user:alice").await));
    assert!(matches!(
        subscribe(&tables, "anon=", "prices").await,
        Reply::Subscribed { .. }
    ));
}
