//! What the gateway tests share: an in-process invoker that records every
//! event and answers like the real functions, a template with custom routes,
//! a template with a streamed table, and WebSocket client helpers.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airwave_gateway::{Gateway, GatewayError, GatewayOptions, InvokeFuture, Invoker, RunningGateway, StackModel};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A generous guard against hangs; no test relies on timing beyond it.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Records every invocation and answers like Airwave's functions would.
#[derive(Default)]
pub struct Functions {
    calls: Mutex<Vec<(String, Value)>>,
    /// For each coming stream-processor batch, the index of the record to
    /// report in `batchItemFailures`, as the real one does when a record must
    /// be retried; every record succeeds once these run out.
    pub stream_failures: Mutex<VecDeque<usize>>,
}

impl Functions {
    pub fn new() -> Arc<Self> {
        Arc::new(Functions::default())
    }

    /// Every event `function` received so far, in order.
    pub fn events(&self, function: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _)| name == function)
            .map(|(_, event)| event.clone())
            .collect()
    }

    /// Waits until `function` received at least `count` events.
    pub async fn wait_for(&self, function: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let events = self.events(function);
            if events.len() >= count {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{function} got {} events, expected {count}",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn answer(&self, function: &str, event: &Value) -> Result<Value, GatewayError> {
        let failure = || GatewayError::FunctionFailed {
            function: function.to_owned(),
            status: 500,
            message: r#"{"errorType":"Test","errorMessage":"asked to fail"}"#.to_owned(),
        };
        match function {
            // Refuses with the status in `?refuse=`, fails with `?fail`, and
            // echoes a requested subprotocol like a real $connect would.
            "connect" => {
                let query = &event["queryStringParameters"];
                if let Some(status) = query["refuse"].as_str() {
                    let status: u16 = status.parse().unwrap();
                    return Ok(json!({"statusCode": status, "body": format!("{{\"refused\":{status}}}")}));
                }
                if query.get("fail").is_some() {
                    return Err(failure());
                }
                let mut answer = json!({"statusCode": 200, "headers": {}});
                if let Some(protocol) = event["headers"]["sec-websocket-protocol"].as_str() {
                    answer["headers"]["Sec-WebSocket-Protocol"] = protocol.split(',').next().unwrap().trim().into();
                }
                Ok(answer)
            }
            "disconnect" => Ok(json!({"statusCode": 200})),
            "message" | "echo" | "silent" => {
                let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap_or(Value::Null);
                if body["action"] == "fail" {
                    return Err(failure());
                }
                let reply = json!({
                    "function": function,
                    "route": event["requestContext"]["routeKey"],
                    "body": event["body"],
                });
                Ok(json!({"statusCode": 200, "body": reply.to_string()}))
            }
            "stream-processor" => {
                let Some(index) = self.stream_failures.lock().unwrap().pop_front() else {
                    return Ok(json!({"batchItemFailures": []}));
                };
                let sequence = &event["Records"][index]["dynamodb"]["SequenceNumber"];
                Ok(json!({"batchItemFailures": [{"itemIdentifier": sequence}]}))
            }
            other => Err(GatewayError::Invoke {
                function: other.to_owned(),
                message: "no such function in the test".to_owned(),
            }),
        }
    }
}

impl Invoker for Functions {
    fn invoke<'a>(&'a self, function: &'a str, event: Value) -> InvokeFuture<'a> {
        Box::pin(async move {
            // A `$connect` with `?slow=ms` takes that long, like a cold start.
            let slow = event["queryStringParameters"]["slow"]
                .as_str()
                .and_then(|ms| ms.parse().ok());
            if let (Some(ms), "connect") = (slow, function) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            self.calls.lock().unwrap().push((function.to_owned(), event.clone()));
            self.answer(function, &event)
        })
    }
}

fn route(name: &str, key: &str, binary: &str, response: bool) -> String {
    let mut yaml = format!(
        r#"
  {name}Function:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: {binary}
    Properties:
      CodeUri: .
  {name}Integration:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub "arn:${{AWS::Partition}}:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{{name}Function.Arn}}/invocations"
  {name}Route:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: "{key}"
      Target: !Join ["/", ["integrations", !Ref {name}Integration]]
"#
    );
    if response {
        yaml.push_str(&format!(
            r#"
  {name}RouteResponse:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties:
      ApiId: !Ref Api
      RouteId: !Ref {name}Route
      RouteResponseKey: $default
"#
        ));
    }
    yaml
}

/// The real template's routes plus two custom ones: `echo` (with a route
/// response) and `silent` (without).
pub fn test_model() -> StackModel {
    let mut yaml = String::from(
        r#"
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties:
      Name: test
      ProtocolType: WEBSOCKET
      RouteSelectionExpression: "$request.body.action"
"#,
    );
    yaml.push_str(&route("Connect", "$connect", "connect", false));
    yaml.push_str(&route("Disconnect", "$disconnect", "disconnect", false));
    yaml.push_str(&route("Default", "$default", "message", true));
    yaml.push_str(&route("Echo", "echo", "echo", true));
    yaml.push_str(&route("Silent", "silent", "silent", false));
    StackModel::from_yaml(&yaml).unwrap()
}

/// A template with the WebSocket API and one table, `ItemsTable`, keyed by
/// the string attribute `key`, with a stream of `view_type`; `resources` are
/// the template's other resources.
pub fn items_table_template(key: &str, view_type: &str, resources: &str) -> String {
    format!(
        r#"
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: {{ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.body.action}}
  ItemsTable:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{{AttributeName: {key}, AttributeType: S}}]
      KeySchema: [{{AttributeName: {key}, KeyType: HASH}}]
      StreamSpecification: {{StreamViewType: {view_type}}}
{resources}"#
    )
}

pub async fn start(options: GatewayOptions) -> (RunningGateway, Arc<Functions>) {
    let functions = Functions::new();
    let gateway = Gateway::start(options, test_model(), functions.clone()).await.unwrap();
    (gateway, functions)
}

pub async fn connect(url: &str) -> Client {
    let request = url.into_client_request().unwrap();
    let (client, response) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 101);
    client
}

/// The next text frame, skipping control frames.
pub async fn next_text(client: &mut Client) -> String {
    loop {
        match tokio::time::timeout(PATIENCE, client.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame and returns it, then reads on so the
/// client's answer to it goes out, as a browser's would.
pub async fn next_close(client: &mut Client) -> Option<CloseFrame> {
    loop {
        match tokio::time::timeout(PATIENCE, client.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => {
                finish(client).await;
                return frame;
            }
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Reads until the connection ends.
pub async fn finish(client: &mut Client) {
    let _ = tokio::time::timeout(PATIENCE, async { while let Some(Ok(_)) = client.next().await {} }).await;
}

/// Closes from the client side and waits for the server's answer.
pub async fn close(mut client: Client) {
    client.close(None).await.unwrap();
    finish(&mut client).await;
}

/// The connection id the gateway gave the latest `$connect`.
pub async fn last_connection_id(functions: &Functions, connects: usize) -> String {
    let events = functions.wait_for("connect", connects).await;
    events[connects - 1]["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits for the connection count to reach `count`.
pub async fn wait_for_count(gateway: &RunningGateway, count: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while gateway.connection_count() != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection count stayed {}",
            gateway.connection_count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
