//! One target's share of a broadcast: its frames in order, an expired
//! record pruned instead of posted to, a frame too large split up.

use std::time::Instant;

use tracing::Instrument;

use airwave_protocol::ErrorCode;

use super::report::{Delivery, Outcome};
use super::{has_passed, FanOut};
use crate::closer::{close_with_reason, delete_connection, TOKEN_EXPIRED_MESSAGE};
use crate::connection::{ConnectionRecord, ConnectionTarget};
use crate::store::{ConnectionStore, ExpiredRemoval, SubscriptionStore};
use crate::telemetry::metric;

impl FanOut {
    /// Posts `frames[first_frame..]` to one target, in order, stopping at
    /// the first that is not delivered, and before any frame once
    /// `stop_starting_at` has passed.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn deliver<S: ConnectionStore + SubscriptionStore, F: AsRef<[u8]> + Sync>(
        &self,
        store: &S,
        channel: Option<&str>,
        target: &ConnectionTarget,
        frames: &[F],
        first_frame: usize,
        now: i64,
        stop_starting_at: Option<Instant>,
    ) -> Delivery {
        let span = tracing::debug_span!("deliver", connection_id = %target.connection_id);
        async {
            let mut delivery = Delivery {
                outcome: Outcome::Delivered,
                resume_at: first_frame,
                posts: 0,
                delivered_posts: 0,
                delivered_post_us: 0,
            };
            if target.is_expired(now) {
                match store.remove_expired_connection(&target.connection_id, now).await {
                    Ok(ExpiredRemoval::Removed(record)) => {
                        tracing::info!(expires_at = target.expires_at, "pruned an expired connection");
                        self.close_expired(&record, now).await;
                        delivery.outcome = Outcome::Expired;
                        return delivery;
                    }
                    // The record itself is not expired (the listed copy was
                    // stale): live, so it gets the message.
                    Ok(ExpiredRemoval::NotExpired) => {}
                    // No record: a connection without one gets nothing. Its
                    // leftover subscription goes, and its socket is closed so
                    // its client reconnects and recovers what it missed.
                    Ok(ExpiredRemoval::Absent) => {
                        if let Some(channel) = channel {
                            if let Err(error) = store.unsubscribe(&target.connection_id, channel).await {
                                tracing::warn!(error = %error, "could not remove the subscription of a connection without a record");
                            }
                        }
                        if let Err(error) = delete_connection(&self.client, &target.connection_id).await {
                            tracing::warn!(error = %error, "could not close a connection without a record");
                        }
                        tracing::info!(expires_at = target.expires_at, "not posting to a connection without a record");
                        delivery.outcome = Outcome::Expired;
                        return delivery;
                    }
                    Err(error) => {
                        tracing::error!(error = %error, "could not prune an expired connection");
                        delivery.outcome = Outcome::Failed;
                        return delivery;
                    }
                }
            }
            for frame in frames.iter().skip(first_frame) {
                if has_passed(stop_starting_at) {
                    delivery.outcome = Outcome::Stopped;
                    return delivery;
                }
                if !self.breaker().allows_post(Instant::now()) {
                    delivery.outcome = Outcome::Skipped;
                    return delivery;
                }
                delivery.posts += 1;
                let sent = Instant::now();
                let mut outcome = self
                    .post(store, channel, &target.connection_id, frame.as_ref(), stop_starting_at)
                    .await;
                if outcome == Outcome::TooLarge {
                    outcome = self
                        .post_split(store, channel, target, frame.as_ref(), stop_starting_at, &mut delivery)
                        .await;
                }
                if outcome != Outcome::Refused {
                    self.breaker().record(outcome == Outcome::Failed, Instant::now());
                }
                if outcome == Outcome::Delivered {
                    delivery.delivered_posts += 1;
                    delivery.delivered_post_us += sent.elapsed().as_micros() as u64;
                } else {
                    delivery.outcome = outcome;
                    return delivery;
                }
                delivery.resume_at += 1;
            }
            delivery
        }
        .instrument(span)
        .await
    }

    /// Sends the messages of a frame API Gateway refused as too large (413)
    /// one post each, in order. A lone message that is still too large is
    /// refused for this target: logged and counted, never retried.
    async fn post_split<S: ConnectionStore + SubscriptionStore>(
        &self,
        store: &S,
        channel: Option<&str>,
        target: &ConnectionTarget,
        frame: &[u8],
        stop_starting_at: Option<Instant>,
        delivery: &mut Delivery,
    ) -> Outcome {
        let messages = match std::str::from_utf8(frame).map(airwave_protocol::parse_server_frame) {
            Ok(Ok(airwave_protocol::Incoming::Messages(messages))) if messages.len() > 1 => messages,
            _ => {
                metrics::counter!(metric::FANOUT_REJECTED).increment(1);
                tracing::error!(
                    bytes = frame.len(),
                    "the Management API refused a single message as too large (413)"
                );
                return Outcome::Refused;
            }
        };
        tracing::warn!(
            bytes = frame.len(),
            messages = messages.len(),
            "the Management API refused a batch frame as too large (413); sending its messages one by one"
        );
        for message in messages {
            let text = message.to_text();
            delivery.posts += 1;
            let outcome = match self
                .post(store, channel, &target.connection_id, text.as_bytes(), stop_starting_at)
                .await
            {
                Outcome::TooLarge => {
                    metrics::counter!(metric::FANOUT_REJECTED).increment(1);
                    tracing::error!(message_id = %message.id, "the Management API refused a single message as too large (413)");
                    Outcome::Refused
                }
                other => other,
            };
            if outcome != Outcome::Delivered {
                return outcome;
            }
            delivery.delivered_posts += 1;
        }
        Outcome::Delivered
    }

    /// Closes the socket of a pruned record: with a `closing` frame when its
    /// token expired (the client reconnects with a fresh one), silently when
    /// it went unpinged past its TTL (it is most likely gone already).
    async fn close_expired(&self, record: &ConnectionRecord, now: i64) {
        let closed = if record.token_expired(now) {
            close_with_reason(
                &self.client,
                &record.connection_id,
                &[],
                ErrorCode::TokenExpired,
                TOKEN_EXPIRED_MESSAGE,
            )
            .await
        } else {
            delete_connection(&self.client, &record.connection_id).await
        };
        if let Err(error) = closed {
            tracing::warn!(error = %error, "could not close a pruned connection");
        }
    }
}
