//! Transactions, as every write that changes several items at once makes
//! them: one that loses a race to another on the same items is tried again
//! with jitter, and one whose condition fails says which item's did, which is
//! how a caller tells a full cap from a record that is already there.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::TransactWriteItem;

use super::DynamoStore;
use crate::Error;

/// How many times a transaction that lost a race to another one is tried:
/// with the backoff below, about 4 s in all. A release that still fails leaves
/// the slot to the expiry reclaim, so it is worth trying hard.
const TRANSACTION_ATTEMPTS: u32 = 12;

/// Why a transaction was cancelled, from its per-item reasons.
enum Cancellation {
    /// Item `index` (the first) failed its condition.
    ConditionFailed {
        index: usize,
    },
    /// Another transaction touched the same items; trying again is right.
    Conflict,
    Other,
}

/// How a transaction ended when DynamoDB answered.
pub(crate) enum Transaction {
    Committed,
    /// Item `index` (the first whose condition failed) failed its
    /// condition; nothing was written.
    ConditionFailed {
        index: usize,
    },
}

fn cancellation<R>(error: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, R>) -> Option<Cancellation> {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
            let reasons = cancelled.cancellation_reasons();
            let failed = reasons
                .iter()
                .position(|reason| reason.code() == Some("ConditionalCheckFailed"));
            if let Some(index) = failed {
                return Some(Cancellation::ConditionFailed { index });
            }
            if reasons
                .iter()
                .any(|reason| reason.code() == Some("TransactionConflict"))
            {
                return Some(Cancellation::Conflict);
            }
            Some(Cancellation::Other)
        }
        _ => None,
    }
}

/// Full-jitter backoff between transaction attempts: up to 10 ms, 20 ms, ... 640 ms.
pub(crate) async fn conflict_backoff(attempt: u32) {
    let ceiling_ms = 10u64 << attempt.min(6);
    tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..=ceiling_ms))).await;
}

impl DynamoStore {
    /// Runs a transaction, trying again (with jitter) when it loses a race to
    /// another transaction on the same items.
    pub(crate) async fn transact(&self, table: &str, items: Vec<TransactWriteItem>) -> Result<Transaction, Error> {
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(Transaction::Committed),
                Err(error) => error,
            };
            match cancellation(&error) {
                Some(Cancellation::ConditionFailed { index }) => return Ok(Transaction::ConditionFailed { index }),
                Some(Cancellation::Conflict) if attempt + 1 < TRANSACTION_ATTEMPTS => conflict_backoff(attempt).await,
                _ => return Err(Error::dynamodb("TransactWriteItems", table, error)),
            }
        }
        Err(Error::DynamoDb {
            operation: "TransactWriteItems",
            table: table.to_owned(),
            message: format!("still conflicting with other transactions after {TRANSACTION_ATTEMPTS} attempts"),
        })
    }
}
