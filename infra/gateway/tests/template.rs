//! The repository's own template.yaml, read the way the gateway reads it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use airwave_gateway::template::{EnvValue, TableName};
use airwave_gateway::{LocalNames, StackModel};
use common::items_table_template;

fn repository_template_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")
}

fn repository_template() -> StackModel {
    StackModel::from_path(repository_template_path()).unwrap()
}

#[test]
fn the_routes_go_to_the_functions_the_template_names() {
    let model = repository_template();
    assert_eq!(model.route_selection.expression, "$request.body.action");
    assert_eq!(model.route_selection.body_path, vec!["action".to_owned()]);
    let route = |key: &str| model.routes.get(key).unwrap_or_else(|| panic!("no {key} route"));
    assert_eq!(route("$connect").function(), Some("connect"));
    assert_eq!(route("$disconnect").function(), Some("disconnect"));
    assert_eq!(route("$default").function(), Some("message"));
    assert!(route("$default").has_route_response, "$default answers on the socket");
    assert!(!route("$connect").has_route_response);
    assert!(!route("$disconnect").has_route_response);
}

/// API Gateway waits at most 29 s for an integration; a function still
/// running then has its answer dropped while its writes commit (a publish the
/// client was told failed, and sends again).
#[test]
fn every_function_behind_a_route_times_out_before_api_gateway_gives_up() {
    let model = repository_template();
    let text = std::fs::read_to_string(repository_template_path()).unwrap();
    let template: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    // SAM's own default when neither the function nor Globals sets one.
    let global = template["Globals"]["Function"]["Timeout"].as_u64().unwrap_or(3);
    let routed: Vec<&str> = model
        .routes
        .values()
        .filter_map(|route| route.function_logical_id())
        .collect();
    assert!(routed.contains(&"MessageFunction"), "{routed:?}");
    for function in routed {
        let timeout = &template["Resources"][function]["Properties"]["Timeout"];
        let seconds = if timeout.is_null() {
            global
        } else {
            timeout
                .as_u64()
                .unwrap_or_else(|| panic!("{function}: Timeout {timeout:?} is not a number of seconds"))
        };
        assert!(
            seconds < 29,
            "{function} times out after {seconds} s, API Gateway gives up after 29 s"
        );
    }
}

#[test]
fn the_messages_stream_goes_to_the_stream_processor() {
    let model = repository_template();
    let mapping = model
        .stream_mappings
        .iter()
        .find(|mapping| mapping.table_logical_id == "MessagesTable")
        .expect("a mapping of the messages table's stream");
    assert_eq!(mapping.function, "stream-processor");
    assert_eq!(mapping.batch_size, 100);
    assert!(mapping.report_batch_item_failures);
    assert_eq!(mapping.starting_position.as_deref(), Some("LATEST"));
    assert_eq!(
        mapping.maximum_retry_attempts, None,
        "-1 retries until the record age limit"
    );
    assert_eq!(mapping.maximum_record_age, Some(Duration::from_secs(3600)));
    assert!(mapping.enabled);
}

#[test]
fn the_tables_are_read_with_keys_streams_and_ttl() {
    let model = repository_template();
    let names = LocalNames::default();
    let table = |id: &str| model.table(id).unwrap_or_else(|| panic!("no {id}"));

    let connections = table("ConnectionsTable");
    assert_eq!(model.table_name(connections, &names).unwrap(), "airwave-connections");
    assert_eq!(connections.key_schema[0].attribute_name, "connection_id");
    assert_eq!(connections.key_schema[0].key_type, "HASH");
    assert_eq!(connections.ttl_attribute.as_deref(), Some("expires_at"));

    let subscriptions = table("SubscriptionsTable");
    assert_eq!(
        model.table_name(subscriptions, &names).unwrap(),
        "airwave-subscriptions"
    );
    let keys: Vec<(&str, &str)> = subscriptions
        .key_schema
        .iter()
        .map(|key| (key.attribute_name.as_str(), key.key_type.as_str()))
        .collect();
    assert_eq!(keys, [("channel", "HASH"), ("connection_id", "RANGE")]);

    let messages = table("MessagesTable");
    assert_eq!(model.table_name(messages, &names).unwrap(), "airwave-messages");
    assert_eq!(messages.stream_view_type.as_deref(), Some("NEW_IMAGE"));

    for table in &model.tables {
        assert!(!table.attributes.is_empty(), "{}", table.logical_id);
        let name = model.table_name(table, &names).unwrap();
        assert!(name.starts_with("airwave-"), "{name}");
    }
}

#[test]
fn each_function_environment_names_its_tables_and_gets_local_values() {
    let model = repository_template();
    let variables = model.table_variables("message");
    assert_eq!(
        variables.get("AIRWAVE_CONNECTIONS_TABLE").map(String::as_str),
        Some("ConnectionsTable")
    );
    assert_eq!(
        variables.get("AIRWAVE_MESSAGES_TABLE").map(String::as_str),
        Some("MessagesTable")
    );
    // Globals reach functions that declare no environment of their own.
    assert_eq!(
        model
            .table_variables("connect")
            .get("AIRWAVE_CONNECTIONS_TABLE")
            .map(String::as_str),
        Some("ConnectionsTable")
    );
    let stream_processor = model.function_by_binary("stream-processor").unwrap();
    assert_eq!(
        stream_processor.environment.get("AIRWAVE_MANAGEMENT_ENDPOINT"),
        Some(&EnvValue::ApiEndpoint)
    );

    let names = LocalNames::new("dev").with_table("MessagesTable", "my-messages");
    let environment = model
        .function_environment("stream-processor", &names, "http://127.0.0.1:3001/local")
        .unwrap();
    assert_eq!(environment["AIRWAVE_CONNECTIONS_TABLE"], "dev-connections");
    assert_eq!(environment["AIRWAVE_MESSAGES_TABLE"], "my-messages");
    assert_eq!(
        environment["AIRWAVE_MANAGEMENT_ENDPOINT"],
        "http://127.0.0.1:3001/local"
    );
    assert_eq!(
        environment["AIRWAVE_CONNECTION_TTL_SECONDS"], "7260",
        "a parameter's default"
    );
}

#[test]
fn table_names_follow_the_documented_rule() {
    let model = StackModel::from_yaml(
        r#"
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: {ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.body.type}
  RateLimitsTable:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{AttributeName: k, AttributeType: S}]
      KeySchema: [{AttributeName: k, KeyType: HASH}]
  NamedTable:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: fixed-name
      AttributeDefinitions: [{AttributeName: k, AttributeType: S}]
      KeySchema: [{AttributeName: k, KeyType: HASH}]
  SubTable:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "${AWS::StackName}-admission"
      AttributeDefinitions: [{AttributeName: k, AttributeType: N}]
      KeySchema: [{AttributeName: k, KeyType: HASH}]
      GlobalSecondaryIndexes:
        - IndexName: by-k
          KeySchema: [{AttributeName: k, KeyType: HASH}]
          Projection: {ProjectionType: INCLUDE, NonKeyAttributes: [a, b]}
"#,
    )
    .unwrap();
    let names = LocalNames::default();
    let name = |id: &str| model.table_name(model.table(id).unwrap(), &names).unwrap();
    assert_eq!(name("RateLimitsTable"), "airwave-rate-limits");
    assert_eq!(name("NamedTable"), "fixed-name");
    assert_eq!(name("SubTable"), "airwave-admission");
    let sub = model.table("SubTable").unwrap();
    assert_eq!(sub.name, TableName::Sub("${AWS::StackName}-admission".into()));
    assert_eq!(sub.global_secondary_indexes[0].projection_type, "INCLUDE");
    assert_eq!(sub.global_secondary_indexes[0].non_key_attributes, ["a", "b"]);
    assert!(model.routes.is_empty());
}

#[test]
fn unsupported_templates_are_refused_with_a_clear_reason() {
    let error = StackModel::from_yaml(
        "Resources:\n  Api:\n    Type: AWS::ApiGatewayV2::Api\n    Properties: {ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.header.x}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("$request.header.x") && error.contains("$request.body.<field>"),
        "{error}"
    );

    let error = StackModel::from_yaml("Resources: {}\n").unwrap_err().to_string();
    assert!(error.contains("WEBSOCKET"), "{error}");

    let error = StackModel::from_yaml("Resources: [").unwrap_err().to_string();
    assert!(error.contains("YAML"), "{error}");
}

/// Two mappings of `ItemsTable`'s stream: a reaper's, filtered, and an
/// audit function's, declared as a SAM event.
fn stream_template() -> String {
    items_table_template(
        "id",
        "NEW_AND_OLD_IMAGES",
        r#"
  ReaperFunction:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: reaper}}
    Properties: {CodeUri: .}
  ReaperMapping:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      FunctionName: !Ref ReaperFunction
      EventSourceArn: !GetAtt ItemsTable.StreamArn
      StartingPosition: TRIM_HORIZON
      BatchSize: 10
      MaximumRetryAttempts: 2
      FilterCriteria:
        Filters:
          - Pattern: '{"eventName":["REMOVE"],"userIdentity":{"type":["Service"]}}'
  AuditFunction:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: audit}}
    Properties:
      CodeUri: .
      Events:
        Changes:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt ItemsTable.StreamArn
            StartingPosition: LATEST
"#,
    )
}

#[test]
fn stream_mappings_are_read_with_their_filters_and_from_sam_events() {
    let model = StackModel::from_yaml(&stream_template()).unwrap();
    let reaper = model.stream_mappings.iter().find(|m| m.function == "reaper").unwrap();
    assert_eq!(reaper.table_logical_id, "ItemsTable");
    assert_eq!(reaper.batch_size, 10);
    assert_eq!(reaper.maximum_retry_attempts, Some(2));
    assert_eq!(reaper.starting_position.as_deref(), Some("TRIM_HORIZON"));
    assert!(!reaper.report_batch_item_failures);
    assert_eq!(reaper.filter_patterns.len(), 1);
    assert_eq!(reaper.filter_patterns[0]["eventName"], serde_json::json!(["REMOVE"]));

    let audit = model.stream_mappings.iter().find(|m| m.function == "audit").unwrap();
    assert_eq!(audit.table_logical_id, "ItemsTable");
    assert_eq!(audit.batch_size, 100, "Lambda's default");
    assert!(audit.filter_patterns.is_empty());
}

#[test]
fn an_unsupported_filter_is_refused() {
    let template = stream_template().replace(r#"{"type":["Service"]}"#, r#"{"type":[{"wildcard":"S*"}]}"#);
    let error = StackModel::from_yaml(&template).unwrap_err().to_string();
    assert!(error.contains("ReaperMapping") && error.contains("wildcard"), "{error}");
}

#[test]
fn every_stream_mapping_of_the_repository_template_has_a_function_and_a_table() {
    let model = repository_template();
    for mapping in &model.stream_mappings {
        assert!(
            model.table(&mapping.table_logical_id).is_some(),
            "{}",
            mapping.logical_id
        );
        assert!(
            model.function_by_binary(&mapping.function).is_some(),
            "{}",
            mapping.logical_id
        );
        assert!(
            model
                .table(&mapping.table_logical_id)
                .unwrap()
                .stream_view_type
                .is_some(),
            "{} reads a table without a stream",
            mapping.logical_id
        );
    }
}

#[test]
fn the_failure_queue_is_read_with_its_url_and_both_mappings_fail_to_it() {
    let model = repository_template();
    let queue = model.queue("StreamFailureQueue").expect("the template's failure queue");
    assert_eq!(queue.attributes["MessageRetentionPeriod"], "1209600");
    assert!(!queue.fifo());
    for mapping in &model.stream_mappings {
        assert_eq!(
            mapping.on_failure_queue.as_deref(),
            Some("StreamFailureQueue"),
            "{}",
            mapping.logical_id
        );
    }
    let processor = model.function_by_binary("stream-processor").unwrap();
    assert_eq!(
        processor.environment.get("AIRWAVE_FAILURE_QUEUE_URL"),
        Some(&EnvValue::Queue("StreamFailureQueue".into()))
    );

    // In SQS's own form by default (what a deploy gives, so the function starts
    // with it anywhere), and on the local server once it is named.
    let names = LocalNames::new("dev");
    let environment = model
        .function_environment("stream-processor", &names, "http://127.0.0.1:3001/local")
        .unwrap();
    assert_eq!(
        environment["AIRWAVE_FAILURE_QUEUE_URL"],
        "https://sqs.us-east-1.amazonaws.com/000000000000/dev-stream-failure"
    );
    let names = names
        .with_queue_endpoint("http://127.0.0.1:8000/")
        .with_queue("StreamFailureQueue", "my-failures");
    let environment = model
        .function_environment("stream-processor", &names, "http://127.0.0.1:3001/local")
        .unwrap();
    assert_eq!(
        environment["AIRWAVE_FAILURE_QUEUE_URL"],
        "http://127.0.0.1:8000/000000000000/my-failures"
    );
}

#[test]
fn queue_names_follow_the_table_rule() {
    let model = StackModel::from_yaml(
        r#"
Parameters:
  Retention: {Type: Number, Default: 600}
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: {ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.body.type}
  DeadLettersQueue:
    Type: AWS::SQS::Queue
    Properties: {MessageRetentionPeriod: !Ref Retention}
  OrderedQueue:
    Type: AWS::SQS::Queue
    Properties: {FifoQueue: true}
  NamedQueue:
    Type: AWS::SQS::Queue
    Properties: {QueueName: !Sub "${AWS::StackName}-named"}
"#,
    )
    .unwrap();
    let names = LocalNames::new("stack");
    let name = |id: &str| model.queue_name(model.queue(id).unwrap(), &names).unwrap();
    assert_eq!(name("DeadLettersQueue"), "stack-dead-letters");
    assert_eq!(name("OrderedQueue"), "stack-ordered.fifo");
    assert_eq!(name("NamedQueue"), "stack-named");
    assert_eq!(
        model.queue("DeadLettersQueue").unwrap().attributes["MessageRetentionPeriod"],
        "600"
    );
}
