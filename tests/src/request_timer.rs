//! When each DynamoDB request was sent and answered, as the client saw it:
//! the spans [`airwave_local::round_trips_before`] counts the round trips of.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use airwave_local::RequestSpan;
use aws_sdk_dynamodb::config::interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

/// Kept in each request's own config bag between its two hooks.
#[derive(Debug, Clone)]
struct Sent {
    operation: String,
    at: Instant,
}

impl Storable for Sent {
    type Storer = StoreReplace<Self>;
}

/// An SDK interceptor recording a [`RequestSpan`] per attempt.
#[derive(Debug, Clone, Default)]
pub struct RequestTimer(Arc<Mutex<Vec<RequestSpan>>>);

impl RequestTimer {
    pub fn spans(&self) -> Vec<RequestSpan> {
        self.0.lock().map(|spans| spans.clone()).unwrap_or_default()
    }

    pub fn reset(&self) {
        if let Ok(mut spans) = self.0.lock() {
            spans.clear();
        }
    }
}

impl Intercept for RequestTimer {
    fn name(&self) -> &'static str {
        "RequestTimer"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|target| target.rsplit('.').next())
            .unwrap_or("unknown")
            .to_owned();
        cfg.interceptor_state().store_put(Sent {
            operation,
            at: Instant::now(),
        });
        Ok(())
    }

    fn read_after_attempt(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(sent) = cfg.load::<Sent>().cloned() {
            if let Ok(mut spans) = self.0.lock() {
                spans.push(RequestSpan {
                    operation: sent.operation,
                    tables: Vec::new(),
                    arrived: sent.at,
                    answered: Instant::now(),
                });
            }
        }
        Ok(())
    }
}
