#!/usr/bin/env bash
# comet over HTTP/2 beside comet over HTTP/1.1 and nginx + nchan over HTTP/2,
# in one run, on loopback. Columns:
#   h2x100   the chat demo with --http2, 100 SSE streams per h2c connection
#            (comet-loadgen --http2's default: 10,000 streams on 100)
#   h2x10k   the same demo, one stream per connection (10,000 connections)
#   h1       the chat demo without --http2 (examples/common/http1.rs), one
#            HTTP/1.1 connection per subscriber
#   h1auto   HTTP/1.1 to the --http2 demo (hyper-util's HTTP/1-or-2 builder)
#   nchan    nginx + nchan, bench/nchan.conf with `listen ... http2` (h2c by
#            prior knowledge), 100 streams per connection
# Publishes go over the same protocol as the subscribers. Idle memory is the
# server's RSS delta over streams, each round on fresh processes; the
# fan-out is the median over 3 messages (1 per second) of the time until the
# last of the streams has one; throughput is 100 streams under publishes
# from 8 connections for 5 s. Prints medians over rounds, the servers taking
# turns. --pin puts the servers on CPU 0 and the generator on CPU 1.
# Usage: bench/compare_http2.sh [--quick] [--rounds N] [--pin]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

parse_options "usage: $0 [--quick] [--rounds N] [--pin]" "$@"
command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] ||
    { echo "nginx + nchan are needed: apt-get install nginx libnginx-mod-nchan" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((BIG + 1000)) ] || { echo "ulimit -n must exceed $BIG + 1000" >&2; exit 2; }
prepare chat
H1=127.0.0.1:3410 H2=127.0.0.1:3411 NCHAN=127.0.0.1:8491
# nchan over h2c: bench/nchan.conf on its own port, `listen ... http2`.
sed "s/listen 127.0.0.1:8090;/listen $NCHAN http2;/" bench/nchan.conf >"$WORK/nchan.conf"

# (Re)starts every server, so that each memory figure is a fresh process's.
declare -A PIDS
H1_PID="" H2_PID="" NGINX_MASTER=""
restart() {
    for pid in $H1_PID $H2_PID $NGINX_MASTER; do kill "$pid" 2>/dev/null || true; done
    for pid in $H1_PID $H2_PID $NGINX_MASTER; do wait "$pid" 2>/dev/null || true; done
    RUST_LOG=warn ${PIN[@]+"${PIN[@]}"} target/release/examples/chat --addr "$H1" >/dev/null 2>&1 &
    H1_PID=$!
    RUST_LOG=warn ${PIN[@]+"${PIN[@]}"} target/release/examples/chat --addr "$H2" --http2 >/dev/null 2>&1 &
    H2_PID=$!
    ${PIN[@]+"${PIN[@]}"} nginx -p "$WORK/" -c "$WORK/nchan.conf" >/dev/null 2>&1 &
    NGINX_MASTER=$!
    local up
    for check in "http://$H1/" "--http2-prior-knowledge http://$H2/" \
        "--http2-prior-knowledge http://$NCHAN/"; do
        up=""
        for _ in $(seq 100); do
            # shellcheck disable=SC2086 # check holds curl's options
            curl -s -m 0.2 -o /dev/null $check && { up=1; break; }
            sleep 0.1
        done
        [ -n "$up" ] || { echo "no server at $check" >&2; exit 1; }
    done
    # nchan's memory is its worker's: the one process that holds the connections.
    PIDS[h2x100]=$H2_PID; PIDS[h2x10k]=$H2_PID; PIDS[h1]=$H1_PID; PIDS[h1auto]=$H2_PID
    PIDS[nchan]=$(pgrep -P "$NGINX_MASTER" | head -1)
}
restart

# Both servers must really speak HTTP/2 here, SSE included.
for url in "http://$H2/comet/sse?channel=check" "http://$NCHAN/sub/check"; do
    version=$(curl -s --http2-prior-knowledge -m 1 -H 'Accept: text/event-stream' \
        -o /dev/null -w '%{http_version} %{http_code}' "$url" || true)
    [[ $version == "2 200" ]] || { echo "$url over h2c answered: $version" >&2; exit 1; }
done

# run SERVER SCENARIO ARGS... -> prints the JSON report line (or nothing)
run() {
    local server=$1 scenario=$2; shift 2
    local channel="h${RUN}${server}${scenario}$RANDOM" sub pub proto=()
    case $server in
        nchan) sub="http://$NCHAN/sub/$channel" pub="http://$NCHAN/pub/$channel" ;;
        h1) sub="http://$H1/comet/sse?channel=$channel" pub="http://$H1/comet/publish/$channel" ;;
        *) sub="http://$H2/comet/sse?channel=$channel" pub="http://$H2/comet/publish/$channel" ;;
    esac
    case $server in
        h2x100 | nchan) proto=(--http2) ;; # one connection per 100 streams
        h2x10k) proto=(--http2 --connections 1000000) ;; # one per stream
    esac
    if [ "$scenario" = idle ]; then
        "${LOADGEN[@]}" idle --sub-url "$sub" --pid "${PIDS[$server]}" "${proto[@]}" --json "$@"
    else
        "${LOADGEN[@]}" "$scenario" --sub-url "$sub" --pub-url "$pub" "${proto[@]}" --json "$@"
    fi 2>"$WORK/last.err" | tee -a "$WORK/reports" ||
        echo "$server $scenario failed: $(tail -1 "$WORK/last.err")" >&2
}

SERVERS="h2x100 h2x10k h1 h1auto nchan"
declare -A RESULT

for round in $(seq "$ROUNDS"); do
    # Memory on fresh processes, one server loaded at a time.
    for server in $SERVERS; do
        restart
        echo "... idle on $server (round $round)" >&2
        RESULT[idle,$server,$round]=$(run "$server" idle --subscribers "$BIG")
    done
    restart
    measure_round fan "$round" fanout --subscribers "$BIG" --messages 3 --rate 1
    measure_round through "$round" throughput --subscribers 100 --duration 5 --publishers 8
done

# show LABEL KEY METRIC: one table row.
show() {
    local label=$1 key=$2 metric=$3
    printf '%-40s' "$label"
    for server in $SERVERS; do
        printf ' %10s' "$(median "$key" "$server" "$metric" | awk '{ printf($1 < 100 ? "%.1f" : "%.0f", $1) }')"
    done
    echo
}
printf '\nmedians of %s rounds%s\n' "$ROUNDS" "${SERVER_CPU[*]:+ (pinned)}"
printf '%-40s' scenario; for server in $SERVERS; do printf ' %10s' "$server"; done; echo
show "idle SSE $BIG: server bytes/stream"       idle    rss_per_conn
show "idle SSE $BIG: connected"                 idle    connected
show "fan-out $BIG SSE: median ms to last"      fan     median_all_ms
show "fan-out $BIG SSE: last msg, ms to last"   fan     last_ms
show "fan-out $BIG SSE: lost"                   fan     lost
show "fan-out $BIG SSE: duplicated"             fan     duplicated
show "100 SSE, 5 s: deliveries/s"               through deliveries_per_s
show "100 SSE, 5 s: lost"                       through lost
show "100 SSE, 5 s: duplicated"                 through duplicated
# Every report, for a closer look (COMPARE_HTTP2_REPORTS=FILE keeps them).
[ -n "${COMPARE_HTTP2_REPORTS:-}" ] && cp "$WORK/reports" "$COMPARE_HTTP2_REPORTS"
