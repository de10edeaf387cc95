//! The HTTP API: `POST /v1/publish`, publishing from any backend with a
//! server key and from clients with their token, under the same rights as
//! on their socket; and `POST /v1/poll`, the fallback transport's read side,
//! under the same rights as a subscribe. See `airwave_protocol::http` for the
//! bodies.

mod caller;
pub(crate) mod poll;
mod publish;

pub use caller::{Caller, CallerRefusal};
pub use poll::PollRouteStore;
pub use publish::{message_id_for_key, PublishRouteStore};

use airwave_protocol::http::{HttpError, HttpErrorBody, POLL_PATH, PUBLISH_PATH};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use tracing::Instrument;

use crate::auth::Authenticator;
use crate::server_keys::ServerKeySource;
use crate::{Config, Error};

/// The route key of the publish route, as the template names it.
pub const PUBLISH_ROUTE_KEY: &str = "POST /v1/publish";
/// The route key of the poll route.
pub const POLL_ROUTE_KEY: &str = "POST /v1/poll";

/// What the HTTP API reads and writes.
pub trait HttpRouteStore: PublishRouteStore + PollRouteStore {}

impl<S> HttpRouteStore for S where S: PublishRouteStore + PollRouteStore {}

/// An HTTP API request, to the route it names.
///
/// Every refusal is a 4xx whose body says what was wrong, and writes
/// nothing. A store failure is returned as an error, so Lambda counts it and
/// API Gateway answers 500; a request with idempotency keys is safe to retry.
pub async fn handle_http<S: HttpRouteStore>(
    store: &S,
    authenticator: Option<&Authenticator>,
    server_keys: &ServerKeySource,
    config: &Config,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    let request = &event.payload;
    let context = &request.request_context;
    let source_ip = context.http.source_ip.as_deref().unwrap_or_default();
    let span = tracing::info_span!(
        "http",
        request_id = %event.context.request_id,
        route_key = context.route_key.as_deref().unwrap_or_default(),
        source_ip,
        caller = tracing::field::Empty,
    );
    async {
        let route_key = context.route_key.as_deref().unwrap_or_default();
        if route_key != PUBLISH_ROUTE_KEY && route_key != POLL_ROUTE_KEY {
            return Ok(error_response(
                404,
                "not_found",
                format!("no route {route_key:?}; POST {PUBLISH_PATH} or POST {POLL_PATH}"),
            ));
        }
        let caller = match Caller::identify(&request.headers, source_ip, authenticator, server_keys).await {
            Ok(caller) => caller,
            Err(refusal) => {
                tracing::info!(reason = refusal.code(), "http caller refused");
                return Ok(error_response(refusal.status(), refusal.code(), refusal.explain()));
            }
        };
        tracing::Span::current().record("caller", caller.kind());
        let body = match request_body(request) {
            Ok(body) => body,
            Err(why) => return Ok(error_response(400, "invalid_request", why)),
        };
        if route_key == POLL_ROUTE_KEY {
            poll::poll(store, config, &caller, &body).await
        } else {
            publish::publish(store, config, &caller, &body).await
        }
    }
    .instrument(span)
    .await
}

/// The body as text: API Gateway passes a body it takes for binary in base64.
fn request_body(request: &ApiGatewayV2httpRequest) -> Result<String, String> {
    let body = request.body.clone().unwrap_or_default();
    if !request.is_base64_encoded {
        return Ok(body);
    }
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| "the body is not valid base64 (isBase64Encoded)".to_owned())?;
    String::from_utf8(bytes).map_err(|_| "the body is not UTF-8 text; send JSON".to_owned())
}

/// A JSON response.
pub(crate) fn json_response(status: u16, body: &impl Serialize) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    response.headers = headers;
    // Serializing these plain structs cannot fail; an empty body would still be a clear 5xx.
    response.body = Some(Body::Text(serde_json::to_string(body).unwrap_or_default()));
    response
}

/// The error body every refusal has: a code and what was wrong.
pub(crate) fn error_response(status: u16, code: &str, message: impl Into<String>) -> ApiGatewayV2httpResponse {
    json_response(
        status,
        &HttpErrorBody {
            error: HttpError {
                code: code.to_owned(),
                message: message.into(),
            },
        },
    )
}
