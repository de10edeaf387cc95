//! `airwave smoke` against the local stack: it passes on a healthy stack and,
//! when delivery is broken, fails at the step that broke and says so.

use std::time::Duration;

use airwave_cli::smoke::{self, Publisher, SmokeConfig, SmokeReport, Status, Step};
use airwave_client::ClientConfig;
use airwave_gateway::GatewayOptions;
use airwave_local::ManagementFaults;
use airwave_shared::config::JwtSecret;
use airwave_shared::time::epoch_seconds_now;
use airwave_tests::stack::{LocalStack, StackOptions};
use airwave_tests::{signed_token, TestTables};
use serde_json::json;

/// A stack on which clients may publish, as `make dev`'s is.
async fn stack(options: StackOptions) -> LocalStack {
    let tables = TestTables::create_with(|config| {
        config.allow_client_publish = true;
        config.allow_anonymous_publish = true;
        config.admission.attempts_per_ip = 0;
    })
    .await;
    LocalStack::start_with(tables, GatewayOptions::default(), options).await
}

fn config(stack: &LocalStack, step_timeout: Duration) -> SmokeConfig {
    SmokeConfig {
        client: ClientConfig::new(&stack.ws_url()).unwrap(),
        channel: smoke::fresh_channel(),
        publisher: Publisher::Client,
        step_timeout,
    }
}

fn step_names(report: &SmokeReport) -> Vec<Step> {
    report.steps.iter().map(|step| step.step).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_test_passes_every_step_on_a_healthy_stack() {
    let stack = stack(StackOptions::default()).await;

    let report = smoke::run(config(&stack, Duration::from_secs(20))).await;

    assert!(report.passed(), "{report}");
    assert_eq!(step_names(&report), Step::ALL);
    assert!(report.to_string().contains("smoke test passed"), "{report}");
    // Without authentication a forged token is admitted: that step says it was not checked.
    assert_eq!(report.steps[1].status, Status::Skipped, "{report}");
    assert!(report.to_string().contains("skip   refuse"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_smoke_test_checks_that_a_forged_one_is_refused() {
    const SECRET: &str = "smoke-test-secret-of-at-least-32-bytes!!";
    let tables = TestTables::create_with(|config| {
        config.allow_client_publish = true;
        config.admission.attempts_per_ip = 0;
        config.jwt_secret = Some(JwtSecret::new(SECRET.to_owned()));
    })
    .await;
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;
    let token = signed_token(
        SECRET,
        &json!({"sub": "smoke", "exp": epoch_seconds_now() + 600, "channels": ["smoke-*"], "publish": ["smoke-*"]}),
    );
    let config = SmokeConfig {
        client: ClientConfig::new(&stack.ws_url()).unwrap().with_token(token),
        ..config(&stack, Duration::from_secs(20))
    };

    let report = smoke::run(config).await;

    assert!(report.passed(), "{report}");
    assert!(
        report.steps.iter().all(|step| step.status == Status::Passed),
        "{report}"
    );
    assert!(
        report.to_string().contains("a forged token refused with 401"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_publishing_off_a_producer_writing_to_the_table_passes_every_step() {
    // A deployment's defaults: clients may not publish, a backend writes to the table.
    let tables = TestTables::create().await;
    assert!(!tables.config.allow_client_publish);
    let publisher = Publisher::Table {
        dynamodb: tables.dynamodb.clone(),
        messages_table: tables.config.messages_table.clone(),
    };
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;
    let config = SmokeConfig {
        publisher,
        ..config(&stack, Duration::from_secs(20))
    };

    let report = smoke::run(config).await;

    assert!(report.passed(), "{report}");
    assert_eq!(step_names(&report), Step::ALL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_publishing_off_a_client_publish_fails_at_publish() {
    let stack = LocalStack::start(TestTables::create().await, GatewayOptions::default()).await;

    let report = smoke::run(config(&stack, Duration::from_secs(10))).await;

    assert_eq!(report.failed_step(), Some(Step::Publish), "{report}");
    assert!(report.to_string().contains("AllowClientPublish"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_fan_out_failing_the_smoke_test_names_deliver_and_where_to_look() {
    // Every post of the fan-out fails: messages are stored and replies come
    // back, but nothing is delivered.
    let stack = stack(StackOptions {
        management_faults: Some(ManagementFaults {
            server_error_percent: 100,
            ..ManagementFaults::default()
        }),
        ..StackOptions::default()
    })
    .await;

    let report = smoke::run(config(&stack, Duration::from_secs(3))).await;

    assert!(!report.passed(), "{report}");
    assert_eq!(report.failed_step(), Some(Step::Deliver), "{report}");
    // The steps before it did not fail, and nothing ran after it.
    assert!(
        report.steps[..5].iter().all(|step| step.status != Status::Failed),
        "{report}"
    );
    assert_eq!(report.steps.len(), 6, "{report}");
    let text = report.to_string();
    assert!(text.contains("FAILED deliver"), "{text}");
    assert!(text.contains("stream processor"), "{text}");
    assert!(text.contains("smoke test failed at step deliver"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_token_an_endpoint_that_admits_a_forged_one_fails_at_refuse() {
    // No secret: the stack admits every token, so the check of a token the
    // operator expects to matter fails.
    let stack = stack(StackOptions::default()).await;
    let config = SmokeConfig {
        client: ClientConfig::new(&stack.ws_url()).unwrap().with_token("a-token"),
        ..config(&stack, Duration::from_secs(10))
    };

    let report = smoke::run(config).await;

    assert_eq!(report.failed_step(), Some(Step::RefuseBadToken), "{report}");
    assert!(report.to_string().contains("a forged token was admitted"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_listening_the_smoke_test_fails_at_connect() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", unused.local_addr().unwrap());
    drop(unused);
    let config = SmokeConfig {
        client: ClientConfig::new(&url).unwrap(),
        channel: smoke::fresh_channel(),
        publisher: Publisher::Client,
        step_timeout: Duration::from_secs(2),
    };

    let report = smoke::run(config).await;

    assert_eq!(report.failed_step(), Some(Step::Connect), "{report}");
    assert_eq!(report.steps.len(), 1, "{report}");
}
