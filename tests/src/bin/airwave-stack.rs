//! `airwave-stack`: the whole local stack in one process (gateway, real
//! handlers in-process, tables from template.yaml) on fresh tables, for tests
//! that drive it from outside Rust, such as the browser tests. Needs the
//! DynamoDB-compatible server `infra/with-moto.sh` starts.
//!
//! Prints one JSON line when it is ready: `{"url": "ws://…", "management":
//! "http://…", "messages_table": "…", "control": "http://…"}`, then serves
//! until stdin closes or it gets SIGTERM / Ctrl-C.
//!
//! `GET {control}/connections` answers `{"open": n, "ids": [...]}`: the sockets
//! the gateway holds open and the connection records in the table, so a test
//! can count connections and close one through the Management API.
//!
//! Options (environment): `AIRWAVE_STACK_PORT` (default: a free port),
//! `AIRWAVE_STACK_IDLE_TIMEOUT_SECS`, `AIRWAVE_STACK_SECRET` (turns token
//! authentication on). Client publishing and the stats action are on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airwave_gateway::GatewayOptions;
use airwave_shared::config::JwtSecret;
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let port = number("AIRWAVE_STACK_PORT", 0).and_then(|port| {
        u16::try_from(port).map_err(|_| format!("AIRWAVE_STACK_PORT must be a port number, got {port}"))
    });
    let idle = number("AIRWAVE_STACK_IDLE_TIMEOUT_SECS", 600);
    let (port, idle) = match (port, idle) {
        (Ok(port), Ok(idle)) => (port, idle),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("airwave-stack: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let secret = setting("AIRWAVE_STACK_SECRET");
    let tables = TestTables::create_with(|config| {
        config.allow_client_publish = true;
        config.allow_stats = true;
        config.admission.attempts_per_ip = 0;
        config.jwt_secret = secret.map(JwtSecret::new);
    })
    .await;
    let options = GatewayOptions {
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        idle_timeout: Duration::from_secs(idle),
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
