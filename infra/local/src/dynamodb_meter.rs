//! An HTTP proxy in front of the local DynamoDB that forwards every request
//! unchanged and counts what DynamoDB on-demand would bill for it: read and
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::item_size::item_size;
use crate::round_trips::RequestSpan;
use crate::LocalError;

const TARGET_PREFIX: &str = "DynamoDB_20120810";
const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const WRITE_UNIT_BYTES: usize = 1024;
const READ_UNIT_BYTES: usize = 4096;
/// What an index entry costs beyond its attributes.
const INDEX_ENTRY_OVERHEAD: usize = 100;
/// The operation a request without `X-Amz-Target` is counted under.
const UNKNOWN_OPERATION: &str = "(unknown)";

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
}

/// What the requests through a [`MeteredDynamoDb`] would have consumed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DynamoDbUsage {
    pub tables: BTreeMap<String, TableUsage>,
    /// Every request once, by operation, whatever the tables it names.
    pub requests: BTreeMap<String, u64>,
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
    /// and port, for example `http://127.0.0.1:8000`).
    pub async fn start(upstream: &str) -> Result<Self, LocalError> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            // Local upstreams only: never through a proxy the environment names.
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|error| LocalError::Bind(std::io::Error::other(error)))?,
            usage: Mutex::new(DynamoDbUsage::default()),
            spans: Mutex::new(Vec::new()),
            one_at_a_time: tokio::sync::Mutex::new(()),
            schemas: Mutex::new(HashMap::new()),
        });
        let router = Router::new().fallback(meter).with_state(shared.clone());
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

    /// Every request since the start or the last [`reset`](Self::reset), in
    /// the order they were answered. Requests arrive at once but are metered
    /// one at a time, so an answer can come later than on DynamoDB; the
    /// arrivals, which [`crate::round_trips_before`] reads, are the client's.
    pub fn request_spans(&self) -> Vec<RequestSpan> {
        self.shared.spans().clone()
    }

    pub fn reset(&self) {
        *self.shared.usage() = DynamoDbUsage::default();
        self.shared.spans().clear();
    }
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    usage: Mutex<DynamoDbUsage>,
    /// Every request, when it arrived and when it was answered.
    spans: Mutex<Vec<RequestSpan>>,
    /// Held by every metered request from before its first look at the
    /// items to after its last.
    one_at_a_time: tokio::sync::Mutex<()>,
    schemas: Mutex<HashMap<String, Arc<TableSchema>>>,
}

impl Shared {
    fn usage(&self) -> MutexGuard<'_, DynamoDbUsage> {
        self.usage.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spans(&self) -> MutexGuard<'_, Vec<RequestSpan>> {
        self.spans.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn schemas(&self) -> MutexGuard<'_, HashMap<String, Arc<TableSchema>>> {
        self.schemas.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, operation: &str, tables: &BTreeSet<String>, charges: Charges) {
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
        for (table, units) in charges.0 {
            let usage = usage.tables.entry(table).or_default();
            usage.read_units += units.read;
            usage.write_units += units.write;
            usage.index_write_units += units.index_write;
        }
    }
}

/// Why the meter could not price a request (it is still forwarded).
#[derive(Debug, thiserror::Error)]
enum MeterError {
    #[error("the upstream did not answer: {0}")]
    Upstream(#[from] reqwest::Error),
    #[error("the upstream refused the meter's {operation}: {status} {body}")]
    Refused {
        operation: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("{0}")]
    Shape(String),
}

fn shape(what: impl Into<String>) -> MeterError {
    MeterError::Shape(what.into())
}

/// Units consumed by one request, per table.
#[derive(Debug, Default)]
struct Charges(BTreeMap<String, Units>);

#[derive(Debug, Default)]
struct Units {
    read: f64,
    write: f64,
    index_write: f64,
}

impl Charges {
    fn read(&mut self, table: &str, units: f64) {
        self.0.entry(table.to_owned()).or_default().read += units;
    }

    fn write(&mut self, table: &str, table_units: u64, index_units: u64) {
        let units = self.0.entry(table.to_owned()).or_default();
        units.write += (table_units + index_units) as f64;
        units.index_write += index_units as f64;
    }
}

fn write_units(bytes: usize) -> u64 {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as u64
}

/// 4 KB blocks, at least one.
fn read_blocks(bytes: usize) -> u64 {
    bytes.div_ceil(READ_UNIT_BYTES).max(1) as u64
}

fn read_rate(consistent: bool) -> f64 {
    if consistent {
        1.0
    } else {
        0.5
    }
}

fn size_of(item: Option<&Map<String, Value>>) -> usize {
    item.map_or(0, item_size)
}

type Item = Map<String, Value>;

// ---------------------------------------------------------------------------
// Table schemas

#[derive(Debug)]
struct TableSchema {
    keys: Vec<String>,
    indexes: Vec<IndexSchema>,
}

#[derive(Debug, Clone)]
struct IndexSchema {
    name: String,
    local: bool,
    keys: Vec<String>,
    projection: Projection,
}

#[derive(Debug, Clone)]
enum Projection {
    KeysOnly,
    Include(Vec<String>),
    All,
}

impl TableSchema {
    /// From `DescribeTable`'s `Table`.
    fn parse(table: &Value) -> Result<Self, MeterError> {
        let keys = key_names(table).ok_or_else(|| shape("DescribeTable answered no KeySchema"))?;
        let mut indexes = Vec::new();
        for (field, local) in [("GlobalSecondaryIndexes", false), ("LocalSecondaryIndexes", true)] {
            for index in table.get(field).and_then(Value::as_array).into_iter().flatten() {
                let name = index
                    .get("IndexName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| shape("an index without a name"))?;
                let keys = key_names(index).ok_or_else(|| shape(format!("index {name} without a KeySchema")))?;
                let projection = index.get("Projection");
                let projection = match projection.and_then(|p| p.get("ProjectionType")).and_then(Value::as_str) {
                    Some("ALL") => Projection::All,
                    Some("INCLUDE") => Projection::Include(
                        projection
                            .and_then(|p| p.get("NonKeyAttributes"))
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect(),
                    ),
                    _ => Projection::KeysOnly,
                };
                indexes.push(IndexSchema {
                    name: name.to_owned(),
                    local,
                    keys,
                    projection,
                });
            }
        }
        Ok(TableSchema { keys, indexes })
    }

    fn index(&self, name: &str) -> Option<&IndexSchema> {
        self.indexes.iter().find(|index| index.name == name)
    }

    /// The primary key of `item`.
    fn key_of(&self, item: &Item) -> Option<Item> {
        self.keys
            .iter()
            .map(|name| item.get(name).map(|value| (name.clone(), value.clone())))
            .collect()
    }

    /// Index write units for an item going from `before` to `after`.
    fn index_write_units(&self, before: Option<&Item>, after: Option<&Item>) -> u64 {
        self.indexes
            .iter()
            .map(|index| {
                let old = before.and_then(|item| index.entry(&self.keys, item));
                let new = after.and_then(|item| index.entry(&self.keys, item));
                let units = |entry: &Item| write_units(item_size(entry) + INDEX_ENTRY_OVERHEAD);
                match (old, new) {
                    (Some(old), Some(new)) => {
                        let same_key = index.keys.iter().all(|key| same_value(old.get(key), new.get(key)));
                        if !same_key {
                            units(&old) + units(&new)
                        } else if !same_item(&old, &new) {
                            units(&new)
                        } else {
                            0
                        }
                    }
                    (None, Some(new)) => units(&new),
                    (Some(old), None) => units(&old),
                    (None, None) => 0,
                }
            })
            .sum()
    }
}

fn key_names(described: &Value) -> Option<Vec<String>> {
    described
        .get("KeySchema")?
        .as_array()?
        .iter()
        .map(|key| key.get("AttributeName").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

impl IndexSchema {
    /// The index entry of `item`: none unless it has every key attribute of
    /// the index.
    fn entry(&self, table_keys: &[String], item: &Item) -> Option<Item> {
        if !self.keys.iter().all(|key| item.contains_key(key)) {
            return None;
        }
        Some(match &self.projection {
            Projection::All => item.clone(),
            Projection::KeysOnly | Projection::Include(_) => item
                .iter()
                .filter(|(name, _)| self.projects(table_keys, name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        })
    }

    fn projects(&self, table_keys: &[String], attribute: &str) -> bool {
        table_keys.iter().chain(&self.keys).any(|key| key == attribute)
            || match &self.projection {
                Projection::All => true,
                Projection::KeysOnly => false,
                Projection::Include(attributes) => attributes.iter().any(|name| name == attribute),
            }
    }
}

/// Whether two values are the same, sets compared without their order.
fn same_value(a: Option<&Value>, b: Option<&Value>) -> bool {
    a.map(canonical) == b.map(canonical)
}

fn same_item(a: &Item, b: &Item) -> bool {
    a.len() == b.len() && a.iter().all(|(name, value)| same_value(Some(value), b.get(name)))
}

fn canonical(value: &Value) -> Value {
    let Some(typed) = value.as_object() else {
        return value.clone();
    };
    typed
        .iter()
        .map(|(kind, inner)| {
            let inner = match (kind.as_str(), inner) {
                ("SS" | "NS" | "BS", Value::Array(elements)) => {
                    let mut elements = elements.clone();
                    elements.sort_by_key(Value::to_string);
                    Value::Array(elements)
                }
                ("L", Value::Array(elements)) => Value::Array(elements.iter().map(canonical).collect()),
                ("M", Value::Object(map)) => {
                    Value::Object(map.iter().map(|(key, value)| (key.clone(), canonical(value))).collect())
                }
                _ => inner.clone(),
            };
            (kind.clone(), inner)
        })
        .collect::<Map<String, Value>>()
        .into()
}

// ---------------------------------------------------------------------------
// The proxy

/// An answer from the upstream, kept whole to be returned unchanged.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn outcome(&self) -> Outcome {
        if self.status.is_success() {
            return Outcome::Success;
        }
        let kind = self
            .json()
            .and_then(|body| body.get("__type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        if kind.ends_with("ConditionalCheckFailedException") {
            Outcome::ConditionFailed
        } else if kind.ends_with("TransactionCanceledException") {
            Outcome::TransactionCanceled
        } else {
            Outcome::Refused
        }
    }

    fn into_response(self) -> Response {
        (self.status, self.headers, self.body).into_response()
    }
}

enum Outcome {
    Success,
    ConditionFailed,
    TransactionCanceled,
    /// Any other error: nothing was read or written.
    Refused,
}

async fn meter(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = std::time::Instant::now();
    let path = uri.path_and_query().map_or("/", |path| path.as_str()).to_owned();
    let target = headers
        .get("x-amz-target")
        .and_then(|target| target.to_str().ok())
        .unwrap_or_default();
    let (service, operation) = target.rsplit_once('.').unwrap_or(("", target));
    let operation = if operation.is_empty() {
        UNKNOWN_OPERATION
    } else {
        operation
    };
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let tables = request.as_ref().map(tables_named).unwrap_or_default();
    let credentials = credentials(&headers);
    let metered = service == TARGET_PREFIX && METERED.contains(&operation);

    let mut charges = Charges::default();
    let answer = match (metered, &request) {
        (true, Some(request)) => {
            let _one_at_a_time = shared.one_at_a_time.lock().await;
            let plan = plan(&shared, &credentials, operation, request).await;
            let answer = forward(&shared, method, &path, &headers, body).await;
            match (plan, &answer) {
                (Ok(plan), Some(answer)) => match settle(&shared, &credentials, plan, answer).await {
                    Ok(settled) => charges = settled,
                    Err(error) => tracing::warn!(operation, error = %error, "DynamoDB meter: request not priced"),
                },
                // A request DynamoDB refuses costs nothing: no need to price it.
                (Err(error), Some(answer)) if !matches!(answer.outcome(), Outcome::Refused) => {
                    tracing::warn!(operation, error = %error, "DynamoDB meter: request not priced");
                }
                _ => {}
            }
            answer
        }
        (true, None) => {
            tracing::warn!(
                operation,
                body_bytes = body.len(),
                "DynamoDB meter: request body is not JSON; not priced"
            );
            forward(&shared, method, &path, &headers, body).await
        }
        (false, _) => {
            if UNMETERED_BILLABLE.contains(&operation) {
                tracing::warn!(operation, "DynamoDB meter: PartiQL is not priced");
            }
            forward(&shared, method, &path, &headers, body).await
        }
    };
    if matches!(operation, "CreateTable" | "DeleteTable" | "UpdateTable") {
        let mut schemas = shared.schemas();
        for table in &tables {
            schemas.remove(table);
        }
    }
    shared.spans().push(RequestSpan {
        operation: operation.to_owned(),
        tables: tables.iter().cloned().collect(),
        arrived,
        answered: std::time::Instant::now(),
    });
    shared.record(operation, &tables, charges);
    match answer {
        Some(answer) => answer.into_response(),
        None => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Operations priced by the meter.
const METERED: &[&str] = &[
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
    "GetItem",
    "BatchGetItem",
    "TransactGetItems",
    "Query",
    "Scan",
];

/// Operations that consume units but that the meter does not price.
const UNMETERED_BILLABLE: &[&str] = &["ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction"];

async fn forward(shared: &Shared, method: Method, path: &str, headers: &HeaderMap, body: Bytes) -> Option<Answer> {
    let mut request = shared
        .client
        .request(method, format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in headers {
        // A signature covers the host the SDK was given; the local servers do not check it.
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(error = %error, "the upstream did not answer");
            return None;
        }
    };
    let status = answer.status();
    let mut response_headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response_headers.append(name.clone(), value.clone());
        }
    }
    match answer.bytes().await {
        Ok(body) => Some(Answer {
            status,
            headers: response_headers,
            body,
        }),
        Err(error) => {
            tracing::warn!(error = %error, "the upstream's answer broke off");
            None
        }
    }
}

/// The headers the meter's own requests carry: the caller's credentials, so
/// the upstream places them in the same account and region.
fn credentials(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in ["authorization", "x-amz-date", "x-amz-security-token"] {
        if let Some(value) = headers.get(name) {
            kept.insert(name, value.clone());
        }
    }
    kept
}

/// The tables a request names.
fn tables_named(request: &Value) -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    if let Some(table) = request.get("TableName").and_then(Value::as_str) {
        tables.insert(table.to_owned());
    }
    if let Some(batch) = request.get("RequestItems").and_then(Value::as_object) {
        tables.extend(batch.keys().cloned());
    }
    for item in request
        .get("TransactItems")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(action) = item.as_object() {
            for action in action.values() {
                if let Some(table) = action.get("TableName").and_then(Value::as_str) {
                    tables.insert(table.to_owned());
                }
            }
        }
    }
    // Streams name a table through their ARN: `...:table/NAME/stream/LABEL`.
    if let Some(arn) = request.get("StreamArn").and_then(Value::as_str) {
        if let Some(table) = arn.split_once(":table/").and_then(|(_, rest)| rest.split('/').next()) {
            tables.insert(table.to_owned());
        }
    }
    tables
}

// ---------------------------------------------------------------------------
// The meter's own requests

async fn call(
    shared: &Shared,
    credentials: &HeaderMap,
    operation: &'static str,
    body: &Value,
) -> Result<Value, MeterError> {
    let answer = shared
        .client
        .post(format!("{}/", shared.upstream))
        .headers(credentials.clone())
        .header("x-amz-target", format!("{TARGET_PREFIX}.{operation}"))
        .header("content-type", JSON_CONTENT_TYPE)
        .body(body.to_string())
        .send()
        .await?;
    let status = answer.status();
    let bytes = answer.bytes().await?;
    if !status.is_success() {
        return Err(MeterError::Refused {
            operation,
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    serde_json::from_slice(&bytes).map_err(|error| shape(format!("{operation} answered no JSON: {error}")))
}

/// The whole item at `key`, if any.
async fn get_item(
    shared: &Shared,
    credentials: &HeaderMap,
    table: &str,
    key: &Item,
) -> Result<Option<Item>, MeterError> {
    let answer = call(
        shared,
        credentials,
        "GetItem",
        &json!({"TableName": table, "Key": key, "ConsistentRead": true}),
    )
    .await?;
    Ok(answer.get("Item").and_then(Value::as_object).cloned())
}

async fn schema(shared: &Shared, credentials: &HeaderMap, table: &str) -> Result<Arc<TableSchema>, MeterError> {
    if let Some(schema) = shared.schemas().get(table) {
        return Ok(schema.clone());
    }
    let described = call(shared, credentials, "DescribeTable", &json!({"TableName": table})).await?;
    let schema = Arc::new(TableSchema::parse(
        described
            .get("Table")
            .ok_or_else(|| shape("DescribeTable answered no Table"))?,
    )?);
    shared.schemas().insert(table.to_owned(), schema.clone());
    Ok(schema)
}

// ---------------------------------------------------------------------------
// Pricing

/// What a metered request needs priced once answered.
enum Plan {
    Writes {
        writes: Vec<Write>,
        transaction: bool,
    },
    Gets {
        gets: Vec<Get>,
        /// The item as answered is whole (no projection) and can be sized as is.
        answered_whole: bool,
        transaction: bool,
    },
    Evaluates {
        operation: &'static str,
        table: String,
        consistent: bool,
        sizing: Value,
        /// Base-table items fetched by a local index query, sized with this schema.
        fetches: Option<Arc<TableSchema>>,
    },
}

struct Write {
    table: String,
    key: Item,
    kind: WriteKind,
    schema: Arc<TableSchema>,
    before: Option<Item>,
    /// The request as sent in a batch, to recognise it among unprocessed ones.
    batch_request: Option<Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Put,
    Update,
    Delete,
    Check,
}

struct Get {
    table: String,
    key: Item,
    consistent: bool,
}

fn string_field<'a>(value: &'a Value, field: &str) -> Result<&'a str, MeterError> {
    value
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| shape(format!("no {field}")))
}

fn map_field<'a>(value: &'a Value, field: &str) -> Result<&'a Item, MeterError> {
    value
        .get(field)
        .and_then(Value::as_object)
        .ok_or_else(|| shape(format!("no {field}")))
}

fn consistent_read(value: &Value) -> bool {
    value.get("ConsistentRead").and_then(Value::as_bool).unwrap_or(false)
}

async fn plan(shared: &Shared, credentials: &HeaderMap, operation: &str, request: &Value) -> Result<Plan, MeterError> {
    match operation {
        "PutItem" | "UpdateItem" | "DeleteItem" => {
            let kind = match operation {
                "PutItem" => WriteKind::Put,
                "UpdateItem" => WriteKind::Update,
                _ => WriteKind::Delete,
            };
            let write = write(shared, credentials, kind, request, None).await?;
            Ok(Plan::Writes {
                writes: vec![write],
                transaction: false,
            })
        }
        "BatchWriteItem" => {
            let mut writes = Vec::new();
            for (table, requests) in map_field(request, "RequestItems")? {
                for batch_request in requests.as_array().ok_or_else(|| shape("RequestItems not a list"))? {
                    let (kind, body) = if let Some(put) = batch_request.get("PutRequest") {
                        (WriteKind::Put, put)
                    } else if let Some(delete) = batch_request.get("DeleteRequest") {
                        (WriteKind::Delete, delete)
                    } else {
                        return Err(shape("a batch write neither put nor delete"));
                    };
                    let mut body = body.clone();
                    if let Some(body) = body.as_object_mut() {
                        body.insert("TableName".to_owned(), Value::String(table.clone()));
                    }
                    writes.push(write(shared, credentials, kind, &body, Some(batch_request.clone())).await?);
                }
            }
            Ok(Plan::Writes {
                writes,
                transaction: false,
            })
        }
        "TransactWriteItems" => {
            let mut writes = Vec::new();
            for item in request
                .get("TransactItems")
                .and_then(Value::as_array)
                .ok_or_else(|| shape("no TransactItems"))?
            {
                let (kind, body) = [
                    ("Put", WriteKind::Put),
                    ("Update", WriteKind::Update),
                    ("Delete", WriteKind::Delete),
                    ("ConditionCheck", WriteKind::Check),
                ]
                .into_iter()
                .find_map(|(field, kind)| item.get(field).map(|body| (kind, body)))
                .ok_or_else(|| shape("a transaction item of no known kind"))?;
                writes.push(write(shared, credentials, kind, body, None).await?);
            }
            Ok(Plan::Writes {
                writes,
                transaction: true,
            })
        }
        "GetItem" => Ok(Plan::Gets {
            gets: vec![Get {
                table: string_field(request, "TableName")?.to_owned(),
                key: map_field(request, "Key")?.clone(),
                consistent: consistent_read(request),
            }],
            answered_whole: request.get("ProjectionExpression").is_none() && request.get("AttributesToGet").is_none(),
            transaction: false,
        }),
        "BatchGetItem" => {
            let mut gets = Vec::new();
            for (table, keys_and_attributes) in map_field(request, "RequestItems")? {
                let consistent = consistent_read(keys_and_attributes);
                for key in keys_and_attributes
                    .get("Keys")
                    .and_then(Value::as_array)
                    .ok_or_else(|| shape("no Keys"))?
                {
                    let key = key.as_object().ok_or_else(|| shape("a key not a map"))?;
                    gets.push(Get {
                        table: table.clone(),
                        key: key.clone(),
                        consistent,
                    });
                }
            }
            Ok(Plan::Gets {
                gets,
                answered_whole: false,
                transaction: false,
            })
        }
        "TransactGetItems" => {
            let mut gets = Vec::new();
            for item in request
                .get("TransactItems")
                .and_then(Value::as_array)
                .ok_or_else(|| shape("no TransactItems"))?
            {
                let get = item
                    .get("Get")
                    .ok_or_else(|| shape("a transactional read without Get"))?;
                gets.push(Get {
                    table: string_field(get, "TableName")?.to_owned(),
                    key: map_field(get, "Key")?.clone(),
                    consistent: true,
                });
            }
            Ok(Plan::Gets {
                gets,
                answered_whole: false,
                transaction: true,
            })
        }
        "Query" | "Scan" => {
            let operation = if operation == "Query" { "Query" } else { "Scan" };
            let table = string_field(request, "TableName")?.to_owned();
            let index_name = request.get("IndexName").and_then(Value::as_str);
            let mut fetches = None;
            if let Some(index_name) = index_name {
                let schema = schema(shared, credentials, &table).await?;
                let index = schema
                    .index(index_name)
                    .ok_or_else(|| shape(format!("no index {index_name} on {table}")))?;
                if index.local && asks_beyond_projection(request, index, &schema.keys) {
                    fetches = Some(schema.clone());
                }
            }
            Ok(Plan::Evaluates {
                operation,
                table,
                consistent: consistent_read(request),
                sizing: sizing_request(request, index_name.is_some())?,
                fetches,
            })
        }
        _ => Err(shape("not a metered operation")),
    }
}

/// One item write of a request (`TableName` and `Key` or `Item` in `body`),
/// with the item as it is before.
async fn write(
    shared: &Shared,
    credentials: &HeaderMap,
    kind: WriteKind,
    body: &Value,
    batch_request: Option<Value>,
) -> Result<Write, MeterError> {
    let table = string_field(body, "TableName")?.to_owned();
    let schema = schema(shared, credentials, &table).await?;
    let key = match kind {
        WriteKind::Put => schema
            .key_of(map_field(body, "Item")?)
            .ok_or_else(|| shape(format!("an item without the key of {table}")))?,
        WriteKind::Update | WriteKind::Delete | WriteKind::Check => map_field(body, "Key")?.clone(),
    };
    let before = get_item(shared, credentials, &table, &key).await?;
    Ok(Write {
        table,
        key,
        kind,
        schema,
        before,
        batch_request,
    })
}

/// Whether a query or scan of a local index asks for attributes the index
/// does not project (DynamoDB then reads each whole item from the table).
fn asks_beyond_projection(request: &Value, index: &IndexSchema, table_keys: &[String]) -> bool {
    if matches!(index.projection, Projection::All) {
        return false;
    }
    if request.get("Select").and_then(Value::as_str) == Some("ALL_ATTRIBUTES") {
        return true;
    }
    let names = request.get("ExpressionAttributeNames").and_then(Value::as_object);
    let mut asked: Vec<String> = request
        .get("AttributesToGet")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if let Some(projection) = request.get("ProjectionExpression").and_then(Value::as_str) {
        for path in projection.split(',') {
            let top = path.trim().split(['.', '[']).next().unwrap_or_default();
            let name = match names.and_then(|names| names.get(top)).and_then(Value::as_str) {
                Some(name) => name,
                None => top,
            };
            asked.push(name.to_owned());
        }
    }
    asked.iter().any(|name| !index.projects(table_keys, name))
}

/// The request that makes the upstream answer every item `request`
/// evaluates, whole: no filter, no projection, and only the expression
/// names and values the key condition uses.
fn sizing_request(request: &Value, on_index: bool) -> Result<Value, MeterError> {
    let mut sizing = request.as_object().ok_or_else(|| shape("request not a map"))?.clone();
    for field in [
        "ProjectionExpression",
        "FilterExpression",
        "Select",
        "AttributesToGet",
        "QueryFilter",
        "ScanFilter",
        "ConditionalOperator",
        "ReturnConsumedCapacity",
    ] {
        sizing.remove(field);
    }
    let key_condition = sizing
        .get("KeyConditionExpression")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    for (field, sigil) in [("ExpressionAttributeNames", '#'), ("ExpressionAttributeValues", ':')] {
        let used = placeholders(&key_condition, sigil);
        let kept: Item = sizing
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(name, _)| used.contains(name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        if kept.is_empty() {
            sizing.remove(field);
        } else {
            sizing.insert(field.to_owned(), Value::Object(kept));
        }
    }
    if on_index {
        sizing.insert("Select".to_owned(), json!("ALL_PROJECTED_ATTRIBUTES"));
    }
    Ok(Value::Object(sizing))
}

/// The `#name` or `:value` placeholders of an expression.
fn placeholders(expression: &str, sigil: char) -> BTreeSet<&str> {
    let mut found = BTreeSet::new();
    for (start, character) in expression.char_indices() {
        if character != sigil {
            continue;
        }
        let rest = &expression[start + 1..];
        let length = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if length > 0 {
            found.insert(&expression[start..start + 1 + length]);
        }
    }
    found
}

async fn settle(shared: &Shared, credentials: &HeaderMap, plan: Plan, answer: &Answer) -> Result<Charges, MeterError> {
    let mut charges = Charges::default();
    let outcome = answer.outcome();
    match plan {
        Plan::Writes { writes, transaction } => {
            let rate = if transaction { 2 } else { 1 };
            match outcome {
                Outcome::Success => {
                    let unprocessed = unprocessed(answer, "UnprocessedItems", |requests| requests.as_array());
                    for write in writes {
                        if let Some(request) = &write.batch_request {
                            if unprocessed.contains(&(write.table.clone(), request.clone())) {
                                continue;
                            }
                        }
                        let before = write.before.as_ref();
                        let after = match write.kind {
                            WriteKind::Put | WriteKind::Update => {
                                get_item(shared, credentials, &write.table, &write.key).await?
                            }
                            WriteKind::Delete => None,
                            WriteKind::Check => write.before.clone(),
                        };
                        let size = size_of(before).max(size_of(after.as_ref()));
                        let index = match write.kind {
                            WriteKind::Check => 0,
                            _ => write.schema.index_write_units(before, after.as_ref()),
                        };
                        charges.write(&write.table, rate * write_units(size), index);
                    }
                }
                // A failed condition still costs the existing item's size,
                // or one unit for an absent one.
                Outcome::ConditionFailed => {
                    for write in &writes {
                        charges.write(&write.table, write_units(size_of(write.before.as_ref())), 0);
                    }
                }
                // What a cancelled transaction consumes is not documented.
                // DynamoDB writes every item of a transaction twice, once to
                // prepare and once to commit; a cancelled one is counted as
                // having prepared every item (sized like a failed
                // conditional write) and committed none, with no index
                // writes.
                Outcome::TransactionCanceled => {
                    for write in &writes {
                        charges.write(&write.table, write_units(size_of(write.before.as_ref())), 0);
                    }
                }
                Outcome::Refused => {}
            }
        }
        Plan::Gets {
            gets,
            answered_whole,
            transaction,
        } => {
            let rate = |get: &Get| if transaction { 2.0 } else { read_rate(get.consistent) };
            match outcome {
                Outcome::Success => {
                    let unprocessed = unprocessed(answer, "UnprocessedKeys", |request| {
                        request.get("Keys").and_then(Value::as_array)
                    });
                    for get in gets {
                        if unprocessed.contains(&(get.table.clone(), Value::Object(get.key.clone()))) {
                            continue;
                        }
                        let size = if answered_whole {
                            answer
                                .json()
                                .and_then(|body| body.get("Item").and_then(Value::as_object).map(item_size))
                                .unwrap_or(0)
                        } else {
                            size_of(get_item(shared, credentials, &get.table, &get.key).await?.as_ref())
                        };
                        charges.read(&get.table, read_blocks(size) as f64 * rate(&get));
                    }
                }
                // As for writes: the prepare half of every read.
                Outcome::TransactionCanceled if transaction => {
                    for get in gets {
                        let size = size_of(get_item(shared, credentials, &get.table, &get.key).await?.as_ref());
                        charges.read(&get.table, read_blocks(size) as f64);
                    }
                }
                _ => {}
            }
        }
        Plan::Evaluates {
            operation,
            table,
            consistent,
            sizing,
            fetches,
        } => {
            if matches!(outcome, Outcome::Success) {
                let evaluated = call(shared, credentials, operation, &sizing).await?;
                let items: Vec<&Item> = evaluated
                    .get("Items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .collect();
                let total: usize = items.iter().map(|item| item_size(item)).sum();
                let mut blocks = read_blocks(total);
                if let Some(schema) = fetches {
                    for entry in &items {
                        let key = schema
                            .key_of(entry)
                            .ok_or_else(|| shape("an index entry without the table's key"))?;
                        blocks += read_blocks(size_of(get_item(shared, credentials, &table, &key).await?.as_ref()));
                    }
                }
                charges.read(&table, blocks as f64 * read_rate(consistent));
            }
        }
    }
    Ok(charges)
}

/// The `(table, request)` pairs a batch answer leaves unprocessed.
fn unprocessed(answer: &Answer, field: &str, list: impl Fn(&Value) -> Option<&Vec<Value>>) -> Vec<(String, Value)> {
    let Some(body) = answer.json() else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    for (table, requests) in body.get(field).and_then(Value::as_object).into_iter().flatten() {
        for request in list(requests).into_iter().flatten() {
            pairs.push((table.clone(), request.clone()));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(value: Value) -> Item {
        value.as_object().unwrap().clone()
    }

    fn schema(projection: Projection) -> TableSchema {
        TableSchema {
            keys: vec!["id".to_owned()],
            indexes: vec![IndexSchema {
                name: "by_owner".to_owned(),
                local: false,
                keys: vec!["owner".to_owned(), "at".to_owned()],
                projection,
            }],
        }
    }

    #[test]
    fn units_round_up_and_never_fall_below_one() {
        assert_eq!(write_units(0), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
        assert_eq!(read_blocks(0), 1);
        assert_eq!(read_blocks(4096), 1);
        assert_eq!(read_blocks(10 * 1024), 3);
    }

    #[test]
    fn an_item_enters_moves_within_and_leaves_an_index() {
        let schema = schema(Projection::KeysOnly);
        let outside = item(json!({"id": {"S": "a"}, "owner": {"S": "o"}}));
        let inside = item(json!({"id": {"S": "a"}, "owner": {"S": "o"}, "at": {"N": "1"}, "x": {"S": "1"}}));
        let moved = item(json!({"id": {"S": "a"}, "owner": {"S": "o"}, "at": {"N": "2"}, "x": {"S": "1"}}));
        let touched = item(json!({"id": {"S": "a"}, "owner": {"S": "o"}, "at": {"N": "1"}, "x": {"S": "2"}}));
        assert_eq!(schema.index_write_units(None, Some(&outside)), 0);
        assert_eq!(schema.index_write_units(None, Some(&inside)), 1);
        assert_eq!(schema.index_write_units(Some(&outside), Some(&inside)), 1);
        assert_eq!(schema.index_write_units(Some(&inside), Some(&moved)), 2);
        assert_eq!(
            schema.index_write_units(Some(&inside), Some(&touched)),
            0,
            "x is not projected"
        );
        assert_eq!(schema.index_write_units(Some(&inside), None), 1);
        assert_eq!(schema.index_write_units(Some(&inside), Some(&outside)), 1);

        let including = self::schema(Projection::Include(vec!["x".to_owned()]));
        assert_eq!(
            including.index_write_units(Some(&inside), Some(&touched)),
            1,
            "x is projected"
        );
        assert_eq!(including.index_write_units(Some(&inside), Some(&inside)), 0);
    }

    #[test]
    fn an_index_entry_is_its_projection_and_100_bytes() {
        let schema = schema(Projection::All);
        let big = item(json!({"id": {"S": "a"}, "owner": {"S": "o"}, "at": {"N": "1"}, "x": {"S": "y".repeat(1000)}}));
        // 2 + 6 + 4 + 1001 + 100 bytes: two units.
        assert_eq!(schema.index_write_units(None, Some(&big)), 2);
    }

    #[test]
    fn sets_in_another_order_are_the_same_value() {
        let a = json!({"SS": ["x", "y"]});
        let b = json!({"SS": ["y", "x"]});
        assert!(same_value(Some(&a), Some(&b)));
        assert!(!same_value(Some(&a), Some(&json!({"SS": ["x"]}))));
    }

    #[test]
    fn the_sizing_request_keeps_only_what_the_key_condition_uses() {
        let request = json!({
            "TableName": "t",
            "IndexName": "by_owner",
            "KeyConditionExpression": "#o = :o AND #at > :from",
            "FilterExpression": "#x = :x",
            "ProjectionExpression": "#x",
            "Select": "SPECIFIC_ATTRIBUTES",
            "ExpressionAttributeNames": {"#o": "owner", "#at": "at", "#x": "x"},
            "ExpressionAttributeValues": {":o": {"S": "o"}, ":from": {"N": "1"}, ":x": {"S": "1"}},
            "Limit": 10,
            "ScanIndexForward": false,
        });
        assert_eq!(
            sizing_request(&request, true).unwrap(),
            json!({
                "TableName": "t",
                "IndexName": "by_owner",
                "KeyConditionExpression": "#o = :o AND #at > :from",
                "Select": "ALL_PROJECTED_ATTRIBUTES",
                "ExpressionAttributeNames": {"#o": "owner", "#at": "at"},
                "ExpressionAttributeValues": {":o": {"S": "o"}, ":from": {"N": "1"}},
                "Limit": 10,
                "ScanIndexForward": false,
            })
        );
        let scan = json!({
            "TableName": "t",
            "FilterExpression": "#x = :x",
            "ExpressionAttributeNames": {"#x": "x"},
            "ExpressionAttributeValues": {":x": {"S": "1"}},
        });
        assert_eq!(sizing_request(&scan, false).unwrap(), json!({"TableName": "t"}));
    }

    #[test]
    fn a_local_index_asked_for_more_than_it_projects_fetches_from_the_table() {
        let index = IndexSchema {
            name: "lsi".to_owned(),
            local: true,
            keys: vec!["id".to_owned(), "at".to_owned()],
            projection: Projection::Include(vec!["x".to_owned()]),
        };
        let keys = ["id".to_owned()];
        assert!(!asks_beyond_projection(&json!({}), &index, &keys));
        assert!(asks_beyond_projection(
            &json!({"Select": "ALL_ATTRIBUTES"}),
            &index,
            &keys
        ));
        assert!(!asks_beyond_projection(
            &json!({"ProjectionExpression": "id, x"}),
            &index,
            &keys
        ));
        assert!(asks_beyond_projection(
            &json!({"ProjectionExpression": "#y.z", "ExpressionAttributeNames": {"#y": "y"}}),
            &index,
            &keys
        ));
    }

    #[test]
    fn tables_are_found_wherever_a_request_names_them() {
        let named = tables_named(&json!({
            "TransactItems": [
                {"Put": {"TableName": "a", "Item": {}}},
                {"ConditionCheck": {"TableName": "b", "Key": {}}},
            ]
        }));
        assert_eq!(named, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
        let named = tables_named(&json!({
            "StreamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/messages/stream/2024-01-01T00:00:00.000"
        }));
        assert_eq!(named, BTreeSet::from(["messages".to_owned()]));
        assert_eq!(
            tables_named(&json!({"RequestItems": {"c": [], "d": []}})),
            BTreeSet::from(["c".to_owned(), "d".to_owned()])
        );
    }
}
