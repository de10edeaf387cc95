//! The whole local stack in one process: the local gateway built from
//! `template.yaml`, the real handlers called in-process as Lambda would call
//! them, tables created from the template, and the messages stream driving the
//! stream-processor. The end-to-end tests and the browser tests (through the
//! `airwave-stack` binary) run against it.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use airwave_gateway::streams::RunningPoller;
use airwave_gateway::{
    Gateway, GatewayError, GatewayOptions, InvokeFuture, Invoker, RunningGateway, ScheduleOptions, ScheduleRunner,
    StackModel, StartingPosition, StreamOptions, StreamPoller,
};
use airwave_local::{
    DynamoDbFaults, DynamoDbUsage, FaultyDynamoDb, FaultyManagementApi, ManagementFaults, MeteredDynamoDb,
};
use airwave_shared::auth::Authenticator;
use airwave_shared::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayWebsocketProxyRequest};
use airwave_shared::failures::SqsFailureQueue;
use airwave_shared::handlers::http::handle_http;
use airwave_shared::handlers::{
    handle_connect, handle_disconnect, handle_message, handle_reaper_event, handle_stream_batch,
};
use airwave_shared::server_keys::ServerKeySource;
use airwave_shared::{Closer, DynamoStore, FanOut};
use futures::FutureExt;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

use crate::{lock, TestTables};

/// Lambda, played in-process: each function name runs its real handler.
pub struct InProcessFunctions {
    pub store: DynamoStore,
    pub config: airwave_shared::Config,
    /// Built once, as the connect function does at cold start.
    pub authenticator: Option<Authenticator>,
    /// The HTTP function's server keys, as it builds them.
    pub server_keys: ServerKeySource,
    pub fanout: OnceLock<FanOut>,
    /// The failure queue poison records are reported to (moto's SQS).
    pub failures: SqsFailureQueue,
    /// The Management API client `$connect` and `$default` close connections with.
    pub closer: OnceLock<Closer>,
    /// Connections whose `$disconnect` API Gateway "never delivers": a client
    /// connecting with `?vanish=1` marks itself.
    pub lost_disconnects: Mutex<HashSet<String>>,
    /// While set, `$connect` answers 503: clients stay away however fast they retry.
    pub refuse_connects: AtomicBool,
    /// While a test holds this for writing, an admitted `$connect` waits
    /// before answering: its record is written, its handshake not complete.
    pub connect_gate: tokio::sync::RwLock<()>,
    /// Every this many stream-processor invocations, one is killed part-way (0: none).
    pub kill_every_stream_batch: usize,
    stream_invocations: AtomicUsize,
    kill_draw: Mutex<fastrand::Rng>,
    /// Stream-processor invocations killed before they finished.
    pub killed_batches: AtomicUsize,
    /// Invocations that panicked, by function: a crash on some input.
    pub crashes: Mutex<BTreeMap<String, usize>>,
    /// Invocations that returned an error, by function.
    pub errors: Mutex<BTreeMap<String, usize>>,
    /// Every invocation, by function.
    pub invocations: Mutex<BTreeMap<String, usize>>,
    /// Lambda's billed duration of every invocation (rounded up to 1 ms), by function.
    pub billed_ms: Mutex<BTreeMap<String, u64>>,
}

/// How a [`LocalStack`] differs from the default: the faults it injects
/// besides what its parts do by themselves, and the fan-out's connecting window.
#[derive(Debug, Clone, Copy, Default)]
pub struct StackOptions {
    /// Before the functions' DynamoDB (the stream poller reads the real one).
    pub dynamodb_faults: Option<DynamoDbFaults>,
    /// Before the Management API the fan-out and the closer post to.
    pub management_faults: Option<ManagementFaults>,
    /// Every this many stream-processor invocations (0: none), one is killed
    /// at a random point within its first 100 ms, like a process that dies
    /// mid-batch: no answer, only what it had done so far. Lambda then
    /// retries the batch. Counted, not drawn, because a stream with a
    /// batching window gets few invocations.
    pub kill_every_stream_batch: usize,
    pub seed: u64,
    /// How young a record answered 410 must be to be left alone. Zero by
    /// default, so a test's vanished socket is pruned at once; production's
    /// is [`airwave_shared::fanout::CONNECTING_WINDOW`].
    pub connecting_window: Duration,
    /// Runs the template's `Schedule` events (the reaper's sweep) at this
    /// period; `None`, the default, runs none, so a test's invocation counts
    /// hold only what it caused.
    pub schedule_period: Option<Duration>,
    /// The functions' DynamoDB requests go through a meter
    /// ([`LocalStack::dynamodb_usage`]); not with `dynamodb_faults`.
    pub metered: bool,
}

fn failed(function: &str, error: impl std::fmt::Display) -> GatewayError {
    GatewayError::FunctionFailed {
        function: function.to_owned(),
        status: 500,
        message: error.to_string(),
    }
}

/// A handler's result as Lambda returns it: the JSON output, or a failure.
fn answer<T: serde::Serialize>(
    function: &str,
    result: Result<T, airwave_shared::Error>,
) -> Result<Value, GatewayError> {
    let output = result.map_err(|error| failed(function, error))?;
    serde_json::to_value(output).map_err(|error| failed(function, error))
}

impl InProcessFunctions {
    async fn run(&self, function: &str, event: Value) -> Result<Value, GatewayError> {
        let mut context = Context::default();
        context.request_id = uuid::Uuid::new_v4().to_string();
        let websocket = |event: Value| {
            serde_json::from_value::<ApiGatewayWebsocketProxyRequest>(event)
                .map(|payload| LambdaEvent::new(payload, context.clone()))
                .map_err(|error| failed(function, error))
        };
        match function {
            "connect" => {
                if self.refuse_connects.load(Ordering::SeqCst) {
                    return Ok(json!({"statusCode": 503}));
                }
                let event = websocket(event)?;
                if event.payload.query_string_parameters.first("vanish").is_some() {
                    if let Some(id) = event.payload.request_context.connection_id.clone() {
                        if let Ok(mut lost) = self.lost_disconnects.lock() {
                            lost.insert(id);
                        }
                    }
                }
                let answered = handle_connect(
                    &self.store,
                    self.authenticator.as_ref(),
                    self.closer.get(),
                    &self.config,
                    event,
                )
                .await;
                let _opening = self.connect_gate.read().await;
                answer(function, answered)
            }
            "disconnect" => {
                let event = websocket(event)?;
                let id = event.payload.request_context.connection_id.clone().unwrap_or_default();
                if self.lost_disconnects.lock().is_ok_and(|lost| lost.contains(&id)) {
                    return Ok(json!({"statusCode": 200}));
                }
                answer(function, handle_disconnect(&self.store, event).await)
            }
            "message" => answer(
                function,
                handle_message(&self.store, self.closer.get(), &self.config, websocket(event)?).await,
            ),
            "stream-processor" => {
                let fanout = self.fanout.get().ok_or_else(|| failed(function, "no fan-out yet"))?;
                let batch = handle_stream_batch(
                    &self.store,
                    &self.config.history,
                    fanout,
                    &self.failures,
                    LambdaEvent::new(event, context.clone()),
                );
                match self.kill_after() {
                    None => answer(function, batch.await),
                    Some(after) => tokio::select! {
                        finished = batch => answer(function, finished),
                        () = tokio::time::sleep(after) => {
                            self.killed_batches.fetch_add(1, Ordering::SeqCst);
                            Err(failed(function, "Runtime exited with error: signal: killed"))
                        }
                    },
                }
            }
            "http-api" => {
                let event = serde_json::from_value::<ApiGatewayV2httpRequest>(event)
                    .map(|payload| LambdaEvent::new(payload, context.clone()))
                    .map_err(|error| failed(function, error))?;
                answer(
                    function,
                    handle_http(
                        &self.store,
                        self.authenticator.as_ref(),
                        &self.server_keys,
                        &self.config,
                        event,
                    )
                    .await,
                )
            }
            "reaper" => answer(
                function,
                handle_reaper_event(&self.store, self.closer.get(), LambdaEvent::new(event, context.clone())).await,
            ),
            other => Err(failed(other, "no such function")),
        }
    }

    /// When to kill this stream-processor invocation, if it is drawn to be.
    fn kill_after(&self) -> Option<Duration> {
        let invocation = self.stream_invocations.fetch_add(1, Ordering::SeqCst) + 1;
        if self.kill_every_stream_batch == 0 || !invocation.is_multiple_of(self.kill_every_stream_batch) {
            return None;
        }
        let mut draw = lock(&self.kill_draw);
        Some(Duration::from_millis(draw.u64(1..100)))
    }

    /// Runs one invocation, counting errors and catching a panic as Lambda
    /// would see a crashed runtime.
    async fn invoke_counted(&self, function: &str, event: Value) -> Result<Value, GatewayError> {
        let started = std::time::Instant::now();
        let outcome = std::panic::AssertUnwindSafe(self.run(function, event))
            .catch_unwind()
            .await;
        // Lambda bills each invocation's duration rounded up to the millisecond.
        let billed = started.elapsed().as_micros().div_ceil(1_000) as u64;
        *lock(&self.billed_ms).entry(function.to_owned()).or_default() += billed;
        *lock(&self.invocations).entry(function.to_owned()).or_default() += 1;
        let count = |counts: &Mutex<BTreeMap<String, usize>>| {
            let mut counts = lock(counts);
            *counts.entry(function.to_owned()).or_default() += 1;
        };
        match outcome {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(error)) => {
                count(&self.errors);
                Err(error)
            }
            Err(_) => {
                count(&self.crashes);
                Err(failed(function, "Runtime exited with error: panicked"))
            }
        }
    }

    /// How many times `function` was invoked.
    pub fn invocations(&self, function: &str) -> usize {
        lock(&self.invocations).get(function).copied().unwrap_or(0)
    }

    /// The billed milliseconds of all of `function`'s invocations.
    pub fn billed_ms(&self, function: &str) -> u64 {
        lock(&self.billed_ms).get(function).copied().unwrap_or(0)
    }

    /// How many of `function`'s invocations failed or crashed.
    pub fn failures_of(&self, function: &str) -> usize {
        [&self.errors, &self.crashes]
            .iter()
            .map(|counts| lock(counts).get(function).copied().unwrap_or(0))
            .sum()
    }

    /// The one connection that marked itself with `?vanish=1`, if any.
    pub fn vanished_connection(&self) -> Option<String> {
        self.lost_disconnects.lock().ok()?.iter().next().cloned()
    }
}

impl Invoker for InProcessFunctions {
    fn invoke<'a>(&'a self, function: &'a str, event: Value) -> InvokeFuture<'a> {
        Box::pin(self.invoke_counted(function, event))
    }
}

/// A running local stack.
pub struct LocalStack {
    pub tables: TestTables,
    pub functions: Arc<InProcessFunctions>,
    pub gateway: RunningGateway,
    pub poller: RunningPoller,
    /// The proxies injecting [`StackOptions`]' faults, while they run.
    pub dynamodb_faults: Option<FaultyDynamoDb>,
    pub management_faults: Option<FaultyManagementApi>,
    pub schedules: Option<ScheduleRunner>,
    /// With [`StackOptions::metered`]: what the functions' DynamoDB requests would bill.
    pub meter: Option<MeteredDynamoDb>,
}

impl LocalStack {
    /// Starts the stack on `tables` (made by [`TestTables::create_with`]).
    pub async fn start(tables: TestTables, options: GatewayOptions) -> Self {
        Self::start_with(tables, options, StackOptions::default()).await
    }

    /// Starts the stack as `stack` says.
    pub async fn start_with(tables: TestTables, options: GatewayOptions, stack: StackOptions) -> Self {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let model = StackModel::from_path(root.join("template.yaml")).expect("read template.yaml");
        let names = tables.local_names();
        let (store, dynamodb_faults, meter) = match (stack.dynamodb_faults, stack.metered) {
            (Some(dynamodb), _) => {
                let (store, proxy) = tables.faulty_store(dynamodb).await;
                (store, Some(proxy), None)
            }
            (None, true) => {
                let (store, meter) = tables.metered_store().await;
                (store, None, Some(meter))
            }
            (None, false) => (tables.store.clone(), None, None),
        };
        let functions = Arc::new(InProcessFunctions {
            store,
            // As the connect function builds it: a secret in Secrets Manager is read from moto.
            authenticator: Authenticator::from_config_and_aws(&tables.config, &tables.sdk_config)
                .expect("a valid authentication setup"),
            server_keys: ServerKeySource::from_config_and_aws(&tables.config, &tables.sdk_config),
            failures: SqsFailureQueue::new(tables.sqs(), tables.failure_queue_url()),
            config: tables.config.clone(),
            fanout: OnceLock::new(),
            closer: OnceLock::new(),
            lost_disconnects: Mutex::new(HashSet::new()),
            refuse_connects: AtomicBool::new(false),
            connect_gate: tokio::sync::RwLock::new(()),
            kill_every_stream_batch: stack.kill_every_stream_batch,
            stream_invocations: AtomicUsize::new(0),
            kill_draw: Mutex::new(fastrand::Rng::with_seed(stack.seed)),
            killed_batches: AtomicUsize::new(0),
            crashes: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            invocations: Mutex::new(BTreeMap::new()),
            billed_ms: Mutex::new(BTreeMap::new()),
        });
        let gateway = Gateway::start(options, model.clone(), functions.clone())
            .await
            .expect("start the local gateway");
        let (management_endpoint, management_faults) = match stack.management_faults {
            Some(management) => {
                let base = format!("http://{}", gateway.local_addr());
                let proxy = FaultyManagementApi::start(&base, management)
                    .await
                    .expect("start the Management API fault proxy");
                let stage = gateway.management_endpoint().trim_start_matches(&base).to_owned();
                (format!("{}{stage}", proxy.endpoint()), Some(proxy))
            }
            None => (gateway.management_endpoint(), None),
        };
        let _ = functions.fanout.set(tables.fanout_with_connecting_window(
            &management_endpoint,
            16,
            stack.connecting_window,
        ));
        let _ = functions
            .closer
            .set(Closer::new(&tables.sdk_config, &management_endpoint));
        let streams = aws_sdk_dynamodbstreams::Client::new(&tables.sdk_config);
        let poller = StreamPoller::start(
            &tables.dynamodb,
            &streams,
            &model,
            &names,
            functions.clone(),
            StreamOptions {
                poll_interval: Duration::from_millis(50),
                starting_position: Some(StartingPosition::TrimHorizon),
                // Batches the mapping gives up on go to the test's failure queue.
                sqs: tables.config.failure_queue_url.as_ref().map(|_| tables.sqs()),
                ..StreamOptions::default()
            },
        )
        .await
        .expect("start polling the messages stream");
        let schedules = stack.schedule_period.map(|period| {
            ScheduleRunner::start(
                &model.schedules,
                functions.clone(),
                ScheduleOptions { period: Some(period) },
            )
        });
        LocalStack {
            tables,
            functions,
            gateway,
            poller,
            dynamodb_faults,
            management_faults,
            schedules,
            meter,
        }
    }

    /// What the functions' DynamoDB requests so far would bill (empty
    /// without [`StackOptions::metered`]).
    pub fn dynamodb_usage(&self) -> DynamoDbUsage {
        self.meter.as_ref().map(MeteredDynamoDb::usage).unwrap_or_default()
    }

    pub fn ws_url(&self) -> String {
        self.gateway.ws_url()
    }

    /// The HTTP API's publish URL.
    pub fn publish_url(&self) -> String {
        format!("{}{}", self.gateway.http_url(), airwave_protocol::http::PUBLISH_PATH)
    }

    /// The ids of the sockets open on the gateway.
    pub fn connection_ids(&self) -> Vec<String> {
        self.gateway.connection_ids()
    }

    /// Closes a connection from the server side, as an operator or a function
    /// would: a Management API `DELETE @connections/{id}`.
    pub async fn close_connection(&self, connection_id: &str) {
        use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_apigatewaymanagement::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.gateway.management_endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "airwave-tests"))
            .build();
        aws_sdk_apigatewaymanagement::Client::from_conf(config)
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await
            .expect("the Management API closes the connection");
    }

    pub async fn shutdown(self) {
        if let Some(schedules) = self.schedules {
            schedules.shutdown().await;
        }
        self.poller.shutdown().await;
        self.gateway.shutdown().await;
    }
}
