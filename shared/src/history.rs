//! Channel positions and history: every channel message gets a position
//! (epoch + offset) exactly once, and a history entry a reconnecting client
//! can recover it from.
//!
//! Positions are given per run: the consecutive messages of one channel in a
//! stream batch get a block of offsets from one update of the channel's head,
//! so a busy channel costs one write on its hot key per run, not one
//! transaction per message. Where each piece lives, and what it costs, is in
//! [`crate::store`]'s history adapter:
//! - the head (`epoch`, latest `offset`) is one item per channel; a new head
//!   (a new channel, or one whose head expired [`HEAD_TTL_SECONDS`] after its
//!   last message) gets a new epoch, which tells clients their offsets no
//!   longer apply. Only a publish writes it: a subscribe to a channel without
//!   one is answered with [`Position::not_started`] and writes nothing;
//! - one history entry per message, at its offset, kept for the history TTL;
//! - the claim (which position a message got, so a retried or re-delivered
//!   stream record keeps it) is written on the message's own item in the
//!   messages table: one key per message, never the channel's.

use std::future::Future;

use airwave_protocol::{MessageFrame, Position};

use crate::config::HistorySettings;
use crate::message::MessageRecord;
use crate::time::Clocked;
use crate::Error;

/// A head lives this long after its channel's last message (or its start).
pub const HEAD_TTL_SECONDS: i64 = 30 * 86_400;

/// How many times a recovery reads its range again when entries are
/// missing, and the pause before each read.
const RECOVERY_REREADS: u32 = 8;
const RECOVERY_REREAD_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The attributes of a message item that hold its position claim: whoever
/// writes the item again (the replay) carries them over, so the message
/// keeps its position.
pub const CLAIM_ATTRIBUTES: [&str; 2] = ["position_epoch", "position_offset"];

/// What a subscribe with `since` can be answered with.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// Every message after `since` up to the head, in position order.
    Recovered(Vec<MessageFrame>),
    /// Not all of them can be given; the reason is for logs and metrics.
    Impossible(&'static str),
}

/// What to read for a recovery, decided from the head alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryPlan {
    /// Nothing was missed.
    UpToDate,
    /// Read offsets `from..=to`.
    Read {
        from: u64,
        to: u64,
    },
    Impossible(&'static str),
}

/// Decides a recovery from the client's last position and the channel's head
/// (either may be [`Position::not_started`]). A client that subscribed before
/// the channel's first message recovers from offset 1 of whatever epoch the
/// channel started with.
pub fn plan_recovery(since: &Position, head: &Position, history_size: u64) -> RecoveryPlan {
    let since_offset = if since.is_not_started() {
        0
    } else if since.epoch != head.epoch {
        return RecoveryPlan::Impossible("epoch_changed");
    } else {
        since.offset
    };
    if since_offset > head.offset {
        return RecoveryPlan::Impossible("position_ahead_of_channel");
    }
    let missed = head.offset - since_offset;
    if missed == 0 {
        RecoveryPlan::UpToDate
    } else if missed > history_size {
        RecoveryPlan::Impossible("more_missed_than_history_keeps")
    } else {
        RecoveryPlan::Read {
            from: since_offset + 1,
            to: head.offset,
        }
    }
}

/// A run's positions once its offsets are taken, before anything about them
/// is written: each message's position, in the run's order, and which of
/// the messages (by index, each id once) this try took offsets for, and
/// which an earlier try had claimed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reservation {
    pub positions: Vec<Position>,
    pub taken: Vec<usize>,
    pub claimed_before: Vec<usize>,
}

/// Each message id of a run once, with the index of its first message, in
/// the run's order: an id twice in a run (deleted and written again within
/// one batch) gets one position.
pub(crate) fn first_of_each_id<'a>(messages: &[&'a MessageRecord]) -> Vec<(&'a str, usize)> {
    let mut seen = std::collections::HashSet::new();
    messages
        .iter()
        .enumerate()
        .filter(|(_, message)| seen.insert(message.message_id.as_str()))
        .map(|(index, message)| (message.message_id.as_str(), index))
        .collect()
}

/// Each message's position, in the run's order, from the positions by id.
pub(crate) fn positions_in_order(
    channel: &str,
    messages: &[&MessageRecord],
    by_id: &std::collections::HashMap<String, Position>,
) -> Result<Vec<Position>, Error> {
    messages
        .iter()
        .map(|message| {
            by_id
                .get(&message.message_id)
                .cloned()
                .ok_or_else(|| Error::PositionMissing {
                    channel: channel.to_owned(),
                    message_id: message.message_id.clone(),
                })
        })
        .collect()
}

pub trait ChannelHistory: Send + Sync {
    /// Takes the positions of consecutive `messages` of `channel`: the ones
    /// they already have (a retried record keeps its position), and for the
    /// others the next offsets, with one update of the channel's head.
    /// Nothing can fail for good after the head has moved but the writes.
    fn reserve_positions(
        &self,
        channel: &str,
        messages: &[&MessageRecord],
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Reservation, Error>> + Send;

    /// Writes what `reservation` took: the history entries and the claims
    /// of the new positions, and the entries an earlier try may have left
    /// unwritten. Answers each message's position (one another try claimed
    /// meanwhile wins).
    fn record_positions(
        &self,
        channel: &str,
        messages: &[&MessageRecord],
        reservation: Reservation,
        history_ttl_seconds: u64,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Vec<Position>, Error>> + Send;

    /// [`ChannelHistory::reserve_positions`], then
    /// [`ChannelHistory::record_positions`].
    fn assign_positions(
        &self,
        channel: &str,
        messages: &[&MessageRecord],
        history_ttl_seconds: u64,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Vec<Position>, Error>> + Send {
        async move {
            let reservation = self.reserve_positions(channel, messages, now_epoch_seconds).await?;
            self.record_positions(channel, messages, reservation, history_ttl_seconds, now_epoch_seconds)
                .await
        }
    }

    /// [`ChannelHistory::assign_positions`] for one message.
    fn assign_position(
        &self,
        channel: &str,
        message: &MessageRecord,
        history_ttl_seconds: u64,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Position, Error>> + Send {
        async move {
            let positions = self
                .assign_positions(channel, &[message], history_ttl_seconds, now_epoch_seconds)
                .await?;
            positions.into_iter().next().ok_or_else(|| Error::PositionMissing {
                channel: channel.to_owned(),
                message_id: message.message_id.clone(),
            })
        }
    }

    /// When the channel's current epoch started (epoch seconds), if its head
    /// says so: while the epoch is younger than the history TTL, none of its
    /// entries can have expired.
    fn epoch_started_at(
        &self,
        channel: &str,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Option<i64>, Error>> + Send;

    /// The channel's latest position; `None` for a channel nobody has
    /// published to (or whose head expired). Reading it writes nothing.
    fn channel_head(
        &self,
        channel: &str,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Option<Position>, Error>> + Send;

    /// [`ChannelHistory::channel_head`] read eventually consistent, for half
    /// the read units: it may be a moment behind, even behind a position
    /// read before. For polls, which go on from their own position.
    fn recent_channel_head(
        &self,
        channel: &str,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Option<Position>, Error>> + Send {
        self.channel_head(channel, now_epoch_seconds)
    }

    /// The unexpired entries at offsets `from..=to` of `epoch`, in order;
    /// `None` as soon as their frames pass `max_bytes`, so a stale `since`
    /// cannot make one subscribe read more than one reply can carry.
    fn read_history(
        &self,
        channel: &str,
        epoch: &str,
        range: (u64, u64),
        max_bytes: usize,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Option<Vec<MessageFrame>>, Error>> + Send;
}

/// Answers a subscribe that carried `since`, within `max_bytes` of frames.
pub async fn recover<H: ChannelHistory + Clocked>(
    history: &H,
    channel: &str,
    since: &Position,
    head: &Position,
    settings: &HistorySettings,
    max_bytes: usize,
    now_epoch_seconds: i64,
) -> Result<Recovery, Error> {
    let (from, to) = match plan_recovery(since, head, settings.size) {
        RecoveryPlan::UpToDate => return Ok(Recovery::Recovered(Vec::new())),
        RecoveryPlan::Impossible(reason) => return Ok(Recovery::Impossible(reason)),
        RecoveryPlan::Read { from, to } => (from, to),
    };
    // The entry the client saw last is read too, as an anchor: while it is
    // there, nothing after it has expired.
    let anchor = (from > 1).then_some(from - 1);
    let mut entries = Vec::new();
    for attempt in 0..=RECOVERY_REREADS {
        let Some(read) = history
            .read_history(
                channel,
                &head.epoch,
                (anchor.unwrap_or(from), to),
                max_bytes,
                now_epoch_seconds,
            )
            .await?
        else {
            return Ok(Recovery::Impossible("over_the_replay_bound"));
        };
        entries = read;
        let present = entries.iter().filter(|entry| offset_of(entry) >= from).count() as u64;
        if present == to - from + 1 {
            break;
        }
        // A run that has just taken its offsets writes its entries a round
        // trip later: missing ones may be on their way.
        if attempt < RECOVERY_REREADS {
            history.clock().sleep(RECOVERY_REREAD_PAUSE).await;
        }
    }
    let missing = (to - from + 1) - entries.iter().filter(|entry| offset_of(entry) >= from).count() as u64;
    let anchored = match anchor {
        Some(anchor) => entries.first().map(offset_of) == Some(anchor),
        // From the channel's first message: the epoch's own age is the anchor.
        None if missing > 0 => history
            .epoch_started_at(channel, now_epoch_seconds)
            .await?
            .is_some_and(|started_at| now_epoch_seconds - started_at < settings.ttl_seconds as i64),
        None => true,
    };
    if missing > 0 && !anchored {
        // Without the anchor the missing entries may have expired.
        return Ok(Recovery::Impossible("history_expired"));
    }
    // With it, an offset still missing after the re-reads was never written:
    // a try that took it was stopped before writing, and its messages were
    // given later offsets when retried. Nothing was sent at it.
    if missing > 0 {
        tracing::info!(
            channel,
            from,
            to,
            missing,
            "recovery skips offsets that were never written"
        );
    }
    Ok(Recovery::Recovered(
        entries.into_iter().filter(|entry| offset_of(entry) >= from).collect(),
    ))
}

fn offset_of(frame: &MessageFrame) -> u64 {
    frame.position.as_ref().map_or(0, |position| position.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_reads_exactly_what_was_missed_or_says_why_it_cannot() {
        let head = Position::new("e", 10);
        assert_eq!(
            plan_recovery(&Position::new("e", 10), &head, 100),
            RecoveryPlan::UpToDate
        );
        assert_eq!(
            plan_recovery(&Position::new("e", 4), &head, 100),
            RecoveryPlan::Read { from: 5, to: 10 }
        );
        assert_eq!(
            plan_recovery(&Position::new("e", 4), &head, 6),
            RecoveryPlan::Read { from: 5, to: 10 }
        );
        assert_eq!(
            plan_recovery(&Position::new("e", 4), &head, 5),
            RecoveryPlan::Impossible("more_missed_than_history_keeps")
        );
        assert_eq!(
            plan_recovery(&Position::new("old", 4), &head, 100),
            RecoveryPlan::Impossible("epoch_changed")
        );
        assert_eq!(
            plan_recovery(&Position::new("e", 11), &head, 100),
            RecoveryPlan::Impossible("position_ahead_of_channel")
        );
    }

    #[test]
    fn a_client_that_subscribed_before_the_first_message_recovers_from_the_first() {
        let not_started = Position::not_started();
        assert_eq!(plan_recovery(&not_started, &not_started, 100), RecoveryPlan::UpToDate);
        assert_eq!(
            plan_recovery(&not_started, &Position::new("e", 3), 100),
            RecoveryPlan::Read { from: 1, to: 3 }
        );
        assert_eq!(
            plan_recovery(&not_started, &Position::new("e", 3), 2),
            RecoveryPlan::Impossible("more_missed_than_history_keeps")
        );
        assert_eq!(
            plan_recovery(&Position::new("e", 3), &not_started, 100),
            RecoveryPlan::Impossible("epoch_changed"),
            "a head that expired took the channel's history with it"
        );
    }
}
