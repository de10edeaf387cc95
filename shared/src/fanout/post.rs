//! One post to one connection, and the prune a 410 calls for.

use std::time::Instant;

use aws_sdk_apigatewaymanagement::primitives::Blob;

use super::report::Outcome;
use super::{has_passed, FanOut};
use crate::store::{ConnectionStore, SubscriptionStore};
use crate::telemetry::metric;

impl FanOut {
    pub(super) async fn post<S: ConnectionStore + SubscriptionStore>(
        &self,
        store: &S,
        channel: Option<&str>,
        connection_id: &str,
        frame: &[u8],
        stop_starting_at: Option<Instant>,
    ) -> Outcome {
        if !self.pacer.wait_for_turn(stop_starting_at).await {
            // Its turn would come after the deadline: left for the retry.
            return Outcome::Stopped;
        }
        let result = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(frame))
            .send()
            .await;
        let error = match result {
            Ok(_) => return Outcome::Delivered,
            Err(error) => error,
        };
        let is_gone = error
            .as_service_error()
            .is_some_and(|service_error| service_error.is_gone_exception())
            || error
                .raw_response()
                .is_some_and(|response| response.status().as_u16() == 410);
        if !is_gone {
            let status = error.raw_response().map(|response| response.status().as_u16());
            let error = aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&error);
            return match status {
                // Retrying cannot fix a deploy fault, and it says nothing
                // about API Gateway's health, so the breaker does not count it.
                Some(403 | 404) => {
                    metrics::counter!(metric::MANAGEMENT_FORBIDDEN).increment(1);
                    tracing::error!(status, error = %error, "the Management API refused the post: check execute-api:ManageConnections and AIRWAVE_MANAGEMENT_ENDPOINT");
                    Outcome::Refused
                }
                Some(413) => Outcome::TooLarge,
                // This target's request was refused; the next target's may not be.
                Some(400) => {
                    metrics::counter!(metric::FANOUT_REJECTED).increment(1);
                    tracing::warn!(status, error = %error, "the Management API rejected the post for this connection");
                    Outcome::Refused
                }
                _ => {
                    tracing::warn!(status, error = %error, "post to connection failed after every attempt");
                    Outcome::Failed
                }
            };
        }
        if has_passed(stop_starting_at) {
            // Housekeeping can wait for the next broadcast; the invocation cannot.
            tracing::info!("leaving a gone connection for a later broadcast: the deadline is near");
            return Outcome::Gone;
        }
        let pruned = async {
            // Not a record younger than the connecting window: API Gateway
            // answers 410 while a handshake is still in progress as well.
            let connected_before_ms = crate::time::epoch_millis_now().saturating_sub(self.connecting_window_ms);
            let record = store.remove_gone_connection(connection_id, connected_before_ms).await?;
            let listed = |channel: &str| {
                record
                    .as_ref()
                    .is_some_and(|record| record.channels.iter().any(|listed| listed == channel))
            };
            match channel {
                // Removing the record removed the subscriptions it lists; one it
                // does not list (a half-finished subscribe, or a record already
                // gone) would otherwise outlive the connection.
                Some(channel) if !listed(channel) => store.unsubscribe(connection_id, channel).await,
                _ => Ok(()),
            }
        }
        .await;
        match pruned {
            Ok(()) => tracing::info!("pruned a connection API Gateway reports gone"),
            Err(error) => tracing::error!(error = %error, "could not prune a gone connection"),
        }
        Outcome::Gone
    }
}
