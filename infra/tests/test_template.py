"""Checks that template.yaml and the Rust workspace agree: binaries, routes,
stream mappings, alarms, timeouts, environment variables and the
configuration chapter. The IAM grants are checked in test_template_grants.py.
Run by `make template-check`."""

import json
import re
import unittest

from template_code import (
    FUNCTIONS,
    RESOURCES,
    ROOT,
    TEMPLATE,
    alarm_metrics,
    binary_of,
    config_variables,
    environment,
    invoked_function,
    listed,
    reachable_fns,
    routed_functions,
    statements,
    telemetry_metrics,
    workspace_binaries,
)


class TemplateMatchesTheCode(unittest.TestCase):
    """The template's functions, routes, mappings and alarms, against the code."""

    def test_every_function_builds_a_binary_of_the_workspace(self):
        binaries = workspace_binaries()
        for name, function in FUNCTIONS.items():
            self.assertEqual(function["Metadata"]["BuildMethod"], "rust-cargolambda", name)
            self.assertIn(binary_of(function), binaries, name)
        self.assertEqual({binary_of(f) for f in FUNCTIONS.values()}, binaries, "a binary without a function")

    def test_every_route_reaches_a_function_that_api_gateway_may_invoke(self):
        routes = {r["Properties"]["RouteKey"]: r for r in RESOURCES.values() if r["Type"] == "AWS::ApiGatewayV2::Route"}
        self.assertEqual(set(routes), {"$connect", "$disconnect", "$default", "ping", "POST /v1/publish", "POST /v1/poll"})
        self.assertEqual(
            RESOURCES["WebSocketApi"]["Properties"]["RouteSelectionExpression"], "$request.body.action"
        )
        permissions = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::Lambda::Permission"]
        for key, function_name in routed_functions().items():
            self.assertIn(function_name, FUNCTIONS, key)
            self.assertTrue(
                any(
                    invoked_function(p["FunctionName"]) == function_name
                    # An HTTP API route's key `POST /v1/publish` is `POST/v1/publish` in the ARN.
                    and p["SourceArn"]["Fn::Sub"].endswith("/*/" + key.replace(" ", ""))
                    for p in permissions
                ),
                f"no invoke permission for {key}",
            )

    def test_a_ping_is_answered_by_api_gateway_alone(self):
        route = next(r["Properties"] for r in RESOURCES.values()
                     if r["Type"] == "AWS::ApiGatewayV2::Route" and r["Properties"]["RouteKey"] == "ping")
        integration_id = re.fullmatch(r"integrations/\$\{(\w+)\}", route["Target"]["Fn::Sub"]).group(1)
        integration = RESOURCES[integration_id]["Properties"]
        self.assertEqual(integration["IntegrationType"], "MOCK")
        self.assertNotIn("ping", routed_functions())
        self.assertEqual(json.loads(integration["RequestTemplates"]["$default"]), {"statusCode": 200})
        responses = [r["Properties"] for r in RESOURCES.values()
                     if r["Type"] == "AWS::ApiGatewayV2::IntegrationResponse"
                     and r["Properties"]["IntegrationId"] == {"Ref": integration_id}]
        self.assertEqual(len(responses), 1)
        self.assertEqual(json.loads(responses[0]["ResponseTemplates"]["$default"]), {"type": "pong"})
        self.assertTrue(any(r["Type"] == "AWS::ApiGatewayV2::RouteResponse"
                            and r["Properties"]["RouteId"] == {"Ref": next(k for k, v in RESOURCES.items() if v["Properties"] is route)}
                            for r in RESOURCES.values()), "the pong is sent back only through a route response")

    def test_the_stage_deploys_itself_after_every_route(self):
        # One stage per API: the WebSocket API's and the HTTP API's.
        stages = {r["Properties"]["ApiId"]["Ref"]: r for r in RESOURCES.values() if r["Type"] == "AWS::ApiGatewayV2::Stage"}
        self.assertEqual(set(stages), {"WebSocketApi", "HttpApi"})
        for stage in stages.values():
            self.assertIs(stage["Properties"].get("AutoDeploy"), True)
            # A deployment resource would pin the stage to the routes of its day.
            self.assertNotIn("DeploymentId", stage["Properties"])
        self.assertFalse([r for r in RESOURCES.values() if r["Type"] == "AWS::ApiGatewayV2::Deployment"])
        # The WebSocket stage's first deployment has every route; an HTTP API's
        # $default stage deploys each route as it is created.
        route_parts = {name for name, r in RESOURCES.items()
                       if r["Type"] in ("AWS::ApiGatewayV2::Route", "AWS::ApiGatewayV2::RouteResponse",
                                        "AWS::ApiGatewayV2::IntegrationResponse")
                       and r["Properties"]["ApiId"] == {"Ref": "WebSocketApi"}}
        self.assertEqual(route_parts - set(stages["WebSocketApi"].get("DependsOn", [])), set())

    def test_the_messages_mapping_only_takes_new_messages(self):
        filters = RESOURCES["NewMessagesMapping"]["Properties"]["FilterCriteria"]["Filters"]
        self.assertEqual([json.loads(f["Pattern"]) for f in filters], [{"eventName": ["INSERT"]}])

    def test_the_failure_queue_and_every_function_have_alarms_and_the_dashboard_shows_every_function(self):
        alarms = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
        metrics = [metric for alarm in alarms for metric in alarm_metrics(alarm)]
        watched = {v.get("Ref") if isinstance(v, dict) else v for _, _, dimensions in metrics for v in dimensions.values()}
        for name in FUNCTIONS:
            self.assertIn(name, watched, f"no alarm on {name}")
        queue_alarms = [dimensions for namespace, _, dimensions in metrics if namespace == "AWS/SQS"]
        self.assertEqual(queue_alarms, [{"QueueName": {"Fn::GetAtt": ["StreamFailureQueue", "QueueName"]}}])
        body = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        for name in FUNCTIONS:
            self.assertIn("${%s}" % name, body, f"{name} is not on the dashboard")

    def test_environment_variables_match_the_configuration_both_ways(self):
        known = config_variables() | {"RUST_LOG"}
        set_somewhere = set()
        for name, function in FUNCTIONS.items():
            variables = set(environment(function))
            self.assertLessEqual(variables, known, f"{name} sets variables the code never reads")
            set_somewhere |= variables
        # Server keys in plain text are for local stacks; a deployment reads them from Secrets Manager.
        local_only = {"AIRWAVE_SERVER_KEYS"}
        self.assertEqual(config_variables() - set_somewhere, local_only, "variables no function is given")
        self.assertIn("AIRWAVE_MANAGEMENT_ENDPOINT", environment(FUNCTIONS["StreamProcessorFunction"]))

    def test_the_stream_mapping_reports_partial_failures_and_stops_retrying(self):
        mapping = RESOURCES["NewMessagesMapping"]["Properties"]
        self.assertEqual(mapping["FunctionResponseTypes"], ["ReportBatchItemFailures"])
        self.assertTrue(mapping["BisectBatchOnFunctionError"])
        self.assertGreater(mapping["MaximumRecordAgeInSeconds"], 0)
        self.assertIn("OnFailure", mapping["DestinationConfig"])
        self.assertEqual(RESOURCES["MessagesTable"]["Properties"]["StreamSpecification"]["StreamViewType"], "NEW_IMAGE")

    def test_the_stream_processor_reports_poison_to_the_queue_its_mappings_fail_to(self):
        processor = FUNCTIONS["StreamProcessorFunction"]
        self.assertEqual(environment(processor)["AIRWAVE_FAILURE_QUEUE_URL"], {"Ref": "StreamFailureQueue"})
        senders = [s for s in statements(processor) if "sqs:SendMessage" in listed(s["Action"])]
        self.assertEqual(len(senders), 1)
        self.assertEqual(listed(senders[0]["Action"]), ["sqs:SendMessage"])
        self.assertEqual(listed(senders[0]["Resource"]), [{"Fn::GetAtt": ["StreamFailureQueue", "Arn"]}])
        for mapping in ("NewMessagesMapping", "ExpiredConnectionsMapping"):
            destination = RESOURCES[mapping]["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]
            self.assertEqual(destination, {"Fn::GetAtt": ["StreamFailureQueue", "Arn"]}, mapping)
        # Long enough for an operator to get to it and replay it.
        self.assertEqual(RESOURCES["StreamFailureQueue"]["Properties"]["MessageRetentionPeriod"], 1209600)

    def test_every_alarm_notifies_the_topic_and_watches_a_metric_the_code_records(self):
        binaries = {binary_of(function) for function in FUNCTIONS.values()}
        names = telemetry_metrics()
        for logical_id, resource in RESOURCES.items():
            if resource["Type"] != "AWS::CloudWatch::Alarm":
                continue
            alarm = resource["Properties"]
            self.assertEqual(
                alarm["AlarmActions"], {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}, logical_id
            )
            for namespace, name, dimensions in alarm_metrics(alarm):
                if namespace != "Airwave":
                    continue
                # Embedded metric format: the name from telemetry.rs, the
                # dimension `function` a binary whose code records it.
                self.assertIn(name, names.values(), f"{logical_id}: no metric {name} in telemetry.rs")
                self.assertEqual(set(dimensions), {"function"}, logical_id)
                self.assertIn(dimensions["function"], binaries, logical_id)
                const = next(const for const, value in names.items() if value == name)
                self.assertTrue(
                    any(re.search(r"\bmetric::%s\b" % const, fn.body) for fn in reachable_fns(dimensions["function"])),
                    f"{logical_id}: {dimensions['function']} never records {name}",
                )
            if "Metrics" in alarm:
                returned = [q for q in alarm["Metrics"] if q.get("ReturnData", True)]
                self.assertEqual(len(returned), 1, logical_id)
                ids = {q["Id"] for q in alarm["Metrics"]}
                self.assertEqual(set(re.findall(r"\b[a-z]\w*\b", returned[0]["Expression"])) - {"SUM", "FILL"} - ids, set(), logical_id)

    def test_every_function_states_its_timeout_and_route_functions_answer_before_api_gateway_gives_up(self):
        # API Gateway waits 29 s for an integration; a function still running
        # then may commit what the client was told failed (a publish its retry
        # then duplicates). One AWS call with its retries must fit in any function.
        routed = set(routed_functions().values())
        self.assertEqual(routed, {"ConnectFunction", "DisconnectFunction", "MessageFunction", "HttpFunction"})
        self.assertNotIn("Timeout", TEMPLATE["Globals"]["Function"], "each function states its own")
        longest_call_ms = TEMPLATE["Parameters"]["AwsOperationTimeoutMs"]["MaxValue"]
        for name, function in FUNCTIONS.items():
            timeout = function["Properties"].get("Timeout")
            self.assertIsInstance(timeout, int, f"{name} states no Timeout")
            self.assertGreater(timeout * 1000, longest_call_ms, name)
            if name in routed:
                self.assertLess(timeout, 29, name)
        # The stream-processor stops starting posts 2 calls + 1 s before its end.
        self.assertGreater(FUNCTIONS["StreamProcessorFunction"]["Properties"]["Timeout"] * 1000, 2 * longest_call_ms + 1000)

    def test_arm64_is_the_default_architecture(self):
        self.assertEqual(TEMPLATE["Parameters"]["Architecture"]["Default"], "arm64")


class ConfigurationChapterMatchesTheCode(unittest.TestCase):
    def test_the_configuration_table_lists_every_variable_with_a_default_and_an_effect(self):
        chapter = (ROOT / "docs" / "src" / "configuration.md").read_text()
        rows = re.findall(r"^\| `(AIRWAVE_[A-Z_]+)` \| ([^|]+) \| ([^|]+) \|$", chapter, re.M)
        self.assertEqual({name for name, _, _ in rows}, config_variables())
        for name, default, effect in rows:
            self.assertTrue(default.strip() and effect.strip(), name)


if __name__ == "__main__":
    unittest.main()
