//! The template's HTTP API as the local gateway serves it: API Gateway's
//! payload format 2.0 event in, the function's answer out, the CORS
//! preflight, and the stage's throttle.

use std::sync::{Arc, Mutex};

use airwave_gateway::{Gateway, GatewayOptions, InvokeFuture, Invoker, StackModel};
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use serde_json::{json, Value};

const TEMPLATE: &str = r#"
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties:
      ProtocolType: WEBSOCKET
      RouteSelectionExpression: "$request.body.action"
  HttpApi:
    Type: AWS::ApiGatewayV2::Api
    Properties:
      ProtocolType: HTTP
      CorsConfiguration:
        AllowOrigins: ["https://app.example.com"]
        AllowMethods: [POST]
        AllowHeaders: [authorization, content-type]
        MaxAge: 600
  HttpFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: http
    Properties:
      CodeUri: .
  HttpIntegration:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref HttpApi
      IntegrationType: AWS_PROXY
      PayloadFormatVersion: "2.0"
      IntegrationUri: !Sub "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${HttpFunction.Alias}/invocations"
  EchoRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref HttpApi
      RouteKey: POST /v1/echo
      AuthorizationType: NONE
      Target: !Sub "integrations/${HttpIntegration}"
  HttpStage:
    Type: AWS::ApiGatewayV2::Stage
    Properties:
      ApiId: !Ref HttpApi
      StageName: $default
      AutoDeploy: true
      DefaultRouteSettings:
        ThrottlingBurstLimit: 3
        ThrottlingRateLimit: 1
"#;

/// Records each event; answers 201 with a header, or fails on a body of `fail`.
#[derive(Default)]
struct Echo {
    events: Mutex<Vec<Value>>,
}

impl Invoker for Echo {
    fn invoke<'a>(&'a self, _function: &'a str, event: Value) -> InvokeFuture<'a> {
        Box::pin(async move {
            self.events.lock().unwrap().push(event.clone());
            if event["body"] == "fail" {
                return Err(airwave_gateway::GatewayError::FunctionFailed {
                    function: "http".into(),
                    status: 500,
                    message: "failed on purpose".into(),
                });
            }
            Ok(json!({"statusCode": 201, "headers": {"x-echo": "yes"}, "body": event["body"]}))
        })
    }
}

async fn start() -> (airwave_gateway::RunningGateway, Arc<Echo>) {
    let model = StackModel::from_yaml(TEMPLATE).expect("the template");
    let echo = Arc::new(Echo::default());
    let gateway = Gateway::start(GatewayOptions::default(), model, echo.clone())
        .await
        .expect("the gateway starts");
    (gateway, echo)
}

#[tokio::test]
async fn a_request_reaches_the_function_as_a_payload_2_event_and_its_answer_comes_back() {
    let (gateway, echo) = start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/echo?page=2", gateway.http_url()))
        .header("Authorization", "Key k")
        .header("X-Repeated", "a")
        .header("X-Repeated", "b")
        .body(r#"{"hello":"world"}"#)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.headers()["x-echo"], "yes");
    assert_eq!(response.text().await.unwrap(), r#"{"hello":"world"}"#);

    let event = echo.events.lock().unwrap()[0].clone();
    let request: ApiGatewayV2httpRequest = serde_json::from_value(event.clone()).expect("the handler's event type");
    assert_eq!(event["version"], "2.0");
    assert_eq!(request.route_key.as_deref(), Some("POST /v1/echo"));
    assert_eq!(request.raw_path.as_deref(), Some("/v1/echo"));
    assert_eq!(request.raw_query_string.as_deref(), Some("page=2"));
    assert_eq!(request.query_string_parameters.first("page"), Some("2"));
    assert_eq!(request.headers["authorization"], "Key k");
    assert_eq!(
        request.headers["x-repeated"], "a,b",
        "repeated headers joined with commas"
    );
    assert_eq!(request.body.as_deref(), Some(r#"{"hello":"world"}"#));
    assert!(!request.is_base64_encoded);
    let context = &request.request_context;
    assert_eq!(context.route_key.as_deref(), Some("POST /v1/echo"));
    assert_eq!(context.stage.as_deref(), Some("$default"));
    assert_eq!(context.http.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(context.http.method.as_str(), "POST");
    assert!(context.request_id.is_some() && context.time_epoch > 0);
    assert_eq!(gateway.http_requests(), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn preflights_unrouted_methods_and_failures_are_answered_as_api_gateway_does() {
    let (gateway, _) = start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/echo", gateway.http_url());
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(preflight.headers()["access-control-max-age"], "600");
    let stranger = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!stranger.headers().contains_key("access-control-allow-origin"));
    let get = client.get(&url).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 404);
    let failed = client.post(&url).body("fail").send().await.unwrap();
    assert_eq!(failed.status().as_u16(), 500);
    assert_eq!(failed.text().await.unwrap(), r#"{"message":"Internal Server Error"}"#);
    gateway.shutdown().await;
}

#[tokio::test]
async fn past_the_stages_throttle_requests_are_refused_429() {
    // A burst of 3, then 1 a second: 6 requests at once cannot all pass.
    let (gateway, echo) = start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/echo", gateway.http_url());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(client.post(&url).body("x").send().await.unwrap().status().as_u16());
    }
    let passed = statuses.iter().filter(|status| **status == 201).count();
    assert!((3..=4).contains(&passed), "{statuses:?}");
    assert!(
        statuses.iter().all(|status| *status == 201 || *status == 429),
        "{statuses:?}"
    );
    assert_eq!(
        echo.events.lock().unwrap().len(),
        passed,
        "a throttled request never reaches the function"
    );
    gateway.shutdown().await;
}
