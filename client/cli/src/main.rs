//! `airwave`: listen, publish, stats, a smoke test and a fan-out benchmark against an Airwave endpoint.
//! Output goes to stdout; logs go to stderr (`RUST_LOG` adjusts them).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use airwave_cli::bench::{self, BenchConfig};
use airwave_cli::smoke::{self, Publisher, SmokeConfig};
use airwave_client::http::{Credential, HttpMessage, HttpPublisher};
use airwave_client::{Backoff, Client, ClientConfig, Error, ErrorCode, Event, Reply, Request};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Parser)]
#[command(name = "airwave", version, about = "Client for Airwave's WebSocket API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Subscribe and print every message as one JSON line; reconnects when the socket drops.
    Listen {
        /// Endpoint, e.g. wss://ID.execute-api.REGION.amazonaws.com/STAGE
        url: String,
        /// Channel to subscribe to (repeatable); none means broadcasts only.
        #[arg(long = "channel", short = 'c')]
        channels: Vec<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Publish one message and print the reply: over a socket (ws:// or wss://), or over the
    /// HTTP API (http:// or https://, the stack's HttpApiUrl).
    Publish {
        /// Endpoint: ws:// or wss://, or the HTTP API's http:// or https:// URL
        url: String,
        /// Channel to publish to; without it (and without --user) the message goes to every connection.
        #[arg(long, short = 'c')]
        channel: Option<String>,
        /// The message's `data`, as JSON.
        data: String,
        /// HTTP API only: publish to every connection of this user (needs a server key).
        #[arg(long)]
        user: Option<String>,
        /// HTTP API only: the same key publishes once; a repeat answers the first message's id.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// HTTP API only: publish as a server (`Authorization: Key …`) instead of with --token.
        #[arg(long, env = "AIRWAVE_SERVER_KEY", hide_env_values = true)]
        server_key: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Print the server's counters.
    Stats {
        /// Endpoint, ws:// or wss://
        url: String,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Check a deployment end to end: connect, refuse a forged token, subscribe, ping, publish,
    /// deliver, recover.
    /// Stops at the first step that fails, names it and says where to look; exits non-zero.
    Smoke {
        /// Endpoint, ws:// or wss://
        url: String,
        /// A channel the token may subscribe and publish to (default: a fresh `smoke-…` name).
        #[arg(long, short = 'c')]
        channel: Option<String>,
        /// Publish as a producer, by writing to this messages table (the stack's
        /// MessagesTableName output) with the environment's AWS credentials, instead of
        /// from a second connection (which needs AllowClientPublish).
        #[arg(long)]
        messages_table: Option<String>,
        /// How long each step may take.
        #[arg(long, default_value_t = 15)]
        step_timeout_secs: u64,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Open N listeners, publish M messages, report delivery and latency.
    Bench {
        /// Endpoint, ws:// or wss://
        url: String,
        /// Listener connections to open.
        #[arg(long)]
        connections: usize,
        #[arg(long, default_value = "bench")]
        channel: String,
        /// Messages to publish.
        #[arg(long, default_value_t = 10)]
        messages: usize,
        /// Listeners connecting at the same time.
        #[arg(long, default_value_t = 100)]
        connect_concurrency: usize,
        /// How long to wait for every delivery once publishing starts (thousands of
        /// connections on one machine take minutes).
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

#[derive(Debug, Args)]
struct ConnectionArgs {
    /// Sent in the Sec-WebSocket-Protocol header when it is a JWT, else as the `token` query
    /// parameter. When it expires the command stops: a fixed token cannot be renewed.
    #[arg(long, env = "AIRWAVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Seconds without sending anything after which the client pings (API Gateway drops
    /// connections idle for 10 minutes).
    #[arg(
        long,
        alias = "ping-interval-secs",
        default_value_t = 540,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    keep_alive_after_secs: u64,
    /// Connection retries before giving up.
    #[arg(long, default_value_t = 10)]
    max_attempts: u32,
}

impl ConnectionArgs {
    fn config(&self, url: &str) -> Result<ClientConfig, Error> {
        let defaults = Backoff::default();
        let backoff = Backoff::new(defaults.base(), defaults.factor(), defaults.cap(), self.max_attempts);
        let config = ClientConfig::new(url)?
            .with_backoff(backoff)
            .with_keep_alive_after(Duration::from_secs(self.keep_alive_after_secs));
        Ok(match &self.token {
            Some(token) => config.with_token(token),
            None => config,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // RUST_LOG as a level or `target=level` directives; by default warnings,
    // and this client's own progress.
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| {
            Targets::new()
                .with_default(LevelFilter::WARN)
                .with_target("airwave", LevelFilter::INFO)
                .with_target("airwave_cli", LevelFilter::INFO)
                .with_target("airwave_client", LevelFilter::INFO)
        });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .finish()
        .with(filter)
        .init();

    match run(Cli::parse().command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("airwave: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Listen {
            url,
            channels,
            connection,
        } => listen(connection.config(&url)?, &channels).await,
        Command::Publish {
            url,
            channel,
            data,
            user,
            idempotency_key,
            server_key,
            connection,
        } => {
            let data: serde_json::Value = match serde_json::from_str(&data) {
                Ok(data) => data,
                Err(e) => {
                    eprintln!("airwave: DATA_JSON is not valid JSON: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            if url.starts_with("http://") || url.starts_with("https://") {
                let credential = match (server_key, connection.token) {
                    (Some(key), _) => Credential::ServerKey(key),
                    (None, Some(token)) => Credential::Token(token),
                    (None, None) => Credential::None,
                };
                let message = HttpMessage {
                    channel,
                    user,
                    data,
                    idempotency_key,
                };
                let published = HttpPublisher::new(&url, credential)?.publish(&[message]).await?;
                for message in published {
                    let duplicate = if message.duplicate {
                        " (duplicate: published before)"
                    } else {
                        ""
                    };
                    println!("published {}{duplicate}", message.message_id);
                }
                return Ok(ExitCode::SUCCESS);
            }
            if user.is_some() || idempotency_key.is_some() {
                eprintln!("airwave: --user and --idempotency-key need the HTTP API's URL (http:// or https://)");
                return Ok(ExitCode::from(2));
            }
            let (client, _events) = Client::new(connection.config(&url)?);
            let reply = client.request(Request::Publish { channel, data }).await?;
            client.close().await;
            print_reply(&reply, false)
        }
        Command::Stats { url, connection } => {
            let (client, _events) = Client::new(connection.config(&url)?);
            let reply = client.request(Request::Stats).await?;
            client.close().await;
            print_reply(&reply, true)
        }
        Command::Smoke {
            url,
            channel,
            messages_table,
            step_timeout_secs,
            json,
            connection,
        } => {
            let publisher = match messages_table {
                Some(table) => Publisher::table_from_environment(table).await,
                None => Publisher::Client,
            };
            let config = SmokeConfig {
                client: connection.config(&url)?,
                channel: channel.unwrap_or_else(smoke::fresh_channel),
                publisher,
                step_timeout: Duration::from_secs(step_timeout_secs),
            };
            let report = smoke::run(config).await;
            let text = if json {
                serde_json::to_string(&report).map_err(|e| Error::UnexpectedReply(e.to_string()))?
            } else {
                report.to_string()
            };
            out(&text);
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench {
            url,
            connections,
            channel,
            messages,
            connect_concurrency,
            timeout_secs,
            json,
            connection,
        } => {
            let config = BenchConfig {
                client: connection.config(&url)?,
                connections,
                channel,
                messages,
                connect_concurrency,
                timeout: Duration::from_secs(timeout_secs),
                progress: !json,
            };
            let summary = bench::run(config).await?;
            let text = if json {
                serde_json::to_string(&summary).map_err(|e| Error::UnexpectedReply(e.to_string()))?
            } else {
                summary.to_string()
            };
            out(&text);
            Ok(if summary.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

async fn listen(config: ClientConfig, channels: &[String]) -> Result<ExitCode, Error> {
    let (client, mut events) = Client::new(config);
    client.connect().await?;
    for channel in channels {
        client.subscribe(channel).await?;
    }
    tracing::info!(?channels, "listening");
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = &mut interrupted => {
                client.close().await;
                return Ok(ExitCode::SUCCESS);
            }
        };
        match event {
            Some(Event::Message(message)) => match serde_json::to_string(&message) {
                Ok(line) => {
                    if !out(&line) {
                        // stdout is gone (e.g. `| head`): nobody is reading any more.
                        client.close().await;
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "message not printable"),
            },
            Some(Event::Disconnected { reason }) => tracing::warn!(%reason, "disconnected, reconnecting"),
            Some(Event::Reconnected) => tracing::info!("reconnected and resubscribed"),
            Some(Event::RecoveryFailed { channel }) => {
                // On stdout with the messages, so whatever reads them learns of the hole.
                let line = serde_json::json!({"event": "recovery_failed", "channel": channel});
                if !out(&line.to_string()) {
                    client.close().await;
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Some(Event::Evicted { message }) => {
                // On stdout too: what reads the messages learns why they stopped.
                out(&serde_json::json!({"event": "evicted", "message": message}).to_string());
                return Err(Error::Evicted { message });
            }
            Some(Event::Failed(e)) => return Err(e),
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Prints a reply; an error reply is printed too, explained on stderr, and makes the exit code
/// non-zero.
fn print_reply(reply: &Reply, pretty: bool) -> Result<ExitCode, Error> {
    let mut value = serde_json::to_value(reply).map_err(|e| Error::UnexpectedReply(e.to_string()))?;
    // A server older than `as_of` gives none, which reads as 0: leave it out rather than print 1970.
    if matches!(reply, Reply::Stats(stats) if stats.as_of == 0) {
        if let Some(fields) = value.as_object_mut() {
            fields.remove("as_of");
        }
    }
    let text = if pretty {
        serde_json::to_string_pretty(&value)
    } else {
        serde_json::to_string(&value)
    };
    out(&text.map_err(|e| Error::UnexpectedReply(e.to_string()))?);
    let Reply::Error { code, message } = reply else {
        return Ok(ExitCode::SUCCESS);
    };
    let hint = match code {
        ErrorCode::RateLimited => " (over this connection's publish allowance; try again later)",
        ErrorCode::TokenExpired => " (pass a fresh --token)",
        _ => "",
    };
    eprintln!("airwave: refused: {}: {message}{hint}", code.as_str());
    Ok(ExitCode::FAILURE)
}

/// Writes one line to stdout; `false` when stdout is closed (no panic on a broken pipe).
fn out(line: &str) -> bool {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_ok()
}
