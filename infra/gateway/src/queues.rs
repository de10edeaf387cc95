//! Creates the template's SQS queues on a local server (moto's serves SQS on
//! the same port as DynamoDB), under their local names (see
//! [`crate::LocalNames`]), with the attributes the template declares
//! (`MessageRetentionPeriod`, `VisibilityTimeout`, ...).

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;

use crate::local_resources::create_each;
pub use crate::local_resources::QueueOutcome;
use crate::template::{LocalNames, Queue, StackModel};
use crate::GatewayError;

/// Creates every queue of the template under its local name; a queue that
/// already exists is left as it is.
pub async fn create_queues(
    client: &Client,
    model: &StackModel,
    names: &LocalNames,
) -> Result<Vec<QueueOutcome>, GatewayError> {
    let local_name = |queue| model.queue_name(queue, names);
    create_each(&model.queues, local_name, |queue, name| async move {
        let (url, created) = match queue_url(client, &name).await? {
            Some(url) => {
                tracing::info!(queue = %name, logical_id = %queue.logical_id, "queue already exists; left alone");
                (url, false)
            }
            None => (create_queue(client, queue, &name).await?, true),
        };
        Ok(QueueOutcome {
            logical_id: queue.logical_id.clone(),
            name,
            url,
            created,
        })
    })
    .await
}

/// The URL of the queue named `name`, or `None` when there is no such queue.
pub async fn queue_url(client: &Client, name: &str) -> Result<Option<String>, GatewayError> {
    match client.get_queue_url().queue_name(name).send().await {
        Ok(found) => Ok(found.queue_url().map(str::to_owned)),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|service_error| service_error.is_queue_does_not_exist()) =>
        {
            Ok(None)
        }
        Err(error) => Err(GatewayError::sqs("GetQueueUrl", name, error)),
    }
}

async fn create_queue(client: &Client, queue: &Queue, name: &str) -> Result<String, GatewayError> {
    let attributes: HashMap<QueueAttributeName, String> = queue
        .attributes
        .iter()
        .map(|(attribute, value)| (QueueAttributeName::from(attribute.as_str()), value.clone()))
        .collect();
    let created = client
        .create_queue()
        .queue_name(name)
        .set_attributes((!attributes.is_empty()).then_some(attributes))
        .send()
        .await
        .map_err(|error| GatewayError::sqs("CreateQueue", name, error))?;
    let url = created.queue_url().ok_or_else(|| GatewayError::Sqs {
        operation: "CreateQueue",
        resource: name.to_owned(),
        message: "no queue URL in the answer".into(),
    })?;
    tracing::info!(queue = name, logical_id = %queue.logical_id, url, "queue created");
    Ok(url.to_owned())
}
