//! Lambda's event filtering (`FilterCriteria.Filters[].Pattern`) for stream
//! records: the EventBridge pattern syntax Lambda uses. A record is delivered
//! when any of the mapping's patterns matches it; the others are dropped
//! before batching, as Lambda does.
//!
//! Supported: nested objects, lists of exact values (strings, numbers,
//! booleans, null), `prefix`, `suffix`, `equals-ignore-case`, `exists`,
//! `anything-but` (a value, a list, or `{"prefix": ...}`) and `numeric`
//! comparisons. Anything else is refused when the template is read.

use serde_json::{Map, Value};

/// Checks that `pattern` uses only the supported syntax.
pub(crate) fn validate(pattern: &Value) -> Result<(), String> {
    let Value::Object(fields) = pattern else {
        return Err("a filter pattern must be a JSON object".into());
    };
    for (key, value) in fields {
        match value {
            Value::Object(_) => validate(value)?,
            Value::Array(matchers) => {
                for matcher in matchers {
                    validate_matcher(key, matcher)?;
                }
            }
            _ => return Err(format!("{key}: a pattern's values must be lists or objects")),
        }
    }
    Ok(())
}

fn validate_matcher(key: &str, matcher: &Value) -> Result<(), String> {
    let Value::Object(operator) = matcher else {
        return match matcher {
            Value::Array(_) => Err(format!("{key}: nested lists are not a pattern")),
            _ => Ok(()),
        };
    };
    let [(name, argument)] = operator.iter().collect::<Vec<_>>()[..] else {
        return Err(format!("{key}: a matcher object has exactly one operator"));
    };
    let valid = match name.as_str() {
        "prefix" | "suffix" | "equals-ignore-case" => argument.is_string(),
        "exists" => argument.is_boolean(),
        "anything-but" => match argument {
            Value::Array(values) => values.iter().all(|value| !value.is_object() && !value.is_array()),
            Value::Object(inner) => inner.len() == 1 && inner.get("prefix").is_some_and(Value::is_string),
            _ => true,
        },
        "numeric" => numeric_conditions(argument).is_some(),
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!("{key}: unsupported filter matcher {matcher}"))
    }
}

/// Whether `event` matches `pattern` (validated beforehand).
pub(crate) fn matches(pattern: &Value, event: &Value) -> bool {
    match pattern {
        Value::Object(fields) => object_matches(fields, Some(event)),
        _ => false,
    }
}

fn object_matches(pattern: &Map<String, Value>, value: Option<&Value>) -> bool {
    pattern.iter().all(|(key, expected)| {
        let field = value.and_then(|value| value.get(key));
        match expected {
            Value::Object(inner) => object_matches(inner, field),
            Value::Array(matchers) => matchers.iter().any(|matcher| matcher_matches(matcher, field)),
            _ => false,
        }
    })
}

/// Applies `test` to the field, or to each element when the field is a list.
fn any_element(field: Option<&Value>, test: impl Fn(&Value) -> bool) -> bool {
    match field {
        None => false,
        Some(Value::Array(items)) => items.iter().any(test),
        Some(value) => test(value),
    }
}

fn matcher_matches(matcher: &Value, field: Option<&Value>) -> bool {
    let Value::Object(operator) = matcher else {
        return any_element(field, |value| value == matcher);
    };
    let Some((name, argument)) = operator.iter().next() else {
        return false;
    };
    let text = |test: &dyn Fn(&str, &str) -> bool| {
        let Some(argument) = argument.as_str() else {
            return false;
        };
        any_element(field, |value| value.as_str().is_some_and(|value| test(value, argument)))
    };
    match name.as_str() {
        "prefix" => text(&|value, argument| value.starts_with(argument)),
        "suffix" => text(&|value, argument| value.ends_with(argument)),
        "equals-ignore-case" => text(&|value, argument| value.eq_ignore_ascii_case(argument)),
        "exists" => argument.as_bool() == Some(field.is_some()),
        "anything-but" => field.is_some() && !any_element(field, |value| excluded(argument, value)),
        "numeric" => match numeric_conditions(argument) {
            Some(conditions) => any_element(field, |value| {
                value
                    .as_f64()
                    .is_some_and(|number| conditions.iter().all(|(op, bound)| compare(op, number, *bound)))
            }),
            None => false,
        },
        _ => false,
    }
}

fn excluded(argument: &Value, value: &Value) -> bool {
    match argument {
        Value::Array(values) => values.contains(value),
        Value::Object(inner) => match (inner.get("prefix").and_then(Value::as_str), value.as_str()) {
            (Some(prefix), Some(value)) => value.starts_with(prefix),
            _ => false,
        },
        single => single == value,
    }
}

/// `["<", 10, ">=", 2]` as (operator, bound) pairs.
fn numeric_conditions(argument: &Value) -> Option<Vec<(String, f64)>> {
    let items = argument.as_array()?;
    if items.is_empty() || items.len() % 2 != 0 {
        return None;
    }
    items
        .chunks(2)
        .map(|pair| {
            let op = pair.first()?.as_str()?;
            let bound = pair.get(1)?.as_f64()?;
            matches!(op, "<" | "<=" | "=" | ">" | ">=").then(|| (op.to_owned(), bound))
        })
        .collect()
}

fn compare(op: &str, number: f64, bound: f64) -> bool {
    match op {
        "<" => number < bound,
        "<=" => number <= bound,
        "=" => number == bound,
        ">" => number > bound,
        ">=" => number >= bound,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ttl_removal() -> Value {
        json!({
            "eventName": "REMOVE",
            "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
            "dynamodb": {"OldImage": {"channel": {"S": "prices"}, "n": 5}},
        })
    }

    #[test]
    fn exact_values_and_nesting() {
        let pattern = json!({"eventName": ["REMOVE"], "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]}});
        validate(&pattern).unwrap();
        assert!(matches(&pattern, &ttl_removal()));
        assert!(!matches(&pattern, &json!({"eventName": "REMOVE"})), "no userIdentity");
        assert!(!matches(
            &pattern,
            &json!({"eventName": "INSERT", "userIdentity": ttl_removal()["userIdentity"]})
        ));
    }

    #[test]
    fn operators() {
        let record = ttl_removal();
        let check = |pattern: Value| {
            validate(&pattern).unwrap();
            matches(&pattern, &record)
        };
        assert!(check(
            json!({"dynamodb": {"OldImage": {"channel": {"S": [{"prefix": "pri"}]}}}})
        ));
        assert!(check(
            json!({"dynamodb": {"OldImage": {"channel": {"S": [{"suffix": "ces"}]}}}})
        ));
        assert!(check(json!({"eventName": [{"equals-ignore-case": "remove"}]})));
        assert!(check(json!({"dynamodb": {"NewImage": [{"exists": false}]}})));
        assert!(!check(json!({"dynamodb": {"OldImage": [{"exists": false}]}})));
        assert!(check(json!({"eventName": [{"anything-but": ["INSERT", "MODIFY"]}]})));
        assert!(!check(json!({"eventName": [{"anything-but": "REMOVE"}]})));
        assert!(check(
            json!({"dynamodb": {"OldImage": {"n": [{"numeric": [">", 1, "<=", 5]}]}}})
        ));
        assert!(!check(
            json!({"dynamodb": {"OldImage": {"n": [{"numeric": ["<", 5]}]}}})
        ));
    }

    #[test]
    fn unsupported_syntax_is_refused() {
        assert!(validate(&json!({"eventName": "REMOVE"})).is_err());
        assert!(validate(&json!({"eventName": [{"wildcard": "R*"}]})).is_err());
        assert!(validate(&json!({"n": [{"numeric": [">"]}]})).is_err());
        assert!(validate(&json!(["REMOVE"])).is_err());
    }
}
