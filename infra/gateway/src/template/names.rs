//! The local names of the template's tables and queues, and the queues' local
//! URLs: [`LocalNames`] and the rule it documents, with `!Sub` names resolved
//! against the local stack name and the parameters' defaults.

use std::collections::BTreeMap;

use super::{Queue, StackModel, Table, TableName, LOCAL_ACCOUNT_ID, LOCAL_REGION};
use crate::GatewayError;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kebab_case_splits_words() {
        assert_eq!(kebab_case("RateLimits"), "rate-limits");
        assert_eq!(kebab_case("Connections"), "connections");
    }
}
