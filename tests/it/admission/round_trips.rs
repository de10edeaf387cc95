//! What admission costs in DynamoDB round trips, counted on the wire.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use airwave_shared::config::JwtSecret;
use airwave_shared::handlers::{handle_connect, handle_disconnect};
use airwave_shared::{Config, ConnectionStore, DynamoStore};
use airwave_tests::{disconnect_event, TestTables};
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};

use super::{token_for, SECRET};

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
