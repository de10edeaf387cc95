//! The connection: one socket at a time, reconnects with backoff, resubscribes, keeps a quiet
//! connection alive with pings and drops duplicate messages.
//!
//! A background task (the "actor") owns the socket. [`Client`] handles send it commands and get
//! replies back on oneshot channels; pushed messages and connection events go to the
//! [`Events`] receiver returned by [`Client::new`].

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request as HandshakeRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};
use url::Url;

use crate::backoff::Backoff;
use crate::dedup::RecentIds;
use crate::error::Error;
use crate::order::{ChannelOrder, Notice};
use crate::protocol::{
    answers, parse_frame, ClientFrame, ErrorCode, Incoming, Message, Reply, Request, RequestId, Stats,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Receiver of a client's [`Event`]s. Unbounded so a slow reader never stalls the socket (and
/// with it the keep-alive pings); drop it if the events are not wanted.
pub type Events = mpsc::UnboundedReceiver<Event>;

/// What the client tells its owner, in order.
#[derive(Debug, Clone)]
pub enum Event {
    /// A pushed message, at most once per id (within the dedup window).
    Message(Message),
    /// The socket dropped; the client is reconnecting.
    Disconnected { reason: String },
    /// A new socket is open and the subscriptions were sent again, each with
    /// the last position seen so the server recovers what was missed.
    Reconnected,
    /// What a channel published while the client was away could not be
    /// recovered (outside the history the server keeps, over its replay bound,
    /// or the channel's history was reset). Messages go on arriving in order
    /// from the channel's current position; the application should reload the
    /// channel's state.
    RecoveryFailed { channel: String },
    /// The server closed the connection because the user opened more than their cap allows and
    /// this was their oldest. The client stays disconnected: requests fail with
    /// [`Error::Evicted`] until [`Client::connect`] is called on purpose.
    Evicted { message: String },
    /// Reconnecting failed for good (permanent refusal, retries exhausted, or a fixed token that
    /// expired). A later request or [`Client::connect`] starts over with a fresh retry budget.
    Failed(Error),
}

/// Where the token of each connection attempt comes from.
#[derive(Clone, Default)]
enum Credentials {
    #[default]
    None,
    Fixed(Arc<str>),
    Provider(Arc<dyn Fn() -> BoxFuture<'static, Result<String, Error>> + Send + Sync>),
}

/// Settings of a [`Client`]. Built from a URL, then adjusted with the `with_*` methods.
#[derive(Clone)]
pub struct ClientConfig {
    url: Url,
    credentials: Credentials,
    backoff: Backoff,
    keep_alive_after: Duration,
    request_timeout: Duration,
    connect_timeout: Duration,
    dedup_capacity: usize,
    rng_seed: Option<u64>,
}

impl ClientConfig {
    /// 9 minutes: just under API Gateway's 10-minute idle timeout.
    pub const DEFAULT_KEEP_ALIVE_AFTER: Duration = Duration::from_secs(540);
    #[deprecated(note = "the client now pings only after a quiet period: use `DEFAULT_KEEP_ALIVE_AFTER`")]
    pub const DEFAULT_PING_INTERVAL: Duration = Self::DEFAULT_KEEP_ALIVE_AFTER;
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A configuration with the defaults for a `ws://` or `wss://` URL.
    pub fn new(url: &str) -> Result<Self, Error> {
        let url = Url::parse(url).map_err(|e| Error::InvalidUrl(format!("{url:?}: {e}")))?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(Error::InvalidUrl(format!(
                "scheme must be ws or wss, not {:?}",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Error::InvalidUrl("no host".to_owned()));
        }
        Ok(ClientConfig {
            url,
            credentials: Credentials::None,
            backoff: Backoff::default(),
            keep_alive_after: Self::DEFAULT_KEEP_ALIVE_AFTER,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            dedup_capacity: RecentIds::DEFAULT_CAPACITY,
            rng_seed: None,
        })
    }

    /// One token for every connection. A JWT goes in the `Sec-WebSocket-Protocol` header
    /// (offered as `airwave, <token>`), anything else in the `token` query parameter; the
    /// `$connect` authoriser reads either. A fixed token cannot be renewed: when the server
    /// says it expired, the client stops with [`Error::TokenExpired`].
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.credentials = Credentials::Fixed(token.into().into());
        self
    }

    /// Gets the token from `provider` before every connection attempt (the first connect,
    /// every reconnect and every retry), so a token that expired is replaced by a fresh one.
    /// When the server says the token expired, the client reconnects at once instead of
    /// waiting its backoff. A provider that fails, or takes longer than the connect timeout,
    /// counts as a failed attempt. The token goes where [`ClientConfig::with_token`] puts it.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), airwave_client::Error> {
    /// use airwave_client::ClientConfig;
    ///
    /// async fn fetch_token() -> Result<String, std::io::Error> {
    ///     // e.g. ask the identity provider for a new access token
    ///     Ok("header.payload.signature".to_owned())
    /// }
    ///
    /// let config = ClientConfig::new("wss://example.com/prod")?.with_token_provider(fetch_token);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_token_provider<F, Fut, E>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.credentials = Credentials::Provider(Arc::new(move || {
            provider()
                .map(|token| token.map_err(|e| Error::Token(Arc::from(e.into()))))
                .boxed()
        }));
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long the client may go without sending a frame before it sends a keep-alive ping;
    /// keep it under API Gateway's 10-minute idle timeout. Every frame the client sends
    /// (requests, resubscribes, pings) starts the quiet period over, so a busy connection never
    /// pings. A ping with no pong within the request timeout replaces the socket. Zero is taken
    /// as 1 ms; a duration too large for the clock means no keep-alive.
    pub fn with_keep_alive_after(mut self, quiet: Duration) -> Self {
        self.keep_alive_after = quiet.max(Duration::from_millis(1));
        self
    }

    /// The former name of [`ClientConfig::with_keep_alive_after`], which it calls: the client
    /// no longer pings on a fixed schedule, only after this long without sending anything.
    #[deprecated(note = "the client pings only after a quiet period: use `with_keep_alive_after`")]
    pub fn with_ping_interval(self, interval: Duration) -> Self {
        self.with_keep_alive_after(interval)
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many recent message ids are remembered to drop duplicates.
    pub fn with_dedup_capacity(mut self, capacity: usize) -> Self {
        self.dedup_capacity = capacity;
        self
    }

    /// Seeds the backoff jitter (for reproducible tests); by default it is seeded from the OS.
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// The URL connected to. The token is not in it: it is added to each connection attempt.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// How long the client goes without sending a frame before it pings.
    pub fn keep_alive_after(&self) -> Duration {
        self.keep_alive_after
    }

    #[deprecated(note = "use `keep_alive_after`")]
    pub fn ping_interval(&self) -> Duration {
        self.keep_alive_after
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub fn dedup_capacity(&self) -> usize {
        self.dedup_capacity
    }

    /// Scheme, host, port and path only: safe to log, the token stays out.
    pub fn display_url(&self) -> String {
        let mut shown = self.url.clone();
        shown.set_query(None);
        shown.to_string()
    }

    /// Whether a connection whose token expired can come back with a fresh one.
    fn renews_tokens(&self) -> bool {
        matches!(self.credentials, Credentials::Provider(_))
    }

    /// The token for the next connection attempt.
    async fn token(&self) -> Result<Option<String>, Error> {
        match &self.credentials {
            Credentials::None => Ok(None),
            Credentials::Fixed(token) => Ok(Some(token.to_string())),
            Credentials::Provider(provider) => match tokio::time::timeout(self.connect_timeout, provider()).await {
                Ok(token) => token.map(Some),
                Err(_) => Err(Error::Timeout("getting a token")),
            },
        }
    }

    /// The handshake of one connection attempt. A token shaped like a JWT is offered as a
    /// subprotocol, after `airwave` which the server selects, so it stays out of URLs (and
    /// the access logs that keep them); any other token cannot be a subprotocol (or would not
    /// be recognised as one) and goes in the query string.
    fn handshake(&self, token: Option<&str>) -> Result<HandshakeRequest, Error> {
        let mut url = self.url.clone();
        let offer = token.filter(|token| is_jwt_shaped(token)).and_then(|token| {
            let mut offer = HeaderValue::from_str(&format!("{SUBPROTOCOL}, {token}")).ok()?;
            offer.set_sensitive(true);
            Some(offer)
        });
        if let (Some(token), None) = (token, &offer) {
            url.query_pairs_mut().append_pair("token", token);
        }
        let mut request = url.as_str().into_client_request().map_err(|e| match e {
            tungstenite::Error::Url(e) => Error::InvalidUrl(e.to_string()),
            e => Error::Connect(Arc::new(e)),
        })?;
        if let Some(offer) = offer {
            request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, offer);
        }
        Ok(request)
    }
}

/// The subprotocol the server selects when a client offers it beside its token.
const SUBPROTOCOL: &str = "airwave";

/// Three dot-separated base64url parts, as the server looks for among offered subprotocols;
/// these characters are all valid in a subprotocol name.
fn is_jwt_shaped(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.display_url())
            .field("backoff", &self.backoff)
            .field("keep_alive_after", &self.keep_alive_after)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("dedup_capacity", &self.dedup_capacity)
            .finish_non_exhaustive()
    }
}

/// A handle on one logical Airwave connection. Cheap to clone; every clone shares the socket.
/// The socket closes when the last clone is dropped or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Held across the whole connect, so a second `connect()` waits for the first instead of
    /// opening a second socket.
    slot: tokio::sync::Mutex<Option<Running>>,
}

/// State that outlives one actor, so a client that gave up and is connected again keeps its
/// subscriptions and its dedup memory.
struct Shared {
    config: ClientConfig,
    subscriptions: Mutex<BTreeSet<String>>,
    order: Mutex<ChannelOrder>,
    next_request_id: AtomicU64,
    recent: Mutex<RecentIds>,
    duplicates: AtomicU64,
    events: mpsc::UnboundedSender<Event>,
    rng: Mutex<StdRng>,
    /// Set when the server evicted the connection: requests fail instead of reconnecting.
    evicted: Mutex<Option<String>>,
}

struct Running {
    commands: mpsc::UnboundedSender<Command>,
    /// Dropping it (with the last handle) tells the actor to close the socket and stop.
    _shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

struct Command {
    request: Request,
    reply: oneshot::Sender<Result<Reply, Error>>,
}

impl Client {
    /// A client that is not connected yet; the first request (or [`Client::connect`]) connects.
    pub fn new(config: ClientConfig) -> (Client, Events) {
        let (events, receiver) = mpsc::unbounded_channel();
        let rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        let shared = Shared {
            recent: Mutex::new(RecentIds::new(config.dedup_capacity)),
            config,
            subscriptions: Mutex::new(BTreeSet::new()),
            order: Mutex::new(ChannelOrder::new(GAP_WAIT)),
            next_request_id: AtomicU64::new(1),
            duplicates: AtomicU64::new(0),
            events,
            rng: Mutex::new(rng),
            evicted: Mutex::new(None),
        };
        let inner = Inner {
            shared: Arc::new(shared),
            slot: tokio::sync::Mutex::new(None),
        };
        (Client { inner: Arc::new(inner) }, receiver)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.shared.config
    }

    /// Opens the socket unless one is open or being opened (then it waits for that one). The
    /// first attempt is immediate; failures are retried per the [`Backoff`], except permanent
    /// ones (401, 403, bad URL) which return at once.
    ///
    /// After an [`Event::Evicted`] this is the only way back: the new connection may evict the
    /// user's oldest one in turn.
    pub async fn connect(&self) -> Result<(), Error> {
        lock(&self.inner.shared.evicted).take();
        self.commands().await.map(drop)
    }

    /// Sends one request and waits for its reply. An error reply from the server is
    /// `Ok(Reply::Error {..})` here; the typed helpers turn it into [`Error::Server`].
    ///
    /// Requests go out one at a time per connection, each with an id its reply repeats.
    pub async fn request(&self, request: Request) -> Result<Reply, Error> {
        let commands = self.commands().await?;
        let (reply, receiver) = oneshot::channel();
        commands.send(Command { request, reply }).map_err(|_| Error::Closed)?;
        receiver.await.map_err(|_| Error::Closed)?
    }

    /// Pings and waits for the pong. API Gateway answers it by itself (the `ping` route's mock
    /// integration), without an id, so it proves the socket works, not that the backend does.
    pub async fn ping(&self) -> Result<(), Error> {
        match self.request(Request::Ping).await? {
            Reply::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Subscribes; the channel is subscribed again on every reconnect until unsubscribed.
    pub async fn subscribe(&self, channel: &str) -> Result<(), Error> {
        let since = lock(&self.inner.shared.order).since(channel);
        match self
            .request(Request::Subscribe {
                channel: channel.to_owned(),
                since,
            })
            .await?
        {
            Reply::Subscribed { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn unsubscribe(&self, channel: &str) -> Result<(), Error> {
        match self
            .request(Request::Unsubscribe {
                channel: channel.to_owned(),
            })
            .await?
        {
            Reply::Unsubscribed { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Publishes `data` to `channel` (every connection when `None`); returns the message id.
    /// Not retried if the socket drops before the reply ([`Error::Disconnected`]).
    pub async fn publish(&self, channel: Option<&str>, data: Value) -> Result<String, Error> {
        match self
            .request(Request::Publish {
                channel: channel.map(str::to_owned),
                data,
            })
            .await?
        {
            Reply::Published { message_id } => Ok(message_id),
            other => Err(unexpected(other)),
        }
    }

    /// The server's counters.
    pub async fn stats(&self) -> Result<Stats, Error> {
        match self.request(Request::Stats).await? {
            Reply::Stats(stats) => Ok(stats),
            other => Err(unexpected(other)),
        }
    }

    /// The channels that will be subscribed again after a reconnect.
    pub fn subscriptions(&self) -> Vec<String> {
        lock(&self.inner.shared.subscriptions).iter().cloned().collect()
    }

    /// How many pushed messages were dropped as duplicates so far (by id, or
    /// by a channel position already delivered).
    pub fn duplicates_dropped(&self) -> u64 {
        self.inner.shared.duplicates.load(Ordering::Relaxed) + lock(&self.inner.shared.order).duplicates()
    }

    /// The last position delivered on `channel`: where recovery starts after a reconnect.
    pub fn position(&self, channel: &str) -> Option<crate::protocol::Position> {
        lock(&self.inner.shared.order).since(channel)
    }

    /// Closes the socket (sending a close frame) and waits for the background task to end.
    /// Pending requests fail with [`Error::Closed`]. A later request connects again.
    pub async fn close(&self) {
        let running = self.inner.slot.lock().await.take();
        if let Some(Running {
            commands,
            _shutdown,
            task,
        }) = running
        {
            drop(commands);
            drop(_shutdown);
            if let Err(e) = task.await {
                warn!(error = %e, "connection task ended abnormally");
            }
        }
    }

    /// The command queue of the running actor, connecting first if there is none.
    async fn commands(&self) -> Result<mpsc::UnboundedSender<Command>, Error> {
        let mut slot = self.inner.slot.lock().await;
        if let Some(running) = slot.as_ref() {
            // Closed means the actor ended (it gave up); start over below.
            if !running.commands.is_closed() {
                return Ok(running.commands.clone());
            }
        }
        if let Some(message) = lock(&self.inner.shared.evicted).clone() {
            return Err(Error::Evicted { message });
        }
        let shared = Arc::clone(&self.inner.shared);
        // Retries spent getting this socket count against the reconnects that may follow it.
        let mut retry = 0;
        let socket = connect_with_retry(&shared, true, None, &mut retry).await?;
        debug!(url = %shared.config.display_url(), "connected");
        let (commands, receiver) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(run(shared, socket, retry, receiver, shutdown_rx));
        *slot = Some(Running {
            commands: commands.clone(),
            _shutdown: shutdown,
            task,
        });
        Ok(commands)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.shared.config)
            .finish_non_exhaustive()
    }
}

fn unexpected(reply: Reply) -> Error {
    match reply {
        Reply::Error { code, message } => Error::Server {
            code: code.as_str().to_owned(),
            message,
        },
        other => Error::UnexpectedReply(format!("{other:?}")),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens one socket, getting a token before every attempt. With `immediate` (a fresh connect,
/// or a token that expired) the first attempt goes at once; otherwise (a reconnect, `last` says
/// why the socket dropped) every attempt waits its jittered delay, so that all the clients that
/// lost their socket at once do not come back at once.
///
/// `retry` is the position in the backoff schedule. It carries over between reconnects and is
/// only reset by the caller once a socket has proved healthy, so a server that accepts the
/// handshake and then drops every socket at once still exhausts the bound instead of being
/// retried forever.
async fn connect_with_retry(
    shared: &Shared,
    immediate: bool,
    mut last: Option<Error>,
    retry: &mut u32,
) -> Result<Socket, Error> {
    let mut wait_first = !immediate;
    loop {
        if wait_first {
            let delay = shared.config.backoff.delay(*retry, &mut *lock(&shared.rng));
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
    let connector = match config.url.scheme() {
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
    match tokio::time::timeout(config.connect_timeout, handshake).await {
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
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
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

/// A request in the actor's queue. `reply` is `None` for the client's own requests (keep-alive
/// pings, resubscribes).
struct Pending {
    request: Request,
    reply: Option<oneshot::Sender<Result<Reply, Error>>>,
    sent_at: Option<Instant>,
    /// The id it went out with (a new one per send).
    id: Option<RequestId>,
}

impl Pending {
    fn internal(request: Request) -> Self {
        Pending {
            request,
            reply: None,
            sent_at: None,
            id: None,
        }
    }

    fn answer(self, result: Result<Reply, Error>) {
        match (self.reply, result) {
            (Some(reply), result) => {
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(result);
            }
            (None, Ok(Reply::Error { code, message })) => {
                warn!(request = ?self.request, code = code.as_str(), %message, "server refused a keep-alive or resubscribe");
            }
            (None, Err(e)) => warn!(request = ?self.request, error = %e, "keep-alive or resubscribe failed"),
            (None, Ok(_)) => {}
        }
    }
}

enum Outcome {
    Shutdown,
    /// `healthy`: the socket carried at least one protocol frame from the server before it
    /// dropped, which is what resets the reconnect schedule.
    Dropped {
        reason: String,
        healthy: bool,
    },
    /// The server refused the token as expired (a `closing` frame or a refused request);
    /// `healthy` as for `Dropped`, counting the frames before that one.
    TokenExpired {
        message: String,
        healthy: bool,
    },
    /// The server closed the connection for good.
    Evicted {
        message: String,
    },
}

/// The actor: owns the socket until shutdown or until reconnecting fails for good.
async fn run(
    shared: Arc<Shared>,
    mut socket: Socket,
    mut retry: u32,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut queue = VecDeque::new();
    // Channels kept from an earlier actor that gave up are subscribed again on a fresh start.
    resubscribe(&shared, &mut queue);
    // Whether the last reconnect went at once for an expired token, with no working socket
    // since: then the next expiry waits its backoff, or a provider that hands out stale tokens
    // would have the client reconnect in a tight loop.
    let mut prompt_spent = false;
    loop {
        let (reason, healthy, expired) = match drive(&shared, &mut socket, &mut commands, &mut shutdown, &mut queue)
            .await
        {
            Outcome::Shutdown => {
                abandon(socket).await;
                fail_all(&mut queue, &mut commands, &Error::Closed);
                return;
            }
            Outcome::Evicted { message } => {
                warn!(%message, "evicted by the server, not reconnecting");
                // Before the queue fails, so a request racing in fails the same way.
                *lock(&shared.evicted) = Some(message.clone());
                abandon(socket).await;
                fail_all(
                    &mut queue,
                    &mut commands,
                    &Error::Evicted {
                        message: message.clone(),
                    },
                );
                let _ = shared.events.send(Event::Evicted { message });
                return;
            }
            Outcome::Dropped { reason, healthy } => (reason, healthy, None),
            Outcome::TokenExpired { message, healthy } => (format!("token expired: {message}"), healthy, Some(message)),
        };
        // The old socket may still be open (a missed pong, a failed send): close it before the
        // next one opens, so the client never holds two.
        abandon(socket).await;
        if healthy {
            retry = 0;
            prompt_spent = false;
        }
        requeue_after_drop(&mut queue);
        if let (Some(message), false) = (&expired, shared.config.renews_tokens()) {
            // The same token would only be refused again.
            let error = Error::TokenExpired {
                message: message.clone(),
            };
            warn!(error = %error, "giving up on the connection");
            fail_all(&mut queue, &mut commands, &error);
            let _ = shared.events.send(Event::Failed(error));
            return;
        }
        let immediate = expired.is_some() && !prompt_spent;
        prompt_spent |= immediate;
        warn!(%reason, healthy, immediate, "connection lost, reconnecting");
        let _ = shared.events.send(Event::Disconnected { reason: reason.clone() });
        let last = Some(Error::Connect(Arc::new(tungstenite::Error::Io(std::io::Error::other(
            reason,
        )))));
        let reconnected = tokio::select! {
            _ = &mut shutdown => {
                fail_all(&mut queue, &mut commands, &Error::Closed);
                return;
            }
            result = connect_with_retry(&shared, immediate, last, &mut retry) => result,
        };
        match reconnected {
            Ok(next) => {
                info!(url = %shared.config.display_url(), "reconnected");
                socket = next;
                resubscribe(&shared, &mut queue);
                let _ = shared.events.send(Event::Reconnected);
            }
            Err(e) => {
                warn!(error = %e, "giving up on the connection");
                fail_all(&mut queue, &mut commands, &e);
                let _ = shared.events.send(Event::Failed(e));
                return;
            }
        }
    }
}

/// How long a channel's gap may stay open before the client asks the server to
/// fill it: long enough for messages of concurrent stream shards to arrive.
pub const GAP_WAIT: Duration = Duration::from_secs(2);

/// How long a socket being left gets to send its close frame before it is cut.
const ABANDON_TIMEOUT: Duration = Duration::from_secs(1);

/// Closes a socket the client is leaving, then drops it (which closes the TCP stream).
async fn abandon(mut socket: Socket) {
    match tokio::time::timeout(ABANDON_TIMEOUT, socket.close(None)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "close frame not sent"),
        Err(_) => debug!("close frame not sent in time"),
    }
}

/// Runs one socket until it drops or the client shuts down.
async fn drive(
    shared: &Shared,
    socket: &mut Socket,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    shutdown: &mut oneshot::Receiver<()>,
    queue: &mut VecDeque<Pending>,
) -> Outcome {
    // Any frame resets API Gateway's idle timer, so a ping goes out only after the client has
    // sent nothing for `keep_alive_after`. Only frames the client sends count: whether frames
    // API Gateway sends to the client also reset its idle timer is not documented. The socket
    // was opened just now, which starts the first quiet period.
    let quiet = shared.config.keep_alive_after;
    let mut last_sent = Instant::now();
    let mut healthy = false;
    loop {
        if let Some(head) = queue.front_mut() {
            if head.sent_at.is_none() {
                // A gap-fill queued before an unsubscribe went out must not subscribe again.
                let stale = head.reply.is_none()
                    && matches!(&head.request, Request::Subscribe { channel, .. }
                        if !lock(&shared.subscriptions).contains(channel));
                if stale {
                    queue.pop_front();
                    continue;
                }
                let id = RequestId::Number(shared.next_request_id.fetch_add(1, Ordering::Relaxed));
                head.id = Some(id.clone());
                let text = ClientFrame::new(Some(id), head.request.clone()).to_text();
                note_subscription(shared, &head.request);
                if let Err(e) = socket.send(WsMessage::text(text)).await {
                    return Outcome::Dropped {
                        reason: format!("send failed: {e}"),
                        healthy,
                    };
                }
                let now = Instant::now();
                head.sent_at = Some(now);
                last_sent = now;
            }
        }
        let gap_deadline = lock(&shared.order).next_gap_deadline();
        let deadline = queue
            .front()
            .and_then(|p| p.sent_at)
            // A timeout too large for an `Instant` means no timeout.
            .and_then(|sent| sent.checked_add(shared.config.request_timeout));
        // Only with nothing queued: a queued request goes out (and restarts the quiet period)
        // once the one ahead of it is answered, or times out and replaces the socket. A quiet
        // period too long for an `Instant` means no keep-alive.
        let keep_alive_at = if queue.is_empty() {
            last_sent.checked_add(quiet)
        } else {
            None
        };
        // Unbiased on purpose: a flood of pushed messages must not starve requests and pings.
        tokio::select! {
            _ = &mut *shutdown => return Outcome::Shutdown,
            frame = socket.next() => match frame {
                None => return Outcome::Dropped { reason: "closed".to_owned(), healthy },
                Some(Err(e)) => return Outcome::Dropped { reason: e.to_string(), healthy },
                Some(Ok(WsMessage::Text(text))) => match handle_text(shared, queue, text.as_str()) {
                    Handled::Protocol => healthy = true,
                    Handled::Ignored => {}
                    Handled::Replace(reason) => return Outcome::Dropped { reason, healthy },
                    Handled::TokenExpired(message) => return Outcome::TokenExpired { message, healthy },
                    Handled::Evicted(message) => return Outcome::Evicted { message },
                },
                Some(Ok(WsMessage::Close(frame))) => {
                    let why = frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default();
                    let reason = format!("closed by the server {why}").trim_end().to_owned();
                    return Outcome::Dropped { reason, healthy };
                }
                // tungstenite answers WebSocket pings itself; binary frames are not protocol.
                Some(Ok(_)) => {}
            },
            command = commands.recv() => match command {
                Some(Command { request, reply }) => {
                    queue.push_back(Pending { request, reply: Some(reply), sent_at: None, id: None });
                }
                None => return Outcome::Shutdown,
            },
            _ = tokio::time::sleep_until(gap_deadline.unwrap_or_else(Instant::now)), if gap_deadline.is_some() => {
                // A gap that did not fill by itself: the server's recovery fills it.
                let due = lock(&shared.order).gaps_due(Instant::now());
                for (channel, since) in due {
                    // One internal subscribe per channel in the queue at a time.
                    let queued = queue.iter().any(|p| {
                        p.reply.is_none() && matches!(&p.request, Request::Subscribe { channel: c, .. } if *c == channel)
                    });
                    if !queued {
                        debug!(%channel, since = ?since, "asking the server for what a channel is missing");
                        queue.push_back(Pending::internal(Request::Subscribe { channel, since }));
                    }
                }
            }
            _ = tokio::time::sleep_until(keep_alive_at.unwrap_or_else(Instant::now)), if keep_alive_at.is_some() => {
                debug!(?quiet, "nothing sent for the keep-alive period: pinging");
                queue.push_back(Pending::internal(Request::Ping));
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if let Some(head) = queue.pop_front() {
                    let keepalive_lost = head.reply.is_none() && head.request == Request::Ping;
                    head.answer(Err(Error::Timeout("waiting for a reply")));
                    // A ping with no pong means a half-open socket that TCP may never notice;
                    // a request with no reply, a server that may have lost the socket. Either
                    // way the socket is replaced.
                    let reason = if keepalive_lost {
                        "no pong before the request timeout"
                    } else {
                        "no reply before the request timeout"
                    };
                    return Outcome::Dropped { reason: reason.to_owned(), healthy };
                }
            }
        }
    }
}

/// What one text frame from the server meant for the connection.
enum Handled {
    /// A message or a reply: the socket works end to end.
    Protocol,
    /// Not a protocol frame (API Gateway's own error frames, unknown types).
    Ignored,
    /// The connection must be replaced, for this reason.
    Replace(String),
    /// The token expired: replace the connection with one that has a fresh token.
    TokenExpired(String),
    /// The server is closing the connection and it must not come back.
    Evicted(String),
}

fn handle_text(shared: &Shared, queue: &mut VecDeque<Pending>, text: &str) -> Handled {
    let incoming = match parse_frame(text) {
        Ok(incoming) => incoming,
        Err(e) => {
            debug!(error = %e, "ignoring a frame that is not protocol JSON");
            return Handled::Ignored;
        }
    };
    match incoming {
        Incoming::Messages(messages) => {
            for message in messages {
                let delivery = lock(&shared.order).message(message, Instant::now());
                deliver(shared, delivery);
            }
            Handled::Protocol
        }
        Incoming::Closing { code, message } => match code {
            ErrorCode::TokenExpired => Handled::TokenExpired(message),
            ErrorCode::Evicted => Handled::Evicted(message),
            code => {
                // A reason this client does not act on: come back as after any close.
                warn!(code = code.as_str(), %message, "the server is closing the connection");
                Handled::Replace(format!("closed by the server ({}): {message}", code.as_str()))
            }
        },
        Incoming::Reply { id, reply } => {
            let gone = reply.error_code() == Some(&ErrorCode::UnknownConnection);
            // The request fails with the code; a new socket with a new token replaces this one.
            let expired = match &reply {
                Reply::Error {
                    code: ErrorCode::TokenExpired,
                    message,
                } => Some(message.clone()),
                _ => None,
            };
            let matched = queue.front().is_some_and(|p| {
                p.sent_at.is_some()
                    && match &id {
                        Some(id) => p.id.as_ref() == Some(id),
                        // No id: a pong (API Gateway answers pings itself and cannot
                        // echo one), or a server older than request ids. Pair by kind.
                        None => answers(&reply, &p.request),
                    }
            });
            if !matched {
                debug!(?reply, "reply matches no pending request (late after a timeout?)");
            } else if let Some(pending) = queue.pop_front() {
                match (&reply, &pending.request) {
                    // A lost record or an expired token is no refusal of the channel:
                    // it is subscribed again (with its position) on the new socket.
                    (Reply::Error { .. }, Request::Subscribe { .. }) if gone || expired.is_some() => {}
                    (Reply::Error { .. }, Request::Subscribe { channel, .. }) => {
                        lock(&shared.subscriptions).remove(channel);
                        lock(&shared.order).unsubscribed(channel);
                    }
                    (
                        Reply::Subscribed {
                            channel,
                            position,
                            recovered,
                            publications,
                        },
                        _,
                    ) => {
                        let delivery = lock(&shared.order).subscribed(
                            channel,
                            position.clone(),
                            *recovered,
                            publications.clone(),
                            Instant::now(),
                        );
                        deliver(shared, delivery);
                    }
                    _ => {}
                }
                pending.answer(Ok(reply));
            }
            // The server lost this connection's record (TTL): only a new socket registers again.
            if gone {
                Handled::Replace("the server no longer knows this connection".to_owned())
            } else if let Some(message) = expired {
                Handled::TokenExpired(message)
            } else {
                Handled::Protocol
            }
        }
        Incoming::GatewayError { message } => {
            // API Gateway's own answer when a function failed: it belongs to the
            // request in flight, which fails now instead of at its timeout.
            if queue.front().is_some_and(|p| p.sent_at.is_some()) {
                if let Some(pending) = queue.pop_front() {
                    if let Request::Subscribe { channel, .. } = &pending.request {
                        lock(&shared.order).subscribe_failed(channel, Instant::now());
                    }
                    pending.answer(Err(Error::Server {
                        code: "internal_error".to_owned(),
                        message,
                    }));
                }
            }
            Handled::Protocol
        }
        Incoming::Other(value) => {
            debug!(frame = %value, "ignoring a frame of unknown type");
            Handled::Ignored
        }
    }
}

/// Hands ordered messages and notices to the owner, dropping ids already delivered.
fn deliver(shared: &Shared, delivery: crate::order::Delivery) {
    for notice in delivery.notices {
        match notice {
            Notice::RecoveryFailed { channel } => {
                warn!(%channel, "missed messages could not be recovered");
                let _ = shared.events.send(Event::RecoveryFailed { channel });
            }
        }
    }
    for message in delivery.messages {
        if lock(&shared.recent).insert(&message.id) {
            // No receiver means the owner does not want messages; not an error.
            let _ = shared.events.send(Event::Message(message));
        } else {
            shared.duplicates.fetch_add(1, Ordering::Relaxed);
            debug!(id = %message.id, "dropped a duplicate message");
        }
    }
}

/// Records a subscription change when the request goes out, so a drop before the reply still
/// resubscribes (subscribe is idempotent on the server).
fn note_subscription(shared: &Shared, request: &Request) {
    match request {
        Request::Subscribe { channel, .. } => {
            lock(&shared.subscriptions).insert(channel.clone());
            lock(&shared.order).subscribing(channel);
        }
        Request::Unsubscribe { channel } => {
            lock(&shared.subscriptions).remove(channel);
            lock(&shared.order).unsubscribed(channel);
        }
        _ => {}
    }
}

/// Puts a subscribe for every known channel at the front of the queue, each
/// from the last position delivered, so the server recovers the gap.
fn resubscribe(shared: &Shared, queue: &mut VecDeque<Pending>) {
    let channels = lock(&shared.subscriptions).clone();
    let order = lock(&shared.order);
    for channel in channels.into_iter().rev() {
        let since = order.since(&channel);
        queue.push_front(Pending::internal(Request::Subscribe { channel, since }));
    }
}

/// After a drop: the client's own requests go (pings are per socket, resubscribes are queued
/// again); a sent publish fails because it may have gone through; other sent requests are
/// idempotent and go out again on the next socket.
fn requeue_after_drop(queue: &mut VecDeque<Pending>) {
    let mut kept = VecDeque::with_capacity(queue.len());
    for mut pending in queue.drain(..) {
        if pending.reply.is_none() {
            continue;
        }
        if pending.sent_at.is_some() && matches!(pending.request, Request::Publish { .. }) {
            pending.answer(Err(Error::Disconnected));
            continue;
        }
        pending.sent_at = None;
        kept.push_back(pending);
    }
    *queue = kept;
}

/// Fails everything queued or still in the command channel.
fn fail_all(queue: &mut VecDeque<Pending>, commands: &mut mpsc::UnboundedReceiver<Command>, error: &Error) {
    commands.close();
    while let Ok(Command { request, reply }) = commands.try_recv() {
        queue.push_back(Pending {
            request,
            reply: Some(reply),
            sent_at: None,
            id: None,
        });
    }
    for pending in queue.drain(..) {
        pending.answer(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks_the_url_and_puts_a_jwt_in_the_subprotocols_and_other_tokens_in_the_query() {
        assert!(matches!(
            ClientConfig::new("http://example.com"),
            Err(Error::InvalidUrl(_))
        ));
        assert!(matches!(ClientConfig::new("not a url"), Err(Error::InvalidUrl(_))));
        let config = ClientConfig::new("wss://example.com/prod?x=1")
            .unwrap()
            .with_token("a b&c");
        let request = config.handshake(Some("a b&c")).unwrap();
        assert_eq!(request.uri(), "wss://example.com/prod?x=1&token=a+b%26c");
        assert!(request.headers().get(SEC_WEBSOCKET_PROTOCOL).is_none());
        assert_eq!(config.url().as_str(), "wss://example.com/prod?x=1");
        assert_eq!(config.display_url(), "wss://example.com/prod");
        assert!(!format!("{config:?}").contains("token"));

        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.sig-_0";
        let config = ClientConfig::new("wss://example.com/prod").unwrap().with_token(jwt);
        let request = config.handshake(Some(jwt)).unwrap();
        assert_eq!(request.uri(), "wss://example.com/prod");
        let offered = request.headers().get(SEC_WEBSOCKET_PROTOCOL).unwrap();
        assert_eq!(offered.to_str().unwrap(), format!("airwave, {jwt}"));
        // Neither the config nor the request shows the token when printed.
        assert!(offered.is_sensitive());
        assert!(!format!("{request:?}").contains("sig-_0"));
        assert!(!format!("{config:?}").contains("sig-_0"));
    }

    #[test]
    #[allow(deprecated)]
    fn keep_alive_defaults_to_just_under_the_idle_timeout_and_the_old_name_sets_it_too() {
        let config = ClientConfig::new("wss://example.com/prod").unwrap();
        assert_eq!(config.keep_alive_after(), Duration::from_secs(540));
        assert!(format!("{config:?}").contains("keep_alive_after: 540s"));
        let config = config.with_ping_interval(Duration::from_secs(60));
        assert_eq!(config.keep_alive_after(), Duration::from_secs(60));
        assert_eq!(config.ping_interval(), Duration::from_secs(60));
        let config = config.with_keep_alive_after(Duration::ZERO);
        assert_eq!(config.keep_alive_after(), Duration::from_millis(1));
    }

    #[test]
    fn only_three_base64url_parts_make_a_jwt() {
        assert!(is_jwt_shaped("a.b.c"));
        assert!(!is_jwt_shaped("a.b"));
        assert!(!is_jwt_shaped("a.b.c.d"));
        assert!(!is_jwt_shaped("a b.c.d"));
        assert!(!is_jwt_shaped("a.b,c.d"));
    }

    #[test]
    fn a_drop_fails_a_sent_publish_and_keeps_other_caller_requests() {
        let (publish_tx, mut publish_rx) = oneshot::channel();
        let (stats_tx, _stats_rx) = oneshot::channel();
        let sent = Some(Instant::now());
        let mut queue = VecDeque::from([
            Pending {
                request: Request::Publish {
                    channel: None,
                    data: Value::Null,
                },
                reply: Some(publish_tx),
                sent_at: sent,
                id: Some(RequestId::Number(1)),
            },
            Pending::internal(Request::Ping),
            Pending {
                request: Request::Stats,
                reply: Some(stats_tx),
                sent_at: None,
                id: None,
            },
        ]);
        requeue_after_drop(&mut queue);
        assert!(matches!(publish_rx.try_recv(), Ok(Err(Error::Disconnected))));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue[0].request, Request::Stats);
        assert!(queue[0].sent_at.is_none());
    }
}
