"""Checks that each function's IAM grants in template.yaml are exactly what its
code (as template_code.py reads it) and its stream mappings use, and checks
that reader. Run by `make template-check`."""

import copy
import re
import unittest

from template_code import (
    invoked_function,
    DYNAMODB_OPERATIONS,
    FUNCTIONS,
    FUNCTION_SOURCES,
    MANAGEMENT_OPERATIONS,
    SECRET_OPERATIONS,
    RESOURCES,
    ROOT,
    RustFn,
    SDK_CALLS,
    SHARED_CODE,
    SHARED_FNS,
    STREAM_READS,
    calls_of,
    cargo_metadata,
    code_needs,
    code_only,
    environment,
    function_packages,
    grant_mismatches,
    granted_resource,
    listed,
    reachable_fns,
    statements,
)


class GrantsMatchTheCode(unittest.TestCase):
    """Each function may do what its code and its mappings do, and no more."""

    def test_no_statement_grants_every_action_or_every_resource(self):
        for name, function in FUNCTIONS.items():
            for statement in statements(function):
                for action in listed(statement["Action"]):
                    self.assertNotIn("*", action, name)
                for resource in listed(statement["Resource"]):
                    self.assertNotEqual(resource, "*", name)

    def test_each_function_is_granted_exactly_what_its_own_code_and_mappings_use(self):
        self.assertEqual(grant_mismatches(FUNCTIONS), {})

    def test_a_missing_or_unused_grant_is_caught(self):
        # The check above must fail when the template and the code part ways.
        for table, action in [("AdmissionTable", "dynamodb:UpdateItem"), ("ConnectionsTable", "dynamodb:GetItem")]:
            functions = copy.deepcopy(FUNCTIONS)
            for statement in statements(functions["MessageFunction"]):
                if granted_resource(statement["Resource"]) == table:
                    statement["Action"] = [a for a in listed(statement["Action"]) if a != action]
            self.assertEqual(grant_mismatches(functions), {"MessageFunction": {"missing": {(table, action)}, "unused": set()}})
        # Per function, not in sum: the message function scans the admission
        # table, and that is no reason for the reaper to be allowed to.
        functions = copy.deepcopy(FUNCTIONS)
        first = next(statements(functions["ReaperFunction"]))
        self.assertEqual(first["Resource"], {"Fn::GetAtt": ["AdmissionTable", "Arn"]})
        first["Action"] = listed(first["Action"]) + ["dynamodb:Scan"]
        self.assertEqual(
            grant_mismatches(functions),
            {"ReaperFunction": {"missing": set(), "unused": {("AdmissionTable", "dynamodb:Scan")}}},
        )
        # A stream mapping's needs are its function's: without the mapping's
        # destination, the reaper's SendMessage grant is unused.
        resources = copy.deepcopy(RESOURCES)
        del resources["ExpiredConnectionsMapping"]["Properties"]["DestinationConfig"]
        self.assertEqual(
            grant_mismatches(FUNCTIONS, resources),
            {"ReaperFunction": {"missing": set(), "unused": {("StreamFailureQueue", "sqs:SendMessage")}}},
        )

    def test_a_call_the_code_adds_is_a_missing_grant_of_the_functions_that_reach_it(self):
        # As if the disconnect function's code read a connection first.
        get = ("ConnectionsTable", "dynamodb:GetItem")
        needs = lambda function: code_needs(function) | ({get} if function is FUNCTIONS["DisconnectFunction"] else set())
        self.assertEqual(grant_mismatches(FUNCTIONS, needs=needs), {"DisconnectFunction": {"missing": {get}, "unused": set()}})

    def test_each_function_reaches_its_own_code_paths_only(self):
        def reaches(binary, owner, name):
            return any(fn.owner == owner and fn.name == name for fn in reachable_fns(binary))

        # The admission store's stats scan is the message function's; the
        # reaper only gives back slots.
        self.assertTrue(reaches("message", "DynamoStore", "admission_counts"))
        self.assertTrue(reaches("reaper", "DynamoStore", "release_slots_of_deleted"))
        for binary in ("connect", "disconnect", "stream-processor", "reaper"):
            self.assertFalse(reaches(binary, "DynamoStore", "admission_counts"), binary)
        self.assertFalse(reaches("disconnect", "DynamoStore", "put_message"))
        self.assertTrue(reaches("stream-processor", "FanOut", "post"))

    def test_the_code_reader_finds_a_calls_table_and_action(self):
        body = code_only(
            """{
                let table = self.admission_table();
                // self.client.scan().table_name(&self.connections_table) is a comment
                let text = "self.client.scan()";
                self.client.update_item().table_name(table).send().await?;
                let delete = Delete::builder().table_name(&self.connections_table).build();
                self.client.query().table_name(&self.connections_table).index_name(USER_INDEX).send().await?;
                client.post_to_connection().connection_id(id).send().await;
            }"""
        )
        fn = RustFn("example", ROOT / "shared/src/lib.rs", "DynamoStore", None, body, 0)
        self.assertEqual(
            calls_of(fn),
            {
                ("table", "admission", "dynamodb:UpdateItem"),
                ("table", "connections", "dynamodb:DeleteItem"),
                ("index", "connections", "dynamodb:Query"),
                ("connections", "POST", "execute-api:ManageConnections"),
            },
        )

    def test_every_aws_call_in_the_code_is_in_a_fn_and_names_its_table(self):
        # A call outside every fn (a macro, a const) would be missed by the
        # reach above; a table that cannot be told would be granted nowhere.
        for path, code in SHARED_CODE.items():
            bodies = [(fn.start, fn.start + len(fn.body)) for fn in SHARED_FNS if fn.path == path]
            for pattern in SDK_CALLS:
                for match in pattern.finditer(code):
                    self.assertTrue(any(start <= match.start() < end for start, end in bodies), f"{path}: {match.group(0)}")
        unnamed = [(fn, call) for fn in SHARED_FNS for call in calls_of(fn) if call[0] in ("table", "index") and call[1] is None]
        self.assertEqual(unnamed, [])
        # An operation this reader does not know (a new one, PartiQL) must be
        # taught to it, not left out.
        known = (
            set(DYNAMODB_OPERATIONS)
            | set(MANAGEMENT_OPERATIONS)
            | set(SECRET_OPERATIONS)
            | {"send_message", "send_message_batch"}
        )
        operations = {m.group(1) for code in SHARED_CODE.values() for m in re.finditer(r"\bclient\s*\.\s*(\w+)\s*\(\s*\)", code)}
        self.assertLessEqual(operations, known)
        self.assertTrue(any(calls_of(fn) for fn in SHARED_FNS), "the reader found no call at all")

    def test_the_functions_reach_aws_only_through_the_code_read_above(self):
        # Their own sources and shared/src: no other workspace crate they use
        # may talk to AWS.
        packages = {package["name"]: package for package in cargo_metadata()["packages"]}
        for package in function_packages():
            binaries = [t["name"] for t in package["targets"] if "bin" in t["kind"]]
            for binary in binaries:
                self.assertTrue((FUNCTION_SOURCES / binary / "src/main.rs").is_file(), binary)
            for dependency in package["dependencies"]:
                if dependency["name"] in packages and dependency["name"] != "airwave-shared":
                    sdks = [d["name"] for d in packages[dependency["name"]]["dependencies"] if d["name"].startswith("aws-sdk-")]
                    self.assertEqual(sdks, [], f"{package['name']} uses {dependency['name']}")

    def test_every_stream_mapping_may_read_exactly_its_stream(self):
        mappings = {n: r for n, r in RESOURCES.items() if r["Type"] == "AWS::Lambda::EventSourceMapping"}
        self.assertEqual(len(mappings), 2)
        for name, mapping in mappings.items():
            function = FUNCTIONS[invoked_function(mapping["Properties"]["FunctionName"])]
            stream = mapping["Properties"]["EventSourceArn"]
            granted = [set(listed(s["Action"])) for s in statements(function) if s["Resource"] == stream]
            self.assertEqual(granted, [STREAM_READS], name)

    def test_posting_and_closing_are_limited_to_this_apis_connections(self):
        # The stream-processor posts and closes pruned connections; $connect
        # closes evicted ones and asks (GET) whether a full cap's holders are
        # still connected, $default closes those whose token expired, the
        # reaper those whose record was removed or whose expiry passed.
        closers = {"StreamProcessorFunction", "ConnectFunction", "MessageFunction", "ReaperFunction"}
        for name, function in FUNCTIONS.items():
            grants = [s for s in statements(function) if "execute-api:ManageConnections" in listed(s["Action"])]
            if name not in closers:
                self.assertFalse(any("execute-api" in a for s in statements(function) for a in listed(s["Action"])), name)
                continue
            self.assertEqual(len(grants), 1, name)
            resources = sorted(r["Fn::Sub"].rsplit("}/", 1)[-1] for r in listed(grants[0]["Resource"]))
            expected = ["DELETE/@connections/*", "POST/@connections/*"]
            if name == "ConnectFunction":
                expected = ["DELETE/@connections/*", "GET/@connections/*", "POST/@connections/*"]
            self.assertEqual(resources, expected, name)
            for resource in listed(grants[0]["Resource"]):
                self.assertIn("${WebSocketApi}/${StageName}/", resource["Fn::Sub"], name)
            self.assertIn("AIRWAVE_MANAGEMENT_ENDPOINT", environment(function), name)


if __name__ == "__main__":
    unittest.main()
