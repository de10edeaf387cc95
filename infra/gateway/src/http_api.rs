//! The HTTP API, played on the gateway's port: each route of the template's
//! HTTP API invokes its function with API Gateway's payload format 2.0 event,
//! and the function's answer becomes the HTTP response as API Gateway reads
//! it. CORS preflights are answered from the API's `CorsConfiguration`.
//!
//! Differences from API Gateway: the API shares the WebSocket API's host and
//! port (API Gateway gives it a host of its own); a path no route names is
//! answered 403 like the WebSocket host's, not 404. The stage's throttle
//! (`DefaultRouteSettings`) is applied as a token bucket, 429 beyond it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::connections::Shared;
use crate::events::{epoch_millis_now, new_id, request_time};
use crate::responses::api_error;
use crate::template::{Cors, HttpRoute, StackModel};

/// API Gateway's largest HTTP API request body.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

pub(crate) fn routes(model: &StackModel) -> Router<Arc<Shared>> {
    let paths: BTreeSet<&str> = model
        .http_api
        .iter()
        .flat_map(|api| api.routes.iter().map(|route| route.path.as_str()))
        .collect();
    paths.into_iter().fold(Router::new(), |router, path| {
        router.route(path, any(serve).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
    })
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(api) = shared.model.http_api.as_ref() else {
        return not_found();
    };
    let origin = headers
        .get("origin")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let cors = api.cors.as_ref();
    if method == Method::OPTIONS && headers.contains_key("access-control-request-method") {
        if let (Some(cors), Some(origin)) = (cors, origin.as_deref()) {
            return preflight(cors, origin);
        }
    }
    let Some(route) = api
        .routes
        .iter()
        .find(|route| route.path == uri.path() && route.method == method.as_str())
    else {
        return not_found();
    };
    if !shared.http_throttle.admit() {
        return api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Too Many Requests",
        );
    }
    shared.http_requests.fetch_add(1, Ordering::Relaxed);
    let event = event(&shared, route, peer, &uri, &headers, &body);
    let mut response = match shared.invoker.invoke(&route.binary, event).await {
        Ok(output) => response_from(output),
        Err(error) => {
            tracing::warn!(route = %route.route_key, error = %error, "HTTP API function failed");
            internal_error()
        }
    };
    if let (Some(cors), Some(origin)) = (cors, origin.as_deref()) {
        if let Some(allowed) = cors
            .allowed_origin(origin)
            .and_then(|value| HeaderValue::from_str(&value).ok())
        {
            response.headers_mut().insert("access-control-allow-origin", allowed);
        }
    }
    response
}

/// API Gateway's answer when the integration failed or answered what it cannot read.
fn internal_error() -> Response {
    api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerErrorException",
        "Internal Server Error",
    )
}

fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND, "NotFoundException", "Not Found")
}

fn preflight(cors: &Cors, origin: &str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let Some(allowed) = cors.allowed_origin(origin) else {
        return response;
    };
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("access-control-allow-origin", allowed);
    set("access-control-allow-methods", cors.allow_methods.join(","));
    set("access-control-allow-headers", cors.allow_headers.join(","));
    if let Some(max_age) = cors.max_age {
        set("access-control-max-age", max_age.to_string());
    }
    response
}

/// The payload format 2.0 event: headers lower-cased, repeated ones joined
/// with commas; a body that is not UTF-8 passed in base64.
fn event(shared: &Shared, route: &HttpRoute, peer: SocketAddr, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Value {
    let mut joined: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match joined.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                joined.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let query: Map<String, Value> = uri
        .query()
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())))
                .collect()
        })
        .unwrap_or_default();
    let (body, base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let now_ms = epoch_millis_now();
    let user_agent = headers
        .get("user-agent")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": uri.path(),
        "rawQueryString": uri.query().unwrap_or_default(),
        "headers": joined,
        "requestContext": {
            "accountId": crate::template::LOCAL_ACCOUNT_ID,
            "apiId": "local-http",
            "domainName": shared.address.to_string(),
            "domainPrefix": "local-http",
            "http": {
                "method": route.method,
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": user_agent,
            },
            "requestId": new_id(),
            "routeKey": route.route_key,
            "stage": "$default",
            "time": request_time(now_ms),
            "timeEpoch": now_ms,
        },
        "isBase64Encoded": base64,
    });
    if !body.is_empty() {
        event["body"] = Value::String(body);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    event
}

/// The function's answer as API Gateway reads a 2.0 response: an object with
/// `statusCode` is the response; anything else is a 200 JSON body.
fn response_from(output: Value) -> Response {
    let Some(status) = output.get("statusCode").and_then(Value::as_u64) else {
        let body = match output {
            Value::String(text) => text,
            other => other.to_string(),
        };
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    };
    let Ok(status) = StatusCode::from_u16(u16::try_from(status).unwrap_or(500)) else {
        return internal_error();
    };
    let text = output.get("body").and_then(Value::as_str).unwrap_or_default();
    let body = if output.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        match base64::engine::general_purpose::STANDARD.decode(text) {
            Ok(bytes) => bytes,
            Err(_) => return internal_error(),
        }
    } else {
        text.as_bytes().to_vec()
    };
    let mut response = (status, body).into_response();
    if let Some(headers) = output.get("headers").and_then(Value::as_object) {
        for (name, value) in headers {
            let value = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}
