//! Opening a socket (with retries, a token per attempt, TLS from the system roots) and leaving
//! one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use super::config::ClientConfig;
use super::state::{lock, Shared};
use crate::error::Error;

pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens one socket, getting a token before every attempt. With `immediate` (a fresh connect,
/// or a token that expired) the first attempt goes at once; otherwise (a reconnect, `last` says
/// why the socket dropped) every attempt waits its jittered delay, so that all the clients that
/// lost their socket at once do not come back at once.
///
/// `retry` is the position in the backoff schedule. It carries over between reconnects and is
/// only reset by the caller once a socket has proved healthy, so a server that accepts the
/// handshake and then drops every socket at once still exhausts the bound instead of being
/// retried forever.
pub(super) async fn connect_with_retry(
    shared: &Shared,
    immediate: bool,
    mut last: Option<Error>,
    retry: &mut u32,
) -> Result<Socket, Error> {
    let mut wait_first = !immediate;
    loop {
        if wait_first {
            let delay = shared.config.backoff().delay(*retry, &mut *lock(&shared.rng));
            let Some(delay) = delay else {
                // Counted from the last healthy socket, not just this call: a flapping server's
                // reconnects each open a socket and they all count.
                return Err(Error::GaveUp {
                    attempts: *retry + u32::from(immediate),
                    last: Box::new(last.unwrap_or(Error::Disconnected)),
                });
            };
            debug!(retry = *retry, ?delay, "waiting before the next connection attempt");
            tokio::time::sleep(delay).await;
            *retry += 1;
        }
        wait_first = true;
        let attempt = async {
            let token = shared.config.token().await?;
            open(&shared.config, token.as_deref()).await
        };
        match attempt.await {
            Ok(socket) => return Ok(socket),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                warn!(error = %e, retry = *retry, "connect failed");
                last = Some(e);
            }
        }
    }
}

async fn open(config: &ClientConfig, token: Option<&str>) -> Result<Socket, Error> {
    let connector = match config.url().scheme() {
        "wss" => Some(Connector::Rustls(tls_config()?)),
        _ => None,
    };
    // A small read buffer: the frames are small and `bench` holds thousands of sockets.
    let ws_config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let handshake = tokio_tungstenite::connect_async_tls_with_config(
        config.handshake(token)?,
        Some(ws_config),
        true, // no Nagle: frames are small and latency is what `bench` measures
        connector,
    );
    match tokio::time::timeout(config.connect_timeout(), handshake).await {
        Err(_) => Err(Error::Timeout("connecting")),
        Ok(Err(tungstenite::Error::Http(response))) => Err(Error::Handshake {
            status: response.status().as_u16(),
        }),
        Ok(Err(tungstenite::Error::Url(e))) => Err(Error::InvalidUrl(e.to_string())),
        Ok(Err(e)) => Err(Error::Connect(Arc::new(e))),
        Ok(Ok((socket, _response))) => Ok(socket),
    }
}

/// One TLS configuration per process: loading the system roots for each of thousands of `bench`
/// sockets would cost more than the handshakes.
pub(crate) fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static TLS: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    TLS.get_or_init(build_tls_config).clone().map_err(Error::Tls)
}

fn build_tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        warn!(%error, "could not load a system root certificate");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        return Err("no usable root certificates in the system store".to_owned());
    }
    // An explicit provider: relying on rustls' process default would panic when the build
    // enables more than one.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How long a socket being left gets to send its close frame before it is cut.
const ABANDON_TIMEOUT: Duration = Duration::from_secs(1);

/// Closes a socket the client is leaving, then drops it (which closes the TCP stream).
pub(super) async fn abandon(mut socket: Socket) {
    match tokio::time::timeout(ABANDON_TIMEOUT, socket.close(None)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "close frame not sent"),
        Err(_) => debug!("close frame not sent in time"),
    }
}
