#!/usr/bin/env bash
# The quickstart (as a user builds it, bench/axum-user) beside the floor
# (bench/floor: a bare tokio server with none of comet's layers, a task per
# subscriber, and the same with the publish writing to every subscriber's
# socket itself, as nchan does) and nginx + nchan, all on loopback, the
# servers taking turns, each started afresh for each measurement; prints the
# medians and each over nchan's. What it tells: how much of comet's time is
# its layers, and how much a task per subscriber.
# --pin puts every server on CPU 0 and the load generator on CPU 1.
# Usage: bench/floor.sh [--quick] [--rounds N] [--pin]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

parse_options "usage: $0 [--quick] [--rounds N] [--pin]" "$@"
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] && command -v nginx >/dev/null ||
    { echo "nchan is needed: apt-get install nginx libnginx-mod-nchan" >&2; exit 2; }
# 10,000 subscribers need as many descriptors in the server and the generator.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((BIG + 1000)) ] || { echo "ulimit -n must exceed $BIG + 1000" >&2; exit 2; }
RUN=$RANDOM
WORK=$(mktemp -d)
# Every server is stopped after its measurement: no job may be left to kill.
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$WORK"' EXIT
cargo build -q --release -p comet-loadgen
(cd bench/axum-user && CARGO_TARGET_DIR=../../target/axum-user cargo build -q --release)
(cd bench/floor && CARGO_TARGET_DIR=../../target/floor cargo build -q --release)
LOADGEN=(${CLIENT_CPU[@]+"${CLIENT_CPU[@]}"} target/release/comet-loadgen)
PIN=(${SERVER_CPU[@]+"${SERVER_CPU[@]}"})

declare -A SUB POLL PUB DIALECT URL
SUB[quick]="http://127.0.0.1:3000/events?channel={c}"; POLL[quick]="http://127.0.0.1:3000/poll?channel={c}"
PUB[quick]="http://127.0.0.1:3000/say/{c}";            DIALECT[quick]=comet; URL[quick]=http://127.0.0.1:3000/
for floor in tasks direct; do
    SUB[$floor]="http://127.0.0.1:3300/sse/{c}"; POLL[$floor]="http://127.0.0.1:3300/poll/{c}"
    PUB[$floor]="http://127.0.0.1:3300/pub/{c}"; DIALECT[$floor]=raw; URL[$floor]=http://127.0.0.1:3300/
done
POLL[direct]="" # its long polls are the tasks' own
SUB[nchan]="http://127.0.0.1:8090/sub/{c}"; POLL[nchan]="http://127.0.0.1:8090/sub/{c}"
PUB[nchan]="http://127.0.0.1:8090/pub/{c}"; DIALECT[nchan]=raw; URL[nchan]=http://127.0.0.1:8090/

# start SERVER: a fresh process, on a port nothing else holds (a server
# left by an earlier, interrupted run would answer in its place); sets
# SERVER (the job to stop) and PID (the process whose CPU is counted).
start() {
    if curl -s -m 1 -o /dev/null "${URL[$1]}"; then
        fail "something already answers at ${URL[$1]}: stop it first"
    fi
    case $1 in
        quick) ${PIN[@]+"${PIN[@]}"} target/axum-user/release/quickstart >/dev/null 2>&1 & SERVER=$! ;;
        tasks | direct) ${PIN[@]+"${PIN[@]}"} target/floor/release/floor "$1" >/dev/null 2>&1 & SERVER=$! ;;
        nchan) ${PIN[@]+"${PIN[@]}"} nginx -p "$WORK/" -c "$PWD/bench/nchan.conf" >/dev/null 2>&1 & SERVER=$! ;;
    esac
    PID=$SERVER
    wait_for curl -s -o /dev/null "${URL[$1]}"
    # nchan's CPU is its worker's.
    if [ "$1" = nchan ]; then PID=$(pgrep -P "$SERVER" | head -1); fi
    kill -0 "$PID" || fail "$1 did not start"
}

# fail MESSAGE: ends the whole run (`run` is in a subshell, whose own exit
# would only leave that measurement empty).
fail() {
    echo "$*" >&2
    kill -TERM $$
    exit 1
}

# run SERVER SCENARIO ARGS...: the JSON report line (or nothing). Runs in a
# subshell (`$(run ...)`), so it stops its own server however it ends.
run() {
    local server=$1 scenario=$2; shift 2
    local channel="f$RUN$server$RANDOM" sub=${SUB[$server]} pub=${PUB[$server]} poll=${POLL[$server]}
    sub=${sub//\{c\}/$channel}; pub=${pub//\{c\}/$channel}; poll=${poll//\{c\}/$channel}
    [ "$scenario" = follow ] && [ -z "$poll" ] && return
    start "$server"
    trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT INT TERM
    case $scenario in
        follow) "${LOADGEN[@]}" follow --sub-url "$poll" --pub-url "$pub" --dialect "${DIALECT[$server]}" --pid "$PID" --json "$@" ;;
        *) "${LOADGEN[@]}" "$scenario" --sub-url "$sub" --pub-url "$pub" --pid "$PID" --json "$@" ;;
    esac 2>/dev/null || true
}

SERVERS="quick tasks direct nchan"
declare -A RESULT
for round in $(seq "$ROUNDS"); do
    measure_round fanbig "$round" fanout --subscribers "$BIG" --messages 3 --rate 1
    measure_round follow "$round" follow --subscribers 1000 --messages 50 --rate 20
done

# show LABEL KEY METRIC: one row, and each server over nchan.
show() {
    local label=$1 key=$2 metric=$3 values=() ratios=()
    for server in $SERVERS; do values+=("$(median "$key" "$server" "$metric")"); done
    for value in "${values[@]:0:3}"; do ratios+=("$(ratio "$value" "${values[3]}" || true)"); done
    printf '%-34s %10s %10s %10s %10s %8s %8s %8s\n' "$label" "${values[@]/#/}" "${ratios[@]/#/}"
}
printf '\nmedians of %s rounds%s\n' "$ROUNDS" "${SERVER_CPU[0]:+, pinned}"
printf '%-34s %10s %10s %10s %10s %8s %8s %8s\n' scenario quickstart floor direct nchan quick/n floor/n direct/n
show "fanout $BIG SSE: last ms"           fanbig last_ms
show "fanout $BIG SSE: server CPU ms/msg" fanbig server_cpu_ms_per_msg
show "fanout $BIG SSE: lost"              fanbig lost
show "1000 long-poll x 50: median ms"     follow median_all_ms
show "1000 long-poll x 50: CPU ms/msg"    follow server_cpu_ms_per_msg
show "1000 long-poll x 50: lost"          follow lost
