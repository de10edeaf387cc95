"""The token secret in template.yaml: no secret value in the template, and no
secret in plain text in a function's environment unless the local-development
parameter says so by name; the deployed way is a Secrets Manager ARN, which
only the connect function may read."""

import unittest

from template_code import FUNCTIONS, TEMPLATE, environment, statements

PARAMETERS = TEMPLATE["Parameters"]
RULES = TEMPLATE["Rules"]
DEVELOPMENT_SWITCH = "AllowPlaintextJwtSecret"


def secret_variables():
    """(function, variable, value) of every environment variable that holds a
    secret value (named ..._SECRET), in every function."""
    for name, function in FUNCTIONS.items():
        for variable, value in environment(function).items():
            if variable.endswith("_SECRET"):
                yield name, variable, value


def guarded_by_the_development_switch(parameter):
    """Whether a rule refuses a non-empty `parameter` unless the switch is "true"."""
    for rule in RULES.values():
        condition = rule.get("RuleCondition")
        if condition != {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}:
            continue
        asserts = [assertion["Assert"] for assertion in rule["Assertions"]]
        if {"Fn::Equals": [{"Ref": DEVELOPMENT_SWITCH}, "true"]} in asserts:
            return True
    return False


class SecretsStayOutOfTheTemplate(unittest.TestCase):
    def test_no_secret_value_is_written_in_the_template(self):
        for name, parameter in PARAMETERS.items():
            if parameter.get("NoEcho"):
                self.assertEqual(parameter.get("Default", ""), "", name)
        for function, variable, value in secret_variables():
            self.assertIsInstance(value, dict, f"{function} {variable} is a literal")

    def test_a_plaintext_secret_needs_the_development_switch(self):
        found = list(secret_variables())
        self.assertTrue(found, "no secret variable found: the check would pass for nothing")
        for function, variable, value in found:
            parameter = value.get("Ref")
            self.assertIsNotNone(parameter, f"{function} {variable}")
            self.assertTrue(PARAMETERS[parameter].get("NoEcho"), parameter)
            self.assertTrue(guarded_by_the_development_switch(parameter), f"{parameter} is not guarded by {DEVELOPMENT_SWITCH}")
        self.assertEqual(PARAMETERS[DEVELOPMENT_SWITCH]["Default"], "false")

    def test_the_guard_check_catches_an_unguarded_secret(self):
        self.assertFalse(guarded_by_the_development_switch("JwksUrl"))

    def test_each_secret_is_read_only_by_the_functions_that_check_with_it(self):
        # Tokens are checked at $connect and on the HTTP API; server keys on the HTTP API alone.
        readers = {}
        for name, function in FUNCTIONS.items():
            for statement in statements(function):
                if "secretsmanager:GetSecretValue" in statement["Action"]:
                    readers.setdefault(statement["Resource"]["Ref"], set()).add(name)
        self.assertEqual(
            readers,
            {"JwtSecretArn": {"ConnectFunction", "HttpFunction"}, "ServerKeySecretArn": {"HttpFunction"}},
        )
        for name in ("ConnectFunction", "HttpFunction"):
            self.assertEqual(environment(FUNCTIONS[name])["AIRWAVE_JWT_SECRET_ARN"], {"Ref": "JwtSecretArn"})
        self.assertEqual(environment(FUNCTIONS["HttpFunction"])["AIRWAVE_SERVER_KEY_SECRET_ARN"], {"Ref": "ServerKeySecretArn"})


if __name__ == "__main__":
    unittest.main()
