//! The WebSocket side of the gateway: the handshake and its `$connect`, routing
//! of messages, `$disconnect`, and the limits API Gateway enforces.
//!
//! One task per connection owns its socket, so nothing else ever writes to or
//! closes it: the Management API and route responses send it commands, and the
//! task closes the socket exactly once, then invokes `$disconnect` exactly once.
//! Messages are handed to a second task per connection that invokes the routes
//! one after another, in arrival order, while the socket task keeps reading
//! (until the queue between them is full) and keeps serving commands.
//!
//! Header names reach the functions lowercased (as HTTP/2 and most proxies
//! deliver them); look them up case-insensitively.
//!
//! The parts: `handshake` validates the upgrade and registers the connection;
//! `connect` runs `$connect` and `$disconnect` and reads their answers;
//! `socket` is the socket task; `routing` the task that invokes the routes.

mod connect;
mod handshake;
mod routing;
mod socket;

pub(crate) use handshake::routes;
