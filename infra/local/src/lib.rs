//! A local API Gateway Management API without sockets, for the fan-out tests
//! and benchmark: it answers like API Gateway (410 for a gone id, 413 over
//! 128 KB) and can add latency and inject faults. The whole local stack, with
//! sockets, is `airwave-gateway`.

pub mod management;

pub use management::{Faults, LocalManagementApi, Options, PostCounts};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("could not start the local Management API: {0}")]
    Bind(#[from] std::io::Error),
}
