//! `$connect` and `$disconnect`: invoking them the way API Gateway does (a
//! `$connect` runs to its end even when its client leaves, and a connection
//! it admitted always gets its `$disconnect`), and reading a `$connect`
//! answer's status and headers into the handshake's.

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::connections::{ActiveGuard, Shared};
use crate::events::ConnectionContext;
use crate::GatewayError;

/// `statusCode` of a proxy answer; a function answering without one admits, as
/// API Gateway does for an empty answer.
pub(super) fn status_code(answer: &Value) -> u16 {
    match answer.get("statusCode") {
        Some(Value::Number(number)) => number.as_u64().and_then(|code| u16::try_from(code).ok()).unwrap_or(500),
        Some(Value::String(text)) => text.trim().parse().unwrap_or(500),
        _ => 200,
    }
}

/// The answer's `headers` and `multiValueHeaders` as name/value pairs.
pub(super) fn answer_headers(answer: &Value) -> Vec<(String, String)> {
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
pub(super) fn refusal(status: u16, answer: &Value, headers: &[(String, String)]) -> Response {
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

/// A connection `$connect` admitted, until the socket task owns it: dropped
/// armed (its client left before the upgrade was set up, wherever the answer
/// was lost), it sends the connection's `$disconnect`, counted as active so a
/// shutdown waits for it.
pub(super) struct Admitted {
    shared: Arc<Shared>,
    context: Arc<ConnectionContext>,
    span: tracing::Span,
    armed: bool,
}

impl Admitted {
    pub(super) fn disarm(mut self) {
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

pub(super) fn admits(answer: &Value) -> bool {
    (200..300).contains(&status_code(answer))
}

/// Runs `$connect` to the end even if the client leaves meanwhile, as a
/// Lambda function runs on whoever stops waiting for it; a connection it
/// admitted for a client already gone still gets its `$disconnect` (through
/// [`Admitted`]), so its record and cap slots are released rather than left
/// to their TTL.
pub(super) async fn invoke_connect(
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

pub(super) async fn invoke_disconnect(shared: &Shared, context: &ConnectionContext, code: u16, reason: &str) {
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
