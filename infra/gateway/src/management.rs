//! The API Gateway Management API on the gateway's own port:
//! `POST|GET|DELETE /{stage}/@connections/{id}` (and without the stage), with
//! API Gateway's answers: 410 `GoneException` for an id that is not connected,
//! 413 `PayloadTooLargeException` over the message limit, 403 for another
//! stage, 429 `LimitExceededException` beyond the account's request quota
//! (`GatewayOptions::management_quota`).
//! Requests are signed by the SDK; the signature is not checked.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::json;
use tokio::sync::oneshot;

use crate::connections::{Command, Shared};
use crate::events::iso_8601;
use crate::responses::{api_error, forbidden};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/@connections/{connection_id}",
            post(post_bare).get(get_bare).delete(delete_bare),
        )
        .route(
            "/{stage}/@connections/{connection_id}",
            post(post_staged).get(get_staged).delete(delete_staged),
        )
}

fn gone() -> Response {
    api_error(StatusCode::GONE, "GoneException", "the connection is gone")
}

async fn post_bare(State(shared): State<Arc<Shared>>, Path(id): Path<String>, request: Request) -> Response {
    post_to_connection(shared, id, request.into_body()).await
}

async fn post_staged(
    State(shared): State<Arc<Shared>>,
    Path((stage, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    if stage != shared.options.stage {
        return forbidden().await;
    }
    post_to_connection(shared, id, request.into_body()).await
}

async fn get_bare(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    get_connection(&shared, &id)
}

async fn get_staged(State(shared): State<Arc<Shared>>, Path((stage, id)): Path<(String, String)>) -> Response {
    if stage != shared.options.stage {
        return forbidden().await;
    }
    get_connection(&shared, &id)
}

async fn delete_bare(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    delete_connection(&shared, &id).await
}

async fn delete_staged(State(shared): State<Arc<Shared>>, Path((stage, id)): Path<(String, String)>) -> Response {
    if stage != shared.options.stage {
        return forbidden().await;
    }
    delete_connection(&shared, &id).await
}

/// 429, as API Gateway answers a request beyond the account's quota.
fn throttled() -> Response {
    api_error(
        StatusCode::TOO_MANY_REQUESTS,
        "LimitExceededException",
        "too many requests",
    )
}

async fn post_to_connection(shared: Arc<Shared>, connection_id: String, body: Body) -> Response {
    if !shared.quota.admit() {
        return throttled();
    }
    let limit = shared.options.max_message_bytes;
    // Read one byte past the limit: enough to know it is too large without
    // buffering an arbitrarily large body.
    let Ok(payload) = axum::body::to_bytes(body, limit.saturating_add(1)).await else {
        return too_large();
    };
    if payload.len() > limit {
        return too_large();
    }
    let Some(connection) = shared.connection(&connection_id) else {
        return gone();
    };
    let (done, written) = oneshot::channel();
    let command = Command::Send {
        payload,
        done: Some(done),
    };
    if connection.commands.send(command).is_err() {
        return gone();
    }
    match written.await {
        Ok(true) => StatusCode::OK.into_response(),
        _ => gone(),
    }
}

fn too_large() -> Response {
    api_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLargeException",
        "Message too long",
    )
}

fn get_connection(shared: &Shared, connection_id: &str) -> Response {
    if !shared.quota.admit() {
        return throttled();
    }
    let Some(connection) = shared.connection(connection_id) else {
        return gone();
    };
    let context = &connection.context;
    let mut identity = json!({ "sourceIp": context.source_ip });
    if let Some(user_agent) = &context.user_agent {
        identity["userAgent"] = user_agent.clone().into();
    }
    let body = json!({
        "connectedAt": iso_8601(context.connected_at),
        "identity": identity,
        "lastActiveAt": iso_8601(connection.last_active_ms.load(Ordering::SeqCst)),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn delete_connection(shared: &Shared, connection_id: &str) -> Response {
    if !shared.quota.admit() {
        return throttled();
    }
    let Some(connection) = shared.connection(connection_id) else {
        return gone();
    };
    let (done, closed) = oneshot::channel();
    if connection.commands.send(Command::Close { done }).is_err() {
        return gone();
    }
    match closed.await {
        Ok(()) => {
            shared.management_closes.fetch_add(1, Ordering::SeqCst);
            StatusCode::NO_CONTENT.into_response()
        }
        // The socket closed for another reason first.
        Err(_) => gone(),
    }
}
