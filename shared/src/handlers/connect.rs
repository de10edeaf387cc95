use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::http::HeaderValue;
use lambda_runtime::LambdaEvent;
use tracing::Instrument;

use super::route_response;
use crate::admission::{self, AdmitOutcome, CapScope, Slot};
use crate::auth::{self, Authenticator};
use crate::connection::ConnectionRecord;
use crate::store::ConnectionStore;
use crate::telemetry::metric;
use crate::time::{epoch_millis_now, epoch_seconds_now};
use crate::{Config, Error};

/// `$connect`: authenticates, throttles, checks the caps and stores the
/// connection with its TTL. The order is the cheapest refusal first: a bad
/// token costs no DynamoDB call and writes nothing, a throttled attempt costs
/// one counter update, and only then is a slot taken.
///
/// Answers: 200 admitted, 401 bad or missing token (when authentication is
/// on), 429 too many attempts from this IP in the window, 403 over a cap, 400
/// for an event without a connection id or source IP (API Gateway always sends
/// both). A store failure is returned as an error: API Gateway refuses the
/// handshake with 500 and the client retries later.
///
/// `authenticator` is `None` when authentication is off; build it once per
/// cold start ([`Authenticator::from_config`]) so an identity provider's keys
/// stay cached between invocations.
pub async fn handle_connect<S: ConnectionStore>(
    store: &S,
    authenticator: Option<&Authenticator>,
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
                            status: 401,
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
        let (user_id, allowed_channels, allowed_publish) = match identity {
            Some(identity) => (
                Some(identity.user_id),
                identity.allowed_channels,
                identity.allowed_publish,
            ),
            None => (None, None, None),
        };
        if let Some(user_id) = &user_id {
            tracing::Span::current().record("user_id", user_id.as_str());
        }

        // API Gateway's own timestamp of the request, so the window does not
        // depend on how long the invocation waited.
        let requested_at_ms = if context.request_time_epoch > 0 {
            context.request_time_epoch
        } else {
            epoch_millis_now()
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
            epoch_millis_now()
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
            expires_at: epoch_seconds_now() + config.connection_ttl_seconds as i64,
            domain_name: context.domain_name.clone(),
            stage: context.stage.clone(),
            channels: Vec::new(),
            slot_total: slot_key(CapScope::Total),
            slot_user: slot_key(CapScope::User),
            slot_ip: slot_key(CapScope::Ip),
        };
        if let Some((slot, open)) = admit(store, &record, &slots).await? {
            return Ok(refuse(&Refusal {
                status: 403,
                reason: cap_reason(slot.scope),
                source_ip: Some(&source_ip),
                user_id: user_id.as_deref(),
                limit: Some(slot.cap),
                current: Some(open),
            }));
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
        if auth::offered_subprotocols(request)
            .iter()
            .any(|protocol| protocol == auth::SUBPROTOCOL)
        {
            response
                .headers
                .insert("sec-websocket-protocol", HeaderValue::from_static(auth::SUBPROTOCOL));
        }
        Ok(response)
    }
    .instrument(span)
    .await
}

/// Takes the slots. When a cap is full, gives back the slots of expired
/// connections in that cap's scope and tries again, once per cap, since the
/// next try may find another cap full. Answers the full slot and its count
/// when the connection is refused.
async fn admit<S: ConnectionStore>(
    store: &S,
    record: &ConnectionRecord,
    slots: &[Slot],
) -> Result<Option<(Slot, u64)>, Error> {
    let mut reclaimed: Vec<CapScope> = Vec::new();
    loop {
        let (slot, open) = match store.admit_connection(record, slots).await? {
            AdmitOutcome::Admitted => return Ok(None),
            AdmitOutcome::CapReached { slot, open } => (slot, open),
        };
        if reclaimed.contains(&slot.scope) {
            return Ok(Some((slot, open)));
        }
        reclaimed.push(slot.scope);
        let released = store.reclaim_expired_slots(&slot, epoch_seconds_now()).await?;
        if released == 0 {
            return Ok(Some((slot, open)));
        }
        metrics::counter!(metric::SLOTS_RECLAIMED).increment(released as u64);
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
