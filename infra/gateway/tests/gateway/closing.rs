//! Every way a connection ends: idle, at its maximum duration, dropped,
//! left during `$connect`, or at shutdown; and limits too large to ever end it.

use std::time::Duration;

use airwave_gateway::GatewayOptions;
use futures::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{
    close, connect, finish, last_connection_id, next_close, next_text, start, wait_for_count, PATIENCE,
};
use crate::{management_client, settle};

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
