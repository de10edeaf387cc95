//! A function's `Schedule` events (`Schedule: rate(1 minute)`), read from
//! the template. Only `rate(...)` expressions are read; a `cron(...)` one is
//! refused with its name, since a local stack that silently never ran it
//! would hide a bug.

use std::time::Duration;

use serde_json::Value;

use crate::GatewayError;

/// One `Type: Schedule` event of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// `FunctionLogicalId.EventName`.
    pub name: String,
    /// The binary invoked.
    pub function: String,
    pub period: Duration,
}

/// The `Schedule` events of one function resource.
pub(crate) fn schedules_of(logical_id: &str, function: &str, resource: &Value) -> Result<Vec<Schedule>, GatewayError> {
    let Some(events) = resource.pointer("/Properties/Events").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let mut schedules = Vec::new();
    for (event_name, event) in events {
        if event.get("Type").and_then(Value::as_str) != Some("Schedule") {
            continue;
        }
        let name = format!("{logical_id}.{event_name}");
        if event.pointer("/Properties/Enabled").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let expression = event
            .pointer("/Properties/Schedule")
            .and_then(Value::as_str)
            .ok_or_else(|| GatewayError::Template(format!("{name} has no literal Schedule")))?;
        schedules.push(Schedule {
            period: rate(&name, expression)?,
            name,
            function: function.to_owned(),
        });
    }
    Ok(schedules)
}

/// `rate(N unit)`: minute(s), hour(s) or day(s), as EventBridge reads it.
fn rate(name: &str, expression: &str) -> Result<Duration, GatewayError> {
    let refuse = || {
        GatewayError::Template(format!(
            "{name}: Schedule {expression:?} is not supported locally; use rate(N minutes|hours|days)"
        ))
    };
    let inner = expression
        .strip_prefix("rate(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(refuse)?;
    let (count, unit) = inner.trim().split_once(' ').ok_or_else(refuse)?;
    let count: u64 = count.parse().map_err(|_| refuse())?;
    let unit_seconds = match (count, unit.trim()) {
        (1, "minute") | (2.., "minutes") => 60,
        (1, "hour") | (2.., "hours") => 3_600,
        (1, "day") | (2.., "days") => 86_400,
        _ => return Err(refuse()),
    };
    Ok(Duration::from_secs(count * unit_seconds))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rates_read_as_eventbridge_reads_them() {
        assert_eq!(rate("s", "rate(1 minute)").unwrap(), Duration::from_secs(60));
        assert_eq!(rate("s", "rate(5 minutes)").unwrap(), Duration::from_secs(300));
        assert_eq!(rate("s", "rate(2 hours)").unwrap(), Duration::from_secs(7_200));
        assert!(
            rate("s", "rate(1 minutes)").is_err(),
            "EventBridge wants the singular for 1"
        );
        assert!(rate("s", "rate(0 minutes)").is_err());
        assert!(rate("s", "cron(0 12 * * ? *)").is_err());
    }

    #[test]
    fn a_functions_schedule_events_are_read() {
        let resource = json!({"Properties": {"Events": {
            "Sweep": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}},
            "Off": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)", "Enabled": false}},
            "Stream": {"Type": "DynamoDB", "Properties": {}},
        }}});
        let schedules = schedules_of("ReaperFunction", "reaper", &resource).unwrap();
        assert_eq!(
            schedules,
            vec![Schedule {
                name: "ReaperFunction.Sweep".into(),
                function: "reaper".into(),
                period: Duration::from_secs(60),
            }]
        );
    }
}
