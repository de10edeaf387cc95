//! Counting the DynamoDB requests a client sends, by operation.

use std::sync::{Arc, Mutex};

/// DynamoDB requests by operation (`X-Amz-Target`), as an SDK interceptor; a
/// `Query` without an `ExclusiveStartKey` starts a listing and is also
/// counted as `Listing`.
#[derive(Debug, Clone, Default)]
pub struct OperationCounter(Arc<Mutex<std::collections::BTreeMap<String, u64>>>);

impl OperationCounter {
    pub fn get(&self, operation: &str) -> u64 {
        self.counts().get(operation).copied().unwrap_or(0)
    }

    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.0.lock().map(|counts| counts.clone()).unwrap_or_default()
    }
}

impl aws_sdk_dynamodb::config::Intercept for OperationCounter {
    fn name(&self) -> &'static str {
        "OperationCounter"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|target| target.rsplit('.').next())
            .unwrap_or("unknown")
            .to_owned();
        let starts_listing = operation == "Query"
            && context
                .request()
                .body()
                .bytes()
                .is_some_and(|body| !String::from_utf8_lossy(body).contains("ExclusiveStartKey"));
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(operation).or_default() += 1;
            if starts_listing {
                *counts.entry("Listing".to_owned()).or_default() += 1;
            }
        }
        Ok(())
    }
}
