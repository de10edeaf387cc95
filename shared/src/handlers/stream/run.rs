//! One run: consecutive messages of a stream batch with the same audience,
//! given their positions together and sent together.

use std::time::Instant;

use airwave_protocol::{MessageFrame, Position};
use serde_json::Value;
use tracing::Instrument;

use crate::coalesce::coalesce_for_api_gateway;
use crate::config::HistorySettings;
use crate::failures::{FailureSink, PoisonRecord};
use crate::fanout::FanOut;
use crate::history::ChannelHistory;
use crate::message::{Audience, MessageRecord};
use crate::store::{ConnectionStore, MessageStore, SubscriptionStore, TargetPage, FIRST_TARGET_PAGE_SIZE};
use crate::telemetry::metric;
use crate::time::Clocked;
use crate::Error;

/// A decoded message waiting in its run, with what a poison report of it needs.
pub(super) struct Pending {
    pub record: MessageRecord,
    pub sequence_number: Option<String>,
    pub raw: Value,
}

/// Consecutive messages of a batch with the same audience: one head update
/// for their positions, one listing of their targets, and as few frames as
/// API Gateway's message size allows.
pub(super) struct Run {
    /// Where Lambda resumes if the run must be sent again.
    pub first_sequence_number: Option<String>,
    pub messages: Vec<Pending>,
}

impl Run {
    pub fn audience(&self) -> Option<Audience<'_>> {
        self.messages.first().and_then(|first| first.record.audience().ok())
    }
}

/// What a batch did, for its log line and metrics.
#[derive(Default)]
pub(super) struct Sent {
    pub broadcasts: usize,
    pub messages: usize,
    pub poison: usize,
}

/// Reports a record that can never succeed to the failure queue; `Err` when
/// the report itself failed, so the record must be retried rather than lost.
pub(super) async fn report_poison<F: FailureSink>(
    failures: &F,
    reason: String,
    message_id: Option<String>,
    sequence_number: Option<String>,
    raw: Value,
) -> Result<(), ()> {
    let report = PoisonRecord::new("stream-processor", reason, message_id, sequence_number, raw);
    match failures.report_poison(&report).await {
        Ok(()) => Ok(()),
        // Never a silent drop: unreported, it is retried.
        Err(error) => {
            tracing::error!(
                error = %error,
                message_id = report.message_id.as_deref().unwrap_or_default(),
                "could not report a poison record; it will be retried"
            );
            Err(())
        }
    }
}

/// The stream handler's clients and settings, borrowed for one batch.
pub(super) struct Sender<'a, S, F> {
    pub store: &'a S,
    pub history: &'a HistorySettings,
    pub fanout: &'a FanOut,
    pub failures: &'a F,
    pub stop_starting_at: Option<Instant>,
}

impl<S, F> Sender<'_, S, F>
where
    S: ConnectionStore + SubscriptionStore + MessageStore + ChannelHistory + Clocked,
    F: FailureSink,
{
    /// Gives the run its positions and broadcasts it; on failure answers
    /// where Lambda must resume (the run's first record: positions already
    /// taken are kept by their claims).
    pub async fn send_run(&self, mut run: Run, sent: &mut Sent) -> Result<(), Option<String>> {
        let channel = run
            .audience()
            .and_then(Audience::channel)
            .filter(|_| self.history.enabled())
            .map(str::to_owned);
        let (frames, first_page, positioned) = match channel {
            Some(channel) => {
                let (positions, first_page) = self
                    .assign_run_positions(&channel, &mut run, sent)
                    .await
                    .map_err(|()| run.first_sequence_number.clone())?;
                let frames = run
                    .messages
                    .iter()
                    .zip(positions)
                    .map(|(pending, position)| pending.record.frame(Some(position)))
                    .collect();
                (frames, Some(first_page), true)
            }
            None => (
                run.messages.iter().map(|pending| pending.record.frame(None)).collect(),
                None,
                false,
            ),
        };
        if run.messages.is_empty() {
            return Ok(());
        }
        self.broadcast_run(&run, frames, first_page, sent).await?;
        if !positioned {
            apply_retention(self.store, &run).await;
        }
        Ok(())
    }

    /// Positions for every message of a channel run, in order, and the first
    /// page of its subscribers. The page is read after the head has moved
    /// (while the entries and claims are written): a subscribe that wrote
    /// its subscription before the head moved is then on it, and one that
    /// read the head before it moved was answered a position before this
    /// run, so either way it gets the run's messages. A run DynamoDB refuses
    /// for good is tried message by message, so only the messages at fault
    /// are reported (and left out of the run); `Err` when the run must be
    /// retried.
    async fn assign_run_positions(
        &self,
        channel: &str,
        run: &mut Run,
        sent: &mut Sent,
    ) -> Result<(Vec<Position>, TargetPage), ()> {
        let now = self.store.clock().epoch_seconds();
        let ttl = self.history.ttl_seconds;
        let first_page = || async {
            self.store
                .list_targets_page(Audience::Channel(channel), None, FIRST_TARGET_PAGE_SIZE)
                .await
                .map_err(|error| {
                    tracing::error!(error = %error, "the broadcast's targets could not be listed; its records will be retried");
                })
        };
        let records: Vec<&MessageRecord> = run.messages.iter().map(|pending| &pending.record).collect();
        let assigned = async {
            let reservation = self.store.reserve_positions(channel, &records, now).await?;
            let (recorded, page) = futures::join!(
                self.store.record_positions(channel, &records, reservation, ttl, now),
                first_page()
            );
            Ok::<_, Error>((recorded?, page))
        };
        let error = match assigned.await {
            Ok((positions, page)) => {
                metrics::counter!(metric::POSITIONS_ASSIGNED).increment(positions.len() as u64);
                return Ok((positions, page?));
            }
            Err(error) => error,
        };
        if !error.is_permanent() {
            tracing::error!(error = %error, "no positions could be assigned; the run will be retried");
            return Err(());
        }
        tracing::warn!(error = %error, "DynamoDB refused the run's positions for good; trying its messages one by one");
        let mut kept = Vec::new();
        let mut positions = Vec::new();
        for pending in std::mem::take(&mut run.messages) {
            let message_id = pending.record.message_id.clone();
            match self.store.assign_position(channel, &pending.record, ttl, now).await {
                Ok(position) => {
                    metrics::counter!(metric::POSITIONS_ASSIGNED).increment(1);
                    positions.push(position);
                    kept.push(pending);
                }
                // Retrying only helps a transient failure: one DynamoDB will
                // refuse every time is reported, not retried for an hour.
                Err(error) if error.is_permanent() => {
                    tracing::error!(message_id = %message_id, error = %error, "no position can ever be assigned; reporting the record");
                    report_poison(
                        self.failures,
                        error.to_string(),
                        Some(message_id),
                        pending.sequence_number,
                        pending.raw,
                    )
                    .await?;
                    sent.poison += 1;
                }
                Err(error) => {
                    tracing::error!(message_id = %message_id, error = %error, "no position could be assigned; the run will be retried");
                    return Err(());
                }
            }
        }
        run.messages = kept;
        Ok((positions, first_page().await?))
    }

    async fn broadcast_run(
        &self,
        run: &Run,
        messages: Vec<MessageFrame>,
        first_page: Option<TargetPage>,
        sent: &mut Sent,
    ) -> Result<(), Option<String>> {
        let Some(audience) = run.audience() else {
            return Ok(());
        };
        let frames = coalesce_for_api_gateway(&messages);
        let first = &run.messages[0].record;
        // Every line logged while the run is sent, down to each post's,
        // names its messages: one message can be followed to its posts.
        let message_ids = run
            .messages
            .iter()
            .map(|pending| pending.record.message_id.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let span = tracing::info_span!(
            "broadcast",
            message_ids = message_ids.as_str(),
            messages = messages.len(),
            frames = frames.len(),
        );
        let broadcast = self
            .fanout
            .broadcast_frames_from(self.store, audience, first_page, &frames, self.stop_starting_at)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        match broadcast {
            Ok(report) if report.skipped > 0 => {
                tracing::warn!(
                    skipped = report.skipped,
                    "the circuit breaker stopped the broadcast; its records will be retried"
                );
                Err(run.first_sequence_number.clone())
            }
            Ok(report) if report.incomplete() => {
                tracing::warn!(
                    delivered = report.delivered,
                    "the invocation's deadline stopped the broadcast; its records will be retried"
                );
                Err(run.first_sequence_number.clone())
            }
            Ok(report) => {
                sent.broadcasts += 1;
                sent.messages += messages.len();
                if report.delivered > 0 {
                    record_delivery_latency(run, self.store.clock().epoch_millis());
                }
                tracing::info!(
                    channel = first.channel.as_deref().unwrap_or_default(),
                    to_user = first.to_user.as_deref().unwrap_or_default(),
                    delivered = report.delivered,
                    failed = report.failed,
                    posts = report.posts,
                    "messages broadcast"
                );
                Ok(())
            }
            Err(error) => {
                tracing::error!(error = %error, "broadcast failed; its records will be retried");
                Err(run.first_sequence_number.clone())
            }
        }
    }
}

/// One latency sample per message of a delivered run: its broadcast has
/// just ended, so this is when the last of its targets got it.
fn record_delivery_latency(run: &Run, now_ms: i64) {
    for pending in &run.messages {
        if let Some(written_at_ms) = pending.record.written_at_ms {
            // A producer's clock ahead of this one is not a negative latency.
            let latency_ms = now_ms.saturating_sub(written_at_ms).max(0);
            metrics::histogram!(metric::DELIVERY_LATENCY).record(latency_ms as f64);
        }
    }
}

/// Items a producer wrote without `expires_at` get the default retention once
/// sent, so the messages table never keeps them forever (a channel message's
/// claim gives it that already). A failure is logged with the message id and
/// not retried: the message was delivered, and retrying the record would
/// only send it again.
async fn apply_retention<S: MessageStore + Clocked>(store: &S, run: &Run) {
    let now = store.clock().epoch_seconds();
    for pending in run
        .messages
        .iter()
        .filter(|pending| pending.record.expires_at.is_none())
    {
        let message_id = pending.record.message_id.as_str();
        match store.apply_message_retention(message_id, now).await {
            Ok(true) => metrics::counter!(metric::MESSAGES_RETENTION_APPLIED).increment(1),
            Ok(false) => {}
            Err(error) => tracing::warn!(
                message_id,
                error = %error,
                "could not give a message item its retention; it stays until deleted"
            ),
        }
    }
}
