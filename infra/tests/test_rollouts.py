"""Safe rollouts in template.yaml: every function is invoked through its
`live` alias (API Gateway, the stream mapping, the schedule), which each
deploy moves as DeploymentType says, and which its error alarm rolls back."""

import unittest

from template_code import FUNCTIONS, RESOURCES, TEMPLATE, invoked_function

GLOBALS = TEMPLATE["Globals"]["Function"]


class InvokedThroughTheLiveAlias(unittest.TestCase):
    def test_every_function_publishes_a_version_behind_the_live_alias(self):
        self.assertEqual(GLOBALS["AutoPublishAlias"], "live")
        self.assertEqual(GLOBALS["DeploymentPreference"]["Type"], {"Ref": "DeploymentType"})
        self.assertEqual(TEMPLATE["Parameters"]["DeploymentType"]["Default"], "AllAtOnce")

    def test_each_function_rolls_back_on_its_own_error_alarm(self):
        for name, function in FUNCTIONS.items():
            alarms = function["Properties"]["DeploymentPreference"]["Alarms"]
            self.assertEqual(len(alarms), 1, name)
            alarm = RESOURCES[alarms[0]["Ref"]]["Properties"]
            self.assertEqual(alarm["MetricName"], "Errors", name)
            dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
            self.assertEqual(dimensions["FunctionName"], {"Ref": name})

    def test_everything_that_invokes_a_function_invokes_its_alias(self):
        invokers = 0
        for logical_id, resource in RESOURCES.items():
            properties = resource.get("Properties", {})
            if resource["Type"] in ("AWS::Lambda::Permission", "AWS::Lambda::EventSourceMapping"):
                self.assertTrue(properties["FunctionName"]["Ref"].endswith(".Alias"), logical_id)
                self.assertIn(invoked_function(properties["FunctionName"]), FUNCTIONS, logical_id)
                invokers += 1
            if resource["Type"] == "AWS::ApiGatewayV2::Integration" and "IntegrationUri" in properties:
                self.assertIn(".Alias}/invocations", properties["IntegrationUri"]["Fn::Sub"], logical_id)
                invokers += 1
        self.assertGreaterEqual(invokers, 8)


if __name__ == "__main__":
    unittest.main()
