//! What every logic test starts from: a configuration, the in-memory store
//! on a manual clock, and events in the shape API Gateway sends them.

use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::encodings::Body;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

use crate::auth::Authenticator;
use crate::config::JwtSecret;
use crate::handlers::{handle_connect, handle_disconnect, handle_message};
use crate::memory_store::MemoryStore;
use crate::message::MessageRecord;
use crate::time::{epoch_millis_now, ManualClock};
use crate::Config;

pub const SECRET: &str = "logic-test-secret-logic-test-secret!";
const HOUR_MS: i64 = 3_600_000;

/// The store, its clock and the configuration of one test.
pub struct Harness {
    pub config: Config,
    pub clock: ManualClock,
    pub store: MemoryStore,
    authenticator: Option<Authenticator>,
}

impl Harness {
    /// The defaults, changed by `configure`, on a clock standing at the start
    /// of the next hour (a window's start for every window that divides an
    /// hour; tokens signed from it are valid for the token library too, which
    /// reads the host's clock).
    pub fn new(configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::from_lookup(|_| None).unwrap();
        configure(&mut config);
        let clock = ManualClock::at_epoch_millis((epoch_millis_now() / HOUR_MS + 1) * HOUR_MS);
        let store = MemoryStore::new(&config, clock.clock());
        let authenticator = Authenticator::from_config(&config).unwrap();
        Harness {
            config,
            clock,
            store,
            authenticator,
        }
    }

    /// The same, with tokens signed by [`SECRET`] required on `$connect`.
    pub fn authenticated(configure: impl FnOnce(&mut Config)) -> Self {
        Self::new(|config| {
            config.jwt_secret = Some(JwtSecret::new(SECRET));
            configure(config);
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.epoch_millis() / 1_000
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// A token for `user`, valid for an hour of the test's clock.
    pub fn token(&self, user: &str) -> String {
        self.token_with(json!({"sub": user, "exp": self.now() + 3_600}))
    }

    pub fn token_with(&self, claims: Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    /// `$connect` of `connection_id` from `source_ip`, with `token` if any;
    /// answers the status and the body (a refusal's reason).
    pub async fn connect(&self, connection_id: &str, source_ip: &str, token: Option<&str>) -> (i64, String) {
        let mut request = json!({
            "requestContext": {
                "routeKey": "$connect",
                "eventType": "CONNECT",
                "stage": "prod",
                "identity": {"sourceIp": source_ip},
                // Zero: the handler reads the test's clock instead.
                "connectedAt": 0,
                "requestTimeEpoch": 0,
                "requestId": "logic-test",
                "domainName": "abc123def4.execute-api.eu-west-1.amazonaws.com",
                "connectionId": connection_id,
                "apiId": "abc123def4"
            },
            "isBase64Encoded": false
        });
        if let Some(token) = token {
            request["queryStringParameters"] = json!({"token": token});
            request["multiValueQueryStringParameters"] = json!({"token": [token]});
        }
        let response = handle_connect(
            &self.store,
            self.authenticator.as_ref(),
            None,
            &self.config,
            event(request),
        )
        .await
        .unwrap();
        (response.status_code, body_text(response.body))
    }

    pub async fn disconnect(&self, connection_id: &str) {
        let request = json!({
            "requestContext": {
                "routeKey": "$disconnect",
                "eventType": "DISCONNECT",
                "stage": "prod",
                "identity": {"sourceIp": "203.0.113.7"},
                "connectedAt": 0,
                "requestTimeEpoch": 0,
                "connectionId": connection_id,
            },
            "isBase64Encoded": false
        });
        let response = handle_disconnect(&self.store, event(request)).await.unwrap();
        assert_eq!(response.status_code, 200);
    }

    /// What `connection_id` sends on the `$default` route, and the reply it gets.
    pub async fn reply_to(&self, connection_id: &str, frame: Value) -> Value {
        let request = json!({
            "requestContext": {
                "routeKey": "$default",
                "eventType": "MESSAGE",
                "stage": "prod",
                "identity": {"sourceIp": "203.0.113.7"},
                "connectedAt": 0,
                "requestTimeEpoch": 0,
                "connectionId": connection_id,
            },
            "body": frame.to_string(),
            "isBase64Encoded": false
        });
        let response = handle_message(&self.store, None, &self.config, event(request))
            .await
            .unwrap();
        serde_json::from_str(&body_text(response.body)).unwrap()
    }

    pub async fn connection_ids(&self) -> Vec<String> {
        use crate::store::SubscriptionStore;
        let targets = self
            .store
            .list_targets(crate::message::Audience::Everyone)
            .await
            .unwrap();
        targets.into_iter().map(|target| target.connection_id).collect()
    }
}

/// A producer's message for `channel`, as it writes it to the messages table.
pub fn channel_message(id: &str, channel: &str, payload: Value) -> MessageRecord {
    MessageRecord::to_channel(id, channel, payload)
}

fn event(request: Value) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    let request: ApiGatewayWebsocketProxyRequest = serde_json::from_value(request).unwrap();
    LambdaEvent::new(request, Context::default())
}

fn body_text(body: Option<Body>) -> String {
    match body {
        Some(Body::Text(text)) => text,
        None => String::new(),
        Some(other) => panic!("a body that is not text: {other:?}"),
    }
}
