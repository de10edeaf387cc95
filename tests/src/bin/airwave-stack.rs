//! `airwave-stack`: the whole local stack in one process (gateway, real
//! handlers in-process, tables from template.yaml) on fresh tables, for tests
//! that drive it from outside Rust, such as the browser tests. Needs the
//! DynamoDB-compatible server `infra/with-moto.sh` starts.
//!
//! Prints one JSON line when it is ready (`http` is the HTTP API's URL): `{"url": "ws://…", "management":
//! "http://…", "messages_table": "…", "control": "http://…"}`, then serves
//! until stdin closes or it gets SIGTERM / Ctrl-C.
//!
//! `GET {control}/connections` answers `{"open": n, "ids": [...]}`: the sockets
//! the gateway holds open and the connection records in the table, so a test
//! can count connections and close one through the Management API.
//!
//! Options (environment):
//! - `AIRWAVE_STACK_PORT` (default: a free port);
//! - `AIRWAVE_STACK_IDLE_TIMEOUT_SECS` (default 600);
//! - `AIRWAVE_STACK_SECRET`: turns HS256 token authentication on;
//! - `AIRWAVE_STACK_MAX_CONNECTIONS_PER_USER`: the per-user cap (default 0,
//!   no cap); needs the secret, since it counts users;
//! - `AIRWAVE_STACK_USER_CAP_MODE`: what a full per-user cap does, `refuse`
//!   (the default) or `evict_oldest` (needs a cap);
//! - `AIRWAVE_STACK_PUBLISH_RATE_LIMIT`: client publishes per connection, per
//!   user and per IP per 10 s (default 0, no limit: a test's publisher stands
//!   in for a backend and sends everything through one connection, and every
//!   client of the stack shares 127.0.0.1).
//!
//! Client publishing, also from connections without a token (a test's
//! publisher on a stack without authentication), and the stats action are on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airwave_gateway::GatewayOptions;
use airwave_shared::config::{JwtSecret, UserCapMode};
use airwave_tests::stack::LocalStack;
use airwave_tests::TestTables;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn number(name: &str, default: u64) -> Result<u64, String> {
    match setting(name) {
        None => Ok(default),
        Some(value) => value
            .parse()
            .map_err(|_| format!("{name} must be a whole number, got {value:?}")),
    }
}

/// One request per TCP connection, read up to the end of its headers: enough
/// for the tests' `fetch` calls, and no HTTP server dependency.
async fn serve_control(listener: TcpListener, stack: Arc<LocalStack>) {
    while let Ok((mut socket, _)) = listener.accept().await {
        let stack = stack.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") && request.len() < 16 * 1024 {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => request.extend_from_slice(&chunk[..read]),
                }
            }
            let line = String::from_utf8_lossy(&request)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            let (status, body) = if line.starts_with("GET /connections ") {
                let ids = stack.tables.stored_connection_ids().await;
                let body = serde_json::json!({"open": stack.gateway.connection_count(), "ids": ids});
                ("200 OK", body.to_string())
            } else {
                ("404 Not Found", "{}".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\naccess-control-allow-origin: *\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

/// The options, read from the environment and checked together.
struct Settings {
    port: u16,
    idle_timeout_secs: u64,
    secret: Option<String>,
    max_connections_per_user: u64,
    user_cap_mode: UserCapMode,
    publish_rate_limit: u64,
}

fn settings() -> Result<Settings, String> {
    let port = number("AIRWAVE_STACK_PORT", 0)?;
    let port = u16::try_from(port).map_err(|_| format!("AIRWAVE_STACK_PORT must be a port number, got {port}"))?;
    let user_cap_mode = match setting("AIRWAVE_STACK_USER_CAP_MODE").as_deref() {
        None | Some("refuse") => UserCapMode::Refuse,
        Some("evict_oldest") => UserCapMode::EvictOldest,
        Some(other) => {
            return Err(format!(
                "AIRWAVE_STACK_USER_CAP_MODE must be refuse or evict_oldest, got {other:?}"
            ))
        }
    };
    let settings = Settings {
        port,
        idle_timeout_secs: number("AIRWAVE_STACK_IDLE_TIMEOUT_SECS", 600)?,
        secret: setting("AIRWAVE_STACK_SECRET"),
        max_connections_per_user: number("AIRWAVE_STACK_MAX_CONNECTIONS_PER_USER", 0)?,
        user_cap_mode,
        publish_rate_limit: number("AIRWAVE_STACK_PUBLISH_RATE_LIMIT", 0)?,
    };
    // As the connect function refuses to start with them: a cap that silently
    // does nothing would let a test pass for the wrong reason.
    if settings.max_connections_per_user > 0 && settings.secret.is_none() {
        return Err("AIRWAVE_STACK_MAX_CONNECTIONS_PER_USER needs AIRWAVE_STACK_SECRET (the cap counts users)".into());
    }
    if settings.user_cap_mode == UserCapMode::EvictOldest && settings.max_connections_per_user == 0 {
        return Err("AIRWAVE_STACK_USER_CAP_MODE=evict_oldest needs AIRWAVE_STACK_MAX_CONNECTIONS_PER_USER".into());
    }
    Ok(settings)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("airwave-stack: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let tables = TestTables::create_with(|config| {
        config.allow_client_publish = true;
        config.allow_anonymous_publish = true;
        config.allow_stats = true;
        config.admission.attempts_per_ip = 0;
        config.jwt_secret = settings.secret.map(JwtSecret::new);
        config.admission.max_connections_per_user = settings.max_connections_per_user;
        config.user_cap_mode = settings.user_cap_mode;
        config.publish_rate.limit = settings.publish_rate_limit;
        config.publish_rate.per_user = settings.publish_rate_limit;
        config.publish_rate.per_ip = settings.publish_rate_limit;
    })
    .await;
    let options = GatewayOptions {
        address: SocketAddr::from(([127, 0, 0, 1], settings.port)),
        idle_timeout: Duration::from_secs(settings.idle_timeout_secs),
        ..GatewayOptions::default()
    };
    let stack = Arc::new(LocalStack::start(tables, options).await);
    let control = match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("airwave-stack: cannot listen for the control endpoint: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    let control_url = match control.local_addr() {
        Ok(address) => format!("http://{address}"),
        Err(error) => {
            eprintln!("airwave-stack: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    let control_task = tokio::spawn(serve_control(control, stack.clone()));
    println!(
        "{}",
        serde_json::json!({
            "url": stack.ws_url(),
            "http": stack.gateway.http_url(),
            "management": stack.gateway.management_endpoint(),
            "messages_table": stack.tables.config.messages_table,
            "control": control_url,
        })
    );
    let stdin_closed = async {
        let mut sink = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while stdin.read(&mut sink).await.is_ok_and(|read| read > 0) {}
    };
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            eprintln!("airwave-stack: cannot listen for SIGTERM: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    tokio::select! {
        () = stdin_closed => {}
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    control_task.abort();
    let _ = control_task.await;
    // The control task held the only other reference; once it is gone the
    // stack is ours alone to shut down cleanly.
    match Arc::try_unwrap(stack) {
        Ok(stack) => stack.shutdown().await,
        Err(_) => eprintln!("airwave-stack: the stack is still in use; not shut down cleanly"),
    }
    std::process::ExitCode::SUCCESS
}
