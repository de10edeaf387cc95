//! `AIRWAVE_USER_CAP_MODE=evict_oldest`: a full per-user cap admits the new
//! connection in place of the user's oldest, which loses its record, its
//! subscriptions and nothing else.

use std::time::Duration;

use serde_json::json;

use super::support::Harness;
use crate::config::UserCapMode;
use crate::store::ConnectionStore;

#[tokio::test]
async fn a_full_user_cap_evicts_the_oldest_connection_and_keeps_the_count_at_the_cap() {
    let test = Harness::authenticated(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections_per_user = 2;
        config.admission.max_connections_per_ip = 10;
        config.user_cap_mode = UserCapMode::EvictOldest;
    });
    let token = test.token("dana");
    for id in ["oldest=", "middle="] {
        assert_eq!(test.connect(id, "198.51.100.70", Some(&token)).await.0, 200);
        test.advance(Duration::from_secs(1));
    }
    let reply = test
        .reply_to("oldest=", json!({"action": "subscribe", "channel": "chat"}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");

    assert_eq!(test.connect("newest=", "198.51.100.70", Some(&token)).await.0, 200);
    let mut open = test.connection_ids().await;
    open.sort();
    assert_eq!(open, ["middle=", "newest="]);
    assert_eq!(test.store.get_connection("oldest=").await.unwrap(), None);
    assert_eq!(test.store.subscription_items(), Vec::<(String, String)>::new());
    // One slot changed hands: the user's and the address's counts stay.
    assert_eq!(test.store.open_count("open#user#dana"), Some(2));
    assert_eq!(test.store.open_count("open#ip#198.51.100.70"), Some(2));

    // The next connect evicts the next oldest.
    test.advance(Duration::from_secs(1));
    assert_eq!(test.connect("latest=", "198.51.100.70", Some(&token)).await.0, 200);
    let mut open = test.connection_ids().await;
    open.sort();
    assert_eq!(open, ["latest=", "newest="]);
}

#[tokio::test]
async fn without_evict_mode_a_full_user_cap_refuses() {
    let test = Harness::authenticated(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections_per_user = 1;
    });
    let token = test.token("eli");
    assert_eq!(test.connect("first=", "198.51.100.71", Some(&token)).await.0, 200);
    let (status, reason) = test.connect("second=", "198.51.100.71", Some(&token)).await;
    assert_eq!((status, reason.as_str()), (403, "user_cap_reached"));
    assert_eq!(test.connection_ids().await, ["first="]);
}
