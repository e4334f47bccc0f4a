#!/usr/bin/env python3
"""One scan over what the whole test suite captured: nothing leaks.

`make test` runs `cargo test` with TEST_CAPTURE_DIR set; tests/support then
keeps every log line the code under test wrote (JSON, one file per test
binary) and every response body the tests received. This reads them all and
fails if

- any log line or response body holds a signing secret the tests use, or a
  value from a payload the tests sent (the string values of the sample
  payloads in events/payloads/, and the markers the tests plant in bodies);
- any response body holds an AWS account id, an ARN or the SDK's error text:
  Svix stores response bodies in the sender's attempt log, readable by the
  sender's staff (our own logs may name the account and the SDK's error).

Usage: leak_scan.py DIR. Ends with the line `N passed, M failed`.
"""

import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every signing or shared secret in the tests, by the part an attacker needs.
SECRETS = [
    "bmVjdGFyLXdlYmhvb2tzLXNhbXBsZS1zZWNyZXQ",
    "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "aG9zdGlsZS1pbnB1dC10ZXN0LXNlY3JldC0xMjM0NQ",
    "loyalty-secret",
]
# Markers the tests put into bodies so that a leak is recognisable.
MARKERS = ["FAULT-SUITE-BODY-MARKER", "BODY-MARKER-5b1e7c"]
# In response bodies only: what AWS's errors carry.
AWS_DETAIL = [
    re.compile(r"\b\d{12}\b"),
    re.compile(r"arn:aws"),
    re.compile(r"service error|dispatch failure|DisplayErrorContext|raw: Response|NonExistentQueue|AccessDenied"),
    re.compile(r"SimpleQueueService|AmazonS3|NoSuchBucket|NoSuchKey"),
]
# Payload values that are metadata by design: what routes match on and logs
# name (the event type), and values too common to mean anything.
ALLOWED_VALUES = {"unknown"}


def payload_values():
    """Distinctive string values of the sample payloads (8+ characters)."""
    values = set()

    def walk(node, key=None):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key != "eventType" and len(node) >= 8 and node not in ALLOWED_VALUES:
            values.add(node)

    for path in glob.glob(os.path.join(ROOT, "events", "payloads", "*.json")):
        with open(path) as f:
            try:
                walk(json.load(f))
            except json.JSONDecodeError:
                continue
    return sorted(values)


def main(directory):
    logs = sorted(glob.glob(os.path.join(directory, "logs-*.jsonl")))
    responses = sorted(glob.glob(os.path.join(directory, "responses-*.jsonl")))
    values = payload_values()
    forbidden = [("secret", s) for s in SECRETS] + [("body marker", m) for m in MARKERS] + [
        ("payload value", v) for v in values
    ]
    leaks, lines = [], 0
    for path in logs + responses:
        is_response = os.path.basename(path).startswith("responses-")
        with open(path, errors="replace") as f:
            for number, line in enumerate(f, 1):
                lines += 1
                text = json.loads(line)["body"] if is_response else line
                where = f"{os.path.basename(path)}:{number}"
                for kind, needle in forbidden:
                    if needle in text:
                        leaks.append(f"{where}: a {kind} ({needle[:12]}…): {text[:200]}")
                for pattern in AWS_DETAIL if is_response else []:
                    found = pattern.search(text)
                    if found:
                        leaks.append(f"{where}: AWS detail {found.group(0)!r} in a response body: {text[:200]}")
    for leak in leaks[:50]:
        print(leak)
    print(
        f"scanned {lines} lines ({len(logs)} log files, {len(responses)} response files) for "
        f"{len(SECRETS)} secrets, {len(MARKERS)} markers and {len(values)} payload values: {len(leaks)} leaks"
    )
    checks = [bool(logs) and bool(responses), not leaks]
    if not checks[0]:
        print(f"nothing captured in {directory}: is TEST_CAPTURE_DIR set for cargo test?")
    print(f"{sum(checks)} passed, {len(checks) - sum(checks)} failed")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: leak_scan.py DIR")
    sys.exit(main(sys.argv[1]))
