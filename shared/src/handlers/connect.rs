use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use lambda_runtime::LambdaEvent;
use tracing::Instrument;

use super::route_response;
use crate::connection::ConnectionRecord;
use crate::store::ConnectionStore;
use crate::telemetry::metric;
use crate::time::{epoch_millis_now, epoch_seconds_now};
use crate::{Config, Error};

/// `$connect`: stores the connection with its TTL and admits it with 200.
///
/// An event without a connection id or source IP is refused with 400 (API
/// Gateway always sends both, so this is a misrouted or hand-made event). A
/// store failure is returned as an error: Lambda reports it, API Gateway
/// refuses the handshake with 500, and the client retries later.
pub async fn handle_connect<S: ConnectionStore>(
    store: &S,
    config: &Config,
    event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<ApiGatewayProxyResponse, Error> {
    let context = &event.payload.request_context;
    let span = tracing::info_span!(
        "connect",
        request_id = %event.context.request_id,
        connection_id = context.connection_id.as_deref().unwrap_or_default(),
        source_ip = context.identity.source_ip.as_deref().unwrap_or_default(),
    );
    async {
        let Some(connection_id) = context.connection_id.clone() else {
            return Ok(refuse(
                400,
                "missing_connection_id",
                "missing requestContext.connectionId",
            ));
        };
        let Some(source_ip) = context.identity.source_ip.clone() else {
            return Ok(refuse(
                400,
                "missing_source_ip",
                "missing requestContext.identity.sourceIp",
            ));
        };
        let connected_at_ms = if context.connected_at > 0 {
            context.connected_at
        } else {
            epoch_millis_now()
        };
        let record = ConnectionRecord {
            connection_id,
            source_ip,
            user_id: None,
            connected_at_ms,
            expires_at: epoch_seconds_now() + config.connection_ttl_seconds as i64,
            domain_name: context.domain_name.clone(),
            stage: context.stage.clone(),
            channels: Vec::new(),
        };
        store.put_connection(&record).await?;
        tracing::info!(expires_at = record.expires_at, "connection admitted");
        metrics::counter!(metric::CONNECTIONS_ADMITTED).increment(1);
        Ok(route_response(200, ""))
    }
    .instrument(span)
    .await
}

/// Refuses the handshake with `status`, with one log line and the metrics.
fn refuse(status: u16, reason: &'static str, body: &str) -> ApiGatewayProxyResponse {
    tracing::warn!(reason, status, "connect refused");
    metrics::counter!(metric::CONNECTIONS_REFUSED).increment(1);
    metrics::counter!(metric::CONNECTIONS_REFUSED_BY_REASON, "reason" => reason).increment(1);
    route_response(status, body)
}
