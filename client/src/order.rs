//! Per-channel order: messages reach the owner in position order, each once,
//! however the server's stream shards and a reconnect interleave them.
//!
//! For each subscribed channel the client keeps the last position it
//! delivered. A message right after it is delivered (with any buffered
//! successors); an older one is a duplicate; a later one waits in a buffer
//! until the gap fills, and a gap that stays open for [`ChannelOrder`]'s wait
//! is fetched by subscribing again with `since` (the server's recovery).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use airwave_protocol::{MessageFrame, Position};
use tokio::time::Instant;

/// What the owner is told about a channel besides its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// What was missed could not be recovered (outside the history kept, over
    /// the replay bound, or the channel's epoch changed): reload state.
    RecoveryFailed { channel: String },
}

#[derive(Debug, Default)]
struct Channel {
    /// The last position delivered (or the subscription's starting point).
    position: Option<Position>,
    /// A subscribe is out and its reply has not come: hold messages until it does.
    awaiting_reply: bool,
    /// The server assigns no positions here: deliver as they come.
    unordered: bool,
    buffer: BTreeMap<u64, MessageFrame>,
    gap_since: Option<Instant>,
    /// Its subscribe got no reply (the request failed): subscribe again when
    /// the gap wait has passed.
    needs_subscribe: bool,
}

/// The order of every subscribed channel.
#[derive(Debug)]
pub struct ChannelOrder {
    channels: HashMap<String, Channel>,
    gap_wait: Duration,
    duplicates: u64,
}

/// What handling a frame gave: messages to deliver in this order, and notices.
#[derive(Debug, Default, PartialEq)]
pub struct Delivery {
    pub messages: Vec<MessageFrame>,
    pub notices: Vec<Notice>,
}

impl ChannelOrder {
    pub fn new(gap_wait: Duration) -> Self {
        ChannelOrder {
            channels: HashMap::new(),
            gap_wait,
            duplicates: 0,
        }
    }

    /// Messages dropped because their position was already delivered.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The position to recover from when subscribing to `channel` again.
    pub fn since(&self, channel: &str) -> Option<Position> {
        self.channels.get(channel).and_then(|state| state.position.clone())
    }

    /// A subscribe for `channel` went out.
    pub fn subscribing(&mut self, channel: &str) {
        let state = self.channels.entry(channel.to_owned()).or_default();
        state.awaiting_reply = true;
        state.needs_subscribe = false;
    }

    /// A subscribe for `channel` failed without a reply (API Gateway's error
    /// frame, a timeout): the server may or may not hold the subscription, so
    /// it is sent again, with `since`, after the gap wait.
    pub fn subscribe_failed(&mut self, channel: &str, now: Instant) {
        if let Some(state) = self.channels.get_mut(channel) {
            state.awaiting_reply = false;
            state.needs_subscribe = true;
            state.gap_since = Some(now);
        }
    }

    pub fn unsubscribed(&mut self, channel: &str) {
        self.channels.remove(channel);
    }

    /// The `subscribed` reply: where the subscription starts, and what it recovered.
    pub fn subscribed(
        &mut self,
        channel: &str,
        position: Option<Position>,
        recovered: Option<bool>,
        publications: Vec<MessageFrame>,
        now: Instant,
    ) -> Delivery {
        let mut delivery = Delivery::default();
        let state = self.channels.entry(channel.to_owned()).or_default();
        state.awaiting_reply = false;
        let Some(head) = position else {
            // An older server without positions: no order to keep.
            state.unordered = true;
            delivery
                .messages
                .extend(std::mem::take(&mut state.buffer).into_values());
            delivery.messages.extend(publications);
            return delivery;
        };
        state.unordered = false;
        match recovered {
            Some(true) => {
                if state
                    .position
                    .as_ref()
                    .is_none_or(|last| last.epoch != head.epoch || last.is_not_started())
                {
                    state.position = Some(Position::new(head.epoch.clone(), 0));
                }
                // The reply holds every message after `since` there is, in
                // order: an offset missing between two of them was never
                // written, so they go out as they come.
                for publication in publications {
                    let Some(position) = publication.position.clone() else {
                        continue;
                    };
                    let is_next = state
                        .position
                        .as_ref()
                        .is_some_and(|last| last.epoch == position.epoch && last.offset < position.offset);
                    if !is_next {
                        self.duplicates += 1;
                        continue;
                    }
                    // Already buffered from the live stream: the same message twice.
                    if state.buffer.remove(&position.offset).is_some() {
                        self.duplicates += 1;
                    }
                    delivery.messages.push(publication);
                    state.position = Some(position);
                }
            }
            Some(false) => {
                // Nothing received is thrown away: what is buffered up to the
                // head goes out (in order, with the hole before it), and the
                // owner is told. What follows the head is ordered as usual.
                delivery.notices.push(Notice::RecoveryFailed {
                    channel: channel.to_owned(),
                });
                let after_head = state.buffer.split_off(&(head.offset + 1));
                delivery
                    .messages
                    .extend(std::mem::replace(&mut state.buffer, after_head).into_values());
                state.position = Some(head.clone());
            }
            None => state.position = Some(head.clone()),
        }
        // Everything up to the head is either delivered or not this subscription's.
        let start = state.position.clone();
        Self::drain(state, start, &mut delivery, &mut self.duplicates);
        if let Some(last) = &state.position {
            if last.offset < head.offset && recovered != Some(false) {
                // Recovered up to the head, so nothing between can be missing.
                state.position = Some(head);
            }
        }
        let start = state.position.clone();
        Self::drain(state, start, &mut delivery, &mut self.duplicates);
        if !state.buffer.is_empty() && state.gap_since.is_none() {
            state.gap_since = Some(now);
        }
        delivery
    }

    /// A pushed message. Messages to everyone and messages addressed to the user (`to_user`)
    /// belong to no channel's order and are delivered as they come.
    pub fn message(&mut self, message: MessageFrame, now: Instant) -> Delivery {
        let mut delivery = Delivery::default();
        if message.to_user.is_some() {
            delivery.messages.push(message);
            return delivery;
        }
        let (Some(channel), Some(position)) = (message.channel.clone(), message.position.clone()) else {
            delivery.messages.push(message);
            return delivery;
        };
        let Some(state) = self.channels.get_mut(&channel) else {
            delivery.messages.push(message);
            return delivery;
        };
        if state.unordered {
            delivery.messages.push(message);
            return delivery;
        }
        if state.awaiting_reply || state.position.is_none() {
            state.buffer.entry(position.offset).or_insert(message);
            return delivery;
        }
        let Some(mut last) = state.position.clone() else {
            return delivery;
        };
        if last.is_not_started() {
            // Subscribed before the channel's first message: its epoch is
            // the first one seen, counted from its start.
            last = Position::new(position.epoch.clone(), 0);
            state.position = Some(last.clone());
        }
        if position.epoch != last.epoch {
            // The channel's history was reset: what came before cannot be
            // ordered against this, so start again from here.
            delivery.notices.push(Notice::RecoveryFailed { channel });
            delivery
                .messages
                .extend(std::mem::take(&mut state.buffer).into_values());
            state.position = Some(position);
            state.gap_since = None;
            delivery.messages.push(message);
            return delivery;
        }
        if position.offset <= last.offset || state.buffer.contains_key(&position.offset) {
            self.duplicates += 1;
            return delivery;
        }
        state.buffer.insert(position.offset, message);
        Self::drain(state, Some(last), &mut delivery, &mut self.duplicates);
        if !state.buffer.is_empty() && state.gap_since.is_none() {
            state.gap_since = Some(now);
        }
        delivery
    }

    /// Channels whose gap has stayed open for the wait, with the position to
    /// recover from. Each is reported again only after another wait.
    pub fn gaps_due(&mut self, now: Instant) -> Vec<(String, Option<Position>)> {
        let mut due = Vec::new();
        for (channel, state) in &mut self.channels {
            let Some(since) = state.gap_since else {
                continue;
            };
            if state.awaiting_reply || now.duration_since(since) < self.gap_wait {
                continue;
            }
            if state.position.is_none() && !state.needs_subscribe {
                continue;
            }
            state.needs_subscribe = false;
            state.gap_since = (!state.buffer.is_empty()).then_some(now);
            due.push((channel.clone(), state.position.clone()));
        }
        due
    }

    /// When the next gap falls due, if one is open. A channel waiting for a
    /// subscribe's reply has no deadline: its reply settles it.
    pub fn next_gap_deadline(&self) -> Option<Instant> {
        self.channels
            .values()
            .filter(|state| !state.awaiting_reply)
            .filter_map(|state| state.gap_since)
            .min()
            .map(|since| since + self.gap_wait)
    }

    /// Delivers buffered messages that follow `start` without a gap; drops
    /// buffered ones at or before it.
    fn drain(state: &mut Channel, start: Option<Position>, delivery: &mut Delivery, duplicates: &mut u64) {
        let Some(mut last) = start else { return };
        while let Some((&offset, _)) = state.buffer.first_key_value() {
            if offset <= last.offset {
                state.buffer.pop_first();
                *duplicates += 1;
            } else if offset == last.offset + 1 {
                if let Some((_, message)) = state.buffer.pop_first() {
                    // From the not-started position, the first message names the epoch.
                    last = match &message.position {
                        Some(position) if last.is_not_started() => position.clone(),
                        _ => last.next(),
                    };
                    delivery.messages.push(message);
                }
            } else {
                break;
            }
        }
        state.position = Some(last);
        if state.buffer.is_empty() && !state.needs_subscribe {
            state.gap_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(offset: u64) -> MessageFrame {
        MessageFrame {
            id: format!("m{offset}"),
            channel: Some("c".into()),
            data: json!(offset),
            position: Some(Position::new("e", offset)),
            publisher: None,
            to_user: None,
        }
    }

    fn offsets(delivery: &Delivery) -> Vec<u64> {
        delivery
            .messages
            .iter()
            .filter_map(|m| m.position.as_ref().map(|p| p.offset))
            .collect()
    }

    fn subscribed_at(order: &mut ChannelOrder, offset: u64) {
        order.subscribing("c");
        order.subscribed("c", Some(Position::new("e", offset)), None, vec![], Instant::now());
    }

    #[test]
    fn messages_out_of_order_are_delivered_in_position_order_each_once() {
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        subscribed_at(&mut order, 0);
        let now = Instant::now();
        assert_eq!(offsets(&order.message(at(2), now)), Vec::<u64>::new());
        assert_eq!(offsets(&order.message(at(3), now)), Vec::<u64>::new());
        assert_eq!(offsets(&order.message(at(1), now)), vec![1, 2, 3]);
        assert_eq!(offsets(&order.message(at(2), now)), Vec::<u64>::new());
        assert_eq!(order.duplicates(), 1);
        assert_eq!(order.since("c"), Some(Position::new("e", 3)));
    }

    #[test]
    fn a_message_to_the_user_goes_out_at_once_while_the_channel_waits_for_its_gap() {
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        subscribed_at(&mut order, 0);
        let now = Instant::now();
        assert!(order.message(at(2), now).messages.is_empty());
        let personal = MessageFrame {
            id: "u-1".into(),
            channel: None,
            data: json!("hi"),
            position: None,
            publisher: None,
            to_user: Some("alice".into()),
        };
        assert_eq!(order.message(personal.clone(), now).messages, vec![personal]);
        // It took no place in the channel's order.
        assert_eq!(offsets(&order.message(at(1), now)), vec![1, 2]);
    }

    #[test]
    fn a_gap_that_stays_open_asks_for_recovery_from_the_last_delivered_position() {
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        subscribed_at(&mut order, 5);
        let start = Instant::now();
        order.message(at(7), start);
        assert!(order.gaps_due(start + Duration::from_secs(1)).is_empty());
        assert_eq!(
            order.gaps_due(start + Duration::from_secs(2)),
            vec![("c".to_owned(), Some(Position::new("e", 5)))]
        );
        // Asked once per wait.
        assert!(order.gaps_due(start + Duration::from_secs(3)).is_empty());
        order.subscribing("c");
        let filled = order.subscribed(
            "c",
            Some(Position::new("e", 7)),
            Some(true),
            vec![at(6), at(7)],
            Instant::now(),
        );
        assert_eq!(offsets(&filled), vec![6, 7]);
        assert_eq!(order.next_gap_deadline(), None);
    }

    #[test]
    fn messages_during_a_subscribe_wait_for_its_reply_and_recovery_comes_first() {
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        subscribed_at(&mut order, 10);
        order.subscribing("c");
        let now = Instant::now();
        assert!(order.message(at(14), now).messages.is_empty());
        assert!(order.message(at(13), now).messages.is_empty());
        let delivery = order.subscribed(
            "c",
            Some(Position::new("e", 13)),
            Some(true),
            vec![at(11), at(12), at(13)],
            Instant::now(),
        );
        assert_eq!(offsets(&delivery), vec![11, 12, 13, 14]);
        assert!(delivery.notices.is_empty());
    }

    #[test]
    fn a_recovery_with_an_offset_never_written_delivers_what_follows_it() {
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        let now = Instant::now();
        subscribed_at(&mut order, 10);
        let first = order.message(at(11), now);
        // 12 and 13 were taken by a try stopped before it wrote them.
        let held = order.message(at(14), now);
        assert_eq!((offsets(&first), offsets(&held)), (vec![11], vec![]));
        order.subscribing("c");
        let recovered = order.subscribed("c", Some(Position::new("e", 15)), Some(true), vec![at(14), at(15)], now);
        assert_eq!(offsets(&recovered), vec![14, 15]);
        assert_eq!(offsets(&order.message(at(16), now)), vec![16]);
        assert_eq!(order.duplicates(), 1, "14 came live and in the reply");
    }

    #[test]
    fn a_failed_recovery_is_reported_and_loses_nothing_that_arrived() {
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        subscribed_at(&mut order, 10);
        order.subscribing("c");
        order.message(at(20), Instant::now());
        order.message(at(60), Instant::now());
        order.message(at(62), Instant::now());
        let delivery = order.subscribed("c", Some(Position::new("e", 59)), Some(false), vec![], Instant::now());
        assert_eq!(delivery.notices, vec![Notice::RecoveryFailed { channel: "c".into() }]);
        // 20 (before the head) goes out; 60 follows the head; 62 waits for 61.
        assert_eq!(offsets(&delivery), vec![20, 60]);
        assert_eq!(order.since("c"), Some(Position::new("e", 60)));
        assert_eq!(offsets(&order.message(at(61), Instant::now())), vec![61, 62]);
    }

    #[test]
    fn a_channel_subscribed_before_its_first_message_takes_the_epoch_it_starts_with() {
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        order.subscribing("c");
        // One message arrives before the reply, one after.
        assert!(order.message(at(1), Instant::now()).messages.is_empty());
        let delivery = order.subscribed("c", Some(Position::not_started()), None, vec![], Instant::now());
        assert_eq!(offsets(&delivery), vec![1]);
        assert_eq!(offsets(&order.message(at(2), Instant::now())), vec![2]);
        assert_eq!(order.since("c"), Some(Position::new("e", 2)));

        // Away before anything was published: the resubscribe asks from the
        // not-started position and the recovery fills from offset 1.
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        order.subscribing("c");
        order.subscribed("c", Some(Position::not_started()), None, vec![], Instant::now());
        assert_eq!(order.since("c"), Some(Position::not_started()));
        order.subscribing("c");
        let delivery = order.subscribed(
            "c",
            Some(Position::new("e", 2)),
            Some(true),
            vec![at(1), at(2)],
            Instant::now(),
        );
        assert_eq!(offsets(&delivery), vec![1, 2]);
        assert!(delivery.notices.is_empty(), "no epoch change is reported");
        assert_eq!(order.since("c"), Some(Position::new("e", 2)));
    }

    #[test]
    fn a_new_epoch_starts_the_channel_again_and_says_so() {
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        subscribed_at(&mut order, 3);
        let mut reset = at(1);
        reset.position = Some(Position::new("f", 1));
        let delivery = order.message(reset, Instant::now());
        assert_eq!(delivery.messages.len(), 1);
        assert_eq!(delivery.notices, vec![Notice::RecoveryFailed { channel: "c".into() }]);
        assert_eq!(order.since("c"), Some(Position::new("f", 1)));
    }

    #[test]
    fn a_first_subscribe_starts_after_the_head_and_messages_without_positions_pass() {
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        order.subscribing("c");
        order.message(at(4), Instant::now());
        order.message(at(5), Instant::now());
        let delivery = order.subscribed("c", Some(Position::new("e", 4)), None, vec![], Instant::now());
        assert_eq!(offsets(&delivery), vec![5]);
        let broadcast = MessageFrame {
            id: "b".into(),
            channel: None,
            data: json!(1),
            position: None,
            publisher: None,
            to_user: None,
        };
        assert_eq!(order.message(broadcast, Instant::now()).messages.len(), 1);
    }

    #[test]
    fn a_gap_left_after_a_subscribe_reply_is_timed_and_a_pending_reply_sets_no_deadline() {
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        let start = Instant::now();
        order.subscribing("c");
        order.message(at(12), start);
        assert_eq!(order.next_gap_deadline(), None, "the reply settles it");
        let delivery = order.subscribed("c", Some(Position::new("e", 10)), None, vec![], start);
        assert!(delivery.messages.is_empty(), "12 waits for 11");
        assert_eq!(order.next_gap_deadline(), Some(start + Duration::from_secs(2)));
        assert_eq!(
            order.gaps_due(start + Duration::from_secs(2)),
            vec![("c".to_owned(), Some(Position::new("e", 10)))]
        );
    }

    #[test]
    fn a_subscribe_that_failed_without_a_reply_is_sent_again_after_the_wait() {
        let mut order = ChannelOrder::new(Duration::from_secs(2));
        let start = Instant::now();
        subscribed_at(&mut order, 3);
        order.subscribing("c");
        order.subscribe_failed("c", start);
        assert!(order.gaps_due(start + Duration::from_secs(1)).is_empty());
        assert_eq!(
            order.gaps_due(start + Duration::from_secs(2)),
            vec![("c".to_owned(), Some(Position::new("e", 3)))]
        );
        assert!(order.gaps_due(start + Duration::from_secs(5)).is_empty(), "asked once");
    }
}
