//! Tokens on `$connect`: a bad one costs a 401 and writes nothing; a good
//! one's `sub` is the stored user, also when offered as a subprotocol.

use airwave_shared::config::JwtSecret;
use airwave_shared::time::epoch_seconds_now;
use airwave_tests::{connect_event, LogCapture, TestTables};
use serde_json::json;

use super::{admission_items, stored_user_ids, token, token_for, SECRET};

#[tokio::test]
async fn every_bad_token_gets_401_and_writes_nothing_and_a_good_tokens_sub_is_stored() {
    let tables = TestTables::create_with(|config| {
        // The throttle is on: a 401 must not even count as an attempt.
        config.admission.attempts_per_ip = 100;
        config.admission.max_connections_per_user = 3;
        config.jwt_secret = Some(JwtSecret::new(SECRET));
    })
    .await;
    let logs = LogCapture::default();
    let _guard = logs.install();
    let now = epoch_seconds_now();
    let wrong_key = airwave_tests::signed_token(
        "another-secret-another-secret-!!",
        &json!({"sub": "mallory", "exp": now + 600}),
    );
    let cases = [
        ("missing", connect_event("no-token=", "198.51.100.60")),
        (
            "malformed",
            airwave_tests::connect_event_with_token("malformed=", "198.51.100.60", "not-a-jwt"),
        ),
        (
            "expired",
            airwave_tests::connect_event_with_token(
                "expired=",
                "198.51.100.60",
                &token(json!({"sub": "eve", "exp": now - 3600})),
            ),
        ),
        (
            "not yet valid",
            airwave_tests::connect_event_with_token(
                "early=",
                "198.51.100.60",
                &token(json!({"sub": "eve", "exp": now + 7200, "nbf": now + 3600})),
            ),
        ),
        (
            "wrongly signed",
            airwave_tests::connect_event_with_token("forged=", "198.51.100.60", &wrong_key),
        ),
    ];
    for (case, event) in cases {
        let response = tables.connect(event).await;
        assert_eq!(response.status_code, 401, "{case}");
    }
    assert!(tables.stored_connection_ids().await.is_empty());
    assert_eq!(admission_items(&tables).await, 0);
    let logged = serde_json::to_string(&logs.lines()).unwrap();
    assert!(!logged.contains(SECRET));
    for reason in [
        "token_missing",
        "token_malformed",
        "token_expired",
        "token_not_yet_valid",
        "token_bad_signature",
    ] {
        assert!(logged.contains(reason), "{reason} not logged");
    }

    // A good token offered as a subprotocol, the way a browser sent it before
    // versions had names (`airwave`), which is still selected.
    let mut event = connect_event("good=", "198.51.100.60");
    let mut payload = serde_json::to_value(&event.payload).unwrap();
    let offered = format!("airwave, {}", token_for("user-42"));
    payload["headers"]["Sec-WebSocket-Protocol"] = json!(offered);
    payload["multiValueHeaders"]["Sec-WebSocket-Protocol"] = json!([offered]);
    event.payload = serde_json::from_value(payload).unwrap();
    let response = tables.connect(event).await;
    assert_eq!(response.status_code, 200);
    assert_eq!(
        response
            .headers
            .get("sec-websocket-protocol")
            .and_then(|value| value.to_str().ok()),
        Some("airwave")
    );
    assert_eq!(stored_user_ids(&tables).await, vec!["user-42"]);
}
