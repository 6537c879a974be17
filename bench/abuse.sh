#!/usr/bin/env bash
# Load and abuse scenarios against the chat demo (issue #17), each on a
# fresh release build of the demo on a port of its own, loopback only:
#
#   bench/abuse.sh stall      10,000 SSE subscribers stop reading, 100 read on,
#                             100 publishes/s of 4 KiB for 60 s (and the same
#                             without the stalled ones, for the latency baseline)
#   bench/abuse.sh churn      1,000,000 subscribe-and-close cycles, SSE and long poll
#   bench/abuse.sh slowloris  5,000 connections dribble headers a byte a second,
#                             then 5,000 dribble publish bodies (and a baseline)
#   bench/abuse.sh storm      10,000 SSE and long-poll clients reconnect within 1 s
#   bench/abuse.sh flood      publishers flat out to one channel, then to 10,000
#   bench/abuse.sh soak       30 minutes of mixed traffic; RSS every minute to
#                             bench/results/soak.csv, plotted to soak.svg
#   bench/abuse.sh all        every one of them but the soak
#
# --quick runs each at a tenth of its size; --pin puts the demo on CPU 0 and
# the generator on CPU 1. Every report is one JSON line, also appended to
# bench/results/abuse.jsonl with the load average when it ran.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=1; PIN_SERVER=(); PIN_CLIENT=(); WHAT=()
for arg in "$@"; do
    case $arg in
        --quick) SCALE=10 ;;
        --pin) PIN_SERVER=(taskset -c 0); PIN_CLIENT=(taskset -c 1) ;;
        stall|churn|slowloris|storm|flood|soak|all) WHAT+=("$arg") ;;
        *) sed -n '2,24p' "$0" >&2; exit 2 ;;
    esac
done
[ ${#WHAT[@]} -gt 0 ] || { sed -n '2,24p' "$0" >&2; exit 2; }
[ "${WHAT[*]}" = all ] && WHAT=(stall churn slowloris storm flood)

ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 12000 ] || echo "ulimit -n is $(ulimit -n): 10,000 connections need about 11,000 in each of the demo and the generator" >&2
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build -q --release --features bench-runtime --example chat
cargo build -q --release -p comet-loadgen
LOADGEN=(${PIN_CLIENT[@]+"${PIN_CLIENT[@]}"} "$CARGO_TARGET_DIR/release/comet-loadgen")
RESULTS=bench/results
mkdir -p "$RESULTS"
n() { echo $(( $1 / SCALE )); }

DEMO_PID=""
trap '[ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null; wait 2>/dev/null || true' EXIT
# demo PORT [ENV=VALUE...]: (re)starts the chat demo on PORT with the
# environment given; sets DEMO_PID and B (its base URL).
demo() {
    local port=$1; shift
    stop_demo
    env RUST_LOG=warn COMET_ADDR=127.0.0.1:$port "$@" \
        ${PIN_SERVER[@]+"${PIN_SERVER[@]}"} "$CARGO_TARGET_DIR/release/examples/chat" >/dev/null 2>&1 &
    DEMO_PID=$!
    B=http://127.0.0.1:$port
    for _ in $(seq 100); do curl -s -m 0.2 -o /dev/null "$B/stats" && return; sleep 0.1; done
    echo "the demo did not start" >&2; exit 1
}
stop_demo() {
    if [ -n "$DEMO_PID" ]; then kill "$DEMO_PID" 2>/dev/null || true; wait "$DEMO_PID" 2>/dev/null || true; DEMO_PID=""; fi
}
# report NAME ARGS...: runs the generator, prints its JSON line and keeps it.
report() {
    local name=$1; shift
    local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "== $name (load average before: $load)" >&2
    local out
    out=$("${LOADGEN[@]}" "$@" --pid "$DEMO_PID" --stats-url "$B/stats" --json) || { echo "$name failed" >&2; return 1; }
    echo "$out"
    printf '{"name":"%s","at":"%s","commit":"%s","loadavg":"%s","report":%s}\n' \
        "$name" "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)" "$load" "$out" >> "$RESULTS/abuse.jsonl"
}

for what in "${WHAT[@]}"; do
    case $what in
    stall)
        # History of 1,000 messages of 4 KiB: 4 MB a channel. On loopback
        # the stalled clients' receive buffers are this machine's TCP memory
        # too: 16 KiB each (a remote client's are not the server's), so that
        # the kernel's TCP memory (net.ipv4.tcp_mem) measures the server's
        # side. With the kernel's default (128 KiB) 10,000 of them and the
        # server's send buffers passed tcp_mem's limit: every socket slowed,
        # and some stalled connections were never woken to write again.
        demo 3501
        report stall-baseline stall --sub-url "$B/comet?channel=stall0" --pub-url "$B/comet/publish/stall0" \
            --stalled 0 --subscribers 100 --publishers 1 --rate 100 --payload-bytes 4096 --duration "$(n 60)"
        demo 3501
        report stall stall --sub-url "$B/comet?channel=stall1" --pub-url "$B/comet/publish/stall1" \
            --stalled "$(n 10000)" --stall-rcvbuf "${STALL_RCVBUF:-16384}" --subscribers 100 --publishers 1 --rate 100 --payload-bytes 4096 --duration "$(n 60)"
        ;;
    churn)
        # Idle channels go after 5 s, so that the run can show none is left.
        demo 3502 COMET_IDLE_TTL_SECS=5
        report churn churn --sub-url "$B/comet?channel=churn{c}" --channels 1000 \
            --cycles "$(n 1000000)" --concurrency 128 --sources 16
        ;;
    slowloris)
        demo 3503
        report slowloris-baseline slowloris --sub-url "$B/comet?channel=slow{c}" --pub-url "$B/comet/publish/slow{c}" \
            --slow 0 --subscribers 100 --rate 100 --duration 30 --wires sse
        demo 3503
        report slowloris-headers slowloris --sub-url "$B/comet?channel=slow{c}" --pub-url "$B/comet/publish/slow{c}" \
            --slow "$(n 5000)" --subscribers 100 --rate 100 --duration 30 --wires sse
        demo 3503
        report slowloris-bodies slowloris --sub-url "$B/comet?channel=slow{c}" --pub-url "$B/comet/publish/slow{c}" \
            --slow "$(n 5000)" --slow-body --subscribers 100 --rate 100 --duration 30 --wires sse
        ;;
    storm)
        demo 3504
        report storm storm --sub-url "$B/comet?channel=storm{c}" --pub-url "$B/comet/publish/storm{c}" \
            --subscribers "$(n 10000)" --channels 100 --spread-ms 1000 --messages 3 --wires sse,poll
        ;;
    flood)
        demo 3505 COMET_MAX_CHANNELS=5000 COMET_IDLE_TTL_SECS=5
        report flood-one flood --sub-url "$B/comet?channel=flood{c}" --pub-url "$B/comet/publish/flood{c}" \
            --channels 1 --subscribers 20 --publishers 16 --duration 10 --wires sse,stream,poll
        demo 3505 COMET_MAX_CHANNELS=5000 COMET_IDLE_TTL_SECS=5
        report flood-many flood --sub-url "$B/comet?channel=flood{c}" --pub-url "$B/comet/publish/flood{c}" \
            --channels 10000 --subscribers 20 --publishers 16 --duration 10 --wires sse,stream,poll
        ;;
    soak)
        # History of 100 messages a channel: full after 200 s at 500 a second,
        # so RSS is flat from the warm-up on if nothing leaks.
        demo 3506 COMET_HISTORY=100
        report soak soak --sub-url "$B/comet?channel=soak{c}" --pub-url "$B/comet/publish/soak{c}" \
            --subscribers 2000 --channels 1000 --rate 500 --publishers 4 --duration "$(n 1800)" \
            --reconnect-secs 30 --sample-secs "$(( 60 / SCALE ))" --csv "$RESULTS/soak.csv" --drain 30
        python3 bench/plot_rss.py "$RESULTS/soak.csv" "$RESULTS/soak.svg"
        ;;
    esac
done
