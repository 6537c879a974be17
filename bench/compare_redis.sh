#!/usr/bin/env bash
# Two nodes on one Redis, comet beside nginx + nchan, in one run: two chat
# demo nodes (release build, `--redis`) on one fresh redis-server, and two
# nginx + nchan nodes (one worker each, `bench/nchan_redis.conf`) on another
# fresh redis-server, so the two systems share no keys and neither Redis
# serves the other's load. Both redis-servers run without persistence on free
# loopback ports. Subscribers are split half and half over a system's two
# nodes and publishes go through both nodes in turn (comet-loadgen's repeated
# --sub-url and --pub-url), so every delivery to half the subscribers crosses
# Redis. Before timing anything the script checks, on both systems, that a
# message published on one node reaches a subscriber of the other, both ways.
# Prints one table of medians over rounds, the systems taking turns.
# --pin puts every server (nodes and redis-servers) on CPU 0 and the load
# generator on CPU 1.
# Usage: bench/compare_redis.sh [--quick] [--rounds N] [--pin]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

parse_options "usage: $0 [--quick] [--rounds N] [--pin]" "$@"
need_redis_and_nchan
prepare chat

# The processes whose CPU time each system's figures count.
declare -A NODE_PIDS REDIS_PIDS
start_redis 6400; COMET_REDIS=$PORT; REDIS_PIDS[comet]=$REDIS_PID
start_redis 6500; NCHAN_REDIS=$PORT; REDIS_PIDS[nchan]=$REDIS_PID

# Two comet nodes on COMET_REDIS.
declare -A NODE
for n in 1 2; do
    free_port 3400; NODE[comet$n]=$PORT
    RUST_LOG=warn ${PIN[@]+"${PIN[@]}"} target/release/examples/chat \
        --addr "127.0.0.1:${NODE[comet$n]}" --redis "redis://127.0.0.1:$COMET_REDIS" \
        >/dev/null 2>"$WORK/comet$n.log" &
    NODE_PIDS[comet]+="$! "
done
# Two nginx + nchan nodes on NCHAN_REDIS, each its own nginx with one worker.
NGINX_MASTERS=""
for n in 1 2; do
    free_port 8400; NODE[nchan$n]=$PORT
    mkdir -p "$WORK/nchan$n"
    sed -e "s/@PORT@/${NODE[nchan$n]}/" -e "s|@REDIS@|redis://127.0.0.1:$NCHAN_REDIS|" \
        bench/nchan_redis.conf >"$WORK/nchan$n/nginx.conf"
    ${PIN[@]+"${PIN[@]}"} nginx -p "$WORK/nchan$n/" -c "$WORK/nchan$n/nginx.conf" \
        >/dev/null 2>"$WORK/nchan$n.log" &
    NGINX_MASTERS+="$! "
done
for n in 1 2; do
    wait_for curl -sf -m 0.5 -o /dev/null "http://127.0.0.1:${NODE[comet$n]}/"
    wait_for curl -s -m 0.5 -o /dev/null "http://127.0.0.1:${NODE[nchan$n]}/"
done
# nchan's work is its workers'.
for master in $NGINX_MASTERS; do NODE_PIDS[nchan]+="$(pgrep -P "$master" | tr '\n' ' ')"; done

# url SYSTEM NODE KIND CHANNEL: KIND is sub (SSE), poll or pub.
url() {
    local base="http://127.0.0.1:${NODE[$1$2]}"
    case $1/$3 in
        comet/sub) echo "$base/comet/sse?channel=$4" ;;
        comet/poll) echo "$base/comet/poll?channel=$4" ;;
        comet/pub) echo "$base/comet/publish/$4" ;;
        nchan/sub | nchan/poll) echo "$base/sub/$4" ;;
        nchan/pub) echo "$base/pub/$4" ;;
    esac
}

# crosses SYSTEM FROM TO: a message published on node FROM reaches an SSE
# subscriber of node TO.
crosses() {
    local system=$1 from=$2 to=$3 channel="cross${RUN}$1$2$3" out="$WORK/cross-$1$2$3"
    curl -sN -m 3 -H 'Accept: text/event-stream' "$(url "$system" "$to" sub "$channel")" >"$out" &
    local reader=$!
    sleep 0.5
    curl -sf -m 2 -o /dev/null -H 'Content-Type: application/json' \
        --data "{\"crossed\":\"$system $from to $to\"}" "$(url "$system" "$from" pub "$channel")"
    for _ in $(seq 25); do grep -q '"crossed"' "$out" && break; sleep 0.1; done
    kill "$reader" 2>/dev/null || true; wait "$reader" 2>/dev/null || true
    if grep -q '"crossed"' "$out"; then
        echo "$system: node $from -> node $to crossed" >&2
    else
        echo "$system: a message published on node $from did not reach node $to" >&2
        exit 1
    fi
}
for system in comet nchan; do crosses "$system" 1 2; crosses "$system" 2 1; done
# And the channels are Redis's, not each node's memory.
for port in "$COMET_REDIS" "$NCHAN_REDIS"; do
    [ "$(redis-cli -p "$port" dbsize)" -gt 0 ] ||
        { echo "redis on $port holds no keys: the nodes do not use it" >&2; exit 1; }
done

# run SYSTEM SCENARIO ARGS...: the loadgen's JSON line (or nothing), with the
# subscribers split over both nodes and publishes through both in turn, and
# the CPU the nodes and the redis-server used per publish (µs).
run() {
    local system=$1 nodes redis report
    # shellcheck disable=SC2086
    nodes=$(cpu_ticks ${NODE_PIDS[$system]}); redis=$(cpu_ticks "${REDIS_PIDS[$system]}")
    report=$(load "$@")
    [ -z "$report" ] && return
    # shellcheck disable=SC2086
    nodes=$(($(cpu_ticks ${NODE_PIDS[$system]}) - nodes)); redis=$(($(cpu_ticks "${REDIS_PIDS[$system]}") - redis))
    awk -v r="$report" -v n="$nodes" -v s="$redis" -v hz="$(getconf CLK_TCK)" -v p="$(echo "$report" | field published)" \
        'BEGIN { sub(/}$/, "", r); if (p == 0) p = 1; printf "%s,\"node_us_per_pub\":%.1f,\"redis_us_per_pub\":%.1f}\n", r, n * 1e6 / hz / p, s * 1e6 / hz / p }'
}

# load SYSTEM SCENARIO ARGS...: runs the load generator.
load() {
    local system=$1 scenario=$2 kind=sub extra=(); shift 2
    local channel="r${RUN}${system}${scenario}$RANDOM"
    if [ "$scenario" = follow ]; then
        kind=poll; [ "$system" = nchan ] && extra=(--dialect raw)
    fi
    "${LOADGEN[@]}" "${scenario%%-*}" \
        --sub-url "$(url "$system" 1 "$kind" "$channel")" --sub-url "$(url "$system" 2 "$kind" "$channel")" \
        --pub-url "$(url "$system" 1 pub "$channel")" --pub-url "$(url "$system" 2 pub "$channel")" \
        ${extra[@]+"${extra[@]}"} --json "$@" 2>>"$WORK/loadgen.log" || true
}

declare -A RESULT
# measure KEY SCENARIO ARGS...: ROUNDS rounds, the systems taking turns.
measure() {
    local key=$1; shift
    for round in $(seq "$ROUNDS"); do
        for system in comet nchan; do
            echo "... $key on $system (round $round)" >&2
            RESULT[$key,$system,$round]=$(run "$system" "$@")
            echo "    ${RESULT[$key,$system,$round]}" >&2
        done
    done
}
# show LABEL KEY METRIC: one table row of medians, and comet over nchan.
show() {
    local comet nchan
    comet=$(median "$2" comet "$3"); nchan=$(median "$2" nchan "$3")
    printf '%-46s %12s %12s %8s\n' "$1" "$(rounded "$comet")" "$(rounded "$nchan")" \
        "$(ratio "$comet" "$nchan" || echo -)"
}
# rounded X: X to one decimal below 1,000 (whole numbers as they are), to a
# whole number above.
rounded() {
    [ -z "$1" ] && { echo -; return; }
    awk -v x="$1" 'BEGIN { printf (x < 1000 && x != int(x) ? "%.1f" : "%.0f"), x }'
}
# redis_cpu PORT: the CPU seconds the redis-server on PORT has used.
redis_cpu() {
    redis-cli -p "$1" info cpu | tr -d '\r' |
        awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.1f", s }'
}
# redis_scripts PORT: script calls (EVALSHA) on PORT, and Redis's µs per call.
redis_scripts() {
    redis-cli -p "$1" info commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),usec=[0-9]*,usec_per_call=\([0-9.]*\).*/\1 calls, \2 us each/p'
}

measure hop     fanout --subscribers 2 --messages 20 --rate 20
measure fanout  fanout --subscribers "$BIG" --messages 1
measure through throughput --subscribers 100 --duration 5 --publishers 8
measure follow  follow --subscribers 1000 --messages 50 --rate 20
measure publish throughput --subscribers 2 --duration 5 --publishers 16

printf '\nmedians of %s rounds; two nodes each, subscribers split, publishes through both\n' "$ROUNDS"
printf '%-46s %12s %12s %8s\n' "scenario" "comet" "nchan" "c/n"
show "2 SSE (1 a node) x 20: median ms"             hop     median_all_ms
show "fan-out $BIG SSE: last ms"                    fanout  last_ms
show "fan-out $BIG SSE: lost"                       fanout  lost
show "fan-out $BIG SSE: duplicated"                 fanout  duplicated
show "100 SSE, 5 s: deliveries/s"                   through deliveries_per_s
show "100 SSE, 5 s: lost"                           through lost
show "100 SSE, 5 s: duplicated"                     through duplicated
show "1000 long polls x 50: last ms"                follow  last_ms
show "1000 long polls x 50: median over msgs, ms"   follow  median_all_ms
show "1000 long polls x 50: lost"                   follow  lost
show "1000 long polls x 50: duplicated"             follow  duplicated
show "16 publishers, 5 s: publishes/s"              publish publishes_per_s
show "16 publishers, 5 s: lost"                     publish lost
show "16 publishers, 5 s: duplicated"               publish duplicated
show "16 publishers: nodes' CPU us per publish"      publish node_us_per_pub
show "16 publishers: redis CPU us per publish"       publish redis_us_per_pub
show "100 SSE: nodes' CPU us per publish"            through node_us_per_pub
show "100 SSE: redis CPU us per publish"             through redis_us_per_pub
printf 'CPU seconds each redis-server used over the whole run: comet %s, nchan %s\n' \
    "$(redis_cpu "$COMET_REDIS")" "$(redis_cpu "$NCHAN_REDIS")"
printf 'scripts (EVALSHA) each redis-server ran: comet %s; nchan %s\n' \
    "$(redis_scripts "$COMET_REDIS")" "$(redis_scripts "$NCHAN_REDIS")"
