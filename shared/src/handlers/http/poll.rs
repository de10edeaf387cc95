//! `POST /v1/poll`: the fallback transport's read side. For each channel the
//! caller may subscribe to, the messages after its position, read from the
//! channel's history exactly as a resubscribe recovers them, a page of at
//! most [`POLL_PAGE`] at a time. Nothing is written: a poll costs an
//! eventually consistent head read per channel (half a read unit), and a
//! history query only for a channel that moved.

use std::collections::BTreeMap;

use airwave_protocol::http::{ChannelPoll, HttpError, PollRequest, PollResponse, POLL_PAGE};
use airwave_protocol::Position;
use aws_lambda_events::apigw::ApiGatewayV2httpResponse;

use super::{error_response, json_response, Caller};
use crate::channel::validate_channel_name;
use crate::history::{plan_recovery, recover, ChannelHistory, Recovery, RecoveryPlan};
use crate::permissions::may_subscribe;
use crate::telemetry::metric;
use crate::time::Clocked;
use crate::{Config, Error};

/// What the poll route reads: the channels' heads and history.
pub trait PollRouteStore: ChannelHistory + Clocked {}

impl<S> PollRouteStore for S where S: ChannelHistory + Clocked {}

/// Bytes of messages one channel's answer may hold: with the most channels a
/// connection may have (100), an answer stays under Lambda's 6 MB.
const CHANNEL_BUDGET_BYTES: usize = 48 * 1024;

pub(super) async fn poll<S: PollRouteStore>(
    store: &S,
    config: &Config,
    caller: &Caller,
    body: &str,
) -> Result<ApiGatewayV2httpResponse, Error> {
    let request: PollRequest = match serde_json::from_str(body) {
        Ok(request) => request,
        Err(error) if error.is_syntax() || error.is_eof() => {
            return Ok(error_response(
                400,
                "invalid_json",
                format!("the body is not JSON: {error}"),
            ))
        }
        Err(error) => {
            return Ok(error_response(
                400,
                "invalid_request",
                format!("the body must be {{\"channels\": {{\"<channel>\": <position or null>}}}}: {error}"),
            ))
        }
    };
    if request.channels.len() > config.max_channels_per_connection {
        return Ok(error_response(
            400,
            "channel_limit",
            format!(
                "a poll reads at most {} channels, as a connection may subscribe to",
                config.max_channels_per_connection
            ),
        ));
    }
    let now = store.clock().epoch_seconds();
    let rights = caller.rights(now);
    let mut channels = BTreeMap::new();
    for (channel, since) in request.channels {
        let refused = |code: &str, message: String| ChannelPoll::Refused {
            error: HttpError {
                code: code.to_owned(),
                message,
            },
        };
        let answer = if let Err(error) = validate_channel_name(&channel) {
            refused("invalid_channel", error.to_string())
        } else if let Some(refusal) = rights.as_ref().and_then(|record| may_subscribe(record, &channel).err()) {
            metrics::counter!(metric::CLIENT_ERRORS, "code" => "channel_forbidden").increment(1);
            refused("channel_forbidden", refusal.explain().to_owned())
        } else {
            read_channel(store, config, &channel, since, now).await?
        };
        channels.insert(channel, answer);
    }
    Ok(json_response(
        200,
        &PollResponse {
            channels,
            max_channels: config.max_channels_per_connection,
        },
    ))
}

/// One channel: its position, and the page of messages after `since`.
pub(crate) async fn read_channel<H: ChannelHistory + Clocked>(
    history: &H,
    config: &Config,
    channel: &str,
    since: Option<Position>,
    now: i64,
) -> Result<ChannelPoll, Error> {
    if !config.history.enabled() {
        return Ok(ChannelPoll::Read {
            position: None,
            recovered: since.map(|_| false),
            publications: Vec::new(),
            more: false,
        });
    }
    let head = history
        .recent_channel_head(channel, now)
        .await?
        .unwrap_or_else(Position::not_started);
    let Some(since) = since else {
        return Ok(ChannelPoll::Read {
            position: Some(head),
            recovered: None,
            publications: Vec::new(),
            more: false,
        });
    };
    // A head read a moment behind the client's position: nothing new yet.
    if since.epoch == head.epoch && since.offset > head.offset {
        return Ok(ChannelPoll::Read {
            position: Some(since),
            recovered: Some(true),
            publications: Vec::new(),
            more: false,
        });
    }
    // A page ends at most POLL_PAGE offsets on; the next poll reads on from there.
    let (page_end, more) = match plan_recovery(&since, &head, config.history.size) {
        RecoveryPlan::Read { from, to } if to - from + 1 > POLL_PAGE => {
            (Position::new(head.epoch.clone(), from + POLL_PAGE - 1), true)
        }
        _ => (head.clone(), false),
    };
    Ok(
        match recover(
            history,
            channel,
            &since,
            &page_end,
            &config.history,
            CHANNEL_BUDGET_BYTES,
            now,
        )
        .await?
        {
            Recovery::Recovered(publications) => ChannelPoll::Read {
                position: Some(page_end),
                recovered: Some(true),
                publications,
                more,
            },
            Recovery::Impossible(reason) => {
                metrics::counter!(metric::RECOVERIES, "outcome" => reason).increment(1);
                tracing::info!(channel, reason, "poll cannot recover");
                ChannelPoll::Read {
                    position: Some(head),
                    recovered: Some(false),
                    publications: Vec::new(),
                    more: false,
                }
            }
        },
    )
}
