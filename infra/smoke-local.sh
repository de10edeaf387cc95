#!/usr/bin/env bash
# `make smoke` against the local stack: starts airwave-stack (on the server
# infra/with-moto.sh provides), runs the smoke test against its URL through
# the same make target a deployment is checked with, and stops the stack.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stack="$root/target/debug/airwave-stack"
if [[ ! -x "$stack" ]]; then
    echo "smoke-local: $stack is missing; build it with 'cargo build -p airwave-tests --bin airwave-stack'" >&2
    exit 2
fi

# The stack serves until its stdin closes; it prints one JSON line once ready.
coproc STACK { exec "$stack"; }
trap 'kill "$STACK_PID" 2>/dev/null || true' EXIT
if ! read -r -t 120 ready <&"${STACK[0]}"; then
    echo "smoke-local: airwave-stack did not report ready within 120 s" >&2
    exit 1
fi
url="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["url"])' "$ready")"
make --no-print-directory -C "$root" smoke URL="$url"
