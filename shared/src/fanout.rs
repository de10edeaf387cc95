//! Posting one frame to every live connection through the API Gateway
//! Management API, pruning the dead ones as it goes.

use std::time::Instant;

use aws_sdk_apigatewaymanagement::primitives::Blob;
use futures::StreamExt;
use tracing::Instrument;

use crate::connection::ConnectionTarget;
use crate::store::ConnectionStore;
use crate::time::epoch_seconds_now;
use crate::Error;

/// What happened to each target of one broadcast.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FanOutReport {
    /// Records listed, expired ones included.
    pub targets: usize,
    pub delivered: usize,
    /// Answered 410 by API Gateway: the record was deleted.
    pub gone: usize,
    /// Past its TTL but not yet deleted by DynamoDB: not posted to, deleted.
    pub expired: usize,
    /// Still failing after the SDK's retries.
    pub failed: usize,
    pub elapsed_ms: u128,
}

enum Outcome {
    Delivered,
    Gone,
    Expired,
    Failed,
}

impl FanOutReport {
    fn count(mut self, outcome: Outcome) -> Self {
        match outcome {
            Outcome::Delivered => self.delivered += 1,
            Outcome::Gone => self.gone += 1,
            Outcome::Expired => self.expired += 1,
            Outcome::Failed => self.failed += 1,
        }
        self
    }
}

/// Sends frames with at most `concurrency` posts in flight, so a broadcast to
/// ten thousand connections neither runs one by one nor opens ten thousand
/// sockets at once.
#[derive(Debug, Clone)]
pub struct FanOut {
    client: aws_sdk_apigatewaymanagement::Client,
    concurrency: usize,
}

impl FanOut {
    pub fn new(client: aws_sdk_apigatewaymanagement::Client, concurrency: usize) -> Self {
        FanOut {
            client,
            concurrency: concurrency.max(1),
        }
    }

    /// Posts `frame` to every live connection in `store`. Fails only if the
    /// targets cannot be listed; per-connection failures are counted instead.
    pub async fn broadcast<S: ConnectionStore>(&self, store: &S, frame: &[u8]) -> Result<FanOutReport, Error> {
        let started = Instant::now();
        let now = epoch_seconds_now();
        let targets = store.list_targets().await?;
        let initial = FanOutReport {
            targets: targets.len(),
            ..FanOutReport::default()
        };
        let mut report = futures::stream::iter(targets)
            .map(|target| self.deliver(store, target, frame, now))
            .buffer_unordered(self.concurrency)
            .fold(initial, |report, outcome| std::future::ready(report.count(outcome)))
            .await;
        report.elapsed_ms = started.elapsed().as_millis();
        tracing::info!(
            targets = report.targets,
            delivered = report.delivered,
            gone = report.gone,
            expired = report.expired,
            failed = report.failed,
            elapsed_ms = report.elapsed_ms as u64,
            concurrency = self.concurrency,
            "fan-out finished"
        );
        Ok(report)
    }

    async fn deliver<S: ConnectionStore>(
        &self,
        store: &S,
        target: ConnectionTarget,
        frame: &[u8],
        now: i64,
    ) -> Outcome {
        let span = tracing::debug_span!("deliver", connection_id = %target.connection_id);
        async {
            if target.is_expired(now) {
                match store.delete_expired_connection(&target.connection_id, now).await {
                    Ok(true) => {
                        tracing::info!(expires_at = target.expires_at, "pruned an expired connection");
                        return Outcome::Expired;
                    }
                    // The TTL was refreshed after the listing: the connection is live.
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(error = %error, "could not prune an expired connection");
                        return Outcome::Expired;
                    }
                }
            }
            self.post(store, &target.connection_id, frame).await
        }
        .instrument(span)
        .await
    }

    async fn post<S: ConnectionStore>(&self, store: &S, connection_id: &str, frame: &[u8]) -> Outcome {
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
            tracing::warn!(
                error = %aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&error),
                "post to connection failed"
            );
            return Outcome::Failed;
        }
        match store.delete_connection(connection_id).await {
            Ok(_) => tracing::info!("pruned a connection API Gateway reports gone"),
            Err(error) => tracing::error!(error = %error, "could not prune a gone connection"),
        }
        Outcome::Gone
    }
}
