//! The whole local stack in one process: the local gateway built from
//! `template.yaml`, the real handlers called in-process as Lambda would call
//! them, tables created from the template, and the messages stream driving the
//! stream-processor. The end-to-end tests and the browser tests (through the
//! `airwave-stack` binary) run against it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use airwave_gateway::streams::RunningPoller;
use airwave_gateway::{
    Gateway, GatewayError, GatewayOptions, InvokeFuture, Invoker, RunningGateway, StackModel, StartingPosition,
    StreamOptions, StreamPoller,
};
use airwave_shared::auth::Authenticator;
use airwave_shared::aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use airwave_shared::handlers::{
    handle_connect, handle_disconnect, handle_expired_connections, handle_message, handle_stream_batch,
};
use airwave_shared::{Closer, DynamoStore, FanOut};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

use crate::TestTables;

/// Lambda, played in-process: each function name runs its real handler.
pub struct InProcessFunctions {
    pub store: DynamoStore,
    pub config: airwave_shared::Config,
    /// Built once, as the connect function does at cold start.
    pub authenticator: Option<Authenticator>,
    pub fanout: OnceLock<FanOut>,
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
                answer(
                    function,
                    handle_stream_batch(
                        &self.store,
                        &self.config.history,
                        fanout,
                        LambdaEvent::new(event, context.clone()),
                    )
                    .await,
                )
            }
            "reaper" => answer(
                function,
                handle_expired_connections(&self.store, LambdaEvent::new(event, context.clone())).await,
            ),
            other => Err(failed(other, "no such function")),
        }
    }

    /// The one connection that marked itself with `?vanish=1`, if any.
    pub fn vanished_connection(&self) -> Option<String> {
        self.lost_disconnects.lock().ok()?.iter().next().cloned()
    }
}

impl Invoker for InProcessFunctions {
    fn invoke<'a>(&'a self, function: &'a str, event: Value) -> InvokeFuture<'a> {
        Box::pin(self.run(function, event))
    }
}

/// A running local stack.
pub struct LocalStack {
    pub tables: TestTables,
    pub functions: Arc<InProcessFunctions>,
    pub gateway: RunningGateway,
    pub poller: RunningPoller,
}

impl LocalStack {
    /// Starts the stack on `tables` (made by [`TestTables::create_with`]).
    pub async fn start(tables: TestTables, options: GatewayOptions) -> Self {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let model = StackModel::from_path(root.join("template.yaml")).expect("read template.yaml");
        let names = tables.local_names();
        let functions = Arc::new(InProcessFunctions {
            store: tables.store.clone(),
            authenticator: crate::authenticator(&tables.config),
            config: tables.config.clone(),
            fanout: OnceLock::new(),
            closer: OnceLock::new(),
            lost_disconnects: Mutex::new(HashSet::new()),
            refuse_connects: AtomicBool::new(false),
            connect_gate: tokio::sync::RwLock::new(()),
        });
        let gateway = Gateway::start(options, model.clone(), functions.clone())
            .await
            .expect("start the local gateway");
        let _ = functions.fanout.set(tables.fanout(&gateway.management_endpoint(), 16));
        let _ = functions
            .closer
            .set(Closer::new(&tables.sdk_config, &gateway.management_endpoint()));
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
                ..StreamOptions::default()
            },
        )
        .await
        .expect("start polling the messages stream");
        LocalStack {
            tables,
            functions,
            gateway,
            poller,
        }
    }

    pub fn ws_url(&self) -> String {
        self.gateway.ws_url()
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
        self.poller.shutdown().await;
        self.gateway.shutdown().await;
    }
}
