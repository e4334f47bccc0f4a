"""AWS's limits, the promises built on them, and each function's IAM rights (exactly
INGEST_RIGHTS and ROUTER_RIGHTS below), checked on the parsed template.

Run by `make template-check` (after cfn-lint) with .venv's python:
    .venv/bin/python tests/template_invariants.py
It ends with `N passed, M failed` and exits non-zero if any failed.

The template is parsed with cfnlint.decode (it knows !Ref, !GetAtt, !If, ...),
never searched as text. Conditions are evaluated for every value of
IngestQueueType (the IAM test also for every Tracing, and with and without an
ExistingSecretArn); a number given as a !Ref to a parameter counts as anything
between the parameter's MinValue and MaxValue, so a deployer's override cannot
break a promise the defaults keep.
"""

import itertools
import math
import re
import sys
import unittest
from pathlib import Path

import cfnlint.decode

from counting_runner import run

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"

# Svix gives up on an answer after this long (s).
SVIX_WAIT_S = 15
# The AWS SDK's budget per call, retries included: OPERATION_TIMEOUT in
# src/adapters/aws.rs (3 attempts of at most ATTEMPT_TIMEOUT 2 s, 5 s in all).
# The slowest accepted webhook makes two calls, one after the other: S3
# PutObject (the claim check), then SQS SendMessage.
S3_PUT_OBJECT_S = 5
SQS_SEND_MESSAGE_S = 5
# Ingest answers 503 at a deadline this long before its Lambda timeout.
DEADLINE_MARGIN_S = 1

# SQS's limits.
SQS_MAX_MESSAGE_BYTES = 1_048_576  # 1 MiB since 2025
SQS_MAX_RETENTION_S = 1_209_600  # 14 days
SQS_DEFAULT_RETENTION_S = 345_600  # 4 days, when MessageRetentionPeriod is absent
# AWS: an SQS event source's queue needs a visibility timeout of at least 6x
# the function's timeout.
VISIBILITY_PER_FUNCTION_TIMEOUT = 6
# Lambda: ScalingConfig.MaximumConcurrency is 2 to 1000.
MIN_MAXIMUM_CONCURRENCY = 2
MAX_MAXIMUM_CONCURRENCY = 1000
# SAM's timeout for a function with none, in Globals or its own.
SAM_DEFAULT_TIMEOUT_S = 3
DAY_S = 86_400
# The retentions (days) CloudWatch Logs accepts for a log group.
CLOUDWATCH_RETENTION_DAYS = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                             2922, 3288, 3653}
LOG_RETENTION_PARAMETER = "LogRetentionDays"
LOG_RETENTION_DEFAULT_DAYS = 30

INGEST = "IngestFunction"
ROUTER = "RouterFunction"
QUEUE_TYPE_PARAMETER = "IngestQueueType"
TRACING_PARAMETER = "Tracing"
RESERVED_CONCURRENCY_PARAMETER = "IngestReservedConcurrency"
# Lambda's reserved concurrency is per function, at most the account's quota; the
# HTTP API's account-level defaults are 10,000 requests per second and bursts of 5,000.
HTTP_API_MAX_RATE = 10_000
HTTP_API_MAX_BURST = 5_000
EXISTING_SECRET_PARAMETER = "ExistingSecretArn"
ARCHIVE_PARAMETER = "Archive"
ARCHIVE_RETENTION_PARAMETER = "ArchiveRetentionDays"
# src/core/archive.rs: partition_path, and ArchiveRecord's keys as the JSON SerDe reads them (lower case).
ARCHIVE_PREFIX = "archive/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/"
ARCHIVE_FIELDS = ["id", "source", "timestamp", "eventtype", "received", "resourceid", "body", "bodybase64",
                  "claimcheck", "bytes"]
# Firehose buffers at most 900 s; replay's --lag-hours covers what is later.
FIREHOSE_MAX_BUFFER_S = 900
# A value for ExistingSecretArn, to check the template with a secret it does not create.
SOME_SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nectar-AbCdEf"

# Every IAM right each function has: (action, resource, why). A resource is
# written as the template names it after conditions are resolved: "X.Arn" for
# !GetAtt X.Arn, "X" for !Ref X, a !Sub's string as it stands, "*". Two names
# stand for what the function is configured with: OWN_LOG_GROUP, the ARN of
# its log group (LoggingConfig.LogGroup), and SIGNING_SECRET, the secret in
# ingest's WEBHOOK_SECRET_ARN. The policy test fails on any right granted
# beyond these, and on any of these not granted.
OWN_LOG_GROUP = "<its log group's ARN>"
SIGNING_SECRET = "<the secret in WEBHOOK_SECRET_ARN>"
LOG_RIGHTS = [
    ("logs:CreateLogStream", OWN_LOG_GROUP, "Lambda writes its log lines to its own group"),
    ("logs:PutLogEvents", OWN_LOG_GROUP, "Lambda writes its log lines to its own group"),
]
INGEST_RIGHTS = LOG_RIGHTS + [
    ("sqs:SendMessage", "IngestQueue.Arn", "src/adapters/sqs.rs: every verified webhook"),
    ("s3:PutObject", "${PayloadBucket.Arn}/payloads/*", "src/adapters/payloads.rs: claim checks of bodies over 1 MiB"),
    ("secretsmanager:GetSecretValue", SIGNING_SECRET, "src/adapters/secrets.rs: the signing secret, at cold start"),
]
ROUTER_RIGHTS = LOG_RIGHTS + [
    # Lambda's SQS event source polls with the function's own role.
    ("sqs:ReceiveMessage", "IngestQueue.Arn", "the SQS event source"),
    ("sqs:DeleteMessage", "IngestQueue.Arn", "the SQS event source"),
    ("sqs:GetQueueAttributes", "IngestQueue.Arn", "the SQS event source"),
    ("sqs:SendMessage", "DocumentsQueue.Arn", "ROUTES"),
    ("sqs:SendMessage", "ConnectionsQueue.Arn", "ROUTES"),
    ("sqs:SendMessage", "DefaultQueue.Arn", "ROUTES"),
    ("sqs:SendMessage", "IngestDeadLetterQueue.Arn", "src/adapters/lambda_router.rs: a message's last receive"),
    ("s3:GetObject", "${PayloadBucket.Arn}/payloads/*", "src/adapters/payloads.rs: reading claim-checked payloads"),
    ("s3:PutObject", "${PayloadBucket.Arn}/payloads/*",
     "src/adapters/destinations.rs: claim checks of copies too large for SQS or EventBridge"),
    ("dynamodb:GetItem", "IdempotencyTable.Arn", "src/adapters/idempotency.rs: claim"),
    ("dynamodb:PutItem", "IdempotencyTable.Arn", "src/adapters/idempotency.rs: claim, complete"),
    ("dynamodb:DeleteItem", "IdempotencyTable.Arn", "src/adapters/idempotency.rs: release"),
    # An EventBridge route (eventbridge:NAME in ROUTES) adds
    # ("events:PutEvents", "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/NAME", ...)
]
# Only with Archive=Enabled.
ARCHIVE_RIGHTS = [
    ("firehose:PutRecordBatch", "ArchiveStream.Arn", "src/adapters/archive/firehose.rs: every record read"),
]
# Only with Tracing=Active; X-Ray's write actions take no resource.
TRACING_RIGHTS = [
    ("xray:PutTraceSegments", "*", "Tracing=Active: Lambda sends the function's trace segments"),
    ("xray:PutTelemetryRecords", "*", "Tracing=Active"),
]
RIGHTS = {INGEST: INGEST_RIGHTS, ROUTER: ROUTER_RIGHTS}
# Resource types through which a template can give a role more rights.
POLICY_ATTACHING_TYPES = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy",
                          "AWS::Serverless::Connector")

NO_VALUE = object()


def load(path=TEMPLATE):
    template, matches = cfnlint.decode.decode(str(path))
    if matches or template is None:
        raise SystemExit(f"{path}: cannot parse: {[str(m) for m in matches]}")
    return template


class Template:
    """The parsed template, with conditions resolved for one set of parameter values."""

    def __init__(self, raw, overrides=None):
        self.raw = raw
        self.parameters = raw.get("Parameters", {})
        self.values = {name: p.get("Default") for name, p in self.parameters.items()}
        self.values.update(overrides or {})
        # A resource whose Condition is false does not exist.
        self.resources = {name: self.resolve(r) for name, r in raw["Resources"].items()
                          if "Condition" not in r or self.condition({"Condition": r["Condition"]})}
        self.globals = self.resolve(raw.get("Globals", {}))

    def condition(self, node):
        if isinstance(node, dict) and len(node) == 1:
            ((key, args),) = node.items()
            if key == "Fn::Equals":
                a, b = (self.value(x) for x in args)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.condition(args[0])
            if key == "Fn::And":
                return all(self.condition(x) for x in args)
            if key == "Fn::Or":
                return any(self.condition(x) for x in args)
            if key == "Condition":
                return self.condition(self.raw["Conditions"][args])
        raise AssertionError(f"cannot evaluate condition {node!r}")

    def value(self, node):
        if isinstance(node, dict) and "Ref" in node and node["Ref"] in self.values:
            return self.values[node["Ref"]]
        if isinstance(node, dict) and "Condition" in node:
            return self.condition(node)
        return node

    def resolve(self, node):
        """Fn::If chosen by the conditions, AWS::NoValue removed; other intrinsics kept."""
        if isinstance(node, dict):
            if len(node) == 1 and "Fn::If" in node:
                name, then, otherwise = node["Fn::If"]
                taken = then if self.condition(self.raw["Conditions"][name]) else otherwise
                return self.resolve(taken)
            if node == {"Ref": "AWS::NoValue"}:
                return NO_VALUE
            out = {}
            for key, value in node.items():
                value = self.resolve(value)
                if value is not NO_VALUE:
                    out[key] = value
            return out
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not NO_VALUE]
        return node

    # --- lookups ---

    def bounds(self, node, what):
        """(lowest, highest) a number can be: a literal, or a !Ref to a Number parameter."""
        if isinstance(node, dict) and "Ref" in node:
            p = self.parameters.get(node["Ref"])
            assert p is not None, f"{what}: !Ref {node['Ref']} is not a parameter"
            return (float(p.get("MinValue", -math.inf)), float(p.get("MaxValue", math.inf)))
        assert isinstance(node, (int, float, str)), f"{what}: {node!r} is not a number"
        return (float(node), float(node))

    def target(self, node, what):
        """The resource a !Ref or !GetAtt X.Arn names."""
        if isinstance(node, dict) and "Ref" in node:
            name = node["Ref"]
        elif isinstance(node, dict) and "Fn::GetAtt" in node:
            name = node["Fn::GetAtt"][0]
        else:
            raise AssertionError(f"{what}: {node!r} names no resource")
        assert name in self.resources, f"{what}: {name} is not a resource"
        return name

    def props(self, name):
        return self.resources[name].get("Properties", {})

    def env(self, function):
        return self.props(function).get("Environment", {}).get("Variables", {})

    def timeout(self, function):
        timeout = self.props(function).get("Timeout")
        if timeout is None:
            timeout = self.globals.get("Function", {}).get("Timeout", SAM_DEFAULT_TIMEOUT_S)
        return timeout

    def functions(self):
        return sorted(n for n, r in self.resources.items()
                      if r.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function"))

    def of_type(self, kind):
        return sorted(n for n, r in self.resources.items() if r.get("Type") == kind)

    def log_group(self, function):
        """The AWS::Logs::LogGroup the function writes to: the one its LoggingConfig.LogGroup names,
        else one named /aws/lambda/${function} (Lambda's default name), else None."""
        config = self.props(function).get("LoggingConfig") or self.globals.get("Function", {}).get("LoggingConfig", {})
        named = config.get("LogGroup")
        if named is not None:
            group = self.target(named, f"{function} LoggingConfig.LogGroup")
            assert self.resources[group]["Type"] == "AWS::Logs::LogGroup", \
                f"{function} LoggingConfig.LogGroup names {group}, not an AWS::Logs::LogGroup"
            return group
        for group in self.of_type("AWS::Logs::LogGroup"):
            name = self.props(group).get("LogGroupName")
            if isinstance(name, dict) and "Fn::Sub" in name:
                name = name["Fn::Sub"]
            if name == f"/aws/lambda/${{{function}}}":
                return group
        return None

    def role(self, function):
        """The AWS::IAM::Role the function's Role names (SAM then generates none and adds nothing)."""
        node = self.props(function).get("Role")
        assert node is not None, (f"{function} has no Role: SAM would generate one and add what its events and "
                                  "policy templates carry (AWSLambdaSQSQueueExecutionRole for an SQS event: every queue)")
        role = self.target(node, f"{function} Role")
        assert self.resources[role]["Type"] == "AWS::IAM::Role", f"{function} Role names {role}, not an AWS::IAM::Role"
        return role

    def rights(self, role):
        """Every (action, resource) the role's inline policies allow, each with the policy that grants it."""
        granted = {}
        for policy in self.props(role).get("Policies", []):
            name = policy.get("PolicyName")
            statements = policy.get("PolicyDocument", {}).get("Statement", [])
            for statement in statements if isinstance(statements, list) else [statements]:
                where = f"{role} policy {name} statement {statement.get('Sid', '(no Sid)')}"
                for key in ("NotAction", "NotResource", "NotPrincipal"):
                    assert key not in statement, f"{where}: {key} allows everything not listed"
                if statement.get("Effect") != "Allow":
                    continue
                actions, resources = statement.get("Action", []), statement.get("Resource", [])
                for action in actions if isinstance(actions, list) else [actions]:
                    for resource in resources if isinstance(resources, list) else [resources]:
                        granted[(action.lower(), canonical(resource, where))] = where
        return granted

    def router_sqs_event(self):
        events = [e for e in self.props(ROUTER).get("Events", {}).values() if e.get("Type") == "SQS"]
        assert len(events) == 1, f"{ROUTER} has {len(events)} SQS events, expected 1"
        return events[0]["Properties"]

    def ingest_queue(self):
        return self.target(self.router_sqs_event()["Queue"], f"{ROUTER}'s SQS event Queue")

    def ingest_dlq(self):
        redrive = self.props(self.ingest_queue()).get("RedrivePolicy", {})
        return self.target(redrive.get("deadLetterTargetArn"), f"{self.ingest_queue()} RedrivePolicy")

    def router_dlq(self):
        return self.target(self.env(ROUTER).get("DEAD_LETTER_QUEUE_URL"), f"{ROUTER} DEAD_LETTER_QUEUE_URL")

    def retention_max(self, queue):
        node = self.props(queue).get("MessageRetentionPeriod", SQS_DEFAULT_RETENTION_S)
        return self.bounds(node, f"{queue} MessageRetentionPeriod")[1]

    def is_fifo(self, queue):
        return str(self.props(queue).get("FifoQueue", False)).lower() == "true"


def canonical(node, what):
    """A policy's resource as INGEST_RIGHTS and ROUTER_RIGHTS write it."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and len(node) == 1:
        ((key, value),) = node.items()
        if key == "Ref":
            return value
        if key == "Fn::GetAtt":
            return ".".join(value) if isinstance(value, list) else value
        if key == "Fn::Sub" and isinstance(value, str):
            return value
        if key == "Fn::Sub" and isinstance(value, list) and len(value) == 1:
            return value[0]
    raise AssertionError(f"{what}: cannot read resource {node!r}")


def mentions(node, name):
    """Whether a !Ref or !GetAtt to the resource `name` occurs anywhere in node."""
    if isinstance(node, dict):
        if node.get("Ref") == name:
            return True
        attr = node.get("Fn::GetAtt")
        if attr is not None and (attr[0] if isinstance(attr, list) else attr.split(".")[0]) == name:
            return True
        return any(mentions(v, name) for v in node.values())
    if isinstance(node, list):
        return any(mentions(v, name) for v in node)
    return False


RAW = load()


def scenarios():
    """The template under every IngestQueueType (just the defaults if there is no such parameter)."""
    allowed = RAW.get("Parameters", {}).get(QUEUE_TYPE_PARAMETER, {}).get("AllowedValues")
    if not allowed:
        return [("defaults", Template(RAW))]
    return [(f"{QUEUE_TYPE_PARAMETER}={v}", Template(RAW, {QUEUE_TYPE_PARAMETER: v})) for v in allowed]


def parameter_sets():
    """Every combination of the parameter values that change IAM rights or the resources they name."""
    parameters = RAW.get("Parameters", {})
    choices = {
        QUEUE_TYPE_PARAMETER: parameters.get(QUEUE_TYPE_PARAMETER, {}).get("AllowedValues"),
        TRACING_PARAMETER: parameters.get(TRACING_PARAMETER, {}).get("AllowedValues"),
        EXISTING_SECRET_PARAMETER: ["", SOME_SECRET_ARN] if EXISTING_SECRET_PARAMETER in parameters else None,
        ARCHIVE_PARAMETER: parameters.get(ARCHIVE_PARAMETER, {}).get("AllowedValues"),
    }
    choices = {name: values for name, values in choices.items() if values}
    for values in itertools.product(*choices.values()):
        yield dict(zip(choices, values))


def days(seconds):
    return f"{seconds / DAY_S:g} d"


class TemplateInvariants(unittest.TestCase):
    maxDiff = None

    def each(self, check):
        """check(template) under every IngestQueueType, each a subtest."""
        for label, t in scenarios():
            with self.subTest(label):
                check(t)

    def test_a_idempotency_window_outlives_queue_plus_dlq(self):
        """(a) The idempotency window, default and minimum, is longer than a message can live
        in the ingest queue and then, as the router's dead-letter copy (a new message,
        a new clock), in the DLQ."""
        def check(t):
            ttl = t.env(ROUTER).get("IDEMPOTENCY_TTL_DAYS")
            self.assertIsNotNone(ttl, f"{ROUTER} has no IDEMPOTENCY_TTL_DAYS")
            if isinstance(ttl, dict):
                name = ttl.get("Ref")
                self.assertIn(name, t.parameters, f"IDEMPOTENCY_TTL_DAYS: {ttl!r} is not a parameter")
                p = t.parameters[name]
                self.assertIn("MinValue", p, f"{name} has no MinValue: a deployer could set any window")
                default, minimum = float(p["Default"]), float(p["MinValue"])
            else:
                name, default, minimum = "IDEMPOTENCY_TTL_DAYS", float(ttl), float(ttl)
            queue, dlqs = t.ingest_queue(), {t.ingest_dlq(), t.router_dlq()}
            queue_s = t.retention_max(queue)
            dlq_s = max(t.retention_max(d) for d in dlqs)
            lifetime_d = (queue_s + dlq_s) / DAY_S
            for label, v in (("Default", default), ("MinValue", minimum)):
                self.assertGreater(
                    v,
                    lifetime_d,
                    f"{name} {label} {v:g} d must exceed {queue} retention {days(queue_s)} + "
                    f"{'/'.join(sorted(dlqs))} retention {days(dlq_s)} = {lifetime_d:g} d",
                )

        self.each(check)

    def test_b_payloads_outlive_the_idempotency_window(self):
        """(b) A claim-checked payload expires no sooner than the window in which the router
        may still act on a pointer to it."""
        def check(t):
            ttl = t.env(ROUTER).get("IDEMPOTENCY_TTL_DAYS")
            bucket = t.target(t.env(INGEST).get("CLAIM_CHECK_BUCKET"), f"{INGEST} CLAIM_CHECK_BUCKET")
            self.assertEqual(
                bucket,
                t.target(t.env(ROUTER).get("CLAIM_CHECK_BUCKET"), f"{ROUTER} CLAIM_CHECK_BUCKET"),
                "ingest and router use different claim-check buckets",
            )
            rules = t.props(bucket).get("LifecycleConfiguration", {}).get("Rules", [])
            expiring = [r for r in rules if r.get("Status") == "Enabled" and "ExpirationInDays" in r]
            self.assertTrue(expiring, f"{bucket} has no enabled ExpirationInDays rule")
            ttl_max = t.bounds(ttl, "IDEMPOTENCY_TTL_DAYS")[1]
            for rule in expiring:
                expiry = rule["ExpirationInDays"]
                if expiry == ttl:
                    continue
                lowest = t.bounds(expiry, f"{bucket} rule {rule.get('Id')}")[0]
                self.assertGreaterEqual(
                    lowest,
                    ttl_max,
                    f"{bucket} rule {rule.get('Id')} ExpirationInDays {expiry!r} (as low as {lowest:g} d) "
                    f"must be IDEMPOTENCY_TTL_DAYS {ttl!r} itself or >= its largest value {ttl_max:g} d",
                )

        self.each(check)

    def test_c_visibility_timeout_covers_six_router_timeouts(self):
        """(c) The ingest queue hides a message for at least 6x the router's timeout."""
        def check(t):
            queue = t.ingest_queue()
            visibility = t.bounds(t.props(queue).get("VisibilityTimeout", 30), f"{queue} VisibilityTimeout")[0]
            timeout = t.bounds(t.timeout(ROUTER), f"{ROUTER} Timeout")[1]
            self.assertGreaterEqual(
                visibility,
                VISIBILITY_PER_FUNCTION_TIMEOUT * timeout,
                f"{queue} VisibilityTimeout {visibility:g} s must be >= "
                f"{VISIBILITY_PER_FUNCTION_TIMEOUT} x {ROUTER} Timeout {timeout:g} s "
                f"= {VISIBILITY_PER_FUNCTION_TIMEOUT * timeout:g} s",
            )

        self.each(check)

    def test_d_router_concurrency_is_capped_by_a_parameter(self):
        """(d) The router's SQS event source has a MaximumConcurrency, a parameter Lambda accepts."""
        def check(t):
            event = t.router_sqs_event()
            cap = event.get("ScalingConfig", {}).get("MaximumConcurrency")
            self.assertIsInstance(cap, dict, f"{ROUTER} SQS event: ScalingConfig.MaximumConcurrency is {cap!r}, "
                                  "not a !Ref to a parameter")
            name = cap.get("Ref")
            self.assertIn(name, t.parameters, f"MaximumConcurrency: {cap!r} is not a parameter")
            p = t.parameters[name]
            minimum, maximum = p.get("MinValue"), p.get("MaxValue")
            self.assertIsNotNone(minimum, f"{name} has no MinValue (Lambda's minimum is {MIN_MAXIMUM_CONCURRENCY})")
            self.assertGreaterEqual(float(minimum), MIN_MAXIMUM_CONCURRENCY,
                                    f"{name} MinValue {minimum} must be >= {MIN_MAXIMUM_CONCURRENCY}")
            self.assertIsNotNone(maximum, f"{name} has no MaxValue (Lambda's maximum is {MAX_MAXIMUM_CONCURRENCY})")
            self.assertLessEqual(float(maximum), MAX_MAXIMUM_CONCURRENCY,
                                 f"{name} MaxValue {maximum} must be <= {MAX_MAXIMUM_CONCURRENCY}")

        self.each(check)

    def test_e_ingest_answers_svix_in_time_even_for_a_claim_check(self):
        """(e) Ingest's timeout is inside Svix's wait, and its deadline leaves room for
        S3 PutObject then SQS SendMessage."""
        def check(t):
            lowest, highest = t.bounds(t.timeout(INGEST), f"{INGEST} Timeout")
            self.assertLess(highest, SVIX_WAIT_S,
                            f"{INGEST} Timeout {highest:g} s must be < Svix's {SVIX_WAIT_S} s")
            calls = S3_PUT_OBJECT_S + SQS_SEND_MESSAGE_S
            self.assertGreaterEqual(
                lowest - DEADLINE_MARGIN_S,
                calls,
                f"{INGEST} Timeout {lowest:g} s - {DEADLINE_MARGIN_S} s margin = {lowest - DEADLINE_MARGIN_S:g} s "
                f"must be >= S3 {S3_PUT_OBJECT_S} s + SQS {SQS_SEND_MESSAGE_S} s = {calls} s",
            )

        self.each(check)

    def test_f_every_queue_takes_1_mib_and_at_most_14_days(self):
        """(f) Every SQS queue takes SQS's largest message and a retention SQS accepts."""
        def check(t):
            queues = [n for n, r in t.resources.items() if r.get("Type") == "AWS::SQS::Queue"]
            self.assertTrue(queues, "no AWS::SQS::Queue in the template")
            for queue in queues:
                size = t.props(queue).get("MaximumMessageSize")
                self.assertEqual(
                    size if size is None else int(size), SQS_MAX_MESSAGE_BYTES,
                    f"{queue} MaximumMessageSize {size!r} must be {SQS_MAX_MESSAGE_BYTES} (1 MiB)",
                )
                retention = t.retention_max(queue)
                self.assertLessEqual(
                    retention, SQS_MAX_RETENTION_S,
                    f"{queue} MessageRetentionPeriod {retention:.0f} s must be <= {SQS_MAX_RETENTION_S} s (14 d)",
                )

        self.each(check)

    def test_g_fifo_ingest_queue_has_a_fifo_dlq(self):
        """(g) IngestQueueType=fifo makes the ingest queue, its redrive DLQ and the router's DLQ
        FIFO (a FIFO queue's DLQ must be FIFO); standard makes none of them FIFO."""
        p = RAW.get("Parameters", {}).get(QUEUE_TYPE_PARAMETER)
        self.assertIsNotNone(p, f"no {QUEUE_TYPE_PARAMETER} parameter")
        self.assertEqual(sorted(p.get("AllowedValues", [])), ["fifo", "standard"],
                         f"{QUEUE_TYPE_PARAMETER} AllowedValues")
        self.assertEqual(p.get("Default"), "standard", f"{QUEUE_TYPE_PARAMETER} Default")
        for value, fifo in (("fifo", True), ("standard", False)):
            with self.subTest(f"{QUEUE_TYPE_PARAMETER}={value}"):
                t = Template(RAW, {QUEUE_TYPE_PARAMETER: value})
                for queue in sorted({t.ingest_queue(), t.ingest_dlq(), t.router_dlq()}):
                    self.assertEqual(
                        t.is_fifo(queue), fifo,
                        f"{QUEUE_TYPE_PARAMETER}={value}: {queue} FifoQueue is "
                        f"{t.props(queue).get('FifoQueue', 'absent')!r}, expected {'true' if fifo else 'absent/false'}",
                    )

    def test_h_fifo_event_source_has_no_batching_window(self):
        """(h) Lambda does not support MaximumBatchingWindowInSeconds on a FIFO queue's event source."""
        def check(t):
            if t.is_fifo(t.ingest_queue()):
                window = t.router_sqs_event().get("MaximumBatchingWindowInSeconds")
                self.assertIsNone(window, f"{ROUTER} SQS event on FIFO {t.ingest_queue()}: "
                                  f"MaximumBatchingWindowInSeconds {window!r} must be absent")

        self.each(check)


    def test_i_every_function_logs_to_a_group_with_retention(self):
        """(i) Every function logs to a log group of the stack's own (its LoggingConfig.LogGroup, or
        one named /aws/lambda/<function>), none shared, kept LogRetentionDays: a parameter whose
        default is 30 days and whose every allowed value is one CloudWatch Logs accepts."""
        p = RAW.get("Parameters", {}).get(LOG_RETENTION_PARAMETER)
        self.assertIsNotNone(p, f"no {LOG_RETENTION_PARAMETER} parameter")
        self.assertEqual(int(p.get("Default", 0)), LOG_RETENTION_DEFAULT_DAYS, f"{LOG_RETENTION_PARAMETER} Default")
        allowed = {int(v) for v in p.get("AllowedValues", [])}
        self.assertTrue(allowed, f"{LOG_RETENTION_PARAMETER} has no AllowedValues")
        self.assertLessEqual(allowed, CLOUDWATCH_RETENTION_DAYS,
                             f"{LOG_RETENTION_PARAMETER}: CloudWatch Logs does not accept "
                             f"{sorted(allowed - CLOUDWATCH_RETENTION_DAYS)}")

        def check(t):
            functions = t.functions()
            self.assertTrue(functions, "no function in the template")
            groups = {}
            for function in functions:
                group = t.log_group(function)
                self.assertIsNotNone(group, f"{function} has no log group in the template: Lambda would create "
                                     "/aws/lambda/<function> itself, kept forever")
                self.assertNotIn(group, groups.values(), f"{function} shares log group {group}")
                groups[function] = group
                retention = t.props(group).get("RetentionInDays")
                self.assertEqual(retention, {"Ref": LOG_RETENTION_PARAMETER},
                                 f"{group} (of {function}) RetentionInDays is {retention!r}, "
                                 f"not !Ref {LOG_RETENTION_PARAMETER}")

        self.each(check)


    def test_j_every_iam_right_is_listed(self):
        """(j) Least privilege: each function has an explicit role (so SAM adds no managed policy or
        policy template of its own), trusted by Lambda alone, with no managed policies, nothing
        attached from elsewhere, and inline statements that allow exactly INGEST_RIGHTS or
        ROUTER_RIGHTS (plus TRACING_RIGHTS with Tracing=Active): one right more or less fails.
        Under every combination of IngestQueueType, Tracing, ExistingSecretArn and Archive."""
        self.assertEqual(sorted(RIGHTS), sorted(Template(RAW).functions()),
                         "every function needs its list of rights in RIGHTS, and only functions have one")
        for overrides in parameter_sets():
            label = " ".join(f"{k}={v or '(empty)'}" for k, v in overrides.items())
            t = Template(RAW, overrides)
            tracing = overrides.get(TRACING_PARAMETER) == "Active"
            archive = overrides.get(ARCHIVE_PARAMETER) == "Enabled"
            for function, rights in sorted(RIGHTS.items()):
                with self.subTest(f"{function} {label}"):
                    self.assertFalse("Policies" in t.props(function),
                                     f"{function} has SAM Policies (policy templates or statements): give it a Role "
                                     "and put each statement there; SAM ignores Policies beside a Role")
                    role = t.role(function)
                    props = t.props(role)
                    self.assertEqual(
                        props.get("AssumeRolePolicyDocument", {}).get("Statement"),
                        [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                          "Action": "sts:AssumeRole"}],
                        f"{role}: only Lambda may assume it",
                    )
                    managed = props.get("ManagedPolicyArns", [])
                    self.assertFalse(managed, f"{role} has managed policies, whose rights are not listed here: "
                                     f"{managed}")
                    for other, resource in t.resources.items():
                        kind = resource.get("Type")
                        # A connector writes statements into the roles of the resources it joins.
                        self.assertFalse(
                            kind in POLICY_ATTACHING_TYPES and (kind == "AWS::Serverless::Connector"
                                                                or mentions(resource, role)),
                            f"{other} ({kind}) may give {role} rights not listed here",
                        )
                    placeholders = {
                        OWN_LOG_GROUP: f"{t.log_group(function)}.Arn",
                        SIGNING_SECRET: canonical(t.env(INGEST).get("WEBHOOK_SECRET_ARN"),
                                                  f"{INGEST} WEBHOOK_SECRET_ARN"),
                    }
                    expected = {}
                    extra = (TRACING_RIGHTS if tracing else []) + (ARCHIVE_RIGHTS if archive and function == ROUTER else [])
                    for action, resource, why in rights + extra:
                        expected[(action.lower(), placeholders.get(resource, resource))] = why
                    granted = t.rights(role)
                    beyond = sorted(f"{a} on {r} ({granted[(a, r)]})" for a, r in set(granted) - set(expected))
                    missing = sorted(f"{a} on {r} ({expected[(a, r)]})" for a, r in set(expected) - set(granted))
                    self.assertFalse(beyond, f"{role} allows rights beyond {function}'s list: {'; '.join(beyond)}")
                    self.assertFalse(missing, f"{role} lacks rights {function} uses: {'; '.join(missing)}")

    def test_k_router_may_send_to_every_queue_it_is_configured_with(self):
        """(k) ROUTER_RIGHTS follows the router's configuration: every queue ROUTES names and its
        DEAD_LETTER_QUEUE_URL has sqs:SendMessage; an eventbridge: route would need events:PutEvents."""
        def check(t):
            listed = {(a.lower(), r) for a, r, _ in ROUTER_RIGHTS}
            env = t.env(ROUTER)
            routes = env.get("ROUTES")
            routes = canonical(routes, f"{ROUTER} ROUTES")
            queues = {name for name in re.findall(r"\$\{([A-Za-z0-9]+)\}", routes)
                      if t.resources.get(name, {}).get("Type") == "AWS::SQS::Queue"}
            queues.add(t.router_dlq())
            for queue in sorted(queues):
                self.assertIn(("sqs:sendmessage", f"{queue}.Arn"), listed,
                              f"{ROUTER} sends to {queue} (ROUTES or DEAD_LETTER_QUEUE_URL); ROUTER_RIGHTS lacks it")
            if "eventbridge:" in routes:
                self.assertTrue(any(a == "events:putevents" for a, _ in listed),
                                f"{ROUTER} ROUTES has an eventbridge: route; ROUTER_RIGHTS lacks events:PutEvents")

        self.each(check)


    def test_l_every_method_and_path_reaches_ingest_through_both_entry_points(self):
        """(l) Ingest answers every request itself (404 unknown_source, 405 method_not_allowed, ...):
        its HTTP API event is the catch-all $default route, any method (or /{proxy+} and / with ANY),
        with no authorizer; no other function has an HttpApi event and no other API or route exists
        to take a request first; its function URL takes everything, unauthenticated (AuthType NONE)."""
        def check(t):
            events = t.props(INGEST).get("Events", {})
            http = {name: e.get("Properties", {}) for name, e in events.items() if e.get("Type") == "HttpApi"}
            self.assertTrue(http, f"{INGEST} has no HttpApi event")
            routes = set()
            for name, props in http.items():
                self.assertNotIn("ApiId", props, f"{INGEST} event {name}: an explicit API; check its definition")
                self.assertNotIn("Auth", props, f"{INGEST} event {name}: an authorizer answers before ingest")
                path, method = props.get("Path"), props.get("Method")
                if path is None and method is None:  # SAM's default: the $default route, any method
                    path, method = "$default", "ANY"
                method = str(method).upper()
                if method == "X-AMAZON-APIGATEWAY-ANY-METHOD":
                    method = "ANY"
                routes.add((path, method))
            catch_all = ("$default", "ANY") in routes or {("/{proxy+}", "ANY"), ("/", "ANY")} <= routes
            self.assertTrue(catch_all, f"{INGEST}'s HTTP API routes {sorted(routes)} leave requests to API "
                            "Gateway's own 404: route $default (or /{proxy+} and / with Method ANY)")
            self.assertFalse(t.globals.get("HttpApi", {}).get("Auth"), "Globals HttpApi Auth: an authorizer "
                             "answers before ingest")
            for function in t.functions():
                if function != INGEST:
                    others = [n for n, e in t.props(function).get("Events", {}).items()
                              if e.get("Type") in ("HttpApi", "Api")]
                    self.assertFalse(others, f"{function} events {others} take routes from ingest")
            for kind in ("AWS::Serverless::HttpApi", "AWS::Serverless::Api", "AWS::ApiGatewayV2::Api",
                         "AWS::ApiGatewayV2::Route", "AWS::ApiGatewayV2::Integration"):
                self.assertFalse(t.of_type(kind), f"{kind} {t.of_type(kind)}: check that it leaves every request "
                                 "to ingest, then extend this test")
            url = t.props(INGEST).get("FunctionUrlConfig")
            self.assertIsNotNone(url, f"{INGEST} has no function URL")
            self.assertEqual(url.get("AuthType"), "NONE",
                             f"{INGEST} function URL AuthType {url.get('AuthType')!r}: Svix cannot sign with IAM")

        self.each(check)


    def test_m_ingest_has_reserved_concurrency_and_the_http_api_throttles(self):
        """(m) Ingest's ReservedConcurrentExecutions is IngestReservedConcurrency (default at least 1),
        left out only when the parameter is 0, which means no reservation; and the HTTP API's
        default route settings throttle, rate and burst from parameters that cannot be 0 (0 would
        refuse every request) nor over API Gateway's own limits."""
        p = RAW.get("Parameters", {}).get(RESERVED_CONCURRENCY_PARAMETER)
        self.assertIsNotNone(p, f"no {RESERVED_CONCURRENCY_PARAMETER} parameter")
        self.assertEqual(p.get("Type"), "Number", f"{RESERVED_CONCURRENCY_PARAMETER} Type")
        self.assertGreaterEqual(int(p.get("Default", 0)), 1, f"{RESERVED_CONCURRENCY_PARAMETER} Default reserves none")
        self.assertIn("MinValue", p, f"{RESERVED_CONCURRENCY_PARAMETER} has no MinValue")
        minimum = int(p["MinValue"])
        self.assertGreaterEqual(minimum, 0, f"{RESERVED_CONCURRENCY_PARAMETER} MinValue")
        values = sorted({minimum, max(minimum, 1), int(p["Default"]), int(p.get("MaxValue", p["Default"]))})
        for value in values:
            with self.subTest(f"{RESERVED_CONCURRENCY_PARAMETER}={value}"):
                t = Template(RAW, {RESERVED_CONCURRENCY_PARAMETER: value})
                reserved = t.props(INGEST).get("ReservedConcurrentExecutions")
                if value == 0:
                    self.assertIsNone(reserved, f"{RESERVED_CONCURRENCY_PARAMETER}=0 must reserve nothing "
                                      f"(a reservation of 0 throttles every invocation); got {reserved!r}")
                else:
                    self.assertEqual(reserved, {"Ref": RESERVED_CONCURRENCY_PARAMETER},
                                     f"{INGEST} ReservedConcurrentExecutions is {reserved!r}, "
                                     f"not !Ref {RESERVED_CONCURRENCY_PARAMETER}")

        settings = Template(RAW).globals.get("HttpApi", {}).get("DefaultRouteSettings", {})
        for key, most in (("ThrottlingRateLimit", HTTP_API_MAX_RATE), ("ThrottlingBurstLimit", HTTP_API_MAX_BURST)):
            with self.subTest(key):
                node = settings.get(key)
                self.assertIsInstance(node, dict, f"Globals HttpApi DefaultRouteSettings.{key} is {node!r}, "
                                      "not a !Ref to a parameter")
                name = node.get("Ref")
                self.assertIn(name, RAW.get("Parameters", {}), f"{key}: {node!r} is not a parameter")
                lowest, highest = Template(RAW).bounds(node, key)
                self.assertGreaterEqual(lowest, 1, f"{name} MinValue must be >= 1: 0 throttles every request")
                self.assertLessEqual(highest, most, f"{name} MaxValue must be <= {most}")

    def test_n_the_archive_is_partitioned_as_read_kept_and_queryable(self):
        """(n) Archive=Enabled: the router's ARCHIVE_STREAM is a Firehose stream that gzips into its own
        bucket under the partitions src/core/archive.rs reads (dt=YYYY-MM-DD/hour=HH), buffering at most
        900 s; the bucket keeps objects ArchiveRetentionDays (default 400); the payload bucket keeps the
        payloads archive records point to at least as long; a Glue table projects exactly those
        partitions over exactly ArchiveRecord's fields, with no crawler; failures raise alarms.
        Archive=Disabled: none of it, and no ARCHIVE_STREAM."""
        p = RAW.get("Parameters", {})
        self.assertEqual(p.get(ARCHIVE_PARAMETER, {}).get("Default"), "Enabled", "the archive is on by default")
        retention = p.get(ARCHIVE_RETENTION_PARAMETER, {})
        self.assertEqual(int(retention.get("Default", 0)), 400, f"{ARCHIVE_RETENTION_PARAMETER} Default")
        off = Template(RAW, {ARCHIVE_PARAMETER: "Disabled"})
        self.assertNotIn("ARCHIVE_STREAM", off.env(ROUTER), "Archive=Disabled still sets ARCHIVE_STREAM")
        self.assertFalse(off.of_type("AWS::KinesisFirehose::DeliveryStream") or off.of_type("AWS::Glue::Table"),
                         "Archive=Disabled still creates a stream or a table")

        t = Template(RAW, {ARCHIVE_PARAMETER: "Enabled"})
        stream = t.target(t.env(ROUTER).get("ARCHIVE_STREAM"), f"{ROUTER} ARCHIVE_STREAM")
        self.assertEqual(t.resources[stream]["Type"], "AWS::KinesisFirehose::DeliveryStream")
        destination = t.props(stream).get("ExtendedS3DestinationConfiguration", {})
        bucket = t.target(destination.get("BucketARN"), f"{stream} BucketARN")
        self.assertEqual(destination.get("Prefix"), ARCHIVE_PREFIX, f"{stream} Prefix: the partitions replay reads")
        self.assertEqual(destination.get("CompressionFormat"), "GZIP")
        self.assertTrue(destination.get("ErrorOutputPrefix", "").startswith("archive-errors/"),
                        "failed records must not land among the archive's partitions")
        interval = int(destination.get("BufferingHints", {}).get("IntervalInSeconds", 300))
        self.assertLessEqual(interval, FIREHOSE_MAX_BUFFER_S)

        rules = [r for r in t.props(bucket).get("LifecycleConfiguration", {}).get("Rules", [])
                 if r.get("Status") == "Enabled" and "ExpirationInDays" in r]
        self.assertEqual([r["ExpirationInDays"] for r in rules], [{"Ref": ARCHIVE_RETENTION_PARAMETER}],
                         f"{bucket} must expire objects after {ARCHIVE_RETENTION_PARAMETER}, and only then")
        payloads = t.target(t.env(ROUTER).get("CLAIM_CHECK_BUCKET"), f"{ROUTER} CLAIM_CHECK_BUCKET")
        lowest_retention = t.bounds({"Ref": ARCHIVE_RETENTION_PARAMETER}, ARCHIVE_RETENTION_PARAMETER)[0]
        for rule in t.props(payloads).get("LifecycleConfiguration", {}).get("Rules", []):
            if rule.get("Status") == "Enabled" and "ExpirationInDays" in rule:
                expiry = rule["ExpirationInDays"]
                self.assertTrue(expiry == {"Ref": ARCHIVE_RETENTION_PARAMETER}
                                or t.bounds(expiry, "payload expiry")[0] >= lowest_retention,
                                f"{payloads} rule {rule.get('Id')} expires payloads archive records point to: "
                                f"{expiry!r}")

        tables = t.of_type("AWS::Glue::Table")
        self.assertEqual(len(tables), 1, f"one archive table, found {tables}")
        table = t.props(tables[0])["TableInput"]
        params = table.get("Parameters", {})
        self.assertEqual(params.get("projection.enabled"), "true", "partition projection, not a crawler")
        self.assertEqual((params.get("projection.dt.type"), params.get("projection.dt.format")), ("date", "yyyy-MM-dd"))
        self.assertEqual((params.get("projection.hour.type"), params.get("projection.hour.range"),
                          params.get("projection.hour.digits")), ("integer", "0,23", "2"))
        template = canonical(params.get("storage.location.template"), "storage.location.template")
        self.assertEqual(template, f"s3://${{{bucket}}}/archive/dt=${{!dt}}/hour=${{!hour}}/",
                         "the projected locations are the stream's partitions")
        self.assertEqual([k["Name"] for k in table.get("PartitionKeys", [])], ["dt", "hour"])
        descriptor = table.get("StorageDescriptor", {})
        self.assertEqual([c["Name"] for c in descriptor.get("Columns", [])], ARCHIVE_FIELDS,
                         "the columns are ArchiveRecord's fields, in order")
        self.assertEqual(descriptor.get("SerdeInfo", {}).get("SerializationLibrary"),
                         "org.openx.data.jsonserde.JsonSerDe")
        self.assertFalse(t.of_type("AWS::Glue::Crawler"), "no crawler: projection knows the partitions")
        alarmed = {t.props(a).get("MetricName") for a in t.of_type("AWS::CloudWatch::Alarm")}
        self.assertTrue({"ArchiveFailures", "DeliveryToS3.DataFreshness"} <= alarmed,
                        f"an archive failure must raise an alarm; alarms watch {sorted(map(str, alarmed))}")


    def test_o_every_function_logs_by_the_log_level_and_no_platform_records(self):
        """(o) Log volume, billed per byte (BENCHMARKS.md section 6): every function logs in JSON
        with SystemLogLevel WARN, which drops Lambda's platform.start and platform.report records
        (about 340 bytes an invocation, more than the function's own line), and takes RUST_LOG from
        the LogLevel parameter: info (the default: a line per batch), warn, or debug (a line per
        webhook per function), which is this crate's lines only, not the AWS SDK's."""
        p = RAW.get("Parameters", {}).get("LogLevel")
        self.assertIsNotNone(p, "no LogLevel parameter")
        self.assertEqual(p.get("Default"), "info", "LogLevel Default")
        self.assertEqual(sorted(p.get("AllowedValues", [])), ["debug", "info", "warn"], "LogLevel AllowedValues")
        self.assertEqual(RAW.get("Conditions", {}).get("LogsEachWebhook"),
                         {"Fn::Equals": [{"Ref": "LogLevel"}, "debug"]}, "LogsEachWebhook")
        t = Template(RAW)
        defaults = t.globals.get("Function", {})
        for function in t.functions():
            with self.subTest(function):
                config = {**defaults.get("LoggingConfig", {}), **t.props(function).get("LoggingConfig", {})}
                self.assertEqual(config.get("LogFormat"), "JSON", f"{function} LogFormat")
                self.assertEqual(config.get("SystemLogLevel"), "WARN", f"{function} SystemLogLevel")
                self.assertNotIn("ApplicationLogLevel", config, f"{function}: Lambda would filter the lines "
                                 "itself; RUST_LOG does, and EMF lines must pass")
                env = {**defaults.get("Environment", {}).get("Variables", {}), **t.env(function)}
                self.assertEqual(env.get("RUST_LOG"), {"Ref": "LogLevel"}, f"{function} RUST_LOG at the defaults")
        rust_log = RAW.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}).get("RUST_LOG")
        self.assertEqual(rust_log,
                         {"Fn::If": ["LogsEachWebhook", "info,nectar_webhooks=debug", {"Ref": "LogLevel"}]},
                         "RUST_LOG at LogLevel debug")

if __name__ == "__main__":
    sys.exit(run(TemplateInvariants))
