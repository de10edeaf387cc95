use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::http::HeaderValue;
use lambda_runtime::LambdaEvent;
use tracing::Instrument;

use super::route_response;
use crate::admission::{self, AdmitOutcome, CapScope, Slot};
use crate::auth::{self, Authenticator};
use crate::config::UserCapMode;
use crate::connection::ConnectionRecord;
use crate::eviction::{EvictOutcome, Eviction};
use crate::liveness::{release_gone_holders, SlotHolders};
use crate::store::{AdmissionStore, ConnectionStore};
use crate::telemetry::metric;
use crate::time::Clocked;
use crate::Closer;
use crate::{Config, Error};
use airwave_protocol::{ErrorCode, Negotiated, UNSUPPORTED_VERSION_REASON, UNSUPPORTED_VERSION_STATUS};

/// `$connect`: authenticates, throttles, checks the caps and stores the
/// connection with its TTL. The order is the cheapest refusal first: a bad
/// token costs no DynamoDB call and writes nothing, a throttled attempt costs
/// one counter update, and only then is a slot taken.
///
/// Answers: 200 admitted (selecting the protocol version the client offered,
/// see [`airwave_protocol::negotiate`]), 426 when it offered only versions
/// this server does not speak, 401 bad or missing token (when authentication
/// is on), 429 too many attempts from this IP in the window, 403 over a cap,
/// 400 for an event without a connection id or source IP (API Gateway always
/// sends both). A store failure is returned as an error: API Gateway refuses the
/// handshake with 500 and the client retries later.
///
/// `authenticator` is `None` when authentication is off; build it once per
/// cold start ([`Authenticator::from_config`]) so an identity provider's keys
/// stay cached between invocations.
///
/// With `AIRWAVE_USER_CAP_MODE=evict_oldest`, a full per-user cap admits the
/// new connection in place of the user's oldest, which `closer` then closes
/// with a `closing` frame saying `evicted`.
pub async fn handle_connect<S: AdmissionStore + Eviction + SlotHolders + ConnectionStore + Clocked>(
    store: &S,
    authenticator: Option<&Authenticator>,
    closer: Option<&Closer>,
    config: &Config,
    event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<ApiGatewayProxyResponse, Error> {
    let request = &event.payload;
    let context = &request.request_context;
    let span = tracing::info_span!(
        "connect",
        request_id = %event.context.request_id,
        connection_id = context.connection_id.as_deref().unwrap_or_default(),
        source_ip = context.identity.source_ip.as_deref().unwrap_or_default(),
        user_id = tracing::field::Empty,
    );
    async {
        let Some(connection_id) = context.connection_id.clone() else {
            return Ok(refuse(&Refusal::bad_event("missing_connection_id")));
        };
        let Some(source_ip) = context.identity.source_ip.clone() else {
            return Ok(refuse(&Refusal::bad_event("missing_source_ip")));
        };
        // The version first: a client this server cannot talk to is told so
        // before its token is read or anything is counted.
        let offered = auth::offered_subprotocols(request);
        let version = airwave_protocol::negotiate(offered.iter().map(String::as_str));
        if version == Negotiated::Unsupported {
            return Ok(refuse(&Refusal {
                status: UNSUPPORTED_VERSION_STATUS,
                reason: UNSUPPORTED_VERSION_REASON,
                source_ip: Some(&source_ip),
                user_id: None,
                limit: None,
                current: None,
            }));
        }

        let identity = match authenticator {
            None => None,
            Some(authenticator) => {
                let verified = match auth::token_from_request(request) {
                    Some(token) => authenticator.identify(&token).await,
                    None => Err(auth::TokenRejection::Missing),
                };
                match verified {
                    Ok(identity) => Some(identity),
                    Err(rejection) => {
                        return Ok(refuse(&Refusal {
                            status: rejection.status(),
                            reason: rejection.as_str(),
                            source_ip: Some(&source_ip),
                            user_id: None,
                            limit: None,
                            current: None,
                        }))
                    }
                }
            }
        };
        let (user_id, allowed_channels, allowed_publish, token_expires_at, operator) = match identity {
            Some(identity) => (
                Some(identity.user_id),
                identity.allowed_channels,
                identity.allowed_publish,
                Some(identity.token_expires_at),
                identity.operator,
            ),
            None => (None, None, None, None, false),
        };
        if let Some(user_id) = &user_id {
            tracing::Span::current().record("user_id", user_id.as_str());
        }

        // API Gateway's own timestamp of the request, so the window does not
        // depend on how long the invocation waited.
        let clock = store.clock();
        let requested_at_ms = if context.request_time_epoch > 0 {
            context.request_time_epoch
        } else {
            clock.epoch_millis()
        };
        let limits = &config.admission;
        if limits.attempts_per_ip > 0 {
            let window = admission::window_of(requested_at_ms, limits.window_seconds);
            let attempt = store
                .count_connect_attempt(
                    &source_ip,
                    window,
                    admission::attempts_expire_at(window, limits.window_seconds),
                )
                .await?;
            if attempt > limits.attempts_per_ip {
                metrics::counter!(metric::CONNECT_THROTTLED).increment(1);
                return Ok(refuse(&Refusal {
                    status: 429,
                    reason: "ip_throttled",
                    source_ip: Some(&source_ip),
                    user_id: user_id.as_deref(),
                    limit: Some(limits.attempts_per_ip),
                    current: Some(attempt),
                }));
            }
        }

        let connected_at_ms = if context.connected_at > 0 {
            context.connected_at
        } else {
            clock.epoch_millis()
        };
        let slots = admission::slots_for(limits, &source_ip, user_id.as_deref());
        let slot_key = |scope: CapScope| {
            slots
                .iter()
                .find(|slot| slot.scope == scope)
                .map(|slot| slot.counter_key.clone())
        };
        let record = ConnectionRecord {
            connection_id,
            source_ip: source_ip.clone(),
            user_id: user_id.clone(),
            allowed_channels,
            allowed_publish,
            connected_at_ms,
            // Never past the token: the fan-out stops at the record's expiry.
            expires_at: (clock.epoch_seconds() + config.connection_ttl_seconds as i64)
                .min(token_expires_at.unwrap_or(i64::MAX)),
            token_expires_at,
            operator,
            domain_name: context.domain_name.clone(),
            stage: context.stage.clone(),
            channels: Vec::new(),
            slot_total: slot_key(CapScope::Total),
            slot_user: slot_key(CapScope::User),
            slot_ip: slot_key(CapScope::Ip),
        };
        match admit(store, closer, config, &record, &slots).await? {
            Admission::Admitted => {}
            Admission::Evicted(old) => close_evicted(closer, &old, limits.max_connections_per_user).await,
            Admission::Refused { slot, open } => {
                return Ok(refuse(&Refusal {
                    status: 403,
                    reason: cap_reason(slot.scope),
                    source_ip: Some(&source_ip),
                    user_id: user_id.as_deref(),
                    limit: Some(slot.cap),
                    current: Some(open),
                }))
            }
        }
        tracing::info!(
            expires_at = record.expires_at,
            slots = slots.len(),
            "connection admitted"
        );
        metrics::counter!(metric::CONNECTIONS_ADMITTED).increment(1);
        let mut response = route_response(200, "");
        // A browser fails the handshake if it offered subprotocols and the
        // answer selects none of them.
        if let Negotiated::Selected(protocol) = version {
            response
                .headers
                .insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
        }
        Ok(response)
    }
    .instrument(span)
    .await
}

/// How taking the slots ended.
enum Admission {
    Admitted,
    /// Admitted in place of this connection of the same user.
    Evicted(Box<ConnectionRecord>),
    /// `slot` is full; `open` is its count when it was read.
    Refused {
        slot: Slot,
        open: u64,
    },
}

/// Evictions tried per connect: each races other connects of the same user.
const EVICTION_ROUNDS: u32 = 3;

/// Takes the slots. When a cap is full, gives back the slots of expired
/// connections in that cap's scope, then those of holders API Gateway says
/// are gone (`GET @connections`), and tries again, once per cap, since the
/// next try may find another cap full. A full per-user cap in evict mode then
/// swaps the user's oldest connection for this one.
async fn admit<S: AdmissionStore + Eviction + SlotHolders + ConnectionStore + Clocked>(
    store: &S,
    closer: Option<&Closer>,
    config: &Config,
    record: &ConnectionRecord,
    slots: &[Slot],
) -> Result<Admission, Error> {
    let mode = config.user_cap_mode;
    let mut reclaimed: Vec<CapScope> = Vec::new();
    let mut checked: Vec<CapScope> = Vec::new();
    let mut evictions = 0;
    loop {
        let (slot, open) = match store.admit_connection(record, slots).await? {
            AdmitOutcome::Admitted => return Ok(Admission::Admitted),
            AdmitOutcome::CapReached { slot, open } => (slot, open),
        };
        if !reclaimed.contains(&slot.scope) {
            reclaimed.push(slot.scope);
            let released = store
                .reclaim_expired_slots(&slot, store.clock().epoch_seconds())
                .await?;
            if released > 0 {
                metrics::counter!(metric::SLOTS_RECLAIMED).increment(released as u64);
                continue;
            }
        }
        if let (Some(closer), false) = (closer, checked.contains(&slot.scope)) {
            checked.push(slot.scope);
            let released = release_gone_holders(
                store,
                closer,
                &slot,
                store.clock().epoch_millis(),
                config.connecting_window,
            )
            .await?;
            if released > 0 {
                metrics::counter!(metric::SLOTS_RECLAIMED).increment(released as u64);
                continue;
            }
        }
        if slot.scope != CapScope::User || mode != UserCapMode::EvictOldest || evictions == EVICTION_ROUNDS {
            return Ok(Admission::Refused { slot, open });
        }
        evictions += 1;
        match store
            .admit_by_evicting(record, slots, &slot, store.clock().epoch_seconds())
            .await?
        {
            EvictOutcome::Evicted(old) => return Ok(Admission::Evicted(old)),
            EvictOutcome::AlreadyAdmitted => return Ok(Admission::Admitted),
            // The user's connections went away meanwhile: there may be room now.
            EvictOutcome::NoCandidate => continue,
            // A full cap's count is its cap.
            EvictOutcome::CapReached { slot } => {
                let open = slot.cap;
                return Ok(Admission::Refused { slot, open });
            }
        }
    }
}

/// Tells the evicted connection why and closes it. Its record and slot are
/// already gone, so a failure here only leaves a socket that receives nothing.
async fn close_evicted(closer: Option<&Closer>, old: &ConnectionRecord, cap: u64) {
    tracing::info!(evicted = %old.connection_id, connected_at_ms = old.connected_at_ms, "evicted the user's oldest connection");
    let Some(closer) = closer else {
        tracing::warn!(evicted = %old.connection_id, "no Management API endpoint: the evicted connection stays open until it next sends");
        return;
    };
    let message =
        format!("this user opened more than {cap} connections; this one, the oldest, was closed to make room");
    if let Err(error) = closer
        .close(&old.connection_id, &[], ErrorCode::Evicted, &message)
        .await
    {
        tracing::error!(evicted = %old.connection_id, error = %error, "could not close an evicted connection");
    }
}

fn cap_reason(scope: CapScope) -> &'static str {
    match scope {
        CapScope::Total => "total_cap_reached",
        CapScope::User => "user_cap_reached",
        CapScope::Ip => "ip_cap_reached",
    }
}

/// One refusal, logged as one structured line.
struct Refusal<'a> {
    status: u16,
    reason: &'static str,
    source_ip: Option<&'a str>,
    user_id: Option<&'a str>,
    limit: Option<u64>,
    current: Option<u64>,
}

impl Refusal<'_> {
    fn bad_event(reason: &'static str) -> Self {
        Refusal {
            status: 400,
            reason,
            source_ip: None,
            user_id: None,
            limit: None,
            current: None,
        }
    }
}

/// Refuses the handshake with the refusal's status, with one log line and the
/// metrics. The body is the reason, which is all a refused client learns.
fn refuse(refusal: &Refusal<'_>) -> ApiGatewayProxyResponse {
    tracing::warn!(
        reason = refusal.reason,
        status = refusal.status,
        source_ip = refusal.source_ip,
        user_id = refusal.user_id,
        limit = refusal.limit,
        current = refusal.current,
        "connect refused"
    );
    metrics::counter!(metric::CONNECTIONS_REFUSED).increment(1);
    metrics::counter!(metric::CONNECTIONS_REFUSED_BY_REASON, "reason" => refusal.reason).increment(1);
    route_response(refusal.status, refusal.reason)
}
