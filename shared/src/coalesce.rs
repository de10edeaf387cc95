//! Several messages for the same targets in as few frames as API Gateway
//! allows: posts, not bytes, are what the account's request throttle counts.

use airwave_protocol::MessageFrame;

use crate::message::MAX_FRAME_BYTES;

/// `{"type":"batch","messages":[` and `]}`.
const BATCH_OVERHEAD: usize = r#"{"type":"batch","messages":[]}"#.len();

/// The frames that carry `messages` in order: runs of consecutive messages in
/// `batch` frames of at most `limit` bytes, a lone message as a plain
/// `message` frame. A message that alone exceeds `limit` still gets a frame
/// of its own (its size was checked when it was published).
pub fn coalesce(messages: &[MessageFrame], limit: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut run: Vec<&MessageFrame> = Vec::new();
    let mut run_bytes = BATCH_OVERHEAD;
    for message in messages {
        let size = serde_json::to_vec(message).map_or(0, |bytes| bytes.len());
        // One byte for the comma before every message but the first.
        let added = size + usize::from(!run.is_empty());
        if !run.is_empty() && run_bytes + added > limit {
            frames.push(encode(&run));
            run.clear();
            run_bytes = BATCH_OVERHEAD;
        }
        run_bytes += size + usize::from(!run.is_empty());
        run.push(message);
    }
    if !run.is_empty() {
        frames.push(encode(&run));
    }
    frames
}

/// Headroom under API Gateway's 128 KB message limit for a batch frame: AWS
/// does not say whether "KB" is 1,000 or 1,024 bytes (3,072 bytes apart), so
/// a packed frame stays 8 KiB under the larger reading, below both.
pub const BATCH_HEADROOM_BYTES: usize = 8 * 1024;

/// [`coalesce`] within API Gateway's message limit, less [`BATCH_HEADROOM_BYTES`].
pub fn coalesce_for_api_gateway(messages: &[MessageFrame]) -> Vec<Vec<u8>> {
    coalesce(messages, MAX_FRAME_BYTES - BATCH_HEADROOM_BYTES)
}

fn encode(run: &[&MessageFrame]) -> Vec<u8> {
    match run {
        [single] => single.to_text().into_bytes(),
        _ => {
            let owned: Vec<MessageFrame> = run.iter().map(|message| (*message).clone()).collect();
            MessageFrame::batch_text(owned).into_bytes()
        }
    }
}

#[cfg(test)]
mod tests {
    use airwave_protocol::{parse_server_frame, Incoming};
    use serde_json::json;

    use super::*;

    fn message(id: usize, filler: usize) -> MessageFrame {
        MessageFrame {
            id: format!("m-{id}"),
            channel: Some("prices".into()),
            data: json!({"note": "x".repeat(filler)}),
            position: None,
            publisher: None,
            to_user: None,
        }
    }

    fn read(frames: &[Vec<u8>]) -> Vec<String> {
        frames
            .iter()
            .flat_map(
                |frame| match parse_server_frame(std::str::from_utf8(frame).unwrap()).unwrap() {
                    Incoming::Messages(messages) => messages.into_iter().map(|message| message.id),
                    other => panic!("not messages: {other:?}"),
                },
            )
            .collect()
    }

    #[test]
    fn small_messages_share_one_frame_in_order() {
        let messages: Vec<_> = (0..100).map(|id| message(id, 50)).collect();
        let frames = coalesce(&messages, MAX_FRAME_BYTES);
        assert_eq!(frames.len(), 1);
        let expected: Vec<_> = (0..100).map(|id| format!("m-{id}")).collect();
        assert_eq!(read(&frames), expected);
    }

    #[test]
    fn every_frame_stays_within_the_limit_and_the_order_holds_across_frames() {
        let messages: Vec<_> = (0..40).map(|id| message(id, 1_000 + id * 37)).collect();
        let limit = 8 * 1024;
        let frames = coalesce(&messages, limit);
        assert!(frames.len() > 1);
        for frame in &frames {
            assert!(frame.len() <= limit, "a frame of {} bytes", frame.len());
        }
        let expected: Vec<_> = (0..40).map(|id| format!("m-{id}")).collect();
        assert_eq!(read(&frames), expected);
    }

    #[test]
    fn a_lone_message_is_a_plain_message_frame() {
        let frames = coalesce(&[message(7, 10)], MAX_FRAME_BYTES);
        assert_eq!(frames, vec![message(7, 10).to_text().into_bytes()]);
    }

    #[test]
    fn a_message_larger_than_the_limit_travels_alone() {
        let messages = [message(1, 10), message(2, 5_000), message(3, 10)];
        let frames = coalesce(&messages, 1_024);
        assert_eq!(frames.len(), 3);
        assert_eq!(read(&frames), ["m-1", "m-2", "m-3"]);
    }
}
