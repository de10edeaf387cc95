//! How the gateway and the stream poller reach the functions.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use crate::GatewayError;

/// The future [`Invoker::invoke`] returns (boxed, so `Arc<dyn Invoker>` works).
pub type InvokeFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, GatewayError>> + Send + 'a>>;

/// Invokes a Lambda function by its binary name with an event and returns its
/// JSON output. A function that fails answers `Err`: the gateway then does what
/// API Gateway does ("Internal server error").
///
/// ```
/// use airwave_gateway::{InvokeFuture, Invoker};
/// use serde_json::{json, Value};
///
/// /// Admits every connection and answers every message with an empty 200.
/// struct AdmitAll;
///
/// impl Invoker for AdmitAll {
///     fn invoke<'a>(&'a self, _function: &'a str, _event: Value) -> InvokeFuture<'a> {
///         Box::pin(async move { Ok(json!({"statusCode": 200})) })
///     }
/// }
///
/// let invoker: std::sync::Arc<dyn Invoker> = std::sync::Arc::new(AdmitAll);
/// # let _ = invoker;
/// ```
pub trait Invoker: Send + Sync {
    fn invoke<'a>(&'a self, function: &'a str, event: Value) -> InvokeFuture<'a>;
}

/// Invokes functions served by `cargo lambda watch` (or anything speaking
/// Lambda's `Invoke` API over plain HTTP):
/// `POST {address}/2015-03-31/functions/{function}/invocations`.
#[derive(Debug, Clone)]
pub struct HttpInvoker {
    client: reqwest::Client,
    address: String,
    /// Invocations in flight at once, like a function's concurrency limit:
    /// `cargo lambda watch` stops answering when thousands arrive together
    /// (5,000 clients closing at once each fire a `$disconnect`).
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Enough to keep every instance `cargo lambda watch` runs busy.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;

/// `cargo lambda watch` compiles a function on its first invocation, which can
/// take minutes; API Gateway's own 29 s limit would fail every cold start.
const DEFAULT_INVOKE_TIMEOUT: Duration = Duration::from_secs(600);

impl HttpInvoker {
    /// `address` is an `http://host:port` URL. Invocations may take up to ten
    /// minutes, for `cargo lambda watch`'s first build of a function.
    pub fn new(address: &str) -> Result<Self, GatewayError> {
        Self::with_timeout(address, DEFAULT_INVOKE_TIMEOUT)
    }

    pub fn with_timeout(address: &str, timeout: Duration) -> Result<Self, GatewayError> {
        let address = address.trim_end_matches('/').to_owned();
        if !address.starts_with("http://") {
            return Err(GatewayError::Config(format!(
                "invoke address {address:?} must be an http:// URL such as http://127.0.0.1:9000"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|error| GatewayError::Config(format!("cannot build the HTTP client: {error}")))?;
        Ok(HttpInvoker {
            client,
            address,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_IN_FLIGHT)),
        })
    }

    async fn call(&self, function: &str, event: Value) -> Result<Value, GatewayError> {
        let url = format!("{}/2015-03-31/functions/{function}/invocations", self.address);
        let invoke_error = |message: String| GatewayError::Invoke {
            function: function.to_owned(),
            message,
        };
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|error| invoke_error(error.to_string()))?;
        let response = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(event.to_string())
            .send()
            .await
            .map_err(|error| invoke_error(error.to_string()))?;
        let status = response.status();
        // Lambda marks a function error with this header on a 200; cargo lambda
        // answers 500 with the error document instead.
        let function_error = response.headers().get("x-amz-function-error").is_some();
        let body = response
            .bytes()
            .await
            .map_err(|error| invoke_error(format!("reading the answer: {error}")))?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() || function_error {
            return Err(GatewayError::FunctionFailed {
                function: function.to_owned(),
                status: status.as_u16(),
                message: text.chars().take(2_000).collect(),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        let output: Value = serde_json::from_str(&text)
            .map_err(|error| invoke_error(format!("the answer is not JSON ({error}): {text}")))?;
        if is_error_document(&output) {
            return Err(GatewayError::FunctionFailed {
                function: function.to_owned(),
                status: status.as_u16(),
                message: output.to_string(),
            });
        }
        Ok(output)
    }
}

impl Invoker for HttpInvoker {
    fn invoke<'a>(&'a self, function: &'a str, event: Value) -> InvokeFuture<'a> {
        Box::pin(self.call(function, event))
    }
}

/// Lambda's error document: `{"errorType": ..., "errorMessage": ...}` and nothing
/// but those (and a stack trace).
fn is_error_document(output: &Value) -> bool {
    output.as_object().is_some_and(|fields| {
        fields.contains_key("errorMessage")
            && fields
                .keys()
                .all(|key| matches!(key.as_str(), "errorType" | "errorMessage" | "stackTrace" | "requestId"))
    })
}
