//! Reads `template.yaml` into the parts of the stack the local gateway plays:
//! the WebSocket API's routes, the HTTP API's, the functions behind them, the tables, the
//! queues and the DynamoDB stream mappings.
//!
//! CloudFormation's short tags (`!Ref X`, `!GetAtt X.Arn`, `!Sub "..."`, ...)
//! are turned into their long JSON forms (`{"Ref": "X"}`,
//! `{"Fn::GetAtt": ["X", "Arn"]}`, `{"Fn::Sub": "..."}`) first
//! (`intrinsics`), so the rest of this module reads one shape whichever way
//! the template is written. `parser` walks the resources; each kind of
//! resource the gateway plays has its own file (`routes`, `functions`,
//! `tables`, `queues`, `stream_mappings`). What the model gives the local
//! stack is kept apart from how it is read: `names` (the local names of
//! tables and queues) and `environment` (a function's local environment).

mod environment;
mod functions;
mod http_api;
mod intrinsics;
mod names;
mod parser;
mod queues;
mod routes;
mod schedules;
mod stream_mappings;
mod tables;

use std::collections::BTreeMap;
use std::path::Path;

use crate::GatewayError;
use intrinsics::yaml_to_json;
use parser::Parser;

pub use functions::{EnvValue, Function};
pub use http_api::{Cors, HttpApi, HttpRoute};
pub use names::LocalNames;
pub use queues::Queue;
pub use routes::{Route, RouteIntegration, RouteSelection};
pub use schedules::Schedule;
pub use stream_mappings::StreamMapping;
pub use tables::{AttributeDefinition, GlobalSecondaryIndex, KeyElement, Table, TableName};

const FUNCTION_TYPES: [&str; 2] = ["AWS::Serverless::Function", "AWS::Lambda::Function"];
/// Local stand-ins for the pseudo parameters a `!Sub` may use.
pub(crate) const LOCAL_REGION: &str = "us-east-1";
pub(crate) const LOCAL_ACCOUNT_ID: &str = "000000000000";

/// The parts of the stack the gateway emulates.
#[derive(Debug, Clone)]
pub struct StackModel {
    /// The logical id of the `AWS::ApiGatewayV2::Api` (protocol `WEBSOCKET`).
    pub api_logical_id: String,
    /// How a message picks its route.
    pub route_selection: RouteSelection,
    /// Every route by its route key (`$connect`, `$disconnect`, `$default`, custom keys).
    pub routes: BTreeMap<String, Route>,
    /// The HTTP API, when the template has one.
    pub http_api: Option<HttpApi>,
    /// Every Lambda function, by logical id.
    pub functions: BTreeMap<String, Function>,
    /// Every DynamoDB table, in template order.
    pub tables: Vec<Table>,
    /// Every SQS queue, in template order.
    pub queues: Vec<Queue>,
    /// Every DynamoDB stream mapped to a function.
    pub stream_mappings: Vec<StreamMapping>,
    /// Every `Schedule` event of a function.
    pub schedules: Vec<Schedule>,
    /// Template parameters with their defaults, for resolving `!Ref Parameter`.
    parameters: BTreeMap<String, Option<String>>,
}

impl StackModel {
    /// Reads and parses a template file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, GatewayError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|error| GatewayError::Template(format!("cannot read {}: {error}", path.display())))?;
        Self::from_yaml(&text)
    }

    /// Parses a template (YAML or JSON, short or long intrinsic function forms).
    pub fn from_yaml(text: &str) -> Result<Self, GatewayError> {
        let yaml: serde_norway::Value =
            serde_norway::from_str(text).map_err(|error| GatewayError::Template(format!("invalid YAML: {error}")))?;
        let template = yaml_to_json(yaml);
        Parser::new(&template)?.parse()
    }

    /// The queue with this logical id.
    pub fn queue(&self, logical_id: &str) -> Option<&Queue> {
        self.queues.iter().find(|queue| queue.logical_id == logical_id)
    }

    /// The table with this logical id.
    pub fn table(&self, logical_id: &str) -> Option<&Table> {
        self.tables.iter().find(|table| table.logical_id == logical_id)
    }

    /// The function whose binary is `binary`.
    pub fn function_by_binary(&self, binary: &str) -> Option<&Function> {
        self.functions
            .values()
            .find(|function| function.binary.as_deref() == Some(binary))
    }
}
