//! Messages: routing by the selection expression, route responses, a failing
//! route, and the frame and message limits.

use airwave_gateway::GatewayOptions;
use futures::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{close, connect, last_connection_id, next_close, next_text, start};
use crate::settle;

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
