//! What the DynamoDB meter bills, against a real DynamoDB-compatible server
//! through the AWS SDK. Run with
//! `infra/with-moto.sh cargo test -p airwave-local --test dynamodb_meter`
//! (what `make test` does); without `AIRWAVE_TEST_DYNAMODB_ENDPOINT`, or with
//! one that does not answer, they fail and say so.
//!
//! Each test has a meter and tables of its own. Table "keys" has a
//! keys-only index on (owner, at); table "notes" has a sort key and an index
//! on (owner, at) that includes `note`.
//!
//! One test binary: the fixture and the helpers here, the tests of what
//! writes cost in `writes`, of what reads cost in `reads`.

mod reads;
mod writes;

use std::collections::HashMap;

use airwave_local::{MeteredDynamoDb, TableUsage};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
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
