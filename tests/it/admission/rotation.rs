//! The token secret in Secrets Manager (moto's), rotated without logging
//! anybody out, over real sockets through the local gateway: while the secret
//! holds the old and the new key, tokens signed with either are admitted;
//! once the old key is removed, its tokens are refused.

use std::time::Duration;

use airwave_gateway::GatewayOptions;
use airwave_tests::stack::LocalStack;
use airwave_tests::{token_with_kid, TestTables};
use serde_json::json;

use super::handshake;

const OLD: &str = "the-secret-of-june-2026-at-least-32-bytes";
const NEW: &str = "the-secret-of-december-2026-32-bytes-or-more";

/// Connects with `token` offered beside the protocol version, as the
/// browser client does; `Ok` when admitted, else the status and the reason.
async fn connect(stack: &LocalStack, token: &str) -> Result<(), (u16, String)> {
    handshake(stack, Some(&format!("airwave.v1, {token}"))).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_admits_both_keys_while_both_are_in_the_secret_and_then_only_the_new_one() {
    let mut tables = TestTables::create().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&tables.sdk_config);
    let created = secrets
        .create_secret()
        .name(format!("airwave-test-{}", uuid::Uuid::new_v4()))
        .secret_string(json!({ "2026-06": OLD }).to_string())
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap().to_owned();
    tables.config.auth.jwt_secret_arn = Some(arn.clone());
    tables.config.auth.jwt_secret_refresh_seconds = 1;
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;
    let old = || token_with_kid(OLD, "2026-06", "ana");
    let new = || token_with_kid(NEW, "2026-12", "ana");

    assert_eq!(connect(&stack, &old()).await, Ok(()));
    assert_eq!(
        connect(&stack, &new()).await,
        Err((401, "token_unknown_key".to_owned()))
    );
    // A token with the new key id signed with the old secret is no key of its own.
    assert_eq!(
        connect(&stack, &token_with_kid(OLD, "2026-12", "ana")).await,
        Err((401, "token_unknown_key".to_owned()))
    );

    // The rotation begins: the secret holds both keys. A token naming the new
    // key makes the function read the secret again (at most once a second).
    let rotate_to = |value: serde_json::Value| {
        secrets
            .put_secret_value()
            .secret_id(&arn)
            .secret_string(value.to_string())
            .send()
    };
    rotate_to(json!({ "2026-06": OLD, "2026-12": NEW })).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(connect(&stack, &new()).await, Ok(()));
    assert_eq!(connect(&stack, &old()).await, Ok(()));
    assert_eq!(
        connect(&stack, &token_with_kid(OLD, "2026-12", "ana")).await,
        Err((401, "token_bad_signature".to_owned()))
    );

    // The old key is removed: within the refresh interval its tokens are refused.
    rotate_to(json!({ "2026-12": NEW })).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        connect(&stack, &old()).await,
        Err((401, "token_unknown_key".to_owned()))
    );
    assert_eq!(connect(&stack, &new()).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_cannot_be_read_refuses_with_503_which_clients_retry() {
    let mut tables = TestTables::create().await;
    tables.config.auth.jwt_secret_arn =
        Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:airwave-never-created".to_owned());
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;

    assert_eq!(
        connect(&stack, &token_with_kid(OLD, "2026-06", "ana")).await,
        Err((503, "token_keys_unavailable".to_owned()))
    );
    assert!(stack.tables.stored_connection_ids().await.is_empty());
}
