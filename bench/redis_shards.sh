#!/usr/bin/env bash
# Past one Redis, in one run, with per-process CPU accounting (2 cores
# cannot show absolute scaling, so this shows where each publish's Redis CPU
# goes instead):
#   one    the chat demo (release build) on one redis-server;
#   shards the demo on three standalone redis-servers (--redis three times);
#   cluster the demo on a Redis Cluster of three primaries (redis+cluster://);
#   nchan  nginx + nchan (one worker) on the same Redis Cluster.
# The same load on each, taking turns: 48 channels, one SSE subscriber and
# one publisher each, publishing as fast as they are answered for 5 s
# (comet-loadgen throughput, a --sub-url and --pub-url per channel; each
# message must reach its channel's one subscriber, so deliveries equal
# publishes). Reported per system: publishes a second, deliveries per
# publish, the server's CPU and every
# Redis process's CPU per publish (µs, /proc/PID/stat), the busiest Redis's
# share of that, and `cluster_stats_messages_publish*_received` summed over
# the cluster's nodes (plain PUBLISH on a cluster is copied to every node;
# SPUBLISH stays in its shard).
# Usage: bench/redis_shards.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

parse_options "usage: $0 [--rounds N]" "$@"
need_redis_and_nchan
prepare chat


declare -A REDIS_PIDS NODE_PIDS NODE
# one: a redis-server of its own.
start_redis 6600; ONE=$PORT; REDIS_PIDS[one]=$REDIS_PID
# shards: three.
SHARDS=()
for _ in 1 2 3; do
    start_redis 6610; SHARDS+=("$PORT"); REDIS_PIDS[shards]+="$REDIS_PID "
done
# cluster: three primaries, no replicas (each one's cluster bus on its
# port + 10000, below Linux's ephemeral range too).
CLUSTER=()
for n in 1 2 3; do
    start_redis 6620 --cluster-enabled yes --cluster-config-file "$WORK/cluster-node-$n.conf"
    CLUSTER+=("$PORT"); REDIS_PIDS[cluster]+="$REDIS_PID "
done
REDIS_PIDS[nchan]=${REDIS_PIDS[cluster]}
redis-cli --cluster create "${CLUSTER[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    >"$WORK/cluster-create.log" 2>&1
for port in "${CLUSTER[@]}"; do
    wait_for bash -c "redis-cli -p $port cluster info | grep -q cluster_state:ok"
done

start_comet() { # NAME REDIS-ARGS...
    local name=$1; shift
    free_port 3600; NODE[$name]=$PORT
    RUST_LOG=warn target/release/examples/chat --addr "127.0.0.1:$PORT" "$@" \
        >/dev/null 2>"$WORK/$name.log" &
    NODE_PIDS[$name]=$!
}
start_comet one --redis "redis://127.0.0.1:$ONE"
args=(); for port in "${SHARDS[@]}"; do args+=(--redis "redis://127.0.0.1:$port"); done
start_comet shards "${args[@]}"
start_comet cluster --redis "redis+cluster://127.0.0.1:${CLUSTER[0]},127.0.0.1:${CLUSTER[1]}"
# nchan on the cluster: its upstream names the cluster's nodes.
free_port 8600; NODE[nchan]=$PORT
mkdir -p "$WORK/nchan"
servers=""; for port in "${CLUSTER[@]}"; do servers+="        nchan_redis_server redis://127.0.0.1:$port;\n"; done
sed -e "s/@PORT@/${NODE[nchan]}/" -e "s|        nchan_redis_server @REDIS@;|$servers|" \
    bench/nchan_redis.conf >"$WORK/nchan/nginx.conf"
nginx -p "$WORK/nchan/" -c "$WORK/nchan/nginx.conf" >/dev/null 2>"$WORK/nchan.log" &
NGINX=$!
for name in one shards cluster; do
    wait_for curl -sf -m 0.5 -o /dev/null "http://127.0.0.1:${NODE[$name]}/"
done
wait_for curl -s -m 0.5 -o /dev/null "http://127.0.0.1:${NODE[nchan]}/"
NODE_PIDS[nchan]=$(pgrep -P "$NGINX" | tr '\n' ' ')

url() { # SYSTEM KIND CHANNEL
    local base="http://127.0.0.1:${NODE[$1]}"
    case $1/$2 in
        nchan/sub) echo "$base/sub/$3" ;;
        nchan/pub) echo "$base/pub/$3" ;;
        */sub) echo "$base/comet/sse?channel=$3" ;;
        */pub) echo "$base/comet/publish/$3" ;;
    esac
}
# A message reaches a subscriber on every system, and nchan's and the
# cluster demo's channels are in the cluster (not in a node's memory).
for system in one shards cluster nchan; do
    out="$WORK/check-$system"
    curl -sN -m 3 -H 'Accept: text/event-stream' "$(url "$system" sub "check$RUN")" >"$out" &
    reader=$!
    sleep 0.5
    curl -sf -m 2 -o /dev/null --data '{"checked":1}' "$(url "$system" pub "check$RUN")"
    for _ in $(seq 25); do grep -q '"checked"' "$out" && break; sleep 0.1; done
    kill "$reader" 2>/dev/null || true; wait "$reader" 2>/dev/null || true
    grep -q '"checked"' "$out" || { echo "$system: the message did not arrive" >&2; exit 1; }
done
keys=0; for port in "${CLUSTER[@]}"; do keys=$((keys + $(redis-cli -p "$port" dbsize))); done
[ "$keys" -gt 0 ] || { echo "the cluster holds no keys: nchan does not use it" >&2; exit 1; }

bus_received() { # the cluster's publish messages received over its bus
    local port sum=0 n
    for port in "${CLUSTER[@]}"; do
        n=$(redis-cli -p "$port" cluster info | tr -d '\r' |
            awk -F: '/^cluster_stats_messages_publish(shard)?_received:/ { s += $2 } END { print s + 0 }')
        sum=$((sum + n))
    done
    echo "$sum"
}

run() { # SYSTEM: the loadgen's JSON line, with the CPU figures added
    local system=$1 channels=() subs=() pubs=() before_node before_redis before_bus report
    for i in $(seq "$CHANNELS"); do
        channels+=("s${RUN}${system}$RANDOM$i")
    done
    for channel in "${channels[@]}"; do
        subs+=(--sub-url "$(url "$system" sub "$channel")")
        pubs+=(--pub-url "$(url "$system" pub "$channel")")
    done
    declare -a before_each=()
    for pid in ${REDIS_PIDS[$system]}; do before_each+=("$(cpu_ticks "$pid")"); done
    before_node=$(cpu_ticks ${NODE_PIDS[$system]}); before_redis=$(cpu_ticks ${REDIS_PIDS[$system]})
    before_bus=$(bus_received)
    report=$("${LOADGEN[@]}" throughput "${subs[@]}" "${pubs[@]}" --subscribers "$CHANNELS" \
        --publishers "$CHANNELS" --duration 5 --json 2>>"$WORK/loadgen.log" || true)
    [ -z "$report" ] && return
    local node redis bus busiest=0 i=0 used
    node=$(($(cpu_ticks ${NODE_PIDS[$system]}) - before_node))
    redis=$(($(cpu_ticks ${REDIS_PIDS[$system]}) - before_redis))
    bus=$(($(bus_received) - before_bus))
    for pid in ${REDIS_PIDS[$system]}; do
        used=$(($(cpu_ticks "$pid") - before_each[i])); i=$((i + 1))
        [ "$used" -gt "$busiest" ] && busiest=$used
    done
    awk -v r="$report" -v n="$node" -v s="$redis" -v b="$busiest" -v bus="$bus" -v hz="$(getconf CLK_TCK)" \
        -v p="$(echo "$report" | field published)" -v d="$(echo "$report" | field delivered)" \
        'BEGIN { sub(/}$/, "", r); if (p == 0) p = 1; if (s == 0) s = 1;
                 printf "%s,\"delivered_per_pub\":%.3f,\"node_us_per_pub\":%.1f,\"redis_us_per_pub\":%.1f,\"busiest_share\":%.2f,\"bus_per_pub\":%.2f}\n",
                        r, d / p, n * 1e6 / hz / p, s * 1e6 / hz / p, b / s, bus / p }'
}

SYSTEMS="one shards cluster nchan"
CHANNELS=48
declare -A RESULT
for round in $(seq "$ROUNDS"); do
    for system in $SYSTEMS; do
        echo "... $system (round $round)" >&2
        RESULT[publish,$system,$round]=$(run "$system")
        echo "    ${RESULT[publish,$system,$round]}" >&2
    done
done

printf '\nmedians of %s rounds; %s channels, a publisher and an SSE subscriber each, 5 s\n' "$ROUNDS" "$CHANNELS"
printf '%-40s' "figure"; for system in $SYSTEMS; do printf ' %10s' "$system"; done; echo
rounded() { # X: one decimal below 1,000, whole above
    [ -z "$1" ] && { echo -; return; }
    awk -v x="$1" 'BEGIN { printf (x < 1000 && x != int(x) ? "%.2f" : "%.0f"), x }'
}
row() { # LABEL METRIC
    printf '%-40s' "$1"
    for system in $SYSTEMS; do printf ' %10s' "$(rounded "$(median publish "$system" "$2")")"; done; echo
}
row "publishes/s" publishes_per_s
row "deliveries per publish" delivered_per_pub
row "duplicated" duplicated
row "server CPU us per publish" node_us_per_pub
row "all Redis CPU us per publish" redis_us_per_pub
row "busiest Redis's share of it" busiest_share
row "cluster bus publish messages per publish" bus_per_pub
