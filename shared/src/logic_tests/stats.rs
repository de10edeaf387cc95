//! The `stats` action: live connections, users, free slots and throttled
//! attempts, counted at most once per `AIRWAVE_STATS_MAX_AGE_SECONDS` of the
//! clock and answered from that count meanwhile.

use std::time::Duration;

use serde_json::json;

use super::support::Harness;

#[tokio::test]
async fn stats_count_what_is_open_and_throttled_and_are_counted_again_only_once_stale() {
    let test = Harness::authenticated(|config| {
        config.admission.attempts_per_ip = 3;
        config.admission.window_seconds = 3_600;
        config.admission.max_connections = 10;
        config.admission.max_connections_per_user = 2;
        config.allow_stats = true;
        config.stats_max_age_seconds = 60;
    });
    let operator = test.token_with(json!({"sub": "ann", "exp": test.now() + 3_600, "operator": true}));
    assert_eq!(test.connect("a1=", "198.51.100.90", Some(&operator)).await.0, 200);
    assert_eq!(
        test.connect("b1=", "198.51.100.91", Some(&test.token("ben"))).await.0,
        200
    );
    // Five attempts from one address: two admitted, one over cy's cap, two throttled.
    let cy = test.token("cy");
    let mut statuses = Vec::new();
    for n in 0..5 {
        statuses.push(test.connect(&format!("c{n}="), "198.51.100.93", Some(&cy)).await.0);
    }
    assert_eq!(statuses, [200, 200, 403, 429, 429]);

    let stats = test.reply_to("a1=", json!({"action": "stats"})).await;
    assert_eq!(stats["type"], "stats", "{stats}");
    assert_eq!(stats["open_connections"], 4, "{stats}");
    assert_eq!(stats["distinct_users"], 3, "{stats}");
    assert_eq!(stats["free_slots"], 6, "{stats}");
    assert_eq!(stats["throttled_attempts_in_window"], 2, "{stats}");

    // Within the count's age, a new connection is not counted yet; after it, it is.
    assert_eq!(
        test.connect("d1=", "198.51.100.94", Some(&test.token("dan"))).await.0,
        200
    );
    let cached = test.reply_to("a1=", json!({"action": "stats"})).await;
    assert_eq!(cached["open_connections"], 4, "{cached}");
    test.advance(Duration::from_secs(60));
    let counted = test.reply_to("a1=", json!({"action": "stats"})).await;
    assert_eq!(counted["open_connections"], 5, "{counted}");
    assert_eq!(counted["as_of"], test.now(), "{counted}");
}

#[tokio::test]
async fn a_token_without_the_operator_right_may_not_read_the_stats() {
    let test = Harness::authenticated(|config| {
        config.admission.attempts_per_ip = 0;
        config.allow_stats = true;
    });
    assert_eq!(
        test.connect("e1=", "198.51.100.95", Some(&test.token("eve"))).await.0,
        200
    );
    let reply = test.reply_to("e1=", json!({"action": "stats"})).await;
    assert_eq!(reply["code"], "stats_forbidden", "{reply}");
}
