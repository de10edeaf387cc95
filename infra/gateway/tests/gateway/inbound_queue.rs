//! The inbound queue between a socket and its routes: while it is full the
//! socket is not read, yet the Management API and shutdown are still served.

use std::time::Duration;

use airwave_gateway::GatewayOptions;
use futures::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, close, connect, last_connection_id, next_close, next_text, wait_for_count, PATIENCE};
use crate::{management_client, settle};

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
