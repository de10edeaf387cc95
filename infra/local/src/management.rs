//! A local API Gateway Management API (`/@connections/{id}`), answering the
//! way API Gateway does: 410 `GoneException` for an id that is not connected,
//! 413 `PayloadTooLargeException` over 128 KB, and 429 `LimitExceededException`
//! beyond the account's request quota when one is set ([`Quota`]). For tests
//! and benchmarks it can add latency to every post and inject transient 500
//! and 429 answers.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use crate::quota::{Quota, QuotaBucket};
use crate::LocalError;

/// API Gateway's limit for one WebSocket message.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// The stage name in the local endpoint, as in `https://{api}.execute-api.{region}.amazonaws.com/{stage}`.
pub const LOCAL_STAGE: &str = "local";

/// Transient failures to inject, decided per post attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Share of post attempts answered 500 `InternalServerErrorException`.
    pub server_error_percent: u8,
    /// Share of post attempts answered 429 `LimitExceededException`.
    pub throttle_percent: u8,
    /// The draw is a hash of (seed, connection id, attempt number), so a run
    /// is random across connections yet the same every time.
    pub seed: u64,
    /// The first this many post attempts to each connection are answered 500:
    /// a transient outage that every connection sees.
    pub fail_first_attempts: u32,
    /// The first this many post attempts to each connection are never
    /// answered: the request hangs until the client gives up on it.
    pub hang_first_attempts: u32,
    /// Every post is answered 403 `ForbiddenException`, as for a role without
    /// `execute-api:ManageConnections`.
    pub forbidden: bool,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Held before answering each post, like the round trip to API Gateway.
    pub latency: Duration,
    pub faults: Faults,
    /// The account's quota over every `@connections` request; `None` for none.
    pub quota: Option<Quota>,
}

impl Default for Options {
    /// No latency, no faults, and API Gateway's default quota.
    fn default() -> Self {
        Options {
            latency: Duration::ZERO,
            faults: Faults::default(),
            quota: Some(Quota::default()),
        }
    }
}

/// Answers counted by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostCounts {
    pub delivered: usize,
    pub gone: usize,
    pub server_errors: usize,
    pub throttled: usize,
    pub too_large: usize,
    pub forbidden: usize,
    /// Attempts held without an answer.
    pub hung: usize,
}

#[derive(Default)]
struct Connections {
    /// Live connection ids with every frame posted to each, in arrival order.
    live: HashMap<String, Vec<Bytes>>,
    /// Post attempts per connection id, for the fault draw.
    attempts: HashMap<String, u32>,
    counts: PostCounts,
}

struct Shared {
    connections: Mutex<Connections>,
    quota: QuotaBucket,
    first_post_at: Mutex<Option<Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    posts: AtomicUsize,
    options: Options,
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, Connections> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running local Management API. The server stops when the tokio runtime
/// that started it ends.
#[derive(Clone)]
pub struct LocalManagementApi {
    shared: Arc<Shared>,
    address: SocketAddr,
}

impl LocalManagementApi {
    /// Starts a server on a free loopback port that answers at once and never fails.
    pub async fn start() -> Result<Self, LocalError> {
        Self::start_with(Options::default()).await
    }

    /// Starts a server on a free loopback port with added latency or faults.
    pub async fn start_with(options: Options) -> Result<Self, LocalError> {
        let shared = Arc::new(Shared {
            connections: Mutex::new(Connections::default()),
            quota: QuotaBucket::new(options.quota),
            first_post_at: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            posts: AtomicUsize::new(0),
            options,
        });
        let router = Router::new()
            .route(
                "/{stage}/@connections/{connection_id}",
                post(post_to_connection).get(get_connection).delete(delete_connection),
            )
            // Let oversized bodies reach the handler so it can answer 413 the way API Gateway does.
            .layer(DefaultBodyLimit::max(4 * MAX_MESSAGE_BYTES))
            .with_state(shared.clone());
        let (address, _server) = crate::serve_on_loopback(router, "local Management API").await?;
        Ok(LocalManagementApi { shared, address })
    }

    /// The endpoint to give the SDK, stage included.
    pub fn endpoint(&self) -> String {
        format!("http://{}/{}", self.address, LOCAL_STAGE)
    }

    /// Marks `connection_id` as connected.
    pub fn connect(&self, connection_id: &str) {
        self.shared
            .connections()
            .live
            .entry(connection_id.to_owned())
            .or_default();
    }

    /// Marks `connection_id` as gone: posts to it answer 410 from now on.
    pub fn disconnect(&self, connection_id: &str) {
        self.shared.connections().live.remove(connection_id);
    }

    /// Whether `connection_id` is still connected (not gone, not closed through `DELETE`).
    pub fn is_live(&self, connection_id: &str) -> bool {
        self.shared.connections().live.contains_key(connection_id)
    }

    /// Every frame posted to a live `connection_id`, in arrival order.
    pub fn received(&self, connection_id: &str) -> Vec<Bytes> {
        self.shared
            .connections()
            .live
            .get(connection_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The most posts that were ever being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Every post received, whatever its answer.
    pub fn post_count(&self) -> usize {
        self.shared.posts.load(Ordering::SeqCst)
    }

    /// When the first post arrived, if one has.
    pub fn first_post_at(&self) -> Option<Instant> {
        *self
            .shared
            .first_post_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Posts answered so far, by kind of answer.
    pub fn post_counts(&self) -> PostCounts {
        self.shared.connections().counts
    }
}

/// The injected answer for one post attempt, if any.
fn injected_fault(faults: &Faults, connection_id: &str, attempt: u32) -> Option<(StatusCode, &'static str)> {
    if faults.server_error_percent == 0 && faults.throttle_percent == 0 {
        return None;
    }
    let mut hasher = DefaultHasher::new();
    (faults.seed, connection_id, attempt).hash(&mut hasher);
    let draw = hasher.finish() % 100;
    let server_errors = u64::from(faults.server_error_percent);
    let throttles = u64::from(faults.throttle_percent);
    if draw < server_errors {
        Some((StatusCode::INTERNAL_SERVER_ERROR, "InternalServerErrorException"))
    } else if draw < server_errors + throttles {
        Some((StatusCode::TOO_MANY_REQUESTS, "LimitExceededException"))
    } else {
        None
    }
}

/// Counts a request as in flight for as long as it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) fn api_error(status: StatusCode, error_type: &'static str) -> Response {
    let mut response = (status, [("content-type", "application/json")], r#"{"message":null}"#).into_response();
    response
        .headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    response
}

async fn post_to_connection(
    State(shared): State<Arc<Shared>>,
    Path((_stage, connection_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::enter(&shared);
    shared.posts.fetch_add(1, Ordering::SeqCst);
    shared
        .first_post_at
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert_with(Instant::now);
    if !shared.quota.admit() {
        shared.connections().counts.throttled += 1;
        return api_error(StatusCode::TOO_MANY_REQUESTS, "LimitExceededException");
    }
    if !shared.options.latency.is_zero() {
        tokio::time::sleep(shared.options.latency).await;
    }
    let faults = &shared.options.faults;
    let hangs = {
        let mut connections = shared.connections();
        let attempts = connections.attempts.entry(connection_id.clone()).or_default();
        *attempts += 1;
        let hangs = *attempts <= faults.hang_first_attempts;
        connections.counts.hung += usize::from(hangs);
        hangs
    };
    if hangs {
        // Held until the client's attempt timeout drops the request.
        return std::future::pending::<Response>().await;
    }
    let mut connections = shared.connections();
    if faults.forbidden {
        connections.counts.forbidden += 1;
        return api_error(StatusCode::FORBIDDEN, "ForbiddenException");
    }
    let attempt = connections.attempts.get(&connection_id).copied().unwrap_or(1);
    if attempt <= faults.hang_first_attempts + faults.fail_first_attempts {
        connections.counts.server_errors += 1;
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerErrorException");
    }
    if let Some((status, error_type)) = injected_fault(faults, &connection_id, attempt) {
        if status == StatusCode::TOO_MANY_REQUESTS {
            connections.counts.throttled += 1;
        } else {
            connections.counts.server_errors += 1;
        }
        return api_error(status, error_type);
    }
    if body.len() > MAX_MESSAGE_BYTES {
        connections.counts.too_large += 1;
        return api_error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLargeException");
    }
    let Connections { live, counts, .. } = &mut *connections;
    match live.get_mut(&connection_id) {
        Some(frames) => {
            // A copy: the body can be a slice of a much larger read buffer,
            // which would otherwise stay alive with it.
            frames.push(Bytes::copy_from_slice(&body));
            counts.delivered += 1;
            StatusCode::OK.into_response()
        }
        None => {
            counts.gone += 1;
            api_error(StatusCode::GONE, "GoneException")
        }
    }
}

async fn get_connection(
    State(shared): State<Arc<Shared>>,
    Path((_stage, connection_id)): Path<(String, String)>,
) -> Response {
    if !shared.quota.admit() {
        return api_error(StatusCode::TOO_MANY_REQUESTS, "LimitExceededException");
    }
    if shared.connections().live.contains_key(&connection_id) {
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"identity":{"sourceIp":"127.0.0.1"}}"#,
        )
            .into_response()
    } else {
        api_error(StatusCode::GONE, "GoneException")
    }
}

async fn delete_connection(
    State(shared): State<Arc<Shared>>,
    Path((_stage, connection_id)): Path<(String, String)>,
) -> Response {
    if !shared.quota.admit() {
        return api_error(StatusCode::TOO_MANY_REQUESTS, "LimitExceededException");
    }
    match shared.connections().live.remove(&connection_id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => api_error(StatusCode::GONE, "GoneException"),
    }
}
