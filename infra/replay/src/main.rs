//! `airwave-replay`: replays the stream failure queue into the messages table
//! (see the crate documentation and the README's "Replaying the failure queue").
//!
//! Exit status: 0 when every message handled was replayed (or, with
//! `--dry-run`, listed), 2 when some stay in the queue, 1 when the queue could
//! not be read.

use std::process::ExitCode;
use std::time::Duration;

use airwave_replay::{replay, Clients, Outcome, ReplayOptions};
use airwave_shared::config::AwsTimeouts;
use clap::Parser;

/// Replays the stream failure queue: poison records and the batches Lambda
/// gave up on are written back to the messages table, which broadcasts them
/// again; a queue message is deleted only once its items are written back.
#[derive(Debug, Parser)]
#[command(name = "airwave-replay", version)]
struct Args {
    /// The failure queue (the stack's output StreamFailureQueueUrl).
    #[arg(long, env = "AIRWAVE_FAILURE_QUEUE_URL")]
    queue_url: String,
    /// The messages table (the stack's output MessagesTableName).
    #[arg(long, env = "AIRWAVE_MESSAGES_TABLE")]
    messages_table: String,
    /// List what would be replayed; write and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Handle at most this many queue messages.
    #[arg(long, value_name = "N")]
    max: Option<usize>,
    /// One endpoint for SQS, DynamoDB and DynamoDB Streams (a local server,
    /// such as `make dev`'s http://127.0.0.1:8000); AWS's by default.
    #[arg(long)]
    endpoint_url: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    let mut loader = airwave_shared::clients::sdk_config_loader(&AwsTimeouts::default());
    if let Some(endpoint) = &args.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let clients = Clients::new(&loader.load().await);
    let options = ReplayOptions {
        dry_run: args.dry_run,
        max: args.max,
        wait: Duration::from_secs(1),
        ..ReplayOptions::new(&args.queue_url, &args.messages_table)
    };
    let report = match replay(&clients, &options).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("airwave-replay: {error}");
            return ExitCode::FAILURE;
        }
    };
    for entry in &report.entries {
        let (verdict, detail) = match &entry.outcome {
            Outcome::Replayed => ("replayed", format!("wrote back {}", entry.message_ids.join(", "))),
            Outcome::WouldReplay => (
                "would replay",
                format!("would write back {}", entry.message_ids.join(", ")),
            ),
            Outcome::Kept(reason) => ("stays", reason.clone()),
        };
        println!("{verdict:<12} {}  {}", entry.queue_message_id, entry.summary);
        println!("{:<12} {detail}", "");
    }
    let kept = report.kept().count();
    println!(
        "{} queue message(s): {} {}, {kept} stay in the queue",
        report.entries.len(),
        report.entries.len() - kept,
        if args.dry_run { "would be replayed" } else { "replayed" },
    );
    if kept > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Errors (and the replay's warnings) on stderr; `RUST_LOG` as a level or
/// `target=level` directives.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| {
            // The SDK's own warnings (no instance metadata on a laptop, say)
            // only repeat what a failed call reports.
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing_subscriber::filter::LevelFilter::ERROR)
                .with_target("airwave_replay", tracing_subscriber::filter::LevelFilter::WARN)
        });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .finish()
        .with(filter)
        .init();
}
