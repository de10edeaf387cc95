//! The WebSocket side of the gateway: the handshake and its `$connect`, routing
//! of messages, `$disconnect`, and the limits API Gateway enforces.
//!
//! One task per connection owns its socket, so nothing else ever writes to or
//! closes it: the Management API and route responses send it commands, and the
//! task closes the socket exactly once, then invokes `$disconnect` exactly once.
//! Messages are handed to a second task per connection that invokes the routes
//! one after another, in arrival order, while the socket task keeps reading
//! (until the queue between them is full) and keeps serving commands.
//!
//! Header names reach the functions lowercased (as HTTP/2 and most proxies
//! deliver them); look them up case-insensitively.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::connections::{ActiveGuard, Command, ConnectionHandle, Shared};
use crate::events::{epoch_millis_now, new_id, ConnectionContext};
use crate::mock::{MockAnswer, TemplateContext};
use crate::responses::forbidden;
use crate::template::RouteIntegration;
use crate::GatewayError;

/// How long a write to a client may block before the connection counts as broken.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Messages waiting for their route's invocation; past this the socket stops
/// being read, which pushes back on the client through TCP.
const MESSAGE_QUEUE: usize = 256;

/// The handshake, at `/` and at `/{stage}`.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(upgrade_root))
        .route("/{stage}", get(upgrade_staged))
}

async fn upgrade_root(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    upgrade(shared, peer, request).await
}

async fn upgrade_staged(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(stage): Path<String>,
    request: Request,
) -> Response {
    if stage != shared.options.stage {
        return forbidden().await;
    }
    upgrade(shared, peer, request).await
}

fn header_text(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        String::from_utf8_lossy(value.as_bytes())
            .split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    })
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "message": message }).to_string(),
    )
        .into_response()
}

/// Validates the handshake, runs `$connect`, and completes or refuses the upgrade.
async fn upgrade(shared: Arc<Shared>, peer: SocketAddr, mut request: Request) -> Response {
    let headers = request.headers().clone();
    if !has_token(&headers, header::CONNECTION, "upgrade") || !has_token(&headers, header::UPGRADE, "websocket") {
        return plain(StatusCode::UPGRADE_REQUIRED, "expected a WebSocket upgrade");
    }
    if header_text(&headers, header::SEC_WEBSOCKET_VERSION).as_deref() != Some("13") {
        let mut response = plain(StatusCode::BAD_REQUEST, "unsupported Sec-WebSocket-Version");
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let Some(on_upgrade) = request.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return plain(StatusCode::BAD_REQUEST, "this connection cannot be upgraded");
    };
    if *shared.shutdown.borrow() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "the gateway is shutting down");
    }

    let context = Arc::new(ConnectionContext {
        connection_id: new_id(),
        connected_at: epoch_millis_now(),
        // The TCP peer, never a header: a client cannot choose its identity.
        source_ip: peer.ip().to_string(),
        user_agent: header_text(&headers, header::USER_AGENT),
        domain_name: header_text(&headers, header::HOST).unwrap_or_else(|| shared.address.to_string()),
        stage: shared.options.stage.clone(),
        api_id: shared.options.api_id.clone(),
    });
    let span =
        tracing::info_span!("connection", connection_id = %context.connection_id, source_ip = %context.source_ip);
    let mut event_headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| *name != header::HeaderName::from_static("x-forwarded-for"))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    // As API Gateway does: the peer is appended to whatever the client claimed.
    let forwarded_for = match header_text(&headers, HeaderName::from_static("x-forwarded-for")) {
        Some(claimed) => format!("{claimed}, {}", context.source_ip),
        None => context.source_ip.clone(),
    };
    event_headers.push(("x-forwarded-for".into(), forwarded_for));
    event_headers.push(("x-forwarded-port".into(), shared.address.port().to_string()));
    event_headers.push(("x-forwarded-proto".into(), "http".into()));
    let query: Vec<(String, String)> = request
        .uri()
        .query()
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect()
        })
        .unwrap_or_default();

    let mut response_headers = Vec::new();
    let mut admitted = None;
    // A mock $connect admits (its request template's status is not checked here).
    if let Some(function) = shared.model.routes.get("$connect").and_then(|route| route.function()) {
        let event = context.connect_event(&event_headers, &query);
        let answer = invoke_connect(&shared, &context, function, event, &span).await;
        match answer {
            Ok((answer, admission)) => {
                let status = status_code(&answer);
                response_headers = answer_headers(&answer);
                if !admits(&answer) {
                    span.in_scope(|| tracing::info!(status, "$connect refused the connection"));
                    return refusal(status, &answer, &response_headers);
                }
                admitted = admission;
            }
            Err(error) => {
                span.in_scope(|| tracing::warn!(error = %error, "$connect failed; refusing with 500"));
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
            }
        }
    }

    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in &response_headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            continue;
        };
        // The handshake's own headers are the gateway's to set.
        if matches!(
            name.as_str(),
            "connection" | "upgrade" | "sec-websocket-accept" | "content-length" | "transfer-encoding"
        ) {
            continue;
        }
        response.headers_mut().append(name, value);
    }
    let handshake = response.headers_mut();
    handshake.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    handshake.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    match HeaderValue::try_from(accept) {
        Ok(accept) => {
            handshake.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        Err(_) => return plain(StatusCode::BAD_REQUEST, "invalid Sec-WebSocket-Key"),
    }

    let guard = ActiveGuard::new(&shared);
    // Registered before the 101 goes out: once the client is connected, the
    // Management API can reach it (commands wait until the socket task runs).
    let last_active_ms = Arc::new(AtomicI64::new(context.connected_at));
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    shared.connections().insert(
        context.connection_id.clone(),
        ConnectionHandle {
            context: context.clone(),
            last_active_ms: last_active_ms.clone(),
            commands: commands_tx.clone(),
        },
    );
    let config = WebSocketConfig::default()
        .max_frame_size(Some(shared.options.max_frame_bytes))
        .max_message_size(Some(shared.options.max_message_bytes));
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket =
                        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                    let connection = Connection {
                        shared,
                        context,
                        last_active_ms,
                        commands_tx,
                        commands_rx,
                    };
                    connection.run(socket).await;
                }
                Err(error) => {
                    // Admitted by $connect but never opened: it still gets its $disconnect.
                    tracing::warn!(error = %error, "the upgrade did not complete");
                    shared.connections().remove(&context.connection_id);
                    drop(commands_rx);
                    invoke_disconnect(&shared, &context, 1006, "Connection closed abnormally").await;
                }
            }
            drop(guard);
        }
        .instrument(span),
    );
    // The socket task owns the connection now, $disconnect included.
    if let Some(admitted) = admitted {
        admitted.disarm();
    }
    response
}

/// `statusCode` of a proxy answer; a function answering without one admits, as
/// API Gateway does for an empty answer.
fn status_code(answer: &Value) -> u16 {
    match answer.get("statusCode") {
        Some(Value::Number(number)) => number.as_u64().and_then(|code| u16::try_from(code).ok()).unwrap_or(500),
        Some(Value::String(text)) => text.trim().parse().unwrap_or(500),
        _ => 200,
    }
}

/// The answer's `headers` and `multiValueHeaders` as name/value pairs.
fn answer_headers(answer: &Value) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let multi = answer.get("multiValueHeaders").and_then(Value::as_object);
    if let Some(single) = answer.get("headers").and_then(Value::as_object) {
        for (name, value) in single {
            // multiValueHeaders wins when both name the header.
            if multi.is_some_and(|multi| multi.contains_key(name)) {
                continue;
            }
            if let Some(value) = value.as_str() {
                pairs.push((name.clone(), value.to_owned()));
            }
        }
    }
    if let Some(multi) = multi {
        for (name, values) in multi {
            for value in values.as_array().into_iter().flatten().filter_map(Value::as_str) {
                pairs.push((name.clone(), value.to_owned()));
            }
        }
    }
    pairs
}

/// A refused handshake with the function's status, headers and body.
fn refusal(status: u16, answer: &Value, headers: &[(String, String)]) -> Response {
    let body = answer
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Why a socket closed: `disconnectStatusCode` and `disconnectReason`.
struct Closed {
    code: u16,
    reason: String,
}

impl Closed {
    fn new(code: u16, reason: &str) -> Self {
        Closed {
            code,
            reason: reason.to_owned(),
        }
    }
}

/// An admitted connection whose socket is open.
struct Connection {
    shared: Arc<Shared>,
    context: Arc<ConnectionContext>,
    last_active_ms: Arc<AtomicI64>,
    commands_tx: mpsc::UnboundedSender<Command>,
    commands_rx: mpsc::UnboundedReceiver<Command>,
}

impl Connection {
    async fn run(self, mut socket: Socket) {
        let Connection {
            shared,
            context,
            last_active_ms,
            commands_tx,
            mut commands_rx,
        } = self;
        tracing::info!("connection open");
        let (messages_tx, messages_rx) = mpsc::channel(MESSAGE_QUEUE);
        let router =
            tokio::spawn(route_messages(shared.clone(), context.clone(), messages_rx, commands_tx).in_current_span());

        let closed = serve_socket(&shared, &mut socket, &last_active_ms, &mut commands_rx, &messages_tx).await;
        // Gone for the Management API from here on; queued commands are answered 410.
        shared.connections().remove(&context.connection_id);
        drop(commands_rx);
        drop(socket);
        tracing::info!(code = closed.code, reason = %closed.reason, "connection closed");

        // Messages already received are still routed, then $disconnect comes last.
        drop(messages_tx);
        if let Err(error) = router.await {
            tracing::error!(error = %error, "message routing task failed");
        }
        invoke_disconnect(&shared, &context, closed.code, &closed.reason).await;
    }
}

/// A connection `$connect` admitted, until the socket task owns it: dropped
/// armed (its client left before the upgrade was set up, wherever the answer
/// was lost), it sends the connection's `$disconnect`, counted as active so a
/// shutdown waits for it.
struct Admitted {
    shared: Arc<Shared>,
    context: Arc<ConnectionContext>,
    span: tracing::Span,
    armed: bool,
}

impl Admitted {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // Without a runtime the gateway itself is gone, and nothing could be invoked.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.armed {
            return;
        }
        let (shared, context, span) = (self.shared.clone(), self.context.clone(), self.span.clone());
        let guard = ActiveGuard::new(&shared);
        span.in_scope(|| tracing::info!("the client left while $connect ran"));
        runtime.spawn(
            async move {
                invoke_disconnect(&shared, &context, 1006, "Connection closed abnormally").await;
                drop(guard);
            }
            .instrument(span),
        );
    }
}

fn admits(answer: &Value) -> bool {
    (200..300).contains(&status_code(answer))
}

/// Runs `$connect` to the end even if the client leaves meanwhile, as a
/// Lambda function runs on whoever stops waiting for it; a connection it
/// admitted for a client already gone still gets its `$disconnect` (through
/// [`Admitted`]), so its record and cap slots are released rather than left
/// to their TTL.
async fn invoke_connect(
    shared: &Arc<Shared>,
    context: &Arc<ConnectionContext>,
    function: &str,
    event: Value,
    span: &tracing::Span,
) -> Result<(Value, Option<Admitted>), GatewayError> {
    let (answer_tx, answer_rx) = oneshot::channel();
    let (shared, context, function, span) = (shared.clone(), context.clone(), function.to_owned(), span.clone());
    tokio::spawn(async move {
        let answer = shared.invoker.invoke(&function, event).instrument(span.clone()).await;
        let answer = answer.map(|answer| {
            let admitted = admits(&answer).then(|| Admitted {
                shared: shared.clone(),
                context: context.clone(),
                span: span.clone(),
                armed: true,
            });
            (answer, admitted)
        });
        // Unsent, the answer is dropped here, and with it an armed Admitted.
        let _ = answer_tx.send(answer);
    });
    answer_rx.await.unwrap_or_else(|_| {
        Err(GatewayError::FunctionFailed {
            function: "$connect".to_owned(),
            status: 500,
            message: "the invocation ended without an answer".to_owned(),
        })
    })
}

async fn invoke_disconnect(shared: &Shared, context: &ConnectionContext, code: u16, reason: &str) {
    let Some(function) = shared
        .model
        .routes
        .get("$disconnect")
        .and_then(|route| route.function())
    else {
        return;
    };
    let event = context.disconnect_event(code, reason);
    match shared.invoker.invoke(function, event).await {
        Ok(_) => tracing::debug!(code, "$disconnect delivered"),
        // API Gateway does not retry $disconnect either; the record's TTL covers it.
        Err(error) => tracing::warn!(error = %error, "$disconnect failed"),
    }
}

/// Reads and writes the socket until it closes, for whichever reason comes first.
async fn serve_socket(
    shared: &Shared,
    socket: &mut Socket,
    last_active_ms: &AtomicI64,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    messages: &mpsc::Sender<String>,
) -> Closed {
    let options = &shared.options;
    let mut shutdown = shared.shutdown.clone();
    let closes_at = deadline(Instant::now(), options.max_connection_duration);
    let mut idle_since = Instant::now();
    // A place in the inbound queue, taken before the socket is read: while the
    // queue is full the socket is not read (TCP pushes back on the client), but
    // commands, timeouts and shutdown are still served.
    let mut slot: Option<mpsc::Permit<'_, String>> = None;
    loop {
        tokio::select! {
            _ = async { let _ = shutdown.wait_for(|stopped| *stopped).await; } => {
                return close(socket, 1001, "Going away").await;
            }
            _ = sleep_until_deadline(closes_at) => {
                tracing::info!("maximum connection duration reached");
                return close(socket, 1001, "Going away").await;
            }
            // Not idle while the client waits for room in the queue: it has sent
            // more than the routes have taken.
            _ = sleep_until_deadline(deadline(idle_since, options.idle_timeout)), if slot.is_some() => {
                tracing::info!("idle timeout");
                return close(socket, 1001, "Going away").await;
            }
            command = commands.recv() => match command {
                Some(Command::Send { payload, done }) => {
                    let bytes = payload.len();
                    // Checked in place, not copied: every post and reply passes here.
                    let message = match Utf8Bytes::try_from(payload.clone()) {
                        Ok(text) => Message::Text(text),
                        Err(_) => Message::Binary(payload),
                    };
                    let sent = matches!(timeout(SEND_TIMEOUT, socket.send(message)).await, Ok(Ok(())));
                    if sent {
                        shared.billed.count_sent(bytes);
                    }
                    if let Some(done) = done {
                        let _ = done.send(sent);
                    }
                    if !sent {
                        tracing::info!("writing to the socket failed");
                        return Closed::new(1006, "Connection closed abnormally");
                    }
                }
                Some(Command::Close { done }) => {
                    send_close(socket, 1000, "Connection deleted").await;
                    // The deletion is answered once the close frame is out, not
                    // after the client's reply, which may never come.
                    let _ = done.send(());
                    drain(socket).await;
                    return Closed::new(1000, "Connection deleted");
                }
                // The routing task holds a sender for as long as the socket task lives.
                None => return close(socket, 1011, "Internal error").await,
            },
            reserved = messages.reserve(), if slot.is_none() => match reserved {
                Ok(permit) => {
                    idle_since = Instant::now();
                    slot = Some(permit);
                }
                // The routing task is gone.
                Err(_) => return close(socket, 1011, "Internal error").await,
            },
            incoming = socket.next(), if slot.is_some() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    shared.billed.count_received(text.len());
                    idle_since = Instant::now();
                    last_active_ms.store(epoch_millis_now(), Ordering::SeqCst);
                    if let Some(permit) = slot.take() {
                        permit.send(text.as_str().to_owned());
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    // API Gateway does not accept binary frames from clients.
                    return close(socket, 1003, "Binary frames are not supported").await;
                }
                Some(Ok(Message::Close(frame))) => {
                    let closed = match frame {
                        Some(frame) => {
                            let code = u16::from(frame.code);
                            let reason = if frame.reason.is_empty() { standard_reason(code) } else { frame.reason.as_str() };
                            Closed::new(code, reason)
                        }
                        None => Closed::new(1005, standard_reason(1005)),
                    };
                    // The library answers the close frame; reading on sends it.
                    drain(socket).await;
                    return closed;
                }
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(error))) => {
                    tracing::info!(error = %error, "message over the size limit");
                    return close(socket, 1009, "Message too big").await;
                }
                Some(Err(error)) => {
                    tracing::debug!(error = %error, "socket dropped");
                    return Closed::new(1006, standard_reason(1006));
                }
                None => return Closed::new(1006, standard_reason(1006)),
            },
        }
    }
}

/// `from + after`; `None` when that is past what an `Instant` can hold, which
/// means never (a configured duration can be as large as `Duration::MAX`).
fn deadline(from: Instant, after: Duration) -> Option<Instant> {
    from.checked_add(after)
}

/// Sleeps until `at`, or forever without a deadline.
async fn sleep_until_deadline(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn standard_reason(code: u16) -> &'static str {
    match code {
        1000 => "Normal closure",
        1001 => "Going away",
        1005 => "No status code",
        1006 => "Connection closed abnormally",
        1009 => "Message too big",
        _ => "",
    }
}

/// Sends a close frame and waits briefly for the client's answer.
async fn close(socket: &mut Socket, code: u16, reason: &str) -> Closed {
    send_close(socket, code, reason).await;
    drain(socket).await;
    Closed::new(code, reason)
}

async fn send_close(socket: &mut Socket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    if let Ok(Err(error)) = timeout(CLOSE_GRACE, socket.close(Some(frame))).await {
        tracing::debug!(error = %error, "sending the close frame failed");
    }
}

/// Reads until the closing handshake ends, the socket errs or the grace period passes.
async fn drain(socket: &mut Socket) {
    let _ = timeout(CLOSE_GRACE, async { while let Some(Ok(_)) = socket.next().await {} }).await;
}

/// Invokes the route of each message in turn, answering through the socket task.
async fn route_messages(
    shared: Arc<Shared>,
    context: Arc<ConnectionContext>,
    mut messages: mpsc::Receiver<String>,
    replies: mpsc::UnboundedSender<Command>,
) {
    let reply = |text: String| {
        // A closed socket drops replies, as API Gateway does.
        let _ = replies.send(Command::Send {
            payload: Bytes::from(text),
            done: None,
        });
    };
    while let Some(body) = messages.recv().await {
        let model = &shared.model;
        let selected = model
            .route_selection
            .value_of(&body)
            .filter(|key| !matches!(key.as_str(), "$connect" | "$disconnect" | "$default"))
            .and_then(|key| model.routes.get(&key));
        let Some(route) = selected.or_else(|| model.routes.get("$default")) else {
            // API Gateway's answer when no route matches and there is no $default.
            reply(
                json!({"message": "Forbidden", "connectionId": context.connection_id, "requestId": new_id()})
                    .to_string(),
            );
            continue;
        };
        let (event, request_id) = context.message_event(&route.route_key, &body);
        let span = tracing::info_span!("message", route = %route.route_key, request_id = %request_id);
        let function = match &route.integration {
            RouteIntegration::Function { binary, .. } => binary,
            RouteIntegration::Mock(mock) => {
                let empty = serde_json::Map::new();
                let variables = event.get("requestContext").and_then(Value::as_object).unwrap_or(&empty);
                match mock.answer(&TemplateContext { variables }, route.has_route_response) {
                    MockAnswer::Reply(Some(frame)) => reply(frame),
                    MockAnswer::Reply(None) => {}
                    MockAnswer::ConfigurationError(why) => {
                        span.in_scope(
                            || tracing::warn!(integration = %mock.logical_id, why = %why, "mock integration failed"),
                        );
                        reply(internal_server_error(&context.connection_id, &request_id));
                    }
                }
                continue;
            }
        };
        match shared.invoker.invoke(function, event).instrument(span.clone()).await {
            Ok(answer) => {
                if route.has_route_response {
                    if let Some(body) = answer
                        .get("body")
                        .and_then(Value::as_str)
                        .filter(|body| !body.is_empty())
                    {
                        reply(body.to_owned());
                    }
                }
            }
            Err(error) => {
                span.in_scope(|| tracing::warn!(error = %error, "route invocation failed"));
                reply(internal_server_error(&context.connection_id, &request_id));
            }
        }
    }
}

/// API Gateway's frame when a route's integration failed (a function's
/// error or a mock's configuration error).
fn internal_server_error(connection_id: &str, request_id: &str) -> String {
    json!({
        "message": "Internal server error",
        "connectionId": connection_id,
        "requestId": request_id,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_past_what_an_instant_holds_is_never() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::MAX), None);
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            Some(now + Duration::from_secs(1))
        );
    }
}
