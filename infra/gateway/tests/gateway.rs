//! The gateway over real sockets: handshakes, events, routing, the Management
//! API, limits and every way a connection can end.

mod common;

use std::time::Duration;

use airwave_gateway::GatewayOptions;
use common::{close, connect, finish, last_connection_id, next_close, next_text, start, wait_for_count, PATIENCE};
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

fn management_client(endpoint: &str) -> aws_sdk_apigatewaymanagement::Client {
    use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "test"))
        .build();
    aws_sdk_apigatewaymanagement::Client::from_conf(config)
}

/// Lets stray invocations arrive before asserting that none did.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_refused_connect_refuses_the_handshake_with_the_functions_status() {
    let (gateway, functions) = start(GatewayOptions::default()).await;
    for (query, status) in [("refuse=401", 401), ("refuse=429", 429), ("fail=1", 500)] {
        let url = format!("{}?{query}", gateway.ws_url());
        let error = tokio_tungstenite::connect_async(url).await.unwrap_err();
        let WsError::Http(response) = error else {
            panic!("expected an HTTP refusal, got {error:?}");
        };
        assert_eq!(response.status().as_u16(), status, "{query}");
        let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
        if status == 500 {
            assert!(body.contains("Internal server error"), "{body}");
        } else {
            assert_eq!(body, format!("{{\"refused\":{status}}}"));
        }
    }
    settle().await;
    assert_eq!(functions.events("connect").len(), 3);
    assert!(
        functions.events("disconnect").is_empty(),
        "a refused connection never disconnects"
    );
    assert_eq!(gateway.connection_count(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn connect_and_disconnect_events_have_the_api_gateway_shape() {
    let (gateway, functions) = start(GatewayOptions::default()).await;
    let mut request = format!("{}?room=lobby&tag=a&tag=b", gateway.ws_url())
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("user-agent", "airwave-test/1".parse().unwrap());
    headers.insert("x-custom", "yes".parse().unwrap());
    // A client cannot pick its source IP with a header.
    headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    headers.insert("sec-websocket-protocol", "airwave.v1".parse().unwrap());
    let (mut client, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["sec-websocket-protocol"], "airwave.v1");

    let connect = &functions.wait_for("connect", 1).await[0];
    let context = &connect["requestContext"];
    assert_eq!(context["routeKey"], "$connect");
    assert_eq!(context["eventType"], "CONNECT");
    assert_eq!(context["messageDirection"], "IN");
    assert_eq!(context["stage"], "local");
    assert_eq!(context["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(context["identity"]["userAgent"], "airwave-test/1");
    let connection_id = context["connectionId"].as_str().unwrap().to_owned();
    assert_eq!(connection_id.len(), 16);
    assert!(context["connectedAt"].as_i64().unwrap() > 1_600_000_000_000);
    assert!(context["requestTimeEpoch"].as_i64().unwrap() >= context["connectedAt"].as_i64().unwrap());
    assert!(context["requestId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(context["extendedRequestId"], context["requestId"]);
    assert!(context["requestTime"].as_str().unwrap().ends_with(" +0000"));
    assert_eq!(context["domainName"], gateway.local_addr().to_string());
    assert!(context["apiId"].is_string());
    assert_eq!(connect["headers"]["x-custom"], "yes");
    assert_eq!(connect["multiValueHeaders"]["x-custom"], json!(["yes"]));
    assert_eq!(connect["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(connect["queryStringParameters"]["room"], "lobby");
    assert_eq!(connect["queryStringParameters"]["tag"], "b");
    assert_eq!(connect["multiValueQueryStringParameters"]["tag"], json!(["a", "b"]));
    assert_eq!(connect["isBase64Encoded"], false);
    wait_for_count(&gateway, 1).await;

    client
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    let disconnect = &functions.wait_for("disconnect", 1).await[0];
    let context = &disconnect["requestContext"];
    assert_eq!(context["routeKey"], "$disconnect");
    assert_eq!(context["eventType"], "DISCONNECT");
    assert_eq!(context["connectionId"], connection_id.as_str());
    assert_eq!(context["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(context["disconnectStatusCode"], 1000);
    assert_eq!(context["disconnectReason"], "bye");
    settle().await;
    assert_eq!(functions.events("disconnect").len(), 1);
    assert_eq!(gateway.connection_count(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_events_deserialize_into_the_types_the_handlers_use() {
    use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
    let (gateway, functions) = start(GatewayOptions::default()).await;
    let mut client = connect(&format!("{}?token=abc", gateway.ws_url())).await;
    client.send(Message::text(r#"{"action":"ping"}"#)).await.unwrap();
    next_text(&mut client).await;
    close(client).await;
    functions.wait_for("disconnect", 1).await;

    let parse = |event: Value| -> ApiGatewayWebsocketProxyRequest { serde_json::from_value(event).unwrap() };
    let connect = parse(functions.events("connect").remove(0));
    let message = parse(functions.events("message").remove(0));
    let disconnect = parse(functions.events("disconnect").remove(0));
    let connection_id = connect.request_context.connection_id.clone().unwrap();
    assert_eq!(connect.request_context.route_key.as_deref(), Some("$connect"));
    assert_eq!(connect.request_context.identity.source_ip.as_deref(), Some("127.0.0.1"));
    assert!(connect.request_context.connected_at > 0);
    assert_eq!(connect.query_string_parameters.first("token"), Some("abc"));
    assert_eq!(message.request_context.event_type.as_deref(), Some("MESSAGE"));
    assert_eq!(message.body.as_deref(), Some(r#"{"action":"ping"}"#));
    assert_eq!(
        message.request_context.connection_id.as_deref(),
        Some(connection_id.as_str())
    );
    assert_eq!(disconnect.request_context.disconnect_status_code, Some(1005));
    assert_eq!(
        disconnect.request_context.connection_id.as_deref(),
        Some(connection_id.as_str())
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn messages_are_routed_by_the_selection_expression_and_answered_by_route_responses() {
    let (gateway, functions) = start(GatewayOptions::default()).await;
    let mut client = connect(&gateway.ws_url()).await;

    let sent = [
        r#"{"action":"echo","n":1}"#,
        r#"{"action":"nope"}"#,
        "not json at all",
        r#"{"other":true}"#,
        r#"{"action":"$connect"}"#,
        r#"{"action":"silent"}"#,
        r#"{"action":"ping"}"#,
    ];
    for text in sent {
        client.send(Message::text(text)).await.unwrap();
    }
    // Six replies: `silent` has no route response, so it answers nothing.
    let mut replies = Vec::new();
    for _ in 0..6 {
        let reply: Value = serde_json::from_str(&next_text(&mut client).await).unwrap();
        replies.push((
            reply["route"].as_str().unwrap().to_owned(),
            reply["body"].as_str().unwrap().to_owned(),
        ));
    }
    let expected = [
        ("echo", sent[0]),
        ("$default", sent[1]),
        ("$default", sent[2]),
        ("$default", sent[3]),
        ("$default", sent[4]),
        ("$default", sent[6]),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(r, b)| (r.to_string(), b.to_string())).collect();
    assert_eq!(replies, expected, "routes and order");

    let silent = functions.wait_for("silent", 1).await;
    assert_eq!(silent[0]["body"], sent[5]);
    assert_eq!(silent[0]["requestContext"]["routeKey"], "silent");
    let messages = functions.events("message");
    let message = &messages[0];
    let context = &message["requestContext"];
    assert_eq!(context["eventType"], "MESSAGE");
    assert_eq!(context["routeKey"], "$default");
    assert!(context["messageId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(context["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(message["isBase64Encoded"], false);
    let connection_id = last_connection_id(&functions, 1).await;
    assert!(messages
        .iter()
        .all(|event| event["requestContext"]["connectionId"] == connection_id.as_str()));
    close(client).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_failing_route_answers_internal_server_error_and_keeps_the_connection() {
    let (gateway, functions) = start(GatewayOptions::default()).await;
    let mut client = connect(&gateway.ws_url()).await;
    client.send(Message::text(r#"{"action":"fail"}"#)).await.unwrap();
    let reply: Value = serde_json::from_str(&next_text(&mut client).await).unwrap();
    assert_eq!(reply["message"], "Internal server error");
    assert_eq!(reply["connectionId"], last_connection_id(&functions, 1).await.as_str());
    assert!(reply["requestId"].is_string());
    client.send(Message::text(r#"{"action":"ping"}"#)).await.unwrap();
    let reply: Value = serde_json::from_str(&next_text(&mut client).await).unwrap();
    assert_eq!(reply["route"], "$default");
    close(client).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_management_api_posts_gets_and_deletes_connections() {
    let (gateway, functions) = start(GatewayOptions::default()).await;
    let mut client = connect(&gateway.ws_url()).await;
    let connection_id = last_connection_id(&functions, 1).await;
    let sdk = management_client(&gateway.management_endpoint());

    sdk.post_to_connection()
        .connection_id(&connection_id)
        .data(aws_sdk_apigatewaymanagement::primitives::Blob::new(
            r#"{"type":"message"}"#,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(next_text(&mut client).await, r#"{"type":"message"}"#);

    // Without the stage prefix too.
    let http = reqwest::Client::new();
    let bare = format!("http://{}/@connections/{connection_id}", gateway.local_addr());
    let answer = http.post(&bare).body("bare").send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(next_text(&mut client).await, "bare");

    let described = sdk.get_connection().connection_id(&connection_id).send().await.unwrap();
    assert_eq!(
        described.identity().and_then(|identity| identity.source_ip()),
        Some("127.0.0.1")
    );
    assert!(described.connected_at().is_some());
    assert!(described.last_active_at().is_some());

    let gone = sdk
        .post_to_connection()
        .connection_id("AAAAAAAAAAAAAAA=")
        .data(aws_sdk_apigatewaymanagement::primitives::Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert!(gone.into_service_error().is_gone_exception());
    let unknown = format!("{}/@connections/AAAAAAAAAAAAAAA=", gateway.management_endpoint());
    let answer = http.post(&unknown).body("x").send().await.unwrap();
    assert_eq!(answer.status(), 410);
    assert_eq!(answer.headers()["x-amzn-errortype"], "GoneException");
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert!(body["message"].is_string());

    let too_large = sdk
        .post_to_connection()
        .connection_id(&connection_id)
        .data(aws_sdk_apigatewaymanagement::primitives::Blob::new(vec![
            b'x';
            128 * 1024 + 1
        ]))
        .send()
        .await
        .unwrap_err();
    assert!(too_large.into_service_error().is_payload_too_large_exception());
    let answer = http
        .post(format!(
            "{}/@connections/{connection_id}",
            gateway.management_endpoint()
        ))
        .body(vec![b'x'; 200 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);
    assert_eq!(answer.headers()["x-amzn-errortype"], "PayloadTooLargeException");

    sdk.delete_connection()
        .connection_id(&connection_id)
        .send()
        .await
        .unwrap();
    let frame = next_close(&mut client).await.unwrap();
    assert_eq!(frame.code, CloseCode::Normal);
    let disconnect = &functions.wait_for("disconnect", 1).await[0];
    assert_eq!(disconnect["requestContext"]["connectionId"], connection_id.as_str());
    let deleted_again = sdk
        .delete_connection()
        .connection_id(&connection_id)
        .send()
        .await
        .unwrap_err();
    assert!(deleted_again.into_service_error().is_gone_exception());
    let get_gone = sdk
        .get_connection()
        .connection_id(&connection_id)
        .send()
        .await
        .unwrap_err();
    assert!(get_gone.into_service_error().is_gone_exception());
    settle().await;
    assert_eq!(functions.events("disconnect").len(), 1, "$disconnect exactly once");
    assert_eq!(gateway.connection_count(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn management_requests_beyond_the_accounts_quota_answer_429() {
    let options = GatewayOptions {
        management_quota: Some(airwave_local::Quota {
            per_second: 20.0,
            burst: 10.0,
        }),
        ..GatewayOptions::default()
    };
    let (gateway, functions) = start(options).await;
    let mut client = connect(&gateway.ws_url()).await;
    let connection_id = last_connection_id(&functions, 1).await;
    let http = reqwest::Client::new();
    let url = format!("{}/@connections/{connection_id}", gateway.management_endpoint());
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let answer = http.post(&url).body("x").send().await.unwrap();
        statuses.push(answer.status().as_u16());
        if answer.status() == 429 {
            assert_eq!(answer.headers()["x-amzn-errortype"], "LimitExceededException");
        }
    }
    let delivered = statuses.iter().filter(|status| **status == 200).count();
    // The burst of 10, and about one more per 50 ms the loop took.
    assert!((10..=14).contains(&delivered), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    for _ in 0..delivered {
        assert_eq!(next_text(&mut client).await, "x");
    }
    // The bucket refills at its rate: a request half a second later passes.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(http.post(&url).body("y").send().await.unwrap().status(), 200);
    assert_eq!(next_text(&mut client).await, "y");
    close(client).await;
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let options = GatewayOptions {
        max_frame_bytes: 1024,
        max_message_bytes: 4096,
        ..GatewayOptions::default()
    };
    let (gateway, functions) = start(options).await;
    let mut client = connect(&gateway.ws_url()).await;
    client.send(Message::text("x".repeat(2048))).await.unwrap();
    let frame = next_close(&mut client).await.unwrap();
    assert_eq!(frame.code, CloseCode::Size);
    let disconnect = &functions.wait_for("disconnect", 1).await[0];
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1009);
    settle().await;
    assert!(
        functions.events("message").is_empty(),
        "the oversized message is not routed"
    );
    assert_eq!(functions.events("disconnect").len(), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_message_over_the_limit_in_small_frames_closes_with_1009() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let options = GatewayOptions {
        max_frame_bytes: 1024,
        max_message_bytes: 4096,
        ..GatewayOptions::default()
    };
    let (gateway, functions) = start(options).await;
    let mut client = connect(&gateway.ws_url()).await;
    // Five fragments of 1000 bytes: each frame is allowed, the message is not.
    for index in 0..5 {
        let opcode = if index == 0 { Data::Text } else { Data::Continue };
        let frame = Frame::message(vec![b'x'; 1000], OpCode::Data(opcode), index == 4);
        if client.send(Message::Frame(frame)).await.is_err() {
            break;
        }
    }
    let frame = next_close(&mut client).await.unwrap();
    assert_eq!(frame.code, CloseCode::Size);
    let disconnect = &functions.wait_for("disconnect", 1).await[0];
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1009);
    assert!(functions.events("message").is_empty());
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let (gateway, functions) = start(GatewayOptions::default()).await;
    let mut client = connect(&gateway.ws_url()).await;
    client.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let frame = next_close(&mut client).await.unwrap();
    assert_eq!(frame.code, CloseCode::Unsupported);
    let disconnect = &functions.wait_for("disconnect", 1).await[0];
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1003);
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_disconnected() {
    let options = GatewayOptions {
        idle_timeout: Duration::from_millis(300),
        ..GatewayOptions::default()
    };
    let (gateway, functions) = start(options).await;
    let mut client = connect(&gateway.ws_url()).await;
    let frame = next_close(&mut client).await.unwrap();
    assert_eq!(frame.code, CloseCode::Away);
    let disconnect = &functions.wait_for("disconnect", 1).await[0];
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1001);
    settle().await;
    assert_eq!(functions.events("disconnect").len(), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_connection_is_closed_at_its_maximum_duration_even_when_active() {
    let options = GatewayOptions {
        max_connection_duration: Duration::from_millis(600),
        ..GatewayOptions::default()
    };
    let (gateway, functions) = start(options).await;
    let mut client = connect(&gateway.ws_url()).await;
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            client.send(Message::text(r#"{"action":"ping"}"#)).await.ok();
            match tokio::time::timeout(Duration::from_millis(100), futures::StreamExt::next(&mut client)).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    finish(&mut client).await;
                    return frame;
                }
                Ok(None) | Ok(Some(Err(_))) => return None,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed.map(|frame| frame.code), Some(CloseCode::Away));
    let disconnect = &functions.wait_for("disconnect", 1).await[0];
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1001);
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_abrupt_drop_fires_disconnect_exactly_once() {
    let (gateway, functions) = start(GatewayOptions::default()).await;
    let client = connect(&gateway.ws_url()).await;
    let connection_id = last_connection_id(&functions, 1).await;
    wait_for_count(&gateway, 1).await;
    // No close frame: the TCP connection just goes away.
    drop(client);
    let disconnect = &functions.wait_for("disconnect", 1).await[0];
    assert_eq!(disconnect["requestContext"]["connectionId"], connection_id.as_str());
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1006);
    wait_for_count(&gateway, 0).await;
    let sdk = management_client(&gateway.management_endpoint());
    let gone = sdk
        .delete_connection()
        .connection_id(&connection_id)
        .send()
        .await
        .unwrap_err();
    assert!(gone.into_service_error().is_gone_exception());
    settle().await;
    assert_eq!(functions.events("disconnect").len(), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_client_that_leaves_while_connect_runs_still_gets_its_disconnect() {
    let (gateway, functions) = start(GatewayOptions::default()).await;
    // The handshake is sent, then the client goes before $connect answers.
    let url = format!("{}?slow=500", gateway.ws_url());
    let attempt = tokio::time::timeout(Duration::from_millis(100), tokio_tungstenite::connect_async(url)).await;
    assert!(attempt.is_err(), "the handshake should still be waiting for $connect");

    // $connect runs to the end, as Lambda does, and admitted a connection
    // nobody holds: its $disconnect releases it.
    let connect = &functions.wait_for("connect", 1).await[0];
    let disconnect = &functions.wait_for("disconnect", 1).await[0];
    assert_eq!(
        disconnect["requestContext"]["connectionId"],
        connect["requestContext"]["connectionId"]
    );
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1006);
    settle().await;
    assert_eq!(functions.events("disconnect").len(), 1);
    assert_eq!(gateway.connection_count(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_every_socket_and_waits_for_each_disconnect() {
    let (gateway, functions) = start(GatewayOptions::default()).await;
    let mut first = connect(&gateway.ws_url()).await;
    // The stage prefix is optional for clients too.
    let mut second = connect(&format!("ws://{}/", gateway.local_addr())).await;
    wait_for_count(&gateway, 2).await;
    let closing = tokio::spawn(async move {
        let a = next_close(&mut first).await.map(|frame| frame.code);
        let b = next_close(&mut second).await.map(|frame| frame.code);
        (a, b)
    });
    gateway.shutdown().await;
    // Shutdown returned only after both $disconnect invocations.
    assert_eq!(functions.events("disconnect").len(), 2);
    assert_eq!(closing.await.unwrap(), (Some(CloseCode::Away), Some(CloseCode::Away)));
}

#[tokio::test]
async fn other_stages_and_paths_are_forbidden() {
    let (gateway, _functions) = start(GatewayOptions::default()).await;
    let error = tokio_tungstenite::connect_async(format!("ws://{}/prod", gateway.local_addr()))
        .await
        .unwrap_err();
    let WsError::Http(response) = error else {
        panic!("expected an HTTP refusal, got {error:?}");
    };
    assert_eq!(response.status(), 403);
    let answer = reqwest::Client::new()
        .post(format!(
            "http://{}/prod/@connections/AAAAAAAAAAAAAAA=",
            gateway.local_addr()
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    gateway.shutdown().await;
}

/// Holds every `silent` invocation until the gate opens, so a connection's
/// inbound queue fills while its route is busy; everything else goes through.
struct Gated {
    functions: std::sync::Arc<common::Functions>,
    gate: tokio::sync::watch::Receiver<bool>,
    entered: tokio::sync::Notify,
}

impl airwave_gateway::Invoker for Gated {
    fn invoke<'a>(&'a self, function: &'a str, event: Value) -> airwave_gateway::InvokeFuture<'a> {
        Box::pin(async move {
            if function == "silent" {
                self.entered.notify_one();
                let mut gate = self.gate.clone();
                let _ = gate.wait_for(|open| *open).await;
            }
            self.functions.invoke(function, event).await
        })
    }
}

/// A gateway whose `silent` route blocks until the returned sender sends `true`.
async fn start_gated(
    options: GatewayOptions,
) -> (
    airwave_gateway::RunningGateway,
    std::sync::Arc<Gated>,
    tokio::sync::watch::Sender<bool>,
) {
    let (open, gate) = tokio::sync::watch::channel(false);
    let gated = std::sync::Arc::new(Gated {
        functions: common::Functions::new(),
        gate,
        entered: tokio::sync::Notify::new(),
    });
    let gateway = airwave_gateway::Gateway::start(options, common::test_model(), gated.clone())
        .await
        .unwrap();
    (gateway, gated, open)
}

/// Sends more messages than the inbound queue holds while the first one's
/// invocation is still running, so the gateway has stopped reading the socket.
async fn fill_the_inbound_queue(client: &mut common::Client, gated: &Gated) {
    for _ in 0..400 {
        client.send(Message::text(r#"{"action":"silent"}"#)).await.unwrap();
    }
    tokio::time::timeout(PATIENCE, gated.entered.notified()).await.unwrap();
    // Lets the gateway read what fits in the queue.
    settle().await;
}

/// The gateway's inbound queue per connection.
const MESSAGE_QUEUE: usize = 256;

/// A generous bound for Management API calls that must not wait for the routes.
const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_management_api_is_served_while_the_inbound_queue_is_full() {
    let (gateway, gated, open) = start_gated(GatewayOptions::default()).await;
    let mut client = connect(&gateway.ws_url()).await;
    let connection_id = last_connection_id(&gated.functions, 1).await;
    fill_the_inbound_queue(&mut client, &gated).await;

    let sdk = management_client(&gateway.management_endpoint());
    tokio::time::timeout(
        PROMPT,
        sdk.post_to_connection()
            .connection_id(&connection_id)
            .data(aws_sdk_apigatewaymanagement::primitives::Blob::new("still here"))
            .send(),
    )
    .await
    .expect("the post waited for the routes")
    .unwrap();
    assert_eq!(next_text(&mut client).await, "still here");

    tokio::time::timeout(PROMPT, sdk.delete_connection().connection_id(&connection_id).send())
        .await
        .expect("the delete waited for the routes")
        .unwrap();
    let frame = next_close(&mut client).await.unwrap();
    assert_eq!(frame.code, CloseCode::Normal);
    wait_for_count(&gateway, 0).await;

    // Messages already read are still routed, then $disconnect comes last.
    open.send(true).unwrap();
    let disconnect = &gated.functions.wait_for("disconnect", 1).await[0];
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1000);
    // Reading had stopped: the one invocation in flight and a full queue, no more.
    assert_eq!(gated.functions.events("silent").len(), 1 + MESSAGE_QUEUE);
    gateway.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_a_socket_whose_inbound_queue_is_full() {
    let (gateway, gated, open) = start_gated(GatewayOptions::default()).await;
    let mut client = connect(&gateway.ws_url()).await;
    fill_the_inbound_queue(&mut client, &gated).await;

    let shutdown = tokio::spawn(gateway.shutdown());
    let frame = next_close(&mut client).await.unwrap();
    assert_eq!(frame.code, CloseCode::Away);
    // Shutdown waits for $disconnect, which waits for the queued messages.
    open.send(true).unwrap();
    tokio::time::timeout(PATIENCE, shutdown).await.unwrap().unwrap();
    let disconnect = &gated.functions.wait_for("disconnect", 1).await[0];
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1001);
}

#[tokio::test]
async fn reading_resumes_once_the_inbound_queue_drains() {
    let (gateway, gated, open) = start_gated(GatewayOptions::default()).await;
    let mut client = connect(&gateway.ws_url()).await;
    fill_the_inbound_queue(&mut client, &gated).await;
    open.send(true).unwrap();
    client.send(Message::text(r#"{"action":"echo"}"#)).await.unwrap();
    let reply: Value = serde_json::from_str(&next_text(&mut client).await).unwrap();
    assert_eq!(reply["route"], "echo");
    assert_eq!(
        gated.functions.events("silent").len(),
        400,
        "every message routed, in order"
    );
    close(client).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn durations_too_large_for_a_deadline_mean_never() {
    let options = GatewayOptions {
        idle_timeout: Duration::MAX,
        max_connection_duration: Duration::MAX,
        ..GatewayOptions::default()
    };
    let (gateway, functions) = start(options).await;
    let mut client = connect(&gateway.ws_url()).await;
    client.send(Message::text(r#"{"action":"echo"}"#)).await.unwrap();
    let reply: Value = serde_json::from_str(&next_text(&mut client).await).unwrap();
    assert_eq!(reply["route"], "echo");
    close(client).await;
    functions.wait_for("disconnect", 1).await;
    gateway.shutdown().await;
}
