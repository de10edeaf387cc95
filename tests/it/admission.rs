//! Admission control on `$connect`, through the real handler and the real local
//! DynamoDB: given these limits, when these clients connect, then exactly these
//! are admitted, the rest are refused with the right status, and slots come back.

use airwave_shared::message::Audience;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use airwave_local::LocalManagementApi;
use airwave_shared::aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use airwave_shared::config::JwtSecret;
use airwave_shared::handlers::{handle_connect, handle_connection_removals, handle_disconnect, TTL_PRINCIPAL};
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::{Config, ConnectionStore, DynamoStore};
use airwave_tests::{connect_event, disconnect_event, stream_event, LogCapture, TestTables};
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;
use lambda_runtime::LambdaEvent;
use serde_json::{json, Value};

const SECRET: &str = "test-secret-test-secret-test-secret!";
/// The connect fixture's `requestTimeEpoch`.
const FIXTURE_REQUEST_TIME_MS: i64 = 1_795_378_544_319;

fn token(claims: Value) -> String {
    airwave_tests::signed_token(SECRET, &claims)
}

fn token_for(user: &str) -> String {
    airwave_tests::token_for(SECRET, user)
}

/// A `$connect` with the token in the query string, API Gateway style.
fn at_time(
    mut event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
    request_time_ms: i64,
) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    event.payload.request_context.request_time_epoch = request_time_ms;
    event
}

fn statuses(responses: &[ApiGatewayProxyResponse]) -> (usize, Vec<i64>) {
    let admitted = responses.iter().filter(|response| response.status_code == 200).count();
    let refused = responses
        .iter()
        .map(|response| response.status_code)
        .filter(|status| *status != 200)
        .collect();
    (admitted, refused)
}

async fn connect_all(
    tables: &TestTables,
    events: Vec<LambdaEvent<ApiGatewayWebsocketProxyRequest>>,
) -> Vec<ApiGatewayProxyResponse> {
    let authenticator = airwave_tests::authenticator(&tables.config);
    join_all(
        events
            .into_iter()
            .map(|event| handle_connect(&tables.store, authenticator.as_ref(), None, &tables.config, event)),
    )
    .await
    .into_iter()
    .map(|result| result.expect("connect handler"))
    .collect()
}

async fn admission_items(tables: &TestTables) -> usize {
    let output = tables
        .dynamodb
        .scan()
        .table_name(&tables.config.admission_table)
        .send()
        .await
        .unwrap();
    output.items.unwrap_or_default().len()
}

async fn stored_user_ids(tables: &TestTables) -> Vec<String> {
    let output = tables
        .dynamodb
        .scan()
        .table_name(&tables.config.connections_table)
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    output
        .items
        .unwrap_or_default()
        .iter()
        .filter_map(|item| item.get("user_id")?.as_s().ok().cloned())
        .collect()
}

/// Moves a stored record's expiry into the past: its TTL has passed.
async fn expire(tables: &TestTables, connection_id: &str) {
    tables
        .dynamodb
        .update_item()
        .table_name(&tables.config.connections_table)
        .key("connection_id", AttributeValue::S(connection_id.to_owned()))
        .update_expression("SET expires_at = :past")
        .expression_attribute_values(":past", AttributeValue::N((epoch_seconds_now() - 5).to_string()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn two_hundred_concurrent_attempts_from_one_ip_admit_exactly_the_limit_then_a_new_window_admits_again() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 10;
        config.admission.window_seconds = 60;
    })
    .await;
    let logs = LogCapture::default();
    let _guard = logs.install();
    let events = (0..200)
        .map(|i| {
            at_time(
                connect_event(&format!("storm-{i:03}="), "198.51.100.9"),
                FIXTURE_REQUEST_TIME_MS,
            )
        })
        .collect();
    let responses = connect_all(&tables, events).await;
    let (admitted, refused) = statuses(&responses);
    assert_eq!(admitted, 10);
    assert_eq!(refused.len(), 190);
    assert!(refused.iter().all(|status| *status == 429), "{refused:?}");
    // A throttled attempt writes nothing but its count.
    assert_eq!(tables.stored_connection_ids().await.len(), 10);

    let refusal = logs
        .lines()
        .into_iter()
        .find(|line| line["fields"]["reason"] == "ip_throttled")
        .expect("a refusal line");
    assert_eq!(refusal["fields"]["source_ip"], "198.51.100.9");
    assert_eq!(refusal["fields"]["limit"], 10);
    assert!(refusal["fields"]["current"].as_u64().unwrap() > 10);

    // Another IP in the same window has its own count.
    let other = connect_all(
        &tables,
        vec![at_time(
            connect_event("other-ip=", "198.51.100.10"),
            FIXTURE_REQUEST_TIME_MS,
        )],
    )
    .await;
    assert_eq!(other[0].status_code, 200);

    let next_window = FIXTURE_REQUEST_TIME_MS + 60_000;
    let responses = connect_all(
        &tables,
        vec![at_time(connect_event("next-window=", "198.51.100.9"), next_window)],
    )
    .await;
    assert_eq!(responses[0].status_code, 200);
}

#[tokio::test]
async fn a_hundred_concurrent_connects_of_one_user_leave_exactly_the_cap_open_and_a_disconnect_frees_exactly_one() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections_per_user = 5;
        config.jwt_secret = Some(JwtSecret::new(SECRET));
    })
    .await;
    let alice = token_for("alice");
    let events = (0..100)
        .map(|i| airwave_tests::connect_event_with_token(&format!("alice-{i:03}="), "198.51.100.20", &alice))
        .collect();
    let responses = connect_all(&tables, events).await;
    let (admitted, refused) = statuses(&responses);
    assert_eq!(admitted, 5);
    assert!(refused.iter().all(|status| *status == 403), "{refused:?}");
    let open = tables.stored_connection_ids().await;
    assert_eq!(open.len(), 5);
    assert_eq!(stored_user_ids(&tables).await, vec!["alice"; 5]);
    assert_eq!(tables.admission_counter("open#user#alice").await, Some(5));

    // Another user is not affected by alice's cap.
    let bob = connect_all(
        &tables,
        vec![airwave_tests::connect_event_with_token(
            "bob-000=",
            "198.51.100.20",
            &token_for("bob"),
        )],
    )
    .await;
    assert_eq!(bob[0].status_code, 200);

    handle_disconnect(&tables.store, disconnect_event(&open[0]))
        .await
        .unwrap();
    assert_eq!(tables.admission_counter("open#user#alice").await, Some(4));
    // A repeated $disconnect gives nothing back twice.
    handle_disconnect(&tables.store, disconnect_event(&open[0]))
        .await
        .unwrap();
    assert_eq!(tables.admission_counter("open#user#alice").await, Some(4));

    let events = (0..20)
        .map(|i| airwave_tests::connect_event_with_token(&format!("alice-again-{i:02}="), "198.51.100.20", &alice))
        .collect();
    let (admitted, _) = statuses(&connect_all(&tables, events).await);
    assert_eq!(admitted, 1);
    assert_eq!(tables.admission_counter("open#user#alice").await, Some(5));
}

#[tokio::test]
async fn a_connection_whose_disconnect_never_came_frees_its_slot_once_its_ttl_has_passed() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections_per_ip = 1;
    })
    .await;
    let first = connect_all(&tables, vec![connect_event("first=", "198.51.100.30")]).await;
    assert_eq!(first[0].status_code, 200);
    let refused = connect_all(&tables, vec![connect_event("second=", "198.51.100.30")]).await;
    assert_eq!(refused[0].status_code, 403);
    for channel in ["prices", "news"] {
        let body = serde_json::json!({"action": "subscribe", "channel": channel}).to_string();
        airwave_shared::handlers::handle_message(
            &tables.store,
            None,
            &tables.config,
            airwave_tests::message_event("first=", &body),
        )
        .await
        .unwrap();
    }
    assert_eq!(tables.stored_subscriptions().await.len(), 2);

    // No $disconnect ever arrives; the record's TTL passes.
    expire(&tables, "first=").await;
    let admitted = connect_all(&tables, vec![connect_event("third=", "198.51.100.30")]).await;
    assert_eq!(admitted[0].status_code, 200);
    assert_eq!(tables.stored_connection_ids().await, vec!["third="]);
    assert_eq!(tables.admission_counter("open#ip#198.51.100.30").await, Some(1));
    // The reclaimed record's subscriptions went with it.
    assert_eq!(tables.stored_subscriptions().await, Vec::<(String, String)>::new());
}

#[tokio::test]
async fn a_connection_that_answered_410_frees_its_slot() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections = 1;
    })
    .await;
    let gateway = LocalManagementApi::start().await.unwrap();
    let first = connect_all(&tables, vec![connect_event("dropped=", "198.51.100.40")]).await;
    assert_eq!(first[0].status_code, 200);
    let refused = connect_all(&tables, vec![connect_event("waiting=", "198.51.100.41")]).await;
    assert_eq!(refused[0].status_code, 403);

    // The socket is gone without a $disconnect: the gateway answers 410.
    let report = tables
        .fanout(&gateway.endpoint(), 4)
        .broadcast(&tables.store, Audience::Everyone, br#"{"type":"message"}"#)
        .await
        .unwrap();
    assert_eq!(report.gone, 1);
    assert_eq!(tables.admission_counter("open#total").await, Some(0));

    let admitted = connect_all(&tables, vec![connect_event("waiting=", "198.51.100.41")]).await;
    assert_eq!(admitted[0].status_code, 200);
}

/// A REMOVE record of the connections table's stream, as Lambda delivers it.
fn remove_record(sequence_number: &str, old_image: Value, principal: Option<&str>) -> Value {
    let mut record = json!({
        "eventID": format!("event-{sequence_number}"),
        "eventName": "REMOVE",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1795378600,
            "Keys": { "connection_id": old_image["connection_id"].clone() },
            "OldImage": old_image,
            "SequenceNumber": sequence_number,
            "SizeBytes": 200,
            "StreamViewType": "OLD_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/connections/stream/2026-11-22T00:00:00.000"
    });
    if let Some(principal) = principal {
        record["userIdentity"] = json!({ "type": "Service", "principalId": principal });
    }
    record
}

#[tokio::test]
async fn the_reaper_gives_back_the_slots_of_a_record_deleted_by_ttl_exactly_once() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections = 10;
        config.admission.max_connections_per_ip = 10;
    })
    .await;
    for id in ["ttl-deleted=", "user-deleted="] {
        let response = connect_all(&tables, vec![connect_event(id, "198.51.100.50")]).await;
        assert_eq!(response[0].status_code, 200);
    }
    assert_eq!(tables.admission_counter("open#total").await, Some(2));

    // DynamoDB's TTL deletes the record: only the stream sees it go.
    let old = tables
        .dynamodb
        .delete_item()
        .table_name(&tables.config.connections_table)
        .key("connection_id", AttributeValue::S("ttl-deleted=".to_owned()))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let old_image: Value = serde_json::to_value(
        old.into_iter()
            .map(|(name, value)| (name, attribute_json(&value)))
            .collect::<serde_json::Map<_, _>>(),
    )
    .unwrap();
    // A $disconnect removes the other record and gives its slots back itself;
    // its stream record (no TTL principal) must not give them back again.
    let disconnected = tables.store.get_connection("user-deleted=").await.unwrap().unwrap();
    handle_disconnect(&tables.store, disconnect_event("user-deleted="))
        .await
        .unwrap();
    assert_eq!(tables.admission_counter("open#total").await, Some(1));
    let disconnected_image = serde_json::to_value(
        serde_dynamo::to_item::<_, std::collections::HashMap<String, AttributeValue>>(&disconnected)
            .unwrap()
            .into_iter()
            .map(|(name, value)| (name, attribute_json(&value)))
            .collect::<serde_json::Map<_, _>>(),
    )
    .unwrap();
    let batch = vec![
        remove_record("100", disconnected_image, None),
        remove_record("101", old_image.clone(), Some(TTL_PRINCIPAL)),
        json!({"eventName": "REMOVE", "dynamodb": {"SequenceNumber": "102"}, "userIdentity": {"type": "Service", "principalId": TTL_PRINCIPAL}}),
    ];
    let response = handle_connection_removals(&tables.store, None, stream_event(batch.clone()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(tables.admission_counter("open#total").await, Some(0));
    assert_eq!(tables.admission_counter("open#ip#198.51.100.50").await, Some(0));

    // Lambda delivers the same batch again: nothing changes.
    handle_connection_removals(&tables.store, None, stream_event(batch))
        .await
        .unwrap();
    assert_eq!(tables.admission_counter("open#total").await, Some(0));
    assert_eq!(tables.admission_counter("open#ip#198.51.100.50").await, Some(0));
}

fn attribute_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(text) => json!({ "S": text }),
        AttributeValue::N(number) => json!({ "N": number }),
        AttributeValue::Ss(set) => json!({ "SS": set }),
        other => panic!("unexpected attribute {other:?}"),
    }
}

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

    // A good token offered as a subprotocol, the way a browser sends it.
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

#[tokio::test]
async fn with_every_variable_unset_the_defaults_admit_normal_traffic() {
    let defaults = Config::from_lookup(|_| None).unwrap();
    let tables = TestTables::create_with(|config| {
        let names = (
            config.connections_table.clone(),
            config.messages_table.clone(),
            config.subscriptions_table.clone(),
            config.admission_table.clone(),
        );
        // The test's own timeouts: the local DynamoDB answers one request at
        // a time, so 120 concurrent connects queue longer than production's.
        let timeouts = config.aws_timeouts;
        *config = defaults.clone();
        (
            config.connections_table,
            config.messages_table,
            config.subscriptions_table,
            config.admission_table,
        ) = names;
        config.aws_timeouts = timeouts;
    })
    .await;
    // A busy office behind one address, and visitors from many others.
    let events = (0..60)
        .map(|i| connect_event(&format!("office-{i:02}="), "198.51.100.70"))
        .chain((0..60).map(|i| connect_event(&format!("visitor-{i:02}="), &format!("203.0.113.{i}"))))
        .collect();
    let (admitted, refused) = statuses(&connect_all(&tables, events).await);
    assert_eq!(admitted, 120, "refused: {refused:?}");
}

/// Counts the HTTP requests a DynamoDB client sends.
#[derive(Debug, Clone, Default)]
struct RequestCounter(Arc<AtomicUsize>);

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn the_admission_path_costs_the_documented_number_of_dynamodb_round_trips() {
    let counter = RequestCounter::default();
    let tables = TestTables::create().await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&tables.sdk_config)
            .interceptor(counter.clone())
            .build(),
    );
    let round_trips = |configure: fn(&mut Config)| {
        let mut config = tables.config.clone();
        configure(&mut config);
        let store = DynamoStore::new(client.clone(), &config);
        let counter = counter.clone();
        async move {
            let before = counter.0.load(Ordering::SeqCst);
            let id = format!("{}=", uuid::Uuid::new_v4().simple());
            let event = airwave_tests::connect_event_with_token(&id, "198.51.100.80", &token_for("counted"));
            let response = handle_connect(
                &store,
                airwave_tests::authenticator(&config).as_ref(),
                None,
                &config,
                event,
            )
            .await
            .unwrap();
            (response.status_code, counter.0.load(Ordering::SeqCst) - before)
        }
    };
    // Throttle and caps off: one PutItem.
    assert_eq!(
        round_trips(|config| config.admission.attempts_per_ip = 0).await,
        (200, 1)
    );
    // The defaults (throttle on): the attempt counter and the PutItem.
    assert_eq!(
        round_trips(|config| config.admission.attempts_per_ip = 120).await,
        (200, 2)
    );
    // Everything on: the counter and one transaction for the record and every cap.
    assert_eq!(
        round_trips(|config| {
            config.admission.attempts_per_ip = 120;
            config.admission.max_connections = 100;
            config.admission.max_connections_per_user = 100;
            config.admission.max_connections_per_ip = 100;
            config.jwt_secret = Some(JwtSecret::new(SECRET));
        })
        .await,
        (200, 2)
    );
    // A bad token costs nothing.
    assert_eq!(
        round_trips(|config| config.jwt_secret = Some(JwtSecret::new("a-different-secret-a-different-sec"))).await,
        (401, 0)
    );
}

#[tokio::test]
async fn a_disconnect_costs_one_round_trip_and_one_more_for_giving_slots_back() {
    let requests = RequestCounter::default();
    let tables = TestTables::create().await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&tables.sdk_config)
            .interceptor(requests.clone())
            .build(),
    );
    let round_trips = |configure: fn(&mut Config)| {
        let mut config = tables.config.clone();
        configure(&mut config);
        let store = DynamoStore::new(client.clone(), &config);
        let requests = requests.clone();
        async move {
            let id = format!("{}=", uuid::Uuid::new_v4().simple());
            let event = airwave_tests::connect_event_with_token(&id, "198.51.100.81", &token_for("leaving"));
            assert_eq!(
                handle_connect(
                    &store,
                    airwave_tests::authenticator(&config).as_ref(),
                    None,
                    &config,
                    event
                )
                .await
                .unwrap()
                .status_code,
                200
            );
            let before = requests.0.load(Ordering::SeqCst);
            handle_disconnect(&store, disconnect_event(&id)).await.unwrap();
            let cost = requests.0.load(Ordering::SeqCst) - before;
            let gone = store.get_connection(&id).await.unwrap().is_none();
            (gone, cost)
        }
    };
    // No slot held: one conditional DeleteItem.
    assert_eq!(
        round_trips(|config| config.admission.attempts_per_ip = 0).await,
        (true, 1)
    );
    // Slots held: the DeleteItem, refused but handing back the record, then
    // one transaction that deletes it and gives every slot back.
    assert_eq!(
        round_trips(|config| {
            config.admission.max_connections = 100;
            config.admission.max_connections_per_user = 100;
            config.admission.max_connections_per_ip = 100;
            config.jwt_secret = Some(JwtSecret::new(SECRET));
        })
        .await,
        (true, 2)
    );
    for counter_key in ["open#total", "open#user#leaving", "open#ip#198.51.100.81"] {
        assert_eq!(tables.admission_counter(counter_key).await, Some(0), "{counter_key}");
    }
}

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
