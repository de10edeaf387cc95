"""Checks API Gateway's own logging in template.yaml: access logs in JSON with
the fields an operator follows a connection by, and execution logging as a
parameter. Both are off by default (a stage cannot log until the account has
API Gateway's CloudWatch Logs role), and both are one parameter away.

Run by `make template-check` with the project's tool environment.
"""

import json
import unittest

from template_code import RESOURCES, ROOT, TEMPLATE
STAGE = RESOURCES["Stage"]["Properties"]
# What the book's "API Gateway's own logs" promises each access log line holds.
ACCESS_LOG_FIELDS = {
    "requestId",
    "connectionId",
    "eventType",
    "routeKey",
    "status",
    "integrationStatus",
    "integrationLatency",
    "error",
    "sourceIp",
    "requestTimeEpoch",
}


class AccessLogsTest(unittest.TestCase):
    def access_log_settings(self):
        condition, when_on, when_off = STAGE["AccessLogSettings"]["Fn::If"]
        self.assertEqual(condition, "HasAccessLogs")
        self.assertEqual(when_off, {"Ref": "AWS::NoValue"})
        return when_on

    def test_access_logs_are_one_parameter_away_and_off_by_default(self):
        parameter = TEMPLATE["Parameters"]["AccessLogs"]
        self.assertEqual(parameter["Default"], "false")
        self.assertEqual(TEMPLATE["Conditions"]["HasAccessLogs"], {"Fn::Equals": [{"Ref": "AccessLogs"}, "true"]})
        self.assertEqual(RESOURCES["AccessLogGroup"].get("Condition"), "HasAccessLogs")

    def test_each_access_log_line_is_json_with_the_documented_fields(self):
        line = json.loads(self.access_log_settings()["Format"])
        self.assertEqual(set(line), ACCESS_LOG_FIELDS)
        for field, value in line.items():
            with self.subTest(field=field):
                self.assertTrue(value.startswith("$context."), value)

    def test_access_logs_go_to_the_stacks_group_with_its_retention(self):
        self.assertEqual(self.access_log_settings()["DestinationArn"], {"Fn::GetAtt": ["AccessLogGroup", "Arn"]})
        group = RESOURCES["AccessLogGroup"]["Properties"]
        self.assertEqual(group["RetentionInDays"], {"Ref": "LogRetentionDays"})

    def test_execution_logging_is_a_parameter_that_defaults_to_off_and_never_logs_payloads(self):
        parameter = TEMPLATE["Parameters"]["ExecutionLogLevel"]
        self.assertEqual(parameter["Default"], "OFF")
        self.assertEqual(set(parameter["AllowedValues"]), {"OFF", "ERROR", "INFO"})
        settings = STAGE["DefaultRouteSettings"]
        self.assertEqual(settings["LoggingLevel"], {"Ref": "ExecutionLogLevel"})
        # Full request and response data would put tokens and payloads in the logs.
        self.assertIs(settings["DataTraceEnabled"], False)


if __name__ == "__main__":
    unittest.main()
