use std::borrow::Cow;

/// Everything that can go wrong inside Airwave's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("environment variable {variable} is not set; expected {expected}")]
    ConfigMissing {
        variable: &'static str,
        expected: &'static str,
    },

    #[error("environment variable {variable} has the invalid value {value:?}; expected {expected}")]
    ConfigInvalid {
        variable: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("DynamoDB {operation} on table {table} failed: {message}")]
    DynamoDb {
        operation: &'static str,
        table: String,
        /// The SDK error rendered with its full context (service code, request id).
        message: String,
    },

    #[error("SQS {operation} on queue {queue} failed: {message}")]
    Sqs {
        operation: &'static str,
        queue: String,
        /// The SDK error rendered with its full context (service code, request id).
        message: String,
    },

    #[error("DynamoDB refused item {key} in table {table}: {message}")]
    ItemRejected {
        table: String,
        key: String,
        message: String,
    },

    #[error("item {key} in table {table} could not be converted: {source}")]
    ItemFormat {
        table: String,
        key: String,
        #[source]
        source: serde_dynamo::Error,
    },

    #[error("message {message_id} makes a {size}-byte frame; API Gateway accepts at most {limit} bytes")]
    FrameTooLarge {
        message_id: String,
        size: usize,
        limit: usize,
    },

    #[error("channel name {name:?} ({length} bytes) is invalid; expected 1 to 64 characters of A-Z, a-z, 0-9, '_', '-', '.', ':', '|' or '@'")]
    InvalidChannel { name: String, length: usize },

    #[error("the Management API circuit breaker is open after {failures} failed posts of the last {window}")]
    BreakerOpen { failures: usize, window: usize },

    #[error("Management API {operation} for connection {connection_id} failed: {message}")]
    Management {
        operation: &'static str,
        connection_id: String,
        message: String,
    },

    #[error("the event is missing {field}")]
    EventField { field: Cow<'static, str> },

    #[error("no position was assigned to message {message_id} of channel {channel}")]
    PositionMissing { channel: String, message_id: String },

    #[error("a listing of a channel was given the cursor of another kind of listing")]
    CursorMismatch,

    #[error("the event could not be decoded: {0}")]
    EventDecode(#[from] serde_json::Error),
}

impl Error {
    pub(crate) fn dynamodb<E>(operation: &'static str, table: &str, error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error::DynamoDb {
            operation,
            table: table.to_owned(),
            message: aws_sdk_dynamodb::error::DisplayErrorContext(error).to_string(),
        }
    }
}

impl Error {
    pub(crate) fn sqs<E>(operation: &'static str, queue: &str, error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error::Sqs {
            operation,
            queue: queue.to_owned(),
            message: aws_sdk_sqs::error::DisplayErrorContext(error).to_string(),
        }
    }
}

impl Error {
    /// Whether retrying can never fix it: DynamoDB refusing a request's
    /// shape (validation, item or collection size, serialization), or an
    /// item, frame or channel that is wrong in itself. Throttles, timeouts
    /// and 5xx are transient and are not matched here.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::DynamoDb { message, .. } => [
                "ValidationException",
                "ItemCollectionSizeLimitExceededException",
                "SerializationException",
            ]
            .iter()
            .any(|code| message.contains(code)),
            Error::ItemRejected { .. }
            | Error::ItemFormat { .. }
            | Error::FrameTooLarge { .. }
            | Error::InvalidChannel { .. }
            | Error::EventDecode(_) => true,
            _ => false,
        }
    }

    /// A stable name for the kind of failure, used as Lambda's `errorType`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ConfigMissing { .. } => "ConfigMissing",
            Error::ConfigInvalid { .. } => "ConfigInvalid",
            Error::DynamoDb { .. } => "DynamoDb",
            Error::Sqs { .. } => "Sqs",
            Error::ItemFormat { .. } => "ItemFormat",
            Error::ItemRejected { .. } => "ItemRejected",
            Error::FrameTooLarge { .. } => "FrameTooLarge",
            Error::InvalidChannel { .. } => "InvalidChannel",
            Error::BreakerOpen { .. } => "BreakerOpen",
            Error::Management { .. } => "Management",
            Error::EventField { .. } => "EventField",
            Error::PositionMissing { .. } => "PositionMissing",
            Error::CursorMismatch => "CursorMismatch",
            Error::EventDecode(_) => "EventDecode",
        }
    }
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(error: Error) -> Self {
        lambda_runtime::Diagnostic {
            error_type: format!("Airwave.{}", error.kind()),
            error_message: error.to_string(),
        }
    }
}
