//! Test support: a fresh pair of tables on the local DynamoDB-compatible server
//! for every test, events in the exact shape AWS sends, and a log capture.

pub mod cost;
mod request_timer;
pub mod soak;
pub mod stack;

pub use request_timer::RequestTimer;

/// A lock that a panicked holder cannot make unusable: test bookkeeping is
/// read after the fact, whatever happened.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The authenticator the connect function builds at cold start, for `config`.
pub fn authenticator(config: &Config) -> Option<airwave_shared::auth::Authenticator> {
    airwave_shared::auth::Authenticator::from_config(config).expect("a valid authentication setup")
}

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use airwave_shared::aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use std::time::Duration;

use airwave_shared::fanout::FanOutSettings;
use airwave_shared::{clients, Config, ConnectionStore, DynamoStore, FanOut, SubscriptionStore};
use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::AttributeValue;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

/// Set by `make test` (through `infra/with-moto.sh`) to the local server's URL.
pub const DYNAMODB_ENDPOINT_VARIABLE: &str = "AIRWAVE_TEST_DYNAMODB_ENDPOINT";

pub const CONNECT_EVENT: &str = include_str!("../events/connect.json");
pub const DISCONNECT_EVENT: &str = include_str!("../events/disconnect.json");
pub const MESSAGE_EVENT: &str = include_str!("../events/message.json");
pub const STREAM_BATCH_EVENT: &str = include_str!("../events/stream-batch.json");

/// Tables of their own on the local DynamoDB for one test, and clients for them.
pub struct TestTables {
    pub config: Config,
    pub sdk_config: SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub store: DynamoStore,
}

impl TestTables {
    /// Fresh tables with the default configuration, except that the per-IP
    /// throttle is off: most tests admit hundreds of connections from one IP.
    pub async fn create() -> Self {
        Self::create_with(|config| config.admission.attempts_per_ip = 0).await
    }

    /// Fresh tables, with `configure` applied to the default configuration.
    pub async fn create_with(configure: impl FnOnce(&mut Config)) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let mut config = Config {
            connections_table: format!("connections-{suffix}"),
            messages_table: format!("messages-{suffix}"),
            subscriptions_table: format!("subscriptions-{suffix}"),
            admission_table: format!("admission-{suffix}"),
            history: airwave_shared::config::HistorySettings {
                table: format!("history-{suffix}"),
                ..Default::default()
            },
            // The local DynamoDB answers one request at a time, so under a
            // test's hundreds of concurrent calls an answer can take longer
            // than a production attempt timeout; retrying it would only count
            // an attempt twice. The timeouts have tests of their own.
            aws_timeouts: airwave_shared::config::AwsTimeouts {
                attempt: Duration::from_secs(120),
                operation: Duration::from_secs(300),
            },
            // The template's StreamFailureQueue, on the local server (moto's
            // answers SQS on its DynamoDB port, and reads only the name).
            failure_queue_url: std::env::var(DYNAMODB_ENDPOINT_VARIABLE)
                .ok()
                .map(|endpoint| format!("{endpoint}/000000000000/failures-{suffix}")),
            ..Config::default()
        };
        configure(&mut config);
        let tables = Self::open(config).await;
        tables.create_tables_from_template().await;
        tables
    }

    /// Creates this configuration's tables (and failure queue) as
    /// `template.yaml` declares them, so every test runs against the keys,
    /// indexes and streams that deploy.
    pub async fn create_tables_from_template(&self) {
        let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        let model = airwave_gateway::StackModel::from_path(template).expect("read template.yaml");
        airwave_gateway::tables::create_tables(&self.dynamodb, &model, &self.local_names())
            .await
            .expect("create the test tables");
        if self.config.failure_queue_url.is_some() {
            airwave_gateway::queues::create_queues(&self.sqs(), &model, &self.local_names())
                .await
                .expect("create the test failure queue");
        }
    }

    /// A client of the local server's SQS.
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config)
    }

    /// The failure queue's URL (made by [`TestTables::create_with`]).
    pub fn failure_queue_url(&self) -> &str {
        self.config
            .require_failure_queue_url()
            .expect("TestTables::create_with names a failure queue")
    }

    /// The template's tables (and failure queue) mapped to this configuration's names.
    pub fn local_names(&self) -> airwave_gateway::LocalNames {
        let names = airwave_gateway::LocalNames::new("airwave")
            .with_table("ConnectionsTable", &self.config.connections_table)
            .with_table("MessagesTable", &self.config.messages_table)
            .with_table("SubscriptionsTable", &self.config.subscriptions_table)
            .with_table("AdmissionTable", &self.config.admission_table)
            .with_table("HistoryTable", &self.config.history.table);
        match self
            .config
            .failure_queue_url
            .as_deref()
            .and_then(|url| url.rsplit_once('/'))
        {
            Some((_, queue)) => names.with_queue("StreamFailureQueue", queue),
            None => names,
        }
    }

    /// Clients for tables that already exist (created by another process).
    pub async fn open(config: Config) -> Self {
        let endpoint = std::env::var(DYNAMODB_ENDPOINT_VARIABLE).unwrap_or_else(|_| {
            panic!(
                "{DYNAMODB_ENDPOINT_VARIABLE} is not set: run the tests with `make test`, which starts \
                 the local DynamoDB-compatible server and sets it"
            )
        });
        let sdk_config = clients::sdk_config_loader(&config.aws_timeouts)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "airwave-tests"))
            .endpoint_url(endpoint)
            .load()
            .await;
        let dynamodb = clients::dynamodb_client(&sdk_config);
        let store = DynamoStore::new(dynamodb.clone(), &config);
        TestTables {
            config,
            sdk_config,
            dynamodb,
            store,
        }
    }

    /// `$connect` through the real handler, with the authenticator the connect
    /// function builds for this configuration.
    pub async fn connect(
        &self,
        event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
    ) -> airwave_shared::aws_lambda_events::apigw::ApiGatewayProxyResponse {
        airwave_shared::handlers::handle_connect(
            &self.store,
            authenticator(&self.config).as_ref(),
            None,
            &self.config,
            event,
        )
        .await
        .expect("the connect handler answers")
    }

    /// A browser connects: the real `$connect` handler admits it.
    pub async fn admit(&self, connection_id: &str) {
        let response = airwave_shared::handlers::handle_connect(
            &self.store,
            authenticator(&self.config).as_ref(),
            None,
            &self.config,
            connect_event(connection_id, "198.51.100.23"),
        )
        .await
        .expect("connect handler");
        assert_eq!(response.status_code, 200, "{connection_id} was refused");
    }

    /// A store on these tables whose requests pass through a proxy that
    /// injects `faults` (throttling, transaction conflicts); keep the proxy
    /// for as long as the store is used.
    pub async fn faulty_store(
        &self,
        faults: airwave_local::DynamoDbFaults,
    ) -> (DynamoStore, airwave_local::FaultyDynamoDb) {
        let upstream = std::env::var(DYNAMODB_ENDPOINT_VARIABLE).expect("the local DynamoDB's endpoint");
        let proxy = airwave_local::FaultyDynamoDb::start(&upstream, faults)
            .await
            .expect("start the DynamoDB fault proxy");
        // Enough attempts that injected throttles are always outlasted: the
        // tests check what the code does after the SDK's retries, not luck.
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&self.sdk_config)
                .endpoint_url(proxy.endpoint())
                .retry_config(
                    aws_sdk_dynamodb::config::retry::RetryConfig::standard()
                        .with_max_attempts(10)
                        .with_initial_backoff(Duration::from_millis(5))
                        .with_max_backoff(Duration::from_millis(50)),
                )
                .build(),
        );
        (DynamoStore::new(client, &self.config), proxy)
    }

    /// A store whose every request goes through a meter that counts what
    /// DynamoDB would bill for it (read and write units, index writes).
    pub async fn metered_store(&self) -> (DynamoStore, airwave_local::MeteredDynamoDb) {
        let upstream = std::env::var(DYNAMODB_ENDPOINT_VARIABLE).expect("the local DynamoDB's endpoint");
        let meter = airwave_local::MeteredDynamoDb::start(&upstream)
            .await
            .expect("start the DynamoDB meter");
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&self.sdk_config)
                .endpoint_url(meter.endpoint())
                .build(),
        );
        (DynamoStore::new(client, &self.config), meter)
    }

    /// [`TestTables::metered_store`] with DynamoDB's per-partition-key limits
    /// enforced, and `timer` recording when each request was sent and answered.
    pub async fn timed_metered_store(&self, timer: &RequestTimer) -> (DynamoStore, airwave_local::MeteredDynamoDb) {
        let upstream = std::env::var(DYNAMODB_ENDPOINT_VARIABLE).expect("the local DynamoDB's endpoint");
        let options = airwave_local::MeterOptions {
            partition_limits: Some(airwave_local::PartitionLimits::default()),
        };
        let meter = airwave_local::MeteredDynamoDb::start_with(&upstream, options)
            .await
            .expect("start the DynamoDB meter");
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&self.sdk_config)
                .endpoint_url(meter.endpoint())
                .interceptor(timer.clone())
                .build(),
        );
        (DynamoStore::new(client, &self.config), meter)
    }

    /// Every item of the connections table as stored, ordered by id.
    pub async fn stored_connections(&self) -> Vec<HashMap<String, AttributeValue>> {
        let mut items = self.scan_all(&self.config.connections_table).await;
        items.sort_by_key(|item| item.get("connection_id").and_then(|id| id.as_s().ok()).cloned());
        items
    }

    /// Subscribes an admitted connection to `channel` through the store, as
    /// the `$default` handler does after reading the record.
    pub async fn subscribe(&self, connection_id: &str, channel: &str) {
        let record = self
            .store
            .get_connection(connection_id)
            .await
            .expect("read the connection")
            .unwrap_or_else(|| panic!("{connection_id} is not admitted"));
        let outcome = self
            .store
            .subscribe(&record, channel, 10, airwave_shared::time::epoch_seconds_now())
            .await
            .expect("subscribe");
        assert_eq!(outcome, airwave_shared::store::SubscribeOutcome::Subscribed);
    }

    /// The `open_count` of an admission counter (`open#total`, `open#ip#…`).
    pub async fn admission_counter(&self, key: &str) -> Option<i64> {
        let output = self
            .dynamodb
            .get_item()
            .table_name(&self.config.admission_table)
            .key("pk", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("read an admission counter");
        output.item?.get("open_count")?.as_n().ok()?.parse().ok()
    }

    /// Writes a bare connection record (no slots, no subscriptions, an hour
    /// to live) for each of `ids` straight to the table, 25 to a batch, as
    /// many `$connect`s would have.
    pub async fn seed_connections(&self, ids: &[String]) {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        use futures::StreamExt;
        let expires_at = (airwave_shared::time::epoch_seconds_now() + 3_600).to_string();
        let batches: Vec<Vec<WriteRequest>> = ids
            .chunks(25)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|id| {
                        let put = PutRequest::builder()
                            .item("connection_id", AttributeValue::S(id.clone()))
                            .item("source_ip", AttributeValue::S("198.51.100.23".into()))
                            .item("connected_at_ms", AttributeValue::N("0".into()))
                            .item("expires_at", AttributeValue::N(expires_at.clone()))
                            .build()
                            .expect("a put request");
                        WriteRequest::builder().put_request(put).build()
                    })
                    .collect()
            })
            .collect();
        futures::stream::iter(batches)
            .for_each_concurrent(4, |requests| async {
                let output = self
                    .dynamodb
                    .batch_write_item()
                    .request_items(&self.config.connections_table, requests)
                    .send()
                    .await
                    .expect("seed connections");
                let unprocessed = output
                    .unprocessed_items
                    .map_or(0, |items| items.values().map(Vec::len).sum());
                assert_eq!(unprocessed, 0, "the local server left items unprocessed");
            })
            .await;
    }

    /// A store on these tables whose every DynamoDB request `counter` counts.
    pub fn counted_store(&self, counter: &OperationCounter) -> DynamoStore {
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&self.sdk_config)
                .interceptor(counter.clone())
                .build(),
        );
        DynamoStore::new(client, &self.config)
    }

    /// Every item of `table`, read straight from DynamoDB with a consistent scan.
    pub async fn scan_all(&self, table: &str) -> Vec<HashMap<String, AttributeValue>> {
        let output = self
            .dynamodb
            .scan()
            .table_name(table)
            .consistent_read(true)
            .send()
            .await
            .unwrap_or_else(|error| panic!("scan {table}: {error}"));
        output.items.unwrap_or_default()
    }

    /// Every connection id in the table, read straight from DynamoDB.
    pub async fn stored_connection_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .scan_all(&self.config.connections_table)
            .await
            .into_iter()
            .filter_map(|item| item.get("connection_id")?.as_s().ok().cloned())
            .collect();
        ids.sort();
        ids
    }

    /// A fan-out to `endpoint` with the production settings but short backoffs,
    /// so retried posts do not slow the tests down.
    ///
    /// Connections the tests close on purpose are pruned on the 410 at once;
    /// [`TestTables::fanout_with_connecting_window`] keeps production's window.
    pub fn fanout(&self, endpoint: &str, concurrency: usize) -> FanOut {
        self.fanout_with_connecting_window(endpoint, concurrency, Duration::ZERO)
    }

    pub fn fanout_with_connecting_window(&self, endpoint: &str, concurrency: usize, window: Duration) -> FanOut {
        let settings = FanOutSettings {
            concurrency,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
            connecting_window: window,
            ..FanOutSettings::from(&self.config)
        };
        FanOut::new(&self.sdk_config, endpoint, settings)
    }

    /// Channel → connection ids, read straight from the subscriptions table.
    pub async fn stored_subscriptions(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self
            .scan_all(&self.config.subscriptions_table)
            .await
            .into_iter()
            .filter_map(|item| {
                // The channel, whichever of its shards holds the item.
                let partition = item.get("channel")?.as_s().ok()?;
                let channel = partition
                    .split_once('#')
                    .map_or(partition.as_str(), |(channel, _)| channel);
                Some((channel.to_owned(), item.get("connection_id")?.as_s().ok()?.clone()))
            })
            .collect();
        pairs.sort();
        pairs
    }

    /// Every item of the messages table, as JSON.
    pub async fn stored_messages(&self) -> Vec<Value> {
        let items = self.scan_all(&self.config.messages_table).await;
        serde_dynamo::from_items(items).expect("message items decode")
    }
}

fn lambda_event<T>(payload: T) -> LambdaEvent<T> {
    let mut context = Context::default();
    context.request_id = uuid::Uuid::new_v4().to_string();
    LambdaEvent::new(payload, context)
}

fn websocket_event(
    template: &str,
    connection_id: &str,
    source_ip: &str,
) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    let mut event: Value = serde_json::from_str(template).expect("fixture is JSON");
    event["requestContext"]["connectionId"] = json!(connection_id);
    event["requestContext"]["identity"]["sourceIp"] = json!(source_ip);
    lambda_event(serde_json::from_value(event).expect("fixture is a WebSocket event"))
}

/// A `$connect` event as API Gateway sends it, for this id and source IP.
pub fn connect_event(connection_id: &str, source_ip: &str) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    websocket_event(CONNECT_EVENT, connection_id, source_ip)
}

/// A `$connect` event carrying `token` in its query string.
pub fn connect_event_with_token(
    connection_id: &str,
    source_ip: &str,
    token: &str,
) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    let mut event = connect_event(connection_id, source_ip);
    let mut payload = serde_json::to_value(&event.payload).expect("an event serialises");
    payload["queryStringParameters"] = serde_json::json!({ "token": token });
    payload["multiValueQueryStringParameters"] = serde_json::json!({ "token": [token] });
    event.payload = serde_json::from_value(payload).expect("the event reads back");
    event
}

/// A `$disconnect` event as API Gateway sends it, for this id.
pub fn disconnect_event(connection_id: &str) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    websocket_event(DISCONNECT_EVENT, connection_id, "203.0.113.7")
}

/// A stream batch as Lambda delivers it, from raw records.
pub fn stream_event(records: Vec<Value>) -> LambdaEvent<Value> {
    lambda_event(json!({ "Records": records }))
}

/// The stream batch fixture: an INSERT, a MODIFY and a REMOVE of `msg-0001`.
pub fn stream_batch_fixture() -> LambdaEvent<Value> {
    lambda_event(serde_json::from_str(STREAM_BATCH_EVENT).expect("fixture is JSON"))
}

/// A `$default` event as API Gateway sends it: `body` is the client's frame.
pub fn message_event(connection_id: &str, body: &str) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    let mut event: Value = serde_json::from_str(MESSAGE_EVENT).expect("fixture is JSON");
    event["requestContext"]["connectionId"] = json!(connection_id);
    event["body"] = json!(body);
    lambda_event(serde_json::from_value(event).expect("a WebSocket event"))
}

/// One INSERT record of the messages table's stream, in Lambda's shape, with the
/// new image given in DynamoDB JSON.
pub fn insert_record(sequence_number: &str, new_image: Value) -> Value {
    let keys = json!({ "message_id": new_image.get("message_id").cloned().unwrap_or(Value::Null) });
    json!({
        "eventID": format!("event-{sequence_number}"),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1795378600,
            "Keys": keys,
            "NewImage": new_image,
            "SequenceNumber": sequence_number,
            "SizeBytes": 64,
            "StreamViewType": "NEW_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/airwave-messages/stream/2026-11-22T20:00:00.000"
    })
}

/// The new image of a message with a text payload, in DynamoDB JSON.
pub fn message_image(message_id: &str, text: &str) -> Value {
    json!({
        "message_id": { "S": message_id },
        "payload": { "M": { "text": { "S": text } } }
    })
}

/// The new image of a message for one channel.
pub fn channel_message_image(message_id: &str, channel: &str, text: &str) -> Value {
    let mut image = message_image(message_id, text);
    image["channel"] = json!({ "S": channel });
    image
}

/// Collects the JSON log lines written on this thread while it is installed
/// (tests run on a current-thread runtime, so the handler logs here too).
///
/// One global subscriber serves every capture: a per-thread default
/// subscriber would race with the other tests of the binary over tracing's
/// global callsite cache, and an event could then be dropped unseen.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static THREAD_CAPTURE: std::cell::RefCell<Option<LogCapture>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the capture installed on the writing thread, or nowhere.
struct ThreadCaptureWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadCaptureWriter {
    type Writer = Box<dyn Write>;

    fn make_writer(&'a self) -> Self::Writer {
        match THREAD_CAPTURE.with(|capture| capture.borrow().clone()) {
            Some(capture) => Box::new(capture),
            None => Box::new(std::io::sink()),
        }
    }
}

/// Uninstalls a [`LogCapture`] from its thread when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        THREAD_CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

impl LogCapture {
    pub fn install(&self) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(ThreadCaptureWriter)
                .finish();
            // Another global subscriber (none in these tests) would leave captures empty, and their assertions fail.
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
        THREAD_CAPTURE.with(|capture| *capture.borrow_mut() = Some(self.clone()));
        CaptureGuard(())
    }

    /// The captured lines, each parsed as JSON.
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().expect("log buffer").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An HS256 token over `claims`, signed with `secret` as an identity provider would.
pub fn signed_token(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of a JSON object cannot fail")
}

/// A token for `user` that is valid for the next ten minutes.
pub fn token_for(secret: &str, user: &str) -> String {
    let exp = airwave_shared::time::epoch_seconds_now() + 600;
    signed_token(secret, &json!({"sub": user, "exp": exp}))
}

/// DynamoDB requests by operation (`X-Amz-Target`), as an SDK interceptor; a
/// `Query` without an `ExclusiveStartKey` starts a listing and is also
/// counted as `Listing`.
#[derive(Debug, Clone, Default)]
pub struct OperationCounter(Arc<Mutex<std::collections::BTreeMap<String, u64>>>);

impl OperationCounter {
    pub fn get(&self, operation: &str) -> u64 {
        self.counts().get(operation).copied().unwrap_or(0)
    }

    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.0.lock().map(|counts| counts.clone()).unwrap_or_default()
    }
}

impl aws_sdk_dynamodb::config::Intercept for OperationCounter {
    fn name(&self) -> &'static str {
        "OperationCounter"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|target| target.rsplit('.').next())
            .unwrap_or("unknown")
            .to_owned();
        let starts_listing = operation == "Query"
            && context
                .request()
                .body()
                .bytes()
                .is_some_and(|body| !String::from_utf8_lossy(body).contains("ExclusiveStartKey"));
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(operation).or_default() += 1;
            if starts_listing {
                *counts.entry("Listing".to_owned()).or_default() += 1;
            }
        }
        Ok(())
    }
}

/// A client's WebSocket to the local gateway.
pub type TestSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads `socket` until the server closes it, and answers the `closing`
/// frame it was told why in (code, message), if any.
pub async fn read_until_closed(socket: &mut TestSocket) -> Option<(airwave_protocol::ErrorCode, String)> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut closing = None;
    while let Some(Ok(frame)) = socket.next().await {
        match frame {
            Message::Text(text) => {
                if let Ok(airwave_protocol::Incoming::Closing { code, message }) =
                    airwave_protocol::parse_server_frame(&text)
                {
                    closing = Some((code, message));
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    closing
}
