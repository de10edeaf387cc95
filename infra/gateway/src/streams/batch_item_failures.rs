//! A function's `batchItemFailures` answer: where the retry of a batch
//! starts, as Lambda reads it.

use serde_json::Value;

use super::records::sequence_number;

/// Index of the first record to retry from the function's answer:
/// `Ok(None)` when everything succeeded, `Err` when the answer is malformed
/// (Lambda then retries the whole batch).
pub(super) fn failed_index(answer: &Value, batch: &[Value]) -> Result<Option<usize>, &'static str> {
    let failures = match answer.get("batchItemFailures") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(failures)) => failures,
        Some(_) => return Err("batchItemFailures is not a list"),
    };
    let mut first: Option<usize> = None;
    for failure in failures {
        let identifier = failure
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or("a failure without itemIdentifier")?;
        let index = batch
            .iter()
            .position(|record| sequence_number(record) == Some(identifier))
            .ok_or("an itemIdentifier that is not in the batch")?;
        first = Some(first.map_or(index, |current| current.min(index)));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn batch(sequences: &[&str]) -> Vec<Value> {
        sequences
            .iter()
            .map(|sequence| json!({"dynamodb": {"SequenceNumber": sequence}}))
            .collect()
    }

    #[test]
    fn retries_start_at_the_lowest_reported_failure() {
        let records = batch(&["1", "2", "3"]);
        let answer = json!({"batchItemFailures": [{"itemIdentifier": "3"}, {"itemIdentifier": "2"}]});
        assert_eq!(failed_index(&answer, &records), Ok(Some(1)));
        assert_eq!(failed_index(&json!({"batchItemFailures": []}), &records), Ok(None));
        assert_eq!(failed_index(&json!({}), &records), Ok(None));
        assert!(failed_index(&json!({"batchItemFailures": [{"itemIdentifier": "9"}]}), &records).is_err());
        assert!(failed_index(&json!({"batchItemFailures": [{}]}), &records).is_err());
    }
}
