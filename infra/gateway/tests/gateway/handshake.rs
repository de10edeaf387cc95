//! The handshake: `$connect` admitting or refusing it, the events the
//! functions get and the paths a client may connect on.

use airwave_gateway::GatewayOptions;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::common::{close, connect, next_text, start, wait_for_count};
use crate::settle;

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
