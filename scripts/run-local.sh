#!/usr/bin/env bash
# `make run`: starts local mode, sends one signed sample event through it,
# and keeps serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${CLI:-target/debug/nectar-webhooks}
addr=${ADDR:-127.0.0.1:3000}
export WEBHOOK_SECRET=${WEBHOOK_SECRET:-$("$cli" secret)}

"$cli" serve --addr "$addr" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && break
  sleep 0.1
done

url=http://$addr/webhooks/nectar
sample=events/payloads/document.created.v2.json
cat <<MSG

  nectar-webhooks is listening on $url
  signing secret (development only): $WEBHOOK_SECRET

  Sending a signed sample event (the secret comes from WEBHOOK_SECRET):
  \$ nectar-webhooks send --url $url $sample

MSG
"$cli" send --url "$url" "$sample"
cat <<MSG

  The line starting with {"id": is the event as the router delivered it
  (route: * -> stdout). To send more from another terminal:
    export WEBHOOK_SECRET='$WEBHOOK_SECRET'
    nectar-webhooks send --url $url $sample
  or change ROUTES (see README). Ctrl-C stops.

MSG
wait "$server"
