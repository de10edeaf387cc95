//! What the DynamoDB meter bills, against a real DynamoDB-compatible server
//! through the AWS SDK. Run with
//! `infra/with-moto.sh cargo test -p airwave-local --test dynamodb_meter`
//! (what `make test` does); without `AIRWAVE_TEST_DYNAMODB_ENDPOINT`, or with
//! one that does not answer, they fail and say so.
//!
//! Each test has a meter and tables of its own. Table "keys" has a
//! keys-only index on (owner, at); table "notes" has a sort key and an index
//! on (owner, at) that includes `note`.

use std::collections::HashMap;

use airwave_local::{MeteredDynamoDb, TableUsage};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Get, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    KeysAndAttributes, LocalSecondaryIndex, Projection, ProjectionType, Put, PutRequest, ScalarAttributeType, Select,
    TransactGetItem, TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;

const ENDPOINT_VARIABLE: &str = "AIRWAVE_TEST_DYNAMODB_ENDPOINT";

struct Fixture {
    meter: MeteredDynamoDb,
    /// Through the meter.
    metered: Client,
    /// Straight to the server, to set up without being billed.
    direct: Client,
    keys: String,
    notes: String,
}

async fn client(endpoint: &str) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .load()
        .await;
    Client::new(&config)
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .unwrap()
}

fn attribute(name: &str, kind: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .unwrap()
}

fn by_owner(projection: Projection) -> GlobalSecondaryIndex {
    GlobalSecondaryIndex::builder()
        .index_name("by_owner")
        .key_schema(key("owner", KeyType::Hash))
        .key_schema(key("at", KeyType::Range))
        .projection(projection)
        .build()
        .unwrap()
}

impl Fixture {
    async fn new() -> Self {
        let endpoint = std::env::var(ENDPOINT_VARIABLE).unwrap_or_else(|_| {
            panic!(
                "{ENDPOINT_VARIABLE} is not set: these tests need a DynamoDB-compatible server; run them with \
                 `infra/with-moto.sh cargo test -p airwave-local --test dynamodb_meter` or `make test`"
            )
        });
        let direct = client(&endpoint).await;
        if let Err(error) = direct.list_tables().limit(1).send().await {
            panic!(
                "the DynamoDB at {endpoint} ({ENDPOINT_VARIABLE}) does not answer: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&error)
            );
        }
        let meter = MeteredDynamoDb::start(&endpoint).await.unwrap();
        let metered = client(&meter.endpoint()).await;
        let suffix = format!("{:016x}", fastrand::u64(..));
        let keys = format!("keys-{suffix}");
        let notes = format!("notes-{suffix}");
        direct
            .create_table()
            .table_name(&keys)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("id", KeyType::Hash))
            .attribute_definitions(attribute("id", ScalarAttributeType::S))
            .attribute_definitions(attribute("owner", ScalarAttributeType::S))
            .attribute_definitions(attribute("at", ScalarAttributeType::N))
            .global_secondary_indexes(by_owner(
                Projection::builder().projection_type(ProjectionType::KeysOnly).build(),
            ))
            .send()
            .await
            .unwrap();
        direct
            .create_table()
            .table_name(&notes)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("channel", KeyType::Hash))
            .key_schema(key("entry", KeyType::Range))
            .attribute_definitions(attribute("channel", ScalarAttributeType::S))
            .attribute_definitions(attribute("entry", ScalarAttributeType::S))
            .attribute_definitions(attribute("owner", ScalarAttributeType::S))
            .attribute_definitions(attribute("at", ScalarAttributeType::N))
            .global_secondary_indexes(by_owner(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .non_key_attributes("note")
                    .build(),
            ))
            .send()
            .await
            .unwrap();
        Fixture {
            meter,
            metered,
            direct,
            keys,
            notes,
        }
    }

    /// What `table` was billed since the last call (or the start).
    fn billed(&self, table: &str) -> TableUsage {
        let usage = self.meter.usage().table(table);
        self.meter.reset();
        usage
    }

    /// Puts `item` into `table` without going through the meter.
    async fn seed(&self, table: &str, item: &[(&str, AttributeValue)]) {
        self.direct
            .put_item()
            .table_name(table)
            .set_item(Some(to_item(item)))
            .send()
            .await
            .unwrap();
    }
}

fn to_item(attributes: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
    attributes
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect()
}

fn assert_writes(usage: &TableUsage, write_units: f64, index_write_units: f64) {
    assert_eq!(
        (usage.write_units, usage.index_write_units, usage.read_units),
        (write_units, index_write_units, 0.0),
        "{usage:?}"
    );
}

fn assert_reads(usage: &TableUsage, read_units: f64) {
    assert_eq!((usage.read_units, usage.write_units), (read_units, 0.0), "{usage:?}");
}

#[tokio::test]
async fn a_put_of_100_bytes_costs_one_unit_and_one_in_the_index() {
    let f = Fixture::new().await;
    f.metered
        .put_item()
        .table_name(&f.keys)
        .set_item(Some(to_item(&[
            ("id", s("a")),
            ("owner", s("ann")),
            ("at", n(1)),
            ("payload", s(&"x".repeat(70))),
        ])))
        .send()
        .await
        .unwrap();
    let usage = f.billed(&f.keys);
    assert_writes(&usage, 2.0, 1.0);
    assert_eq!(usage.requests.get("PutItem"), Some(&1));
}

#[tokio::test]
async fn a_put_of_one_and_a_half_kilobytes_costs_two_units() {
    let f = Fixture::new().await;
    // No `at`: the item is not in the index.
    f.metered
        .put_item()
        .table_name(&f.keys)
        .set_item(Some(to_item(&[
            ("id", s("a")),
            ("owner", s("ann")),
            ("payload", s(&"x".repeat(1500))),
        ])))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 2.0, 0.0);
}

#[tokio::test]
async fn a_put_that_moves_the_index_sort_key_costs_a_delete_and_a_put_in_the_index() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a")), ("owner", s("ann")), ("at", n(1))])
        .await;
    f.metered
        .put_item()
        .table_name(&f.keys)
        .set_item(Some(to_item(&[("id", s("a")), ("owner", s("ann")), ("at", n(2))])))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 1.0 + 2.0, 2.0);

    // The same item again: the index entry does not change.
    f.metered
        .put_item()
        .table_name(&f.keys)
        .set_item(Some(to_item(&[("id", s("a")), ("owner", s("ann")), ("at", n(2))])))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 1.0, 0.0);
}

#[tokio::test]
async fn an_update_writes_the_index_only_when_it_changes_a_projected_attribute() {
    let f = Fixture::new().await;
    f.seed(
        &f.notes,
        &[
            ("channel", s("c")),
            ("entry", s("1")),
            ("owner", s("ann")),
            ("at", n(1)),
            ("note", s("n")),
        ],
    )
    .await;
    let update = |expression: &str, value: &str| {
        f.metered
            .update_item()
            .table_name(&f.notes)
            .key("channel", s("c"))
            .key("entry", s("1"))
            .update_expression(expression)
            .expression_attribute_values(":v", s(value))
    };

    update("SET extra = :v", "not projected").send().await.unwrap();
    assert_writes(&f.billed(&f.notes), 1.0, 0.0);

    update("SET note = :v", "projected").send().await.unwrap();
    assert_writes(&f.billed(&f.notes), 1.0 + 1.0, 1.0);

    // Removing the index key takes the item out of the index: a delete.
    f.metered
        .update_item()
        .table_name(&f.notes)
        .key("channel", s("c"))
        .key("entry", s("1"))
        .update_expression("REMOVE #at")
        .expression_attribute_names("#at", "at")
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.notes), 1.0 + 1.0, 1.0);
}

#[tokio::test]
async fn an_update_is_billed_on_the_larger_of_the_item_before_and_after() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a")), ("payload", s(&"x".repeat(2500)))])
        .await;
    f.metered
        .update_item()
        .table_name(&f.keys)
        .key("id", s("a"))
        .update_expression("REMOVE payload")
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 3.0, 0.0);
}

#[tokio::test]
async fn a_transaction_of_two_small_puts_costs_twice_their_units() {
    let f = Fixture::new().await;
    let put = |id: &str, indexed: bool| {
        let mut item = vec![("id", s(id))];
        if indexed {
            item.extend([("owner", s("ann")), ("at", n(1))]);
        }
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&f.keys)
                    .set_item(Some(to_item(&item)))
                    .build()
                    .unwrap(),
            )
            .build()
    };

    f.metered
        .transact_write_items()
        .transact_items(put("a", false))
        .transact_items(put("b", false))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 4.0, 0.0);

    // Index writes follow the commit at the ordinary rate.
    f.metered
        .transact_write_items()
        .transact_items(put("c", true))
        .transact_items(put("d", true))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 4.0 + 2.0, 2.0);
}

#[tokio::test]
async fn a_cancelled_transaction_costs_its_prepare_writes() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("taken"))]).await;
    let result = f
        .metered
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&f.keys)
                        .set_item(Some(to_item(&[("id", s("taken")), ("owner", s("ann")), ("at", n(1))])))
                        .condition_expression("attribute_not_exists(id)")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&f.keys)
                        .set_item(Some(to_item(&[("id", s("free"))])))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await;
    assert!(result.is_err(), "the condition fails");
    assert_writes(&f.billed(&f.keys), 2.0, 0.0);
}

#[tokio::test]
async fn a_conditional_put_that_fails_still_costs_a_unit() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a")), ("owner", s("ann")), ("at", n(1))])
        .await;
    let error = f
        .metered
        .put_item()
        .table_name(&f.keys)
        .set_item(Some(to_item(&[("id", s("a")), ("owner", s("bob")), ("at", n(2))])))
        .condition_expression("attribute_not_exists(id)")
        .send()
        .await
        .unwrap_err();
    assert!(
        error
            .as_service_error()
            .is_some_and(|error| error.is_conditional_check_failed_exception()),
        "{error:?}"
    );
    assert_writes(&f.billed(&f.keys), 1.0, 0.0);
}

#[tokio::test]
async fn a_delete_costs_the_item_and_its_index_entry() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a")), ("owner", s("ann")), ("at", n(1))])
        .await;
    f.metered
        .delete_item()
        .table_name(&f.keys)
        .key("id", s("a"))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 1.0 + 1.0, 1.0);

    // Deleting what is not there still costs a unit.
    f.metered
        .delete_item()
        .table_name(&f.keys)
        .key("id", s("a"))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 1.0, 0.0);
}

#[tokio::test]
async fn a_batch_write_bills_each_item_on_its_own() {
    let f = Fixture::new().await;
    let put = |id: &str, bytes: usize| {
        WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .set_item(Some(to_item(&[("id", s(id)), ("payload", s(&"x".repeat(bytes)))])))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    f.metered
        .batch_write_item()
        .request_items(&f.keys, vec![put("a", 400), put("b", 3500)])
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 1.0 + 4.0, 0.0);
}

#[tokio::test]
async fn a_get_costs_half_a_unit_eventually_consistent_and_one_strongly() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a")), ("payload", s(&"x".repeat(100)))])
        .await;
    let get = |id: &str| f.metered.get_item().table_name(&f.keys).key("id", s(id));

    get("a").send().await.unwrap();
    assert_reads(&f.billed(&f.keys), 0.5);
    get("a").consistent_read(true).send().await.unwrap();
    assert_reads(&f.billed(&f.keys), 1.0);
    // An absent item costs the same.
    get("absent").send().await.unwrap();
    assert_reads(&f.billed(&f.keys), 0.5);
    // A projection does not make the read cheaper.
    f.seed(&f.keys, &[("id", s("big")), ("payload", s(&"x".repeat(5000)))])
        .await;
    get("big").projection_expression("id").send().await.unwrap();
    assert_reads(&f.billed(&f.keys), 1.0);
}

#[tokio::test]
async fn batch_and_transactional_gets_bill_each_item() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a"))]).await;
    f.metered
        .batch_get_item()
        .request_items(
            &f.keys,
            KeysAndAttributes::builder()
                .keys(to_item(&[("id", s("a"))]))
                .keys(to_item(&[("id", s("absent"))]))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&f.keys), 0.5 + 0.5);

    let get = |id: &str| {
        TransactGetItem::builder()
            .get(Get::builder().table_name(&f.keys).key("id", s(id)).build().unwrap())
            .build()
    };
    f.metered
        .transact_get_items()
        .transact_items(get("a"))
        .transact_items(get("absent"))
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&f.keys), 2.0 + 2.0);
}

#[tokio::test]
async fn a_query_of_three_small_items_costs_half_a_unit() {
    let f = Fixture::new().await;
    for entry in ["1", "2", "3"] {
        f.seed(
            &f.notes,
            &[
                ("channel", s("c")),
                ("entry", s(entry)),
                ("owner", s("ann")),
                ("at", n(1)),
            ],
        )
        .await;
    }
    let answer = f
        .metered
        .query()
        .table_name(&f.notes)
        .key_condition_expression("channel = :c")
        .expression_attribute_values(":c", s("c"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.items().len(), 3);
    assert_reads(&f.billed(&f.notes), 0.5);

    // The same through the index.
    let answer = f
        .metered
        .query()
        .table_name(&f.notes)
        .index_name("by_owner")
        .key_condition_expression("#owner = :owner")
        .expression_attribute_names("#owner", "owner")
        .expression_attribute_values(":owner", s("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.items().len(), 3);
    assert_reads(&f.billed(&f.notes), 0.5);
}

#[tokio::test]
async fn a_query_is_billed_on_what_it_evaluates_not_what_the_filter_keeps() {
    let f = Fixture::new().await;
    for entry in 0..10 {
        f.seed(
            &f.notes,
            &[
                ("channel", s("c")),
                ("entry", s(&format!("{entry:02}"))),
                ("payload", s(&"x".repeat(1000))),
            ],
        )
        .await;
    }
    let answer = f
        .metered
        .query()
        .table_name(&f.notes)
        .key_condition_expression("channel = :c")
        .filter_expression("payload = :nothing")
        .projection_expression("entry")
        .expression_attribute_values(":c", s("c"))
        .expression_attribute_values(":nothing", s("no such payload"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.items().len(), 0);
    // About 10 KB evaluated: three 4 KB blocks, half a unit each.
    assert_reads(&f.billed(&f.notes), 1.5);

    // Strongly consistent, counting only: the same items, at the full rate.
    f.metered
        .query()
        .table_name(&f.notes)
        .key_condition_expression("channel = :c")
        .select(Select::Count)
        .consistent_read(true)
        .expression_attribute_values(":c", s("c"))
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&f.notes), 3.0);

    // A limit stops the evaluation: two items, one 4 KB block.
    f.metered
        .query()
        .table_name(&f.notes)
        .key_condition_expression("channel = :c")
        .filter_expression("payload = :nothing")
        .limit(2)
        .expression_attribute_values(":c", s("c"))
        .expression_attribute_values(":nothing", s("no such payload"))
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&f.notes), 0.5);

    // A scan evaluates every item of the table.
    f.metered
        .scan()
        .table_name(&f.notes)
        .filter_expression("payload = :nothing")
        .expression_attribute_values(":nothing", s("no such payload"))
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&f.notes), 1.5);
}

#[tokio::test]
async fn requests_that_read_and_write_nothing_are_counted_and_free() {
    let f = Fixture::new().await;
    f.metered.describe_table().table_name(&f.keys).send().await.unwrap();
    f.metered.list_tables().send().await.unwrap();
    // A refused request: the key lacks the table's key attribute.
    let refused = f
        .metered
        .get_item()
        .table_name(&f.keys)
        .key("not_the_key", s("a"))
        .send()
        .await;
    assert!(refused.is_err());

    let usage = f.meter.usage();
    assert_eq!(usage.total_requests(), 3, "{usage:?}");
    assert_eq!(usage.requests.get("ListTables"), Some(&1));
    assert_eq!((usage.total_read_units(), usage.total_write_units()), (0.0, 0.0));
    let keys = usage.table(&f.keys);
    assert_eq!(keys.requests.get("DescribeTable"), Some(&1));
    assert_eq!(keys.requests.get("GetItem"), Some(&1));
}

#[tokio::test]
async fn a_local_index_asked_for_what_it_does_not_project_reads_the_table_too() {
    let f = Fixture::new().await;
    let table = format!("local-{:016x}", fastrand::u64(..));
    f.direct
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("channel", KeyType::Hash))
        .key_schema(key("entry", KeyType::Range))
        .attribute_definitions(attribute("channel", ScalarAttributeType::S))
        .attribute_definitions(attribute("entry", ScalarAttributeType::S))
        .attribute_definitions(attribute("at", ScalarAttributeType::N))
        .local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name("by_at")
                .key_schema(key("channel", KeyType::Hash))
                .key_schema(key("at", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes("note")
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    f.metered
        .put_item()
        .table_name(&table)
        .set_item(Some(to_item(&[
            ("channel", s("c")),
            ("entry", s("1")),
            ("at", n(1)),
            ("note", s("n")),
            ("payload", s(&"x".repeat(2000))),
        ])))
        .send()
        .await
        .unwrap();
    // About 2 KB in the table, a small entry in the index.
    assert_writes(&f.billed(&table), 2.0 + 1.0, 1.0);

    let query = || {
        f.metered
            .query()
            .table_name(&table)
            .index_name("by_at")
            .key_condition_expression("channel = :c")
            .expression_attribute_values(":c", s("c"))
    };
    query().send().await.unwrap();
    assert_reads(&f.billed(&table), 0.5);
    // Every attribute: the index entries, then each whole item from the table.
    query()
        .select(Select::AllAttributes)
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&table), 1.0 + 1.0);
}
