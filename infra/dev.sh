#!/usr/bin/env bash
# The local stack: moto's DynamoDB-compatible server, the Airwave tables, and
# every function served by `cargo lambda watch`. Ctrl-C stops all of it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dynamodb_port="${1:-8000}"
invoke_port="${2:-9000}"
venv="$root/.tools/venv"

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$dynamodb_port"
export RUST_LOG="${RUST_LOG:-info}"

mkdir -p "$root/.local"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if (exec 3<>"/dev/tcp/127.0.0.1/$dynamodb_port") 2>/dev/null; then
    echo "dev: port $dynamodb_port is already in use; pick another with DYNAMODB_PORT=..." >&2
    exit 1
fi
"$venv/bin/python" "$root/infra/dynamodb-server.py" -H 127.0.0.1 -p "$dynamodb_port" >"$root/.local/moto-dev.log" 2>&1 &
moto_pid=$!
pids+=("$moto_pid")
ready=no
for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$dynamodb_port") 2>/dev/null; then
        ready=yes
        break
    fi
    kill -0 "$moto_pid" 2>/dev/null || break
    sleep 0.2
done
if [[ "$ready" != yes ]]; then
    echo "dev: moto_server did not start; see .local/moto-dev.log" >&2
    exit 1
fi

cargo run --quiet --package airwave-local --bin airwave-local -- create-tables

cat <<INFO

  DynamoDB (moto):   $AWS_ENDPOINT_URL_DYNAMODB   (log: .local/moto-dev.log)
  Functions:         http://127.0.0.1:$invoke_port  (cargo lambda watch, hot reload)

  Try it from another terminal:
    cargo lambda invoke connect --invoke-address 127.0.0.1 --invoke-port $invoke_port --data-file tests/events/connect.json
    cargo lambda invoke message --invoke-address 127.0.0.1 --invoke-port $invoke_port --data-file tests/events/message.json
    cargo lambda invoke disconnect --invoke-address 127.0.0.1 --invoke-port $invoke_port --data-file tests/events/disconnect.json

  (cargo lambda is in .tools/venv/bin.) The stream-processor needs a Management
  API endpoint (AIRWAVE_MANAGEMENT_ENDPOINT), which the local stack does not
  provide yet. Ctrl-C stops everything.

INFO

"$venv/bin/cargo-lambda" lambda watch --invoke-address 127.0.0.1 --invoke-port "$invoke_port" &
pids+=($!)
wait "${pids[-1]}"
