#!/usr/bin/env python3
"""Writes BENCHMARKS.md from the figures `make bench` just measured.

Reads the JSON the benches in benches/ write to target/bench/; every ratio it
prints compares figures from that one run, round by round where the bench
measured in interleaved rounds. Usage: bench-report.py > BENCHMARKS.md
"""

import datetime
import json
import math
import os
import platform
import subprocess
import sys

import cost_report

BENCH = os.environ.get("BENCH_DIR", os.path.join("target", "bench"))

SIZES = ["1KiB", "16KiB", "256KiB", "1MiB"]
# One line per goal, written by the sections, printed first.
HEADLINES = []

# List prices, us-east-1, first pricing tier, free tiers ignored; checked
# against AWS's public pricing pages as last known (see BENCHMARKS.md).
PRICE = {
    "lambda_arm64_gb_s": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "http_api_request": 1.00 / 1e6,
    "sqs_request": 0.40 / 1e6,
    "logs_gb": 0.50,
}
MEMORY_GB = 128 / 1024
# Lambda gives a function CPU in proportion to its memory: one full vCPU at 1,769 MB.
CPU_SHARE = 128 / 1769


def load(name):
    with open(os.path.join(BENCH, f"{name}.json")) as f:
        return json.load(f)


def ratio(a, b):
    """a's time over b's, each the fastest of its interleaved rounds."""
    return a["fastest_ns"] / b["fastest_ns"]


def us(ns):
    return ns / 1000


def fmt_us(ns):
    value = us(ns)
    return f"{value:,.2f} µs" if value < 100 else f"{value:,.0f} µs"


def run(command):
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    cpu, flags = "unknown", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "sha_ni": "sha_ni" in flags,
        "rustc": run(["rustc", "--version"]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def verdict(met, missed_by=""):
    return "met" if met else f"**missed**{' by ' + missed_by if missed_by else ''}"


def section_verify(m):
    data = load("verify")
    impls = ["ours", "ours_from_headers", "svix", "standardwebhooks", "bare_hmac_aws_lc", "bare_hmac_sha256_crate"]
    out = [
        "## 1. Verification",
        "",
        "`cargo bench --bench verify`: one valid signature checked on a `document.created.v2` payload padded "
        "to each size (one secret, one `v1` entry, as Svix sends), the six contenders measured in 200 "
        "interleaved rounds (`benches/support/interleaved.rs`); each figure is the fastest round, the one "
        "least disturbed by other work on the machine. Time per check; lower is better.",
        "",
        "| payload | ours | ours, from a `HeaderMap` | `svix` 2.9 `Webhook::verify` | `standardwebhooks` 1.0 | "
        "bare HMAC-SHA256 (AWS-LC), the floor | bare HMAC-SHA256 (`hmac-sha256`) |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for s in SIZES:
        out.append(f"| {s} | " + " | ".join(fmt_us(data[s][i]["fastest_ns"]) for i in impls) + " |")
    out += [
        "",
        "Ratios of those figures. The floor is the bare MAC with the same SHA-256 code as ours (AWS-LC); the "
        "last column compares with the portable bare MAC the official crates use.",
        "",
        "| payload | svix ÷ ours | standardwebhooks ÷ ours | ours ÷ floor | goal | ours, from a `HeaderMap` ÷ floor "
        "| ours ÷ `hmac-sha256` MAC |",
        "|---|--:|--:|--:|---|--:|--:|",
    ]
    results = []
    for s in SIZES:
        d = data[s]
        over = ratio(d["ours"], d["bare_hmac_aws_lc"])
        limit = 1.25 if s == "1KiB" else 1.05
        vs_svix, vs_standard = ratio(d["svix"], d["ours"]), ratio(d["standardwebhooks"], d["ours"])
        faster = vs_svix > 1 and vs_standard > 1
        why = []
        if not faster:
            slowest = min(vs_svix, vs_standard)
            why.append(f"ours {(1 / slowest - 1) * 100:.1f}% slower than an official crate")
        if over > limit:
            why.append(f"{(over - limit) * 100:.1f} points over ×{limit:.2f} the floor")
        met = faster and over <= limit
        results.append(met)
        goal = f"faster than both, ≤ ×{limit:.2f} floor: " + ("met" if met else f"**missed**: {'; '.join(why)}")
        out.append(
            f"| {s} | {vs_svix:.3f}× | {vs_standard:.3f}× | {over:.3f}× | {goal} "
            f"| {ratio(d['ours_from_headers'], d['bare_hmac_aws_lc']):.3f}× "
            f"| {ratio(d['ours'], d['bare_hmac_sha256_crate']):.3f}× |"
        )
    d1, d16 = data["1KiB"], data["16KiB"]
    HEADLINES.append(
        f"Verification ({'all goals met' if all(results) else 'goal partly missed'}): ×"
        f"{ratio(d1['ours'], d1['bare_hmac_aws_lc']):.3f} a bare HMAC-SHA256 at 1 KiB, ×"
        f"{max(ratio(data[s]['ours'], data[s]['bare_hmac_aws_lc']) for s in SIZES[1:]):.3f} at worst from 16 KiB; "
        f"svix ÷ ours from {min(ratio(data[s]['svix'], data[s]['ours']) for s in SIZES):.2f} to "
        f"{max(ratio(data[s]['svix'], data[s]['ours']) for s in SIZES):.2f} (section 1)."
    )
    sha = "has" if m["sha_ni"] else "does **not** have"
    out += [
        "",
        f"This CPU {sha} the SHA extensions (`sha_ni` in `/proc/cpuinfo`). Ours and the floor use AWS-LC's "
        "HMAC-SHA256 (`aws-lc-rs`, already linked for TLS), whose SHA-256 is assembly with a path per CPU: the "
        "SHA extensions on x86-64 when present, AVX2 or SSSE3 otherwise, the ARMv8 SHA2 instructions on "
        "aarch64 (every Graviton that Lambda runs arm64 functions on has them). Both official crates hash with "
        "`hmac-sha256`, portable Rust; that crate's bare MAC is the last column of the first table. From 16 KiB "
        "the hash is the whole cost, so the gap there is the hash's; below, the official crates also pay per "
        "call (they copy the payload into a `String` with the id and timestamp, and allocate the signature "
        "they compare), while ours copies nothing and allocates nothing.",
        "",
    ]
    return out, all(results)


def section_ingest():
    d = load("ingest")
    verify = d["verify_only"]["fastest_ns"]
    core = d["core_handle"]["fastest_ns"]
    respond = d["core_respond"]["fastest_ns"]
    full = d["lambda_event_to_response"]["fastest_ns"]
    above = us(full - verify)
    theirs, ours = d["event_read_by_lambda_http"], d["event_read_as_http_event"]
    read = ours["fastest_ns"]
    body = d["body_read_by_serde_json"]["fastest_ns"]
    skip = d["event_skipped_by_serde_json"]["fastest_ns"]
    others = d["event_without_body_read_as_v2"]["fastest_ns"]
    adapter = full - read - respond
    out = [
        "## 2. Ingest handler, in process",
        "",
        "`cargo bench --bench ingest`: a signed API Gateway HTTP API (payload 2.0) event carrying a 10 KiB "
        "`document.created.v2` payload, from the event's bytes, read as `lambda_runtime` reads them, through "
        "`lambda_ingest::service` to the response's bytes, with a queue that accepts in memory and the JSON log "
        "line formatted as in production; beside it, the steps in between and serde_json's own floor on the same "
        "event; fastest of 400 interleaved rounds.",
        "",
        "| step | time | above verification alone |",
        "|---|--:|--:|",
        f"| verification alone (`SvixVerifier::verify`, 10 KiB) | {fmt_us(verify)} | — |",
        f"| `Ingest::handle` (headers → verified → queue message → queued) | {fmt_us(core)} | "
        f"{us(core - verify):.2f} µs |",
        f"| `Ingest::respond` (the same, plus the JSON log line and the answer's body) | {fmt_us(respond)} | "
        f"{us(respond - verify):.2f} µs |",
        f"| Lambda event bytes → response bytes | {fmt_us(full)} | **{above:.2f} µs** |",
        f"| of which reading the event (`HttpEvent`: the body unescaped once) | {fmt_us(read)} | |",
        f"| of which lambda_http's adapter (event → `http::Request`, answer → response JSON) | {fmt_us(adapter)} | |",
        f"| reading it as lambda_http's `LambdaRequest` would | {fmt_us(theirs['fastest_ns'])} "
        f"| ×{ratio(theirs, ours):.2f} `HttpEvent` |",
        f"| serde_json reading the body alone, the JSON string it is in the event, into a `String` | {fmt_us(body)} | |",
        f"| serde_json skipping over the whole event, keeping nothing | {fmt_us(skip)} | |",
        f"| the event without its body, read as aws_lambda_events' `ApiGatewayV2httpRequest` | {fmt_us(others)} | |",
        "",
        f"Goal: at most 10 µs above verification alone: {verdict(above <= 10, f'{above - 10:.1f} µs')}. "
        f"Ingest's own work beyond the MAC is {us(core - verify):.1f} µs (headers read, the queue message built: "
        f"its body checked for characters SQS refuses, and copied); the log line and the answer's JSON "
        f"{us(respond - core):.1f} µs; lambda_http's adapter {us(adapter):.1f} µs (it parses and rebuilds the "
        "request's URL, copies the body into its own `http::Request`, and turns the answer into its response "
        "type and that into JSON). The rest, and most of the gap, is reading the event, and most of that is "
        "serde_json unescaping the body: API Gateway sends the webhook as a JSON string inside the event, every "
        f"quote of a JSON payload escaped, and serde_json turning that string alone into a `String` takes "
        f"{us(body):.1f} µs. `HttpEvent` does that once, in the same pass that keeps the other fields as raw "
        "JSON, which aws_lambda_events then reads as lambda_http would; those fields are under a kilobyte, but "
        f"reading them into lambda_http's types (a header map, a request context of a dozen strings) takes "
        f"{us(others):.1f} µs of the {us(read - body):.1f} µs `HttpEvent` takes beyond the body. lambda_http's own "
        "reading scans the body three times and unescapes it twice.",
        "",
        "The goal cannot be met while the function takes its events through `lambda_runtime`'s typed handler, "
        "as lambda_http does: the runtime parses every event with serde_json before any of our code runs, and "
        f"serde_json merely skipping over this event, keeping nothing, takes {us(skip):.1f} µs, "
        f"{us(skip) / 10:.1f}× the whole budget. Getting under it would take a layer around the runtime's own "
        "services that hides each event's bytes from its parser and hands them to the handler another way, and a "
        "hand-written reader for the whole event; the body would still have to be unescaped (a JSON payload has "
        f"an escaped quote every ten bytes or so), and the other fields alone take {us(others):.1f} µs to read into "
        "lambda_http's types. That would replace the runtime's and lambda_http's tested event handling to save "
        "a few tens of microseconds: at 128 MB (7.2% of a vCPU) 40 µs of CPU is about 0.6 ms billed, some "
        "$0.001 per million webhooks (section 6). Not done.",
        "",
    ]
    HEADLINES.append(
        f"Ingest handler: {above:.1f} µs above verifying the 10 KiB body alone, event bytes to response bytes "
        f"({verdict(above <= 10, f'{above - 10:.1f} µs')}; section 2)."
    )
    return out


def section_router():
    batch = load("router")["sqs_batch_of_10_to_response"]["fastest_ns"]
    HEADLINES.append(f"Router: {fmt_us(batch / 10)} per record in a batch of 10 (section 3).")
    return [
        "## 3. Router, in process",
        "",
        "`cargo bench --bench router`: one SQS event of 10 records (10 KiB `document.created.v2` payloads as "
        "ingest queues them) from the event's bytes through `SqsBatchHandler::handle` (decode, event type, route "
        "match, de-duplication claim, delivery, completion) to the partial-batch response's bytes, with a fresh "
        "de-duplication store each time so every record is delivered, deliveries accepted at once in memory.",
        "",
        "| batch of 10 | per record |",
        "|--:|--:|",
        f"| {fmt_us(batch)} | {fmt_us(batch / 10)} |",
        "",
    ]


def section_time_budget():
    """Section 7: ingest's worst-case time per path against its timeout."""
    t = load("time_budget")
    budget = t["timeout_secs"] - t["margin_secs"]
    worst = max(row["seconds"] for row in t["scenarios"])
    ok = worst < budget and all(row["status"] in (202, 503) for row in t["scenarios"])
    HEADLINES.append(
        f"Ingest time budget: slowest path answered in {worst:.1f} s, inside its {budget:g} s deadline and "
        f"the {t['timeout_secs']} s Lambda timeout ({verdict(ok)}; section 7)."
    )
    rows = [
        f"| {row['scenario']} | {row['status']} {row['error'] or ''} | {row['seconds']:.2f} s |"
        for row in t["scenarios"]
    ]
    op = t["operation_timeout_secs"]
    return [
        "## 7. Ingest's time budget, per path",
        "",
        "`cargo bench --bench time_budget`: the ingest Lambda's handler in process, with the deployed SDK "
        f"configuration (each call at most 3 attempts of 2 s, {op:g} s in all), against a loopback S3 and SQS "
        "told to answer, stall or answer late, invoked with a Lambda context whose deadline is the template's "
        f"`Timeout` ({t['timeout_secs']} s). Ingest answers 503 itself {t['margin_secs']:g} s before that "
        "deadline whatever stalls, so Svix (which waits 15 s) gets an answer it retries, never a Lambda timeout.",
        "",
        "| path | answer | time |",
        "|---|---|--:|",
        *rows,
        "",
        f"Worst case by arithmetic: a claim check is an S3 upload then a `SendMessage`, each given up after {op:g} s "
        f"by the SDK, so {2 * op:g} s, inside the {budget:g} s deadline ({verdict(2 * op <= budget)}); "
        "`tests/template_invariants.py` fails `make test` if the template's timeout stops covering it.",
        "",
    ]


def section_local_durable():
    """Section 8: local mode on its durable embedded queue, under load."""
    d = load("local_durable")
    rounds = d["rounds"]
    rate = min(r["accepted_per_sec"] for r in rounds)
    p99 = max(r["p99_ms"] for r in rounds)
    ok = rate >= 1500 and p99 < 25
    missed = [] if rate >= 1500 else [f"{1500 - rate:,.0f}/s"]
    missed += [] if p99 < 25 else [f"p99 {p99 - 25:.1f} ms"]
    HEADLINES.append(
        f"Local mode, durable: {rate:,.0f} webhooks/s accepted at concurrency {d['concurrency']}, p99 {p99:.1f} ms "
        f"to 202, committed to disk first (goal ≥1,500/s and p99 < 25 ms: {verdict(ok, ', '.join(missed))}; "
        "section 8)."
    )
    mib = lambda n: n / 1024 / 1024  # noqa: E731
    rows = [
        f"| {i} | {r['accepted_per_sec']:,.0f}/s | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
        f"{r['peak_rss_kib'] / 1024:.1f} MiB | {mib(r['bytes_after_delivery']):.2f} MiB | "
        f"{mib(r['bytes_after_cleanup']):.2f} MiB |"
        for i, r in enumerate(rounds, 1)
    ]
    cleaned = [r["bytes_after_cleanup"] for r in rounds]
    growth = max(cleaned[1:]) - cleaned[0] if len(cleaned) > 1 else 0
    return [
        "## 8. Local mode's durable queue",
        "",
        f"`cargo bench --bench local_durable`: the release `nectar-webhooks serve --data-dir` taking {d['n']:,} "
        f"signed webhooks at concurrency {d['concurrency']} (a 489-byte sample payload), routed to a `file:` "
        "destination, each answered 202 only once committed to its SQLite file (write-ahead log, "
        "`synchronous=FULL`, concurrent requests sharing commits). Three rounds on the same data directory; "
        "after each, once every webhook is delivered, the server is stopped (SIGTERM) and its dedup entries "
        "are made to expire (35 days cannot pass in a bench) and cleaned up by the store's own clean-up, "
        "which `serve` runs every minute.",
        "",
        "| round | accepted | p50 to 202 | p99 to 202 | peak RSS | data dir, delivered | data dir, cleaned up |",
        "|--:|--:|--:|--:|--:|--:|--:|",
        *rows,
        "",
        f"Before, on the in-memory queue: about {d['in_memory_per_sec']:,.0f}/s (2,000 webhooks at concurrency 32 "
        "in 1.1 s, a debug build, measured when the durable queue was proposed). Delivered webhooks' rows are "
        "deleted at once; what the data directory keeps per 10,000 webhooks until their dedup entries expire is "
        "the table's 'delivered' column. Once they expire the file stops growing: after the cleaned-up "
        f"rounds 2 and 3 it is {mib(growth):+.2f} MiB from round 1's.",
        "",
    ]


def section_process(p, arm64):
    cold = {f["function"]: f for f in p["cold_start"]["functions"]}
    hello = cold["hello_lambda"]["init_us"]
    out = [
        "## 4. Cold start",
        "",
        "`cargo bench --bench lambda_process` (after `cargo build --release --bin ingest --bin router --example "
        "hello_lambda`): each release binary is started against a loopback emulator of the Lambda Runtime API "
        "(`benches/lambda_process/`) with Lambda's environment variables and fake credentials, and a loopback "
        "stub answering SQS and Secrets Manager at once. Init is process start → first `next` poll; an "
        "invocation is the event handed out → the answer received (ingest: a signed 10 KiB webhook, queued; "
        "router: a batch of 10, `ROUTES=*=drop`, in-memory de-duplication). Medians and fastest of "
        f"{p['cold_start']['runs']} cold starts each, the functions interleaved.",
        "",
        "| function | init, median | init, fastest | ÷ hello-world (fastest; median) | first invocation | "
        "second invocation |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    labels = {
        "hello_lambda": "hello-world `lambda_runtime` (`examples/hello_lambda.rs`)",
        "ingest": "`ingest`, secret from `WEBHOOK_SECRET`",
        "router": "`router`",
        "ingest_secrets_manager": "`ingest`, secret fetched from Secrets Manager (`WEBHOOK_SECRET_ARN`)",
    }
    hello_min = cold["hello_lambda"]["init_min_us"]
    for name in ["hello_lambda", "ingest", "router", "ingest_secrets_manager"]:
        f = cold[name]
        out.append(
            f"| {labels[name]} | {f['init_us']:,.0f} µs | {f['init_min_us']:,.0f} µs | "
            f"×{f['init_min_us'] / hello_min:.2f}; ×{f['init_us'] / hello:.2f} | "
            f"{f['first_invocation_us']:,.0f} µs | {f['second_invocation_us']:,.0f} µs |"
        )
    fetch = cold["ingest_secrets_manager"]["init_min_us"] - cold["ingest"]["init_min_us"]
    fetch_text = f"{fetch:,.0f} µs" if fetch > 0 else "below the noise (≤ 0)"
    worst = max(cold[n]["init_min_us"] / hello_min for n in ["ingest", "router"])
    ok = worst <= 1.3
    HEADLINES.append(
        f"Cold start: init ×{cold['ingest']['init_min_us'] / hello_min:.2f} (ingest) and "
        f"×{cold['router']['init_min_us'] / hello_min:.2f} (router) a hello-world function's, "
        f"{verdict(ok, f'{worst - 1.3:.2f}×')}; the secret fetch on its own line (section 4)."
    )
    out += [
        f"| the secret fetch at cold start (difference of the two `ingest` rows, fastest) | {fetch_text} | | | | |",
        "",
        f"Goal: init within ×1.3 of hello-world, not counting the secret fetch, on the fastest of each: "
        f"{verdict(ok, f'{worst - 1.3:.2f}× (worst ×{worst:.2f})')}. What init does beyond hello-world's, from "
        "`perf record` over 60 cold starts of `ingest` built with symbols: loading the binary takes the largest "
        "part, about 0.5 ms more than hello-world's: some 27,000 dynamic relocations (hello-world: 2,055) written "
        "into 440 KB of pages that are read-only once started, each page taking a copy-on-write fault. Then "
        "creating the SQS client, about 0.3 ms, half of it the SDK parsing its endpoint partitions, which the "
        "first request needs anyway; then the SDK configuration, the log set-up and the webhook secret's key, "
        "about 0.2 ms, mostly first touches of code pages.",
        "",
        "Changes made for this goal, each measured in paired runs of this bench (the binaries before and after "
        "the change interleaved, 40 cold starts each; `ingest`'s init ÷ hello-world's, fastest, two runs each; "
        "runs of the same binaries differ by up to 0.2× on this machine, so only the pairs compare): the AWS clients trust only the five Amazon Trust Services "
        "roots that AWS endpoints chain to, so no CA bundle is read and parsed (`adapters/aws.rs`; "
        "`TLS_SYSTEM_ROOTS=true` restores the system bundle): ×2.7 → ×1.8, from a full run before and a run of "
        "this bench alone after. Region and credentials come "
        "straight from the variables Lambda sets, where the SDK's default chains look first anyway, so it builds "
        "no STS or instance-metadata client for the rest of those chains (builds with symbols): ×1.86 and ×1.89 → ×1.62 and ×1.59. "
        "tokio's current-thread scheduler, since a function handles one invocation at a time, so no worker "
        "threads start: ×1.63 and ×1.65 → ×1.37 and ×1.39. No TLS connector built and thrown away as each "
        "client is created (smithy does that to read the system CA bundle early): ×1.46 and ×1.49 → ×1.37 and "
        "×1.31.",
        "",
        "The first random number: aws-lc-sys 0.47 builds AWS-LC with CPU jitter entropy as the root of its "
        "random number generators, and the first random number a process draws samples timing noise to seed "
        "it: about 30 ms of CPU here (`perf record`: `tree_jitter_initialize_once`, `jent_measure_jitter`). "
        "The router's first lease token paid it (first invocation 33,059 µs, second 2,185 µs, medians of 20); "
        "in AWS each function's first TLS handshake draws one too (rustls's client random comes from AWS-LC), "
        "so both paid it once per cold start, up to about 0.4 s at 128 MB's share of a vCPU if it is all CPU "
        "work as it was here. `.cargo/config.toml` builds AWS-LC with `AWS_LC_SYS_NO_JITTER_ENTROPY=1`, so its "
        "seeds come from the operating system (`getrandom`) with RDRAND or RNDR as the second source, as "
        "BoringSSL's and OpenSSL's do: the router's first invocation 2,977 µs after (medians of 20, measured "
        "alone on 2026-12-06).",
        "",
        "Not done: linking a position-dependent (non-PIE) executable would remove the relocations, but it gives "
        "up address-space layout randomisation of the program's code, a trade not made for half a millisecond "
        "once per cold start. Deferring the clients to the first invocation would only move the cost: at 128 MB "
        "the function has a fraction of one vCPU, so nothing runs beside it. The secret fetch is one "
        "`GetSecretValue` answered at once here; in AWS it is one round trip on a new TLS connection, "
        "paid once per cold start.",
        "",
    ]
    sizes = {s["function"]: s["bytes"] for s in p["sizes"]}
    opt3 = load("opt3_sizes") if os.path.exists(os.path.join(BENCH, "opt3_sizes.json")) else {}
    mb = lambda n: f"{n / 1e6:.2f} MB" if n else "—"  # noqa: E731
    out += [
        "## 5. Size and memory",
        "",
        "Stripped release binaries (the `bootstrap` files Lambda runs), with the release profile in "
        "`Cargo.toml`: `opt-level = \"s\"` except `sha2` and `serde_json` at 3, fat LTO, one codegen "
        "unit, stripped, `panic = \"unwind\"` (lambda_runtime catches a handler's panic by unwinding and "
        "answers an error; with `abort` the process would die instead). x86-64 from this run; at opt-level 3 "
        "(the previous profile) with `BENCH_OPT3_BUILD=1`; arm64, the deployed architecture, from `cargo lambda "
        "build --release --arm64` with `BENCH_ARM64_BUILD=1`.",
        "",
        "| binary | x86-64 | x86-64 at opt-level 3 | arm64 | goal: under 8 MB (arm64) |",
        "|---|--:|--:|--:|---|",
    ]
    size_ok = True
    for name in ["ingest", "router", "hello_lambda"]:
        a = arm64.get(name) if arm64 else None
        deployed = a or sizes[name]
        goal = "—" if name == "hello_lambda" else verdict(deployed < 8e6, f"{(deployed - 8e6) / 1e6:.2f} MB")
        if name != "hello_lambda":
            size_ok = size_ok and deployed < 8e6
        out.append(f"| `{name}` | {mb(sizes[name])} | {mb(opt3.get(name))} | {mb(a)} | {goal} |")
    out += [
        "",
        "For the record, measured once before this profile (opt-level 3 throughout) at commit 6c66d86, before "
        "the S3, Secrets Manager, DynamoDB and EventBridge clients were added: x86-64 `ingest` 11.12 MB, `router` "
        "10.63 MB; arm64 9.23 MB and 8.87 MB.",
        "",
        "Peak resident memory (`VmHWM` in `/proc/PID/status`) of one process invoked 10,000 times in a row "
        "through the emulator (ingest: the 10 KiB webhook, SendMessage to the stub; router: batches of 10):",
        "",
        "| function | after init | after 1,000 | after 5,000 | after 10,000 | goal: flat, under 30 MB |",
        "|---|--:|--:|--:|--:|---|",
    ]
    mem_ok = True
    for m in p["memory"]:
        points = [c["vm_hwm_kib"] for c in m["checkpoints"]]
        flat = points[-1] - points[0] <= 1024
        under = points[-1] * 1024 < 30e6
        goal = "—" if m["function"] == "hello_lambda" else verdict(flat and under)
        if m["function"] != "hello_lambda":
            mem_ok = mem_ok and flat and under
        out.append(
            f"| `{m['function']}` | {m['after_init_vm_hwm_kib'] / 1024:.1f} MiB | "
            + " | ".join(f"{v / 1024:.1f} MiB" for v in points)
            + f" | {goal} |"
        )
    out.append("")
    out += section_large_payloads(load("large_payloads"))
    worst_size = max((arm64 or sizes).get(n) or sizes[n] for n in ["ingest", "router"])
    worst_rss = max(m["checkpoints"][-1]["vm_hwm_kib"] for m in p["memory"] if m["function"] != "hello_lambda")
    HEADLINES.append(
        f"Size and memory: largest bootstrap {worst_size / 1e6:.2f} MB ({'arm64' if arm64 else 'x86-64'}; "
        f"{verdict(size_ok, f'{(worst_size - 8e6) / 1e6:.2f} MB')}), peak RSS {worst_rss / 1024:.1f} MiB after "
        f"10,000 invocations ({verdict(mem_ok)}; section 5)."
    )
    return out, cold, {m["function"]: m for m in p["memory"]}, ok, size_ok, mem_ok


def section_large_payloads(large):
    """The router's peak memory on a batch of the largest payloads, against
    the function's MemorySize (Lambda's MB are MiB)."""
    size_kib = large["memory_size_mb"] * 1024
    peak = max(large["vm_hwm_kib_after_each"])
    share = peak / size_kib
    ok = share < 0.8
    out = [
        f"The router on the largest payloads: one process given {large['invocations']} batches of "
        f"{large['records_per_batch']} webhooks of {large['payload_bytes']:,} bytes each (the largest body ingest "
        "accepts), every one claim-checked: pointer messages whose payloads the router fetches from S3 (the "
        "loopback stub) and writes whole to a `file:` destination, each about a different document so they may "
        "be delivered at once. Peak resident memory against the functions' `MemorySize`:",
        "",
        "| batch | after init | peak | MemorySize | share | goal: under 80% of MemorySize |",
        "|---|--:|--:|--:|--:|---|",
        f"| {large['records_per_batch']} × {large['payload_bytes'] / 2**20:.2f} MiB | "
        f"{large['after_init_vm_hwm_kib'] / 1024:.1f} MiB | {peak / 1024:.1f} MiB | {large['memory_size_mb']} MB | "
        f"{share * 100:.0f}% | {verdict(ok)} |",
        "",
        "The router holds at most two claim-checked payloads at a time (`PAYLOADS_AT_ONCE` in "
        "`src/core/router.rs`), fetching the next as the batch is read, and reads each S3 body into one buffer "
        "of its length.",
        "",
    ]
    HEADLINES.append(
        f"Router on the largest payloads: peak RSS {peak / 1024:.1f} MiB routing {large['records_per_batch']} "
        f"claim-checked webhooks of {large['payload_bytes']:,} bytes, {share * 100:.0f}% of "
        f"{large['memory_size_mb']} MB ({verdict(ok)}: under 80%; section 5)."
    )
    return out


def section_cost(ingest_us, memory):
    per_ms = PRICE["lambda_arm64_gb_s"] * MEMORY_GB / 1000
    log_bytes = memory["ingest"]["log_bytes_per_invocation"]
    router_log_bytes = memory["router"]["log_bytes_per_invocation"] / 10
    floor = PRICE["http_api_request"] + PRICE["sqs_request"]
    cpu_ms = ingest_us / 1000 / CPU_SHARE
    billed = max(1, math.ceil(cpu_ms))
    logs = log_bytes / 1e9 * PRICE["logs_gb"]

    def cost(entry, ms, with_logs=False):
        return entry + PRICE["lambda_request"] + ms * per_ms + PRICE["sqs_request"] + (logs if with_logs else 0)

    def row(label, entry, ms, with_logs=False):
        total = cost(entry, ms, with_logs)
        log_cell = f"${logs * 1e6:.3f}" if with_logs else "—"
        return (
            f"| {label} | ${entry * 1e6:.2f} | ${PRICE['lambda_request'] * 1e6:.2f} | ${ms * per_ms * 1e6:.4f} | "
            f"${PRICE['sqs_request'] * 1e6:.2f} | {log_cell} | ${total * 1e6:.3f} | ×{total / floor:.3f} |"
        )

    http, url = PRICE["http_api_request"], 0.0
    budget_ms = (floor * 1.15 - cost(http, 0)) / per_ms
    http_ratio, url_ratio = cost(http, billed) / floor, cost(url, billed) / floor
    http_ok, url_ok = http_ratio <= 1.15, url_ratio < 1
    out = [
        "### The ingest path alone, on paper, against the floor",
        "",
        "On paper, from the figures above and list prices (us-east-1, first tier, free tiers ignored, as last "
        "known, late 2025; check before relying on them): Lambda arm64 $0.0000133334 per GB-s and $0.20 per "
        "million requests; API Gateway HTTP API $1.00 per million requests (each 512 KB); SQS standard $0.40 per "
        "million requests (each 64 KB, so one per webhook up to 64 KB); function URLs nothing beyond Lambda's "
        "own charges; CloudWatch Logs ingestion $0.50 per GB.",
        "",
        f"Billed duration: the mean ingest invocation through the emulator (section 5's 10,000) is "
        f"{ingest_us:,.0f} µs here, wall-clock, including SigV4 signing and the SendMessage round trip to a "
        f"loopback stub. At 128 MB Lambda gives {CPU_SHARE * 100:.1f}% of a vCPU; counting all of that time as "
        f"CPU work, it takes about {cpu_ms:.1f} ms there; billed in whole milliseconds: **{billed} ms**. In AWS, "
        "SendMessage's own latency (a few milliseconds in-region, which cannot be measured offline) adds to the "
        "billed time, while the stub's share of the time here would not be CPU work; the 1 ms row shows the "
        "least any invocation bills.",
        "",
        "| per million webhooks | entry | Lambda requests | Lambda duration, 128 MB | SQS | logs | total | "
        "÷ floor |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
        f"| floor: HTTP API → SQS integration, verifies nothing | ${http * 1e6:.2f} | — | — | "
        f"${PRICE['sqs_request'] * 1e6:.2f} | — | ${floor * 1e6:.3f} | ×1.000 |",
        row(f"HTTP API → ingest, {billed} ms", http, billed),
        row("HTTP API → ingest, 1 ms", http, 1),
        *([row(f"HTTP API → ingest, {billed} ms, with its log line", http, billed, True)] if log_bytes else []),
        row(f"function URL → ingest, {billed} ms", url, billed),
        *([row(f"function URL → ingest, {billed} ms, with its log line", url, billed, True)] if log_bytes else []),
        "",
        f"Goal, within 15% of the floor through HTTP API: {verdict(http_ok, f'{(http_ratio - 1.15) * 100:.1f} points')} "
        f"(×{http_ratio:.3f} at {billed} ms). The fixed charges (HTTP API, Lambda request, SQS) already come to "
        f"×{cost(http, 0) / floor:.3f}, the Lambda request alone {PRICE['lambda_request'] / floor * 100:.1f}% of the "
        f"floor, so the goal holds while an invocation bills at most {budget_ms:.1f} ms. Below the floor through "
        f"a function URL: {verdict(url_ok)} (×{url_ratio:.2f}).",
        "",
        (f"Logs: at `info`, the default, ingest writes one JSON line per webhook ({log_bytes:.0f} bytes measured "
         f"here), ${logs * 1e6:.3f} per million at CloudWatch's price, which alone takes the HTTP API path over 15% "
         "(rows \"with its log line\")." if log_bytes else
         "Logs: at `info`, the default, ingest writes nothing for a webhook it queued (0 bytes measured here over "
         "section 5's 10,000 invocations): its line is at `debug`, about 240 bytes, $0.12 per million (section 6 "
         "counts both), and refusals and failures are logged at every level.")
        + " Lambda adds its START/END/REPORT lines unless the function's system log level is WARN (the template "
        f"sets it). The router writes about {router_log_bytes:,.0f} bytes per webhook "
        f"(${router_log_bytes / 1e9 * PRICE['logs_gb'] * 1e6:.3f} per million) in batches of 10, after the queue, "
        "where the floor design would need a consumer too.",
        "",
    ]
    return out, http_ok, url_ok


def section_whole_pipeline():
    """Section 6's counted whole-pipeline cost (scripts/cost_report.py), with its headline."""
    before = cost_report.load(cost_report.BEFORE_PATH)
    text, headline = cost_report.section(load("cost"), before)
    HEADLINES.append(headline)
    return text.split("\n") + [""]


def main():
    m = machine()
    process = load("lambda_process")
    arm64 = load("arm64_sizes") if os.path.exists(os.path.join(BENCH, "arm64_sizes.json")) else None
    verify_out, _ = section_verify(m)
    ingest_out, router_out = section_ingest(), section_router()
    process_out, _, memory, *_ = section_process(process, arm64)
    cost_out = section_whole_pipeline()
    cost_out += section_cost(memory["ingest"]["mean_invocation_us"], memory)[0]
    budget_out = section_time_budget()
    local_out = section_local_durable()
    head = [
        "# Benchmarks",
        "",
        "Every table here is written by `make bench`, which builds the release binaries, runs the benches in "
        "`benches/` and then `scripts/bench-report.py`. Absolute times drift on shared machines; the ratios "
        "compare figures from the same run, measured in interleaved rounds where they are compared, and are "
        "the ones to trust.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']} {m['arch']}, "
        f"SHA-NI: {'yes' if m['sha_ni'] else 'no'}; {m['rustc']}; run {m['date']}.",
        "",
    ]
    sections = verify_out + ingest_out + router_out + process_out + cost_out + budget_out + local_out
    body = head + ["Headlines:", ""] + [f"- {line}" for line in HEADLINES] + [""] + sections
    sys.stdout.write("\n".join(body))
    if os.environ.get("BENCH_README"):
        update_readme(os.environ["BENCH_README"], m)


def update_readme(path, m):
    """Puts the headlines between the README's markers, so the figures it
    shows are always those of the last `make bench`."""
    start, end = "<!-- bench-headlines -->", "<!-- /bench-headlines -->"
    with open(path) as f:
        text = f.read()
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    intro = f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores (sections of BENCHMARKS.md):"
    block = "\n".join([start, intro, ""] + [f"- {line}" for line in HEADLINES] + [end])
    with open(path, "w") as f:
        f.write(before + block + after)


if __name__ == "__main__":
    main()
