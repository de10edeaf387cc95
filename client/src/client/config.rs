//! The settings of a [`Client`](super::Client): the endpoint, where each connection attempt's
//! token comes from and how it is sent, the backoff, the timeouts and the dedup window.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request as HandshakeRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use url::Url;

use crate::backoff::Backoff;
use crate::dedup::RecentIds;
use crate::error::Error;
use crate::protocol::SUBPROTOCOL;

/// Where the token of each connection attempt comes from.
#[derive(Clone, Default)]
enum Credentials {
    #[default]
    None,
    Fixed(Arc<str>),
    Provider(Arc<dyn Fn() -> BoxFuture<'static, Result<String, Error>> + Send + Sync>),
}

/// Settings of a [`Client`](super::Client). Built from a URL, then adjusted with the `with_*` methods.
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

    /// The seed of the backoff jitter, when a test fixed it.
    pub(super) fn rng_seed(&self) -> Option<u64> {
        self.rng_seed
    }

    /// Whether connections carry a token (fixed or from a provider).
    pub fn has_credentials(&self) -> bool {
        !matches!(self.credentials, Credentials::None)
    }

    /// Whether a connection whose token expired can come back with a fresh one.
    pub(super) fn renews_tokens(&self) -> bool {
        matches!(self.credentials, Credentials::Provider(_))
    }

    /// The token for the next connection attempt.
    pub(super) async fn token(&self) -> Result<Option<String>, Error> {
        match &self.credentials {
            Credentials::None => Ok(None),
            Credentials::Fixed(token) => Ok(Some(token.to_string())),
            Credentials::Provider(provider) => match tokio::time::timeout(self.connect_timeout, provider()).await {
                Ok(token) => token.map(Some),
                Err(_) => Err(Error::Timeout("getting a token")),
            },
        }
    }

    /// The handshake of one connection attempt. It offers the protocol's version
    /// ([`SUBPROTOCOL`], which the server selects), and a token shaped like a JWT beside
    /// it, so the token stays out of URLs (and the access logs that keep them); any other
    /// token cannot be a subprotocol (or would not be recognised as one) and goes in the
    /// query string.
    pub(super) fn handshake(&self, token: Option<&str>) -> Result<HandshakeRequest, Error> {
        let mut url = self.url.clone();
        let with_token = token.filter(|token| is_jwt_shaped(token)).and_then(|token| {
            let mut offer = HeaderValue::from_str(&format!("{SUBPROTOCOL}, {token}")).ok()?;
            offer.set_sensitive(true);
            Some(offer)
        });
        if let (Some(token), None) = (token, &with_token) {
            url.query_pairs_mut().append_pair("token", token);
        }
        let offer = with_token.unwrap_or(HeaderValue::from_static(SUBPROTOCOL));
        let mut request = url.as_str().into_client_request().map_err(|e| match e {
            tungstenite::Error::Url(e) => Error::InvalidUrl(e.to_string()),
            e => Error::Connect(Arc::new(e)),
        })?;
        request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, offer);
        Ok(request)
    }
}

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
        // The version is offered whatever carries the token.
        assert_eq!(request.headers().get(SEC_WEBSOCKET_PROTOCOL).unwrap(), "airwave.v1");
        assert_eq!(config.url().as_str(), "wss://example.com/prod?x=1");
        assert_eq!(config.display_url(), "wss://example.com/prod");
        assert!(!format!("{config:?}").contains("token"));

        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.sig-_0";
        let config = ClientConfig::new("wss://example.com/prod").unwrap().with_token(jwt);
        let request = config.handshake(Some(jwt)).unwrap();
        assert_eq!(request.uri(), "wss://example.com/prod");
        let offered = request.headers().get(SEC_WEBSOCKET_PROTOCOL).unwrap();
        assert_eq!(offered.to_str().unwrap(), format!("airwave.v1, {jwt}"));
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
}
