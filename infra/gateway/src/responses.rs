//! API Gateway's error answers: a JSON `message` with the error's type in
//! `x-amzn-errortype`, as the WebSocket routes, the Management API and any
//! other path all give them.

use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub(crate) fn api_error(status: StatusCode, error_type: &'static str, message: &str) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "message": message }).to_string(),
    )
        .into_response();
    response
        .headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    response
}

pub(crate) async fn forbidden() -> Response {
    api_error(StatusCode::FORBIDDEN, "ForbiddenException", "Forbidden")
}
