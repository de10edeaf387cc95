//! Publishing over HTTP: a server key publishes a message and a batch that
//! subscribers receive with positions, in order; an idempotency key publishes
//! once; a client token publishes under its socket's rights and allowance;
//! and every bad request gets its 4xx and writes nothing.

use airwave_client::http::{Credential, HttpPublisher};
use airwave_protocol::http::{HttpMessage, MAX_BATCH};
use airwave_shared::config::PublishRate;
use serde_json::{json, Value};

use airwave_tests::signed_token;

use super::{ids, messages, post, server, stack, subscriber, token, SERVER_KEY};

#[tokio::test]
async fn a_server_key_publishes_a_message_and_a_batch_that_subscribers_receive_in_order() {
    let stack = stack(|_| {}).await;
    let mut alice = subscriber(&stack, "alice", "news").await;

    let (status, one) = post(&stack, Some(&server()), r#"{"channel":"news","data":{"n":0}}"#).await;
    assert_eq!(status, 200, "{one}");
    let batch = json!({"messages": (1..=3).map(|n| json!({"channel": "news", "data": {"n": n}})).collect::<Vec<_>>()});
    let (status, three) = post(&stack, Some(&server()), &batch.to_string()).await;
    assert_eq!(status, 200, "{three}");
    let mut published = ids(&one);
    published.extend(ids(&three));

    let received = messages(&mut alice, 4).await;
    let received_ids: Vec<String> = received.iter().map(|message| message.id.clone()).collect();
    assert_eq!(received_ids, published, "every message, in the order published");
    let offsets: Vec<u64> = received
        .iter()
        .map(|message| message.position.as_ref().expect("a position").offset)
        .collect();
    assert!(offsets.windows(2).all(|pair| pair[1] == pair[0] + 1), "{offsets:?}");
    assert_eq!(received[3].data, json!({"n": 3}));

    // A server may address a user: every socket of theirs gets it.
    let (status, direct) = post(&stack, Some(&server()), r#"{"user":"alice","data":"hi"}"#).await;
    assert_eq!(status, 200, "{direct}");
    let to_alice = messages(&mut alice, 1).await;
    assert_eq!(to_alice[0].id, ids(&direct)[0]);
    assert_eq!(to_alice[0].to_user.as_deref(), Some("alice"));
    stack.shutdown().await;
}

#[tokio::test]
async fn an_idempotency_key_publishes_once_and_answers_the_first_id() {
    let stack = stack(|_| {}).await;
    let mut alice = subscriber(&stack, "alice", "news").await;
    let body = r#"{"channel":"news","data":"once","idempotency_key":"order-17"}"#;
    let (status, first) = post(&stack, Some(&server()), body).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = post(&stack, Some(&server()), body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(ids(&first), ids(&again));
    assert_eq!(first["messages"][0].get("duplicate"), None);
    assert_eq!(again["messages"][0]["duplicate"], json!(true));

    // A later message arrives right after the first: the repeat sent nothing.
    let (_, marker) = post(&stack, Some(&server()), r#"{"channel":"news","data":"after"}"#).await;
    let received: Vec<String> = messages(&mut alice, 2)
        .await
        .into_iter()
        .map(|message| message.id)
        .collect();
    assert_eq!(received, [ids(&first)[0].clone(), ids(&marker)[0].clone()]);
    assert_eq!(stack.tables.stored_messages().await.len(), 2);

    // The Rust client's publisher says the same.
    let publisher =
        HttpPublisher::new(&stack.gateway.http_url(), Credential::ServerKey(SERVER_KEY.into())).expect("a publisher");
    let mut message = HttpMessage::to_channel("news", json!("once"));
    message.idempotency_key = Some("order-17".into());
    let answered = publisher.publish(&[message]).await.expect("published");
    assert_eq!(answered[0].message_id, ids(&first)[0]);
    assert!(answered[0].duplicate);
    stack.shutdown().await;
}

#[tokio::test]
async fn every_bad_request_gets_its_4xx_and_writes_nothing() {
    let stack = stack(|config| config.allow_client_publish = true).await;
    let ok = json!({"channel": "news", "data": 1});
    let too_many = json!({"messages": vec![ok.clone(); MAX_BATCH + 1]});
    let too_big = json!({"channel": "news", "data": "x".repeat(130 * 1024)});
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let forged = signed_token(
        "another-secret-another-secret-another",
        &json!({"sub": "mallory", "exp": 4_000_000_000u64}),
    );
    let chat = token("carol", &["chat:*"]);
    let cases: Vec<(&str, Option<String>, String, u16, &str)> = vec![
        ("not JSON", Some(server()), "{nope".into(), 400, "invalid_json"),
        ("an array", Some(server()), "[1]".into(), 400, "invalid_request"),
        ("no data", Some(server()), r#"{"channel":"news"}"#.into(), 400, "invalid_request"),
        ("an unknown field", Some(server()), r#"{"channel":"news","data":1,"ttl":5}"#.into(), 400, "invalid_request"),
        ("an empty batch", Some(server()), r#"{"messages":[]}"#.into(), 400, "invalid_request"),
        (
            "one bad channel in a batch",
            Some(server()),
            json!({"messages": [ok, {"channel": "bad channel!", "data": 2}]}).to_string(),
            400,
            "invalid_channel",
        ),
        ("a channel and a user", Some(server()), r#"{"channel":"a","user":"b","data":1}"#.into(), 400, "invalid_request"),
        ("too deep for DynamoDB", Some(server()), json!({"channel": "news", "data": deep}).to_string(), 400, "invalid_request"),
        ("a long idempotency key", Some(server()), json!({"channel": "news", "data": 1, "idempotency_key": "k".repeat(129)}).to_string(), 400, "invalid_request"),
        ("a key used twice in a batch", Some(server()), json!({"messages": [{"channel": "a", "data": 1, "idempotency_key": "k"}, {"channel": "b", "data": 2, "idempotency_key": "k"}]}).to_string(), 400, "invalid_request"),
        ("too many messages", Some(server()), too_many.to_string(), 413, "invalid_request"),
        ("a frame over 128 KB", Some(server()), too_big.to_string(), 413, "message_too_large"),
        ("no credential", None, ok.to_string(), 401, "token_missing"),
        ("a wrong server key", Some(format!("Key {}x", SERVER_KEY)), ok.to_string(), 401, "server_key_refused"),
        ("a token as a server key", Some(format!("Key {chat}")), ok.to_string(), 401, "server_key_refused"),
        ("a forged token", Some(format!("Bearer {forged}")), ok.to_string(), 401, "token_bad_signature"),
        ("an unknown scheme", Some(format!("Basic {SERVER_KEY}")), ok.to_string(), 401, "authorization_malformed"),
        ("a client token to a user", Some(format!("Bearer {chat}")), r#"{"user":"dave","data":1}"#.into(), 403, "publish_forbidden"),
        ("a client token outside its rights", Some(format!("Bearer {chat}")), ok.to_string(), 403, "publish_forbidden"),
        ("a client token to another's personal channel", Some(format!("Bearer {}", token("carol", &["*"]))), r#"{"channel":"user:dave","data":1}"#.into(), 403, "publish_forbidden"),
    ];
    for (what, authorization, body, status, code) in cases {
        let (answered, answer) = post(&stack, authorization.as_deref(), &body).await;
        assert_eq!(
            (answered, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {answer}"
        );
        assert!(
            !answer["error"]["message"].as_str().unwrap_or_default().is_empty(),
            "{what} says why"
        );
    }
    assert_eq!(
        stack.tables.stored_messages().await,
        Vec::<Value>::new(),
        "nothing was written"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_client_token_publishes_under_its_socket_rights_and_allowance() {
    let stack = stack(|config| {
        config.allow_client_publish = true;
        config.publish_rate = PublishRate {
            limit: 0,
            per_user: 3,
            per_ip: 0,
            window_seconds: 3_600,
        };
    })
    .await;
    let mut bob = subscriber(&stack, "bob", "chat:1").await;
    let carol = format!("Bearer {}", token("carol", &["chat:*"]));

    let (status, first) = post(&stack, Some(&carol), r#"{"channel":"chat:1","data":"hello"}"#).await;
    assert_eq!(status, 200, "{first}");
    let received = messages(&mut bob, 1).await;
    assert_eq!(received[0].id, ids(&first)[0]);
    assert_eq!(
        received[0].publisher.as_deref(),
        Some("carol"),
        "receivers see who published"
    );

    // Three messages would take carol past her 3 per window: refused whole.
    let batch = json!({"messages": [{"channel":"chat:1","data":1},{"channel":"chat:1","data":2},{"channel":"chat:1","data":3}]});
    let (status, refused) = post(&stack, Some(&carol), &batch.to_string()).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{refused}"
    );
    // The two that fit are still hers to use: the refusal took nothing.
    let two = json!({"messages": [{"channel":"chat:1","data":1},{"channel":"chat:1","data":2}]});
    let (status, answer) = post(&stack, Some(&carol), &two.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(stack.tables.stored_messages().await.len(), 3);
    stack.shutdown().await;
}

#[tokio::test]
async fn where_clients_may_not_publish_a_token_may_not_over_http_either() {
    let stack = stack(|config| config.allow_client_publish = false).await;
    let (status, answer) = post(
        &stack,
        Some(&format!("Bearer {}", token("carol", &["*"]))),
        r#"{"channel":"chat:1","data":1}"#,
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("publish_forbidden")),
        "{answer}"
    );
    let (status, _) = post(&stack, Some(&server()), r#"{"channel":"chat:1","data":1}"#).await;
    assert_eq!(status, 200, "a server key still publishes");
    stack.shutdown().await;
}

#[tokio::test]
async fn browsers_may_call_it_from_the_origins_the_template_allows() {
    let stack = stack(|_| {}).await;
    let client = reqwest::Client::new();
    let preflight = client
        .request(reqwest::Method::OPTIONS, stack.publish_url())
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .expect("a preflight answer");
    assert_eq!(preflight.status().as_u16(), 204);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap_or_default()
        .contains("authorization"));
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap_or_default()
        .contains("POST"));
    let other = client.get(stack.publish_url()).send().await.expect("an answer");
    assert_eq!(other.status().as_u16(), 404, "only POST is routed");
    stack.shutdown().await;
}
