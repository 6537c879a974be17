#!/usr/bin/env bash
# Runs each load scenario against comet as a user builds it (the README's
# quickstart, examples/axum.rs, in bench/axum-user: default features and
# `serve`, `#[tokio::main]`, the system allocator), the chat demo built for
# benchmarks (`--features bench-runtime`: jemalloc and bench/runtime.rs's
# tokio settings, on hyper: examples/common/http1.rs), the hand-written axum
# + broadcast recipe, and nginx + nchan when installed
# (apt-get install nginx libnginx-mod-nchan), all on loopback, in one run, and
# prints one table of medians over interleaved rounds (figures on a shared
# 2-core machine vary by tens of percent from run to run).
# --pin puts every server on CPU 0 and the load generator on CPU 1 (taskset),
# so that the generator does not take the servers' core; each server then
# runs on one core, as nchan's one worker does.
# Usage: bench/compare.sh [--quick] [--rounds N] [--pin]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

parse_options "usage: $0 [--quick] [--rounds N] [--pin]" "$@"
prepare chat broadcast_recipe
(cd bench/axum-user && CARGO_TARGET_DIR=../../target/axum-user cargo build -q --release)

# (Re)starts every server, so each memory measurement starts from a fresh
# process: one that held and freed connections before would reuse that memory.
COMET_PID=""; QUICK_PID=""; RECIPE_PID=""; NCHAN_PID=""; NGINX_MASTER=""
restart() {
    for pid in $COMET_PID $QUICK_PID $RECIPE_PID $NGINX_MASTER; do kill "$pid" 2>/dev/null || true; done
    for pid in $COMET_PID $QUICK_PID $RECIPE_PID $NGINX_MASTER; do wait "$pid" 2>/dev/null || true; done
    local pin=(${SERVER_CPU[@]+"${SERVER_CPU[@]}"})
    RUST_LOG=warn COMET_ADDR=127.0.0.1:3100 ${pin[@]+"${pin[@]}"} target/release/examples/chat >/dev/null 2>&1 &
    COMET_PID=$!
    # The quickstart listens on 127.0.0.1:3000, as the README has it.
    ${pin[@]+"${pin[@]}"} target/axum-user/release/quickstart >/dev/null 2>&1 &
    QUICK_PID=$!
    COMET_ADDR=127.0.0.1:3200 ${pin[@]+"${pin[@]}"} target/release/examples/broadcast_recipe >/dev/null 2>&1 &
    RECIPE_PID=$!
    if [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] && command -v nginx >/dev/null; then
        ${pin[@]+"${pin[@]}"} nginx -p "$WORK/" -c "$PWD/bench/nchan.conf" >/dev/null 2>&1 &
        NGINX_MASTER=$!
    fi
    # Up once it answers anything (a 404 too; /hold holds its answer open,
    # so curl times out there with the status line already read).
    for url in http://127.0.0.1:3100/ http://127.0.0.1:3000/ http://127.0.0.1:3200/hold ${NGINX_MASTER:+http://127.0.0.1:8090/}; do
        for _ in $(seq 100); do
            [ "$(curl -s -m 0.2 -o /dev/null -w '%{http_code}' "$url")" != 000 ] && break
            sleep 0.1
        done
    done
    # nchan's memory is its worker's: the one process that holds the connections.
    [ -n "$NGINX_MASTER" ] && NCHAN_PID=$(pgrep -P "$NGINX_MASTER" | head -1)
    PIDS[comet]=$COMET_PID; PIDS[quick]=$QUICK_PID; PIDS[recipe]=$RECIPE_PID; PIDS[hold]=$RECIPE_PID; PIDS[nchan]=$NCHAN_PID
}
declare -A PIDS
restart
[ -z "$NCHAN_PID" ] && echo "nginx + nchan not installed: its column stays empty" >&2

# url templates per server: sub (SSE/stream), poll, pub; {c} is the channel.
declare -A SUB POLL PUB DIALECT
SUB[comet]="http://127.0.0.1:3100/comet/sse?channel={c}";   POLL[comet]="http://127.0.0.1:3100/comet/poll?channel={c}"
PUB[comet]="http://127.0.0.1:3100/comet/publish/{c}";       DIALECT[comet]=comet
SUB[quick]="http://127.0.0.1:3000/events?channel={c}";      POLL[quick]="http://127.0.0.1:3000/poll?channel={c}"
PUB[quick]="http://127.0.0.1:3000/say/{c}";                 DIALECT[quick]=comet
SUB[recipe]="http://127.0.0.1:3200/sse?channel={c}";        POLL[recipe]=""
PUB[recipe]="http://127.0.0.1:3200/publish/{c}";            DIALECT[recipe]=raw
SUB[hold]="http://127.0.0.1:3200/hold"
SUB[nchan]="http://127.0.0.1:8090/sub/{c}";                 POLL[nchan]="http://127.0.0.1:8090/sub/{c}"
PUB[nchan]="http://127.0.0.1:8090/pub/{c}";                 DIALECT[nchan]=raw

# run SERVER SCENARIO ARGS... -> prints the JSON report line (or nothing)
run() {
    local server=$1 scenario=$2; shift 2
    local channel="b${RUN}${server}${scenario}$RANDOM"
    local sub=${SUB[$server]//\{c\}/$channel} pub=${PUB[$server]:-} poll=${POLL[$server]:-}
    pub=${pub//\{c\}/$channel}; poll=${poll//\{c\}/$channel}
    case $scenario in
        idle*) "${LOADGEN[@]}" idle --sub-url "$sub" --pid "${PIDS[$server]}" --json "$@" ;;
        follow) [ -n "$poll" ] && "${LOADGEN[@]}" follow --sub-url "$poll" --pub-url "$pub" --dialect "${DIALECT[$server]}" --pid "${PIDS[$server]}" --json "$@" ;;
        *) "${LOADGEN[@]}" "${scenario%%-*}" --sub-url "$sub" --pub-url "$pub" --pid "${PIDS[$server]}" --json "$@" ;;
    esac 2>/dev/null || true
}

SERVERS="quick comet recipe"; [ -n "$NCHAN_PID" ] && SERVERS="quick comet recipe nchan"
declare -A RESULT
# measure KEY SCENARIO ARGS...: runs the scenario on every server, ROUNDS
# times, the servers taking turns so that drift hits them alike.
measure() {
    local key=$1; shift
    for round in $(seq "$ROUNDS"); do
        measure_round "$key" "$round" "$@"
    done
}
# show LABEL KEY METRIC: one table row, with each comet column over nchan.
show() {
    local label=$1 key=$2 metric=$3 values=()
    for server in quick comet recipe nchan; do
        values+=("$(median "$key" "$server" "$metric")")
    done
    printf '%-36s %12s %12s %12s %12s %8s %8s\n' "$label" "${values[0]:--}" "${values[1]:--}" \
        "${values[2]:--}" "${values[3]:--}" "$(ratio "${values[0]}" "${values[3]}" || true)" \
        "$(ratio "${values[1]}" "${values[3]}" || true)"
}

# Memory: every round on fresh processes, as memory figures move by about
# 10% from one process to the next.
for round in $(seq "$ROUNDS"); do
    restart; measure_round idle1k  "$round" idle --subscribers 1000
    restart; measure_round idlebig "$round" idle --subscribers "$BIG"
done
restart; HOLD=$(run hold idle --subscribers "$BIG" | field rss_per_conn)
restart
measure fan1k    fanout --subscribers 1000 --messages 3 --rate 2
measure fanbig   fanout --subscribers "$BIG" --messages 3 --rate 1
measure through  throughput --subscribers 100 --duration 5 --publishers 8
measure follow   follow --subscribers 1000 --messages 50 --rate 20

printf '\nmedians of %s rounds (memory: each round on fresh processes)\n' "$ROUNDS"
printf '%-36s %12s %12s %12s %12s %8s %8s\n' "scenario" "quickstart" "demo-tuned" "recipe" "nchan" "quick/n" "tuned/n"
show "idle SSE 1000: bytes/conn"          idle1k  rss_per_conn
show "idle SSE $BIG: bytes/conn"          idlebig rss_per_conn
echo "  (a bare held axum SSE connection, $BIG: ${HOLD:-?} bytes/conn)"
show "fanout 1000 SSE: last ms"           fan1k   last_ms
show "fanout $BIG SSE: last ms"           fanbig  last_ms
show "fanout $BIG SSE: server CPU ms/msg"  fanbig  server_cpu_ms_per_msg
show "fanout $BIG SSE: lost"              fanbig  lost
show "100 SSE, 5 s: deliveries/s"         through deliveries_per_s
show "100 SSE, 5 s: server CPU ms/publish" through server_cpu_ms_per_msg
show "100 SSE, 5 s: lost"                 through lost
show "100 SSE, 5 s: duplicated"           through duplicated
show "1000 long-poll x 50: median ms"     follow  median_all_ms
show "1000 long-poll x 50: last ms"       follow  last_ms
show "1000 long-poll x 50: CPU ms/msg"    follow  server_cpu_ms_per_msg
show "1000 long-poll x 50: lost"          follow  lost
show "1000 long-poll x 50: duplicated"    follow  duplicated
