//! An HTTP proxy in front of the local DynamoDB that forwards every request
//! and counts what DynamoDB on-demand would bill for it: read and
//! write request units per table, and the share of the writes that went to
//! secondary indexes. The local server reports no consumed capacity, so the
//! meter works it out from the items themselves, by the rules of the
//! DynamoDB Developer Guide ("DynamoDB item sizes and formats", "Managing
//! throughput settings on provisioned tables", "Provisioned throughput
//! considerations for Global Secondary Indexes", the same for Local
//! Secondary Indexes, and "Capacity management for transactions"):
//!
//! - Writes: 1 unit per KB, rounded up per item, at least 1. A put or update
//!   is sized on the larger of the item before and after; a delete on the
//!   item before. A write whose condition fails still costs the existing
//!   item's size (1 unit for an absent item).
//! - Index writes: an item is in an index when it has all the index's key
//!   attributes; its entry is the table key, the index key, the projected
//!   attributes and 100 bytes. Entering the index is a put, leaving it a
//!   delete, a change of the index key a delete and a put, a change of a
//!   projected attribute alone a put; each rounded up to 1 KB.
//! - Transactions: every item (`ConditionCheck` included) is written twice,
//!   to prepare and to commit, so at twice the rate; index updates happen
//!   once the transaction has committed, at the ordinary rate.
//! - Reads: 4 KB per unit, rounded up, half for eventually consistent
//!   reads, at least one 4 KB block even for an absent item. Batches count
//!   each item on its own; transactional reads cost twice a strongly
//!   consistent read. `Query` and `Scan` are sized once per request on every
//!   item evaluated, before any filter and whatever the projection; on an
//!   index, on the index entries (projected attributes, no overhead), plus,
//!   for a local index asked for attributes it does not project, every
//!   base-table item fetched, each rounded up on its own.
//! - Everything else (table management, stream reads, which are free to a
//!   Lambda trigger) and every request DynamoDB refuses is counted and costs
//!   nothing.
//!
//! To know the items, the meter asks the upstream itself (requests it does
//! not count): a consistent `GetItem` of each written item before and after
//! the write, `DescribeTable` for keys and indexes (cached per table), and
//! the same `Query` or `Scan` without its filter and projection. Metered
//! requests pass one at a time, so that what it reads before and after a
//! write is that write's doing.
//!
//! With partition limits ([`MeteredDynamoDb::start_with`]), the meter also
//! throttles a hot key as DynamoDB does: on AWS one partition-key value gets
//! at most 1,000 write units and 3,000 read units a second, whatever the
//! table's capacity. Each request's units are charged to the partitions of
//! the items it wrote or read (a query's to the partition its key condition
//! names; a scan is not limited), against a token bucket per partition and
//! direction that holds one second of the limit; a request that touches a
//! partition in debt is answered as DynamoDB answers a throttled request,
//! without being forwarded, and costs nothing. Index writes count against
//! the base item's partition, although a global index has partitions of its
//! own on AWS; a query of a global index counts against the index's
//! partition. `limits.rs` and `throttle.rs` say more. Without limits,
//! [`MeteredDynamoDb::start`], every request is forwarded unchanged.

mod evaluate;
mod limits;
mod plan;
mod pricing;
mod proxy;
mod schema;
mod settle;
mod throttle;
mod upstream;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use serde_json::{Map, Value};

use crate::LocalError;
use limits::Limiter;
pub use limits::PartitionLimits;
use pricing::Charges;
use schema::TableSchema;

/// An item, or a key, as DynamoDB's JSON writes it.
type Item = Map<String, Value>;

/// What one table's requests would have consumed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TableUsage {
    pub read_units: f64,
    /// Table and index writes together.
    pub write_units: f64,
    /// The share of `write_units` spent on secondary indexes.
    pub index_write_units: f64,
    /// Requests that named this table, by operation (a batch or transaction
    /// over several tables counts once in each).
    pub requests: BTreeMap<String, u64>,
    /// Requests refused, or batches cut short, by the partition limits
    /// because of this table's partitions (also counted in `requests`).
    pub throttled_requests: u64,
}

/// What the requests through a [`MeteredDynamoDb`] would have consumed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DynamoDbUsage {
    pub tables: BTreeMap<String, TableUsage>,
    /// Every request once, by operation, whatever the tables it names.
    pub requests: BTreeMap<String, u64>,
    /// Requests refused, or batches cut short, by the partition limits, by
    /// table (a request throttled on several tables counts in each).
    pub throttled: BTreeMap<String, u64>,
}

/// How a [`MeteredDynamoDb`] behaves beyond counting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeterOptions {
    /// Throttle a partition-key value that takes more than these, as
    /// DynamoDB does; none, the default, throttles nothing.
    pub partition_limits: Option<PartitionLimits>,
}

impl DynamoDbUsage {
    /// One table's usage (zero for a table no request named).
    pub fn table(&self, name: &str) -> TableUsage {
        self.tables.get(name).cloned().unwrap_or_default()
    }

    pub fn total_read_units(&self) -> f64 {
        self.tables.values().map(|table| table.read_units).sum()
    }

    pub fn total_write_units(&self) -> f64 {
        self.tables.values().map(|table| table.write_units).sum()
    }

    pub fn total_index_write_units(&self) -> f64 {
        self.tables.values().map(|table| table.index_write_units).sum()
    }

    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    pub fn total_throttled(&self) -> u64 {
        self.throttled.values().sum()
    }
}

/// A running meter; it stops when dropped.
pub struct MeteredDynamoDb {
    shared: Arc<Shared>,
    address: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MeteredDynamoDb {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl MeteredDynamoDb {
    /// A meter on a free loopback port in front of `upstream` (scheme, host
    /// and port, for example `http://127.0.0.1:8000`), without limits.
    pub async fn start(upstream: &str) -> Result<Self, LocalError> {
        Self::start_with(upstream, MeterOptions::default()).await
    }

    /// A meter with `options`; with partition limits, a hot key is
    /// throttled here as it would be on AWS.
    pub async fn start_with(upstream: &str, options: MeterOptions) -> Result<Self, LocalError> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            // Local upstreams only: never through a proxy the environment names.
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|error| LocalError::Bind(std::io::Error::other(error)))?,
            usage: Mutex::new(DynamoDbUsage::default()),
            one_at_a_time: tokio::sync::Mutex::new(()),
            schemas: Mutex::new(HashMap::new()),
            limiter: options.partition_limits.map(Limiter::new),
        });
        let router = Router::new().fallback(proxy::meter).with_state(shared.clone());
        let (address, server) = crate::serve_on_loopback(router, "DynamoDB meter").await?;
        Ok(MeteredDynamoDb {
            shared,
            address,
            server,
        })
    }

    /// The meter's scheme, host and port, to use instead of the upstream's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// What was consumed since the start or the last [`reset`](Self::reset).
    pub fn usage(&self) -> DynamoDbUsage {
        self.shared.usage().clone()
    }

    /// Forgets the usage; the partitions keep their debts,
    /// which time pays off.
    pub fn reset(&self) {
        *self.shared.usage() = DynamoDbUsage::default();
    }
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    usage: Mutex<DynamoDbUsage>,
    /// Held by every metered request from before its first look at the
    /// items to after its last.
    one_at_a_time: tokio::sync::Mutex<()>,
    schemas: Mutex<HashMap<String, Arc<TableSchema>>>,
    /// With partition limits.
    limiter: Option<Limiter>,
}

impl Shared {
    fn usage(&self) -> MutexGuard<'_, DynamoDbUsage> {
        self.usage.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn schemas(&self) -> MutexGuard<'_, HashMap<String, Arc<TableSchema>>> {
        self.schemas.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, operation: &str, tables: &BTreeSet<String>, charges: Charges, throttled: &BTreeSet<String>) {
        let mut usage = self.usage();
        *usage.requests.entry(operation.to_owned()).or_default() += 1;
        for table in tables {
            *usage
                .tables
                .entry(table.clone())
                .or_default()
                .requests
                .entry(operation.to_owned())
                .or_default() += 1;
        }
        for (table, units) in charges.tables {
            let usage = usage.tables.entry(table).or_default();
            usage.read_units += units.read;
            usage.write_units += units.write;
            usage.index_write_units += units.index_write;
        }
        for table in throttled {
            *usage.throttled.entry(table.clone()).or_default() += 1;
            usage.tables.entry(table.clone()).or_default().throttled_requests += 1;
        }
    }
}
