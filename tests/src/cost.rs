//! The cost model behind `make cost`: what each unit event was measured to
//! use on the local stack, scaled to a month of each reference workload and
//! priced with the dated price table in `infra/cost/prices.json`.
//!
//! The counts come from the run; the only assumptions are the workloads'
//! shapes (printed with the table) and the prices.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

/// What one unit event used, as AWS bills it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub lambda_invocations: f64,
    pub lambda_gb_seconds: f64,
    pub read_units: f64,
    pub write_units: f64,
    /// Of `write_units`, the secondary indexes' share.
    pub index_write_units: f64,
    /// API Gateway messages from clients and to clients, in 32 KB units.
    pub messages_in: f64,
    pub messages_out: f64,
    /// What the functions logged, in bytes (CloudWatch Logs ingestion).
    pub log_bytes: f64,
    /// HTTP API requests (publishes and the fallback's polls).
    pub http_requests: f64,
}

impl Usage {
    pub fn minus(&self, earlier: &Usage) -> Usage {
        self.zip(earlier, |a, b| a - b)
    }

    pub fn plus(&self, other: &Usage) -> Usage {
        self.zip(other, |a, b| a + b)
    }

    /// Negative parts (noise in a difference of two measurements) as zero.
    pub fn at_least_zero(&self) -> Usage {
        self.zip(self, |a, _| a.max(0.0))
    }

    pub fn times(&self, factor: f64) -> Usage {
        self.zip(self, |a, _| a * factor)
    }

    fn zip(&self, other: &Usage, f: impl Fn(f64, f64) -> f64) -> Usage {
        Usage {
            lambda_invocations: f(self.lambda_invocations, other.lambda_invocations),
            lambda_gb_seconds: f(self.lambda_gb_seconds, other.lambda_gb_seconds),
            read_units: f(self.read_units, other.read_units),
            write_units: f(self.write_units, other.write_units),
            index_write_units: f(self.index_write_units, other.index_write_units),
            messages_in: f(self.messages_in, other.messages_in),
            messages_out: f(self.messages_out, other.messages_out),
            log_bytes: f(self.log_bytes, other.log_bytes),
            http_requests: f(self.http_requests, other.http_requests),
        }
    }
}

/// The unit events `make cost` measures.
#[derive(Debug, Clone, Default)]
pub struct UnitCosts {
    pub connect: Usage,
    pub subscribe: Usage,
    /// A subscribe with `since`, as every reconnect makes.
    pub resubscribe: Usage,
    pub ping: Usage,
    /// A disconnect of a connection on one channel, and what each further channel adds.
    pub disconnect: Usage,
    pub disconnect_per_channel: Usage,
    /// A producer's message to a channel: the part that does not grow with
    /// the audience, and the part per subscriber.
    pub message_fixed: Usage,
    pub message_per_subscriber: Usage,
    /// A client's `publish` to a room of [`ROOM_SIZE`], delivered to all of it.
    pub room_publish: Usage,
    /// One run of the sweep: the fixed part, and per connection listed.
    pub sweep_fixed: Usage,
    pub sweep_per_connection: Usage,
    /// A server's HTTP publish of one message to a channel nobody is on.
    pub http_publish: Usage,
    /// The HTTP fallback's poll of [`FALLBACK_CHANNELS`] channels, nothing new on them.
    pub idle_poll: Usage,
}

/// The channels of the idle fallback client (the idle workload's).
pub const FALLBACK_CHANNELS: usize = 3;
/// The browser client's slowest poll, while nothing arrives.
pub const FALLBACK_POLL_SECONDS: f64 = 4.0;
/// How often the browser client on the fallback tries a WebSocket again.
pub const FALLBACK_PROBE_SECONDS: f64 = 300.0;

pub const ROOM_SIZE: f64 = 10.0;

/// The dated price table (`infra/cost/prices.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct Prices {
    pub region: String,
    pub checked: String,
    pub sources: Vec<String>,
    pub api_gateway: ApiGatewayPrices,
    pub http_api: HttpApiPrices,
    pub appsync_events: AppSyncPrices,
    pub lambda: LambdaPrices,
    pub dynamodb: DynamoDbPrices,
    pub sqs: SqsPrices,
    pub cloudwatch: CloudWatchPrices,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiGatewayPrices {
    /// The first billion messages of a month.
    pub messages_per_million: f64,
    pub messages_per_million_over_billion: f64,
    pub connection_minutes_per_million: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpApiPrices {
    /// The first 300 million requests of a month.
    pub requests_per_million: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AppSyncPrices {
    pub operations_per_million: f64,
    pub connection_minutes_per_million: f64,
    pub max_connection_hours: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LambdaPrices {
    pub requests_per_million: f64,
    pub arm64_gb_second: f64,
    pub x86_64_gb_second: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DynamoDbPrices {
    pub write_units_per_million: f64,
    pub read_units_per_million: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SqsPrices {
    pub requests_per_million: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CloudWatchPrices {
    pub logs_ingested_per_gb: f64,
    pub lambda_platform_log_bytes_per_invocation: f64,
    /// An alarm is billed per metric it evaluates.
    pub alarm_metric_month: f64,
    pub custom_metric_month: f64,
}

/// What the template deploys that has a monthly price of its own.
#[derive(Debug, Clone, Copy)]
pub struct Deployment {
    /// Metrics the template's alarms evaluate (a metric-math alarm bills each).
    pub alarm_metrics: usize,
    /// Custom metrics the functions publish (names; a dimension value makes more).
    pub custom_metrics: usize,
    pub arm64: bool,
}

/// A month of one reference workload, in unit events.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub shape: String,
    pub connections: f64,
    /// Connected minutes per connection in the month.
    pub minutes_per_connection: f64,
    /// Sessions per connection in the month, and how long each lasts (a
    /// service with longer connections reconnects less within one).
    pub sessions_per_connection: f64,
    pub session_hours: f64,
    /// Connection cycles (connect, subscribes, disconnect) in the month, all connections.
    pub cycles: f64,
    pub channels_per_connection: f64,
    /// Pings in the month, all connections.
    pub pings: f64,
    /// Producer messages and the subscribers each reaches.
    pub messages: f64,
    pub subscribers_per_message: f64,
    /// Client publishes to a room of [`ROOM_SIZE`].
    pub room_publishes: f64,
    /// Sweep runs and the connections each lists.
    pub sweeps: f64,
    pub connections_per_sweep: f64,
}

pub const MINUTES_PER_MONTH: f64 = 30.0 * 24.0 * 60.0;
/// API Gateway closes every connection after two hours.
pub const MAX_CONNECTION_MINUTES: f64 = 120.0;
/// The sweep's schedule, `rate(1 minute)`.
pub const SWEEPS_PER_MONTH: f64 = MINUTES_PER_MONTH;

impl Workload {
    /// Pings a connection sends in one two-hour cycle when it sends nothing
    /// else: one per quiet period.
    pub fn quiet_pings_per_cycle(keep_alive_seconds: f64) -> f64 {
        ((MAX_CONNECTION_MINUTES * 60.0 - 1.0) / keep_alive_seconds).floor()
    }

    pub fn reference(keep_alive_seconds: f64) -> Vec<Workload> {
        let pings = Self::quiet_pings_per_cycle(keep_alive_seconds);
        let connections = 10_000.0;
        let full_month_cycles = connections * MINUTES_PER_MONTH / MAX_CONNECTION_MINUTES;
        let chat_minutes = 8.0 * 60.0 * 30.0;
        let chat_cycles = connections * chat_minutes / MAX_CONNECTION_MINUTES;
        vec![
            Workload {
                name: "idle",
                shape: format!(
                    "10,000 connections x 30 days, 3 channels each, default client settings \
                     (a keep-alive after {keep_alive_seconds} s quiet: {pings} per 2-hour connection); \
                     API Gateway closes each after 2 h and the client reconnects and resubscribes"
                ),
                connections,
                minutes_per_connection: MINUTES_PER_MONTH,
                sessions_per_connection: 1.0,
                session_hours: 720.0,
                cycles: full_month_cycles,
                channels_per_connection: 3.0,
                pings: full_month_cycles * pings,
                messages: 0.0,
                subscribers_per_message: 0.0,
                room_publishes: 0.0,
                sweeps: SWEEPS_PER_MONTH,
                connections_per_sweep: connections,
            },
            Workload {
                name: "chat",
                shape: "10,000 connections in 1,000 rooms of 10, connected 8 h a day for 30 days, \
                        each member publishing one message a minute (so no keep-alive is needed); \
                        every message reaches its whole room, the sender included"
                    .to_owned(),
                connections,
                minutes_per_connection: chat_minutes,
                sessions_per_connection: 30.0,
                session_hours: 8.0,
                cycles: chat_cycles,
                channels_per_connection: 1.0,
                pings: 0.0,
                messages: 0.0,
                subscribers_per_message: 0.0,
                room_publishes: connections * chat_minutes,
                sweeps: SWEEPS_PER_MONTH,
                connections_per_sweep: connections / 3.0,
            },
            Workload {
                name: "feed",
                shape: format!(
                    "10,000 connections on one channel x 30 days, a producer writing one message a second; \
                     clients only receive, so each keeps its line open with {pings} keep-alives per 2-hour connection"
                ),
                connections,
                minutes_per_connection: MINUTES_PER_MONTH,
                sessions_per_connection: 1.0,
                session_hours: 720.0,
                cycles: full_month_cycles,
                channels_per_connection: 1.0,
                pings: full_month_cycles * pings,
                messages: MINUTES_PER_MONTH * 60.0,
                subscribers_per_message: connections,
                room_publishes: 0.0,
                sweeps: SWEEPS_PER_MONTH,
                connections_per_sweep: connections,
            },
        ]
    }

    /// Everything the month uses, from the measured unit events.
    pub fn usage(&self, units: &UnitCosts) -> Usage {
        let cycle = units
            .connect
            .plus(&units.resubscribe.times(self.channels_per_connection))
            .plus(&units.disconnect)
            .plus(&units.disconnect_per_channel.times(self.channels_per_connection - 1.0));
        let message = units
            .message_fixed
            .plus(&units.message_per_subscriber.times(self.subscribers_per_message));
        let sweep = units
            .sweep_fixed
            .plus(&units.sweep_per_connection.times(self.connections_per_sweep));
        cycle
            .times(self.cycles)
            .plus(&units.ping.times(self.pings))
            .plus(&message.times(self.messages))
            .plus(&units.room_publish.times(self.room_publishes))
            .plus(&sweep.times(self.sweeps))
    }
}

/// One workload's monthly bill, by service.
#[derive(Debug, Clone, Default)]
pub struct Bill {
    pub api_gateway: f64,
    pub lambda: f64,
    pub dynamodb: f64,
    pub sqs: f64,
    pub cloudwatch: f64,
    pub appsync_events: f64,
}

impl Bill {
    pub fn total(&self) -> f64 {
        self.api_gateway + self.overhead()
    }

    /// What Airwave adds to API Gateway's own bill.
    pub fn overhead(&self) -> f64 {
        self.lambda + self.dynamodb + self.sqs + self.cloudwatch
    }

    pub fn overhead_ratio(&self) -> f64 {
        self.overhead() / self.api_gateway
    }
}

const MILLION: f64 = 1_000_000.0;

pub fn price(workload: &Workload, usage: &Usage, prices: &Prices, deployment: Deployment) -> Bill {
    let connection_minutes = workload.connections * workload.minutes_per_connection;
    let gb_second = if deployment.arm64 {
        prices.lambda.arm64_gb_second
    } else {
        prices.lambda.x86_64_gb_second
    };
    let log_bytes =
        usage.log_bytes + usage.lambda_invocations * prices.cloudwatch.lambda_platform_log_bytes_per_invocation;
    // AppSync Events: an operation per connect, subscribe, inbound publish
    // and outbound delivery; its own keep-alives are not billed. Its
    // connections last up to 24 h, so fewer reconnects within a session.
    let appsync_cycles = workload.connections
        * workload.sessions_per_connection
        * (workload.session_hours / prices.appsync_events.max_connection_hours).ceil();
    let appsync_operations = appsync_cycles * (1.0 + workload.channels_per_connection)
        + workload.messages * (1.0 + workload.subscribers_per_message)
        + workload.room_publishes * (1.0 + ROOM_SIZE);
    // API Gateway's messages: the first billion of the month at one rate, the rest at a lower one.
    let messages = usage.messages_in + usage.messages_out;
    let first_tier = messages.min(1_000.0 * MILLION);
    let api_gateway_messages = first_tier / MILLION * prices.api_gateway.messages_per_million
        + (messages - first_tier) / MILLION * prices.api_gateway.messages_per_million_over_billion;
    Bill {
        api_gateway: api_gateway_messages
            + connection_minutes / MILLION * prices.api_gateway.connection_minutes_per_million
            + usage.http_requests / MILLION * prices.http_api.requests_per_million,
        lambda: usage.lambda_invocations / MILLION * prices.lambda.requests_per_million
            + usage.lambda_gb_seconds * gb_second,
        dynamodb: usage.write_units / MILLION * prices.dynamodb.write_units_per_million
            + usage.read_units / MILLION * prices.dynamodb.read_units_per_million,
        // The failure queue only receives poison records and given-up batches: none in a healthy month.
        sqs: 0.0 * prices.sqs.requests_per_million,
        cloudwatch: log_bytes / 1e9 * prices.cloudwatch.logs_ingested_per_gb
            + deployment.alarm_metrics as f64 * prices.cloudwatch.alarm_metric_month
            + deployment.custom_metrics as f64 * prices.cloudwatch.custom_metric_month,
        appsync_events: appsync_operations / MILLION * prices.appsync_events.operations_per_million
            + connection_minutes / MILLION * prices.appsync_events.connection_minutes_per_million,
    }
}

/// The table `make cost` prints.
pub fn report(units: &UnitCosts, prices: &Prices, deployment: Deployment, keep_alive_seconds: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Prices: {} list prices checked {} (infra/cost/prices.json).",
        prices.region, prices.checked
    );
    let _ = writeln!(out, "\nPer operation, measured on the local stack:\n");
    let _ = writeln!(
        out,
        "| operation | write units | read units | Lambda invocations | Lambda GB-s | API Gateway messages | HTTP API requests |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    let rows: [(&str, &Usage); 11] = [
        ("connect", &units.connect),
        ("subscribe", &units.subscribe),
        ("subscribe with recovery (`since`)", &units.resubscribe),
        ("ping", &units.ping),
        ("disconnect, on one channel (and the reaper's check)", &units.disconnect),
        ("disconnect, each further channel", &units.disconnect_per_channel),
        ("producer message, fixed part", &units.message_fixed),
        ("producer message, per subscriber", &units.message_per_subscriber),
        ("client publish to a room of 10", &units.room_publish),
        (
            "HTTP publish of one message (server key), fixed part",
            &units.http_publish,
        ),
        ("HTTP fallback poll of 3 channels, nothing new", &units.idle_poll),
    ];
    for (name, usage) in rows {
        let _ = writeln!(
            out,
            "| {name} | {:.2} | {:.2} | {:.2} | {:.5} | {:.2} | {:.2} |",
            usage.write_units,
            usage.read_units,
            usage.lambda_invocations,
            usage.lambda_gb_seconds,
            usage.messages_in + usage.messages_out,
            usage.http_requests
        );
    }
    let _ = writeln!(
        out,
        "\nSweep (every minute): {:.3} read units per 1,000 connections listed.",
        units.sweep_per_connection.read_units * 1_000.0
    );
    let mut bills = BTreeMap::new();
    let _ = writeln!(out, "\nA month (30 days), in US dollars:\n");
    let _ = writeln!(
        out,
        "| workload | API Gateway | Lambda | DynamoDB | SQS | CloudWatch | Airwave total | overhead ratio | AppSync Events |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for workload in Workload::reference(keep_alive_seconds) {
        let usage = workload.usage(units);
        let bill = price(&workload, &usage, prices, deployment);
        let share = |part: f64| 100.0 * part / bill.total();
        let _ = writeln!(
            out,
            "| {} | {:.2} ({:.0} %) | {:.2} ({:.0} %) | {:.2} ({:.0} %) | {:.2} | {:.2} ({:.0} %) | {:.2} | {:.3} | {:.2} |",
            workload.name,
            bill.api_gateway,
            share(bill.api_gateway),
            bill.lambda,
            share(bill.lambda),
            bill.dynamodb,
            share(bill.dynamodb),
            bill.sqs,
            bill.cloudwatch,
            share(bill.cloudwatch),
            bill.total(),
            bill.overhead_ratio(),
            bill.appsync_events,
        );
        bills.insert(workload.name, (workload, bill));
    }
    if let Some((idle, bill)) = bills.get("idle") {
        let held = Workload {
            cycles: 0.0,
            ..idle.clone()
        };
        let held_bill = price(&held, &held.usage(units), prices, deployment);
        let cycle_overhead = bill.overhead() - held_bill.overhead();
        let _ = writeln!(
            out,
            "\nidle, split: holding the sockets open (keep-alives, the sweep, alarms) adds ${:.2} to API Gateway's \
             ${:.2} (ratio {:.3}); the reconnect API Gateway forces every 2 hours (a connect, {} resubscribes and a \
             disconnect, {:.0} cycles) adds ${:.2}.",
            held_bill.overhead(),
            held_bill.api_gateway,
            held_bill.overhead_ratio(),
            idle.channels_per_connection,
            idle.cycles,
            cycle_overhead,
        );
    }
    if let Some((idle, bill)) = bills.get("idle") {
        let _ = writeln!(out, "\n{}", idle_clients(idle, bill, units, prices, deployment));
    }
    let _ = writeln!(
        out,
        "\nAPI Gateway is the floor of this architecture: its column is what the sockets cost with no \
         Lambda and no table at all. Overhead ratio: (Lambda + DynamoDB + SQS + CloudWatch) / API Gateway."
    );
    let _ = writeln!(out, "\nWorkloads:");
    for (workload, _) in bills.values() {
        let _ = writeln!(out, "- {}: {}.", workload.name, workload.shape);
    }
    let _ = writeln!(
        out,
        "- every workload: the sweep runs every minute; CloudWatch adds the alarms' {} metrics, at least {} \
         custom metrics and Lambda's own log lines ({} bytes an invocation).",
        deployment.alarm_metrics, deployment.custom_metrics, prices.cloudwatch.lambda_platform_log_bytes_per_invocation
    );
    let _ = writeln!(
        out,
        "- AppSync Events: one operation per connect, subscribe, inbound message and delivery; its \
         keep-alives unbilled; connections of up to {} h.",
        prices.appsync_events.max_connection_hours
    );
    out
}

/// One idle client for a month: on a WebSocket (the idle workload, per
/// connection), and on the HTTP fallback (polling its channels at the
/// slowest rate, and trying a WebSocket again every minute: a connect, a
/// ping and a disconnect that fail where WebSockets are blocked, but are
/// counted here as if each got through, the dearer case).
fn idle_clients(idle: &Workload, bill: &Bill, units: &UnitCosts, prices: &Prices, deployment: Deployment) -> String {
    let seconds = MINUTES_PER_MONTH * 60.0;
    let polls = seconds / FALLBACK_POLL_SECONDS;
    let probes = seconds / FALLBACK_PROBE_SECONDS;
    let probe = units.connect.plus(&units.ping).plus(&units.disconnect);
    let usage = units.idle_poll.times(polls).plus(&probe.times(probes));
    let one_client = Workload {
        connections: 0.0,
        ..idle.clone()
    };
    let fallback = price(
        &one_client,
        &usage,
        prices,
        Deployment {
            alarm_metrics: 0,
            custom_metrics: 0,
            ..deployment
        },
    );
    let fixed = deployment.alarm_metrics as f64 * prices.cloudwatch.alarm_metric_month
        + deployment.custom_metrics as f64 * prices.cloudwatch.custom_metric_month;
    let per_socket = (bill.total() - fixed) / idle.connections;
    format!(
        "One idle client, a month, on {FALLBACK_CHANNELS} channels (the stack's fixed CloudWatch price left out): \
         on a WebSocket ${per_socket:.4}; on the HTTP fallback ${:.4} ({polls:.0} polls, one every \
         {FALLBACK_POLL_SECONDS} s: API Gateway ${:.4}, Lambda ${:.4}, DynamoDB ${:.4}, CloudWatch Logs ${:.4}; with a WebSocket tried every \
         {FALLBACK_PROBE_SECONDS} s), {:.0} times as much.",
        fallback.total(),
        fallback.api_gateway,
        fallback.lambda,
        fallback.dynamodb,
        fallback.cloudwatch,
        fallback.total() / per_socket,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Prices {
        let text = include_str!("../../infra/cost/prices.json");
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_month_of_idle_sockets_on_api_gateway_alone_matches_the_price_list() {
        let idle = Workload::reference(540.0).remove(0);
        assert_eq!(Workload::quiet_pings_per_cycle(540.0), 13.0);
        let ping = Usage {
            messages_in: 1.0,
            messages_out: 1.0,
            ..Usage::default()
        };
        let units = UnitCosts {
            ping,
            ..UnitCosts::default()
        };
        let bill = price(
            &idle,
            &idle.usage(&units),
            &prices(),
            Deployment {
                alarm_metrics: 0,
                custom_metrics: 0,
                arm64: true,
            },
        );
        // 432 M connection minutes at $0.25 per million, and 2 x 13 x 3.6 M messages at $1 per million.
        assert!((bill.api_gateway - (108.0 + 93.6)).abs() < 0.01, "{bill:?}");
        assert_eq!(bill.overhead(), 0.0);
        // AppSync Events: 432 M minutes at $0.08, plus a connect and 3 subscribes a day.
        assert!((bill.appsync_events - (34.56 + 1.2)).abs() < 0.01, "{bill:?}");
    }

    #[test]
    fn messages_past_a_billion_a_month_cost_less() {
        let feed = Workload::reference(540.0).remove(2);
        let usage = Usage {
            messages_out: 3_000.0 * MILLION,
            ..Usage::default()
        };
        let deployment = Deployment {
            alarm_metrics: 0,
            custom_metrics: 0,
            arm64: true,
        };
        let bill = price(&feed, &usage, &prices(), deployment);
        // 1,000 M at $1.00 and 2,000 M at $0.80, plus 432 M connection minutes at $0.25.
        assert!(
            (bill.api_gateway - (1_000.0 + 1_600.0 + 108.0)).abs() < 0.01,
            "{bill:?}"
        );
    }

    #[test]
    fn usage_scales_each_unit_by_its_count() {
        let units = UnitCosts {
            connect: Usage {
                write_units: 2.0,
                ..Usage::default()
            },
            resubscribe: Usage {
                write_units: 1.0,
                ..Usage::default()
            },
            ..UnitCosts::default()
        };
        let idle = Workload::reference(540.0).remove(0);
        assert_eq!(idle.usage(&units).write_units, idle.cycles * 5.0);
    }
}
