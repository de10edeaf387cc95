//! CloudFormation's intrinsic functions as JSON: the YAML short tags turned
//! into their long forms, and the logical ids an expression refers to. Apart
//! from the parser because every kind of resource reads its references
//! through it, and it knows nothing of any of them.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Converts YAML to JSON, turning CloudFormation's short tags into their long forms.
/// Converts YAML to JSON, turning CloudFormation's short tags into their long forms.
pub(super) fn yaml_to_json(value: serde_norway::Value) -> Value {
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
pub(super) fn references(value: &Value) -> BTreeSet<String> {
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
                            // SAM's `!Ref Function.Alias`: the function's alias.
                            found.insert(name.strip_suffix(".Alias").unwrap_or(name).to_owned());
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
    fn a_functions_alias_refers_to_the_function() {
        let yaml: serde_norway::Value =
            serde_norway::from_str("a: !Ref F.Alias\nb: !Sub \"functions/${G.Alias}/invocations\"").unwrap();
        assert_eq!(
            references(&yaml_to_json(yaml)),
            ["F", "G"].into_iter().map(String::from).collect()
        );
    }
}
