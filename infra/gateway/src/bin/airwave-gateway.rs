//! `airwave-gateway`: the local API Gateway WebSocket API in front of the
//! functions `cargo lambda watch` serves, read from `template.yaml`.
//!
//! By hand, from the repository root, with moto's server on port 8000:
//!
//! ```text
//! cargo run -q -p airwave-gateway -- --print-env > .local/functions.env
//! AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1 \
//!   AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:8000 \
//!   cargo lambda watch --invoke-address 127.0.0.1 --invoke-port 9000 --env-file .local/functions.env
//! cargo run -p airwave-gateway -- --create-tables      # in another terminal
//! npx wscat -c ws://127.0.0.1:3001/local                # then {"action":"ping"}
//! ```
//!
//! The env file gives the functions the local table names, the local queues'
//! URLs (moto's server serves SQS on the DynamoDB port; the functions reach it
//! with `AWS_ENDPOINT_URL_SQS`) and the gateway's Management API endpoint
//! (which the stream-processor posts to).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use airwave_gateway::queues::create_queues;
use airwave_gateway::streams::RunningPoller;
use airwave_gateway::tables::create_tables;
use airwave_gateway::{
    Gateway, GatewayError, GatewayOptions, HttpInvoker, LocalNames, ScheduleOptions, ScheduleRunner, StackModel,
    StartingPosition, StreamOptions, StreamPoller,
};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Position {
    Latest,
    TrimHorizon,
}

/// A local API Gateway WebSocket API driven by template.yaml.
#[derive(Debug, Parser)]
#[command(name = "airwave-gateway", version)]
struct Args {
    /// The SAM template to read routes, tables and stream mappings from.
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port for WebSocket clients and the Management API.
    #[arg(long, default_value_t = 3001)]
    port: u16,
    /// Stage name in the URLs.
    #[arg(long, default_value = "local")]
    stage: String,
    /// The DynamoDB-compatible server (also serves DynamoDB Streams, and SQS:
    /// the template's queues are there).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    dynamodb_endpoint: String,
    /// Where `cargo lambda watch` serves the functions.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    invoke_address: String,
    /// Create the template's tables and queues first (existing ones are left alone).
    #[arg(long)]
    create_tables: bool,
    /// Do not poll the DynamoDB streams mapped to functions.
    #[arg(long)]
    no_streams: bool,
    /// Do not run the functions' Schedule events.
    #[arg(long)]
    no_schedules: bool,
    /// Run every Schedule event at this period instead of its own.
    #[arg(long)]
    schedule_period_secs: Option<u64>,
    /// Where stream polling starts (default: each mapping's StartingPosition).
    #[arg(long, value_enum)]
    stream_start: Option<Position>,
    /// Local stack name: tables are named `{stack}-{name}` (see LocalNames).
    #[arg(long, default_value = "airwave")]
    stack_name: String,
    /// Close connections that sent nothing for this long.
    #[arg(long, default_value_t = 600)]
    idle_timeout_secs: u64,
    /// Close every connection after this long.
    #[arg(long, default_value_t = 7200)]
    max_duration_secs: u64,
    /// The account's request quota over the Management API, per second
    /// (429 beyond it, as API Gateway answers); 0 for none.
    #[arg(long, default_value_t = 10_000.0)]
    management_quota_per_second: f64,
    /// The quota's burst: requests that may arrive at once.
    #[arg(long, default_value_t = 5_000.0)]
    management_quota_burst: f64,
    /// Print each function's environment with local table names and endpoint
    /// (KEY=VALUE lines, for `cargo lambda watch --env-file`) and exit.
    #[arg(long)]
    print_env: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "plain")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "airwave-gateway failed");
            eprintln!("airwave-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // RUST_LOG as a level or `target=level` directives, default `info`.
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing_subscriber::filter::LevelFilter::INFO)
        });
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.finish().with(filter).init(),
        LogFormat::Json => builder.json().finish().with(filter).init(),
    }
}

async fn run(args: Args) -> Result<(), GatewayError> {
    let model = StackModel::from_path(&args.template)?;
    let names = LocalNames::new(&args.stack_name).with_queue_endpoint(&args.dynamodb_endpoint);
    let address = SocketAddr::new(args.host, args.port);
    let endpoint = format!("http://{address}/{}", args.stage);

    if args.print_env {
        print_environment(&model, &names, &endpoint)?;
        return Ok(());
    }
    let mut stop = StopSignals::install();

    let invoker = Arc::new(HttpInvoker::new(&args.invoke_address)?);
    let needs_dynamodb = args.create_tables || (!args.no_streams && !model.stream_mappings.is_empty());
    let clients = if needs_dynamodb {
        Some(clients(&args.dynamodb_endpoint).await)
    } else {
        None
    };
    if let (true, Some(clients)) = (args.create_tables, &clients) {
        for table in create_tables(&clients.dynamodb, &model, &names).await? {
            tracing::info!(logical_id = %table.logical_id, table = %table.name, created = table.created, "table ready");
        }
        for queue in create_queues(&clients.sqs, &model, &names).await? {
            tracing::info!(logical_id = %queue.logical_id, queue = %queue.url, created = queue.created, "queue ready");
        }
    }

    let options = GatewayOptions {
        address,
        stage: args.stage.clone(),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        max_connection_duration: Duration::from_secs(args.max_duration_secs),
        // A burst under one request (or not a number) would refuse every request.
        management_quota: (args.management_quota_per_second > 0.0).then_some(airwave_local::Quota {
            per_second: args.management_quota_per_second,
            burst: if args.management_quota_burst >= 1.0 {
                args.management_quota_burst
            } else {
                1.0
            },
        }),
        ..GatewayOptions::default()
    };
    let gateway = Gateway::start(options, model.clone(), invoker.clone()).await?;
    let schedules = (!args.no_schedules).then(|| {
        ScheduleRunner::start(
            &model.schedules,
            invoker.clone(),
            ScheduleOptions {
                period: args.schedule_period_secs.map(Duration::from_secs),
            },
        )
    });

    let mut poller: Option<RunningPoller> = None;
    if let (false, Some(clients)) = (args.no_streams, &clients) {
        let stream_options = StreamOptions {
            sqs: Some(clients.sqs.clone()),
            starting_position: args.stream_start.map(|position| match position {
                Position::Latest => StartingPosition::Latest,
                Position::TrimHorizon => StartingPosition::TrimHorizon,
            }),
            ..StreamOptions::default()
        };
        poller = Some(
            StreamPoller::start(
                &clients.dynamodb,
                &clients.streams,
                &model,
                &names,
                invoker,
                stream_options,
            )
            .await?,
        );
    }

    println!();
    println!("  WebSocket:       {}", gateway.ws_url());
    println!("  Management API:  {}", gateway.management_endpoint());
    for (key, route) in &model.routes {
        println!(
            "  route {key:<12} -> {}",
            route.function().unwrap_or("(mock: API Gateway answers)")
        );
    }
    for schedule in &model.schedules {
        println!(
            "  schedule {} -> {} every {:?}",
            schedule.name, schedule.function, schedule.period
        );
    }
    for mapping in &model.stream_mappings {
        println!(
            "  stream of {} -> {} (batch size {})",
            mapping.table_logical_id, mapping.function, mapping.batch_size
        );
    }
    println!(
        "  Functions need AIRWAVE_MANAGEMENT_ENDPOINT={}",
        gateway.management_endpoint()
    );
    println!();

    stop.received().await;
    if let Some(poller) = poller {
        poller.shutdown().await;
    }
    if let Some(schedules) = schedules {
        schedules.shutdown().await;
    }
    gateway.shutdown().await;
    Ok(())
}

/// What stops the gateway: Ctrl-C, or SIGTERM (what `kill` and process managers
/// send). Either way the sockets get a 1001 close and `$disconnect` runs for each
/// before exiting. Installed before the port opens, so a SIGTERM sent as soon as
/// the gateway answers still stops it gracefully.
struct StopSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let terminate = signal(SignalKind::terminate())
                .inspect_err(|error| tracing::warn!(error = %error, "cannot wait for SIGTERM; Ctrl-C only"))
                .ok();
            StopSignals { terminate }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    async fn received(&mut self) {
        #[cfg(unix)]
        let terminate = async {
            match self.terminate.as_mut() {
                Some(terminate) => {
                    terminate.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            result = tokio::signal::ctrl_c() => {
                if let Err(error) = result {
                    tracing::error!(error = %error, "cannot wait for Ctrl-C; stopping");
                }
            }
            _ = terminate => {}
        }
    }
}

/// Clients of the local server: DynamoDB, its streams, and SQS.
struct Clients {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    sqs: aws_sdk_sqs::Client,
}

async fn clients(endpoint: &str) -> Clients {
    // Read here rather than through the SDK's chain, which would ask the EC2
    // metadata service first and stall for it on a laptop.
    let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let mut loader = aws_config::from_env()
        .region(aws_config::Region::new(region))
        .endpoint_url(endpoint);
    // A local server accepts any credentials, but the SDK signs with some.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() && std::env::var_os("AWS_PROFILE").is_none() {
        loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local",
            "local",
            None,
            None,
            "airwave-gateway",
        ));
    }
    let config = loader.load().await;
    Clients {
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
        streams: aws_sdk_dynamodbstreams::Client::new(&config),
        sqs: aws_sdk_sqs::Client::new(&config),
    }
}

fn print_environment(model: &StackModel, names: &LocalNames, endpoint: &str) -> Result<(), GatewayError> {
    let mut merged = std::collections::BTreeMap::new();
    for function in model.functions.values() {
        let Some(binary) = &function.binary else { continue };
        for (name, value) in model.function_environment(binary, names, endpoint)? {
            if let Some(previous) = merged.insert(name.clone(), value.clone()) {
                if previous != value {
                    // One env file serves every function under cargo lambda watch.
                    tracing::warn!(variable = %name, %previous, %value, "functions disagree on a variable; the last one is printed");
                }
            }
        }
    }
    for (name, value) in merged {
        println!("{name}={value}");
    }
    Ok(())
}
