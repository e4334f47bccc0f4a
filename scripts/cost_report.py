#!/usr/bin/env python3
"""Section 6 of BENCHMARKS.md: the whole pipeline's cost, from counted calls and bytes.

Multiplies what benches/cost counted (target/bench/cost.json: AWS requests by
caller, service and operation; log bytes; invocations, wall-clock and CPU
time) by the list prices in benches/cost/prices.json, the only place prices
are kept. The "before" figures are the same harness's counts on the code
before the cuts, kept in benches/cost/before.json.

bench-report.py calls section(); run alone, this prints the section:
    python3 scripts/cost_report.py [cost.json]
"""

import json
import math
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRICES_PATH = os.path.join(ROOT, "benches", "cost", "prices.json")
BEFORE_PATH = os.path.join(ROOT, "benches", "cost", "before.json")
TEMPLATE_PATH = os.path.join(ROOT, "template.yaml")

MEMORY_GB = 128 / 1024
# Lambda gives a function CPU in proportion to its memory: one full vCPU at 1,769 MB.
CPU_SHARE = 128 / 1769
# Lambda's own lines per invocation, as CloudWatch Logs ingests them, when the
# function's system log level lets them through (the default, INFO). With
# LogFormat JSON (the template's), each invocation gets a platform.start and
# a platform.report record; their sizes with a 36-character request id:
#   {"time":"2026-12-05T12:00:00.000Z","type":"platform.start","record":{"requestId":"…","version":"$LATEST"}}
#   {"time":"…","type":"platform.report","record":{"requestId":"…","metrics":{"durationMs":7.51,
#    "billedDurationMs":8,"memorySizeMB":128,"maxMemoryUsedMB":21},"status":"success"}}
PLATFORM_BYTES_PER_INVOCATION = 128 + 211
# What a month of an idle stack is assumed to do (see the monthly table's notes).
POLLERS = 5
LONG_POLL_S = 20
MONTH_S = 30 * 24 * 3600
TEAM_WEBHOOKS = 100_000
# The archive: Firehose buffers (template.yaml's BufferingHints) before each
# S3 PUT, and S3 keeps what it wrote ArchiveRetentionDays (default 400).
ARCHIVE_BUFFER_S = 300
ARCHIVE_RETENTION_MONTHS = 400 / 30


def load(path):
    with open(path) as f:
        return json.load(f)


PRICES = {k: v for k, v in load(PRICES_PATH).items() if isinstance(v, dict)}


def price(name):
    return PRICES[name]["usd"]


def billed_ms(usage):
    """Mean billed milliseconds of an invocation at 128 MB: the wall-clock time
    measured here (moto on loopback answers slower than AWS in-region) plus
    the CPU time stretched to Lambda's share of a vCPU, rounded up."""
    wall_ms = usage["wall_us_mean"] / 1000
    cpu_ms = usage["cpu_us_mean"] / 1000
    return math.ceil(wall_ms + cpu_ms * (1 / CPU_SHARE - 1))


def platform_lines_dropped(path=TEMPLATE_PATH):
    """Whether the template's functions drop Lambda's platform records."""
    return "SystemLogLevel: WARN" in open(path).read()


def per_webhook_items(run, entry, platform):
    """Dollars per webhook, by item, for one run through `entry` ("url" or
    "http"); `platform`: whether Lambda's platform records are logged."""
    n = run["webhooks"]
    fifo = run["routes"] == "fifo"
    items = {}

    def add(item, usd):
        items[item] = items.get(item, 0.0) + usd

    add("entry", price("http_api_request") if entry == "http" else 0.0)
    invocations = run["ingest"]["invocations"] + run["router"]["invocations"]
    add("Lambda requests", invocations / n * price("lambda_request"))
    for function in ("ingest", "router"):
        usage = run[function]
        seconds = billed_ms(usage) / 1000 * usage["invocations"] / n
        add("Lambda duration", seconds * MEMORY_GB * price("lambda_arm64_gb_s"))
    for call in run["requests"]:
        service, op, caller = call["service"], call["operation"], call["caller"]
        if service == "SQS":
            fifo_queue = fifo and caller == "router" and op.startswith("SendMessage")
            item = {"ingest": "SQS: ingest queue", "event source": "SQS: event source"}.get(caller, "SQS: destinations")
            add(item, call["billed_64kb_units"] / n * price("sqs_fifo_request" if fifo_queue else "sqs_standard_request"))
        elif service == "DynamoDB":
            if op in ("GetItem", "BatchGetItem", "Query"):
                add("DynamoDB", call["entries"] / n * price("dynamodb_read_unit"))
            else:
                add("DynamoDB", call["entries"] / n * price("dynamodb_write_unit"))
        elif service == "EventBridge":
            add("EventBridge", call["entries"] / n * price("eventbridge_event"))
        elif service == "Firehose":
            # Each record is billed in 5 KB increments; these are all under 5 KB.
            add("archive", call["entries"] / n * 5 / 1024 / 1024 * price("firehose_gb"))
        elif service == "S3":
            add("S3", call["requests"] / n * price("s3_put" if op == "PutObject" else "s3_get"))
        else:
            add(service, 0.0)
    stored_gb = run.get("archived_bytes", 0) / n / 1e9
    add("archive", stored_gb * ARCHIVE_RETENTION_MONTHS * price("s3_storage_gb_month"))
    log_bytes = (run["ingest"]["log_bytes"] + run["router"]["log_bytes"]) / n
    if platform:
        log_bytes += invocations / n * PLATFORM_BYTES_PER_INVOCATION
    add("logs", log_bytes / 1e9 * price("logs_ingest_gb"))
    return items, log_bytes


def requests_per_webhook(run):
    """`service operation (caller)` → requests per webhook."""
    n = run["webhooks"]
    return {f"{c['service']} {c['operation']} ({c['caller']})": c["requests"] / n for c in run["requests"]}


ITEMS = ["entry", "Lambda requests", "Lambda duration", "SQS: ingest queue", "SQS: event source",
         "SQS: destinations", "EventBridge", "DynamoDB", "logs", "archive"]


def log_bytes_per_webhook(cost, routes="sqs", level="info"):
    run = run_for(cost, routes, level)
    return (run["ingest"]["log_bytes"] + run["router"]["log_bytes"]) / run["webhooks"]


def items_for(cost, routes, item, platform, level="info"):
    """One item's dollars per million webhooks in one run."""
    return per_webhook_items(run_for(cost, routes, level), "url", platform)[0].get(item, 0.0) * 1e6


def money(usd):
    return f"${usd:,.2f}" if usd >= 0.995 or usd == 0 else f"${usd:.3f}"


def batch(run):
    """The most the router was handed at a time: 10, a backlog's batches, or 1, a trickle's."""
    return run.get("batch", 10)


def run_for(cost, routes, level, archive=False, size=10):
    return next(r for r in runs(cost) if r["routes"] == routes and r["log_level"] == level
                and r.get("archive", False) == archive and batch(r) == size)


def runs(cost):
    """The runs, each scenario once: not the goal row's repeats."""
    return [r for r in cost["runs"] if not r.get("repeat")]


def url_total(run, platform):
    """All of a run's items, dollars per million webhooks through a function URL."""
    return sum(per_webhook_items(run, "url", platform)[0].values()) * 1e6


def goal_totals(cost, platform):
    """Every run of the goal's row (one SQS queue, info, batches of 10),
    repeats too: dollars per million through a function URL."""
    return [url_total(r, platform) for r in cost["runs"]
            if r["routes"] == "sqs" and r["log_level"] == "info" and not r.get("archive") and batch(r) == 10]


def name(run):
    return (run["routes_name"] + (" + archive" if run.get("archive") else "")
            + (", one webhook a batch (a trickle)" if batch(run) == 1 else ""))


def cost_table(cost, label, platform):
    rows = [f"| {label}: per million webhooks | log level | " + " | ".join(ITEMS) + " | total, function URL | total, HTTP API |",
            "|---|---|" + "--:|" * (len(ITEMS) + 2)]
    totals = {}
    for run in runs(cost):
        items, _ = per_webhook_items(run, "url", platform)
        url_usd = sum(items.values())
        http_usd = url_usd + price("http_api_request")
        if not run.get("archive") and batch(run) == 10:
            totals[(run["routes"], run["log_level"])] = (url_usd * 1e6, http_usd * 1e6)
        cells = [money(items.get(i, 0.0) * 1e6) for i in ITEMS]
        cells[0] = "$0 / $1.00"
        rows.append(f"| {name(run)} | {run['log_level']} | " + " | ".join(cells)
                    + f" | **{money(url_usd * 1e6)}** | **{money(http_usd * 1e6)}** |")
    return "\n".join(rows), totals


def counts_table(cost):
    shown = [r for r in runs(cost)
             if r["log_level"] == "info" and (not r.get("archive") or r["routes"] == "sqs") and batch(r) == 10]
    keys = sorted({k for r in shown for k in requests_per_webhook(r)})
    rows = ["| requests per webhook | " + " | ".join(name(r) for r in shown) + " |",
            "|---|" + "--:|" * len(shown)]
    for key in keys:
        rows.append(f"| {key} | " + " | ".join(f"{requests_per_webhook(r).get(key, 0):.2f}" for r in shown) + " |")
    for level in ("info", "warn", "debug"):
        cells = []
        for r in shown:
            found = [x for x in runs(cost) if x["routes"] == r["routes"] and x["log_level"] == level
                     and x.get("archive", False) == r.get("archive", False) and batch(x) == 10]
            if not found:
                cells.append("—")
                continue
            r, n = found[0], found[0]["webhooks"]
            cells.append(f"{r['ingest']['log_bytes'] / n:,.0f} + {r['router']['log_bytes'] / n:,.0f}")
        rows.append(f"| log bytes per webhook at {level}, ingest + router (before platform lines) | " + " | ".join(cells) + " |")
    cells = [f"{billed_ms(r['ingest'])} + {billed_ms(r['router'])}" for r in shown]
    rows.append("| billed ms per invocation, ingest + router batch | " + " | ".join(cells) + " |")
    cells = [f"{r.get('archived_bytes', 0) / r['webhooks']:,.0f}" if r.get("archive") else "—" for r in shown]
    rows.append("| archive bytes stored per webhook (as moto's Firehose wrote them) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def alarm_metrics(path=TEMPLATE_PATH):
    """Billed alarm metrics in the template, by alarm: one per alarm on a
    single metric, one per MetricStat in a metric-math alarm; with the
    condition the alarm is created under, if any."""
    text = open(path).read()
    alarms = {}
    for block in re.split(r"\n  (?=\w+:\n)", text):
        if "Type: AWS::CloudWatch::Alarm" in block:
            name = block.split(":", 1)[0].strip()
            condition = re.search(r"^    Condition: (\w+)", block, re.M)
            alarms[name] = (max(1, block.count("MetricStat:")), condition.group(1) if condition else None)
    return alarms


def trickle_total(cost, platform):
    """Dollars per million through a function URL, one webhook a batch."""
    return url_total(run_for(cost, "sqs", "info", size=1), platform)


def monthly(cost, platform, level="info"):
    """(idle items, 100,000-webhook items, metrics) in dollars per month;
    the archive's items apart, when the run counted it. The webhooks are
    priced as a trickle, one a batch, where the runs have one: 100,000 a
    month is one every 26 s."""
    trickle = [r for r in cost["runs"] if r["routes"] == "sqs" and r["log_level"] == level and batch(r) == 1]
    run = trickle[0] if trickle else run_for(cost, "sqs", level)
    items, log_bytes = per_webhook_items(run, "url", platform)
    alarms = alarm_metrics()
    always = {a: m for a, (m, condition) in alarms.items() if condition is None}
    archive_alarms = sum(m for m, condition in alarms.values() if condition == "ArchiveOn")
    idle = {
        "secret": price("secret_month"),
        f"alarms ({sum(always.values())} alarm metrics in {len(always)} alarms)": sum(always.values()) * price("alarm_metric_month"),
        f"event source's empty receives ({POLLERS} long polls of {LONG_POLL_S} s)": POLLERS * MONTH_S / LONG_POLL_S * price("sqs_standard_request"),
        "custom metrics": 0.0,
    }
    busy = dict(idle)
    metrics = run["metrics"]
    busy["custom metrics"] = len(metrics) * price("custom_metric_month")
    busy[f"{TEAM_WEBHOOKS:,} webhooks through a function URL" + (", one a batch" if trickle else "")] = \
        sum(items.values()) * TEAM_WEBHOOKS
    gb = log_bytes * TEAM_WEBHOOKS / 1e9
    busy["log storage (30 days, uncompressed upper bound)"] = gb * price("logs_storage_gb_month")
    archived = [r for r in cost["runs"] if r["routes"] == "sqs" and r["log_level"] == level and r.get("archive")]
    # The archive's own per-webhook items do not depend on the batch.
    if archived:
        label = f"archive, apart: its {archive_alarms} alarms, Firehose, S3 PUTs and {ARCHIVE_RETENTION_MONTHS:.0f} months of storage"
        idle[label] = archive_alarms * price("alarm_metric_month")
        with_archive, _ = per_webhook_items(archived[0], "url", platform)
        puts = MONTH_S / ARCHIVE_BUFFER_S * price("s3_put")
        busy[label] = idle[label] + with_archive.get("archive", 0.0) * TEAM_WEBHOOKS + puts
    return idle, busy, metrics


def monthly_table(cost, label, platform):
    idle, busy, metrics = monthly(cost, platform)
    apart = [item for item in busy if item.startswith("archive")]
    base = lambda items: sum(v for k, v in items.items() if k not in apart)
    rows = [f"| {label}: per month | idle (nothing received) | {TEAM_WEBHOOKS:,} webhooks |", "|---|--:|--:|"]
    for item in busy:
        if item not in apart:
            rows.append(f"| {item} | {money(idle.get(item, 0.0))} | {money(busy[item])} |")
    rows.append(f"| **total** | **{money(base(idle))}** | **{money(base(busy))}** |")
    for item in apart:
        rows.append(f"| {item} | {money(idle[item])} | {money(busy[item])} |")
        rows.append(f"| total with the archive | {money(sum(idle.values()))} | {money(sum(busy.values()))} |")
    return "\n".join(rows), base(busy), metrics


def section(cost, before=None):
    """The section's markdown and its headline."""
    out = ["## 6. Cost per million webhooks, the whole pipeline", ""]
    out.append(
        f"Counted, not estimated: `benches/cost` runs {cost['runs'][0]['webhooks']} signed webhooks of "
        f"{cost['runs'][0]['body_bytes']:,} bytes (the six v2 event types in turn, about {40} resources) through the "
        "release `ingest` bootstrap (secret from Secrets Manager), then the release `router` bootstrap as Lambda's SQS "
        "event source drives it (ReceiveMessage of up to 10, invoke, DeleteMessageBatch), with the DynamoDB "
        "idempotency table, each bootstrap behind a Lambda Runtime API emulator and every AWS call going to moto's "
        "server through a proxy that counts it by caller, service and operation (and its 64 KB units). It counts every "
        "byte each function writes to standard output, their invocations, wall-clock and CPU time, and the distinct "
        "CloudWatch metrics the EMF lines publish. Prices: `benches/cost/prices.json` (us-east-1 list prices, "
        f"first tier, free tiers ignored, checked {load(PRICES_PATH)['checked']}, each with its AWS pricing page); "
        "the arithmetic: `scripts/cost_report.py`.")
    out.append("")
    out.append(
        "Model: billed duration is the wall-clock time here plus the CPU time stretched to 128 MB's share of a vCPU "
        "(128/1,769), rounded up to the millisecond (moto on loopback answers slower than AWS in-region, so this "
        f"errs high). Logs are what the functions write plus, when the system log level lets them through, Lambda's "
        f"platform.start and platform.report records ({PLATFORM_BYTES_PER_INVOCATION} bytes per invocation in the JSON "
        "log format); the template now sets `SystemLogLevel: WARN`, which drops them. An entry through the HTTP API "
        "adds $1.00 per million; a function URL nothing.")
    out.append("")
    headline = ""
    if before:
        table, before_totals = cost_table(before, "before", True)
        out += ["### Before the cuts", "", table, "", counts_table(before), ""]
        idle_table, before_month, before_metrics = monthly_table(before, "before", True)
    platform = not platform_lines_dropped()
    table, totals = cost_table(cost, "after", platform)
    out += ["### After the cuts", "", table, "", counts_table(cost), ""]
    goal_runs = goal_totals(cost, platform)
    url = max(goal_runs)
    http = url + price("http_api_request") * 1e6
    spread = (f", the worst of {len(goal_runs)} runs of this row ({', '.join(f'${t:.3f}' for t in goal_runs)})"
              if len(goal_runs) > 1 else "")
    goal_url, goal_http = 1.50, 2.50
    verdict = lambda value, goal: ("met" if value <= goal else f"**missed** by {money(value - goal)}")
    out.append(
        f"Goal, one SQS destination with once-per-destination kept, default log level: through a function URL at most "
        f"$1.50: ${url:.3f}{spread} ({verdict(url, goal_url)}); through the HTTP API at most $2.50: ${http:.3f} "
        f"({verdict(http, goal_http)}). At `LogLevel` `warn`: {money(totals[('sqs', 'warn')][0])} "
        f"({verdict(totals[('sqs', 'warn')][0], goal_url)}) and {money(totals[('sqs', 'warn')][1])} "
        f"({verdict(totals[('sqs', 'warn')][1], goal_http)}).")
    out.append("")
    items, _ = per_webhook_items(run_for(cost, "sqs", "info"), "url", platform)
    dynamo = items.get("DynamoDB", 0) * 1e6
    logs = items.get("logs", 0) * 1e6
    trickle_url = trickle_total(cost, platform)
    debug_url = totals[("sqs", "debug")][0]
    out.append(
        f"Where it stands: the cuts (batched sends; the idempotency table's completions written once per wave, not "
        f"per key; at `info` one log line per router batch naming every webhook id it routed, where there was a line "
        f"per webhook per function; no platform records; no custom metric for what AWS counts) took "
        f"{money(before_totals[('sqs', 'info')][0] - url) if before else '?'} off. What is left is mostly fixed: the "
        f"ingest SendMessage ($0.40), the Lambda requests ($0.22) and the idempotency table ({money(dynamo)}): one "
        f"conditional write per key before delivering (the claim), and one item per wave listing what it delivered. "
        f"Both stay, for once per destination without losing anything: without the claim two copies in flight at "
        f"once are both delivered, and without the completion a copy arriving after the claim's lease (a Svix "
        f"resend, a DLQ redrive) cannot tell a delivery that happened from one that crashed, so it must either "
        f"deliver again or risk losing the webhook. The logs are {money(logs)} at `info`, the default: "
        f"{log_bytes_per_webhook(cost):,.0f} bytes a webhook, its id in the batch's line (ingest logs a queued "
        f"webhook only at `debug`; refusals and failures at every level). At `LogLevel` `debug`, a line per webhook "
        f"per function ({log_bytes_per_webhook(cost, level='debug'):,.0f} bytes), the total is {money(debug_url)}; "
        f"at `warn`, nothing for a webhook that went well, {money(totals[('sqs', 'warn')][0])}. The fan-out still "
        f"pays one claim per destination ({money(items_for(cost, 'fanout3', 'DynamoDB', platform))} for three): one "
        "item per webhook covering all its destinations would make that one; not built.")
    out.append("")
    out.append(
        f"These figures are for full batches of 10, a backlog or a steady stream. At a trickle each webhook is its "
        f"own batch, and the router's request, receive, delete, completion item and send are each paid per webhook: "
        f"{money(trickle_url)} per million through a function URL (row \"one webhook a batch\"; its receive is also "
        f"counted among the event source's idle polls below, an upper bound). The team's month below is priced so.")
    out.append("")
    out.append("### A team's month")
    out.append("")
    if before:
        out += [idle_table, "", f"Custom metrics before ({len(before_metrics)}): " + ", ".join(f"`{m}`" for m in before_metrics), ""]
    month_table, month, metrics = monthly_table(cost, "after", platform)
    out += [month_table, ""]
    out.append(f"Custom metrics after ({len(metrics)}): " + (", ".join(f"`{m}`" for m in metrics) or "none on the happy path") + ".")
    out.append("")
    out.append(
        f"Goal, the {TEAM_WEBHOOKS:,}-webhook month with alarms on at most $2.00: {money(month)} ({verdict(month, 2.00)}).")
    out.append("")
    out.append(
        "What earns its price: every alarm watches a metric AWS publishes for free (the DLQs' visible messages, "
        "the 5xx rate of the HTTP API and function URL, the router's `Errors`, the ingest queue's oldest message), "
        "and each guards a promise (nothing lost, answers in time, nothing stuck); the 5xx rate alarm is half "
        "their price, four metrics in one expression, because it reads both entry points. Custom metrics are "
        "kept for what AWS cannot see: a refused signature (`Rejected`), a failed enqueue, a failed delivery, a "
        "dead letter, a duplicate skipped; each is billed only in a month it happened. Counts of what went right "
        "are AWS's own (`Invocations`, `NumberOfMessagesSent`), and the detail by event type is an Athena query "
        "over the archive, or Logs Insights over the `routed` lines at `LogLevel` `debug` (docs/operations.md). Assumed, not counted: Lambda's SQS event "
        f"source keeps {POLLERS} long polls of {LONG_POLL_S} s going on an idle queue; the secret is read once per "
        "cold start ($0.05 per 10,000 reads, a few cents at most); log storage is priced uncompressed, an upper "
        "bound; the idempotency table's and the queues' storage round to nothing. The archive is apart: Firehose bills "
        "each record as 5 KB, S3 a PUT per buffer (at most one per 300 s) and storage for ArchiveRetentionDays "
        "(400), here of the bytes moto's Firehose wrote, uncompressed, where the stream gzips them: an upper bound.")
    out.append("")
    b_url = before_totals[("sqs", "info")][0] if before else None
    before_figures = f" (before: {money(b_url)} and {money(before_totals[('sqs', 'info')][1])})" if before else ""
    headline = (
        f"Cost, the whole pipeline to one SQS queue, counted: ${url:.3f} per million webhooks through a function "
        f"URL, ${http:.3f} through the HTTP API{before_figures} at the default log level, in batches of 10 "
        f"({money(trickle_total(cost, platform))} at a trickle, one a batch; goals $1.50 and $2.50: "
        f"{verdict(url, goal_url)}, {verdict(http, goal_http)}; at `warn` {money(totals[('sqs', 'warn')][0])} and "
        f"{money(totals[('sqs', 'warn')][1])}: {verdict(totals[('sqs', 'warn')][0], goal_url)}, "
        f"{verdict(totals[('sqs', 'warn')][1], goal_http)}); a team's {TEAM_WEBHOOKS:,}-webhook month {money(month)} with alarms "
        f"(goal $2.00: {verdict(month, 2.00)}; section 6).")
    return "\n".join(out), headline


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("BENCH_DIR", os.path.join(ROOT, "target", "bench")), "cost.json")
    before = load(BEFORE_PATH) if os.path.exists(BEFORE_PATH) else None
    text, headline = section(load(path), before)
    print(text)
    print()
    print("headline:", headline)


if __name__ == "__main__":
    main()
