//! The SQS queues as the template declares them: name and the properties
//! that are CreateQueue attributes.

use std::collections::BTreeMap;

use serde_json::Value;

use super::parser::Parser;
use super::tables::{resource_name, TableName};
use crate::GatewayError;

/// The properties of an `AWS::SQS::Queue` that are also CreateQueue attributes
/// of the same name.
const QUEUE_ATTRIBUTES: [&str; 7] = [
    "ContentBasedDeduplication",
    "DelaySeconds",
    "FifoQueue",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
];

/// One `AWS::SQS::Queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub logical_id: String,
    /// `QueueName`, by the same rules as a table's name.
    pub name: TableName,
    /// The properties that are CreateQueue attributes (`MessageRetentionPeriod`,
    /// `VisibilityTimeout`, `FifoQueue`, ...), as text.
    pub attributes: BTreeMap<String, String>,
}

impl Queue {
    pub fn fifo(&self) -> bool {
        self.attributes.get("FifoQueue").is_some_and(|fifo| fifo == "true")
    }
}

impl Parser<'_> {
    pub(super) fn queue(&self, logical_id: &str, resource: &Value) -> Result<Queue, GatewayError> {
        let properties = resource.get("Properties").cloned().unwrap_or_default();
        let name = resource_name(logical_id, &properties, "QueueName")?;
        let attributes = QUEUE_ATTRIBUTES
            .iter()
            .filter_map(|attribute| {
                let value = properties.get(*attribute)?;
                Some(
                    self.resolve_text(value)
                        .map(|text| (attribute.to_string(), text))
                        .ok_or_else(|| {
                            GatewayError::Template(format!(
                                "{attribute} of {logical_id} must be a literal or a parameter with a default"
                            ))
                        }),
                )
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(Queue {
            logical_id: logical_id.to_owned(),
            name,
            attributes,
        })
    }
}
