//! Scheduled invocations: a SAM function's `Schedule` events
//! (`Schedule: rate(1 minute)`), invoked with EventBridge's scheduled event,
//! as EventBridge would.
//!
//! Only `rate(...)` expressions are read; a `cron(...)` one is refused with
//! its name, since a local stack that silently never ran it would hide a bug.
//! Tests can run every schedule faster with [`ScheduleOptions::period`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::events::new_id;
use crate::template::{LOCAL_ACCOUNT_ID, LOCAL_REGION};
use crate::{GatewayError, Invoker};

/// One `Type: Schedule` event of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// `FunctionLogicalId.EventName`.
    pub name: String,
    /// The binary invoked.
    pub function: String,
    pub period: Duration,
}

/// How a [`ScheduleRunner`] runs the template's schedules.
#[derive(Debug, Clone, Default)]
pub struct ScheduleOptions {
    /// Run every schedule at this period instead of its own (tests use seconds).
    pub period: Option<Duration>,
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

/// EventBridge's scheduled event.
fn scheduled_event(schedule: &Schedule) -> Value {
    use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs() as i64)
        .unwrap_or_default();
    let time = DateTime::from_secs(now)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_default();
    json!({
        "version": "0",
        "id": new_id(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT_ID,
        "time": time,
        "region": LOCAL_REGION,
        "resources": [format!("arn:aws:events:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:rule/{}", schedule.name)],
        "detail": Value::Object(Map::new()),
    })
}

/// Invokes each schedule's function at its period until shut down.
pub struct ScheduleRunner {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ScheduleRunner {
    pub fn start(schedules: &[Schedule], invoker: Arc<dyn Invoker>, options: ScheduleOptions) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tasks = schedules
            .iter()
            .cloned()
            .map(|schedule| {
                let invoker = invoker.clone();
                let mut stopped = stopped.clone();
                let period = options.period.unwrap_or(schedule.period);
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(period);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    // EventBridge's first run comes one period after the rule exists.
                    ticks.tick().await;
                    loop {
                        tokio::select! {
                            _ = ticks.tick() => {}
                            _ = stopped.changed() => return,
                        }
                        match invoker.invoke(&schedule.function, scheduled_event(&schedule)).await {
                            Ok(_) => tracing::debug!(schedule = %schedule.name, "scheduled invocation done"),
                            // EventBridge retries a failed asynchronous invocation; the next tick does here.
                            Err(error) => {
                                tracing::warn!(schedule = %schedule.name, error = %error, "scheduled invocation failed")
                            }
                        }
                    }
                })
            })
            .collect();
        ScheduleRunner { stop, tasks }
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
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
