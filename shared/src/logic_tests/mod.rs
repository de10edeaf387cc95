//! Fast tests of the logic: the handlers over the in-memory store
//! (`store::MemoryStore`) and a manual clock, so windows, TTLs and expiries
//! are reached by moving the clock, with no DynamoDB server and no sleep.
//! What only DynamoDB can prove (conditions and transactions racing on a
//! real server, round trips, write units) stays in `tests/it`.
//!
//! The template check (`infra/tests/test_template.py`) reads these files
//! with the rest of `shared/src`: a helper named like an SDK method (`send`)
//! would make every function seem to reach what the helper calls.

mod caps;
mod eviction;
mod expiry;
mod polls;
mod positions;
mod publish_limits;
mod recovery;
mod stats;
mod support;
mod throttle;
