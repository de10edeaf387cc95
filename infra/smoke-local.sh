#!/usr/bin/env bash
# `make smoke` against the local stack: starts airwave-stack (on the server
# infra/with-moto.sh provides) with token authentication on, runs the smoke
# test against its URL with a token through the same make target a
# deployment is checked with, and stops the stack.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stack="$root/target/debug/airwave-stack"
if [[ ! -x "$stack" ]]; then
    echo "smoke-local: $stack is missing; build it with 'cargo build -p airwave-tests --bin airwave-stack'" >&2
    exit 2
fi

# A fresh secret per run, and a token for it that may use the smoke channels.
secret="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
token="$(python3 - "$secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
def part(value):
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
claims = {"sub": "smoke", "exp": int(time.time()) + 600, "channels": ["smoke-*"], "publish": ["smoke-*"]}
signed = part({"alg": "HS256", "typ": "JWT"}) + "." + part(claims)
signature = hmac.new(sys.argv[1].encode(), signed.encode(), hashlib.sha256).digest()
print(signed + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode())
PY
)"

# The stack serves until its stdin closes; it prints one JSON line once ready.
export AIRWAVE_STACK_SECRET="$secret"
coproc STACK { exec "$stack"; }
trap 'kill "$STACK_PID" 2>/dev/null || true' EXIT
if ! read -r -t 120 ready <&"${STACK[0]}"; then
    echo "smoke-local: airwave-stack did not report ready within 120 s" >&2
    exit 1
fi
url="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["url"])' "$ready")"
make --no-print-directory -C "$root" smoke URL="$url" TOKEN="$token"
