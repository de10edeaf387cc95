"""Checks that template.yaml and the Rust workspace agree.

Run by `make test` with the project's tool environment (cfn-lint provides the
CloudFormation-aware YAML loader).
"""

import copy
import json
import re
import subprocess
import unittest
from pathlib import Path

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = cfn_yaml.load(str(ROOT / "template.yaml"))
RESOURCES = TEMPLATE["Resources"]
FUNCTIONS = {name: r for name, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}

# What each function's code path calls, by the binary that runs it. Kept next to
# the grep below so a new call in the store shows up as a failing test.
DYNAMODB_ACTIONS_BY_BINARY = {
    "connect": {
        ("connections", "dynamodb:GetItem"),
        ("connections", "dynamodb:PutItem"),
        ("connections", "dynamodb:DeleteItem"),
        ("connections-index", "dynamodb:Query"),
        ("subscriptions", "dynamodb:DeleteItem"),
        ("admission", "dynamodb:GetItem"),
        ("admission", "dynamodb:UpdateItem"),
    },
    "disconnect": {
        ("connections", "dynamodb:GetItem"),
        ("connections", "dynamodb:DeleteItem"),
        ("subscriptions", "dynamodb:DeleteItem"),
        ("admission", "dynamodb:UpdateItem"),
    },
    "message": {
        ("connections", "dynamodb:GetItem"),
        ("connections", "dynamodb:UpdateItem"),
        ("connections", "dynamodb:DeleteItem"),
        ("connections", "dynamodb:Scan"),
        ("admission", "dynamodb:GetItem"),
        ("admission", "dynamodb:UpdateItem"),
        ("admission", "dynamodb:Scan"),
        ("subscriptions", "dynamodb:PutItem"),
        ("subscriptions", "dynamodb:UpdateItem"),
        ("subscriptions", "dynamodb:DeleteItem"),
        ("messages", "dynamodb:PutItem"),
        ("history", "dynamodb:GetItem"),
        ("history", "dynamodb:PutItem"),
        ("history", "dynamodb:Query"),
    },
    "stream-processor": {
        ("connections-index", "dynamodb:Scan"),
        ("messages", "dynamodb:UpdateItem"),
        ("connections", "dynamodb:GetItem"),
        ("admission", "dynamodb:UpdateItem"),
        ("connections", "dynamodb:DeleteItem"),
        ("connections", "dynamodb:UpdateItem"),
        ("connections-index", "dynamodb:Query"),
        ("subscriptions", "dynamodb:Query"),
        ("subscriptions", "dynamodb:DeleteItem"),
        ("history", "dynamodb:GetItem"),
        ("history", "dynamodb:PutItem"),
    },
    "reaper": {
        ("admission", "dynamodb:PutItem"),
        ("admission", "dynamodb:UpdateItem"),
        ("subscriptions", "dynamodb:DeleteItem"),
    },
}
TABLE_RESOURCES = {
    "ConnectionsTable": "connections",
    "SubscriptionsTable": "subscriptions",
    "MessagesTable": "messages",
    "AdmissionTable": "admission",
    "HistoryTable": "history",
}
INDEX_RESOURCES = {"${ConnectionsTable.Arn}/index/*": "connections-index"}
SDK_CALL_TO_ACTION = {
    "put_item": "dynamodb:PutItem",
    "get_item": "dynamodb:GetItem",
    "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem",
    "scan": "dynamodb:Scan",
    "query": "dynamodb:Query",
    "batch_write_item": "dynamodb:BatchWriteItem",
    "transact_write_items": "dynamodb:TransactWriteItems",
}


def grant_mismatches(functions):
    """Function name -> the DynamoDB grants its code needs but lacks, and the ones it never uses."""
    mismatches = {}
    for name, function in functions.items():
        granted = set()
        for statement in statements(function):
            for resource in listed(statement["Resource"]):
                if isinstance(resource, dict) and resource.get("Fn::Sub") in INDEX_RESOURCES:
                    for action in listed(statement["Action"]):
                        granted.add((INDEX_RESOURCES[resource["Fn::Sub"]], action))
                    continue
                attribute = resource.get("Fn::GetAtt") if isinstance(resource, dict) else None
                if not attribute or attribute[1] != "Arn" or attribute[0] not in TABLE_RESOURCES:
                    continue
                for action in listed(statement["Action"]):
                    granted.add((TABLE_RESOURCES[attribute[0]], action))
        needed = DYNAMODB_ACTIONS_BY_BINARY[binary_of(function)]
        if granted != needed:
            mismatches[name] = {"missing": needed - granted, "unused": granted - needed}
    return mismatches


def workspace_binaries():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    return {
        target["name"]
        for package in metadata["packages"]
        if package["manifest_path"].startswith(str(ROOT / "functions"))
        for target in package["targets"]
        if "bin" in target["kind"]
    }


def binary_of(function):
    return function["Metadata"]["BuildProperties"]["Binary"]


def statements(function):
    for policy in function["Properties"].get("Policies", []):
        yield from policy["Statement"]


def listed(value):
    return value if isinstance(value, list) else [value]


def config_variables():
    source = (ROOT / "shared/src/config.rs").read_text()
    return set(re.findall(r'pub const [A-Z_]+: &str = "(AIRWAVE_[A-Z_]+)";', source))


def environment(function):
    variables = dict(TEMPLATE["Globals"]["Function"]["Environment"]["Variables"])
    variables.update(function["Properties"].get("Environment", {}).get("Variables", {}))
    return variables


class TemplateMatchesTheCode(unittest.TestCase):
    def test_every_function_builds_a_binary_of_the_workspace(self):
        binaries = workspace_binaries()
        for name, function in FUNCTIONS.items():
            self.assertEqual(function["Metadata"]["BuildMethod"], "rust-cargolambda", name)
            self.assertIn(binary_of(function), binaries, name)
        self.assertEqual({binary_of(f) for f in FUNCTIONS.values()}, binaries, "a binary without a function")

    def test_every_route_reaches_a_function_that_api_gateway_may_invoke(self):
        routes = {r["Properties"]["RouteKey"]: r for r in RESOURCES.values() if r["Type"] == "AWS::ApiGatewayV2::Route"}
        self.assertEqual(set(routes), {"$connect", "$disconnect", "$default"})
        self.assertEqual(
            RESOURCES["WebSocketApi"]["Properties"]["RouteSelectionExpression"], "$request.body.action"
        )
        permissions = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::Lambda::Permission"]
        for key, route in routes.items():
            integration_name = re.fullmatch(r"integrations/\$\{(\w+)\}", route["Properties"]["Target"]["Fn::Sub"])
            self.assertIsNotNone(integration_name, key)
            uri = RESOURCES[integration_name.group(1)]["Properties"]["IntegrationUri"]["Fn::Sub"]
            function_name = re.search(r"\$\{(\w+)\.Arn\}", uri).group(1)
            self.assertIn(function_name, FUNCTIONS, key)
            self.assertTrue(
                any(
                    p["FunctionName"] == {"Ref": function_name}
                    and p["SourceArn"]["Fn::Sub"].endswith("/*/" + key)
                    for p in permissions
                ),
                f"no invoke permission for {key}",
            )

    def test_no_statement_grants_every_action_or_every_resource(self):
        for name, function in FUNCTIONS.items():
            for statement in statements(function):
                for action in listed(statement["Action"]):
                    self.assertNotIn("*", action, name)
                for resource in listed(statement["Resource"]):
                    self.assertNotEqual(resource, "*", name)

    def test_dynamodb_grants_are_exactly_what_each_function_calls(self):
        self.assertEqual(grant_mismatches(FUNCTIONS), {})

    def test_a_missing_or_unused_grant_is_caught(self):
        # The check above must fail when the template and the code part ways.
        for table, action in [("admission", "dynamodb:UpdateItem"), ("connections", "dynamodb:GetItem")]:
            functions = copy.deepcopy(FUNCTIONS)
            for statement in statements(functions["MessageFunction"]):
                resource = statement["Resource"]
                if isinstance(resource, dict) and TABLE_RESOURCES.get(resource.get("Fn::GetAtt", [None])[0]) == table:
                    statement["Action"] = [a for a in listed(statement["Action"]) if a != action]
            self.assertEqual(grant_mismatches(functions), {"MessageFunction": {"missing": {(table, action)}, "unused": set()}})
        functions = copy.deepcopy(FUNCTIONS)
        first = next(statements(functions["ReaperFunction"]))
        self.assertEqual(first["Resource"], {"Fn::GetAtt": ["AdmissionTable", "Arn"]})
        first["Action"] = listed(first["Action"]) + ["dynamodb:DeleteItem"]
        self.assertEqual(
            grant_mismatches(functions),
            {"ReaperFunction": {"missing": set(), "unused": {("admission", "dynamodb:DeleteItem")}}},
        )

    def test_every_stream_mapping_may_read_exactly_its_stream(self):
        reads = {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"}
        mappings = {n: r for n, r in RESOURCES.items() if r["Type"] == "AWS::Lambda::EventSourceMapping"}
        self.assertEqual(len(mappings), 2)
        for name, mapping in mappings.items():
            function = FUNCTIONS[mapping["Properties"]["FunctionName"]["Ref"]]
            stream = mapping["Properties"]["EventSourceArn"]
            granted = [set(listed(s["Action"])) for s in statements(function) if s["Resource"] == stream]
            self.assertEqual(granted, [reads], name)

    def test_the_messages_mapping_only_takes_new_messages(self):
        filters = RESOURCES["NewMessagesMapping"]["Properties"]["FilterCriteria"]["Filters"]
        self.assertEqual([json.loads(f["Pattern"]) for f in filters], [{"eventName": ["INSERT"]}])

    def test_the_failure_queue_and_every_function_have_alarms_and_the_dashboard_shows_every_function(self):
        alarms = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
        watched = {d["Value"].get("Ref") if isinstance(d["Value"], dict) else d["Value"] for a in alarms for d in a["Dimensions"]}
        for name in FUNCTIONS:
            self.assertIn(name, watched, f"no alarm on {name}")
        queue_alarms = [a for a in alarms if a["Namespace"] == "AWS/SQS"]
        self.assertEqual([a["Dimensions"][0]["Value"] for a in queue_alarms], [{"Fn::GetAtt": ["StreamFailureQueue", "QueueName"]}])
        body = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        for name in FUNCTIONS:
            self.assertIn("${%s}" % name, body, f"{name} is not on the dashboard")

    def test_the_store_makes_no_dynamodb_call_the_table_above_does_not_know(self):
        source = "".join(path.read_text() for path in sorted((ROOT / "shared/src").rglob("*.rs")))
        calls = set(re.findall(r"\.(\w+)\(\)\s*\n\s*\.table_name", source))
        # Transaction items name their table the same way: Put::builder()...
        calls |= {f"{kind.lower()}_item" for kind in re.findall(r"\b(Put|Update|Delete)::builder\(\)", source)}
        used = {SDK_CALL_TO_ACTION[call] for call in calls}
        declared = {action for actions in DYNAMODB_ACTIONS_BY_BINARY.values() for _, action in actions}
        self.assertEqual(used, declared)

    def test_posting_and_closing_are_limited_to_this_apis_connections(self):
        # The stream-processor posts and closes pruned connections; $connect
        # closes evicted ones, $default those whose token expired.
        closers = {"StreamProcessorFunction", "ConnectFunction", "MessageFunction"}
        for name, function in FUNCTIONS.items():
            grants = [s for s in statements(function) if "execute-api:ManageConnections" in listed(s["Action"])]
            if name not in closers:
                self.assertFalse(any("execute-api" in a for s in statements(function) for a in listed(s["Action"])), name)
                continue
            self.assertEqual(len(grants), 1, name)
            resources = sorted(r["Fn::Sub"].rsplit("}/", 1)[-1] for r in listed(grants[0]["Resource"]))
            self.assertEqual(resources, ["DELETE/@connections/*", "POST/@connections/*"], name)
            for resource in listed(grants[0]["Resource"]):
                self.assertIn("${WebSocketApi}/${StageName}/", resource["Fn::Sub"], name)
            self.assertIn("AIRWAVE_MANAGEMENT_ENDPOINT", environment(function), name)

    def test_environment_variables_match_the_configuration_both_ways(self):
        known = config_variables() | {"RUST_LOG"}
        set_somewhere = set()
        for name, function in FUNCTIONS.items():
            variables = set(environment(function))
            self.assertLessEqual(variables, known, f"{name} sets variables the code never reads")
            set_somewhere |= variables
        self.assertEqual(config_variables() - set_somewhere, set(), "variables no function is given")
        self.assertIn("AIRWAVE_MANAGEMENT_ENDPOINT", environment(FUNCTIONS["StreamProcessorFunction"]))

    def test_the_stream_mapping_reports_partial_failures_and_stops_retrying(self):
        mapping = RESOURCES["NewMessagesMapping"]["Properties"]
        self.assertEqual(mapping["FunctionResponseTypes"], ["ReportBatchItemFailures"])
        self.assertTrue(mapping["BisectBatchOnFunctionError"])
        self.assertGreater(mapping["MaximumRecordAgeInSeconds"], 0)
        self.assertIn("OnFailure", mapping["DestinationConfig"])
        self.assertEqual(RESOURCES["MessagesTable"]["Properties"]["StreamSpecification"]["StreamViewType"], "NEW_IMAGE")

    def test_arm64_is_the_default_architecture(self):
        self.assertEqual(TEMPLATE["Parameters"]["Architecture"]["Default"], "arm64")


if __name__ == "__main__":
    unittest.main()


class ReadmeMatchesTheCode(unittest.TestCase):
    def test_the_configuration_table_lists_every_variable_with_a_default_and_an_effect(self):
        readme = (ROOT / "README.md").read_text()
        rows = re.findall(r"^\| `(AIRWAVE_[A-Z_]+)` \| ([^|]+) \| ([^|]+) \|$", readme, re.M)
        self.assertEqual({name for name, _, _ in rows}, config_variables())
        for name, default, effect in rows:
            self.assertTrue(default.strip() and effect.strip(), name)
