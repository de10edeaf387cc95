//! The protocol version in the handshake, over real sockets through the local
//! gateway: the version a client offers is selected, and a client offering
//! only versions this server does not speak is refused with 426 before
//! anything is read or written.

use airwave_gateway::GatewayOptions;
use airwave_tests::stack::LocalStack;
use airwave_tests::TestTables;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;

/// The handshake's answer to `offer`: the selected subprotocol, or the refusal's status and body.
async fn handshake(stack: &LocalStack, offer: Option<&str>) -> Result<Option<String>, (u16, String)> {
    let mut request = stack.ws_url().into_client_request().unwrap();
    if let Some(offer) = offer {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_str(offer).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut socket, response)) => {
            let selected = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|value| value.to_str().unwrap().to_owned());
            socket.close(None).await.ok();
            Ok(selected)
        }
        Err(WsError::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            Err((response.status().as_u16(), body))
        }
        Err(other) => panic!("the handshake failed otherwise: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offered_version_is_selected_and_an_unknown_one_is_refused_with_426() {
    let stack = LocalStack::start(TestTables::create().await, GatewayOptions::default()).await;

    assert_eq!(
        handshake(&stack, Some("airwave.v1")).await,
        Ok(Some("airwave.v1".to_owned()))
    );
    // Offered beside a token, or beside a version this server does not speak.
    assert_eq!(
        handshake(&stack, Some("airwave.v2, airwave.v1")).await,
        Ok(Some("airwave.v1".to_owned()))
    );
    // The name from before versions is version 1.
    assert_eq!(handshake(&stack, Some("airwave")).await, Ok(Some("airwave".to_owned())));
    // No offer at all (a command-line client): version 1, no answer.
    assert_eq!(handshake(&stack, None).await, Ok(None));
    // Those four are closed: wait for their records to go.
    for _ in 0..100 {
        if stack.tables.stored_connection_ids().await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(stack.tables.stored_connection_ids().await.is_empty());

    assert_eq!(
        handshake(&stack, Some("airwave.v2")).await,
        Err((426, "unsupported_protocol".to_owned()))
    );
    // Refused before anything was written.
    assert!(stack.tables.stored_connection_ids().await.is_empty());
}
