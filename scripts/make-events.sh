#!/usr/bin/env bash
# `make events`: regenerates the sample Lambda events in events/ from the
# payloads in events/payloads/, signed with the sample secret at a fixed
# time, so the output is the same on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${CLI:-target/debug/nectar-webhooks}
secret=${SAMPLE_SECRET:?}
ts=${SAMPLE_TIMESTAMP:?}
sign() { WEBHOOK_SECRET=$secret "$cli" sign --timestamp "$ts" "$@"; }
# Rewrites a JSON event on stdin with a Python expression over `e`.
tweak() { python3 -c "import json,sys; e=json.load(sys.stdin); $1; print(json.dumps(e, indent=2))"; }

rm -rf events/ingest events/router
mkdir -p events/ingest/http-api events/ingest/function-url events/ingest/rest-api events/ingest/rejected events/router

for payload in events/payloads/*.json; do
  name=$(basename "$payload" .json)
  sign --format apigw-v2 "$payload" > "events/ingest/http-api/$name.json"
  sign --format function-url "$payload" > "events/ingest/function-url/$name.json"
done
doc=events/payloads/document.created.v2.json
sign --format apigw-v1 "$doc" > events/ingest/rest-api/document.created.v2.json
sign --format apigw-v2 --base64-body "$doc" > events/ingest/http-api/document.created.v2.base64-body.json

other_secret=whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD
WEBHOOK_SECRET=$other_secret "$cli" sign --timestamp "$ts" --format apigw-v2 "$doc" > events/ingest/rejected/401-wrong-secret.json
WEBHOOK_SECRET=$secret "$cli" sign --timestamp 1000000000 --format apigw-v2 "$doc" > events/ingest/rejected/401-stale-timestamp.json
sign --format apigw-v2 "$doc" | tweak 'del e["headers"]["svix-signature"]' > events/ingest/rejected/400-missing-signature.json
sign --format apigw-v2 "$doc" | tweak 'e["body"] = e["body"].replace("document.created.v2", "document.deleted.v2")' \
  > events/ingest/rejected/401-tampered-body.json
sign --format apigw-v2 "$doc" | tweak 'e["isBase64Encoded"] = True; e["body"] = "not base64!"' \
  > events/ingest/rejected/400-body-not-base64.json
sign --format apigw-v2 "$doc" | tweak 'e["requestContext"]["http"]["method"] = "GET"' > events/ingest/rejected/405-get.json
sign --format apigw-v2 --source stripe "$doc" > events/ingest/rejected/404-unknown-source.json

sign --format sqs events/payloads/*.json > events/router/sqs-every-payload.json
sign --format sqs events/payloads/document.updated.v2.json events/payloads/connection.validated.v2.json \
  | tweak 'e["Records"].insert(1, {"messageId": "poison-no-attributes", "receiptHandle": "r", "body": "{}", "messageAttributes": {}, "eventSource": "aws:sqs"})' \
  > events/router/sqs-with-poison.json
echo "events/: $(find events/ingest events/router -name '*.json' | wc -l) sample events written"
