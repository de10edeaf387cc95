//! `make bench`: each function's release binary, its size, and its cold
//! start: from process start to its first request to the Lambda runtime API
//! (`GET .../invocation/next`), against a local stand-in for that API, with
//! the environment template.yaml gives the function.
//!
//! `make bench` builds the release binaries first (native target; the Lambda
//! build, `make size`, links the same code for Linux on arm64 or x86_64).
//! It checks the targets the README quotes: at most 8 MB each, a median cold
//! start of at most 30 ms.
//!
//! Settings (environment): BENCH_COLD_STARTS (runs per function, default 20).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airwave_gateway::{LocalNames, StackModel};

const NEXT_INVOCATION: &str = "GET /2018-06-01/runtime/invocation/next";
const MAX_BYTES: u64 = 8_000_000;
const MAX_MEDIAN: Duration = Duration::from_millis(30);

/// `target/release`: this bench lives in its `deps/`.
fn release_directory() -> PathBuf {
    let bench = std::env::current_exe().expect("the bench's own path");
    bench
        .parent()
        .and_then(Path::parent)
        .expect("target/release")
        .to_path_buf()
}

/// One start: the time until the runtime API was asked for an event.
fn cold_start(binary: &Path, environment: &BTreeMap<String, String>) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the runtime API");
    let runtime_api = listener.local_addr().expect("its address").to_string();
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs(environment)
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "airwave-bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/airwave-bench")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error} (run `make bench`)", binary.display()));
    let elapsed = loop {
        let (mut socket, _) = listener.accept().expect("a request to the runtime API");
        let mut request = [0u8; 1024];
        let read = socket.read(&mut request).unwrap_or(0);
        if String::from_utf8_lossy(&request[..read]).starts_with(NEXT_INVOCATION) {
            break started.elapsed();
        }
        let _ = socket.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
    };
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

fn main() {
    let runs: usize = std::env::var("BENCH_COLD_STARTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20);
    let template = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let model = StackModel::from_path(template).expect("template.yaml");
    let names = LocalNames::new("airwave");
    let directory = release_directory();
    let mut binaries: Vec<String> = model.functions.values().filter_map(|f| f.binary.clone()).collect();
    binaries.sort();

    println!("release binaries and cold starts: {runs} starts each, template environment, local runtime API");
    println!(
        "{:>18} {:>9} {:>8} {:>8} {:>8}",
        "function", "size MB", "min", "median", "max"
    );
    let mut missed = Vec::new();
    for binary in &binaries {
        let path = directory.join(binary);
        let bytes = std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("{}: {error} (run `make bench`)", path.display()))
            .len();
        let environment = model
            .function_environment(binary, &names, "https://abc.execute-api.us-east-1.amazonaws.com/prod")
            .expect("the template environment");
        let mut times: Vec<Duration> = (0..runs).map(|_| cold_start(&path, &environment)).collect();
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "{:>18} {:>9.2} {:>8} {:>8} {:>8}",
            binary,
            bytes as f64 / 1e6,
            format!("{:.1}ms", times[0].as_secs_f64() * 1e3),
            format!("{:.1}ms", median.as_secs_f64() * 1e3),
            format!("{:.1}ms", times[times.len() - 1].as_secs_f64() * 1e3),
        );
        if bytes > MAX_BYTES {
            missed.push(format!("{binary} is {bytes} bytes"));
        }
        if median > MAX_MEDIAN {
            missed.push(format!("{binary} starts in {median:?}"));
        }
    }
    println!(
        "target: each binary at most {} MB and a median cold start of at most {} ms: {}",
        MAX_BYTES / 1_000_000,
        MAX_MEDIAN.as_millis(),
        if missed.is_empty() { "met" } else { "MISSED" }
    );
    assert!(missed.is_empty(), "targets missed: {}", missed.join(", "));
}
