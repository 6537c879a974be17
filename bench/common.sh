# What bench/compare.sh, compare_redis.sh and compare_http2.sh share
# (sourced): their options, the build, rounds over servers, and medians over
# rounds of comet-loadgen's JSON reports.

# parse_options USAGE ARGS...: sets BIG (subscribers of the big fan-out),
# ROUNDS, and with --pin SERVER_CPU (CPU 0) and CLIENT_CPU (CPU 1), as
# taskset prefixes.
parse_options() {
    local usage=$1; shift
    BIG=10000; ROUNDS=3; SERVER_CPU=(); CLIENT_CPU=()
    while [ $# -gt 0 ]; do
        case $1 in
            --quick) BIG=2000; ROUNDS=1 ;;
            --rounds) ROUNDS=$2; shift ;;
            --pin) SERVER_CPU=(taskset -c 0); CLIENT_CPU=(taskset -c 1) ;;
            *) echo "$usage" >&2; exit 2 ;;
        esac
        shift
    done
}

# prepare EXAMPLE...: sets RUN (a number for channel names) and WORK (a
# directory removed on exit, when every job is killed), builds the release
# examples named and comet-loadgen, and sets LOADGEN (the generator, pinned
# with --pin) and PIN (the servers' taskset prefix, empty without --pin).
prepare() {
    RUN=$RANDOM
    WORK=$(mktemp -d)
    trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
    cargo build -q --release --features bench-runtime "${@/#/--example=}"
    cargo build -q --release -p comet-loadgen
    LOADGEN=(${CLIENT_CPU[@]+"${CLIENT_CPU[@]}"} target/release/comet-loadgen)
    PIN=(${SERVER_CPU[@]+"${SERVER_CPU[@]}"})
}

# measure_round KEY ROUND SCENARIO ARGS...: one round on every server of
# SERVERS, each `run SERVER SCENARIO ARGS...` (the caller's) into
# RESULT[KEY,SERVER,ROUND].
measure_round() {
    local key=$1 round=$2; shift 2
    for server in $SERVERS; do
        echo "... $key on $server (round $round)" >&2
        RESULT[$key,$server,$round]=$(run "$server" "$@")
    done
}

# field NAME: the value of NAME in the JSON line on stdin.
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p"; }

# median KEY SERVER METRIC: the median over rounds of METRIC in
# RESULT[KEY,SERVER,ROUND] ("" when absent).
median() {
    local key=$1 server=$2 metric=$3
    for round in $(seq "$ROUNDS"); do
        echo "${RESULT[$key,$server,$round]:-}" | field "$metric"
    done | { grep -E '^[0-9.]+$' || true; } | sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# ratio A B: A / B to two decimals, when both are numbers and B is not 0.
ratio() {
    [[ "$1" =~ ^[0-9.]+$ && "$2" =~ ^[0-9.]+$ ]] &&
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b }'
}

# free_port FROM: sets PORT to the first port from FROM (below Linux's
# ephemeral range) that nothing listens on and no server of this run took.
TAKEN=" "
free_port() {
    for PORT in $(seq "$1" $(($1 + 500))); do
        [[ $TAKEN == *" $PORT "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            TAKEN+="$PORT "; return
        fi
    done
    echo "no free port from $1" >&2; exit 1
}

# wait_for CMD...: retries CMD for up to 10 s.
wait_for() {
    for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return; sleep 0.1; done
    echo "gave up waiting for: $*" >&2; exit 1
}

# cpu_ticks PID...: the CPU time (user + system, in clock ticks) they used.
cpu_ticks() {
    local pid ticks=0 stat
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat") && stat=${stat##*) } && read -r -a stat <<<"$stat"
        ticks=$((ticks + stat[11] + stat[12]))
    done
    echo "$ticks"
}

# need_redis_and_nchan: exits unless redis-server, redis-cli, nginx with
# nchan and curl are here.
need_redis_and_nchan() {
    for tool in redis-server redis-cli nginx curl; do
        command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
    done
    [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] ||
        { echo "nchan is needed: apt-get install nginx libnginx-mod-nchan" >&2; exit 2; }
}

# start_redis FROM [ARGS...]: a redis-server without persistence (pinned
# with --pin) on a free port from FROM, with ARGS; sets PORT and REDIS_PID.
start_redis() {
    free_port "$1"; shift
    ${PIN[@]+"${PIN[@]}"} redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis-$PORT.log" "$@" >/dev/null 2>&1 &
    REDIS_PID=$!
    wait_for redis-cli -p "$PORT" ping
}
