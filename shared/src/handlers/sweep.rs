//! The sweep: closes the connections whose expiry has passed, on a schedule.
//!
//! A record's expiry is set once, at `$connect`: its token's expiry, or a
//! minute past API Gateway's two-hour limit, whichever comes first. Nothing
//! refreshes it (a ping never reaches a function), so a connection whose
//! token expires is found here, not by its own traffic. DynamoDB's TTL is no
//! substitute: it deletes up to two days late.
//!
//! Each run reads the keys-only `everyone` index (about 80 entries per 4 KB
//! read) and removes each expired connection the way a `$disconnect` would,
//! with its slots and subscriptions, then tells its socket why and closes it.

use airwave_protocol::ErrorCode;
use futures::StreamExt;
use serde::Serialize;

use crate::closer::{Closer, TOKEN_EXPIRED_MESSAGE};
use crate::connection::ConnectionRecord;
use crate::store::{ConnectionStore, ExpiredRemoval, TARGET_PAGE_SIZE};
use crate::telemetry::metric;
use crate::Error;

/// What a connection that outlived its lifetime is told before it is closed.
pub const LIFETIME_REACHED_MESSAGE: &str = "this connection reached its longest lifetime; reconnect";

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Index entries read.
    pub listed: usize,
    /// Expired connections removed and closed.
    pub closed: usize,
    /// Of those, closed because their token expired.
    pub token_expired: usize,
    /// The invocation's deadline came before the last page; the next run goes on.
    pub stopped_at_deadline: bool,
}

/// Expired connections removed and closed at once: a cohort of tokens that
/// expire together is closed in one run, not one connection at a time.
pub const SWEEP_CONCURRENCY: usize = 16;

/// Removes and closes every connection expired at `now_epoch_seconds`,
/// reading no further page once `stop_listing_at` has passed (the next run,
/// a minute later, carries on).
///
/// A failure to remove one connection stops the sweep (the next run starts
/// over); a failure to close a removed one is logged: its record is gone,
/// so it gets nothing, and its next request is refused.
pub async fn sweep_expired_connections<S: ConnectionStore>(
    store: &S,
    closer: Option<&Closer>,
    now_epoch_seconds: i64,
    stop_listing_at: Option<std::time::Instant>,
) -> Result<SweepReport, Error> {
    let mut report = SweepReport::default();
    let mut from = None;
    loop {
        let page = store.list_connections_page(from, TARGET_PAGE_SIZE).await?;
        report.listed += page.targets.len();
        let next = page.next;
        let expired: Vec<String> = page
            .targets
            .into_iter()
            .filter(|target| target.expires_at <= now_epoch_seconds)
            .map(|target| target.connection_id)
            .collect();
        let mut removals = futures::stream::iter(expired)
            .map(|connection_id| async move {
                match store
                    .remove_expired_connection(&connection_id, now_epoch_seconds)
                    .await?
                {
                    ExpiredRemoval::Removed(record) => {
                        let token_expired = record.token_expires_at.is_some_and(|at| at <= now_epoch_seconds);
                        close(closer, &record, token_expired).await;
                        Ok::<_, Error>(Some(token_expired))
                    }
                    ExpiredRemoval::NotExpired | ExpiredRemoval::Absent => Ok(None),
                }
            })
            .buffer_unordered(SWEEP_CONCURRENCY);
        while let Some(removed) = removals.next().await {
            if let Some(token_expired) = removed? {
                report.closed += 1;
                report.token_expired += usize::from(token_expired);
            }
        }
        match next {
            Some(next) if stop_listing_at.is_none_or(|at| std::time::Instant::now() < at) => from = Some(next),
            Some(_) => {
                report.stopped_at_deadline = true;
                break;
            }
            None => break,
        }
    }
    metrics::counter!(metric::CONNECTIONS_SWEPT).increment(report.closed as u64);
    tracing::info!(
        listed = report.listed,
        closed = report.closed,
        token_expired = report.token_expired,
        stopped_at_deadline = report.stopped_at_deadline,
        "swept expired connections"
    );
    Ok(report)
}

async fn close(closer: Option<&Closer>, record: &ConnectionRecord, token_expired: bool) {
    let Some(closer) = closer else {
        tracing::warn!(
            connection_id = %record.connection_id,
            "no Management API endpoint (AIRWAVE_MANAGEMENT_ENDPOINT): the expired connection stays open until API Gateway closes it"
        );
        return;
    };
    let (code, message) = if token_expired {
        (ErrorCode::TokenExpired, TOKEN_EXPIRED_MESSAGE)
    } else {
        (ErrorCode::UnknownConnection, LIFETIME_REACHED_MESSAGE)
    };
    if let Err(error) = closer.close(&record.connection_id, &[], code, message).await {
        tracing::error!(
            connection_id = %record.connection_id,
            error = %error,
            "could not close an expired connection; its record is gone, so it gets nothing"
        );
    }
}
