//! An HTTP proxy that answers a share of requests itself, with the error a
//! real service would give, and forwards the rest unchanged. What to inject,
//! and for which requests, is a [`FaultPlan`]: DynamoDB's throttles and
//! transaction conflicts, or the Management API's 500s and 429s.
//!
//! The draw uses a seeded generator: the same sequence of requests gets the
//! same faults (concurrent requests arrive in a different order each run).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::LocalError;

/// One request as the proxy received it.
pub struct ProxiedRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Which requests to answer with a fault, and how.
pub trait FaultPlan: Send + 'static {
    fn seed(&self) -> u64;

    /// The kind of fault (for counting) and the answer, or `None` to forward.
    fn draw(&self, request: &ProxiedRequest<'_>, rng: &mut fastrand::Rng) -> Option<(&'static str, Response)>;
}

/// What the proxy did: requests forwarded, and faults injected by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub forwarded: usize,
    pub injected: BTreeMap<&'static str, usize>,
}

impl FaultCounts {
    pub fn injected(&self, kind: &str) -> usize {
        self.injected.get(kind).copied().unwrap_or(0)
    }
}

struct Shared<P> {
    upstream: String,
    client: reqwest::Client,
    state: Mutex<ProxyState<P>>,
}

struct ProxyState<P> {
    plan: P,
    rng: fastrand::Rng,
    counts: FaultCounts,
}

impl<P> Shared<P> {
    fn state(&self) -> MutexGuard<'_, ProxyState<P>> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy<P> {
    shared: Arc<Shared<P>>,
    address: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl<P> Drop for FaultProxy<P> {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl<P: FaultPlan> FaultProxy<P> {
    /// A proxy on a free loopback port to `upstream` (scheme, host and port,
    /// for example `http://127.0.0.1:8000`); paths are kept as they come.
    pub async fn start(upstream: &str, plan: P) -> Result<Self, LocalError> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            // Local upstreams only: never through a proxy the environment names.
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|error| LocalError::Bind(std::io::Error::other(error)))?,
            state: Mutex::new(ProxyState {
                rng: fastrand::Rng::with_seed(plan.seed()),
                plan,
                counts: FaultCounts::default(),
            }),
        });
        let router = Router::new().fallback(forward::<P>).with_state(shared.clone());
        let (address, server) = crate::serve_on_loopback(router, "fault proxy").await?;
        Ok(FaultProxy {
            shared,
            address,
            server,
        })
    }

    /// The proxy's scheme, host and port, to use instead of the upstream's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Changes what is injected from the next request on.
    pub fn set_plan(&self, plan: P) {
        self.shared.state().plan = plan;
    }

    pub fn counts(&self) -> FaultCounts {
        self.shared.state().counts.clone()
    }
}

async fn forward<P: FaultPlan>(
    State(shared): State<Arc<Shared<P>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let injected = {
        let mut state = shared.state();
        let ProxyState { plan, rng, counts } = &mut *state;
        let request = ProxiedRequest {
            method: &method,
            path,
            headers: &headers,
            body: &body,
        };
        match plan.draw(&request, rng) {
            Some((kind, answer)) => {
                *counts.injected.entry(kind).or_default() += 1;
                Some(answer)
            }
            None => {
                counts.forwarded += 1;
                None
            }
        }
    };
    if let Some(answer) = injected {
        return answer;
    }
    let mut request = shared
        .client
        .request(method, format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in &headers {
        // A signature covers the host the SDK was given; the local servers do not check it.
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(error = %error, "the upstream did not answer");
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    let status = answer.status();
    let mut response_headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response_headers.append(name.clone(), value.clone());
        }
    }
    match answer.bytes().await {
        Ok(bytes) => (status, response_headers, bytes).into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "the upstream's answer broke off");
            StatusCode::BAD_GATEWAY.into_response()
        }
    }
}
