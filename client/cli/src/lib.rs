//! What the `airwave` command runs beyond a single request: the fan-out benchmark and the smoke test.

pub mod bench;
pub mod smoke;
