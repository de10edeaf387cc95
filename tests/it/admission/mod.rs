//! Admission control on `$connect`, through the real handler and the real local
//! DynamoDB: given these limits, when these clients connect, then exactly these
//! are admitted, the rest are refused with the right status, and slots come back.
//! One file per idea: the throttle, the caps, tokens, round trips, stats.
//! (The same logic over the in-memory store, without a server: `shared/src/logic_tests`.)

use airwave_shared::aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use airwave_shared::handlers::handle_connect;
use airwave_shared::time::epoch_seconds_now;
use airwave_tests::stack::LocalStack;
use airwave_tests::TestTables;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;

mod caps;
mod rotation;
mod round_trips;
mod stats;
mod throttle;
mod tokens;
mod versions;

const SECRET: &str = "test-secret-test-secret-test-secret!";
/// The connect fixture's `requestTimeEpoch`.
const FIXTURE_REQUEST_TIME_MS: i64 = 1_795_378_544_319;

fn token(claims: Value) -> String {
    airwave_tests::signed_token(SECRET, &claims)
}

fn token_for(user: &str) -> String {
    airwave_tests::token_for(SECRET, user)
}

/// A `$connect` with the token in the query string, API Gateway style.
fn at_time(
    mut event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
    request_time_ms: i64,
) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    event.payload.request_context.request_time_epoch = request_time_ms;
    event
}

fn statuses(responses: &[ApiGatewayProxyResponse]) -> (usize, Vec<i64>) {
    let admitted = responses.iter().filter(|response| response.status_code == 200).count();
    let refused = responses
        .iter()
        .map(|response| response.status_code)
        .filter(|status| *status != 200)
        .collect();
    (admitted, refused)
}

async fn connect_all(
    tables: &TestTables,
    events: Vec<LambdaEvent<ApiGatewayWebsocketProxyRequest>>,
) -> Vec<ApiGatewayProxyResponse> {
    let authenticator = airwave_tests::authenticator(&tables.config);
    join_all(
        events
            .into_iter()
            .map(|event| handle_connect(&tables.store, authenticator.as_ref(), None, &tables.config, event)),
    )
    .await
    .into_iter()
    .map(|result| result.expect("connect handler"))
    .collect()
}

async fn admission_items(tables: &TestTables) -> usize {
    let output = tables
        .dynamodb
        .scan()
        .table_name(&tables.config.admission_table)
        .send()
        .await
        .unwrap();
    output.items.unwrap_or_default().len()
}

async fn stored_user_ids(tables: &TestTables) -> Vec<String> {
    let output = tables
        .dynamodb
        .scan()
        .table_name(&tables.config.connections_table)
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    output
        .items
        .unwrap_or_default()
        .iter()
        .filter_map(|item| item.get("user_id")?.as_s().ok().cloned())
        .collect()
}

/// Moves a stored record's expiry into the past: its TTL has passed.
async fn expire(tables: &TestTables, connection_id: &str) {
    tables
        .dynamodb
        .update_item()
        .table_name(&tables.config.connections_table)
        .key("connection_id", AttributeValue::S(connection_id.to_owned()))
        .update_expression("SET expires_at = :past")
        .expression_attribute_values(":past", AttributeValue::N((epoch_seconds_now() - 5).to_string()))
        .send()
        .await
        .unwrap();
}

/// The handshake's answer to `offer`: the selected subprotocol, or the refusal's status and body.
pub(super) async fn handshake(stack: &LocalStack, offer: Option<&str>) -> Result<Option<String>, (u16, String)> {
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
