#!/usr/bin/env bash
# What an axum user gets: the quickstart (examples/axum.rs, served by
# comet_push::serve) built as a user builds it (bench/axum-user: comet's
# default features and `serve`, outside comet's workspace), and with the old
# defaults (warp on too). Prints the feature tree's size, then the server's
# memory per held SSE connection (`comet-loadgen idle`), each build twice,
# and the chat demo's (hyper's HTTP/1.1, examples/common/http1.rs) for
# contrast.
#   bench/axum_user.sh [SUBSCRIBERS]   (default 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
export CARGO_TARGET_DIR=$PWD/target/axum-user
for build in defaults old-defaults; do
  flags=(); [ "$build" = old-defaults ] && flags=(--features old-defaults)
  (cd bench/axum-user && cargo tree -q -e features --prefix none ${flags[@]+"${flags[@]}"} | sort -u) >"/tmp/axum-user-tree-$build"
  crates=$(grep -E '^[a-z0-9_-]+ v[0-9]' "/tmp/axum-user-tree-$build" | sed 's/ (\*)//' | sort -u | wc -l)
  echo "$build: $crates crates, $(grep -c ' feature ' "/tmp/axum-user-tree-$build") features"
  (cd bench/axum-user && cargo build -q --release ${flags[@]+"${flags[@]}"})
  cp "$CARGO_TARGET_DIR/release/quickstart" "/tmp/quickstart-$build"
done
unset CARGO_TARGET_DIR
cargo build -q --release -p comet-loadgen
cargo build -q --release --example chat
idle() { # name command... ; the server must listen on 127.0.0.1:3000
  local name=$1 url=$2; shift 2
  "$@" >/dev/null 2>&1 & local pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/3000) 2>/dev/null && break; sleep 0.1; done
  printf '%-28s ' "$name"
  target/release/comet-loadgen idle --sub-url "$url" --subscribers "$n" --pid "$pid" | grep -i 'per connection'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for round in 1 2; do
  idle "quickstart, defaults" "http://127.0.0.1:3000/events?channel=news" /tmp/quickstart-defaults
  idle "quickstart, old defaults" "http://127.0.0.1:3000/events?channel=news" /tmp/quickstart-old-defaults
  idle "chat demo (hyper, http1.rs)" "http://127.0.0.1:3000/comet/sse?channel=news" target/release/examples/chat
done
