//! The WebSocket handshake: the upgrade request checked as API Gateway checks
//! it, `$connect` asked, and the connection registered and handed to its
//! socket task, or the upgrade refused.

use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use super::connect::{admits, answer_headers, invoke_connect, invoke_disconnect, refusal, status_code};
use super::socket::Connection;
use crate::connections::{ActiveGuard, ConnectionHandle, Shared};
use crate::events::{epoch_millis_now, new_id, ConnectionContext};
use crate::responses::forbidden;

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
