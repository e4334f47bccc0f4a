"""Signs random webhooks with the official Svix library, one JSON line each.

Usage: svix_cases.py COUNT SEED

Each case has 1-3 secrets (a rotation set, written in the forms users paste:
with or without the whsec_ prefix and base64 padding), an id, a timestamp, a
payload (random bytes that are valid UTF-8, as the library signs text), and
the signature header Svix would send: one v1 entry per secret of the set that
signed it.
"""

import base64
import json
import random
import sys
from datetime import datetime, timezone

from svix.webhooks import Webhook


def random_secret(rng):
    raw = base64.b64encode(rng.randbytes(rng.choice([16, 24, 32, 48]))).decode()
    form = rng.randrange(3)
    if form == 0:
        return "whsec_" + raw
    if form == 1:
        return "whsec_" + raw.rstrip("=")
    return raw


def random_payload(rng):
    kind = rng.randrange(4)
    if kind == 0:
        return ""
    if kind == 1:
        return json.dumps({"eventType": "document.created.v2", "id": str(rng.random()), "n": rng.randrange(10**12)})
    alphabet = "abcXYZ019{}[]\":,. \n\t\\é€😀\u2028\u0000"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 3000)))


def main():
    count, seed = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    for _ in range(count):
        secrets = [random_secret(rng) for _ in range(rng.randint(1, 3))]
        signers = rng.sample(secrets, rng.randint(1, len(secrets)))
        msg_id = "msg_" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(27))
        timestamp = rng.randrange(0, 4_000_000_000)
        payload = random_payload(rng)
        when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
        header = " ".join(Webhook(secret).sign(msg_id, when, payload) for secret in signers)
        print(json.dumps({
            "secrets": secrets,
            "id": msg_id,
            "timestamp": timestamp,
            "payload": base64.b64encode(payload.encode()).decode(),
            "signature": header,
        }))


if __name__ == "__main__":
    main()
