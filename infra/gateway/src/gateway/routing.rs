//! Routing: each message of a connection, in arrival order, to the route its
//! selection expression picks (else `$default`), answered by the route's
//! function or its mock, with the route response sent back when there is one.

use std::sync::Arc;

use axum::body::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::connections::{Command, Shared};
use crate::events::{new_id, ConnectionContext};
use crate::mock::{MockAnswer, TemplateContext};
use crate::template::RouteIntegration;

/// Invokes the route of each message in turn, answering through the socket task.
pub(super) async fn route_messages(
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
