//! `MOCK` integrations: a route API Gateway answers by itself, with no
//! function behind it (Airwave's `ping`).
//!
//! API Gateway runs the integration's request template, which must produce
//! `{"statusCode": N}`; picks the integration response whose key matches that
//! status (`/2\d\d/`, or `$default`); and, when the route has a route response,
//! sends that integration response's template back on the socket.
//!
//! Templates are Velocity (VTL) in API Gateway. This gateway evaluates the
//! part Airwave's template uses: literal text with `$context.<name>` variables.
//! A template with any other reference (`$input`, `$util`) or a directive
//! (`#if`, `#set`) is refused when the template is read, naming it, rather than
//! answered differently from API Gateway.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::GatewayError;

/// The one template key this gateway selects: a template selection expression
/// of `\$default` (the escaped literal) or none picks the `$default` template.
pub const DEFAULT_KEY: &str = "$default";

/// What an `AWS::ApiGatewayV2::Integration` of type `MOCK` and its
/// `AWS::ApiGatewayV2::IntegrationResponse`s hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockIntegration {
    pub logical_id: String,
    /// The `$default` request template: its output names the status.
    pub request_template: String,
    /// Integration responses by key (`$default`, `/200/`, `/2\d\d/`): the
    /// `$default` response template of each, if it has one.
    pub responses: BTreeMap<String, Option<String>>,
}

/// What a message to a mock route produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockAnswer {
    /// The frame to send back (when the route has a route response), or none.
    Reply(Option<String>),
    /// API Gateway's configuration error: the client gets "Internal server error".
    ConfigurationError(String),
}

/// The `$context` variables a template may use, for one message.
pub struct TemplateContext<'a> {
    pub variables: &'a serde_json::Map<String, Value>,
}

impl MockIntegration {
    /// Reads the integration's templates and checks that this gateway can evaluate them.
    pub fn from_resources(
        logical_id: &str,
        integration: &Value,
        responses: &[(&String, &Value)],
    ) -> Result<Self, GatewayError> {
        let properties = integration.get("Properties").cloned().unwrap_or_default();
        check_selection(logical_id, properties.get("TemplateSelectionExpression"))?;
        let request_template = default_template(logical_id, "RequestTemplates", properties.get("RequestTemplates"))?
            .ok_or_else(|| {
                GatewayError::Template(format!(
                    "MOCK integration {logical_id} needs RequestTemplates with a {DEFAULT_KEY} template that gives {{\"statusCode\": 200}}"
                ))
            })?;
        let mut by_key = BTreeMap::new();
        for (response_id, response) in responses {
            let properties = response.get("Properties").cloned().unwrap_or_default();
            check_selection(response_id, properties.get("TemplateSelectionExpression"))?;
            let key = properties
                .get("IntegrationResponseKey")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    GatewayError::Template(format!("{response_id} has no literal IntegrationResponseKey"))
                })?;
            let template = default_template(response_id, "ResponseTemplates", properties.get("ResponseTemplates"))?;
            by_key.insert(key.to_owned(), template);
        }
        Ok(MockIntegration {
            logical_id: logical_id.to_owned(),
            request_template,
            responses: by_key,
        })
    }

    /// Answers one message as API Gateway would.
    pub fn answer(&self, context: &TemplateContext<'_>, has_route_response: bool) -> MockAnswer {
        let request = render(&self.request_template, context);
        let status = serde_json::from_str::<Value>(&request)
            .ok()
            .and_then(|value| value.get("statusCode").and_then(Value::as_u64));
        let Some(status) = status else {
            return MockAnswer::ConfigurationError(
                "statusCode should be an integer which defined in request template".into(),
            );
        };
        let Some(template) = self.response_for(status) else {
            return MockAnswer::ConfigurationError(format!("no integration response matches status {status}"));
        };
        if !has_route_response {
            return MockAnswer::Reply(None);
        }
        MockAnswer::Reply(template.map(|template| render(&template, context)))
    }

    /// The response whose key is `/regex/` matching the status, else `$default`.
    fn response_for(&self, status: u64) -> Option<Option<String>> {
        let status = status.to_string();
        self.responses
            .iter()
            .find(|(key, _)| {
                key.strip_prefix('/')
                    .and_then(|rest| rest.strip_suffix('/'))
                    .is_some_and(|pattern| status_matches(pattern, &status))
            })
            .or_else(|| self.responses.get_key_value(DEFAULT_KEY))
            .map(|(_, template)| template.clone())
    }
}

/// The status patterns templates use: digits and `\d`, matched whole.
fn status_matches(pattern: &str, status: &str) -> bool {
    let mut expected = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('d') => expected.push(None),
                _ => return false,
            },
            c if c.is_ascii_digit() => expected.push(Some(c)),
            _ => return false,
        }
    }
    expected.len() == status.len()
        && expected
            .iter()
            .zip(status.chars())
            .all(|(want, got)| want.is_none_or(|want| want == got))
}

fn check_selection(owner: &str, expression: Option<&Value>) -> Result<(), GatewayError> {
    match expression.and_then(Value::as_str) {
        None | Some("\\$default") => Ok(()),
        Some(other) => Err(GatewayError::Template(format!(
            "{owner}: TemplateSelectionExpression {other:?} is not supported locally; use \\$default"
        ))),
    }
}

fn default_template(owner: &str, property: &str, templates: Option<&Value>) -> Result<Option<String>, GatewayError> {
    let Some(templates) = templates else {
        return Ok(None);
    };
    let template = templates
        .get(DEFAULT_KEY)
        .and_then(Value::as_str)
        .ok_or_else(|| GatewayError::Template(format!("{owner}: {property} needs a literal {DEFAULT_KEY} template")))?;
    check_template(owner, template)?;
    Ok(Some(template.to_owned()))
}

/// Refuses what [`render`] would not evaluate as Velocity does.
fn check_template(owner: &str, template: &str) -> Result<(), GatewayError> {
    if template.contains('#') {
        return Err(GatewayError::Template(format!(
            "{owner}: the local gateway evaluates no template directives (#...): {template:?}"
        )));
    }
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        let Some(name) = after.strip_prefix("context.") else {
            return Err(GatewayError::Template(format!(
                "{owner}: the local gateway evaluates only $context variables in templates: {template:?}"
            )));
        };
        let length = variable_length(name);
        if length == 0 {
            return Err(GatewayError::Template(format!(
                "{owner}: an empty $context variable in {template:?}"
            )));
        }
        rest = &name[length..];
    }
    Ok(())
}

fn variable_length(name: &str) -> usize {
    name.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(name.len())
}

/// Literal text with `$context.<name>` replaced by the message's value (an
/// unknown name renders as nothing, as Velocity renders a null quietly).
fn render(template: &str, context: &TemplateContext<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("$context.") {
        out.push_str(&rest[..at]);
        let name_start = &rest[at + "$context.".len()..];
        let length = variable_length(name_start);
        let name = &name_start[..length];
        match context.variables.get(name) {
            Some(Value::String(text)) => out.push_str(text),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &name_start[length..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ping() -> MockIntegration {
        let integration = json!({"Properties": {
            "IntegrationType": "MOCK",
            "TemplateSelectionExpression": "\\$default",
            "RequestTemplates": {"$default": "{\"statusCode\": 200}"},
        }});
        let response = json!({"Properties": {
            "IntegrationResponseKey": "$default",
            "ResponseTemplates": {"$default": "{\"type\":\"pong\",\"connection\":\"$context.connectionId\"}"},
        }});
        let id = "PingIntegrationResponse".to_owned();
        MockIntegration::from_resources("PingIntegration", &integration, &[(&id, &response)]).unwrap()
    }

    #[test]
    fn a_mock_answers_its_response_template_with_context_variables() {
        let variables = json!({"connectionId": "abc="});
        let context = TemplateContext {
            variables: variables.as_object().unwrap(),
        };
        assert_eq!(
            ping().answer(&context, true),
            MockAnswer::Reply(Some(r#"{"type":"pong","connection":"abc="}"#.into()))
        );
        assert_eq!(ping().answer(&context, false), MockAnswer::Reply(None));
    }

    #[test]
    fn a_request_template_without_a_status_is_a_configuration_error() {
        let mut mock = ping();
        mock.request_template = "{}".into();
        let variables = serde_json::Map::new();
        let answer = mock.answer(&TemplateContext { variables: &variables }, true);
        assert!(matches!(answer, MockAnswer::ConfigurationError(_)), "{answer:?}");
    }

    #[test]
    fn status_patterns_match_whole_statuses() {
        assert!(status_matches("200", "200"));
        assert!(status_matches(r"2\d\d", "204"));
        assert!(!status_matches(r"2\d\d", "404"));
        assert!(!status_matches("20", "200"));
    }

    #[test]
    fn templates_beyond_literal_text_and_context_are_refused() {
        assert!(check_template("x", r#"{"id": $input.json('$.id')}"#).is_err());
        assert!(check_template("x", "#set($a = 1)").is_err());
        assert!(check_template("x", r#"{"type":"pong"}"#).is_ok());
        assert!(check_template("x", "$context.requestId").is_ok());
    }
}
