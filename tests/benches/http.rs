//! `make bench`, the HTTP API: how fast backends publish over HTTP (one
//! message a request, and batches of 25) beside a client publishing on its
//! socket; and how long a message takes to reach a subscriber on the HTTP
//! fallback (polling `/v1/poll` on the browser client's schedule: 1 s after
//! a poll that brought messages, doubling to 4 s while quiet) beside one on a
//! WebSocket, measured in the same run on the same messages.
//!
//! Everything runs through the whole local stack (the gateway from
//! `template.yaml`, the real handlers in-process, moto's DynamoDB and its
//! stream), so the rates are this machine's, not AWS's: read them side by
//! side.
//!
//! Settings (environment): BENCH_HTTP_MESSAGES (default 400),
//! BENCH_HTTP_LATENCY_MESSAGES (default 40).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airwave_gateway::GatewayOptions;
use airwave_protocol::http::{ChannelPoll, PollResponse, POLL_PATH, PUBLISH_PATH};
use airwave_protocol::{parse_server_frame, Incoming, Position};
use airwave_shared::server_keys::ServerKeys;
use airwave_shared::time::epoch_millis_now;
use airwave_tests::http_api::post_ok;
use airwave_tests::stack::LocalStack;
use airwave_tests::TestTables;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as Frame;

const SERVER_KEY: &str = "sk_bench_0123456789abcdef0123456789abcdef";
/// The browser client's default poll schedule.
const POLL_MIN: Duration = Duration::from_millis(1_000);
const POLL_MAX: Duration = Duration::from_millis(4_000);

fn server_key() -> String {
    format!("Key {SERVER_KEY}")
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Messages per second publishing `total` messages over HTTP, `per_request`
/// a request, `concurrency` requests at once.
async fn http_rate(stack: &LocalStack, total: usize, per_request: usize, concurrency: usize) -> f64 {
    let url = format!("{}{PUBLISH_PATH}", stack.gateway.http_url());
    let client = reqwest::Client::new();
    let requests: Vec<Value> = (0..total)
        .collect::<Vec<_>>()
        .chunks(per_request)
        .map(|chunk| json!({"messages": chunk.iter().map(|n| json!({"channel": "rate-http", "data": n})).collect::<Vec<_>>()}))
        .collect();
    let started = Instant::now();
    futures::stream::iter(requests)
        .for_each_concurrent(concurrency, |body| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                post_ok(&client, &url, &server_key(), &body).await;
            }
        })
        .await;
    total as f64 / started.elapsed().as_secs_f64()
}

/// Messages per second a client publishes on one socket, `total` sent
/// without waiting and every reply awaited.
async fn socket_rate(stack: &LocalStack, total: usize) -> f64 {
    let (mut socket, _) = tokio_tungstenite::connect_async(stack.ws_url()).await.expect("connect");
    let started = Instant::now();
    for n in 0..total {
        let frame = json!({"action": "publish", "channel": "rate-socket", "data": n, "id": n});
        socket.send(Frame::text(frame.to_string())).await.expect("send");
    }
    let mut replies = 0;
    while replies < total {
        if let Some(Ok(Frame::Text(text))) = socket.next().await {
            if matches!(parse_server_frame(&text), Ok(Incoming::Reply { .. })) {
                replies += 1;
            }
        }
    }
    total as f64 / started.elapsed().as_secs_f64()
}

type Arrivals = Arc<Mutex<HashMap<String, i64>>>;

/// A WebSocket subscriber recording when each message id arrives.
async fn socket_subscriber(stack: &LocalStack, channel: &str, arrivals: Arrivals) {
    let (mut socket, _) = tokio_tungstenite::connect_async(stack.ws_url()).await.expect("connect");
    let subscribe = json!({"action": "subscribe", "channel": channel});
    socket
        .send(Frame::text(subscribe.to_string()))
        .await
        .expect("subscribe");
    tokio::spawn(async move {
        while let Some(Ok(frame)) = socket.next().await {
            if let Frame::Text(text) = frame {
                if let Ok(Incoming::Messages(messages)) = parse_server_frame(&text) {
                    let now = epoch_millis_now();
                    let mut arrivals = arrivals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    for message in messages {
                        arrivals.entry(message.id).or_insert(now);
                    }
                }
            }
        }
    });
}

/// An HTTP-fallback subscriber: polls on the browser client's schedule.
fn polling_subscriber(stack: &LocalStack, channel: &str, arrivals: Arrivals, polls: Arc<Mutex<usize>>) {
    let url = format!("{}{POLL_PATH}", stack.gateway.http_url());
    let channel = channel.to_owned();
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut since: Option<Position> = None;
        let mut wait = POLL_MIN;
        loop {
            let answer: PollResponse = serde_json::from_value(
                post_ok(
                    &client,
                    &url,
                    &server_key(),
                    &json!({"channels": {channel.clone(): since}}),
                )
                .await,
            )
            .expect("a poll answer");
            *polls.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += 1;
            let now = epoch_millis_now();
            let mut moved = false;
            if let Some(ChannelPoll::Read {
                position,
                publications,
                more,
                ..
            }) = answer.channels.get(&channel)
            {
                let mut arrivals = arrivals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                for message in publications {
                    arrivals.entry(message.id.clone()).or_insert(now);
                }
                moved = !publications.is_empty() || *more;
                since = position.clone();
            }
            wait = if moved { POLL_MIN } else { (wait * 2).min(POLL_MAX) };
            tokio::time::sleep(wait).await;
        }
    });
}

fn percentile(sorted: &[i64], share: f64) -> i64 {
    let index = ((sorted.len() as f64 * share).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn latencies(sent: &HashMap<String, i64>, arrivals: &Arrivals) -> Vec<i64> {
    let arrivals = arrivals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut latencies: Vec<i64> = sent
        .iter()
        .map(|(id, at)| {
            arrivals
                .get(id)
                .map(|arrived| arrived - at)
                .expect("every message arrived")
        })
        .collect();
    latencies.sort_unstable();
    latencies
}

#[tokio::main]
async fn main() {
    let total = env_or("BENCH_HTTP_MESSAGES", 400);
    let latency_messages = env_or("BENCH_HTTP_LATENCY_MESSAGES", 40);
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.allow_client_publish = true;
        config.allow_anonymous_publish = true;
        config.server_keys = Some(ServerKeys::parse(SERVER_KEY).expect("a valid key"));
    })
    .await;
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;

    let one = http_rate(&stack, total, 1, 8).await;
    let batched = http_rate(&stack, total, 25, 8).await;
    let socket = socket_rate(&stack, total).await;
    println!("http publish: {total} messages, 8 requests at once");
    println!("  one message a request   {one:>8.0} messages/s");
    println!("  25 messages a request   {batched:>8.0} messages/s");
    println!("  a client's socket       {socket:>8.0} messages/s (the same machine, for comparison)");

    let channel = "latency";
    let (on_socket, on_http) = (Arrivals::default(), Arrivals::default());
    let polls = Arc::new(Mutex::new(0));
    socket_subscriber(&stack, channel, on_socket.clone()).await;
    polling_subscriber(&stack, channel, on_http.clone(), polls.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = reqwest::Client::new();
    let url = format!("{}{PUBLISH_PATH}", stack.gateway.http_url());
    let mut sent = HashMap::new();
    let mut draw = fastrand::Rng::with_seed(7);
    let started = Instant::now();
    for n in 0..latency_messages {
        let at = epoch_millis_now();
        let answer = post_ok(&client, &url, &server_key(), &json!({"channel": channel, "data": n})).await;
        let id = answer["messages"][0]["message_id"].as_str().expect("an id").to_owned();
        sent.insert(id, at);
        // From 0.2 to 3 s apart: some land on a busy poller, some on a quiet one.
        tokio::time::sleep(Duration::from_millis(draw.u64(200..3_000))).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let done = |arrivals: &Arrivals| {
            let arrivals = arrivals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            sent.keys().all(|id| arrivals.contains_key(id))
        };
        if done(&on_socket) && done(&on_http) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let socket = latencies(&sent, &on_socket);
    let http = latencies(&sent, &on_http);
    let polls = *polls.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    println!("delivery latency, publish to arrival: {latency_messages} messages 0.2 to 3 s apart");
    println!(
        "  WebSocket               p50 {:>5} ms   p99 {:>5} ms",
        percentile(&socket, 0.5),
        percentile(&socket, 0.99)
    );
    println!(
        "  HTTP fallback (polling) p50 {:>5} ms   p99 {:>5} ms   ({polls} polls in {elapsed:.0} s: {:.2} a second)",
        percentile(&http, 0.5),
        percentile(&http, 0.99),
        polls as f64 / elapsed
    );
    stack.shutdown().await;
}
