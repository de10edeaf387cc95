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

/// One frame from `id` through the real `$default` handler, and its reply.
async fn send(tables: &TestTables, id: &str, body: &Value) -> Reply {
    let response = handle_message(
        &tables.store,
        None,
        &tables.config,
        message_event(id, &body.to_string()),
    )
    .await
    .unwrap();
    let Some(airwave_shared::aws_lambda_events::encodings::Body::Text(text)) = response.body else {
        panic!("a text reply");
    };
    serde_json::from_str(&text).unwrap()
}

async fn subscribe(tables: &TestTables, id: &str, channel: &str) -> Reply {
    send(tables, id, &json!({"action": "subscribe", "channel": channel})).await
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

async fn publish(tables: &TestTables, id: &str, channel: Option<&str>) -> Reply {
    let mut body = json!({"action": "publish", "data": {"n": 1}});
    if let Some(channel) = channel {
        body["channel"] = json!(channel);
    }
    send(tables, id, &body).await
}

fn publish_refused(reply: &Reply) -> bool {
    matches!(
        reply,
        Reply::Error {
            code: ErrorCode::PublishForbidden,
            ..
        }
    )
}

#[tokio::test]
async fn publishing_needs_the_tokens_right_for_the_channel_and_a_separate_one_for_everyone() {
    let tables = tables(|config| {
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.allow_client_publish = true;
    })
    .await;
    connect(&tables, "reader=", json!({"sub": "reader"})).await;
    connect(&tables, "writer=", json!({"sub": "writer", "publish": ["chat:*"]})).await;
    connect(
        &tables,
        "announcer=",
        json!({"sub": "announcer", "publish": "$everyone"}),
    )
    .await;

    assert!(publish_refused(&publish(&tables, "reader=", Some("chat:1")).await));
    assert!(matches!(
        publish(&tables, "writer=", Some("chat:1")).await,
        Reply::Published { .. }
    ));
    assert!(publish_refused(&publish(&tables, "writer=", Some("prices")).await));
    assert!(publish_refused(&publish(&tables, "writer=", None).await));
    assert!(matches!(
        publish(&tables, "announcer=", None).await,
        Reply::Published { .. }
    ));
    assert!(publish_refused(&publish(&tables, "announcer=", Some("chat:1")).await));

    // Exactly the two allowed messages were stored, each naming its publisher.
    let mut stored: Vec<(Value, Value)> = tables
        .stored_messages()
        .await
        .into_iter()
        .map(|message| (message["published_by_user"].clone(), message["channel"].clone()))
        .collect();
    stored.sort_by_key(|(user, _)| user.to_string());
    assert_eq!(
        stored,
        vec![(json!("announcer"), Value::Null), (json!("writer"), json!("chat:1"))]
    );
}

#[tokio::test]
async fn no_publish_claim_reaches_into_another_users_personal_channel() {
    let tables = tables(|config| {
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.allow_client_publish = true;
    })
    .await;
    connect(&tables, "admin=", json!({"sub": "admin", "publish": ["*"]})).await;
    let long_sub = format!("CN=Jane Doe/O=Example/{}", "y".repeat(200));
    connect(&tables, "long=", json!({"sub": long_sub, "publish": ["*"]})).await;

    // A claim of every channel does not open bob's, nor a hashed one of someone else,
    let hashed = airwave_shared::permissions::personal_channel(&long_sub);
    assert!(hashed.starts_with("user:@"), "{hashed}");
    assert!(publish_refused(&publish(&tables, "admin=", Some("user:bob")).await));
    assert!(publish_refused(&publish(&tables, "admin=", Some(&hashed)).await));
    // while each owner reaches its own, a long sub with odd characters included.
    assert!(matches!(
        publish(&tables, "admin=", Some("user:admin")).await,
        Reply::Published { .. }
    ));
    assert!(matches!(
        publish(&tables, "long=", Some(&hashed)).await,
        Reply::Published { .. }
    ));
    assert!(matches!(
        subscribe(&tables, "long=", &hashed).await,
        Reply::Subscribed { .. }
    ));
    assert!(refused(&subscribe(&tables, "admin=", &hashed).await));
    let mut channels: Vec<Value> = tables
        .stored_messages()
        .await
        .into_iter()
        .map(|message| message["channel"].clone())
        .collect();
    channels.sort_by_key(Value::to_string);
    let mut expected = vec![json!("user:admin"), json!(hashed)];
    expected.sort_by_key(Value::to_string);
    assert_eq!(channels, expected, "nothing refused was written");
}

#[tokio::test]
async fn receivers_see_who_published_over_real_sockets() {
    use airwave_client::{Client, ClientConfig, Event};
    use airwave_tests::stack::LocalStack;
    use std::time::Duration;

    let tables = tables(|config| {
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.allow_client_publish = true;
    })
    .await;
    let stack = LocalStack::start(tables, airwave_gateway::GatewayOptions::default()).await;
    let token = |claims: Value| {
        let mut claims = claims;
        claims["exp"] = json!(epoch_seconds_now() + 600);
        signed_token(SECRET, &claims)
    };
    let guard = Duration::from_secs(60);
    let subscriber_config = ClientConfig::new(&stack.ws_url())
        .unwrap()
        .with_token(token(json!({"sub": "reader"})));
    let (subscriber, mut events) = Client::new(subscriber_config);
    tokio::time::timeout(guard, subscriber.subscribe("chat:1"))
        .await
        .unwrap()
        .unwrap();
    let publisher_config = ClientConfig::new(&stack.ws_url())
        .unwrap()
        .with_token(token(json!({"sub": "writer", "publish": ["chat:*"]})));
    let (publisher, _publisher_events) = Client::new(publisher_config);
    tokio::time::timeout(guard, publisher.publish(Some("chat:1"), json!("hi")))
        .await
        .unwrap()
        .unwrap();

    let message = tokio::time::timeout(guard, async {
        loop {
            if let Some(Event::Message(message)) = events.recv().await {
                return message;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(message.publisher.as_deref(), Some("writer"));
    assert_eq!(message.data, json!("hi"));
    subscriber.close().await;
    publisher.close().await;
    stack.shutdown().await;
}

#[tokio::test]
async fn the_publish_rate_limit_admits_exactly_its_allowance_under_concurrent_publishes() {
    let tables = tables(|config| {
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.allow_client_publish = true;
        config.publish_rate = airwave_shared::config::PublishRate {
            limit: 5,
            window_seconds: 3_600,
            ..Default::default()
        };
    })
    .await;
    connect(&tables, "chatty=", json!({"sub": "chatty", "publish": ["chat:*"]})).await;
    connect(&tables, "quiet=", json!({"sub": "quiet", "publish": ["chat:*"]})).await;

    let replies = futures::future::join_all((0..30).map(|_| publish(&tables, "chatty=", Some("chat:1")))).await;
    let published = replies
        .iter()
        .filter(|reply| matches!(reply, Reply::Published { .. }))
        .count();
    let limited = replies
        .iter()
        .filter(|reply| {
            matches!(
                reply,
                Reply::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            )
        })
        .count();
    assert_eq!((published, limited), (5, 25), "{replies:?}");
    // Each connection has its own allowance.
    assert!(matches!(
        publish(&tables, "quiet=", Some("chat:1")).await,
        Reply::Published { .. }
    ));
    // Only the admitted publishes were stored.
    assert_eq!(tables.stored_messages().await.len(), 6);
}

async fn stats(tables: &TestTables, id: &str) -> Reply {
    send(tables, id, &json!({"action": "stats"})).await
}

#[tokio::test]
async fn stats_need_the_operator_right_and_one_count_answers_repeated_calls() {
    let tables = tables(|config| {
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.allow_stats = true;
        config.stats_max_age_seconds = 3_600;
    })
    .await;
    connect(&tables, "user=", json!({"sub": "user"})).await;
    connect(&tables, "claims-false=", json!({"sub": "sneaky", "operator": "true"})).await;
    connect(&tables, "ops=", json!({"sub": "ops", "operator": true})).await;

    for id in ["user=", "claims-false="] {
        assert!(
            matches!(
                stats(&tables, id).await,
                Reply::Error {
                    code: ErrorCode::StatsForbidden,
                    ..
                }
            ),
            "{id}"
        );
    }
    let Reply::Stats(first) = stats(&tables, "ops=").await else {
        panic!("the operator gets the stats");
    };
    assert_eq!(first.open_connections, 3);
    // More connections and more calls: the tables are not counted again
    // while the first count is fresh.
    connect(&tables, "late=", json!({"sub": "late"})).await;
    for _ in 0..3 {
        assert_eq!(stats(&tables, "ops=").await, Reply::Stats(first.clone()));
    }
}

#[tokio::test]
async fn a_stale_count_is_counted_again_and_group_claims_can_name_operators() {
    let tables = tables(|config| {
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.allow_stats = true;
        config.stats_max_age_seconds = 1;
        config.auth.operator_claim = airwave_shared::config::OperatorClaim {
            claim: "cognito:groups".into(),
            value: Some("operators".into()),
        };
    })
    .await;
    connect(
        &tables,
        "ops=",
        json!({"sub": "ops", "cognito:groups": ["staff", "operators"]}),
    )
    .await;
    connect(&tables, "staff=", json!({"sub": "staff", "cognito:groups": ["staff"]})).await;
    assert!(matches!(
        stats(&tables, "staff=").await,
        Reply::Error {
            code: ErrorCode::StatsForbidden,
            ..
        }
    ));
    let Reply::Stats(first) = stats(&tables, "ops=").await else {
        panic!("a member of the operators group gets the stats");
    };
    assert_eq!(first.open_connections, 2);
    connect(&tables, "late=", json!({"sub": "late"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let Reply::Stats(second) = stats(&tables, "ops=").await else {
        panic!("stats again");
    };
    assert_eq!(second.open_connections, 3);
    assert!(second.as_of > first.as_of);
}
