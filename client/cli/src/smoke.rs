//! `airwave smoke`: checks a deployed endpoint end to end, one named step at
//! a time, and stops at the first step that fails, saying which and where to
//! look. Every step goes through the path a real client uses: the handshake
//! and admission, a subscribe, API Gateway's own pong, a client publish, the
//! stream and the fan-out, and recovery from the channel's history.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use tokio::time::Instant;

use airwave_client::{Client, ClientConfig, Error, Event, Events, Position, Reply, Request};

/// What to check, and how long each step may take.
#[derive(Debug, Clone)]
pub struct SmokeConfig {
    pub client: ClientConfig,
    /// A channel the token may subscribe to (and publish to, when a client
    /// publishes); nothing else should use it (the default is a fresh
    /// `smoke-…` name per run).
    pub channel: String,
    pub publisher: Publisher,
    pub step_timeout: Duration,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Client(#[from] Error),
    /// The producer's write to the messages table failed.
    #[error("{0}")]
    Producer(String),
    /// An answer that is not the one the step checks for.
    #[error("{0}")]
    Unexpected(String),
}

/// Who publishes the smoke test's messages.
#[derive(Debug, Clone)]
pub enum Publisher {
    /// A second connection, with the `publish` action: needs
    /// `AllowClientPublish` and a publish right for the channel.
    Client,
    /// A producer writing to the messages table, as a deployment's backend
    /// does (client publishing is off by default).
    Table {
        dynamodb: aws_sdk_dynamodb::Client,
        messages_table: String,
    },
}

impl Publisher {
    /// A producer writing to `messages_table` with the credentials and
    /// region of the environment (`AWS_PROFILE`, `AWS_REGION`, …).
    pub async fn table_from_environment(messages_table: String) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Publisher::Table {
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            messages_table,
        }
    }

    /// Publishes `data` (a short string) to `channel`; the message's id.
    async fn publish(&self, connection: &Client, channel: &str, data: &str) -> Result<String, StepError> {
        match self {
            Publisher::Client => Ok(connection
                .publish(Some(channel), serde_json::json!({ "smoke": data }))
                .await?),
            Publisher::Table {
                dynamodb,
                messages_table,
            } => {
                let message_id = format!("smoke-{:032x}", rand::random::<u128>());
                let payload = HashMap::from([("smoke".to_owned(), AttributeValue::S(data.to_owned()))]);
                dynamodb
                    .put_item()
                    .table_name(messages_table)
                    .item("message_id", AttributeValue::S(message_id.clone()))
                    .item("channel", AttributeValue::S(channel.to_owned()))
                    .item("payload", AttributeValue::M(payload))
                    .condition_expression("attribute_not_exists(message_id)")
                    .send()
                    .await
                    .map_err(|error| {
                        StepError::Producer(format!(
                            "PutItem on {messages_table}: {}",
                            aws_sdk_dynamodb::error::DisplayErrorContext(&error)
                        ))
                    })?;
                Ok(message_id)
            }
        }
    }
}

/// The steps, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Connect,
    RefuseBadToken,
    Subscribe,
    Ping,
    Publish,
    Deliver,
    Recover,
}

impl Step {
    /// Every step, in the order they run.
    pub const ALL: [Step; 7] = [
        Step::Connect,
        Step::RefuseBadToken,
        Step::Subscribe,
        Step::Ping,
        Step::Publish,
        Step::Deliver,
        Step::Recover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::RefuseBadToken => "refuse",
            Step::Subscribe => "subscribe",
            Step::Ping => "ping",
            Step::Publish => "publish",
            Step::Deliver => "deliver",
            Step::Recover => "recover",
        }
    }

    /// Where to look when this step fails.
    fn hint(self) -> &'static str {
        match self {
            Step::Connect => {
                "the handshake failed: check the URL (wss://API.execute-api.REGION.amazonaws.com/STAGE), \
                 the token, and the connect function's logs"
            }
            Step::RefuseBadToken => {
                "a connection with a forged token was not refused with 401: check that the stack has a \
                 token secret or a JWKS URL, and the connect function's logs"
            }
            Step::Subscribe => "the message function refused or did not answer: check its logs and the token's rights",
            Step::Ping => "API Gateway's ping route did not answer: check that the stage deployed the `ping` route",
            Step::Publish => {
                "the publish was refused or not answered: a client publish needs AllowClientPublish and a \
                 publish right for the channel; a producer's write needs PutItem on the messages table"
            }
            Step::Deliver => {
                "the message was stored but never reached the subscriber: check the stream processor's \
                 errors, its event source mapping and the failure queue"
            }
            Step::Recover => {
                "a message published while the subscriber was away was not recovered: check the history \
                 settings and the message function's logs"
            }
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    /// Not checked, and the report says why: a refusal of a bad token on an
    /// endpoint used without a token (it may not authenticate at all).
    Skipped,
    Failed,
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: Step,
    pub status: Status,
    pub millis: u64,
    /// What the step saw: a message id, or why it failed.
    pub detail: String,
}

/// Every step run, up to and including the first that failed.
#[derive(Debug, Clone, Serialize)]
pub struct SmokeReport {
    pub channel: String,
    pub steps: Vec<StepReport>,
}

impl SmokeReport {
    /// Every step ran, and none failed (a skipped one is named in the report).
    pub fn passed(&self) -> bool {
        self.steps.len() == Step::ALL.len() && self.failed_step().is_none()
    }

    /// The step that failed, if one did.
    pub fn failed_step(&self) -> Option<Step> {
        self.steps
            .iter()
            .find(|step| step.status == Status::Failed)
            .map(|step| step.step)
    }
}

impl fmt::Display for SmokeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            let verdict = match step.status {
                Status::Passed => "ok    ",
                Status::Skipped => "skip  ",
                Status::Failed => "FAILED",
            };
            writeln!(f, "{verdict} {:<9} {:>6} ms  {}", step.step, step.millis, step.detail)?;
            if step.status == Status::Failed {
                writeln!(f, "       {}", step.step.hint())?;
            }
        }
        match self.failed_step() {
            None => write!(f, "smoke test passed on channel {}", self.channel),
            Some(step) => write!(f, "smoke test failed at step {step} on channel {}", self.channel),
        }
    }
}

/// A fresh channel name, so runs never see each other's messages.
pub fn fresh_channel() -> String {
    format!("smoke-{:016x}", rand::random::<u64>())
}

/// Runs the steps in order until one fails. The clients are closed either way.
pub async fn run(config: SmokeConfig) -> SmokeReport {
    let mut run = Run {
        report: SmokeReport {
            channel: config.channel.clone(),
            steps: Vec::new(),
        },
        config,
    };
    let (listener, listener_events) = Client::new(run.config.client.clone());
    let (witness, witness_events) = Client::new(run.config.client.clone());
    let _ = run.steps(&listener, listener_events, &witness, witness_events).await;
    listener.close().await;
    witness.close().await;
    run.report
}

struct Run {
    config: SmokeConfig,
    report: SmokeReport,
}

/// A step stopped the run; the report says which.
struct Stopped;

impl Run {
    /// `listener` is the subscriber under test. `witness`, a second
    /// subscriber that stays, publishes when a client publishes, and tells
    /// when a message has been sent (so it has its position) before the
    /// listener comes back for it.
    async fn steps(
        &mut self,
        listener: &Client,
        mut listener_events: Events,
        witness: &Client,
        mut witness_events: Events,
    ) -> Result<(), Stopped> {
        let channel = self.config.channel.clone();
        let publisher = self.config.publisher.clone();
        self.step(Step::Connect, async {
            listener.connect().await?;
            witness.connect().await?;
            Ok("two connections admitted".to_owned())
        })
        .await?;
        let client_config = self.config.client.clone();
        // Passed or skipped, the report says which; either way the run goes on.
        let _refusal = self
            .step(Step::RefuseBadToken, refuses_a_forged_token(client_config))
            .await?;
        self.step(Step::Subscribe, async {
            witness.subscribe(&channel).await?;
            match listener.request(subscribe(&channel, None)).await? {
                Reply::Subscribed { position, .. } => Ok(position),
                other => Err(unexpected(&other)),
            }
        })
        .await?;
        self.step(Step::Ping, async {
            listener.ping().await?;
            Ok("pong".to_owned())
        })
        .await?;
        let live = self
            .step(Step::Publish, publisher.publish(witness, &channel, "live"))
            .await?;
        let delivered = self.step(Step::Deliver, received(&mut listener_events, &live)).await?;
        let client_config = self.config.client.clone();
        self.step(Step::Recover, async {
            // The listener leaves; what is published meanwhile must come back
            // from the history on a subscribe that names the last position seen.
            listener.close().await;
            let missed = publisher.publish(witness, &channel, "missed").await?;
            received(&mut witness_events, &missed).await?;
            let (returning, _returning_events) = Client::new(client_config);
            // The last position the listener saw, as a returning client sends it.
            let reply = returning.request(subscribe(&channel, Some(delivered))).await;
            returning.close().await;
            match reply? {
                Reply::Subscribed {
                    recovered: Some(true),
                    publications,
                    ..
                } if publications.iter().any(|message| message.id == missed) => {
                    Ok(format!("{missed} recovered with `since`"))
                }
                Reply::Subscribed { recovered, .. } => Err(StepError::Unexpected(format!(
                    "{missed} not among the recovered messages (recovered: {recovered:?})"
                ))),
                other => Err(unexpected(&other)),
            }
        })
        .await?;
        Ok(())
    }

    /// Runs one step within the step timeout and records it.
    async fn step<T: Describe>(
        &mut self,
        step: Step,
        work: impl Future<Output = Result<T, StepError>>,
    ) -> Result<T, Stopped> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.config.step_timeout, work).await;
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (result, status, detail) = match outcome {
            Ok(Ok(value)) => {
                let (detail, status) = (value.describe(), value.status());
                (Ok(value), status, detail)
            }
            Ok(Err(error)) => (Err(Stopped), Status::Failed, error.to_string()),
            Err(_) => (
                Err(Stopped),
                Status::Failed,
                format!("nothing within {} s", self.config.step_timeout.as_secs_f64()),
            ),
        };
        self.report.steps.push(StepReport {
            step,
            status,
            millis,
            detail,
        });
        result
    }
}

/// What a step's value says in the report.
trait Describe {
    fn describe(&self) -> String;

    fn status(&self) -> Status {
        Status::Passed
    }
}

/// A check that could not be made, and why.
struct Skipped(String);

impl Describe for Result<String, Skipped> {
    fn describe(&self) -> String {
        match self {
            Ok(detail) | Err(Skipped(detail)) => detail.clone(),
        }
    }

    fn status(&self) -> Status {
        match self {
            Ok(_) => Status::Passed,
            Err(_) => Status::Skipped,
        }
    }
}

impl Describe for String {
    fn describe(&self) -> String {
        self.clone()
    }
}

impl Describe for Position {
    fn describe(&self) -> String {
        format!("at offset {} of epoch {}", self.offset, self.epoch)
    }
}

/// A subscribe's position: none, or an empty epoch, on a channel never published to.
impl Describe for Option<Position> {
    fn describe(&self) -> String {
        match self {
            Some(position) if !position.epoch.is_empty() => position.describe(),
            _ => "no position yet (a channel never published to)".to_owned(),
        }
    }
}

/// A token shaped like a JWT whose signature no key made.
const FORGED_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzbW9rZSJ9.Zm9yZ2VkLXNpZ25hdHVyZQ";

/// Connects with a forged token, which an authenticating endpoint refuses
/// with 401 at the handshake.
async fn refuses_a_forged_token(config: ClientConfig) -> Result<Result<String, Skipped>, StepError> {
    let authenticates = config.has_credentials();
    let (forger, _events) = Client::new(config.with_token(FORGED_TOKEN));
    let outcome = forger.connect().await;
    forger.close().await;
    match outcome {
        Err(error) if refused_as_unauthorized(&error) => Ok(Ok("a forged token refused with 401".to_owned())),
        Err(error) => Err(StepError::Unexpected(format!(
            "a forged token was refused, but not with 401: {error}"
        ))),
        Ok(()) if authenticates => Err(StepError::Unexpected("a forged token was admitted".to_owned())),
        Ok(()) => Ok(Err(Skipped(
            "not checked: a forged token was admitted, and no token was given (the endpoint may not authenticate)"
                .to_owned(),
        ))),
    }
}

fn refused_as_unauthorized(error: &Error) -> bool {
    match error {
        Error::Handshake { status } => *status == 401,
        Error::GaveUp { last, .. } => refused_as_unauthorized(last),
        _ => false,
    }
}

/// Waits for the message `id` among `events`; its position.
async fn received(events: &mut Events, id: &str) -> Result<Position, StepError> {
    loop {
        match events.recv().await {
            Some(Event::Message(message)) if message.id == id => {
                return message
                    .position
                    .ok_or_else(|| StepError::Unexpected(format!("{id} arrived without a position")));
            }
            Some(Event::Failed(error)) => return Err(error.into()),
            Some(_) => continue,
            None => return Err(Error::Closed.into()),
        }
    }
}

fn subscribe(channel: &str, since: Option<Position>) -> Request {
    Request::Subscribe {
        channel: channel.to_owned(),
        since,
    }
}

fn unexpected(reply: &Reply) -> StepError {
    match reply {
        Reply::Error { code, message } => StepError::Client(Error::Server {
            code: code.as_str().to_owned(),
            message: message.clone(),
        }),
        other => StepError::Unexpected(format!("{other:?}")),
    }
}
