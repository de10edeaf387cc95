//! The `stats` action over admission's counters.

use airwave_shared::config::JwtSecret;
use airwave_tests::TestTables;
use serde_json::Value;

use super::{at_time, connect_all, expire, token_for, SECRET};

#[tokio::test]
async fn stats_report_open_connections_users_caps_free_slots_and_throttled_attempts() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 3;
        config.admission.window_seconds = 3_600;
        config.admission.max_connections = 10;
        config.admission.max_connections_per_user = 2;
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.allow_stats = true;
    })
    .await;
    // The stats read its own clock's window: stay clear of a window's last seconds.
    let mut now_ms = airwave_shared::time::epoch_millis_now();
    if now_ms % 3_600_000 > 3_590_000 {
        tokio::time::sleep(std::time::Duration::from_millis(
            (3_600_000 - now_ms % 3_600_000) as u64 + 100,
        ))
        .await;
        now_ms = airwave_shared::time::epoch_millis_now();
    }
    let events = [
        ("a1=", "ann", "198.51.100.90"),
        ("a2=", "ann", "198.51.100.91"),
        ("b1=", "ben", "198.51.100.92"),
    ]
    .into_iter()
    .map(|(id, user, ip)| {
        // a1= asks for the stats below: its token carries the operator right.
        let token = match id {
            "a1=" => airwave_tests::signed_token(
                SECRET,
                &serde_json::json!({"sub": user, "exp": airwave_shared::time::epoch_seconds_now() + 600, "operator": true}),
            ),
            _ => token_for(user),
        };
        at_time(airwave_tests::connect_event_with_token(id, ip, &token), now_ms)
    })
    // Five attempts from one IP: three counted in, two throttled.
    .chain((0..5).map(|i| {
        at_time(
            airwave_tests::connect_event_with_token(&format!("c{i}="), "198.51.100.93", &token_for("cy")),
            now_ms,
        )
    }))
    .collect();
    connect_all(&tables, events).await;
    expire(&tables, "b1=").await;

    let response = airwave_shared::handlers::handle_message(
        &tables.store,
        None,
        &tables.config,
        airwave_tests::message_event("a1=", r#"{"action":"stats"}"#),
    )
    .await
    .unwrap();
    let body = match response.body {
        Some(airwave_shared::aws_lambda_events::encodings::Body::Text(text)) => text,
        other => panic!("no text body: {other:?}"),
    };
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["type"], "stats");
    // ann 2, cy 2 (the cap), ben's record expired.
    assert_eq!(stats["open_connections"], 4, "{stats}");
    assert_eq!(stats["distinct_users"], 2, "{stats}");
    assert_eq!(stats["max_connections"], 10);
    assert_eq!(stats["max_connections_per_user"], 2);
    // The expired record still holds its slot until a full cap reclaims it.
    assert_eq!(stats["free_slots"], 5, "{stats}");
    assert_eq!(stats["throttled_attempts_in_window"], 2, "{stats}");

    let mut forbidden = tables.config.clone();
    forbidden.allow_stats = false;
    let response = airwave_shared::handlers::handle_message(
        &tables.store,
        None,
        &forbidden,
        airwave_tests::message_event("a1=", r#"{"action":"stats"}"#),
    )
    .await
    .unwrap();
    let body = format!("{:?}", response.body);
    assert!(body.contains("stats_forbidden"), "{body}");
}
