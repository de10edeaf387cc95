//! Table creation and stream polling against a real DynamoDB-compatible
//! server. Run with `infra/with-moto.sh cargo test -p airwave-gateway` (what
//! `make test` does); without `AIRWAVE_TEST_DYNAMODB_ENDPOINT`, or with one
//! that does not answer, they fail and say so.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use airwave_gateway::queues::create_queues;
use airwave_gateway::tables::create_tables;
use airwave_gateway::{LocalNames, RunningPoller, StackModel, StartingPosition, StreamOptions, StreamPoller};
use aws_sdk_dynamodb::types::{AttributeValue, KeyType, StreamViewType, TimeToLiveStatus};
use aws_sdk_sqs::types::QueueAttributeName;
use common::{items_table_template, Functions};
use serde_json::{json, Value};

const ENDPOINT_VARIABLE: &str = "AIRWAVE_TEST_DYNAMODB_ENDPOINT";

struct Clients {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    /// moto's server answers SQS on the same port.
    sqs: aws_sdk_sqs::Client,
}

/// Clients for the server at `AIRWAVE_TEST_DYNAMODB_ENDPOINT`. A missing or
/// silent server fails the test: passing without having run would hide it.
async fn clients() -> Clients {
    let endpoint = std::env::var(ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{ENDPOINT_VARIABLE} is not set: these tests need a DynamoDB-compatible server; run them with \
             `infra/with-moto.sh cargo test -p airwave-gateway` or `make test`, which start one and set it"
        )
    });
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .load()
        .await;
    let clients = Clients {
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
        streams: aws_sdk_dynamodbstreams::Client::new(&config),
        sqs: aws_sdk_sqs::Client::new(&config),
    };
    if let Err(error) = clients.dynamodb.list_tables().limit(1).send().await {
        panic!(
            "the DynamoDB at {endpoint} ({ENDPOINT_VARIABLE}) does not answer: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&error)
        );
    }
    clients
}

fn repository_template() -> StackModel {
    StackModel::from_path(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")).unwrap()
}

/// The repository template with only the messages stream mapped, so other
/// mappings (and their functions) stay out of these tests.
fn messages_stream_only() -> StackModel {
    let mut model = repository_template();
    model
        .stream_mappings
        .retain(|mapping| mapping.table_logical_id == "MessagesTable" && mapping.function == "stream-processor");
    assert_eq!(model.stream_mappings.len(), 1);
    model
}

/// A stack name of its own per test, so tests sharing one server never meet.
fn unique_names() -> LocalNames {
    LocalNames::new(&format!("gw-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
}

fn messages_table(model: &StackModel, names: &LocalNames) -> String {
    model.table_name(model.table("MessagesTable").unwrap(), names).unwrap()
}

async fn put_message(clients: &Clients, table: &str, id: &str) {
    clients
        .dynamodb
        .put_item()
        .table_name(table)
        .item("message_id", AttributeValue::S(id.into()))
        .item("channel", AttributeValue::S("prices".into()))
        .item(
            "payload",
            AttributeValue::M([("price".to_owned(), AttributeValue::N("12.5".into()))].into()),
        )
        .send()
        .await
        .unwrap();
}

fn message_ids(batch: &Value) -> Vec<String> {
    batch["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            record["dynamodb"]["Keys"]["message_id"]["S"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Polls the model's stream mappings into `functions`.
async fn start_poller(
    clients: &Clients,
    model: &StackModel,
    names: &LocalNames,
    functions: &Arc<Functions>,
    options: StreamOptions,
) -> RunningPoller {
    StreamPoller::start(
        &clients.dynamodb,
        &clients.streams,
        model,
        names,
        functions.clone(),
        options,
    )
    .await
    .unwrap()
}

/// `ItemsTable` (streaming new images) with the stream-processor function and
/// `resources` (its mapping, and what the mapping needs).
fn items_model(resources: &str) -> StackModel {
    let processor = r#"
  ProcessorFunction:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: stream-processor}}
    Properties: {CodeUri: .}
"#;
    StackModel::from_yaml(&items_table_template(
        "message_id",
        "NEW_IMAGE",
        &format!("{processor}{resources}"),
    ))
    .unwrap()
}

#[tokio::test]
async fn create_tables_makes_the_templates_tables_once() {
    let clients = clients().await;
    let model = repository_template();
    let names = unique_names();

    let outcomes = create_tables(&clients.dynamodb, &model, &names).await.unwrap();
    assert_eq!(outcomes.len(), model.tables.len());
    assert!(outcomes.iter().all(|outcome| outcome.created), "{outcomes:?}");

    for table in &model.tables {
        let name = model.table_name(table, &names).unwrap();
        let described = clients
            .dynamodb
            .describe_table()
            .table_name(&name)
            .send()
            .await
            .unwrap();
        let described = described.table().unwrap();
        let keys: Vec<(String, String)> = described
            .key_schema()
            .iter()
            .map(|key| (key.attribute_name().to_owned(), key.key_type().as_str().to_owned()))
            .collect();
        let expected: Vec<(String, String)> = table
            .key_schema
            .iter()
            .map(|key| (key.attribute_name.clone(), key.key_type.clone()))
            .collect();
        assert_eq!(keys, expected, "{name}");
        let stream = described
            .stream_specification()
            .map(|spec| spec.stream_view_type().cloned());
        assert_eq!(
            stream.flatten().map(|view| view.as_str().to_owned()),
            table.stream_view_type,
            "{name}"
        );
        let ttl = clients
            .dynamodb
            .describe_time_to_live()
            .table_name(&name)
            .send()
            .await
            .unwrap();
        let ttl = ttl.time_to_live_description().unwrap();
        if let Some(attribute) = &table.ttl_attribute {
            assert_eq!(ttl.attribute_name(), Some(attribute.as_str()), "{name}");
            assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled), "{name}");
        }
    }
    let messages = messages_table(&model, &names);
    let described = clients
        .dynamodb
        .describe_table()
        .table_name(&messages)
        .send()
        .await
        .unwrap();
    let described = described.table().unwrap();
    assert_eq!(described.key_schema()[0].key_type(), &KeyType::Hash);
    assert_eq!(
        described
            .stream_specification()
            .and_then(|spec| spec.stream_view_type()),
        Some(&StreamViewType::NewImage)
    );

    let again = create_tables(&clients.dynamodb, &model, &names).await.unwrap();
    assert!(
        again.iter().all(|outcome| !outcome.created),
        "existing tables are left alone"
    );
}

#[tokio::test]
async fn the_stream_poller_delivers_a_put_item_in_lambdas_event_shape() {
    let clients = clients().await;
    let model = messages_stream_only();
    let names = unique_names();
    create_tables(&clients.dynamodb, &model, &names).await.unwrap();
    let table = messages_table(&model, &names);
    // Written before the poller starts: LATEST must not deliver it.
    put_message(&clients, &table, "m-before").await;

    let functions = Functions::new();
    let options = StreamOptions {
        poll_interval: Duration::from_millis(50),
        ..StreamOptions::default()
    };
    let poller = start_poller(&clients, &model, &names, &functions, options).await;
    put_message(&clients, &table, "m-1").await;

    let batch = functions.wait_for("stream-processor", 1).await.remove(0);
    assert_eq!(message_ids(&batch), ["m-1"]);
    let record = &batch["Records"][0];
    assert_eq!(record["eventName"], "INSERT");
    assert_eq!(record["eventVersion"], "1.1");
    assert_eq!(record["eventSource"], "aws:dynamodb");
    assert!(record["awsRegion"].is_string());
    assert!(record["eventID"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(record["eventSourceARN"].as_str().unwrap().contains(&table));
    let change = &record["dynamodb"];
    assert_eq!(change["NewImage"]["channel"], json!({"S": "prices"}));
    assert_eq!(change["NewImage"]["payload"], json!({"M": {"price": {"N": "12.5"}}}));
    assert_eq!(change["StreamViewType"], "NEW_IMAGE");
    assert!(change["SequenceNumber"].is_string());
    assert!(change["ApproximateCreationDateTime"].is_number());
    assert!(change["SizeBytes"].is_number());
    // The stream-processor decodes each record as this type.
    let decoded: aws_lambda_events::dynamodb::EventRecord = serde_json::from_value(record.clone()).unwrap();
    assert_eq!(decoded.event_name, "INSERT");
    assert_eq!(decoded.change.new_image.len(), 3);
    poller.shutdown().await;
}

#[tokio::test]
async fn the_stream_poller_resends_only_from_a_reported_batch_item_failure() {
    let clients = clients().await;
    let model = messages_stream_only();
    let names = unique_names();
    create_tables(&clients.dynamodb, &model, &names).await.unwrap();
    let table = messages_table(&model, &names);
    for id in ["m-1", "m-2", "m-3"] {
        put_message(&clients, &table, id).await;
    }

    let functions = Functions::new();
    // The first batch reports its second record (m-2) as failed.
    functions.stream_failures.lock().unwrap().push_back(1);
    let options = StreamOptions {
        poll_interval: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(50),
        starting_position: Some(StartingPosition::TrimHorizon),
        ..StreamOptions::default()
    };
    let poller = start_poller(&clients, &model, &names, &functions, options).await;
    let batches = functions.wait_for("stream-processor", 2).await;
    assert_eq!(message_ids(&batches[0]), ["m-1", "m-2", "m-3"]);
    assert_eq!(
        message_ids(&batches[1]),
        ["m-2", "m-3"],
        "only the failed record and later ones"
    );

    // The retry succeeded: nothing more is sent, and a new record comes next on its own.
    put_message(&clients, &table, "m-4").await;
    let batches = functions.wait_for("stream-processor", 3).await;
    assert_eq!(message_ids(&batches[2]), ["m-4"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(functions.events("stream-processor").len(), 3);
    poller.shutdown().await;
}

#[tokio::test]
async fn the_stream_poller_leaves_out_records_its_filter_does_not_match() {
    let clients = clients().await;
    let model = items_model(
        r#"
  PricesOnly:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      FunctionName: !Ref ProcessorFunction
      EventSourceArn: !GetAtt ItemsTable.StreamArn
      StartingPosition: LATEST
      FilterCriteria:
        Filters:
          - Pattern: '{"eventName":["INSERT"],"dynamodb":{"NewImage":{"channel":{"S":["prices"]}}}}'
"#,
    );
    let names = unique_names();
    create_tables(&clients.dynamodb, &model, &names).await.unwrap();
    let table = model.table_name(model.table("ItemsTable").unwrap(), &names).unwrap();

    let functions = Functions::new();
    let options = StreamOptions {
        poll_interval: Duration::from_millis(50),
        ..StreamOptions::default()
    };
    let poller = start_poller(&clients, &model, &names, &functions, options).await;
    clients
        .dynamodb
        .put_item()
        .table_name(&table)
        .item("message_id", AttributeValue::S("news-1".into()))
        .item("channel", AttributeValue::S("news".into()))
        .send()
        .await
        .unwrap();
    put_message(&clients, &table, "prices-1").await;
    let batches = functions.wait_for("stream-processor", 1).await;
    let delivered: Vec<String> = batches.iter().flat_map(message_ids).collect();
    assert_eq!(delivered, ["prices-1"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered: Vec<String> = functions
        .events("stream-processor")
        .iter()
        .flat_map(message_ids)
        .collect();
    assert_eq!(delivered, ["prices-1"], "the news record never reaches the function");
    poller.shutdown().await;
}

#[tokio::test]
async fn a_batch_given_up_on_is_described_on_the_mappings_on_failure_queue() {
    let clients = clients().await;
    let model = items_model(
        r#"
  FailuresQueue:
    Type: AWS::SQS::Queue
    Properties: {MessageRetentionPeriod: 1209600}
  ItemsMapping:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      FunctionName: !Ref ProcessorFunction
      EventSourceArn: !GetAtt ItemsTable.StreamArn
      StartingPosition: TRIM_HORIZON
      MaximumRetryAttempts: 1
      FunctionResponseTypes: [ReportBatchItemFailures]
      DestinationConfig:
        OnFailure:
          Destination: !GetAtt FailuresQueue.Arn
"#,
    );
    let endpoint = std::env::var(ENDPOINT_VARIABLE).unwrap();
    let names = unique_names().with_queue_endpoint(&endpoint);
    create_tables(&clients.dynamodb, &model, &names).await.unwrap();
    let queues = create_queues(&clients.sqs, &model, &names).await.unwrap();
    assert_eq!(queues.len(), 1);
    assert!(queues[0].created);
    assert!(queues[0].name.ends_with("-failures"), "{queues:?}");
    let retention = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&queues[0].url)
        .attribute_names(QueueAttributeName::MessageRetentionPeriod)
        .send()
        .await
        .unwrap();
    assert_eq!(
        retention.attributes().unwrap()[&QueueAttributeName::MessageRetentionPeriod],
        "1209600"
    );
    assert!(!create_queues(&clients.sqs, &model, &names).await.unwrap()[0].created);
    let table = model.table_name(model.table("ItemsTable").unwrap(), &names).unwrap();
    for id in ["m-1", "m-2"] {
        put_message(&clients, &table, id).await;
    }

    // The function reports the first record as failed every time: the batch
    // is tried once and retried once, then given up on.
    let functions = Functions::new();
    functions.stream_failures.lock().unwrap().extend([0, 0]);
    let options = StreamOptions {
        poll_interval: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(50),
        sqs: Some(clients.sqs.clone()),
        ..StreamOptions::default()
    };
    let poller = start_poller(&clients, &model, &names, &functions, options).await;
    let batches = functions.wait_for("stream-processor", 2).await;
    let sequences: Vec<&str> = batches[0]["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["dynamodb"]["SequenceNumber"].as_str().unwrap())
        .collect();

    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    let body = loop {
        let received = clients
            .sqs
            .receive_message()
            .queue_url(&queues[0].url)
            .send()
            .await
            .unwrap();
        if let Some(message) = received.messages().first() {
            break message.body().unwrap().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing reached the on-failure queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let record: Value = serde_json::from_str(&body).unwrap();
    let info = &record["DDBStreamBatchInfo"];
    assert_eq!(info["startSequenceNumber"], sequences[0]);
    assert_eq!(info["endSequenceNumber"], sequences[1]);
    assert_eq!(info["batchSize"], 2);
    assert!(
        info["streamArn"]
            .as_str()
            .unwrap()
            .contains(&format!("table/{table}/stream/")),
        "{info}"
    );
    assert!(info["shardId"].as_str().is_some_and(|shard| !shard.is_empty()));
    assert_eq!(record["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 2);
    // batchItemFailures are not a function error.
    assert_eq!(record["responseContext"]["statusCode"], 200);
    assert_eq!(record["responseContext"].get("functionError"), None);
    // Given up on means not retried again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(functions.events("stream-processor").len(), 2);
    poller.shutdown().await;
}
