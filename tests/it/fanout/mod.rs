//! The stream-processor: given these connections, when this batch arrives, then
//! these connections receive it and these stale ids are gone. One file per
//! idea: delivery, failures, the invocation's deadline, retention.

use airwave_local::LocalManagementApi;
use airwave_protocol::MessageFrame;
use airwave_shared::aws_lambda_events::streams::DynamoDbEventResponse;
use airwave_shared::failures::RecordedFailures;
use airwave_shared::handlers::handle_stream_batch;
use airwave_shared::FanOut;
use airwave_tests::{insert_record, TestTables};

mod deadline;
mod delivery;
mod failures;
mod retention;

struct Stack {
    tables: TestTables,
    gateway: LocalManagementApi,
    fanout: FanOut,
}

impl Stack {
    async fn start() -> Self {
        let tables = TestTables::create().await;
        let gateway = LocalManagementApi::start().await.unwrap();
        let fanout = tables.fanout(&gateway.endpoint(), 8);
        Stack {
            tables,
            gateway,
            fanout,
        }
    }

    /// A browser connects: API Gateway knows the id and `$connect` stored it.
    async fn connect(&self, connection_id: &str) {
        self.gateway.connect(connection_id);
        self.tables.admit(connection_id).await;
    }

    fn frames(&self, connection_id: &str) -> Vec<MessageFrame> {
        self.gateway
            .received(connection_id)
            .iter()
            .flat_map(|bytes| {
                let text = std::str::from_utf8(bytes).expect("a text frame");
                match airwave_protocol::parse_server_frame(text).expect("a JSON frame") {
                    airwave_protocol::Incoming::Messages(messages) => messages,
                    other => panic!("not a message frame: {other:?}"),
                }
            })
            .collect()
    }
}

fn failed_sequence_numbers(response: &DynamoDbEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .filter_map(|failure| failure.item_identifier.clone())
        .collect()
}

impl Stack {
    /// The stream-processor's handler runs `event` against this stack, its
    /// failures recorded rather than sent to a queue.
    async fn process(
        &self,
        event: lambda_runtime::LambdaEvent<serde_json::Value>,
    ) -> Result<DynamoDbEventResponse, airwave_shared::Error> {
        handle_stream_batch(
            &self.tables.store,
            &self.tables.config.history,
            &self.fanout,
            &RecordedFailures::default(),
            event,
        )
        .await
    }

    async fn subscribe(&self, connection_id: &str, channel: &str) {
        self.connect(connection_id).await;
        self.tables.subscribe(connection_id, channel).await;
    }
}

fn channel_records(first: usize, count: usize, channel: &str) -> Vec<serde_json::Value> {
    (first..first + count)
        .map(|index| {
            insert_record(
                &index.to_string(),
                airwave_tests::channel_message_image(&format!("msg-{index}"), channel, "x"),
            )
        })
        .collect()
}

/// `count` connections that `$connect` admitted and API Gateway knows.
async fn seed_connections(stack: &Stack, count: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|index| format!("seeded-{index:05}=")).collect();
    stack.tables.seed_connections(&ids).await;
    for id in &ids {
        stack.gateway.connect(id);
    }
    ids
}
