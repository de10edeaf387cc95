//! Reads `template.yaml` into the parts of the stack the local gateway plays:
//! the WebSocket API's routes, the functions behind them, the tables and the
//! DynamoDB stream mappings.
//!
//! CloudFormation's short tags (`!Ref X`, `!GetAtt X.Arn`, `!Sub "..."`, ...)
//! are turned into their long JSON forms (`{"Ref": "X"}`,
//! `{"Fn::GetAtt": ["X", "Arn"]}`, `{"Fn::Sub": "..."}`) first, so the rest of
//! this module reads one shape whichever way the template is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::mock::MockIntegration;
use crate::schedules::{schedules_of, Schedule};
use crate::GatewayError;

const FUNCTION_TYPES: [&str; 2] = ["AWS::Serverless::Function", "AWS::Lambda::Function"];
/// Local stand-ins for the pseudo parameters a `!Sub` may use.
pub(crate) const LOCAL_REGION: &str = "us-east-1";
pub(crate) const LOCAL_ACCOUNT_ID: &str = "000000000000";
/// The properties of an `AWS::SQS::Queue` that are also CreateQueue attributes
/// of the same name.
const QUEUE_ATTRIBUTES: [&str; 7] = [
    "ContentBasedDeduplication",
    "DelaySeconds",
    "FifoQueue",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
];

/// The parts of the stack the gateway emulates.
#[derive(Debug, Clone)]
pub struct StackModel {
    /// The logical id of the `AWS::ApiGatewayV2::Api` (protocol `WEBSOCKET`).
    pub api_logical_id: String,
    /// How a message picks its route.
    pub route_selection: RouteSelection,
    /// Every route by its route key (`$connect`, `$disconnect`, `$default`, custom keys).
    pub routes: BTreeMap<String, Route>,
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

/// `$request.body.<field>` (a dotted path is allowed: `$request.body.a.b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSelection {
    pub expression: String,
    /// The field path inside the JSON body.
    pub body_path: Vec<String>,
}

impl RouteSelection {
    /// Parses a route selection expression; only the `$request.body.<field>` form is supported.
    pub fn parse(expression: &str) -> Result<Self, GatewayError> {
        let path = expression.strip_prefix("$request.body.").ok_or_else(|| {
            GatewayError::Template(format!(
                "RouteSelectionExpression {expression:?} is not supported; the local gateway understands \
                 only $request.body.<field>"
            ))
        })?;
        let body_path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if body_path.iter().any(|part| part.is_empty()) {
            return Err(GatewayError::Template(format!(
                "RouteSelectionExpression {expression:?} has an empty field name"
            )));
        }
        Ok(RouteSelection {
            expression: expression.to_owned(),
            body_path,
        })
    }

    /// The selection value of a message body: the string (or number or boolean,
    /// as text) at the field path when the body is a JSON object, else `None`.
    pub fn value_of(&self, body: &str) -> Option<String> {
        let parsed: Value = serde_json::from_str(body).ok()?;
        let mut current = &parsed;
        for part in &self.body_path {
            current = current.as_object()?.get(part)?;
        }
        match current {
            Value::String(value) => Some(value.clone()),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(value) => Some(value.to_string()),
            _ => None,
        }
    }
}

/// One `AWS::ApiGatewayV2::Route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub logical_id: String,
    pub route_key: String,
    pub integration: RouteIntegration,
    /// Whether an `AWS::ApiGatewayV2::RouteResponse` exists: then the function's
    /// `body` (or the mock's response template) is sent back as a frame.
    pub has_route_response: bool,
}

/// What answers a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteIntegration {
    /// `AWS_PROXY` to a Lambda function.
    Function {
        /// Logical id of the function.
        logical_id: String,
        /// The binary (the function name `cargo lambda watch` serves it under).
        binary: String,
    },
    /// `MOCK`: API Gateway answers by itself.
    Mock(MockIntegration),
}

impl Route {
    /// The binary of the function behind this route; none for a mock.
    pub fn function(&self) -> Option<&str> {
        match &self.integration {
            RouteIntegration::Function { binary, .. } => Some(binary),
            RouteIntegration::Mock(_) => None,
        }
    }

    /// The logical id of the function behind this route; none for a mock.
    pub fn function_logical_id(&self) -> Option<&str> {
        match &self.integration {
            RouteIntegration::Function { logical_id, .. } => Some(logical_id),
            RouteIntegration::Mock(_) => None,
        }
    }
}

/// One Lambda function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub logical_id: String,
    /// `Metadata.BinaryName`, else `Metadata.BuildProperties.Binary` (how SAM's
    /// cargo-lambda builder names it), else the handler or the code directory.
    pub binary: Option<String>,
    /// `Environment.Variables`, the template's `Globals` merged under the function's own.
    pub environment: BTreeMap<String, EnvValue>,
    /// `MemorySize` (its own, else `Globals`), parameters resolved to their defaults.
    pub memory_mb: Option<u64>,
}

/// What an environment variable is set to in the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Literal(String),
    /// `!Ref` of a table: its name. Locally, the table's local name.
    Table(String),
    /// `!Ref` of a template parameter, with its default.
    Parameter {
        name: String,
        default: Option<String>,
    },
    /// `!Ref` of an SQS queue: its URL. Locally, the local queue's URL
    /// (see [`StackModel::queue_url`]).
    Queue(String),
    /// A `!Sub` naming the WebSocket API (`https://${WebSocketApi}.execute-api…/${Stage}`):
    /// its endpoint, which locally is the gateway's Management API endpoint.
    ApiEndpoint,
    /// Anything else (an ARN, a queue URL): not resolvable locally.
    Unsupported(String),
}

/// One `AWS::DynamoDB::Table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub logical_id: String,
    pub name: TableName,
    pub attributes: Vec<AttributeDefinition>,
    pub key_schema: Vec<KeyElement>,
    pub global_secondary_indexes: Vec<GlobalSecondaryIndex>,
    /// `StreamSpecification.StreamViewType`, when the table has a stream.
    pub stream_view_type: Option<String>,
    /// `TimeToLiveSpecification.AttributeName`, when TTL is enabled.
    pub ttl_attribute: Option<String>,
}

/// One `AWS::SQS::Queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub logical_id: String,
    /// `QueueName`, by the same rules as a table's name.
    pub name: TableName,
    /// The properties that are CreateQueue attributes (`MessageRetentionPeriod`,
    /// `VisibilityTimeout`, `FifoQueue`, ...), as text.
    pub attributes: BTreeMap<String, String>,
}

impl Queue {
    pub fn fifo(&self) -> bool {
        self.attributes.get("FifoQueue").is_some_and(|fifo| fifo == "true")
    }
}

/// How the template names a table (or a queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableName {
    /// No `TableName`: CloudFormation generates one.
    Generated,
    Literal(String),
    /// A `!Sub` template such as `${AWS::StackName}-connections`.
    Sub(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDefinition {
    pub name: String,
    /// `S`, `N` or `B`.
    pub attribute_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyElement {
    pub attribute_name: String,
    /// `HASH` or `RANGE`.
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalSecondaryIndex {
    pub name: String,
    pub key_schema: Vec<KeyElement>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection_type: String,
    pub non_key_attributes: Vec<String>,
}

/// One DynamoDB stream mapped to a function, from an `AWS::Lambda::EventSourceMapping`
/// or a SAM function's `Events` entry of type `DynamoDB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMapping {
    pub logical_id: String,
    /// Logical id of the table whose stream is read.
    pub table_logical_id: String,
    pub function_logical_id: String,
    /// The function's binary name.
    pub function: String,
    /// At most this many records per invocation (Lambda's default for DynamoDB: 100).
    pub batch_size: usize,
    /// `LATEST` or `TRIM_HORIZON`, as declared.
    pub starting_position: Option<String>,
    /// `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// Retries of a failing batch before it is dropped; `None` retries until the
    /// records are too old (`-1` in the template).
    pub maximum_retry_attempts: Option<u32>,
    /// Records older than this are dropped instead of retried; `None` for no limit.
    pub maximum_record_age: Option<Duration>,
    /// `Enabled: false` mappings are parsed but not polled.
    pub enabled: bool,
    /// Logical id of the SQS queue `DestinationConfig.OnFailure.Destination`
    /// names: where the description of a batch given up on is sent.
    pub on_failure_queue: Option<String>,
    /// `FilterCriteria.Filters[].Pattern`, parsed: a record is delivered when
    /// any matches (all are delivered when there are none).
    pub filter_patterns: Vec<Value>,
}

/// Local names for the template's tables and queues.
///
/// The rule, in order: a name set with [`LocalNames::with_table`] for the
/// table's logical id; a literal `TableName` as written; a `!Sub` `TableName`
/// with `${AWS::StackName}` replaced by the local stack name (and template
/// parameters by their defaults); without a `TableName`, the stack name, a dash
/// and the logical id without its `Table` suffix in kebab case
/// (`ConnectionsTable` -> `airwave-connections`, `RateLimitsTable` ->
/// `airwave-rate-limits`). With the default stack name `airwave` this gives the
/// functions' default table names.
///
/// Queues follow the same rule ([`LocalNames::with_queue`]; `StreamFailureQueue`
/// -> `airwave-stream-failure`, with `.fifo` for a FIFO queue), and their URL is
/// `{endpoint}/{account}/{name}`: on the endpoint set with
/// [`LocalNames::with_queue_endpoint`] (the local server's), else in SQS's own
/// form, `https://sqs.us-east-1.amazonaws.com/000000000000/{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNames {
    pub stack_name: String,
    overrides: BTreeMap<String, String>,
    queue_overrides: BTreeMap<String, String>,
    queue_endpoint: Option<String>,
}

impl Default for LocalNames {
    fn default() -> Self {
        LocalNames::new("airwave")
    }
}

impl LocalNames {
    pub fn new(stack_name: &str) -> Self {
        LocalNames {
            stack_name: stack_name.to_owned(),
            overrides: BTreeMap::new(),
            queue_overrides: BTreeMap::new(),
            queue_endpoint: None,
        }
    }

    /// Names the table with `logical_id` explicitly.
    pub fn with_table(mut self, logical_id: &str, name: &str) -> Self {
        self.overrides.insert(logical_id.to_owned(), name.to_owned());
        self
    }

    /// Names the queue with `logical_id` explicitly.
    pub fn with_queue(mut self, logical_id: &str, name: &str) -> Self {
        self.queue_overrides.insert(logical_id.to_owned(), name.to_owned());
        self
    }

    /// The server the local queues are on (moto's serves SQS on the same port
    /// as DynamoDB): their URLs start with it.
    pub fn with_queue_endpoint(mut self, endpoint: &str) -> Self {
        self.queue_endpoint = Some(endpoint.trim_end_matches('/').to_owned());
        self
    }
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

    /// The local name of a table (see [`LocalNames`] for the rule).
    pub fn table_name(&self, table: &Table, names: &LocalNames) -> Result<String, GatewayError> {
        if let Some(name) = names.overrides.get(&table.logical_id) {
            return Ok(name.clone());
        }
        self.resource_name(&table.logical_id, &table.name, "Table", names)
    }

    /// The local name of a queue (see [`LocalNames`] for the rule).
    pub fn queue_name(&self, queue: &Queue, names: &LocalNames) -> Result<String, GatewayError> {
        if let Some(name) = names.queue_overrides.get(&queue.logical_id) {
            return Ok(name.clone());
        }
        let name = self.resource_name(&queue.logical_id, &queue.name, "Queue", names)?;
        Ok(match (&queue.name, queue.fifo()) {
            (TableName::Generated, true) => format!("{name}.fifo"),
            _ => name,
        })
    }

    /// The local URL of a queue (see [`LocalNames`]), what `!Ref` of it gives.
    pub fn queue_url(&self, queue: &Queue, names: &LocalNames) -> Result<String, GatewayError> {
        let name = self.queue_name(queue, names)?;
        let endpoint = names
            .queue_endpoint
            .clone()
            .unwrap_or_else(|| format!("https://sqs.{LOCAL_REGION}.amazonaws.com"));
        Ok(format!("{endpoint}/{LOCAL_ACCOUNT_ID}/{name}"))
    }

    /// The queue with this logical id.
    pub fn queue(&self, logical_id: &str) -> Option<&Queue> {
        self.queues.iter().find(|queue| queue.logical_id == logical_id)
    }

    fn resource_name(
        &self,
        logical_id: &str,
        name: &TableName,
        type_suffix: &str,
        names: &LocalNames,
    ) -> Result<String, GatewayError> {
        match name {
            TableName::Literal(name) => Ok(name.clone()),
            TableName::Generated => Ok(format!(
                "{}-{}",
                names.stack_name,
                kebab_case(logical_id.strip_suffix(type_suffix).unwrap_or(logical_id))
            )),
            TableName::Sub(template) => self.substitute(template, names).map_err(|variable| {
                GatewayError::Template(format!(
                    "the name of {logical_id} uses ${{{variable}}}, which has no local value; name it with \
                     LocalNames::with_{}",
                    type_suffix.to_ascii_lowercase()
                ))
            }),
        }
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

    /// The environment variables of the function with binary `binary` that hold a
    /// table name, with the table's logical id.
    pub fn table_variables(&self, binary: &str) -> BTreeMap<String, String> {
        self.function_by_binary(binary)
            .map(|function| {
                function
                    .environment
                    .iter()
                    .filter_map(|(variable, value)| match value {
                        EnvValue::Table(table) => Some((variable.clone(), table.clone())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The environment the function with binary `binary` gets locally: table
    /// references become local table names, parameters their defaults, the
    /// WebSocket API's endpoint `management_endpoint`. Variables that cannot be
    /// resolved locally (ARNs, queue URLs) are left out.
    pub fn function_environment(
        &self,
        binary: &str,
        names: &LocalNames,
        management_endpoint: &str,
    ) -> Result<BTreeMap<String, String>, GatewayError> {
        self.function_environment_with(binary, names, management_endpoint, &BTreeMap::new())
    }

    /// [`Self::function_environment`] with some template parameters set, as a
    /// deploy's `--parameter-overrides` would: `parameters` wins over defaults.
    pub fn function_environment_with(
        &self,
        binary: &str,
        names: &LocalNames,
        management_endpoint: &str,
        parameters: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, GatewayError> {
        let function = self
            .function_by_binary(binary)
            .ok_or_else(|| GatewayError::Template(format!("no function with binary {binary:?}")))?;
        let mut environment = BTreeMap::new();
        for (variable, value) in &function.environment {
            let resolved = match value {
                EnvValue::Literal(value) => value.clone(),
                EnvValue::Parameter { name, .. } if parameters.contains_key(name) => parameters[name].clone(),
                EnvValue::Parameter {
                    default: Some(value), ..
                } => value.clone(),
                EnvValue::Parameter { name, default: None } => {
                    tracing::warn!(
                        function = binary,
                        variable,
                        parameter = name,
                        "parameter has no default; variable left unset"
                    );
                    continue;
                }
                EnvValue::Table(logical_id) => {
                    let table = self.table(logical_id).ok_or_else(|| {
                        GatewayError::Template(format!("{variable} of {binary} refers to unknown table {logical_id}"))
                    })?;
                    self.table_name(table, names)?
                }
                EnvValue::Queue(logical_id) => {
                    let queue = self.queue(logical_id).ok_or_else(|| {
                        GatewayError::Template(format!("{variable} of {binary} refers to unknown queue {logical_id}"))
                    })?;
                    self.queue_url(queue, names)?
                }
                EnvValue::ApiEndpoint => management_endpoint.to_owned(),
                EnvValue::Unsupported(expression) => {
                    tracing::debug!(
                        function = binary,
                        variable,
                        expression,
                        "no local value; variable left unset"
                    );
                    continue;
                }
            };
            environment.insert(variable.clone(), resolved);
        }
        Ok(environment)
    }

    /// Replaces `${...}` variables with local values; `Err` names the first one without.
    fn substitute(&self, template: &str, names: &LocalNames) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let variable = &after[..end];
            if let Some(literal) = variable.strip_prefix('!') {
                // `${!Literal}` is CloudFormation's escape for a literal `${Literal}`.
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else {
                let value = match variable {
                    "AWS::StackName" => Some(names.stack_name.clone()),
                    "AWS::Region" => Some(LOCAL_REGION.to_owned()),
                    "AWS::AccountId" => Some(LOCAL_ACCOUNT_ID.to_owned()),
                    "AWS::Partition" => Some("aws".to_owned()),
                    "AWS::URLSuffix" => Some("amazonaws.com".to_owned()),
                    other => self.parameters.get(other).cloned().flatten(),
                };
                out.push_str(&value.ok_or_else(|| variable.to_owned())?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `RateLimits` -> `rate-limits`.
fn kebab_case(name: &str) -> String {
    let mut out = String::new();
    for (index, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && index > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Converts YAML to JSON, turning CloudFormation's short tags into their long forms.
fn yaml_to_json(value: serde_norway::Value) -> Value {
    use serde_norway::Value as Yaml;
    match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(value) => Value::Bool(value),
        Yaml::Number(number) => {
            if let Some(value) = number.as_i64() {
                Value::from(value)
            } else if let Some(value) = number.as_u64() {
                Value::from(value)
            } else {
                number
                    .as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Yaml::String(value) => Value::String(value),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Yaml::Mapping(mapping) => {
            let mut object = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Yaml::String(key) => key,
                    other => match yaml_to_json(other) {
                        Value::String(key) => key,
                        other => other.to_string(),
                    },
                };
                object.insert(key, yaml_to_json(value));
            }
            Value::Object(object)
        }
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!').to_owned();
            let inner = yaml_to_json(tagged.value);
            let (key, inner) = match name.as_str() {
                "Ref" | "Condition" => (name.clone(), inner),
                // `!GetAtt Table.Arn` is the short form of `["Table", "Arn"]`.
                "GetAtt" => match inner {
                    Value::String(text) => {
                        let parts: Vec<Value> = match text.split_once('.') {
                            Some((resource, attribute)) => vec![resource.into(), attribute.into()],
                            None => vec![text.into()],
                        };
                        ("Fn::GetAtt".to_owned(), Value::Array(parts))
                    }
                    other => ("Fn::GetAtt".to_owned(), other),
                },
                _ => (format!("Fn::{name}"), inner),
            };
            let mut object = Map::new();
            object.insert(key, inner);
            Value::Object(object)
        }
    }
}

/// The logical ids an expression refers to (`Ref`, `Fn::GetAtt`, `${X}` and
/// `${X.Attr}` in `Fn::Sub`), pseudo parameters left out.
fn references(value: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    collect_references(value, &mut found);
    found
}

fn collect_references(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object {
                match (key.as_str(), inner) {
                    ("Ref", Value::String(name)) => {
                        if !name.starts_with("AWS::") {
                            found.insert(name.clone());
                        }
                    }
                    ("Fn::GetAtt", Value::Array(parts)) => {
                        if let Some(Value::String(resource)) = parts.first() {
                            found.insert(resource.clone());
                        }
                    }
                    ("Fn::Sub", Value::String(template)) => found.extend(sub_variables(template)),
                    ("Fn::Sub", Value::Array(parts)) => {
                        // `[template, {Var: value}]`: the map's keys are local, not logical ids.
                        let local: BTreeSet<String> = parts
                            .get(1)
                            .and_then(Value::as_object)
                            .map(|vars| vars.keys().cloned().collect())
                            .unwrap_or_default();
                        if let Some(Value::String(template)) = parts.first() {
                            found.extend(sub_variables(template).into_iter().filter(|name| !local.contains(name)));
                        }
                        if let Some(vars) = parts.get(1) {
                            collect_references(vars, found);
                        }
                    }
                    _ => collect_references(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, found)),
        _ => {}
    }
}

/// The resources named by `${X}` / `${X.Attr}` in a `Fn::Sub` template.
fn sub_variables(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let variable = &after[..end];
        if !variable.starts_with('!') && !variable.starts_with("AWS::") {
            let resource = variable.split('.').next().unwrap_or(variable);
            names.push(resource.to_owned());
        }
        rest = &after[end + 1..];
    }
    names
}

struct Parser<'a> {
    resources: &'a Map<String, Value>,
    globals_environment: Map<String, Value>,
    globals_memory: Option<Value>,
    parameters: BTreeMap<String, Option<String>>,
}

impl<'a> Parser<'a> {
    fn new(template: &'a Value) -> Result<Self, GatewayError> {
        let resources = template
            .get("Resources")
            .and_then(Value::as_object)
            .ok_or_else(|| GatewayError::Template("no Resources section".into()))?;
        let globals_environment = template
            .pointer("/Globals/Function/Environment/Variables")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let parameters = template
            .get("Parameters")
            .and_then(Value::as_object)
            .map(|parameters| {
                parameters
                    .iter()
                    .map(|(name, declaration)| (name.clone(), declaration.get("Default").and_then(scalar_text)))
                    .collect()
            })
            .unwrap_or_default();
        let globals_memory = template.pointer("/Globals/Function/MemorySize").cloned();
        Ok(Parser {
            resources,
            globals_environment,
            globals_memory,
            parameters,
        })
    }

    fn of_type(&self, resource_type: &str) -> Vec<(&'a String, &'a Value)> {
        self.resources
            .iter()
            .filter(|(_, resource)| resource.get("Type").and_then(Value::as_str) == Some(resource_type))
            .collect()
    }

    fn type_of(&self, logical_id: &str) -> Option<&'a str> {
        self.resources.get(logical_id)?.get("Type")?.as_str()
    }

    fn parse(self) -> Result<StackModel, GatewayError> {
        let functions = self.functions();
        let (api_logical_id, route_selection) = self.websocket_api()?;
        let routes = self.routes(&api_logical_id, &functions)?;
        let tables = self
            .of_type("AWS::DynamoDB::Table")
            .into_iter()
            .map(|(logical_id, resource)| self.table(logical_id, resource))
            .collect::<Result<Vec<_>, _>>()?;
        let stream_mappings = self.stream_mappings(&functions, &tables)?;
        let mut schedules = Vec::new();
        for (logical_id, function) in &functions {
            if let (Some(binary), Some(resource)) = (&function.binary, self.resources.get(logical_id)) {
                schedules.extend(schedules_of(logical_id, binary, resource)?);
            }
        }
        let queues = self
            .of_type("AWS::SQS::Queue")
            .into_iter()
            .map(|(logical_id, resource)| self.queue(logical_id, resource))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StackModel {
            api_logical_id,
            route_selection,
            routes,
            functions,
            tables,
            queues,
            stream_mappings,
            schedules,
            parameters: self.parameters,
        })
    }

    fn websocket_api(&self) -> Result<(String, RouteSelection), GatewayError> {
        let apis: Vec<_> = self
            .of_type("AWS::ApiGatewayV2::Api")
            .into_iter()
            .filter(|(_, api)| api.pointer("/Properties/ProtocolType").and_then(Value::as_str) == Some("WEBSOCKET"))
            .collect();
        let (logical_id, api) = match apis.as_slice() {
            [one] => *one,
            [] => {
                return Err(GatewayError::Template(
                    "no AWS::ApiGatewayV2::Api with ProtocolType WEBSOCKET".into(),
                ))
            }
            _ => {
                return Err(GatewayError::Template(
                    "more than one WebSocket API; the local gateway serves exactly one".into(),
                ))
            }
        };
        let expression = api
            .pointer("/Properties/RouteSelectionExpression")
            .and_then(Value::as_str)
            .ok_or_else(|| GatewayError::Template(format!("{logical_id} has no literal RouteSelectionExpression")))?;
        Ok((logical_id.clone(), RouteSelection::parse(expression)?))
    }

    fn routes(
        &self,
        api_logical_id: &str,
        functions: &BTreeMap<String, Function>,
    ) -> Result<BTreeMap<String, Route>, GatewayError> {
        let with_route_response: BTreeSet<String> = self
            .of_type("AWS::ApiGatewayV2::RouteResponse")
            .into_iter()
            .filter_map(|(_, response)| response.pointer("/Properties/RouteId"))
            .flat_map(references)
            .collect();
        let mut routes = BTreeMap::new();
        for (logical_id, route) in self.of_type("AWS::ApiGatewayV2::Route") {
            let properties = route.get("Properties").cloned().unwrap_or_default();
            if !properties
                .get("ApiId")
                .map(references)
                .unwrap_or_default()
                .contains(api_logical_id)
            {
                continue;
            }
            let route_key = properties
                .get("RouteKey")
                .and_then(Value::as_str)
                .ok_or_else(|| GatewayError::Template(format!("route {logical_id} has no literal RouteKey")))?;
            let target = properties
                .get("Target")
                .ok_or_else(|| GatewayError::Template(format!("route {logical_id} has no Target")))?;
            let integration =
                self.single_reference(logical_id, "Target", target, &["AWS::ApiGatewayV2::Integration"])?;
            routes.insert(
                route_key.to_owned(),
                Route {
                    logical_id: logical_id.clone(),
                    route_key: route_key.to_owned(),
                    integration: self.route_integration(&integration, functions)?,
                    has_route_response: with_route_response.contains(logical_id),
                },
            );
        }
        Ok(routes)
    }

    fn route_integration(
        &self,
        integration: &str,
        functions: &BTreeMap<String, Function>,
    ) -> Result<RouteIntegration, GatewayError> {
        let resource = self.resources.get(integration).cloned().unwrap_or_default();
        match resource.pointer("/Properties/IntegrationType").and_then(Value::as_str) {
            Some("MOCK") => {
                let responses: Vec<(&String, &Value)> = self
                    .of_type("AWS::ApiGatewayV2::IntegrationResponse")
                    .into_iter()
                    .filter(|(_, response)| {
                        response
                            .pointer("/Properties/IntegrationId")
                            .is_some_and(|id| references(id).contains(integration))
                    })
                    .collect();
                Ok(RouteIntegration::Mock(MockIntegration::from_resources(
                    integration,
                    &resource,
                    &responses,
                )?))
            }
            Some("AWS_PROXY") => {
                let uri = resource.pointer("/Properties/IntegrationUri").ok_or_else(|| {
                    GatewayError::Template(format!("integration {integration} has no IntegrationUri"))
                })?;
                let logical_id = self.single_reference(integration, "IntegrationUri", uri, &FUNCTION_TYPES)?;
                let binary = binary_of(functions, &logical_id)?;
                Ok(RouteIntegration::Function { logical_id, binary })
            }
            other => Err(GatewayError::Template(format!(
                "integration {integration} has IntegrationType {other:?}; the local gateway serves AWS_PROXY and MOCK"
            ))),
        }
    }

    /// The one resource of `types` that `value` refers to.
    fn single_reference(
        &self,
        owner: &str,
        property: &str,
        value: &Value,
        types: &[&str],
    ) -> Result<String, GatewayError> {
        let matching: Vec<String> = references(value)
            .into_iter()
            .filter(|id| self.type_of(id).is_some_and(|t| types.contains(&t)))
            .collect();
        match <[String; 1]>::try_from(matching) {
            Ok([one]) => Ok(one),
            Err(found) => Err(GatewayError::Template(format!(
                "{property} of {owner} must refer to exactly one {}, found {found:?}",
                types.join(" or ")
            ))),
        }
    }

    fn functions(&self) -> BTreeMap<String, Function> {
        FUNCTION_TYPES
            .iter()
            .flat_map(|function_type| self.of_type(function_type))
            .map(|(logical_id, resource)| {
                let is_sam = resource.get("Type").and_then(Value::as_str) == Some(FUNCTION_TYPES[0]);
                let mut variables = if is_sam {
                    self.globals_environment.clone()
                } else {
                    Map::new()
                };
                if let Some(own) = resource
                    .pointer("/Properties/Environment/Variables")
                    .and_then(Value::as_object)
                {
                    variables.extend(own.clone());
                }
                let environment = variables
                    .iter()
                    .map(|(name, value)| (name.clone(), self.env_value(value)))
                    .collect();
                (
                    logical_id.clone(),
                    Function {
                        logical_id: logical_id.clone(),
                        binary: function_binary(resource),
                        environment,
                        memory_mb: resource
                            .pointer("/Properties/MemorySize")
                            .or(if is_sam { self.globals_memory.as_ref() } else { None })
                            .and_then(|memory| self.resolve_integer(memory))
                            .and_then(|mb| u64::try_from(mb).ok()),
                    },
                )
            })
            .collect()
    }

    fn env_value(&self, value: &Value) -> EnvValue {
        if let Some(text) = scalar_text(value) {
            return EnvValue::Literal(text);
        }
        if let Some(Value::String(name)) = value.get("Ref") {
            if self.type_of(name) == Some("AWS::DynamoDB::Table") {
                return EnvValue::Table(name.clone());
            }
            if self.type_of(name) == Some("AWS::SQS::Queue") {
                return EnvValue::Queue(name.clone());
            }
            if let Some(default) = self.parameters.get(name) {
                return EnvValue::Parameter {
                    name: name.clone(),
                    default: default.clone(),
                };
            }
        }
        if value.get("Fn::Sub").is_some()
            && references(value)
                .iter()
                .any(|id| self.type_of(id) == Some("AWS::ApiGatewayV2::Api"))
        {
            return EnvValue::ApiEndpoint;
        }
        EnvValue::Unsupported(value.to_string())
    }

    fn table(&self, logical_id: &str, resource: &Value) -> Result<Table, GatewayError> {
        let properties = resource.get("Properties").cloned().unwrap_or_default();
        let name = resource_name(logical_id, &properties, "TableName")?;
        let attributes = properties
            .get("AttributeDefinitions")
            .and_then(Value::as_array)
            .ok_or_else(|| GatewayError::Template(format!("{logical_id} has no AttributeDefinitions")))?
            .iter()
            .map(|attribute| {
                Ok(AttributeDefinition {
                    name: required_text(attribute, "AttributeName", logical_id)?,
                    attribute_type: required_text(attribute, "AttributeType", logical_id)?,
                })
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        let table_key_schema = key_schema(properties.get("KeySchema"), logical_id)?;
        let global_secondary_indexes = properties
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_array)
            .map(|indexes| {
                indexes
                    .iter()
                    .map(|index| {
                        let name = required_text(index, "IndexName", logical_id)?;
                        let projection = index.get("Projection");
                        Ok(GlobalSecondaryIndex {
                            key_schema: key_schema(index.get("KeySchema"), &format!("{logical_id} index {name}"))?,
                            projection_type: projection
                                .and_then(|p| p.get("ProjectionType"))
                                .and_then(scalar_text)
                                .unwrap_or_else(|| "KEYS_ONLY".to_owned()),
                            non_key_attributes: projection
                                .and_then(|p| p.get("NonKeyAttributes"))
                                .and_then(Value::as_array)
                                .map(|names| names.iter().filter_map(scalar_text).collect())
                                .unwrap_or_default(),
                            name,
                        })
                    })
                    .collect::<Result<Vec<_>, GatewayError>>()
            })
            .transpose()?
            .unwrap_or_default();
        let stream_view_type = properties
            .pointer("/StreamSpecification/StreamViewType")
            .and_then(|value| self.resolve_text(value));
        let ttl_enabled = properties
            .pointer("/TimeToLiveSpecification/Enabled")
            .is_some_and(|enabled| self.resolve_bool(enabled).unwrap_or(false));
        let ttl_attribute = properties
            .pointer("/TimeToLiveSpecification/AttributeName")
            .and_then(|value| self.resolve_text(value))
            .filter(|_| ttl_enabled);
        Ok(Table {
            logical_id: logical_id.to_owned(),
            name,
            attributes,
            key_schema: table_key_schema,
            global_secondary_indexes,
            stream_view_type,
            ttl_attribute,
        })
    }

    fn queue(&self, logical_id: &str, resource: &Value) -> Result<Queue, GatewayError> {
        let properties = resource.get("Properties").cloned().unwrap_or_default();
        let name = resource_name(logical_id, &properties, "QueueName")?;
        let attributes = QUEUE_ATTRIBUTES
            .iter()
            .filter_map(|attribute| {
                let value = properties.get(*attribute)?;
                Some(
                    self.resolve_text(value)
                        .map(|text| (attribute.to_string(), text))
                        .ok_or_else(|| {
                            GatewayError::Template(format!(
                                "{attribute} of {logical_id} must be a literal or a parameter with a default"
                            ))
                        }),
                )
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(Queue {
            logical_id: logical_id.to_owned(),
            name,
            attributes,
        })
    }

    fn stream_mappings(
        &self,
        functions: &BTreeMap<String, Function>,
        tables: &[Table],
    ) -> Result<Vec<StreamMapping>, GatewayError> {
        let is_table = |id: &String| tables.iter().any(|table| &table.logical_id == id);
        let mut mappings = Vec::new();
        for (logical_id, resource) in self.of_type("AWS::Lambda::EventSourceMapping") {
            let properties = resource.get("Properties").cloned().unwrap_or_default();
            let source = properties.get("EventSourceArn").map(references).unwrap_or_default();
            // Mappings of queues or Kinesis streams are not DynamoDB streams.
            let Some(table) = source.iter().find(|id| is_table(id)).cloned() else {
                continue;
            };
            let function_logical_id = self.single_reference(
                logical_id,
                "FunctionName",
                properties.get("FunctionName").unwrap_or(&Value::Null),
                &FUNCTION_TYPES,
            )?;
            mappings.push(self.stream_mapping(logical_id, &properties, table, function_logical_id, functions)?);
        }
        // SAM's shorthand: `Events: {Name: {Type: DynamoDB, Properties: {Stream: !GetAtt T.StreamArn}}}`.
        for (function_logical_id, resource) in self.of_type(FUNCTION_TYPES[0]) {
            let Some(events) = resource.pointer("/Properties/Events").and_then(Value::as_object) else {
                continue;
            };
            for (event_name, event) in events {
                if event.get("Type").and_then(Value::as_str) != Some("DynamoDB") {
                    continue;
                }
                let properties = event.get("Properties").cloned().unwrap_or_default();
                let source = properties.get("Stream").map(references).unwrap_or_default();
                let Some(table) = source.iter().find(|id| is_table(id)).cloned() else {
                    return Err(GatewayError::Template(format!(
                        "event {event_name} of {function_logical_id} does not name a table's stream"
                    )));
                };
                mappings.push(self.stream_mapping(
                    &format!("{function_logical_id}{event_name}"),
                    &properties,
                    table,
                    function_logical_id.clone(),
                    functions,
                )?);
            }
        }
        Ok(mappings)
    }

    fn stream_mapping(
        &self,
        logical_id: &str,
        properties: &Value,
        table_logical_id: String,
        function_logical_id: String,
        functions: &BTreeMap<String, Function>,
    ) -> Result<StreamMapping, GatewayError> {
        let integer = |name: &str| properties.get(name).and_then(|value| self.resolve_integer(value));
        let batch_size = match integer("BatchSize") {
            None => 100,
            Some(size) if size >= 1 => size as usize,
            Some(size) => {
                return Err(GatewayError::Template(format!(
                    "BatchSize of {logical_id} must be positive, not {size}"
                )))
            }
        };
        let filter_patterns = properties
            .pointer("/FilterCriteria/Filters")
            .and_then(Value::as_array)
            .map(|filters| {
                filters
                    .iter()
                    .map(|filter| {
                        let text = filter.get("Pattern").and_then(Value::as_str).ok_or_else(|| {
                            GatewayError::Template(format!("a filter of {logical_id} has no literal Pattern"))
                        })?;
                        let pattern: Value = serde_json::from_str(text).map_err(|error| {
                            GatewayError::Template(format!("a filter Pattern of {logical_id} is not JSON: {error}"))
                        })?;
                        crate::filter::validate(&pattern)
                            .map_err(|error| GatewayError::Template(format!("filter of {logical_id}: {error}")))?;
                        Ok(pattern)
                    })
                    .collect::<Result<Vec<_>, GatewayError>>()
            })
            .transpose()?
            .unwrap_or_default();
        // An SNS topic (the other destination streams allow) is not emulated.
        let on_failure_queue = properties
            .pointer("/DestinationConfig/OnFailure/Destination")
            .map(references)
            .unwrap_or_default()
            .into_iter()
            .find(|id| self.type_of(id) == Some("AWS::SQS::Queue"));
        let report_batch_item_failures = properties
            .get("FunctionResponseTypes")
            .and_then(Value::as_array)
            .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("ReportBatchItemFailures")));
        Ok(StreamMapping {
            logical_id: logical_id.to_owned(),
            table_logical_id,
            function: binary_of(functions, &function_logical_id)?,
            function_logical_id,
            batch_size,
            starting_position: properties
                .get("StartingPosition")
                .and_then(|value| self.resolve_text(value)),
            report_batch_item_failures,
            maximum_retry_attempts: integer("MaximumRetryAttempts")
                .filter(|attempts| *attempts >= 0)
                .map(|attempts| attempts as u32),
            maximum_record_age: integer("MaximumRecordAgeInSeconds")
                .filter(|seconds| *seconds >= 0)
                .map(|seconds| Duration::from_secs(seconds as u64)),
            enabled: properties
                .get("Enabled")
                .and_then(|value| self.resolve_bool(value))
                .unwrap_or(true),
            filter_patterns,
            on_failure_queue,
        })
    }

    /// A literal, or a `!Ref` to a parameter with a default.
    fn resolve_text(&self, value: &Value) -> Option<String> {
        scalar_text(value).or_else(|| match value.get("Ref") {
            Some(Value::String(name)) => self.parameters.get(name).cloned().flatten(),
            _ => None,
        })
    }

    fn resolve_integer(&self, value: &Value) -> Option<i64> {
        self.resolve_text(value)?.trim().parse().ok()
    }

    fn resolve_bool(&self, value: &Value) -> Option<bool> {
        match self.resolve_text(value)?.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
}

fn binary_of(functions: &BTreeMap<String, Function>, logical_id: &str) -> Result<String, GatewayError> {
    functions
        .get(logical_id)
        .and_then(|function| function.binary.clone())
        .ok_or_else(|| {
            GatewayError::Template(format!(
                "cannot tell the binary of {logical_id}: set Metadata.BinaryName or Metadata.BuildProperties.Binary"
            ))
        })
}

/// How the template names a function's binary.
fn function_binary(resource: &Value) -> Option<String> {
    let text = |pointer: &str| resource.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    if let Some(binary) = text("/Metadata/BinaryName").or_else(|| text("/Metadata/BuildProperties/Binary")) {
        return Some(binary);
    }
    // Without metadata: a handler naming the binary, else the code directory's name.
    if let Some(handler) = text("/Properties/Handler").filter(|handler| handler != "bootstrap") {
        return Some(handler);
    }
    text("/Properties/CodeUri")
        .map(|uri| {
            uri.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .filter(|name| !name.is_empty() && name != ".")
}

fn key_schema(value: Option<&Value>, owner: &str) -> Result<Vec<KeyElement>, GatewayError> {
    value
        .and_then(Value::as_array)
        .ok_or_else(|| GatewayError::Template(format!("{owner} has no KeySchema")))?
        .iter()
        .map(|element| {
            Ok(KeyElement {
                attribute_name: required_text(element, "AttributeName", owner)?,
                key_type: required_text(element, "KeyType", owner)?,
            })
        })
        .collect()
}

fn required_text(value: &Value, field: &str, owner: &str) -> Result<String, GatewayError> {
    value
        .get(field)
        .and_then(scalar_text)
        .ok_or_else(|| GatewayError::Template(format!("{owner}: {field} must be a literal")))
}

/// A string, number or boolean as text.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(value) => Some(value.to_string()),
        _ => None,
    }
}

/// A table's or queue's name property: absent (CloudFormation generates one),
/// a literal, or a `!Sub` string.
fn resource_name(logical_id: &str, properties: &Value, property: &str) -> Result<TableName, GatewayError> {
    match properties.get(property) {
        None => Ok(TableName::Generated),
        Some(Value::String(name)) => Ok(TableName::Literal(name.clone())),
        Some(value) => match value.get("Fn::Sub") {
            Some(Value::String(template)) => Ok(TableName::Sub(template.clone())),
            _ => Err(GatewayError::Template(format!(
                "{property} of {logical_id} must be a string or a !Sub string"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tags_become_long_forms() {
        let yaml: serde_norway::Value =
            serde_norway::from_str("a: !Ref X\nb: !GetAtt T.StreamArn\nc: !Sub \"${A}-${AWS::Region}-${B.Arn}\"")
                .unwrap();
        let json = yaml_to_json(yaml);
        assert_eq!(json["a"], serde_json::json!({"Ref": "X"}));
        assert_eq!(json["b"], serde_json::json!({"Fn::GetAtt": ["T", "StreamArn"]}));
        assert_eq!(
            references(&json),
            ["A", "B", "T", "X"].into_iter().map(String::from).collect()
        );
    }

    #[test]
    fn route_selection_reads_the_body_field() {
        let selection = RouteSelection::parse("$request.body.action").unwrap();
        assert_eq!(selection.value_of(r#"{"action":"ping"}"#).as_deref(), Some("ping"));
        assert_eq!(selection.value_of(r#"{"other":1}"#), None);
        assert_eq!(selection.value_of("not json"), None);
        assert!(RouteSelection::parse("$request.header.x").is_err());
    }

    #[test]
    fn kebab_case_splits_words() {
        assert_eq!(kebab_case("RateLimits"), "rate-limits");
        assert_eq!(kebab_case("Connections"), "connections");
    }
}
