#!/usr/bin/env bash
# Redis's CPU per publish: the chat demo on a Redis of its own (`--redis`,
# the demo's history settings: 1,000 messages, 15 min), 16 publishers as
# fast as it takes them for 5 s with 2 SSE subscribers, then Redis's
# `INFO commandstats` for EVALSHA (the publish script: the node's other
# scripts run a few times a second). Prints each round and the median.
# With --pin, Redis runs on CPU 1 alone and the demo and load generator on
# CPU 0: `usec_per_call` is wall time inside the call, which a server
# preempted mid-script by the demo or the generator would inflate.
# Usage: bench/publish_cost.sh [--rounds N] [--pin]
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3
REDIS_CPU=() APP_CPU=()
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --pin) REDIS_CPU=(taskset -c 1) APP_CPU=(taskset -c 0) ;;
        *) echo "usage: $0 [--rounds N] [--pin]" >&2; exit 2 ;;
    esac
    shift
done
command -v redis-server >/dev/null || { echo "redis-server is needed" >&2; exit 2; }
cargo build -q --release --example chat
cargo build -q --release -p comet-loadgen
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT
PORT=6480 HTTP=127.0.0.1:3480
"${REDIS_CPU[@]}" redis-server --port "$PORT" --save "" --appendonly no >/dev/null 2>&1 &
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
RUST_LOG=warn "${APP_CPU[@]}" target/release/examples/chat --addr "$HTTP" --redis "redis://127.0.0.1:$PORT" >/dev/null 2>&1 &
for _ in $(seq 100); do curl -s -m 0.2 -o /dev/null "http://$HTTP/" && break; sleep 0.1; done

costs=()
for round in $(seq "$ROUNDS"); do
    channel="cost-$round-$RANDOM"
    redis-cli -p "$PORT" config resetstat >/dev/null
    published=$("${APP_CPU[@]}" target/release/comet-loadgen throughput \
        --sub-url "http://$HTTP/comet/sse?channel=$channel" \
        --pub-url "http://$HTTP/comet/publish/$channel" \
        --subscribers 2 --duration 5 --publishers 16 --json 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["published"])')
    cost=$(redis-cli -p "$PORT" info commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p')
    echo "round $round: $published publishes, $cost us of Redis CPU each"
    costs+=("$cost")
done
printf '%s\n' "${costs[@]}" | sort -n | awk '{v[NR]=$1} END {print "median: " v[int((NR+1)/2)] " us a publish"}'
