//! The tables Airwave needs, with the key schema, stream and TTL settings the
//! code relies on. The deployed stack declares the same in `template.yaml`.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use airwave_shared::admission::CapScope;
use airwave_shared::Config;

use crate::LocalError;

/// Creates the four tables; a table that already exists is left as it is.
pub async fn create_tables(client: &Client, config: &Config) -> Result<(), LocalError> {
    let table = &config.connections_table;
    // One sparse index per cap: the records holding a slot, by expiry, with
    // what a release needs (the other slots) and what a record must have.
    // Not `channels`: every subscribe would write to the indexes, and the
    // subscriptions of an expired connection expire with it.
    let mut indexes = Vec::new();
    for scope in [CapScope::Total, CapScope::User, CapScope::Ip] {
        indexes.push(
            GlobalSecondaryIndex::builder()
                .index_name(scope.index_name())
                .key_schema(key(table, scope.record_attribute(), KeyType::Hash)?)
                .key_schema(key(table, "expires_at", KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .set_non_key_attributes(Some(
                            ["slot_total", "slot_user", "slot_ip", "source_ip", "connected_at_ms"]
                                .into_iter()
                                .filter(|name| *name != scope.record_attribute())
                                .map(str::to_owned)
                                .collect(),
                        ))
                        .build(),
                )
                .build()
                .map_err(|error| dynamodb_error("CreateTable", table, error))?,
        );
    }
    let mut attributes = vec![
        attribute(table, "connection_id", ScalarAttributeType::S)?,
        attribute(table, "expires_at", ScalarAttributeType::N)?,
    ];
    for scope in [CapScope::Total, CapScope::User, CapScope::Ip] {
        attributes.push(attribute(table, scope.record_attribute(), ScalarAttributeType::S)?);
    }
    create_table(
        client,
        TableSpec {
            name: table,
            attributes,
            key_schema: vec![key(table, "connection_id", KeyType::Hash)?],
            indexes,
            stream: Some(stream(table, StreamViewType::OldImage)?),
        },
    )
    .await?;

    let table = &config.subscriptions_table;
    create_table(
        client,
        TableSpec {
            name: table,
            attributes: vec![
                attribute(table, "channel", ScalarAttributeType::S)?,
                attribute(table, "connection_id", ScalarAttributeType::S)?,
            ],
            key_schema: vec![
                key(table, "channel", KeyType::Hash)?,
                key(table, "connection_id", KeyType::Range)?,
            ],
            indexes: Vec::new(),
            stream: None,
        },
    )
    .await?;

    let table = &config.messages_table;
    create_table(
        client,
        TableSpec {
            name: table,
            attributes: vec![attribute(table, "message_id", ScalarAttributeType::S)?],
            key_schema: vec![key(table, "message_id", KeyType::Hash)?],
            indexes: Vec::new(),
            stream: Some(stream(table, StreamViewType::NewImage)?),
        },
    )
    .await?;

    let table = &config.admission_table;
    create_table(
        client,
        TableSpec {
            name: table,
            attributes: vec![attribute(table, "pk", ScalarAttributeType::S)?],
            key_schema: vec![key(table, "pk", KeyType::Hash)?],
            indexes: Vec::new(),
            stream: None,
        },
    )
    .await?;
    Ok(())
}

struct TableSpec<'a> {
    name: &'a str,
    attributes: Vec<AttributeDefinition>,
    key_schema: Vec<KeySchemaElement>,
    indexes: Vec<GlobalSecondaryIndex>,
    stream: Option<StreamSpecification>,
}

fn attribute(table: &str, name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition, LocalError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(|error| dynamodb_error("CreateTable", table, error))
}

fn key(table: &str, name: &str, kind: KeyType) -> Result<KeySchemaElement, LocalError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|error| dynamodb_error("CreateTable", table, error))
}

fn stream(table: &str, view: StreamViewType) -> Result<StreamSpecification, LocalError> {
    StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(view)
        .build()
        .map_err(|error| dynamodb_error("CreateTable", table, error))
}

async fn create_table(client: &Client, spec: TableSpec<'_>) -> Result<(), LocalError> {
    let table = spec.name;
    let created = client
        .create_table()
        .table_name(table)
        .set_attribute_definitions(Some(spec.attributes))
        .set_key_schema(Some(spec.key_schema))
        .set_global_secondary_indexes((!spec.indexes.is_empty()).then_some(spec.indexes))
        .billing_mode(BillingMode::PayPerRequest)
        .set_stream_specification(spec.stream)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|service_error| service_error.is_resource_in_use_exception()) =>
        {
            tracing::info!(table, "table already exists");
            return Ok(());
        }
        Err(error) => return Err(dynamodb_error("CreateTable", table, error)),
    }
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name("expires_at")
        .enabled(true)
        .build()
        .map_err(|error| dynamodb_error("UpdateTimeToLive", table, error))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(ttl)
        .send()
        .await
        .map_err(|error| dynamodb_error("UpdateTimeToLive", table, error))?;
    tracing::info!(table, "table created");
    Ok(())
}

fn dynamodb_error<E>(operation: &'static str, table: &str, error: E) -> LocalError
where
    E: std::error::Error + Send + Sync + 'static,
{
    LocalError::DynamoDb {
        operation,
        table: table.to_owned(),
        message: aws_sdk_dynamodb::error::DisplayErrorContext(error).to_string(),
    }
}
