//! The DynamoDB tables as the template declares them: attributes, key
//! schemas, global secondary indexes, stream and TTL settings; and how a
//! table (or a queue) names itself.

use serde_json::Value;

use super::parser::{required_text, scalar_text, Parser};
use crate::GatewayError;

/// One `AWS::DynamoDB::Table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub logical_id: String,
    pub name: TableName,
    pub attributes: Vec<AttributeDefinition>,
    pub key_schema: Vec<KeyElement>,
    pub global_secondary_indexes: Vec<GlobalSecondaryIndex>,
    /// `StreamSpecification.StreamViewType`, when the table has a stream.
    pub stream_view_type: Option<String>,
    /// `TimeToLiveSpecification.AttributeName`, when TTL is enabled.
    pub ttl_attribute: Option<String>,
}

/// How the template names a table (or a queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableName {
    /// No `TableName`: CloudFormation generates one.
    Generated,
    Literal(String),
    /// A `!Sub` template such as `${AWS::StackName}-connections`.
    Sub(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDefinition {
    pub name: String,
    /// `S`, `N` or `B`.
    pub attribute_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyElement {
    pub attribute_name: String,
    /// `HASH` or `RANGE`.
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalSecondaryIndex {
    pub name: String,
    pub key_schema: Vec<KeyElement>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection_type: String,
    pub non_key_attributes: Vec<String>,
}

impl Parser<'_> {
    pub(super) fn table(&self, logical_id: &str, resource: &Value) -> Result<Table, GatewayError> {
        let properties = resource.get("Properties").cloned().unwrap_or_default();
        let name = resource_name(logical_id, &properties, "TableName")?;
        let attributes = properties
            .get("AttributeDefinitions")
            .and_then(Value::as_array)
            .ok_or_else(|| GatewayError::Template(format!("{logical_id} has no AttributeDefinitions")))?
            .iter()
            .map(|attribute| {
                Ok(AttributeDefinition {
                    name: required_text(attribute, "AttributeName", logical_id)?,
                    attribute_type: required_text(attribute, "AttributeType", logical_id)?,
                })
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        let table_key_schema = key_schema(properties.get("KeySchema"), logical_id)?;
        let global_secondary_indexes = properties
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_array)
            .map(|indexes| {
                indexes
                    .iter()
                    .map(|index| {
                        let name = required_text(index, "IndexName", logical_id)?;
                        let projection = index.get("Projection");
                        Ok(GlobalSecondaryIndex {
                            key_schema: key_schema(index.get("KeySchema"), &format!("{logical_id} index {name}"))?,
                            projection_type: projection
                                .and_then(|p| p.get("ProjectionType"))
                                .and_then(scalar_text)
                                .unwrap_or_else(|| "KEYS_ONLY".to_owned()),
                            non_key_attributes: projection
                                .and_then(|p| p.get("NonKeyAttributes"))
                                .and_then(Value::as_array)
                                .map(|names| names.iter().filter_map(scalar_text).collect())
                                .unwrap_or_default(),
                            name,
                        })
                    })
                    .collect::<Result<Vec<_>, GatewayError>>()
            })
            .transpose()?
            .unwrap_or_default();
        let stream_view_type = properties
            .pointer("/StreamSpecification/StreamViewType")
            .and_then(|value| self.resolve_text(value));
        let ttl_enabled = properties
            .pointer("/TimeToLiveSpecification/Enabled")
            .is_some_and(|enabled| self.resolve_bool(enabled).unwrap_or(false));
        let ttl_attribute = properties
            .pointer("/TimeToLiveSpecification/AttributeName")
            .and_then(|value| self.resolve_text(value))
            .filter(|_| ttl_enabled);
        Ok(Table {
            logical_id: logical_id.to_owned(),
            name,
            attributes,
            key_schema: table_key_schema,
            global_secondary_indexes,
            stream_view_type,
            ttl_attribute,
        })
    }
}

fn key_schema(value: Option<&Value>, owner: &str) -> Result<Vec<KeyElement>, GatewayError> {
    value
        .and_then(Value::as_array)
        .ok_or_else(|| GatewayError::Template(format!("{owner} has no KeySchema")))?
        .iter()
        .map(|element| {
            Ok(KeyElement {
                attribute_name: required_text(element, "AttributeName", owner)?,
                key_type: required_text(element, "KeyType", owner)?,
            })
        })
        .collect()
}

/// A table's or queue's name property: absent (CloudFormation generates one),
/// a literal, or a `!Sub` string.
pub(super) fn resource_name(logical_id: &str, properties: &Value, property: &str) -> Result<TableName, GatewayError> {
    match properties.get(property) {
        None => Ok(TableName::Generated),
        Some(Value::String(name)) => Ok(TableName::Literal(name.clone())),
        Some(value) => match value.get("Fn::Sub") {
            Some(Value::String(template)) => Ok(TableName::Sub(template.clone())),
            _ => Err(GatewayError::Template(format!(
                "{property} of {logical_id} must be a string or a !Sub string"
            ))),
        },
    }
}
