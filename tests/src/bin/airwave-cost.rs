//! `make cost`: runs each unit event on the local stack built from
//! `template.yaml` (real sockets, the in-process functions, moto's DynamoDB
//! behind a meter that counts read and write units as DynamoDB bills them),
//! then prices a month of each reference workload with
//! `infra/cost/prices.json`. See `airwave_tests::cost`.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use airwave_client::ClientConfig;
use airwave_gateway::{GatewayOptions, Invoker, StackModel};
use airwave_protocol::{parse_server_frame, Incoming, Position, Reply};
use airwave_shared::config::JwtSecret;
use airwave_shared::message::MessageRecord;
use airwave_shared::server_keys::ServerKeys;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::{DynamoStore, MessageStore};
use airwave_tests::cost::{report, Deployment, Prices, UnitCosts, Usage, ROOM_SIZE};
use airwave_tests::http_api::post_ok;
use airwave_tests::stack::{LocalStack, StackOptions};
use airwave_tests::TestTables;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as Frame;

const SECRET: &str = "cost-model-secret-cost-model-secret-cost";
const FUNCTIONS: [&str; 6] = [
    "connect",
    "disconnect",
    "message",
    "http-api",
    "stream-processor",
    "reaper",
];
const SERVER_KEY: &str = "sk_cost_0123456789abcdef0123456789abcdef";
/// Connections per measured batch (two rooms of ten).
const CONNECTIONS: usize = 20;
/// Subscribers of the larger measured audience.
const AUDIENCE: usize = 100;
/// Messages per measured publish.
const REPEATS: usize = 5;
/// Synthetic connections the sweep lists.
const SWEEP_EXTRA: usize = 400;
const GUARD: Duration = Duration::from_secs(60);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Counts what the functions log, as CloudWatch Logs would ingest it.
#[derive(Clone, Default)]
struct LogBytes(Arc<AtomicU64>);

impl Write for LogBytes {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Meter<'a> {
    stack: &'a LocalStack,
    memory_gb: Vec<(&'static str, f64)>,
    logs: LogBytes,
}

impl Meter<'_> {
    fn now(&self) -> Usage {
        let functions = &self.stack.functions;
        let dynamodb = self.stack.dynamodb_usage();
        let (messages_in, messages_out) = self.stack.gateway.billed_messages();
        Usage {
            lambda_invocations: FUNCTIONS.iter().map(|f| functions.invocations(f) as f64).sum(),
            lambda_gb_seconds: self
                .memory_gb
                .iter()
                .map(|(f, gb)| functions.billed_ms(f) as f64 / 1_000.0 * gb)
                .sum(),
            read_units: dynamodb.total_read_units(),
            write_units: dynamodb.total_write_units(),
            index_write_units: dynamodb.total_index_write_units(),
            messages_in: messages_in as f64,
            messages_out: messages_out as f64,
            log_bytes: self.logs.0.load(Ordering::Relaxed) as f64,
            http_requests: self.stack.gateway.http_requests() as f64,
        }
    }

    /// Waits until nothing moves (the streams' functions included) for a second.
    async fn settled(&self) -> Usage {
        let mut last = self.now();
        let mut quiet = 0;
        while quiet < 4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.now();
            if (
                now.lambda_invocations,
                now.read_units,
                now.write_units,
                now.messages_out,
            ) == (
                last.lambda_invocations,
                last.read_units,
                last.write_units,
                last.messages_out,
            ) {
                quiet += 1;
            } else {
                quiet = 0;
            }
            last = now;
        }
        last
    }
}

async fn next_incoming(socket: &mut Socket) -> Incoming {
    tokio::time::timeout(GUARD, async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Text(text))) => {
                    if let Ok(incoming) = parse_server_frame(&text) {
                        return incoming;
                    }
                }
                Some(Ok(_)) => continue,
                other => panic!("a socket ended while measuring: {other:?}"),
            }
        }
    })
    .await
    .expect("a frame in time")
}

/// Reads until a reply arrives; answers it.
async fn reply(socket: &mut Socket) -> Reply {
    loop {
        if let Incoming::Reply { reply, .. } = next_incoming(socket).await {
            return reply;
        }
    }
}

/// Reads until a message arrives; answers its position.
async fn message(socket: &mut Socket) -> Option<Position> {
    loop {
        if let Incoming::Messages(messages) = next_incoming(socket).await {
            return messages.into_iter().last().and_then(|message| message.position);
        }
    }
}

async fn connect_all(stack: &LocalStack, count: usize, prefix: &str) -> Vec<Socket> {
    let mut sockets = Vec::new();
    for i in 0..count {
        // A chat member may publish to its rooms.
        let claims = json!({
            "sub": format!("{prefix}-{i}"),
            "exp": epoch_seconds_now() + 3_600,
            "publish": ["room-*"],
        });
        let token = airwave_tests::signed_token(SECRET, &claims);
        let (socket, _) = tokio_tungstenite::connect_async(format!("{}?token={token}", stack.ws_url()))
            .await
            .expect("admitted");
        sockets.push(socket);
    }
    sockets
}

fn room(i: usize) -> String {
    format!("room-{}", i % 2)
}

async fn send(socket: &mut Socket, frame: serde_json::Value) {
    socket.send(Frame::text(frame.to_string())).await.expect("sent");
}

/// The metrics the template's alarms evaluate: one for a plain alarm, one
/// per `MetricStat` for a metric-math alarm (CloudWatch bills each).
fn alarm_metrics(template: &str) -> usize {
    let mut blocks: Vec<String> = Vec::new();
    for line in template.lines() {
        // A resource starts at two spaces of indentation.
        if line.starts_with("  ") && !line.starts_with("   ") && line.trim_end().ends_with(':') {
            blocks.push(String::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
        .iter()
        .filter(|block| block.contains("Type: AWS::CloudWatch::Alarm"))
        .map(|block| block.matches("MetricStat:").count().max(1))
        .sum()
}

#[tokio::main]
async fn main() {
    let logs = LogBytes::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .init();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let prices: Prices = serde_json::from_str(
        &std::fs::read_to_string(root.join("infra/cost/prices.json")).expect("read infra/cost/prices.json"),
    )
    .expect("infra/cost/prices.json is a price table");
    let template = std::fs::read_to_string(root.join("template.yaml")).expect("read template.yaml");
    let model = StackModel::from_yaml(&template).expect("read template.yaml");
    let telemetry =
        std::fs::read_to_string(root.join("shared/src/telemetry.rs")).expect("read shared/src/telemetry.rs");
    let deployment = Deployment {
        alarm_metrics: alarm_metrics(&template),
        custom_metrics: telemetry.matches("pub const").count().saturating_sub(1),
        arm64: template.contains("Default: arm64"),
    };
    let memory_gb = FUNCTIONS
        .iter()
        .map(|function| {
            let mb = model
                .function_by_binary(function)
                .and_then(|f| f.memory_mb)
                .unwrap_or(128);
            (*function, mb as f64 / 1024.0)
        })
        .collect();

    // Admission as the template deploys it by default (the per-IP throttle,
    // the caps), so connects cost what they cost there.
    let names = airwave_gateway::LocalNames::new("airwave");
    let environment = model
        .function_environment("connect", &names, "http://127.0.0.1")
        .expect("the connect function's environment");
    let deployed = airwave_shared::Config::from_lookup(|name| environment.get(name).cloned())
        .expect("the template's defaults are a valid configuration");
    let tables = TestTables::create_with(|config| {
        config.admission = deployed.admission;
        config.user_cap_mode = deployed.user_cap_mode;
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.allow_client_publish = true;
        config.server_keys = Some(ServerKeys::parse(SERVER_KEY).expect("a valid server key"));
    })
    .await;
    let stack = LocalStack::start_with(
        tables,
        GatewayOptions::default(),
        StackOptions {
            metered: true,
            ..StackOptions::default()
        },
    )
    .await;
    let meter = Meter {
        stack: &stack,
        memory_gb,
        logs,
    };
    let per = |total: Usage, count: usize| total.times(1.0 / count as f64);
    let mut units = UnitCosts::default();

    // Connect, subscribe (half to room-0, half to room-1), ping.
    let start = meter.settled().await;
    let mut sockets = connect_all(&stack, CONNECTIONS, "user").await;
    let connected = meter.settled().await;
    units.connect = per(connected.minus(&start), CONNECTIONS);
    let mut positions = Vec::new();
    for (i, socket) in sockets.iter_mut().enumerate() {
        send(socket, json!({"action": "subscribe", "channel": room(i), "id": "s"})).await;
        match reply(socket).await {
            Reply::Subscribed { position, .. } => positions.push(position),
            other => panic!("subscribe answered {other:?}"),
        }
    }
    let subscribed = meter.settled().await;
    units.subscribe = per(subscribed.minus(&connected), CONNECTIONS);
    for socket in sockets.iter_mut() {
        send(socket, json!({"action": "ping"})).await;
        assert!(matches!(reply(socket).await, Reply::Pong));
    }
    let pinged = meter.settled().await;
    units.ping = per(pinged.minus(&subscribed), CONNECTIONS);

    // A producer's message to a room of 10.
    let produce = |channel: &'static str, n: usize| MessageRecord {
        message_id: format!("{channel}-{n}-{}", uuid::Uuid::new_v4()),
        channel: Some(channel.to_owned()),
        payload: json!({"price": 12.5, "n": n}),
        expires_at: None,
        published_by: None,
        published_by_user: None,
        to_user: None,
        written_at_ms: None,
    };
    // The producer writes through the meter too: its PutItem is part of the bill.
    let producer = {
        let endpoint = stack.meter.as_ref().expect("a metered stack").endpoint();
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&stack.tables.sdk_config)
                .endpoint_url(endpoint)
                .build(),
        );
        DynamoStore::new(client, &stack.tables.config)
    };
    let mut before = meter.settled().await;
    for n in 0..REPEATS {
        producer.put_message(&produce("room-0", n)).await.expect("produced");
        for socket in sockets.iter_mut().step_by(2) {
            positions[0] = message(socket).await;
        }
    }
    let to_ten = per(meter.settled().await.minus(&before), REPEATS);
    // Then to an audience of AUDIENCE: these 20 and more sockets that only listen.
    let mut listeners = connect_all(&stack, AUDIENCE - CONNECTIONS, "listener").await;
    for socket in sockets.iter_mut().chain(listeners.iter_mut()) {
        send(socket, json!({"action": "subscribe", "channel": "all", "id": "a"})).await;
        reply(socket).await;
    }
    before = meter.settled().await;
    for n in 0..REPEATS {
        producer.put_message(&produce("all", n)).await.expect("produced");
        for socket in sockets.iter_mut().chain(listeners.iter_mut()) {
            message(socket).await;
        }
    }
    let to_audience = per(meter.settled().await.minus(&before), REPEATS);
    let extra = (AUDIENCE - 10) as f64;
    units.message_per_subscriber = to_audience.minus(&to_ten).times(1.0 / extra).at_least_zero();
    units.message_fixed = to_ten.minus(&units.message_per_subscriber.times(10.0)).at_least_zero();
    for socket in listeners.iter_mut() {
        let _ = socket.close(None).await;
    }
    drop(listeners);

    // A client publish to room-0, delivered to its 10 members.
    before = meter.settled().await;
    for n in 0..REPEATS {
        send(
            &mut sockets[0],
            json!({"action": "publish", "channel": "room-0", "data": {"n": n}, "id": "p"}),
        )
        .await;
        for socket in sockets.iter_mut().step_by(2) {
            message(socket).await;
        }
    }
    units.room_publish = per(meter.settled().await.minus(&before), REPEATS);
    assert_eq!(ROOM_SIZE as usize, CONNECTIONS / 2);

    // Disconnect: $disconnect, then the reaper's check of the removed records.
    // One at a time: the meter serializes requests, and a burst would bill
    // each function for the others' turns.
    before = meter.settled().await;
    for socket in sockets.iter_mut() {
        let _ = socket.close(None).await;
        meter.settled().await;
    }
    drop(sockets);
    // Two subscriptions each here ("all" and a room); the reconnect below has
    // one, and the difference is what each further channel adds.
    let with_two_channels = per(meter.settled().await.minus(&before), CONNECTIONS);

    // A reconnect: connect again and subscribe with `since`.
    let mut sockets = connect_all(&stack, CONNECTIONS, "user").await;
    before = meter.settled().await;
    for (i, socket) in sockets.iter_mut().enumerate() {
        let since = positions[i % 2].clone();
        send(
            socket,
            json!({"action": "subscribe", "channel": room(i), "since": since, "id": "r"}),
        )
        .await;
        reply(socket).await;
    }
    units.resubscribe = per(meter.settled().await.minus(&before), CONNECTIONS);
    before = meter.settled().await;
    for socket in sockets.iter_mut() {
        let _ = socket.close(None).await;
        meter.settled().await;
    }
    units.disconnect = per(meter.settled().await.minus(&before), CONNECTIONS);
    units.disconnect_per_channel = with_two_channels.minus(&units.disconnect).at_least_zero();

    // The sweep, with SWEEP_EXTRA live connections to list.
    for i in 0..SWEEP_EXTRA {
        stack
            .tables
            .dynamodb
            .put_item()
            .table_name(&stack.tables.config.connections_table)
            .item("connection_id", AttributeValue::S(format!("synthetic-{i:04}=")))
            .item(
                "expires_at",
                AttributeValue::N((epoch_seconds_now() + 3_600).to_string()),
            )
            .send()
            .await
            .expect("a synthetic connection");
    }
    let scheduled = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    before = meter.settled().await;
    stack
        .functions
        .invoke("reaper", scheduled.clone())
        .await
        .expect("the sweep runs");
    let sweep = meter.settled().await.minus(&before);
    units.sweep_per_connection = Usage {
        read_units: sweep.read_units / SWEEP_EXTRA as f64,
        ..Usage::default()
    };
    units.sweep_fixed = Usage {
        read_units: 0.0,
        ..sweep
    };

    // The HTTP API: a server's publish to a channel nobody is on, and the
    // fallback's poll of three channels on which nothing happened.
    let http = reqwest::Client::new();
    let base = stack.gateway.http_url();
    before = meter.settled().await;
    for n in 0..REPEATS {
        let body = json!({"channel": "nobody", "data": {"n": n}});
        post_ok(
            &http,
            &format!("{base}/v1/publish"),
            &format!("Key {SERVER_KEY}"),
            &body,
        )
        .await;
    }
    units.http_publish = per(meter.settled().await.minus(&before), REPEATS);
    let token = airwave_tests::signed_token(SECRET, &json!({"sub": "poller", "exp": epoch_seconds_now() + 3_600}));
    let asked = json!({"channels": {"room-0": positions[0], "room-1": positions[1], "all": null}});
    let answer = post_ok(&http, &format!("{base}/v1/poll"), &format!("Bearer {token}"), &asked).await;
    let channels = |channel: &str| answer["channels"][channel]["position"].clone();
    let idle =
        json!({"channels": {"room-0": channels("room-0"), "room-1": channels("room-1"), "all": channels("all")}});
    before = meter.settled().await;
    for _ in 0..REPEATS {
        let answer = post_ok(&http, &format!("{base}/v1/poll"), &format!("Bearer {token}"), &idle).await;
        assert!(
            answer["channels"]["all"]["publications"].is_null(),
            "nothing new: {answer}"
        );
    }
    units.idle_poll = per(meter.settled().await.minus(&before), REPEATS);

    let keep_alive = ClientConfig::DEFAULT_KEEP_ALIVE_AFTER.as_secs_f64();
    println!("{}", report(&units, &prices, deployment, keep_alive));
    stack.shutdown().await;
}
