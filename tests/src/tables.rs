//! Tables of their own on the local DynamoDB-compatible server for each
//! test, with the clients and the reads the tests check them with.

use std::collections::HashMap;
use std::time::Duration;

use airwave_shared::aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use airwave_shared::fanout::FanOutSettings;
use airwave_shared::{clients, Config, ConnectionStore, DynamoStore, FanOut, SubscriptionStore};
use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::AttributeValue;
use lambda_runtime::LambdaEvent;
use serde_json::Value;

use crate::{authenticator, connect_event, OperationCounter, RequestTimer, DYNAMODB_ENDPOINT_VARIABLE};

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
