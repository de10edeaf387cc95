//! The WebSocket API and its routes: the route selection expression, each
//! route's key, and what answers it (a function through `AWS_PROXY`, or
//! API Gateway itself through `MOCK`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::functions::{binary_of, Function};
use super::intrinsics::references;
use super::parser::Parser;
use super::FUNCTION_TYPES;
use crate::mock::MockIntegration;
use crate::GatewayError;

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

/// One `AWS::ApiGatewayV2::Route` of an API as the template declares it:
/// its key and the integration its `Target` names.
pub(super) struct DeclaredRoute<'a> {
    pub logical_id: &'a String,
    pub route_key: String,
    pub integration: String,
    pub properties: &'a Value,
}

impl<'a> Parser<'a> {
    /// The `AWS::ApiGatewayV2::Api`s of one `ProtocolType` (`WEBSOCKET`, `HTTP`).
    pub(super) fn apis_of_protocol(&self, protocol: &str) -> Vec<(&'a String, &'a Value)> {
        self.of_type("AWS::ApiGatewayV2::Api")
            .into_iter()
            .filter(|(_, api)| api.pointer("/Properties/ProtocolType").and_then(Value::as_str) == Some(protocol))
            .collect()
    }

    /// Every route of the API `api_logical_id`, in template order.
    pub(super) fn declared_routes(&self, api_logical_id: &str) -> Result<Vec<DeclaredRoute<'a>>, GatewayError> {
        let mut routes = Vec::new();
        for (logical_id, route) in self.of_type("AWS::ApiGatewayV2::Route") {
            let Some(properties) = route.get("Properties") else {
                continue;
            };
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
            routes.push(DeclaredRoute {
                logical_id,
                route_key: route_key.to_owned(),
                integration,
                properties,
            });
        }
        Ok(routes)
    }

    pub(super) fn websocket_api(&self) -> Result<(String, RouteSelection), GatewayError> {
        let apis = self.apis_of_protocol("WEBSOCKET");
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

    pub(super) fn routes(
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
        for route in self.declared_routes(api_logical_id)? {
            routes.insert(
                route.route_key.clone(),
                Route {
                    logical_id: route.logical_id.clone(),
                    integration: self.route_integration(&route.integration, functions)?,
                    has_route_response: with_route_response.contains(route.logical_id),
                    route_key: route.route_key,
                },
            );
        }
        Ok(routes)
    }

    pub(super) fn route_integration(
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_selection_reads_the_body_field() {
        let selection = RouteSelection::parse("$request.body.action").unwrap();
        assert_eq!(selection.value_of(r#"{"action":"ping"}"#).as_deref(), Some("ping"));
        assert_eq!(selection.value_of(r#"{"other":1}"#), None);
        assert_eq!(selection.value_of("not json"), None);
        assert!(RouteSelection::parse("$request.header.x").is_err());
    }
}
