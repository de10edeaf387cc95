use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use lambda_runtime::LambdaEvent;
use tracing::Instrument;

use super::route_response;
use crate::store::ConnectionStore;
use crate::telemetry::metric;
use crate::Error;

/// `$disconnect`: deletes the connection's record. API Gateway delivers this
/// at most once and sometimes not at all, so it is idempotent, and the TTL and
/// the fan-out's pruning cover the times it never arrives. The connection's
/// subscriptions go with it.
pub async fn handle_disconnect<S: ConnectionStore>(
    store: &S,
    event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<ApiGatewayProxyResponse, Error> {
    let context = &event.payload.request_context;
    let span = tracing::info_span!(
        "disconnect",
        request_id = %event.context.request_id,
        connection_id = context.connection_id.as_deref().unwrap_or_default(),
        disconnect_status_code = context.disconnect_status_code,
    );
    async {
        let Some(connection_id) = context.connection_id.as_deref() else {
            tracing::warn!(reason = "missing_connection_id", "disconnect ignored");
            return Ok(route_response(400, "missing requestContext.connectionId"));
        };
        let removed = store.remove_connection(connection_id).await?;
        tracing::info!(
            existed = removed.is_some(),
            channels = removed.map_or(0, |record| record.channels.len()),
            "connection removed"
        );
        metrics::counter!(metric::DISCONNECTS).increment(1);
        Ok(route_response(200, ""))
    }
    .instrument(span)
    .await
}
