//! The Management API: posting to, reading and deleting connections, and
//! the account's request quota.

use airwave_gateway::GatewayOptions;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::{close, connect, last_connection_id, next_close, next_text, start};
use crate::{management_client, settle};

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
