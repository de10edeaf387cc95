//! Scheduled invocations: the template's `Schedule` events
//! ([`crate::template::Schedule`]), invoked with EventBridge's scheduled
//! event, as EventBridge would. Tests can run every schedule faster with
//! [`ScheduleOptions::period`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::events::new_id;
use crate::template::{Schedule, LOCAL_ACCOUNT_ID, LOCAL_REGION};
use crate::Invoker;

/// How a [`ScheduleRunner`] runs the template's schedules.
#[derive(Debug, Clone, Default)]
pub struct ScheduleOptions {
    /// Run every schedule at this period instead of its own (tests use seconds).
    pub period: Option<Duration>,
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
