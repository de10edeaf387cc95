//! The publish allowances: so many publishes per fixed window per
//! connection and per user over all of its connections; a new window
//! allows again.

use std::time::Duration;

use serde_json::json;

use super::support::Harness;
use crate::config::PublishRate;

fn publish(n: u64) -> serde_json::Value {
    json!({"action": "publish", "channel": "chat", "data": n})
}

#[tokio::test]
async fn a_connection_gets_its_allowance_per_window_and_a_new_window_allows_again() {
    let test = Harness::new(|config| {
        config.admission.attempts_per_ip = 0;
        config.allow_client_publish = true;
        config.allow_anonymous_publish = true;
        config.publish_rate = PublishRate {
            limit: 2,
            per_user: 0,
            per_ip: 0,
            window_seconds: 10,
        };
    });
    assert_eq!(test.connect("p=", "198.51.100.90", None).await.0, 200);
    let replies = [
        test.reply_to("p=", publish(1)).await,
        test.reply_to("p=", publish(2)).await,
        test.reply_to("p=", publish(3)).await,
    ];
    assert_eq!(replies[0]["type"], "published", "{}", replies[0]);
    assert_eq!(replies[1]["type"], "published", "{}", replies[1]);
    assert_eq!(replies[2]["code"], "rate_limited", "{}", replies[2]);
    // The refused publish wrote no message.
    let published = replies[1]["message_id"].as_str().unwrap();
    assert!(test.store.message(published).is_some());

    test.advance(Duration::from_secs(10));
    assert_eq!(test.reply_to("p=", publish(4)).await["type"], "published");
}

#[tokio::test]
async fn a_users_allowance_is_shared_by_all_of_its_connections() {
    let test = Harness::authenticated(|config| {
        config.admission.attempts_per_ip = 0;
        config.allow_client_publish = true;
        config.publish_rate = PublishRate {
            limit: 10,
            per_user: 2,
            per_ip: 0,
            window_seconds: 60,
        };
    });
    let publisher = |user: &str| test.token_with(json!({"sub": user, "exp": test.now() + 3_600, "publish": ["chat"]}));
    let token = publisher("gus");
    for id in ["tab-1=", "tab-2="] {
        assert_eq!(test.connect(id, "198.51.100.91", Some(&token)).await.0, 200);
    }
    let first = test.reply_to("tab-1=", publish(1)).await;
    assert_eq!(first["type"], "published", "{first}");
    assert_eq!(test.reply_to("tab-2=", publish(2)).await["type"], "published");
    let refused = test.reply_to("tab-2=", publish(3)).await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    // Another user has an allowance of its own.
    let other = publisher("hal");
    assert_eq!(test.connect("hal=", "198.51.100.91", Some(&other)).await.0, 200);
    assert_eq!(test.reply_to("hal=", publish(4)).await["type"], "published");
}
