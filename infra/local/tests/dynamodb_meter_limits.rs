//! The DynamoDB meter's partition limits, against a real DynamoDB-compatible
//! server through the AWS SDK. Run with
//! `infra/with-moto.sh cargo test -p airwave-local --test dynamodb_meter_limits`
//! (what `make test` does); without `AIRWAVE_TEST_DYNAMODB_ENDPOINT` they fail
//! and say so.
//!
//! The meter passes metered requests one at a time and the local server
//! takes milliseconds a write, far from DynamoDB's 1,000 write units a
//! second; so the tests set small limits and test the buckets, not the
//! machine's speed: a hot key is one that takes more than 10 write units a
//! second here. Each test has a meter and a table of its own: partition key
//! `channel`, sort key `entry`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use airwave_local::{MeterOptions, MeteredDynamoDb, PartitionLimits};
use aws_config::retry::RetryConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes, Put, PutRequest,
    ScalarAttributeType, TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;

const ENDPOINT_VARIABLE: &str = "AIRWAVE_TEST_DYNAMODB_ENDPOINT";
const THROTTLED: &str = "ProvisionedThroughputExceededException";
const WRITE_LIMIT: f64 = 10.0;
const READ_LIMIT: f64 = 3.0;

fn limits() -> MeterOptions {
    MeterOptions {
        partition_limits: Some(PartitionLimits {
            write_units_per_second: WRITE_LIMIT,
            read_units_per_second: READ_LIMIT,
        }),
    }
}

struct Fixture {
    meter: MeteredDynamoDb,
    /// Through the meter, without retries: every throttle shows.
    metered: Client,
    /// Straight to the server, to set up and look without being metered.
    direct: Client,
    table: String,
}

async fn client(endpoint: &str, retry: RetryConfig) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .retry_config(retry)
        .load()
        .await;
    Client::new(&config)
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn endpoint() -> String {
    std::env::var(ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{ENDPOINT_VARIABLE} is not set: these tests need a DynamoDB-compatible server; run them with \
             `infra/with-moto.sh cargo test -p airwave-local --test dynamodb_meter_limits` or `make test`"
        )
    })
}

impl Fixture {
    async fn new(options: MeterOptions) -> Self {
        let endpoint = endpoint();
        let direct = client(&endpoint, RetryConfig::disabled()).await;
        if let Err(error) = direct.list_tables().limit(1).send().await {
            panic!(
                "the DynamoDB at {endpoint} ({ENDPOINT_VARIABLE}) does not answer: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&error)
            );
        }
        let meter = MeteredDynamoDb::start_with(&endpoint, options).await.unwrap();
        let metered = client(&meter.endpoint(), RetryConfig::disabled()).await;
        let table = format!("limits-{:016x}", fastrand::u64(..));
        let key = |name: &str, key_type| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .unwrap()
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap()
        };
        direct
            .create_table()
            .table_name(&table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("channel", KeyType::Hash))
            .key_schema(key("entry", KeyType::Range))
            .attribute_definitions(attribute("channel"))
            .attribute_definitions(attribute("entry"))
            .send()
            .await
            .unwrap();
        Fixture {
            meter,
            metered,
            direct,
            table,
        }
    }

    async fn put(
        &self,
        client: &Client,
        channel: &str,
        entry: &str,
        payload: usize,
    ) -> Result<(), SdkError<PutItemError>> {
        client
            .put_item()
            .table_name(&self.table)
            .item("channel", s(channel))
            .item("entry", s(entry))
            .item("payload", s(&"x".repeat(payload)))
            .send()
            .await
            .map(drop)
    }

    /// Puts one item of `units` write units on `channel`, from a full
    /// bucket of 10: 20 units leave it 10 in debt, a second to pay off at
    /// 10 a second.
    async fn overdraw(&self, channel: &str, units: usize) {
        // 25 bytes of names and keys besides the payload.
        self.put(&self.metered, channel, "big", units * 1024 - 100)
            .await
            .unwrap();
        let usage = self.meter.usage().table(&self.table);
        assert_eq!(usage.write_units, units as f64, "{usage:?}");
        self.meter.reset();
    }

    /// The entries of `channel` in the table, read directly.
    async fn entries(&self, channel: &str) -> BTreeSet<String> {
        let answer = self
            .direct
            .query()
            .table_name(&self.table)
            .key_condition_expression("channel = :c")
            .expression_attribute_values(":c", s(channel))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        assert!(answer.last_evaluated_key().is_none(), "one page is enough here");
        answer
            .items()
            .iter()
            .filter_map(|item| item.get("entry")?.as_s().ok().cloned())
            .collect()
    }

    /// Sends one-unit puts from four concurrent tasks, `per_task` each, to
    /// the channel `channel_of(task, i)` names; the entries written and
    /// those refused as throttled, and how long it took.
    async fn burst(
        &self,
        per_task: usize,
        channel_of: fn(usize, usize) -> String,
    ) -> (BTreeSet<(String, String)>, BTreeSet<(String, String)>, Duration) {
        let started = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|task| {
                let client = self.metered.clone();
                let table = self.table.clone();
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for i in 0..per_task {
                        let (channel, entry) = (channel_of(task, i), format!("{task}-{i:03}"));
                        let sent = client
                            .put_item()
                            .table_name(&table)
                            .item("channel", s(&channel))
                            .item("entry", s(&entry))
                            .send()
                            .await;
                        outcomes.push(((channel, entry), sent.map_err(|error| error.into_service_error())));
                    }
                    outcomes
                })
            })
            .collect();
        let (mut written, mut refused) = (BTreeSet::new(), BTreeSet::new());
        for task in tasks {
            for (put, outcome) in task.await.unwrap() {
                match outcome {
                    Ok(_) => written.insert(put),
                    Err(error) => {
                        assert_eq!(error.code(), Some(THROTTLED), "{error:?}");
                        assert!(error.is_provisioned_throughput_exceeded_exception());
                        refused.insert(put)
                    }
                };
            }
        }
        (written, refused, started.elapsed())
    }
}

#[tokio::test]
async fn a_hot_key_is_throttled_and_its_refused_writes_are_not_written() {
    let f = Fixture::new(limits()).await;
    let (written, refused, took) = f.burst(50, |_, _| "hot".to_owned()).await;

    assert_eq!(written.len() + refused.len(), 200);
    assert!(!refused.is_empty(), "200 writes in {took:?} at {WRITE_LIMIT} a second");
    // A second's worth banked, what the time earned, and the write that
    // went into debt.
    let most = WRITE_LIMIT + WRITE_LIMIT * took.as_secs_f64() + 1.0;
    assert!(written.len() as f64 <= most, "{} written in {took:?}", written.len());

    let usage = f.meter.usage();
    assert_eq!(
        usage.throttled.get(&f.table),
        Some(&(refused.len() as u64)),
        "{usage:?}"
    );
    let table = usage.table(&f.table);
    assert_eq!(table.throttled_requests, refused.len() as u64);
    assert_eq!(table.requests.get("PutItem"), Some(&200));
    // A refused request costs nothing.
    assert_eq!(table.write_units, written.len() as f64);

    let entries = f.entries("hot").await;
    let expected: BTreeSet<String> = written.into_iter().map(|(_, entry)| entry).collect();
    assert_eq!(entries, expected);
}

#[tokio::test]
async fn writes_spread_over_many_keys_are_not_throttled() {
    let f = Fixture::new(limits()).await;
    // 40 channels, 5 writes each: half a bucket.
    let (written, refused, _) = f.burst(50, |task, i| format!("channel-{}", task * 10 + i % 10)).await;
    assert_eq!((written.len(), refused.len()), (200, 0));
    let usage = f.meter.usage();
    assert!(usage.throttled.is_empty(), "{usage:?}");
    assert_eq!(usage.table(&f.table).write_units, 200.0);
}

#[tokio::test]
async fn without_limits_a_hot_key_is_never_throttled() {
    let f = Fixture::new(MeterOptions::default()).await;
    let (written, refused, _) = f.burst(50, |_, _| "hot".to_owned()).await;
    assert_eq!((written.len(), refused.len()), (200, 0));
    let usage = f.meter.usage();
    assert_eq!(
        (usage.total_throttled(), usage.table(&f.table).throttled_requests),
        (0, 0)
    );
    assert_eq!(f.entries("hot").await.len(), 200);
}

#[tokio::test]
async fn a_key_in_debt_recovers_after_a_second() {
    let f = Fixture::new(limits()).await;
    f.overdraw("hot", 20).await;

    let error = f.put(&f.metered, "hot", "next", 10).await.unwrap_err();
    let error = error.into_service_error();
    assert_eq!(error.code(), Some(THROTTLED));
    let PutItemError::ProvisionedThroughputExceededException(throttled) = &error else {
        panic!("{error:?}");
    };
    let reason = throttled.throttling_reasons().first().expect("a throttling reason");
    assert_eq!(reason.reason(), Some("TableWriteKeyRangeThroughputExceeded"));
    assert!(
        reason
            .resource()
            .is_some_and(|arn| arn.ends_with(&format!("table/{}", f.table))),
        "{reason:?}"
    );
    // Another key of the same table is not in debt.
    f.put(&f.metered, "cool", "next", 10).await.unwrap();

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    f.put(&f.metered, "hot", "next", 10).await.unwrap();
    assert_eq!(f.meter.usage().table(&f.table).throttled_requests, 1);
}

#[tokio::test]
async fn the_sdk_retries_a_throttled_write_until_the_key_recovers() {
    let f = Fixture::new(limits()).await;
    let retrying = client(
        &f.meter.endpoint(),
        RetryConfig::standard()
            .with_max_attempts(10)
            .with_initial_backoff(Duration::from_millis(200)),
    )
    .await;
    f.overdraw("hot", 20).await;
    f.put(&retrying, "hot", "next", 10).await.unwrap();
    let usage = f.meter.usage().table(&f.table);
    assert!(usage.throttled_requests >= 1, "{usage:?}");
    assert_eq!(usage.requests.get("PutItem"), Some(&(usage.throttled_requests + 1)));
}

#[tokio::test]
async fn a_batch_write_leaves_the_writes_to_a_hot_key_unprocessed() {
    let f = Fixture::new(limits()).await;
    // Five seconds in debt: time enough for the whole test.
    f.overdraw("hot", 60).await;
    let put = |channel: &str, entry: &str| {
        WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .item("channel", s(channel))
                    .item("entry", s(entry))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let answer = f
        .metered
        .batch_write_item()
        .request_items(
            &f.table,
            vec![put("hot", "1"), put("cool", "1"), put("hot", "2"), put("cool", "2")],
        )
        .send()
        .await
        .unwrap();
    let unprocessed = answer.unprocessed_items().and_then(|items| items.get(&f.table));
    assert_eq!(unprocessed, Some(&vec![put("hot", "1"), put("hot", "2")]));
    assert_eq!(
        f.entries("cool").await,
        BTreeSet::from(["1".to_owned(), "2".to_owned()])
    );
    assert_eq!(f.entries("hot").await, BTreeSet::from(["big".to_owned()]));
    let usage = f.meter.usage().table(&f.table);
    assert_eq!((usage.write_units, usage.throttled_requests), (2.0, 1), "{usage:?}");

    // Nothing left to write: the batch is refused whole.
    let error = f
        .metered
        .batch_write_item()
        .request_items(&f.table, vec![put("hot", "1")])
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.into_service_error().code(), Some(THROTTLED));
}

#[tokio::test]
async fn a_transaction_on_a_hot_key_is_cancelled_with_a_throttling_reason() {
    let f = Fixture::new(limits()).await;
    f.overdraw("hot", 60).await;
    let put = |channel: &str| {
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&f.table)
                    .item("channel", s(channel))
                    .item("entry", s("t"))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let error = f
        .metered
        .transact_write_items()
        .transact_items(put("cool"))
        .transact_items(put("hot"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_transaction_canceled_exception(), "{error:?}");
    let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
        cancelled,
    ) = &error
    else {
        panic!("{error:?}");
    };
    let codes: Vec<_> = cancelled
        .cancellation_reasons()
        .iter()
        .map(|reason| reason.code())
        .collect();
    assert_eq!(codes, [Some("None"), Some("ThrottlingError")]);
    assert!(f.entries("cool").await.is_empty());
    assert_eq!(f.meter.usage().table(&f.table).write_units, 0.0);
}

#[tokio::test]
async fn reads_and_queries_of_a_hot_key_are_throttled_apart_from_its_writes() {
    let f = Fixture::new(limits()).await;
    // About 60 KB: 15 units to read strongly, from a bucket of 3: four
    // seconds in debt, time enough for the whole test.
    f.put(&f.direct, "hot", "big", 60_000).await.unwrap();
    f.put(&f.direct, "cool", "small", 10).await.unwrap();
    let get = |channel: &str, entry: &str| {
        f.metered
            .get_item()
            .table_name(&f.table)
            .key("channel", s(channel))
            .key("entry", s(entry))
            .consistent_read(true)
    };
    get("hot", "big").send().await.unwrap();

    let error = get("hot", "big").send().await.unwrap_err().into_service_error();
    assert_eq!(error.code(), Some(THROTTLED));
    let query = |channel: &str| {
        f.metered
            .query()
            .table_name(&f.table)
            .key_condition_expression("#c = :c AND begins_with(entry, :e)")
            .expression_attribute_names("#c", "channel")
            .expression_attribute_values(":c", s(channel))
            .expression_attribute_values(":e", s("b"))
    };
    let error = query("hot").send().await.unwrap_err().into_service_error();
    assert_eq!(error.code(), Some(THROTTLED));
    query("cool").send().await.unwrap();

    let keys = |channel: &str, entry: &str| {
        std::collections::HashMap::from([("channel".to_owned(), s(channel)), ("entry".to_owned(), s(entry))])
    };
    let answer = f
        .metered
        .batch_get_item()
        .request_items(
            &f.table,
            KeysAndAttributes::builder()
                .keys(keys("hot", "big"))
                .keys(keys("cool", "small"))
                .consistent_read(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.responses().and_then(|tables| tables.get(&f.table)).map(Vec::len),
        Some(1)
    );
    let unprocessed = answer
        .unprocessed_keys()
        .and_then(|tables| tables.get(&f.table))
        .unwrap();
    assert_eq!(unprocessed.keys(), [keys("hot", "big")]);
    assert_eq!(unprocessed.consistent_read(), Some(true));

    // Reads in debt, writes not.
    f.put(&f.metered, "hot", "next", 10).await.unwrap();
    let usage = f.meter.usage();
    assert_eq!(usage.throttled.get(&f.table), Some(&3), "{usage:?}");
}
