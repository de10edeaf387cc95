//! The tables Airwave needs, with the key schema, stream and TTL settings the
//! code relies on. The deployed stack declares the same in `template.yaml`.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use airwave_shared::Config;

use crate::LocalError;

/// Creates the three tables; a table that already exists is left as it is.
pub async fn create_tables(client: &Client, config: &Config) -> Result<(), LocalError> {
    create_table(client, &config.connections_table, "connection_id", None, None).await?;
    create_table(
        client,
        &config.subscriptions_table,
        "channel",
        Some("connection_id"),
        None,
    )
    .await?;
    let stream = StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::NewImage)
        .build()
        .map_err(|error| dynamodb_error("CreateTable", &config.messages_table, error))?;
    create_table(client, &config.messages_table, "message_id", None, Some(stream)).await?;
    Ok(())
}

async fn create_table(
    client: &Client,
    table: &str,
    partition_key: &str,
    sort_key: Option<&str>,
    stream: Option<StreamSpecification>,
) -> Result<(), LocalError> {
    let mut attributes = Vec::new();
    let mut key_schema = Vec::new();
    for (name, key_type) in
        std::iter::once((partition_key, KeyType::Hash)).chain(sort_key.map(|name| (name, KeyType::Range)))
    {
        attributes.push(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|error| dynamodb_error("CreateTable", table, error))?,
        );
        key_schema.push(
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(|error| dynamodb_error("CreateTable", table, error))?,
        );
    }
    let created = client
        .create_table()
        .table_name(table)
        .set_attribute_definitions(Some(attributes))
        .set_key_schema(Some(key_schema))
        .billing_mode(BillingMode::PayPerRequest)
        .set_stream_specification(stream)
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
