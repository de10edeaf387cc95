#!/usr/bin/env bash
# The local stack: moto's DynamoDB-compatible server, every function served by
# `cargo lambda watch` (hot reload), and the local API Gateway (infra/gateway),
# which reads template.yaml, creates the tables, accepts WebSockets, invokes the
# routes, serves the Management API and feeds the messages stream to the
# stream-processor; also the browser client's demo dashboard (Vite) and a loop
# that publishes demo prices. Ctrl-C stops all of it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dynamodb_port="${1:-8000}"
invoke_port="${2:-9000}"
gateway_port="${3:-3001}"
demo_port="${4:-5173}"
venv="$root/.tools/venv"

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$dynamodb_port"
# moto's server serves SQS on the same port: the failure queue is there.
export AWS_ENDPOINT_URL_SQS="$AWS_ENDPOINT_URL_DYNAMODB"
# A token secret in Secrets Manager (JwtSecretArn) is read from the same server.
export AWS_ENDPOINT_URL_SECRETSMANAGER="$AWS_ENDPOINT_URL_DYNAMODB"
export RUST_LOG="${RUST_LOG:-info}"

mkdir -p "$root/.local"
pids=()
# A process and everything it started (cargo lambda watch runs the functions
# as its descendants), children first.
kill_tree() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do
        kill_tree "$child" "$2"
    done
    kill "-$2" "$1" 2>/dev/null || true
}
running() {
    # An exited child stays a zombie (state Z) until waited for.
    case "$(ps -o stat= -p "$1" 2>/dev/null)" in
        "" | Z*) return 1 ;;
    esac
}
# Last started, first stopped: the gateway closes its sockets and runs
# $disconnect for each while the functions and the database still run.
cleanup() {
    local i pid
    # No job-control notices ("Terminated") for the processes stopped on purpose.
    set +m
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid="${pids[i]}"
        kill_tree "$pid" TERM
        for _ in $(seq 1 50); do
            running "$pid" || break
            sleep 0.2
        done
        # 10 s is enough for a clean stop; past that, stop it anyway.
        if running "$pid"; then
            kill_tree "$pid" KILL
        fi
    done
    wait 2>/dev/null || true
}
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
# Waits up to 30 s for a started process to accept connections on its port;
# exits (which stops the stack) if it dies first or never does.
wait_for_port() {
    local port="$1" pid="$2" name="$3" log="$4"
    for _ in $(seq 1 150); do
        port_open "$port" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    echo "dev: $name did not start; see .local/$log" >&2
    exit 1
}
# Each background process in its own process group, so Ctrl-C reaches only this
# script, which then stops them in order.
set -m
trap cleanup EXIT
trap 'echo; echo "dev: stopping"; exit 0' INT TERM

# Every port checked before anything starts.
for port in "$dynamodb_port" "$invoke_port" "$gateway_port" "$demo_port"; do
    if port_open "$port"; then
        echo "dev: port $port is already in use; pick others with DYNAMODB_PORT=... INVOKE_PORT=... GATEWAY_PORT=... DEMO_PORT=..." >&2
        exit 1
    fi
done
"$venv/bin/python" "$root/infra/dynamodb-server.py" -H 127.0.0.1 -p "$dynamodb_port" >"$root/.local/moto-dev.log" 2>&1 &
moto_pid=$!
pids+=("$moto_pid")
wait_for_port "$dynamodb_port" "$moto_pid" "moto_server" moto-dev.log

# Built up front so the first connection does not wait for a compile.
cargo build --quiet --package airwave-gateway --package airwave-cli \
    --package connect --package disconnect --package message --package http-api --package stream-processor --package reaper
gateway="$root/target/debug/airwave-gateway"

# The functions get the template's environment with local table names, the
# local failure queue's URL and the gateway's Management API, plus what suits one laptop: every local client
# shares 127.0.0.1, so the per-IP throttle and the per-IP publish limit are
# off, and clients may publish (without a token too: the demo prices come from
# `airwave publish`) and read stats. Any AIRWAVE_* variable set in this shell wins.
env_file="$root/.local/functions.env"
"$gateway" --template "$root/template.yaml" --port "$gateway_port" \
    --dynamodb-endpoint "$AWS_ENDPOINT_URL_DYNAMODB" --print-env \
    | grep -v -E '^(AIRWAVE_CONNECT_ATTEMPTS_PER_IP|AIRWAVE_PUBLISH_RATE_LIMIT_PER_IP|AIRWAVE_ALLOW_CLIENT_PUBLISH|AIRWAVE_ALLOW_ANONYMOUS_PUBLISH|AIRWAVE_ALLOW_STATS)=' >"$env_file"
# A fresh server key for this run's HTTP API (a deployment keeps its keys in
# Secrets Manager); AIRWAVE_SERVER_KEYS set in this shell wins, as below.
server_key="sk_dev_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
cat >>"$env_file" <<ENV
AIRWAVE_SERVER_KEYS=$server_key
AIRWAVE_CONNECT_ATTEMPTS_PER_IP=0
AIRWAVE_PUBLISH_RATE_LIMIT_PER_IP=0
AIRWAVE_ALLOW_CLIENT_PUBLISH=true
AIRWAVE_ALLOW_ANONYMOUS_PUBLISH=true
AIRWAVE_ALLOW_STATS=true
ENV
while IFS='=' read -r name _; do
    if [[ -n "${!name:-}" ]]; then
        sed -i "/^$name=/d" "$env_file"
        echo "$name=${!name}" >>"$env_file"
    fi
done < <(grep -E '^AIRWAVE_' "$env_file")

"$venv/bin/cargo-lambda" lambda watch --invoke-address 127.0.0.1 --invoke-port "$invoke_port" --concurrency 4 \
    --env-file "$env_file" >"$root/.local/functions.log" 2>&1 &
pids+=($!)

"$gateway" --template "$root/template.yaml" --port "$gateway_port" --create-tables \
    --dynamodb-endpoint "$AWS_ENDPOINT_URL_DYNAMODB" --invoke-address "http://127.0.0.1:$invoke_port" \
    --log-format plain >"$root/.local/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")
wait_for_port "$gateway_port" "$gateway_pid" "the gateway" gateway.log

# The demo dashboard (client/browser/demo), served from the sources by Vite.
ws_url="ws://127.0.0.1:$gateway_port/local"
(cd "$root/client/browser" && exec node_modules/.bin/vite --config demo/vite.config.ts \
    --host 127.0.0.1 --port "$demo_port" --strictPort) >"$root/.local/demo.log" 2>&1 &
demo_pid=$!
pids+=("$demo_pid")
wait_for_port "$demo_port" "$demo_pid" "the demo (vite)" demo.log
demo_url="http://127.0.0.1:$demo_port/"
if [[ "$gateway_port" != 3001 ]]; then
    demo_url="$demo_url?url=$ws_url"
fi

# Demo prices on the `prices` channel every 2 s (a random walk in cents), so
# the dashboard's chart moves as soon as the page is open.
(
    cents=10000
    while true; do
        cents=$((cents + RANDOM % 201 - 100))
        ((cents < 100)) && cents=100
        "$root/target/debug/airwave" publish "$ws_url" --channel prices \
            "{\"price\": $((cents / 100)).$(printf %02d $((cents % 100)))}" >/dev/null 2>>"$root/.local/prices.log" || true
        sleep 2
    done
) &
pids+=($!)

cat <<INFO

  Dashboard:         $demo_url   (demo prices published every 2 s; log: .local/demo.log)
  WebSocket API:     ws://127.0.0.1:$gateway_port/local   (gateway log: .local/gateway.log)
  Management API:    http://127.0.0.1:$gateway_port/local/@connections/{id}
  HTTP API:          http://127.0.0.1:$gateway_port/v1/publish   (server key: ${AIRWAVE_SERVER_KEYS:-$server_key})
  Functions:         http://127.0.0.1:$invoke_port  (cargo lambda watch, hot reload; log: .local/functions.log)
  DynamoDB (moto):   $AWS_ENDPOINT_URL_DYNAMODB   (log: .local/moto-dev.log)

  Try it from other terminals (the first connection builds the functions, which takes a while):
    target/debug/airwave listen ws://127.0.0.1:$gateway_port/local --channel prices
    target/debug/airwave publish ws://127.0.0.1:$gateway_port/local --channel prices '{"price": 12.5}'
    curl -H "Authorization: Key ${AIRWAVE_SERVER_KEYS:-$server_key}" -d '{"channel":"prices","data":{"price":12.5}}' http://127.0.0.1:$gateway_port/v1/publish
    target/debug/airwave stats ws://127.0.0.1:$gateway_port/local
    target/debug/airwave bench ws://127.0.0.1:$gateway_port/local --connections 5000

  Ctrl-C stops everything.

INFO

# Stop everything when any part dies, and say which.
while true; do
    for pid in "${pids[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "dev: a process of the stack exited (pid $pid); stopping. See the logs in .local/" >&2
            exit 1
        fi
    done
    sleep 1
done
