//! Every integration test, in one binary (one link of the AWS SDK instead of one per file).
//! Each module is one area; run one with `cargo test -p airwave-tests --test it MODULE::`.

mod admission;
mod channels;
mod connections;
mod end_to_end;
mod fanout;
mod fixtures;
mod heartbeat;
mod http;
mod jwks;
mod messages;
mod permissions;
mod positions;
mod publish_limits;
mod quota;
mod races;
mod recovery;
mod removals;
mod replay;
mod smoke;
mod soak;
mod users;
