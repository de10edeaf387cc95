#!/usr/bin/env bash
# Runs a command with moto's DynamoDB-compatible server (through
# infra/dynamodb-server.py, which applies one request at a time as DynamoDB
# would atomically) on a free loopback
# port, passing its URL as AIRWAVE_TEST_DYNAMODB_ENDPOINT, and stops the
# server afterwards whatever the command's outcome.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.tools/venv/bin/python"
if [[ ! -x "$root/.tools/venv/bin/moto_server" ]]; then
    echo "with-moto: moto is not installed in .tools/venv; run 'make tools' first" >&2
    exit 2
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$root/.local"
log="$root/.local/moto-test.log"
"$python" "$root/infra/dynamodb-server.py" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT

ready=no
for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        ready=yes
        break
    fi
    if ! kill -0 "$moto_pid" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
if [[ "$ready" != yes ]]; then
    echo "with-moto: moto_server did not start on port $port; its log:" >&2
    cat "$log" >&2
    exit 1
fi

AIRWAVE_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$port" "$@"
