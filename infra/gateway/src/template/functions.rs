//! The Lambda functions: each one's binary (what `cargo lambda watch` serves
//! it under), its environment as the template writes it (`Globals` merged
//! under its own) and its memory size.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::intrinsics::references;
use super::parser::{scalar_text, Parser};
use super::FUNCTION_TYPES;
use crate::GatewayError;

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
    /// (see [`StackModel::queue_url`](super::StackModel::queue_url)).
    Queue(String),
    /// A `!Sub` naming the WebSocket API (`https://${WebSocketApi}.execute-api…/${Stage}`):
    /// its endpoint, which locally is the gateway's Management API endpoint.
    ApiEndpoint,
    /// Anything else (an ARN, a queue URL): not resolvable locally.
    Unsupported(String),
}

impl Parser<'_> {
    pub(super) fn functions(&self) -> BTreeMap<String, Function> {
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
}

pub(super) fn binary_of(functions: &BTreeMap<String, Function>, logical_id: &str) -> Result<String, GatewayError> {
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
