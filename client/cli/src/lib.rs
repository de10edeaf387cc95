//! What the `airwave` command runs beyond a single request: the fan-out benchmark.

pub mod bench;
