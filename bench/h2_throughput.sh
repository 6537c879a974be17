#!/usr/bin/env bash
# Deliveries per second over HTTP/2 beside HTTP/1.1, in one run, on the chat
# demo as a user builds it (default features: no bench-runtime): 100 SSE
# streams (over h2c, on one connection) under publishes from 8 connections
# for 5 s, the servers taking turns; prints each round and the medians, and
# the ratio h2/h1. --pin puts the servers on CPU 0 and the generator on CPU 1.
# Usage: bench/h2_throughput.sh [--rounds N] [--pin]
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3 PIN=() GEN=()
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --pin) PIN=(taskset -c 0); GEN=(taskset -c 1) ;;
        *) echo "usage: $0 [--rounds N] [--pin]" >&2; exit 2 ;;
    esac
    shift
done
cargo build -q --release --example chat
cargo build -q --release -p comet-loadgen
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT
H1=127.0.0.1:3450 H2=127.0.0.1:3451
RUST_LOG=warn ${PIN[@]+"${PIN[@]}"} target/release/examples/chat --addr "$H1" >/dev/null 2>&1 &
RUST_LOG=warn ${PIN[@]+"${PIN[@]}"} target/release/examples/chat --addr "$H2" --http2 >/dev/null 2>&1 &
for addr in "$H1" "$H2"; do
    for _ in $(seq 100); do curl -s -m 0.2 -o /dev/null "http://$addr/" && break; sleep 0.1; done
done

# run ADDR CHANNEL [--http2] -> deliveries per second
run() {
    local addr=$1 channel=$2; shift 2
    ${GEN[@]+"${GEN[@]}"} target/release/comet-loadgen throughput \
        --sub-url "http://$addr/comet/sse?channel=$channel" \
        --pub-url "http://$addr/comet/publish/$channel" \
        --subscribers 100 --duration 5 --publishers 8 --json "$@" |
        python3 -c 'import json, sys; print(round(json.load(sys.stdin)["deliveries_per_s"]))'
}

h1s=() h2s=()
for round in $(seq "$ROUNDS"); do
    h1=$(run "$H1" "h1-$round-$RANDOM")
    h2=$(run "$H2" "h2-$round-$RANDOM" --http2)
    echo "round $round: http/1.1 $h1, http/2 $h2 deliveries/s"
    h1s+=("$h1") h2s+=("$h2")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
m1=$(median "${h1s[@]}") m2=$(median "${h2s[@]}")
echo "medians: http/1.1 $m1, http/2 $m2, http/2 / http/1.1 $(python3 -c "print(round($m2 / $m1, 2))")"
