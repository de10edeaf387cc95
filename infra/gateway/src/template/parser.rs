//! The walk over the template's resources: the `Resources` section, the
//! function `Globals` and the parameters' defaults, and the literal-or-parameter
//! values every kind of resource reads. Each kind of resource is read in a file
//! of its own (`routes`, `functions`, `tables`, `queues`, `stream_mappings`);
//! this file puts their results together into a [`StackModel`].

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::intrinsics::references;
use super::schedules::schedules_of;
use super::StackModel;
use crate::GatewayError;

pub(super) struct Parser<'a> {
    pub(super) resources: &'a Map<String, Value>,
    pub(super) globals_environment: Map<String, Value>,
    pub(super) globals_memory: Option<Value>,
    pub(super) parameters: BTreeMap<String, Option<String>>,
}

impl<'a> Parser<'a> {
    pub(super) fn new(template: &'a Value) -> Result<Self, GatewayError> {
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

    pub(super) fn of_type(&self, resource_type: &str) -> Vec<(&'a String, &'a Value)> {
        self.resources
            .iter()
            .filter(|(_, resource)| resource.get("Type").and_then(Value::as_str) == Some(resource_type))
            .collect()
    }

    pub(super) fn type_of(&self, logical_id: &str) -> Option<&'a str> {
        self.resources.get(logical_id)?.get("Type")?.as_str()
    }

    pub(super) fn parse(self) -> Result<StackModel, GatewayError> {
        let functions = self.functions();
        let (api_logical_id, route_selection) = self.websocket_api()?;
        let routes = self.routes(&api_logical_id, &functions)?;
        let http_api = self.http_api(&functions)?;
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
            http_api,
            functions,
            tables,
            queues,
            stream_mappings,
            schedules,
            parameters: self.parameters,
        })
    }

    /// The one resource of `types` that `value` refers to.
    pub(super) fn single_reference(
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

    /// A literal, or a `!Ref` to a parameter with a default.
    pub(super) fn resolve_text(&self, value: &Value) -> Option<String> {
        scalar_text(value).or_else(|| match value.get("Ref") {
            Some(Value::String(name)) => self.parameters.get(name).cloned().flatten(),
            _ => None,
        })
    }

    pub(super) fn resolve_integer(&self, value: &Value) -> Option<i64> {
        self.resolve_text(value)?.trim().parse().ok()
    }

    pub(super) fn resolve_bool(&self, value: &Value) -> Option<bool> {
        match self.resolve_text(value)?.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
}

pub(super) fn required_text(value: &Value, field: &str, owner: &str) -> Result<String, GatewayError> {
    value
        .get(field)
        .and_then(scalar_text)
        .ok_or_else(|| GatewayError::Template(format!("{owner}: {field} must be a literal")))
}

/// A string, number or boolean as text.
pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(value) => Some(value.to_string()),
        _ => None,
    }
}
