//! Creates the template's tables in a DynamoDB-compatible server, exactly as
//! declared: key schema, attribute definitions, global secondary indexes,
//! stream and TTL. Tables are created on demand billing whatever the template
//! says, since a local server has no capacity to provision.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use crate::local_resources::create_each;
pub use crate::local_resources::TableOutcome;
use crate::template::{self, LocalNames, StackModel, Table};
use crate::GatewayError;

/// Creates every table of the template under its local name; a table that
/// already exists is left as it is.
pub async fn create_tables(
    client: &Client,
    model: &StackModel,
    names: &LocalNames,
) -> Result<Vec<TableOutcome>, GatewayError> {
    let local_name = |table| model.table_name(table, names);
    create_each(&model.tables, local_name, |table, name| {
        create_table(client, table, name)
    })
    .await
}

fn key_schema(elements: &[template::KeyElement], table: &str) -> Result<Vec<KeySchemaElement>, GatewayError> {
    elements
        .iter()
        .map(|element| {
            let key_type = match element.key_type.as_str() {
                "HASH" => KeyType::Hash,
                "RANGE" => KeyType::Range,
                other => {
                    return Err(GatewayError::Template(format!("{table}: unknown KeyType {other}")));
                }
            };
            KeySchemaElement::builder()
                .attribute_name(&element.attribute_name)
                .key_type(key_type)
                .build()
                .map_err(|error| GatewayError::dynamodb("CreateTable", table, error))
        })
        .collect()
}

async fn create_table(client: &Client, table: &Table, name: String) -> Result<TableOutcome, GatewayError> {
    let outcome = |created| TableOutcome {
        logical_id: table.logical_id.clone(),
        name: name.clone(),
        created,
    };
    let name = name.as_str();
    let attributes = table
        .attributes
        .iter()
        .map(|attribute| {
            let attribute_type = match attribute.attribute_type.as_str() {
                "S" => ScalarAttributeType::S,
                "N" => ScalarAttributeType::N,
                "B" => ScalarAttributeType::B,
                other => {
                    return Err(GatewayError::Template(format!(
                        "{}: unknown AttributeType {other}",
                        table.logical_id
                    )));
                }
            };
            AttributeDefinition::builder()
                .attribute_name(&attribute.name)
                .attribute_type(attribute_type)
                .build()
                .map_err(|error| GatewayError::dynamodb("CreateTable", name, error))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut indexes = Vec::new();
    for index in &table.global_secondary_indexes {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(index.projection_type.as_str()))
            .set_non_key_attributes((!index.non_key_attributes.is_empty()).then(|| index.non_key_attributes.clone()))
            .build();
        indexes.push(
            GlobalSecondaryIndex::builder()
                .index_name(&index.name)
                .set_key_schema(Some(key_schema(&index.key_schema, name)?))
                .projection(projection)
                .build()
                .map_err(|error| GatewayError::dynamodb("CreateTable", name, error))?,
        );
    }
    let stream = match &table.stream_view_type {
        Some(view_type) => Some(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view_type.as_str()))
                .build()
                .map_err(|error| GatewayError::dynamodb("CreateTable", name, error))?,
        ),
        None => None,
    };
    let created = client
        .create_table()
        .table_name(name)
        .set_attribute_definitions(Some(attributes))
        .set_key_schema(Some(key_schema(&table.key_schema, name)?))
        .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
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
            tracing::info!(table = name, logical_id = %table.logical_id, "table already exists; left alone");
            return Ok(outcome(false));
        }
        Err(error) => return Err(GatewayError::dynamodb("CreateTable", name, error)),
    }
    if let Some(attribute) = &table.ttl_attribute {
        let ttl = TimeToLiveSpecification::builder()
            .attribute_name(attribute)
            .enabled(true)
            .build()
            .map_err(|error| GatewayError::dynamodb("UpdateTimeToLive", name, error))?;
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|error| GatewayError::dynamodb("UpdateTimeToLive", name, error))?;
    }
    tracing::info!(table = name, logical_id = %table.logical_id, "table created");
    Ok(outcome(true))
}
