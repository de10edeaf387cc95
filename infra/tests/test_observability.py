"""Checks what an operator watches in template.yaml: the write-to-delivery
latency has its alarm and its percentiles on the dashboard, the dashboard
shows refusals by reason, and every Airwave metric the dashboard names is
one the functions record.

Run by `make template-check` with the project's tool environment.
"""

import json
import re
import unittest

from template_code import RESOURCES, ROOT

# The metric names the functions record (shared/src/telemetry.rs).
RECORDED = set(
    re.findall(r'pub const [A-Z_]+: &str = "([A-Za-z]+)";', (ROOT / "shared/src/telemetry.rs").read_text())
)
ALARMS = {name: r["Properties"] for name, r in RESOURCES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def dashboard():
    body = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    # Substitutions are names, never JSON: any string stands in for them.
    return json.loads(re.sub(r"\$\{[^}]+\}", "x", body))


def airwave_metrics(widget):
    for line in widget["properties"].get("metrics", []):
        if line and line[0] == "Airwave":
            yield line


class ObservabilityTest(unittest.TestCase):
    def test_the_latency_alarm_watches_the_p99_of_the_recorded_metric(self):
        alarm = ALARMS["DeliveryLatencyAlarm"]
        self.assertIn("DeliveryLatency", RECORDED)
        self.assertEqual((alarm["Namespace"], alarm["MetricName"]), ("Airwave", "DeliveryLatency"))
        self.assertEqual(alarm["Dimensions"], [{"Name": "function", "Value": "stream-processor"}])
        self.assertEqual(alarm["ExtendedStatistic"], "p99")
        self.assertNotIn("Statistic", alarm)
        self.assertEqual(alarm["Threshold"], {"Ref": "DeliveryLatencyAlarmMs"})
        self.assertEqual(alarm["TreatMissingData"], "notBreaching")

    def test_the_dashboard_shows_latency_percentiles_and_refusals_by_reason(self):
        widgets = dashboard()["widgets"]
        latency = [
            line[-1]["stat"]
            for widget in widgets
            for line in airwave_metrics(widget)
            if line[1] == "DeliveryLatency"
        ]
        self.assertEqual(latency, ["p50", "p90", "p99"])
        expressions = [
            item["expression"]
            for widget in widgets
            for line in widget["properties"].get("metrics", [])
            for item in line
            if isinstance(item, dict) and "expression" in item
        ]
        self.assertTrue(
            any("ConnectionsRefusedByReason" in e and "{Airwave,function,reason}" in e for e in expressions),
            expressions,
        )

    def test_the_dashboard_shows_connects_deliveries_prunes_and_the_failure_queue(self):
        shown = {line[1] for widget in dashboard()["widgets"] for line in widget["properties"].get("metrics", [])
                 if len(line) > 1 and isinstance(line[1], str)}
        for metric in ("ConnectionsAdmitted", "FanoutDelivered", "FanoutGone", "FanoutExpired",
                       "ApproximateNumberOfMessagesVisible"):
            self.assertIn(metric, shown)

    def test_every_airwave_metric_on_the_dashboard_is_one_the_functions_record(self):
        # The alarms' metrics are checked with their functions in test_template.
        shown = {line[1] for widget in dashboard()["widgets"] for line in airwave_metrics(widget)}
        self.assertEqual(shown - RECORDED, set())

    def test_the_recorded_names_are_read_from_the_functions_source(self):
        self.assertNotIn("DeliveryLatencyTypo", RECORDED)
        self.assertIn("FanoutDelivered", RECORDED)
        self.assertGreater(len(RECORDED), 20)


if __name__ == "__main__":
    unittest.main()
