//! The per-IP throttle of `$connect`: at most so many attempts from one
//! address in a fixed window, each address counted apart, and a new window
//! counts again.

use std::time::Duration;

use super::support::Harness;

#[tokio::test]
async fn one_ip_gets_exactly_the_limit_in_a_window_and_the_next_window_admits_again() {
    let test = Harness::new(|config| {
        config.admission.attempts_per_ip = 3;
        config.admission.window_seconds = 60;
    });
    let mut statuses = Vec::new();
    for n in 0..5 {
        statuses.push(test.connect(&format!("storm-{n}="), "198.51.100.9", None).await);
    }
    assert_eq!(
        statuses.iter().map(|(status, _)| *status).collect::<Vec<_>>(),
        [200, 200, 200, 429, 429]
    );
    assert_eq!(statuses[4].1, "ip_throttled");
    // A throttled attempt writes nothing but its count.
    assert_eq!(test.connection_ids().await.len(), 3);
    // Another address in the same window has its own count.
    assert_eq!(test.connect("other=", "198.51.100.10", None).await.0, 200);

    // Still the same window a second before its end.
    test.advance(Duration::from_secs(59));
    assert_eq!(test.connect("late=", "198.51.100.9", None).await.0, 429);
    test.advance(Duration::from_secs(1));
    assert_eq!(test.connect("next-window=", "198.51.100.9", None).await.0, 200);
}

#[tokio::test]
async fn a_refused_token_costs_no_attempt() {
    let test = Harness::authenticated(|config| {
        config.admission.attempts_per_ip = 1;
        config.admission.window_seconds = 60;
    });
    for n in 0..3 {
        let (status, reason) = test
            .connect(&format!("forged-{n}="), "198.51.100.60", Some("not-a-jwt"))
            .await;
        assert_eq!((status, reason.as_str()), (401, "token_malformed"));
    }
    let token = test.token("ann");
    assert_eq!(test.connect("good=", "198.51.100.60", Some(&token)).await.0, 200);
    assert_eq!(test.connect("again=", "198.51.100.60", Some(&token)).await.0, 429);
}
