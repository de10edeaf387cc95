//! Every function binary starts with exactly the environment template.yaml
//! gives it, for each supported combination of parameters. A function that
//! refuses its own template's settings breaks a real deploy while every test
//! that shares one environment between functions stays green.
//!
//! "Starts" means it got as far as asking the Lambda runtime API for its first
//! event; the stand-in runtime API here records that request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use airwave_gateway::{LocalNames, StackModel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

const NEXT_INVOCATION: &str = "GET /2018-06-01/runtime/invocation/next";

fn repository_template() -> StackModel {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
    StackModel::from_path(path).unwrap()
}

/// `target/debug` (or the profile directory this test was built into): the
/// test binary lives in its `deps/`. `make test` builds the function binaries first.
fn binary_directory() -> PathBuf {
    let test_binary = std::env::current_exe().unwrap();
    test_binary.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// The parameter sets a deploy may use: authentication off and on, and each cap on.
fn parameter_combinations() -> Vec<(&'static str, BTreeMap<String, String>)> {
    let secret = "a-deploy-secret-of-at-least-32-bytes!".to_owned();
    let set = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    vec![
        ("defaults", set(&[])),
        ("authentication on", set(&[("JwtSecret", &secret)])),
        (
            "tokens from an identity provider",
            set(&[
                (
                    "JwksUrl",
                    "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example/.well-known/jwks.json",
                ),
                (
                    "JwtIssuer",
                    "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example",
                ),
                ("JwtAudience", "client-id-1,client-id-2"),
                ("MaxConnectionsPerUser", "3"),
            ]),
        ),
        (
            "tokens from an identity provider for any audience",
            set(&[
                ("JwksUrl", "https://example.auth0.com/.well-known/jwks.json"),
                ("JwtIssuer", "https://example.auth0.com/"),
                ("JwtAllowAnyAudience", "true"),
            ]),
        ),
        (
            "publishing limited per user and per IP, anonymous publishing on",
            set(&[
                ("AllowClientPublish", "true"),
                ("AllowAnonymousPublish", "true"),
                ("PublishRateLimitPerUser", "5"),
                ("PublishRateLimitPerIp", "0"),
            ]),
        ),
        ("total cap", set(&[("MaxConnections", "1000")])),
        (
            "server keys and the token secret in Secrets Manager",
            set(&[
                (
                    "ServerKeySecretArn",
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:airwave-server-keys",
                ),
                (
                    "JwtSecretArn",
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:airwave-jwt",
                ),
            ]),
        ),
        ("per-IP cap", set(&[("MaxConnectionsPerIp", "20")])),
        (
            "per-user cap with authentication",
            set(&[("MaxConnectionsPerUser", "5"), ("JwtSecret", &secret)]),
        ),
        (
            "per-user cap evicting the oldest connection",
            set(&[
                ("MaxConnectionsPerUser", "2"),
                ("JwtSecret", &secret),
                ("UserCapMode", "evict_oldest"),
            ]),
        ),
        (
            "operators from a group claim, publishing without a rate limit",
            set(&[
                ("JwtSecret", &secret),
                ("OperatorClaim", "cognito:groups=operators"),
                ("AllowClientPublish", "true"),
                ("PublishRateLimit", "0"),
                ("AllowStats", "true"),
                ("StatsMaxAgeSeconds", "5"),
            ]),
        ),
        (
            "everything on",
            set(&[
                ("JwtSecret", &secret),
                ("MaxConnections", "1000"),
                ("MaxConnectionsPerUser", "5"),
                ("MaxConnectionsPerIp", "20"),
                ("ConnectAttemptsPerIp", "0"),
                ("AllowClientPublish", "true"),
                ("AllowStats", "true"),
            ]),
        ),
    ]
}

/// What a started function did first.
#[derive(Debug)]
enum Start {
    AskedForAnEvent,
    Exited { status: String, stderr: String },
}

/// Starts `binary` with `environment` and nothing else from this process
/// (besides what Lambda itself provides), against a stand-in runtime API.
async fn start(binary: &Path, environment: &BTreeMap<String, String>) -> Start {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let runtime_api = listener.local_addr().unwrap().to_string();
    let mut child = Command::new(binary)
        .env_clear()
        .envs(environment)
        // What the Lambda service sets for every function.
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "airwave-test")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/airwave-test")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error} (run `make test`)", binary.display()));
    let asked = async {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 1024];
            let read = socket.read(&mut request).await.unwrap_or(0);
            if String::from_utf8_lossy(&request[..read]).starts_with(NEXT_INVOCATION) {
                return;
            }
            let _ = socket
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    };
    let outcome = tokio::select! {
        () = asked => Start::AskedForAnEvent,
        status = child.wait() => {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            Start::Exited { status: format!("{:?}", status), stderr }
        }
        () = tokio::time::sleep(Duration::from_secs(60)) => panic!("{} neither started nor exited in 60 s", binary.display()),
    };
    let _ = child.kill().await;
    outcome
}

#[tokio::test]
async fn every_function_starts_with_the_environment_the_template_gives_it() {
    let model = repository_template();
    let names = LocalNames::new("airwave");
    let directory = binary_directory();
    let binaries: Vec<String> = model.functions.values().filter_map(|f| f.binary.clone()).collect();
    assert_eq!(binaries.len(), 6, "every function of the template: {binaries:?}");
    let mut refused = Vec::new();
    for (combination, parameters) in parameter_combinations() {
        for binary in &binaries {
            let environment = model
                .function_environment_with(
                    binary,
                    &names,
                    "https://abc.execute-api.us-east-1.amazonaws.com/prod",
                    &parameters,
                )
                .unwrap();
            match start(&directory.join(binary), &environment).await {
                Start::AskedForAnEvent => {}
                Start::Exited { status, stderr } => {
                    refused.push(format!("{binary} with {combination}: {status}\n{stderr}"));
                }
            }
        }
    }
    assert!(
        refused.is_empty(),
        "functions refused their template environment:\n{}",
        refused.join("\n")
    );
}

#[tokio::test]
async fn the_check_notices_a_function_that_refuses_its_environment() {
    // The same start, with a setting the connect function must refuse: the
    // test above would report it rather than pass.
    let directory = binary_directory();
    let environment = BTreeMap::from([("AIRWAVE_MAX_CONNECTIONS_PER_USER".to_owned(), "5".to_owned())]);
    match start(&directory.join("connect"), &environment).await {
        Start::Exited { stderr, .. } => assert!(stderr.contains("AIRWAVE_MAX_CONNECTIONS_PER_USER"), "{stderr}"),
        Start::AskedForAnEvent => panic!("connect started with a per-user cap and no secret"),
    }
}

#[tokio::test]
async fn connect_refuses_to_start_with_a_jwks_but_no_issuer_or_audience() {
    // Any token the provider signs, for anyone's application, would pass.
    let directory = binary_directory();
    let url = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example/.well-known/jwks.json";
    let issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example";
    for (missing, environment) in [
        ("AIRWAVE_JWT_ISSUER", vec![("AIRWAVE_JWKS_URL", url)]),
        (
            "AIRWAVE_JWT_AUDIENCE",
            vec![("AIRWAVE_JWKS_URL", url), ("AIRWAVE_JWT_ISSUER", issuer)],
        ),
    ] {
        let environment = environment
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        match start(&directory.join("connect"), &environment).await {
            Start::Exited { stderr, .. } => assert!(stderr.contains(missing), "{stderr}"),
            Start::AskedForAnEvent => panic!("connect started with a JWKS and no {missing}"),
        }
    }
}
