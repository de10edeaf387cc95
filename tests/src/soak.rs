//! The soak: the whole local stack for minutes, with sockets coming and
//! going and faults injected everywhere at once, then a check that every
//! promise held. `make soak` runs the full plan (the `airwave-soak` binary);
//! `make test` runs the short one (`tests/it/soak.rs`).
//!
//! Steady subscribers (the Rust client, through a relay that resets links
//! like a dropping network) each hold one channel, while a producer writes
//! messages to every channel. Meanwhile transient sockets subscribe and then
//! vanish with a TCP reset, links of steady subscribers are reset so they
//! reconnect and recover, the Management API answers 500 and 429, DynamoDB
//! throttles and cancels transactions, and stream-processor invocations are
//! killed part-way. At the end every subscriber must hold every message of
//! its channel, the tables must be empty and every cap counter zero, and no
//! function may have panicked.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airwave_client::{Client, ClientConfig, Event};
use airwave_gateway::GatewayOptions;
use airwave_local::tcp_resets::reset_on_drop;
use airwave_local::{dynamodb_faults, management_faults, DynamoDbFaults, ManagementFaults, ResettingRelay};
use airwave_shared::config::JwtSecret;
use airwave_shared::message::MessageRecord;
use airwave_shared::MessageStore;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::stack::{LocalStack, StackOptions};
use crate::{lock, TestTables};

const SECRET: &str = "soak-secret-soak-secret-soak-secret!";

/// What to run, and what to inject.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    /// Steady subscribers, connected for the whole run.
    pub subscribers: usize,
    pub channels: usize,
    /// How long messages are published for.
    pub duration: Duration,
    /// One message (to the next channel in turn) per interval.
    pub publish_interval: Duration,
    /// One steady subscriber's link reset per interval.
    pub reset_interval: Duration,
    /// One transient socket per interval: it subscribes, then vanishes with a reset.
    pub transient_interval: Duration,
    pub management_server_error_percent: u8,
    pub management_throttle_percent: u8,
    pub dynamodb_throttle_percent: u8,
    pub dynamodb_conflict_percent: u8,
    /// One stream-processor invocation in this many is killed part-way.
    pub kill_every_stream_batch: usize,
    /// The longest wait for deliveries, and then for the tables to empty.
    pub settle: Duration,
    pub seed: u64,
}

impl SoakPlan {
    /// `make soak`: 1,000 steady subscribers for three minutes.
    pub fn full() -> Self {
        SoakPlan {
            subscribers: 1_000,
            channels: 20,
            duration: Duration::from_secs(180),
            publish_interval: Duration::from_millis(50),
            reset_interval: Duration::from_millis(250),
            transient_interval: Duration::from_millis(100),
            management_server_error_percent: 10,
            management_throttle_percent: 5,
            dynamodb_throttle_percent: 3,
            dynamodb_conflict_percent: 10,
            kill_every_stream_batch: 4,
            settle: Duration::from_secs(120),
            seed: 15,
        }
    }

    /// `make test`: the same faults, fewer sockets, for twenty seconds.
    pub fn short() -> Self {
        SoakPlan {
            subscribers: 150,
            channels: 10,
            duration: Duration::from_secs(20),
            publish_interval: Duration::from_millis(100),
            reset_interval: Duration::from_millis(400),
            transient_interval: Duration::from_millis(250),
            kill_every_stream_batch: 3,
            settle: Duration::from_secs(90),
            ..SoakPlan::full()
        }
    }
}

/// What a soak did and found.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub plan_seconds: u64,
    pub elapsed_seconds: f64,
    pub subscribers: usize,
    /// Transient sockets that connected, subscribed and were reset.
    pub transient_sockets: usize,
    pub transient_attempts: usize,
    /// TCP connections: the steady subscribers' through the relay (first
    /// connections and reconnects) and the transient sockets' attempts.
    pub sockets_opened: usize,
    pub messages_published: usize,
    pub link_resets: usize,
    pub reconnects: usize,
    pub management_server_errors: usize,
    pub management_throttles: usize,
    pub dynamodb_throttles: usize,
    pub dynamodb_conflicts: usize,
    pub killed_stream_batches: usize,
    pub deliveries_expected: usize,
    /// Distinct messages that reached the subscriber they were for.
    pub deliveries_made: usize,
    /// Dropped by the clients as already seen (a retried batch, a recovery
    /// overlapping live delivery).
    pub duplicates_dropped: u64,
    /// (subscriber, message id) pairs never delivered, the first few.
    pub missing: Vec<(usize, String)>,
    /// Subscribers that missed at least one message.
    pub subscribers_missing: usize,
    /// Steady subscribers whose link was reset at least once, and what was
    /// owed to and reached them (by recovery where it happened while away).
    pub reconnected_subscribers: usize,
    pub reconnected_deliveries_expected: usize,
    pub reconnected_deliveries_made: usize,
    pub recovery_failures: usize,
    /// Clients that gave up reconnecting.
    pub clients_failed: usize,
    /// Connection records and subscription items left after everyone left.
    pub leftover_connections: usize,
    pub leftover_subscriptions: usize,
    /// Cap counters not back to zero: (key, open count).
    pub leftover_counters: Vec<(String, i64)>,
    /// Panicked invocations, by function.
    pub crashes: BTreeMap<String, usize>,
    /// Invocations that returned an error (retried or answered 500), by function.
    pub function_errors: BTreeMap<String, usize>,
}

impl SoakReport {
    pub fn deliveries_missing(&self) -> usize {
        self.deliveries_expected.saturating_sub(self.deliveries_made)
    }

    /// Whether every promise held.
    pub fn passed(&self) -> bool {
        self.deliveries_missing() == 0
            && self.recovery_failures == 0
            && self.clients_failed == 0
            && self.leftover_connections == 0
            && self.leftover_subscriptions == 0
            && self.leftover_counters.is_empty()
            && self.crashes.is_empty()
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "soak: {} s of publishing ({:.0} s in all)",
            self.plan_seconds, self.elapsed_seconds
        )?;
        writeln!(
            f,
            "  sockets: {} opened: {} steady subscribers, {} reconnects, {} transient ones ({} subscribed, then reset)",
            self.sockets_opened, self.subscribers, self.reconnects, self.transient_attempts, self.transient_sockets
        )?;
        writeln!(f, "  messages published: {}", self.messages_published)?;
        writeln!(
            f,
            "  faults: {} link resets, Management API {} x 500 and {} x 429, DynamoDB {} throttles and {} transaction conflicts, {} stream-processor invocations killed",
            self.link_resets,
            self.management_server_errors,
            self.management_throttles,
            self.dynamodb_throttles,
            self.dynamodb_conflicts,
            self.killed_stream_batches
        )?;
        writeln!(
            f,
            "  deliveries: {} expected, {} made, {} missing (by {} subscribers), {} duplicates dropped by the clients",
            self.deliveries_expected,
            self.deliveries_made,
            self.deliveries_missing(),
            self.subscribers_missing,
            self.duplicates_dropped
        )?;
        writeln!(
            f,
            "    of which to the {} subscribers that reconnected at least once (every message of the run, live or recovered): {} expected, {} made",
            self.reconnected_subscribers, self.reconnected_deliveries_expected, self.reconnected_deliveries_made
        )?;
        for (subscriber, id) in &self.missing {
            writeln!(f, "    missing: subscriber {subscriber} never got {id}")?;
        }
        writeln!(
            f,
            "  recovery failures: {}, clients that gave up: {}",
            self.recovery_failures, self.clients_failed
        )?;
        writeln!(
            f,
            "  leftovers: {} connection records, {} subscriptions, {} cap counters not zero {:?}",
            self.leftover_connections,
            self.leftover_subscriptions,
            self.leftover_counters.len(),
            self.leftover_counters
        )?;
        writeln!(
            f,
            "  crashes: {:?}; function errors (retried): {:?}",
            self.crashes, self.function_errors
        )?;
        write!(f, "  verdict: {}", if self.passed() { "passed" } else { "FAILED" })
    }
}

/// One steady subscriber, as its event loop saw it.
#[derive(Default)]
struct Seen {
    ids: Mutex<HashSet<String>>,
    reconnects: AtomicUsize,
    recovery_failures: AtomicUsize,
    failed: AtomicUsize,
}

fn channel_name(index: usize) -> String {
    format!("soak-{index}")
}

async fn watch(mut events: airwave_client::Events, seen: Arc<Seen>) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Message(message) => {
                lock(&seen.ids).insert(message.id);
            }
            Event::Reconnected => {
                seen.reconnects.fetch_add(1, Ordering::SeqCst);
            }
            Event::RecoveryFailed { .. } => {
                seen.recovery_failures.fetch_add(1, Ordering::SeqCst);
            }
            Event::Failed(_) => {
                seen.failed.fetch_add(1, Ordering::SeqCst);
            }
            Event::Disconnected { .. } | Event::Evicted { .. } => {}
        }
    }
}

/// A socket that subscribes, then dies with a TCP reset: no close frame.
/// Whether it got as far as that: connected, subscribed and reset.
async fn transient_socket(url: String, channel: String) -> bool {
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
        return false;
    };
    let subscribe = json!({"action": "subscribe", "channel": channel, "id": 1}).to_string();
    if socket.send(Frame::text(subscribe)).await.is_err() {
        return false;
    }
    let subscribed = matches!(
        tokio::time::timeout(Duration::from_secs(5), socket.next()).await,
        Ok(Some(Ok(Frame::Text(reply)))) if reply.contains("subscribed")
    );
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = socket.get_ref() else {
        return false;
    };
    // Reset whether or not it subscribed: it vanishes either way.
    let reset = reset_on_drop(tcp);
    subscribed && reset
}

async fn publish(store: &airwave_shared::DynamoStore, number: usize, channel: String) {
    let message = MessageRecord {
        message_id: format!("soak-message-{number}"),
        channel: Some(channel),
        payload: json!({"n": number}),
        expires_at: None,
        published_by: None,
        published_by_user: None,
        to_user: None,
        written_at_ms: None,
    };
    // A producer retries until its write lands; the stack under test is what comes after.
    while let Err(error) = store.put_message(&message).await {
        tracing::warn!(error = %error, message_id = %message.message_id, "publishing failed; again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A phase reached, on stderr: a soak runs for minutes.
fn progress(started: Instant, what: &str) {
    eprintln!("soak: {:>6.1}s {what}", started.elapsed().as_secs_f64());
}

/// Runs `plan` on a fresh stack on the local DynamoDB.
pub async fn run(plan: &SoakPlan) -> SoakReport {
    let started = Instant::now();
    let caps = (plan.subscribers as u64 + 200) * 4;
    let tables = TestTables::create_with(|config| {
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.admission.attempts_per_ip = 10_000_000;
        config.admission.window_seconds = 3_600;
        config.admission.max_connections = caps;
        config.admission.max_connections_per_ip = caps;
        // Room for a reconnect that arrives before the old socket's $disconnect.
        config.admission.max_connections_per_user = 4;
    })
    .await;
    let stack = LocalStack::start_with(
        tables,
        GatewayOptions::default(),
        StackOptions {
            dynamodb_faults: Some(DynamoDbFaults {
                throttle_percent: plan.dynamodb_throttle_percent,
                conflict_percent: plan.dynamodb_conflict_percent,
                seed: plan.seed,
            }),
            management_faults: Some(ManagementFaults {
                server_error_percent: plan.management_server_error_percent,
                throttle_percent: plan.management_throttle_percent,
                seed: plan.seed,
            }),
            kill_every_stream_batch: plan.kill_every_stream_batch,
            seed: plan.seed,
            connecting_window: airwave_shared::fanout::CONNECTING_WINDOW,
            // The sweep runs throughout, under the same faults.
            schedule_period: Some(Duration::from_secs(2)),
            metered: false,
        },
    )
    .await;
    let relay = ResettingRelay::start(stack.gateway.local_addr())
        .await
        .expect("start the resetting relay");
    let relayed_url = format!("ws://{}/local", relay.address());
    let direct_url = stack.ws_url();
    let mut rng = fastrand::Rng::with_seed(plan.seed);

    // Steady subscribers, a few at a time, each on channel i mod channels.
    let mut subscribers = Vec::with_capacity(plan.subscribers);
    let mut joining = futures::stream::iter(0..plan.subscribers)
        .map(|index| {
            let url = relayed_url.clone();
            async move {
                let config = ClientConfig::new(&url)
                    .expect("the relay's URL")
                    .with_token(crate::token_for(SECRET, &format!("steady-{index}")))
                    .with_rng_seed(index as u64);
                let (client, events) = Client::new(config);
                let seen = Arc::new(Seen::default());
                let watcher = tokio::spawn(watch(events, seen.clone()));
                let channel = channel_name(index % plan.channels);
                let mut subscribed = client.subscribe(&channel).await;
                // Faults can fail a subscribe; a real application tries again.
                for _ in 0..10 {
                    if subscribed.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    subscribed = client.subscribe(&channel).await;
                }
                if let Err(error) = subscribed {
                    panic!("steady subscriber {index} could not subscribe to {channel}: {error}");
                }
                (client, seen, watcher)
            }
        })
        .buffered(8);
    while let Some(subscriber) = joining.next().await {
        subscribers.push(subscriber);
    }
    drop(joining);
    progress(started, &format!("{} steady subscribers subscribed", subscribers.len()));

    // The faults and the traffic, for the plan's duration.
    let publishing_started = Instant::now();
    let mut messages = 0;
    let mut transient = 0;
    let mut transients = Vec::new();
    let mut next_publish = tokio::time::Instant::now();
    let mut next_reset = next_publish + plan.reset_interval;
    let mut next_transient = next_publish + plan.transient_interval;
    let stop = tokio::time::Instant::now() + plan.duration;
    while tokio::time::Instant::now() < stop {
        let next = next_publish.min(next_reset).min(next_transient);
        tokio::time::sleep_until(next).await;
        let now = tokio::time::Instant::now();
        if now >= next_publish {
            let channel = messages % plan.channels;
            publish(&stack.tables.store, messages, channel_name(channel)).await;
            messages += 1;
            next_publish += plan.publish_interval;
        }
        if now >= next_reset {
            let links = relay.open_links();
            if !links.is_empty() {
                relay.reset(links[rng.usize(0..links.len())]);
            }
            next_reset += plan.reset_interval;
        }
        if now >= next_transient {
            let url = format!(
                "{direct_url}?token={}",
                crate::token_for(SECRET, &format!("transient-{transient}"))
            );
            transients.push(tokio::spawn(transient_socket(
                url,
                channel_name(rng.usize(0..plan.channels)),
            )));
            transient += 1;
            next_transient += plan.transient_interval;
        }
    }
    // A last message on every channel, so a gap left by a post that failed
    // both passes shows and is recovered, as it would be on the next message.
    for _ in 0..plan.channels {
        let channel = messages % plan.channels;
        publish(&stack.tables.store, messages, channel_name(channel)).await;
        messages += 1;
    }
    let publish_seconds = publishing_started.elapsed().as_secs();
    progress(started, &format!("{messages} messages published"));
    let mut transients_reset = 0;
    for socket in transients {
        transients_reset += usize::from(socket.await.unwrap_or(false));
    }
    progress(started, "transient sockets done");

    // Each subscriber is owed every message of its channel: "soak-message-n"
    // went to channel n mod channels.
    let mut owed_by_channel: Vec<Vec<String>> = vec![Vec::new(); plan.channels];
    for number in 0..messages {
        owed_by_channel[number % plan.channels].push(format!("soak-message-{number}"));
    }
    let owed_to = |index: usize| &owed_by_channel[index % plan.channels];
    let settle_until = Instant::now() + plan.settle;
    loop {
        let complete = subscribers.iter().enumerate().all(|(index, (_, seen, _))| {
            let ids = lock(&seen.ids);
            owed_to(index).iter().all(|id| ids.contains(id))
        });
        if complete || Instant::now() >= settle_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let mut report = SoakReport {
        plan_seconds: publish_seconds,
        subscribers: subscribers.len(),
        transient_sockets: transients_reset,
        transient_attempts: transient,
        messages_published: messages,
        link_resets: relay.resets(),
        ..SoakReport::default()
    };
    for (index, (client, seen, _)) in subscribers.iter().enumerate() {
        let ids = lock(&seen.ids);
        let owed = owed_to(index);
        let mut made = 0;
        for id in owed {
            if ids.contains(id) {
                made += 1;
            } else if report.missing.len() < 10 {
                report.missing.push((index, id.clone()));
            }
        }
        report.deliveries_expected += owed.len();
        report.deliveries_made += made;
        report.subscribers_missing += usize::from(made < owed.len());
        if seen.reconnects.load(Ordering::SeqCst) > 0 {
            report.reconnected_subscribers += 1;
            report.reconnected_deliveries_expected += owed.len();
            report.reconnected_deliveries_made += made;
        }
        report.duplicates_dropped += client.duplicates_dropped();
        report.reconnects += seen.reconnects.load(Ordering::SeqCst);
        report.recovery_failures += seen.recovery_failures.load(Ordering::SeqCst);
        report.clients_failed += usize::from(seen.failed.load(Ordering::SeqCst) > 0);
    }

    progress(
        started,
        &format!(
            "{} of {} deliveries made",
            report.deliveries_made, report.deliveries_expected
        ),
    );

    // Everyone leaves; then nothing may stay behind.
    futures::stream::iter(subscribers.iter())
        .for_each_concurrent(32, |(client, _, _)| client.close())
        .await;
    // A client's events end only with the client itself.
    for (client, _, watcher) in subscribers {
        drop(client);
        watcher.abort();
    }
    progress(started, "every subscriber closed");
    let settle_until = Instant::now() + plan.settle;
    loop {
        collect_leftovers(&stack, &mut report).await;
        let clean = report.leftover_connections == 0
            && report.leftover_subscriptions == 0
            && report.leftover_counters.is_empty()
            && stack.gateway.connection_count() == 0;
        if clean || Instant::now() >= settle_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    report.sockets_opened = relay.accepted() + transient;
    if let Some(proxy) = &stack.management_faults {
        let counts = proxy.counts();
        report.management_server_errors = counts.injected(management_faults::SERVER_ERROR);
        report.management_throttles = counts.injected(management_faults::THROTTLED);
    }
    if let Some(proxy) = &stack.dynamodb_faults {
        let counts = proxy.counts();
        report.dynamodb_throttles = counts.injected(dynamodb_faults::THROTTLED);
        report.dynamodb_conflicts = counts.injected(dynamodb_faults::CONFLICT);
    }
    report.killed_stream_batches = stack.functions.killed_batches.load(Ordering::SeqCst);
    report.crashes = lock(&stack.functions.crashes).clone();
    report.function_errors = lock(&stack.functions.errors).clone();
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    stack.shutdown().await;
    report
}

async fn collect_leftovers(stack: &LocalStack, report: &mut SoakReport) {
    let tables = &stack.tables;
    report.leftover_connections = tables.stored_connection_ids().await.len();
    report.leftover_subscriptions = tables.stored_subscriptions().await.len();
    report.leftover_counters = tables
        .scan_all(&tables.config.admission_table)
        .await
        .into_iter()
        .filter_map(|item| {
            let key = item.get("pk").and_then(|pk| pk.as_s().ok())?.clone();
            let open = item
                .get("open_count")
                .and_then(|count| count.as_n().ok())
                .and_then(|count| count.parse::<i64>().ok())?;
            (open != 0).then_some((key, open))
        })
        .collect();
}
