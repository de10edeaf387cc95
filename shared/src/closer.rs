//! Closing a connection from the server side: tell the client why in a
//! `closing` frame, then close the socket through the Management API.
//!
//! Used when a token expires on a live connection and when a full per-user cap
//! evicts a user's oldest connection. API Gateway's `DeleteConnection` cannot
//! carry a close code or reason, so the frame is how the client learns whether
//! to reconnect (`token_expired`: yes, with a fresh token) or not (`evicted`).

use airwave_protocol::{Closing, ErrorCode};
use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;

use crate::telemetry::metric;
use crate::Error;

/// What a connection whose token expired is told, in its refusal and its `closing` frame.
pub const TOKEN_EXPIRED_MESSAGE: &str = "the connection's token has expired; reconnect with a fresh token";

/// The Management API client of the functions that close connections
/// (`$connect` for evictions, `$default` for expired tokens).
#[derive(Debug, Clone)]
pub struct Closer {
    client: Client,
}

impl Closer {
    /// A closer for the Management API at `endpoint` (stage included).
    pub fn new(sdk_config: &SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk_config)
            .endpoint_url(endpoint)
            .build();
        Closer {
            client: Client::from_conf(config),
        }
    }

    /// Posts `frames` (replies the client is owed, then the `closing` frame
    /// with `code`) and closes the connection. A connection that is already
    /// gone is no error: it is what was wanted.
    pub async fn close(
        &self,
        connection_id: &str,
        frames: &[String],
        code: ErrorCode,
        message: &str,
    ) -> Result<(), Error> {
        close_with_reason(&self.client, connection_id, frames, code, message).await
    }
}

impl Closer {
    /// Asks API Gateway whether the connection is open (`GET
    /// @connections/{id}`): `false` on 410, the authoritative answer for a
    /// connection whose `$disconnect` never came. Any other failure is an
    /// error, so a caller never releases a slot on a guess.
    pub async fn is_connected(&self, connection_id: &str) -> Result<bool, Error> {
        match self.client.get_connection().connection_id(connection_id).send().await {
            Ok(_) => Ok(true),
            Err(error) if is_gone(&error) => Ok(false),
            Err(error) => Err(Error::Management {
                operation: "GetConnection",
                connection_id: connection_id.to_owned(),
                message: aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&error).to_string(),
            }),
        }
    }
}

/// [`Closer::close`] with any Management API client.
pub(crate) async fn close_with_reason(
    client: &Client,
    connection_id: &str,
    frames: &[String],
    code: ErrorCode,
    message: &str,
) -> Result<(), Error> {
    let closing = Closing {
        code: code.clone(),
        message: message.to_owned(),
    }
    .to_text();
    for frame in frames.iter().chain(std::iter::once(&closing)) {
        let posted = client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(frame.as_bytes()))
            .send()
            .await;
        match posted {
            Ok(_) => {}
            Err(error) if is_gone(&error) => return Ok(()),
            Err(error) => {
                // Still close it: a client that misses the reason only
                // reconnects the ordinary way.
                tracing::warn!(
                    connection_id,
                    error = %aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&error),
                    "could not tell a connection why it is closed"
                );
                break;
            }
        }
    }
    delete_connection(client, connection_id).await?;
    metrics::counter!(metric::CONNECTIONS_CLOSED, "reason" => code.as_str().to_owned()).increment(1);
    tracing::info!(connection_id, reason = code.as_str(), "closed a connection");
    Ok(())
}

/// `DELETE /@connections/{id}`; a connection already gone (410) is success.
pub(crate) async fn delete_connection(client: &Client, connection_id: &str) -> Result<(), Error> {
    match client.delete_connection().connection_id(connection_id).send().await {
        Ok(_) => Ok(()),
        Err(error) if is_gone(&error) => Ok(()),
        Err(error) => Err(Error::Management {
            operation: "DeleteConnection",
            connection_id: connection_id.to_owned(),
            message: aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&error).to_string(),
        }),
    }
}

/// Whether API Gateway answered 410: the connection is no longer there.
pub(crate) fn is_gone<E>(error: &aws_sdk_apigatewaymanagement::error::SdkError<E, HttpResponse>) -> bool
where
    E: aws_sdk_apigatewaymanagement::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|service_error| service_error.code())
        .is_some_and(|code| code == "GoneException")
        || error
            .raw_response()
            .is_some_and(|response| response.status().as_u16() == 410)
}
