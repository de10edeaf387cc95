//! The `airwave` binary and the benchmark against the test server.

// The library's test server: one stand-in for both crates' tests.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Output;
use std::time::Duration;

use airwave_cli::bench::{self, BenchConfig};
use serde_json::{json, Value};
use support::{within, Handshake, TestServer};

/// Runs the binary off the runtime's threads so the in-process server keeps serving.
async fn airwave(args: Vec<String>) -> Output {
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_airwave"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
    });
    within("the airwave binary", run).await.unwrap().unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn stdout_json(output: &Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_prints_the_reply_and_fails_on_an_error_reply() {
    let mut server = TestServer::start().await;
    let url = server.url();
    let output = airwave(args(&["publish", &url, "--channel", "prices", r#"{"p":1}"#])).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_json(&output), json!({"type": "published", "message_id": "p0"}));
    let frame = server.next_frame().await;
    assert_eq!(
        frame.value,
        json!({"action": "publish", "channel": "prices", "data": {"p": 1}, "id": 1})
    );

    server.script(
        "publish",
        Some(json!({"type": "error", "code": "publish_forbidden", "message": "no"})),
    );
    let output = airwave(args(&["publish", &url, "{}"])).await;
    assert!(!output.status.success());
    assert_eq!(stdout_json(&output)["code"], "publish_forbidden");

    let output = airwave(args(&["publish", &url, "not json"])).await;
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_over_the_rate_limit_says_so_and_exits_non_zero() {
    let server = TestServer::start().await;
    server.script(
        "publish",
        Some(json!({"type": "error", "code": "rate_limited", "message": "over 10 a second"})),
    );
    let output = airwave(args(&["publish", &server.url(), "{}"])).await;
    assert!(!output.status.success());
    assert_eq!(
        stdout_json(&output),
        json!({"type": "error", "code": "rate_limited", "message": "over 10 a second"})
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rate_limited") && stderr.contains("try again later"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_prints_the_reply() {
    let server = TestServer::start().await;
    let output = airwave(args(&["stats", &server.url(), "--token", "t"])).await;
    assert!(output.status.success(), "{output:?}");
    let stats = stdout_json(&output);
    assert_eq!(stats["type"], "stats");
    assert_eq!(stats["as_of"], 1_700_000_000, "when the server counted");
    assert_eq!(server.uris(), ["/test?token=t"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_from_a_server_without_as_of_leaves_it_out() {
    let server = TestServer::start().await;
    server.script(
        "stats",
        Some(
            json!({"type": "stats", "open_connections": 1, "distinct_users": 0, "max_connections": 0,
                    "max_connections_per_user": 0, "max_connections_per_ip": 0, "free_slots": null,
                    "connect_attempts_per_ip": 0, "window_seconds": 60, "throttled_attempts_in_window": 0}),
        ),
    );
    let output = airwave(args(&["stats", &server.url()])).await;
    assert!(output.status.success(), "{output:?}");
    let stats = stdout_json(&output);
    assert_eq!(stats["open_connections"], 1);
    assert!(stats.get("as_of").is_none(), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_exits_non_zero_without_retrying() {
    let server = TestServer::start_with(Handshake::Refuse(401), Duration::ZERO).await;
    let output = airwave(args(&["stats", &server.url()])).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
    assert!(output.stdout.is_empty());
    assert_eq!(server.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_json_reports_every_delivery() {
    let server = TestServer::start().await;
    let output = airwave(args(&[
        "bench",
        &server.url(),
        "--connections",
        "12",
        "--messages",
        "3",
        "--connect-concurrency",
        "4",
        "--json",
    ]))
    .await;
    assert!(output.status.success(), "{output:?}");
    let summary = stdout_json(&output);
    assert_eq!(summary["connections_opened"], 12);
    assert_eq!(summary["expected"], 36);
    assert_eq!(summary["delivered"], 36);
    assert_eq!(summary["duplicates_dropped"], 0);
    assert!(summary["latency"]["max_ms"].as_f64().unwrap() >= summary["latency"]["p50_ms"].as_f64().unwrap());
    // 12 listeners and one publisher.
    assert_eq!(server.accepted(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_counts_refused_listeners_and_reports_incomplete_delivery() {
    // The first 3 handshakes are refused for good (403), the rest connect.
    let server = TestServer::start_with(Handshake::RefuseFirst(3, 403), Duration::ZERO).await;
    let config = BenchConfig {
        client: server.config(),
        connections: 8,
        channel: "bench".to_owned(),
        messages: 2,
        connect_concurrency: 1,
        timeout: Duration::from_secs(20),
        progress: false,
    };
    let summary = within("bench", bench::run(config)).await.unwrap();
    assert_eq!((summary.connections_opened, summary.connections_failed), (5, 3));
    assert!(
        summary.first_connect_error.as_deref().unwrap_or("").contains("403"),
        "{summary:?}"
    );
    assert_eq!((summary.published, summary.expected, summary.delivered), (2, 16, 10));
    assert!(!summary.timed_out, "every reachable delivery arrived");
    assert!(!summary.complete());
    assert!(summary.to_string().contains("delivered    10 / expected 16"));
}

/// Kills the listener even when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KillOnDrop {
    /// Waits for the listener to exit by itself.
    async fn exited(&mut self) -> std::process::ExitStatus {
        within("the listener to exit", async {
            loop {
                if let Some(status) = self.0.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

/// Starts `airwave` with `args`; its stdout lines come back over the channel
/// (read on a plain thread), its stderr in the shared string.
fn listen(
    args: &[&str],
) -> (
    KillOnDrop,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_airwave"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (line_tx, line_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut stderr = child.0.stderr.take().unwrap();
    let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let written = std::sync::Arc::clone(&errors);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut chunk) {
            written.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    (child, line_rx, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_each_message_once_as_a_json_line_across_reconnects() {
    let mut server = TestServer::start().await;
    let (child, mut line_rx, _) = listen(&["listen", &server.url(), "--channel", "a", "--channel", "b"]);

    server.wait_frame(|f| f.connection == 1 && f.channel() == "b").await;
    server.push_message("m1", json!({"n": 1}));
    server.push_message("m1", json!({"n": 1}));
    server.drop_all();
    // Resubscribed on the new socket, then the same id again and a new one.
    server.wait_frame(|f| f.connection == 2 && f.channel() == "b").await;
    server.push_message("m1", json!({"n": 1}));
    server.push_message("m2", json!({"n": 2}));

    let mut printed = Vec::new();
    for _ in 0..2 {
        let line = within("a line on stdout", line_rx.recv()).await.unwrap();
        printed.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    drop(child);
    assert_eq!(printed[0], json!({"id": "m1", "channel": "c", "data": {"n": 1}}));
    assert_eq!(printed[1]["id"], "m2", "m1 is printed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_resubscribes_from_its_last_position_and_prints_a_line_when_recovery_failed() {
    let mut server = TestServer::start().await;
    // The first subscribe starts at offset 4 of epoch "e"; the one after the
    // drop is told that what was missed cannot be recovered.
    server.script(
        "subscribe",
        Some(json!({"type": "subscribed", "channel": "c", "position": {"epoch": "e", "offset": 4}})),
    );
    server.script(
        "subscribe",
        Some(json!({"type": "subscribed", "channel": "c", "position": {"epoch": "e", "offset": 900}, "recovered": false})),
    );
    let (_child, mut line_rx, _) = listen(&["listen", &server.url(), "--channel", "c"]);

    server.wait_frame(|f| f.connection == 1 && f.channel() == "c").await;
    server.push(
        json!({"type": "message", "id": "m5", "channel": "c", "data": 5, "position": {"epoch": "e", "offset": 5}}),
    );
    let first: Value = serde_json::from_str(&within("a line", line_rx.recv()).await.unwrap()).unwrap();
    assert_eq!(first["id"], "m5");
    server.drop_all();
    let resubscribe = server.wait_frame(|f| f.connection == 2 && f.channel() == "c").await;
    assert_eq!(
        resubscribe.value["since"],
        json!({"epoch": "e", "offset": 5}),
        "it asks for what came after the last message it printed"
    );
    let notice: Value = serde_json::from_str(&within("a line", line_rx.recv()).await.unwrap()).unwrap();
    assert_eq!(notice, json!({"event": "recovery_failed", "channel": "c"}));
    // Messages go on from the new position.
    server.push(json!({"type": "message", "id": "m901", "channel": "c", "data": 901, "position": {"epoch": "e", "offset": 901}}));
    let next: Value = serde_json::from_str(&within("a line", line_rx.recv()).await.unwrap()).unwrap();
    assert_eq!(next["id"], "m901");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_messages_to_the_user_and_a_line_when_evicted_then_exits_non_zero() {
    let mut server = TestServer::start().await;
    let (mut child, mut line_rx, stderr) = listen(&["listen", &server.url(), "--channel", "c"]);
    server.wait_frame(|f| f.connection == 1 && f.channel() == "c").await;

    server.push(json!({"type": "message", "id": "u1", "data": {"n": 1}, "to_user": "alice"}));
    let personal: Value = serde_json::from_str(&within("a line", line_rx.recv()).await.unwrap()).unwrap();
    assert_eq!(personal, json!({"id": "u1", "data": {"n": 1}, "to_user": "alice"}));

    server.close_all_with("evicted", "over the per-user cap");
    let notice: Value = serde_json::from_str(&within("a line", line_rx.recv()).await.unwrap()).unwrap();
    assert_eq!(notice, json!({"event": "evicted", "message": "over the per-user cap"}));
    let status = child.exited().await;
    assert!(!status.success(), "{status:?}");
    let stderr = stderr.lock().unwrap().clone();
    assert!(stderr.contains("evicted"), "{stderr}");
    assert_eq!(server.accepted(), 1, "it did not reconnect");
}
