"""Reads template.yaml and the Rust code it deploys, for the tests that check
that the two agree (test_template.py, test_template_grants.py): the template's
resources, and what each function's code can call on AWS.

Not a test module itself: the tests import it, and `unittest discover` loads
only test_*.py. Run by `make template-check` with the project's tool
environment (cfn-lint provides the CloudFormation-aware YAML loader).
"""

import copy
import functools
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

# --- What each function's code calls ---------------------------------------------
# Read from the code, not declared, so it cannot drift: every fn of shared/src
# (tests left out) with the AWS calls its own body makes and the fns it names,
# and for each function everything its binary's main.rs can reach. A name is
# resolved to every fn of that name (a trait method to each of its impls), so
# the reach errs on the side of more: a call the code can make is never missed,
# and a grant that no reachable code uses shows up as unused.
FUNCTION_SOURCES = ROOT / "functions"
SHARED_SOURCES = ROOT / "shared/src"
# Where a DynamoDB call's table comes from: the store's `<x>_table` field,
# read from AIRWAVE_<X>_TABLE, which the template sets to a table's !Ref.
TABLE_VARIABLE = "AIRWAVE_{}_TABLE"
MANAGEMENT_ENDPOINT = "AIRWAVE_MANAGEMENT_ENDPOINT"
FAILURE_QUEUE = "AIRWAVE_FAILURE_QUEUE_URL"
# A secret is read by the one generic reader (`StoredSecret`), so which
# secret a function reads is told where it builds one: from the config's
# `<x>_secret_arn`, read from AIRWAVE_<X>_SECRET_ARN.
SECRET_VARIABLE = "AIRWAVE_{}_SECRET_ARN"
SECRET_READER = re.compile(r"\bStoredSecret\s*::\s*new\s*\(")
SECRET_FIELD = re.compile(r"\b(\w+)_secret_arn\b")
STREAM_READS = {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"}
DYNAMODB_OPERATIONS = {
    "put_item": "dynamodb:PutItem",
    "get_item": "dynamodb:GetItem",
    "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "batch_get_item": "dynamodb:BatchGetItem",
    "batch_write_item": "dynamodb:BatchWriteItem",
    # A transaction is authorised item by item, as the builders below.
    "transact_write_items": None,
    "transact_get_items": None,
}
TRANSACTION_ITEMS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}
MANAGEMENT_OPERATIONS = {"post_to_connection": "POST", "delete_connection": "DELETE", "get_connection": "GET"}
DYNAMODB_CALL = re.compile(r"\.\s*(%s)\s*\(\s*\)" % "|".join(DYNAMODB_OPERATIONS))
TRANSACTION_ITEM = re.compile(r"\b(%s)\s*::\s*builder\s*\(\s*\)" % "|".join(TRANSACTION_ITEMS))
MANAGEMENT_CALL = re.compile(r"\.\s*(%s)\s*\(\s*\)" % "|".join(MANAGEMENT_OPERATIONS))
SQS_CALL = re.compile(r"\.\s*(send_message|send_message_batch)\s*\(\s*\)")
SECRET_OPERATIONS = {"get_secret_value": "secretsmanager:GetSecretValue"}
SECRET_CALL = re.compile(r"\.\s*(%s)\s*\(\s*\)" % "|".join(SECRET_OPERATIONS))
SDK_CALLS = (DYNAMODB_CALL, TRANSACTION_ITEM, MANAGEMENT_CALL, SQS_CALL, SECRET_CALL)

# Comments, strings and char literals (not lifetimes), blanked so that braces
# and names inside them count for nothing.
NOT_CODE = re.compile(
    r"""//[^\n]* | /\* | b?r(?P<hashes>\#*)" | b?"(?:\\.|[^"\\])*" | b?'(?:\\u\{[0-9a-fA-F]+\}|\\.|[^\\'\n])'""",
    re.X | re.S,
)


def blanked(text):
    return re.sub(r"[^\n]", " ", text)


def code_only(source):
    """The source with comments and literals blanked, each offset kept."""
    parts, at = [], 0
    while match := NOT_CODE.search(source, at):
        parts.append(source[at : match.start()])
        end = match.end()
        if match.group(0) == "/*":  # block comments nest
            depth = 1
            while depth:
                opening, closing = source.find("/*", end), source.index("*/", end)
                depth, end = (depth + 1, opening + 2) if 0 <= opening < closing else (depth - 1, closing + 2)
        elif match.group("hashes") is not None:
            end = source.index('"' + match.group("hashes"), end) + 1 + len(match.group("hashes"))
        parts.append(blanked(source[match.start() : end]))
        at = end
    return "".join(parts) + source[at:]


def closing_brace(code, opening):
    depth = 0
    for at in range(opening, len(code)):
        depth += {"{": 1, "}": -1}.get(code[at], 0)
        if depth == 0:
            return at
    raise ValueError("unbalanced braces")


def item_end(code, start):
    """(end, opening brace) of the item from `start`: its `;` (no body) or its block."""
    depth = 0
    for at in range(start, len(code)):
        character = code[at]
        if character in "([":
            depth += 1
        elif character in ")]":
            depth -= 1
        elif depth == 0 and character == ";":
            return at, None
        elif depth == 0 and character == "{":
            return closing_brace(code, at), at
    raise ValueError("an item without an end")


def without_tests(code):
    while match := re.search(r"#\[cfg\(test\)\]", code):
        end, _ = item_end(code, match.end())
        code = code[: match.start()] + blanked(code[match.start() : end + 1]) + code[end + 1 :]
    return code


class RustFn:
    def __init__(self, name, path, owner, trait, body, start):
        self.name, self.path, self.owner, self.trait, self.body, self.start = name, path, owner, trait, body, start

    def __repr__(self):
        return f"{self.path.relative_to(ROOT)}:{self.owner + '::' if self.owner else ''}{self.name}"


def impl_blocks(code):
    """(start, end, self type, trait) of every impl and trait block."""
    blocks = []
    # Items only: an `impl Trait` type (an argument, a return type) is no block.
    for match in re.finditer(r"^[ \t]*(?:pub(?:\([\w:]+\))?\s+)?(?:unsafe\s+)?(impl|trait)\b([^{;]*)\{", code, re.M):
        header = match.group(2)
        while re.search(r"<[^<>]*>", header):
            header = re.sub(r"<[^<>]*>", "", header)
        header = re.split(r"\bwhere\b", header)[0]
        if match.group(1) == "trait":
            owner = trait = re.findall(r"\w+", header)[0]
        elif re.search(r"\bfor\b", header):
            implemented, implementor = re.split(r"\bfor\b", header, maxsplit=1)
            trait, owner = re.findall(r"\w+", implemented)[-1], re.findall(r"\w+", implementor)[-1]
        else:
            owner, trait = re.findall(r"\w+", header)[-1], None
        opening = match.end() - 1
        blocks.append((opening, closing_brace(code, opening), owner, trait))
    return blocks


def rust_fns(path, code):
    blocks = impl_blocks(code)
    found = []
    for match in re.finditer(r"\bfn\s+(\w+)", code):
        end, opening = item_end(code, match.end())
        if opening is None:
            continue  # a trait method without a default body
        enclosing = [block for block in blocks if block[0] < match.start() < block[1]]
        owner, trait = enclosing[-1][2:] if enclosing else (None, None)
        found.append(RustFn(match.group(1), path, owner, trait, code[opening : end + 1], opening))
    return found


def sources(directory):
    return {path: without_tests(code_only(path.read_text())) for path in sorted(directory.rglob("*.rs"))}


SHARED_CODE = sources(SHARED_SOURCES)
SHARED_FNS = [fn for path, code in SHARED_CODE.items() for fn in rust_fns(path, code)]
FNS_BY_NAME = {}
for _fn in SHARED_FNS:
    FNS_BY_NAME.setdefault(_fn.name, []).append(_fn)
OWNERS = {fn.owner for fn in SHARED_FNS if fn.owner} | {fn.trait for fn in SHARED_FNS if fn.trait}


def named_fns(owner, code):
    """The shared fns `code` names: `Type::f` / `Self::f`, `module::f`, `.f(` (methods) and bare `f`."""
    named = set()
    for match in re.finditer(r"\b(\w+)\s*::\s*(\w+)", code):
        path, name = match.groups()
        path = owner if path == "Self" else path
        if path and path[0].isupper():
            # A type or trait of shared/src; any other (an SDK type, std) is not ours.
            named |= {fn for fn in FNS_BY_NAME.get(name, []) if path in (fn.owner, fn.trait)}
        else:
            named |= {fn for fn in FNS_BY_NAME.get(name, []) if fn.owner is None}
    for match in re.finditer(r"\.\s*(\w+)\s*(?:::\s*<[^()]*?>\s*)?\(", code):
        named |= {fn for fn in FNS_BY_NAME.get(match.group(1), []) if fn.owner is not None}
    for match in re.finditer(r"(?<![\w.:])(\w+)\b(?!\s*(?:::|!))", code):
        named |= {fn for fn in FNS_BY_NAME.get(match.group(1), []) if fn.owner is None}
    return named


@functools.cache
def reachable_fns(binary):
    entry = "".join(sources(FUNCTION_SOURCES / binary / "src").values())
    seen, pending = set(), list(named_fns(None, entry))
    while pending:
        fn = pending.pop()
        if fn not in seen:
            seen.add(fn)
            pending.extend(named_fns(fn.owner, fn.body) - seen)
    return seen


def statement_text(body, start):
    """A call's builder chain: up to the end of its statement."""
    end = body.find(";", start)
    return body[start : end if end >= 0 else len(body)]


def table_field(fn, chain):
    """`x` of the store's `x_table` a builder chain names in `.table_name(...)`
    (or, for a batch call, as the first argument of `.request_items(...)`), or None."""
    match = re.search(r"\.\s*(?:table_name|request_items)\s*\(\s*&?\s*([\w.]+(?:\(\))?)", chain)
    if not match:
        return None
    expression = match.group(1)
    field = re.fullmatch(r"self\.(\w+)_table(?:\(\))?", expression)
    if field:
        return field.group(1)
    # let table = self.x_table() / &self.x_table / ...to_owned()
    binding = re.search(r"\blet\s+%s\s*=\s*&?\s*self\.(\w+)_table\b" % re.escape(expression), fn.body)
    return binding.group(1) if binding else None


@functools.cache
def calls_of(fn):
    """The AWS calls `fn`'s own body makes: (kind, what, action)."""
    calls = set()
    for match in DYNAMODB_CALL.finditer(fn.body):
        action = DYNAMODB_OPERATIONS[match.group(1)]
        if action:
            chain = statement_text(fn.body, match.end())
            kind = "index" if re.search(r"\.\s*index_name\s*\(", chain) else "table"
            calls.add((kind, table_field(fn, chain), action))
    for match in TRANSACTION_ITEM.finditer(fn.body):
        calls.add(("table", table_field(fn, statement_text(fn.body, match.end())), TRANSACTION_ITEMS[match.group(1)]))
    for match in MANAGEMENT_CALL.finditer(fn.body):
        calls.add(("connections", MANAGEMENT_OPERATIONS[match.group(1)], "execute-api:ManageConnections"))
    for match in SQS_CALL.finditer(fn.body):
        calls.add(("queue", None, "sqs:SendMessage"))
    if SECRET_READER.search(fn.body):
        for match in SECRET_FIELD.finditer(fn.body):
            calls.add(("secret", match.group(1), SECRET_OPERATIONS["get_secret_value"]))
    return calls


def ref_of(function, variable):
    value = environment(function).get(variable)
    return value.get("Ref") if isinstance(value, dict) else None


def needed_resource(function, kind, what):
    """The template resource a call of the function's code goes to, named like `granted_resource`."""
    if kind in ("table", "index"):
        variable = TABLE_VARIABLE.format(str(what).upper())
        table = ref_of(function, variable)
        if table is None:
            return f"the table of {variable}, which the function does not set"
        return table if kind == "table" else f"{table}/index/*"
    if kind == "connections":
        endpoint = environment(function).get(MANAGEMENT_ENDPOINT, {})
        api = re.match(r"https://\$\{(\w+)\}\.execute-api\.", endpoint.get("Fn::Sub", "")) if isinstance(endpoint, dict) else None
        if api is None:
            return f"the API of {MANAGEMENT_ENDPOINT}, which the function does not set"
        return f"{api.group(1)}/{what}/@connections/*"
    if kind == "secret":
        variable = SECRET_VARIABLE.format(str(what).upper())
        secret = ref_of(function, variable)
        return secret if secret else f"the secret of {variable}, which the function does not set"
    queue = ref_of(function, FAILURE_QUEUE)
    return queue if queue else f"the queue of {FAILURE_QUEUE}, which the function does not set"


def granted_resource(resource):
    # A resource named by a parameter (a Secrets Manager secret's ARN).
    if isinstance(resource, dict) and resource.get("Ref") in TEMPLATE.get("Parameters", {}):
        return resource["Ref"]
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        logical_id, attribute = resource["Fn::GetAtt"]
        resource_type = RESOURCES.get(logical_id, {}).get("Type")
        if attribute == "Arn" and resource_type in ("AWS::DynamoDB::Table", "AWS::SQS::Queue"):
            return logical_id
        if attribute == "StreamArn" and resource_type == "AWS::DynamoDB::Table":
            return f"{logical_id}/stream"
    if isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        text = resource["Fn::Sub"]
        index = re.fullmatch(r"\$\{(\w+)\.Arn\}/index/\*", text)
        if index:
            return f"{index.group(1)}/index/*"
        connections = re.fullmatch(
            r"arn:\$\{AWS::Partition\}:execute-api:\$\{AWS::Region\}:\$\{AWS::AccountId\}:\$\{(\w+)\}/\$\{StageName\}/(\w+)/@connections/\*",
            text,
        )
        if connections:
            return "{}/{}/@connections/*".format(*connections.groups())
    return f"an unrecognised resource {resource!r}"


def code_needs(function):
    """(resource, action) for every AWS call the function's code can make."""
    calls = set().union(*(calls_of(fn) for fn in reachable_fns(binary_of(function))))
    return {(needed_resource(function, kind, what), action) for kind, what, action in calls}


def mapping_needs(name, resources):
    """What Lambda does with the function's role for its stream mappings: read
    the stream, and send what it gives up on to the on-failure destination."""
    needs = set()
    for mapping in resources.values():
        properties = mapping["Properties"]
        if mapping["Type"] != "AWS::Lambda::EventSourceMapping" or invoked_function(properties["FunctionName"]) != name:
            continue
        needs |= {(granted_resource(properties["EventSourceArn"]), action) for action in STREAM_READS}
        destination = properties.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        if destination is not None:
            needs.add((granted_resource(destination), "sqs:SendMessage"))
    return needs


def grants_of(function):
    return {
        (granted_resource(resource), action)
        for statement in statements(function)
        for resource in listed(statement["Resource"])
        for action in listed(statement["Action"])
    }


def grant_mismatches(functions, resources=RESOURCES, needs=None):
    """Function name -> the grants its own code (and its stream mappings) need
    but it lacks, and the ones nothing of it uses."""
    mismatches = {}
    for name, function in functions.items():
        needed = (needs or code_needs)(function) | mapping_needs(name, resources)
        granted = grants_of(function)
        if granted != needed:
            mismatches[name] = {"missing": needed - granted, "unused": granted - needed}
    return mismatches


@functools.cache
def cargo_metadata():
    return json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )


def function_packages():
    return [p for p in cargo_metadata()["packages"] if p["manifest_path"].startswith(str(FUNCTION_SOURCES))]


def workspace_binaries():
    return {target["name"] for package in function_packages() for target in package["targets"] if "bin" in target["kind"]}


def binary_of(function):
    return function["Metadata"]["BuildProperties"]["Binary"]


def statements(function):
    """Every statement of the function's policies; a policy under `!If` counts
    as granted (its condition is a parameter the deployer may set)."""
    for policy in function["Properties"].get("Policies", []):
        if "Fn::If" in policy:
            _condition, policy, _otherwise = policy["Fn::If"]
        yield from policy["Statement"]


def listed(value):
    return value if isinstance(value, list) else [value]


def invoked_function(function_name):
    """The logical id of the function a `FunctionName` invokes: `!Ref F`, or
    SAM's `!Ref F.Alias` (its `live` alias)."""
    reference = function_name.get("Ref", "") if isinstance(function_name, dict) else ""
    return reference.removesuffix(".Alias")


def routed_functions():
    """Route key -> the logical id of the function its integration invokes
    (a route answered without a function, such as a MOCK one, is left out)."""
    routed = {}
    for route in (r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::ApiGatewayV2::Route"):
        integration = re.fullmatch(r"integrations/\$\{(\w+)\}", route.get("Target", {}).get("Fn::Sub", ""))
        assert integration, f"{route['RouteKey']} has no integration target"
        uri = RESOURCES[integration.group(1)]["Properties"].get("IntegrationUri", {})
        function = re.search(r"\$\{(\w+)\.(?:Arn|Alias)\}", uri.get("Fn::Sub", "") if isinstance(uri, dict) else "")
        if function:
            routed[route["RouteKey"]] = function.group(1)
    return routed


def alarm_metrics(alarm):
    """(namespace, metric name, {dimension: value}) of every metric an alarm
    reads, itself or through metric math."""
    metrics = [alarm] if "MetricName" in alarm else [q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q]
    return [
        (metric["Namespace"], metric["MetricName"], {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])})
        for metric in metrics
    ]


def telemetry_metrics():
    """Metric const -> name, from shared/src/telemetry.rs."""
    source = (SHARED_SOURCES / "telemetry.rs").read_text()
    return dict(re.findall(r'pub const ([A-Z_]+): &str = "(\w+)";', source.split("pub mod metric", 1)[1]))


def config_variables():
    source = (SHARED_SOURCES / "config" / "names.rs").read_text()
    return set(re.findall(r'pub const [A-Z_]+: &str = "(AIRWAVE_[A-Z_]+)";', source))


def environment(function):
    variables = dict(TEMPLATE["Globals"]["Function"]["Environment"]["Variables"])
    variables.update(function["Properties"].get("Environment", {}).get("Variables", {}))
    return variables
