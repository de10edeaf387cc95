//! The HTTP API (an `AWS::ApiGatewayV2::Api` with `ProtocolType: HTTP`): its
//! routes (`METHOD /path`), the function behind each (`AWS_PROXY` with
//! payload format 2.0, the only kind the local gateway serves), its CORS
//! configuration and its stage's throttle.

use std::collections::BTreeMap;

use airwave_local::Quota;
use serde_json::Value;

use super::functions::Function;
use super::intrinsics::references;
use super::parser::Parser;
use super::routes::{DeclaredRoute, RouteIntegration};
use crate::GatewayError;

/// The HTTP API the template defines.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpApi {
    pub logical_id: String,
    pub routes: Vec<HttpRoute>,
    /// `None`: no CORS headers, and preflight requests are not answered.
    pub cors: Option<Cors>,
    /// The stage's default route throttle.
    pub throttle: Option<Quota>,
}

/// One route: `POST /v1/publish` and the function binary that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRoute {
    pub logical_id: String,
    pub route_key: String,
    pub method: String,
    pub path: String,
    pub binary: String,
}

/// The API's `CorsConfiguration`, as API Gateway applies it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub max_age: Option<i64>,
}

impl Cors {
    /// The `Access-Control-Allow-Origin` for a request from `origin`, if allowed.
    pub fn allowed_origin(&self, origin: &str) -> Option<String> {
        if self.allow_origins.iter().any(|allowed| allowed == "*") {
            Some("*".to_owned())
        } else {
            self.allow_origins
                .iter()
                .find(|allowed| allowed.eq_ignore_ascii_case(origin))
                .cloned()
        }
    }
}

impl Parser<'_> {
    pub(super) fn http_api(&self, functions: &BTreeMap<String, Function>) -> Result<Option<HttpApi>, GatewayError> {
        let apis = self.apis_of_protocol("HTTP");
        let (logical_id, api) = match apis.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            _ => {
                return Err(GatewayError::Template(
                    "more than one HTTP API; the local gateway serves at most one".into(),
                ))
            }
        };
        let cors = api.pointer("/Properties/CorsConfiguration").map(|cors| Cors {
            allow_origins: self.text_list(cors.get("AllowOrigins")),
            allow_methods: self.text_list(cors.get("AllowMethods")),
            allow_headers: self.text_list(cors.get("AllowHeaders")),
            max_age: cors.get("MaxAge").and_then(|value| self.resolve_integer(value)),
        });
        let mut routes = Vec::new();
        for DeclaredRoute {
            logical_id: route_id,
            route_key,
            integration,
            properties,
        } in self.declared_routes(logical_id)?
        {
            let (method, path) = route_key.split_once(' ').ok_or_else(|| {
                GatewayError::Template(format!(
                    "route {route_id}: RouteKey {route_key:?} is not `METHOD /path`; the local gateway serves no $default HTTP route"
                ))
            })?;
            if properties
                .get("AuthorizationType")
                .and_then(Value::as_str)
                .unwrap_or("NONE")
                != "NONE"
            {
                return Err(GatewayError::Template(format!(
                    "route {route_id}: the local gateway serves only AuthorizationType NONE on the HTTP API"
                )));
            }
            let format = self
                .resources
                .get(&integration)
                .and_then(|resource| resource.pointer("/Properties/PayloadFormatVersion"))
                .and_then(|value| self.resolve_text(value));
            if format.as_deref() != Some("2.0") {
                return Err(GatewayError::Template(format!(
                    "integration {integration}: the local gateway serves HTTP API integrations with PayloadFormatVersion \"2.0\""
                )));
            }
            let RouteIntegration::Function { binary, .. } = self.route_integration(&integration, functions)? else {
                return Err(GatewayError::Template(format!(
                    "integration {integration}: an HTTP API route must invoke a function"
                )));
            };
            routes.push(HttpRoute {
                logical_id: route_id.clone(),
                method: method.to_ascii_uppercase(),
                path: path.to_owned(),
                route_key,
                binary,
            });
        }
        let throttle = self
            .of_type("AWS::ApiGatewayV2::Stage")
            .into_iter()
            .find(|(_, stage)| {
                stage
                    .pointer("/Properties/ApiId")
                    .is_some_and(|api| references(api).contains(logical_id))
            })
            .and_then(|(_, stage)| stage.pointer("/Properties/DefaultRouteSettings"))
            .and_then(|settings| {
                let rate = settings
                    .get("ThrottlingRateLimit")
                    .and_then(|value| self.resolve_text(value))?;
                let burst = settings
                    .get("ThrottlingBurstLimit")
                    .and_then(|value| self.resolve_text(value))?;
                Some(Quota {
                    per_second: rate.parse().ok()?,
                    burst: burst.parse().ok()?,
                })
            });
        Ok(Some(HttpApi {
            logical_id: logical_id.clone(),
            routes,
            cors,
            throttle,
        }))
    }

    /// A list of literals, or a `!Ref` to a comma-delimited parameter.
    fn text_list(&self, value: Option<&Value>) -> Vec<String> {
        match value {
            Some(Value::Array(items)) => items.iter().filter_map(|item| self.resolve_text(item)).collect(),
            Some(value) => self
                .resolve_text(value)
                .map(|text| text.split(',').map(|part| part.trim().to_owned()).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }
}
