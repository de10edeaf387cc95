//! The gateway as a whole: one port serving the WebSocket routes and the
//! Management API side by side, and its shutdown. The one module that knows
//! both sides, so that each of them can leave the other alone.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::connections::Shared;
use crate::options::GatewayOptions;
use crate::responses::forbidden;
use crate::template::StackModel;
use crate::{gateway, http_api, management, GatewayError, Invoker};

/// A local API Gateway: the WebSocket API, its Management API and the HTTP API.
pub struct Gateway;

impl Gateway {
    /// Binds the port and starts serving WebSocket clients and the Management API.
    pub async fn start(
        options: GatewayOptions,
        model: StackModel,
        invoker: Arc<dyn Invoker>,
    ) -> Result<RunningGateway, GatewayError> {
        if options.stage.is_empty() || options.stage.contains('/') || options.stage.starts_with('@') {
            return Err(GatewayError::Config(format!(
                "stage {:?} must be one path segment",
                options.stage
            )));
        }
        let listener = tokio::net::TcpListener::bind(options.address).await?;
        let address = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(options, model, invoker, address, shutdown_rx.clone()));
        let router = Router::new()
            .merge(http_api::routes(&shared.model))
            .merge(gateway::routes())
            .merge(management::routes())
            .fallback(forbidden)
            .with_state(shared.clone());
        let mut signal = shutdown_rx;
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    // A dropped sender also means stop.
                    let _ = signal.wait_for(|stopped| *stopped).await;
                });
            if let Err(error) = serve.await {
                tracing::error!(error = %error, "gateway server stopped");
            }
        });
        tracing::info!(%address, stage = %shared.options.stage, routes = shared.model.routes.len(), "gateway listening");
        Ok(RunningGateway {
            shared,
            shutdown: shutdown_tx,
            server,
        })
    }
}

/// A gateway that is serving. Dropping it stops accepting and closes every
/// socket without waiting for the `$disconnect` invocations; [`RunningGateway::shutdown`] waits.
pub struct RunningGateway {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl RunningGateway {
    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.address
    }

    /// Where clients connect: `ws://127.0.0.1:PORT/{stage}`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/{}", self.shared.address, self.shared.options.stage)
    }

    /// The Management API endpoint, stage included, as the SDK's `endpoint_url`
    /// and the functions' `AIRWAVE_MANAGEMENT_ENDPOINT` want it.
    pub fn management_endpoint(&self) -> String {
        format!("http://{}/{}", self.shared.address, self.shared.options.stage)
    }

    /// Where the template's HTTP API is served: `http://127.0.0.1:PORT`, to
    /// which its route paths (`/v1/publish`) are added.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.shared.address)
    }

    /// HTTP API requests that reached a route, as API Gateway bills them.
    pub fn http_requests(&self) -> u64 {
        self.shared.http_requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The ids of the connections open now.
    pub fn connection_ids(&self) -> Vec<String> {
        self.shared.connections().keys().cloned().collect()
    }

    /// Live sockets closed through the Management API (`DELETE @connections/{id}`).
    pub fn management_closes(&self) -> usize {
        self.shared.management_closes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Messages billed so far as API Gateway meters them: (received from
    /// clients, sent to clients), in 32 KB units.
    pub fn billed_messages(&self) -> (u64, u64) {
        self.shared.billed.snapshot()
    }

    /// Connections whose socket is open.
    pub fn connection_count(&self) -> usize {
        self.shared.connections().len()
    }

    /// Stops accepting, closes every socket (1001 "Going away") and waits until
    /// each connection's `$disconnect` invocation has finished.
    pub async fn shutdown(self) {
        tracing::info!("gateway shutting down");
        let _ = self.shutdown.send(true);
        if let Err(error) = self.server.await {
            tracing::error!(error = %error, "gateway server task failed");
        }
        self.shared.wait_until_idle().await;
        tracing::info!("gateway stopped");
    }
}
