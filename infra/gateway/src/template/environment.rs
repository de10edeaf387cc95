//! The environment a function gets locally: each variable of the template
//! resolved to its local value (a table's local name, a queue's local URL, a
//! parameter's default or override, the gateway's Management API endpoint).
//! Apart from `functions`, which only reads what the template writes.

use std::collections::BTreeMap;

use super::{EnvValue, LocalNames, StackModel};
use crate::GatewayError;

impl StackModel {
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
}
