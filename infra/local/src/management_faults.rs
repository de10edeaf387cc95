//! What to inject in front of a Management API (the local gateway's own):
//! posts answered 500 `InternalServerErrorException` or 429
//! `LimitExceededException`, the transient answers API Gateway gives under
//! load, while every other request goes through to the real connections.

use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::fault_proxy::{FaultPlan, FaultProxy, ProxiedRequest};
use crate::management::api_error;

/// The counted kind of an injected 500.
pub const SERVER_ERROR: &str = "server_error";
/// The counted kind of an injected 429.
pub const THROTTLED: &str = "throttled";

/// Shares of `POST @connections/{id}` requests to fail, in percent.
#[derive(Debug, Clone, Copy, Default)]
pub struct ManagementFaults {
    pub server_error_percent: u8,
    pub throttle_percent: u8,
    pub seed: u64,
}

/// A proxy in front of a Management API injecting [`ManagementFaults`].
pub type FaultyManagementApi = FaultProxy<ManagementFaults>;

impl FaultPlan for ManagementFaults {
    fn seed(&self) -> u64 {
        self.seed
    }

    fn draw(&self, request: &ProxiedRequest<'_>, rng: &mut fastrand::Rng) -> Option<(&'static str, Response)> {
        if request.method != Method::POST || !request.path.contains("/@connections/") {
            return None;
        }
        let draw = rng.u8(0..100);
        if draw < self.server_error_percent {
            Some((
                SERVER_ERROR,
                api_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerErrorException"),
            ))
        } else if draw < self.server_error_percent.saturating_add(self.throttle_percent) {
            Some((
                THROTTLED,
                api_error(StatusCode::TOO_MANY_REQUESTS, "LimitExceededException"),
            ))
        } else {
            None
        }
    }
}
