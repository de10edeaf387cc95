"""Checks that no template change can delete Airwave's data.

Every table and the failure queue survive a stack delete and a replacement;
point-in-time recovery follows its parameter; and a table's keys cannot change
under the same logical id, which CloudFormation would carry out as a
replacement (the book's "Data safety" gives the path instead).

Run by `make template-check` with the project's tool environment (cfn-lint
provides the CloudFormation-aware YAML loader).
"""

import unittest

from template_code import RESOURCES, ROOT, TEMPLATE

TABLES = {name: r for name, r in RESOURCES.items() if r["Type"] == "AWS::DynamoDB::Table"}
KEY_CHANGE_PATH = "docs/src/operations/data-safety.md#changing-a-tables-keys"

# Each table's keys as deployed stacks have them: (attribute, key type,
# attribute type). A change here is a replacement in CloudFormation; follow
# KEY_CHANGE_PATH (a new table under a new logical id), then record it here.
DEPLOYED_KEYS = {
    "ConnectionsTable": [("connection_id", "HASH", "S")],
    "AdmissionTable": [("pk", "HASH", "S")],
    "HistoryTable": [("channel", "HASH", "S"), ("entry", "RANGE", "S")],
    "SubscriptionsTable": [("channel", "HASH", "S"), ("connection_id", "RANGE", "S")],
    "MessagesTable": [("message_id", "HASH", "S")],
}


def table_keys(table):
    """A table's key schema with each key attribute's declared type."""
    properties = table["Properties"]
    types = {a["AttributeName"]: a["AttributeType"] for a in properties["AttributeDefinitions"]}
    return [(k["AttributeName"], k["KeyType"], types.get(k["AttributeName"])) for k in properties["KeySchema"]]


def key_changes(resources, deployed):
    """What a template would replace or drop: one line per table, naming the
    logical id, what deployed stacks have and what the template now says."""
    tables = {name: r for name, r in resources.items() if r["Type"] == "AWS::DynamoDB::Table"}
    changes = []
    for name, keys in deployed.items():
        if name not in tables:
            changes.append(f"{name}: removed from the template (its data stays, by its retain policy)")
        elif table_keys(tables[name]) != keys:
            changes.append(f"{name}: keys {keys} became {table_keys(tables[name])}")
    for name in tables.keys() - deployed.keys():
        changes.append(f"{name}: a new table whose keys are not recorded in DEPLOYED_KEYS")
    return changes


def recovery_enabled(table, parameter_value):
    """Evaluates the table's PointInTimeRecoveryEnabled (a literal or an
    `!If` on one of the template's recovery conditions) for a value of the
    PointInTimeRecovery parameter."""
    enabled = table["Properties"].get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled", False)
    if isinstance(enabled, bool):
        return enabled
    condition, when_true, when_false = enabled["Fn::If"]
    return when_true if condition_holds(condition, parameter_value) else when_false


def condition_holds(name, parameter_value):
    """The template's recovery conditions, evaluated for one parameter value:
    each is `!Equals` or `!Not [!Equals]` on the PointInTimeRecovery parameter."""
    condition = TEMPLATE["Conditions"][name]
    negate = "Fn::Not" in condition
    if negate:
        condition = condition["Fn::Not"][0]
    left, right = condition["Fn::Equals"]
    if left != {"Ref": "PointInTimeRecovery"}:
        raise AssertionError(f"condition {name} is not a test of PointInTimeRecovery")
    return (parameter_value == right) != negate


class DataSafetyTest(unittest.TestCase):
    def test_every_table_and_the_failure_queue_outlive_a_delete_and_a_replacement(self):
        kept = {n: r for n, r in RESOURCES.items() if r["Type"] in ("AWS::DynamoDB::Table", "AWS::SQS::Queue")}
        self.assertIn("StreamFailureQueue", kept)
        for name, resource in kept.items():
            with self.subTest(resource=name):
                self.assertEqual(resource.get("DeletionPolicy"), "Retain")
                self.assertEqual(resource.get("UpdateReplacePolicy"), "Retain")

    def test_no_table_is_named_so_a_new_table_never_collides_with_a_retained_one(self):
        for name, table in TABLES.items():
            with self.subTest(table=name):
                self.assertNotIn("TableName", table["Properties"])

    def test_point_in_time_recovery_is_on_for_the_history_table_by_default(self):
        parameter = TEMPLATE["Parameters"]["PointInTimeRecovery"]
        self.assertEqual(parameter["Default"], "history")
        expected = {
            "history": {"HistoryTable"},
            "all": set(TABLES),
            "none": set(),
        }
        self.assertEqual(set(parameter["AllowedValues"]), set(expected))
        for value, tables in expected.items():
            with self.subTest(PointInTimeRecovery=value):
                enabled = {name for name, table in TABLES.items() if recovery_enabled(table, value)}
                self.assertEqual(enabled, tables)

    def test_no_table_changes_its_keys_in_place(self):
        changes = key_changes(RESOURCES, DEPLOYED_KEYS)
        self.assertEqual(
            changes,
            [],
            f"CloudFormation would replace these tables; follow {KEY_CHANGE_PATH} instead: {changes}",
        )

    def test_a_changed_key_a_changed_key_type_and_a_dropped_table_are_each_caught(self):
        def with_change(change):
            resources = {name: dict(r, Properties=dict(r["Properties"])) for name, r in TABLES.items()}
            change(resources)
            return key_changes(resources, DEPLOYED_KEYS)

        def rename_range_key(resources):
            properties = resources["SubscriptionsTable"]["Properties"]
            properties["KeySchema"] = [dict(k) for k in properties["KeySchema"]]
            properties["KeySchema"][1]["AttributeName"] = "shard_connection"

        def retype_key(resources):
            properties = resources["MessagesTable"]["Properties"]
            properties["AttributeDefinitions"] = [dict(a, AttributeType="B") for a in properties["AttributeDefinitions"]]

        self.assertEqual([c.split(":")[0] for c in with_change(rename_range_key)], ["SubscriptionsTable"])
        self.assertEqual([c.split(":")[0] for c in with_change(retype_key)], ["MessagesTable"])
        self.assertEqual(
            [c.split(":")[0] for c in with_change(lambda resources: resources.pop("AdmissionTable"))],
            ["AdmissionTable"],
        )

    def test_the_key_change_path_is_in_the_book(self):
        page, anchor = KEY_CHANGE_PATH.split("#")
        text = (ROOT / page).read_text(encoding="utf-8")
        self.assertIn("## Changing a table's keys", text)
        self.assertEqual(anchor, "changing-a-tables-keys")


if __name__ == "__main__":
    unittest.main()
