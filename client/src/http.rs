//! Publishing over the HTTP API (`POST /v1/publish`), for programs that have
//! no socket open: a backend with a server key, or a client with its token.
//!
//! ```no_run
//! # async fn demo() -> Result<(), airwave_client::Error> {
//! use airwave_client::http::{Credential, HttpMessage, HttpPublisher};
//!
//! let publisher = HttpPublisher::new(
//!     "https://abc123.execute-api.eu-west-1.amazonaws.com",
//!     Credential::ServerKey(std::env::var("AIRWAVE_SERVER_KEY").unwrap_or_default()),
//! )?;
//! let mut message = HttpMessage::to_channel("prices", serde_json::json!({"price": 12.5}));
//! message.idempotency_key = Some("price-2026-12-06T10:00".into());
//! let published = publisher.publish(&[message]).await?;
//! println!("{}", published[0].message_id);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use airwave_protocol::http::{HttpErrorBody, PublishBatch, PublishResponse, PUBLISH_PATH, SERVER_KEY_SCHEME};
pub use airwave_protocol::http::{HttpMessage, PublishedMessage, MAX_BATCH};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::Error;

/// How a publisher proves who it is.
#[derive(Clone)]
pub enum Credential {
    /// A server key: any channel, any user, everyone.
    ServerKey(String),
    /// A client token: what its socket may publish.
    Token(String),
    /// Nothing, where the deployment checks no tokens.
    None,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Credential::ServerKey(_) => "ServerKey(<redacted>)",
            Credential::Token(_) => "Token(<redacted>)",
            Credential::None => "None",
        })
    }
}

/// Publishes over an Airwave HTTP API.
#[derive(Debug, Clone)]
pub struct HttpPublisher {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: hyper::Uri,
    credential: Credential,
}

/// A publish that does not answer within this is reported as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpPublisher {
    /// `api_url` is the stack's `HttpApiUrl` (`https://…amazonaws.com`, or
    /// `http://127.0.0.1:3001` locally); the publish path is added to it.
    pub fn new(api_url: &str, credential: Credential) -> Result<Self, Error> {
        let base = api_url.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(Error::InvalidUrl(format!("{api_url:?} is not an http(s) URL")));
        }
        let url: hyper::Uri = format!("{base}{PUBLISH_PATH}")
            .parse()
            .map_err(|error| Error::InvalidUrl(format!("{api_url:?}: {error}")))?;
        // The sockets' TLS setup: the system's roots, one crypto provider.
        let tls = crate::client::tls_config()?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpPublisher {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url,
            credential,
        })
    }

    /// Publishes `messages` (at most [`MAX_BATCH`]) in order, and answers
    /// what became of each. A refusal is [`Error::Server`] with the
    /// protocol's code and writes nothing; a 5xx or a timeout may have
    /// written some, so retry only messages with idempotency keys.
    pub async fn publish(&self, messages: &[HttpMessage]) -> Result<Vec<PublishedMessage>, Error> {
        let body = serde_json::to_vec(&PublishBatch {
            messages: messages.to_vec(),
        })
        .map_err(|error| Error::UnexpectedReply(format!("the batch cannot be written as JSON: {error}")))?;
        let mut request = hyper::Request::post(self.url.clone()).header("content-type", "application/json");
        request = match &self.credential {
            Credential::ServerKey(key) => request.header("authorization", format!("{SERVER_KEY_SCHEME} {key}")),
            Credential::Token(token) => request.header("authorization", format!("Bearer {token}")),
            Credential::None => request,
        };
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| Error::InvalidUrl(error.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| Error::Http(error.to_string()))?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|error| Error::Http(error.to_string()))?
                .to_bytes();
            Ok::<_, Error>((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        let (status, text) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| Error::Timeout("waiting for the HTTP API"))??;
        if status == 200 {
            let published: PublishResponse =
                serde_json::from_str(&text).map_err(|error| Error::UnexpectedReply(format!("{error}: {text}")))?;
            return Ok(published.messages);
        }
        match serde_json::from_str::<HttpErrorBody>(&text) {
            Ok(refused) => Err(Error::Server {
                code: refused.error.code,
                message: refused.error.message,
            }),
            Err(_) => Err(Error::Server {
                code: format!("http_{status}"),
                message: text,
            }),
        }
    }
}
