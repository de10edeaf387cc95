//! A proxy in front of the local DynamoDB that injects what moto never does:
//! throttling, and transactions cancelled by a conflict with another one.
//! moto applies one request at a time, so without this the paths that retry
//! a conflicting transaction, or back off from a throttle, never run.
//!
//! Faults are drawn per request with a seeded generator, so a run is random
//! yet repeatable. Throttles answer `ProvisionedThroughputExceededException`
//! (the SDK retries it with backoff); conflicts answer
//! `TransactionCanceledException` with a `TransactionConflict` reason for the
//! first item and `None` for the others, as DynamoDB does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use crate::LocalError;

const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// Shares of requests to answer with a fault, in percent.
#[derive(Debug, Clone, Copy, Default)]
pub struct DynamoDbFaults {
    /// Of every request: answered as throttled.
    pub throttle_percent: u8,
    /// Of `TransactWriteItems` requests: cancelled by a conflict.
    pub conflict_percent: u8,
    pub seed: u64,
}

/// What the proxy did, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DynamoDbFaultCounts {
    pub forwarded: usize,
    pub throttled: usize,
    pub conflicts: usize,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    state: Mutex<ProxyState>,
}

struct ProxyState {
    faults: DynamoDbFaults,
    rng: fastrand::Rng,
    counts: DynamoDbFaultCounts,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The proxy; it stops when dropped.
pub struct FaultyDynamoDb {
    shared: Arc<Shared>,
    address: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyDynamoDb {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FaultyDynamoDb {
    /// A proxy to the DynamoDB endpoint `upstream` (for example
    /// `http://127.0.0.1:8000`), injecting `faults`.
    pub async fn start(upstream: &str, faults: DynamoDbFaults) -> Result<Self, LocalError> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            state: Mutex::new(ProxyState {
                faults,
                rng: fastrand::Rng::with_seed(faults.seed),
                counts: DynamoDbFaultCounts::default(),
            }),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let router = Router::new().fallback(forward).with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(error = %error, "DynamoDB fault proxy stopped");
            }
        });
        Ok(FaultyDynamoDb {
            shared,
            address,
            server,
        })
    }

    /// The endpoint to give the SDK instead of the upstream's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Changes the faults from the next request on.
    pub fn set_faults(&self, faults: DynamoDbFaults) {
        self.shared.state().faults = faults;
    }

    pub fn counts(&self) -> DynamoDbFaultCounts {
        self.shared.state().counts
    }
}

/// The fault to inject for one request, if any (and counts it).
fn draw(shared: &Shared, operation: &str) -> Option<Fault> {
    let mut state = shared.state();
    let faults = state.faults;
    if faults.throttle_percent > 0 && state.rng.u8(0..100) < faults.throttle_percent {
        state.counts.throttled += 1;
        return Some(Fault::Throttle);
    }
    if operation == "TransactWriteItems"
        && faults.conflict_percent > 0
        && state.rng.u8(0..100) < faults.conflict_percent
    {
        state.counts.conflicts += 1;
        return Some(Fault::Conflict);
    }
    state.counts.forwarded += 1;
    None
}

enum Fault {
    Throttle,
    Conflict,
}

fn error_response(body: Value) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", JSON_CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn conflict_response(request: &[u8]) -> Response {
    let items = serde_json::from_slice::<Value>(request)
        .ok()
        .and_then(|request| request.get("TransactItems").and_then(Value::as_array).map(Vec::len))
        .unwrap_or(1)
        .max(1);
    let reasons: Vec<Value> = (0..items)
        .map(|index| match index {
            0 => json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}),
            _ => json!({"Code": "None"}),
        })
        .collect();
    let codes: Vec<&str> = (0..items)
        .map(|index| if index == 0 { "TransactionConflict" } else { "None" })
        .collect();
    error_response(json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            codes.join(", ")
        ),
        "CancellationReasons": reasons,
    }))
}

async fn forward(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = headers
        .get("x-amz-target")
        .and_then(|target| target.to_str().ok())
        .and_then(|target| target.rsplit('.').next())
        .unwrap_or_default()
        .to_owned();
    match draw(&shared, &operation) {
        Some(Fault::Throttle) => {
            return error_response(json!({
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": "The level of configured provisioned throughput for the table was exceeded (injected)",
            }))
        }
        Some(Fault::Conflict) => return conflict_response(&body),
        None => {}
    }
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let mut request = shared
        .client
        .request(method, format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in &headers {
        // The signature covers the host the SDK was given; moto does not check it.
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(error = %error, "the upstream DynamoDB did not answer");
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    let status = answer.status();
    let mut response_headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response_headers.insert(name.clone(), value.clone());
        }
    }
    match answer.bytes().await {
        Ok(bytes) => (status, response_headers, bytes).into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "the upstream DynamoDB's answer broke off");
            StatusCode::BAD_GATEWAY.into_response()
        }
    }
}
