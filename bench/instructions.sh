#!/usr/bin/env bash
# Counts user-space instructions per proxied request, for portcullis and for nginx as the
# proxy, with valgrind's callgrind. Unlike wall-clock figures this does not move with the
# machine's load: the same binary, config and request mix give the same count (±1%), so a
# small change in per-request cost can be seen. Kernel time (the sockets) is not counted;
# bench/run.sh measures that side.
#
#   bash bench/instructions.sh            # builds release first
#   bash bench/instructions.sh --no-build
#   SCENARIO=ratelimit bash bench/instructions.sh --no-build
#                         # nginx runs bench/nginx/proxy-SCENARIO.conf when it exists
#   KEEP_CG=/tmp/cg bash bench/instructions.sh --no-build   # keep the callgrind outputs
#                                                            # (callgrind_annotate FILE)
#
# Loopback only; everything started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
HOST=127.0.0.1
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-8}
SCENARIO=${SCENARIO:-baseline}
BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}

die() { echo "instructions: $*" >&2; exit 1; }
for tool in valgrind nginx wrk curl; do
  command -v "$tool" >/dev/null || {
    apt-get update -qq && apt-get install -y -qq valgrind nginx-light wrk curl >/dev/null
    break
  }
done
if [[ ${1:-} != --no-build ]]; then
  (cd "$ROOT" && cargo build --release -p portcullis)
fi
[[ -x $BIN ]] || die "no gateway binary at $BIN"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -f $WORK/origin/nginx.pid ]]; then
    kill "$(cat "$WORK/origin/nginx.pid")" 2>/dev/null || true
  fi
  sleep 0.5
  if [[ -n ${KEEP_CG:-} ]]; then
    mkdir -p "$KEEP_CG" && cp "$WORK"/*.cg "$KEEP_CG"/ 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (: <>"/dev/tcp/$HOST/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  die "no free port"
}
wait_port() {
  for _ in $(seq 300); do
    (: <>"/dev/tcp/$HOST/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on $HOST:$1"
}
render() { # template dest NAME=VALUE...
  local text kv
  text=$(<"$1")
  for kv in "${@:3}"; do text=${text//"\${${kv%%=*}}"/${kv#*=}}; done
  printf '%s\n' "$text" >"$2"
}
# Instructions of the finished callgrind run $1 divided by the requests wrk reported in $2.
per_request() {
  local ir req
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$1")
  req=$(awk '/requests in/ {print $1; exit}' "$2")
  [[ -n $ir && -n $req && $req -gt 0 ]] || die "no figures in $1 / $2"
  echo "$ir $req $((ir / req))"
}

# The origin: nginx, natively (not measured).
ORIGIN_PORT=$(free_port)
mkdir -p "$WORK/origin/tmp"
render "$BENCH/nginx/origin.conf" "$WORK/origin/nginx.conf" PREFIX="$WORK/origin" LISTEN_ADDR="$HOST:$ORIGIN_PORT"
nginx -p "$WORK/origin" -c "$WORK/origin/nginx.conf" -g 'daemon on;'
wait_port "$ORIGIN_PORT"

measure() { # name port command...
  local name=$1 port=$2
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.cg" "$@" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$port"
  curl -fsS -o /dev/null "http://$HOST:$port/" || die "$name does not answer"
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "http://$HOST:$port/" >"$WORK/$name.wrk"
  kill -INT "$pid" 2>/dev/null || true
  kill -QUIT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  read -r ir req per <<<"$(per_request "$WORK/$name.cg" "$WORK/$name.wrk")"
  printf '| %s | %s | %s | %s |\n' "$name" "$req" "$ir" "$per"
  PER[$name]=$per
}
declare -A PER

echo "| proxy | requests | instructions | instructions/request |"
echo "|---|---:|---:|---:|"

NGINX_PORT=$(free_port)
mkdir -p "$WORK/px/tmp"
NGINX_CONF=$BENCH/nginx/proxy-$SCENARIO.conf
[[ -f $NGINX_CONF ]] || NGINX_CONF=$BENCH/nginx/proxy.conf
render "$NGINX_CONF" "$WORK/px/nginx.conf" PREFIX="$WORK/px" LISTEN_ADDR="$HOST:$NGINX_PORT" ORIGIN_ADDR="$HOST:$ORIGIN_PORT"
measure nginx "$NGINX_PORT" nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" -g 'daemon off; master_process off;'

GW_PORT=$(free_port)
SCEN_FILE=$BENCH/configs/$SCENARIO.yaml
[[ -f $SCEN_FILE ]] || die "no scenario $SCEN_FILE"
render "$SCEN_FILE" "$WORK/gw.yaml" LISTEN_ADDR="$HOST:$GW_PORT" ORIGIN_ADDR="$HOST:$ORIGIN_PORT" ADMIN_ADDR="$HOST:$(free_port)" WORK_DIR="$WORK"
RUST_LOG=warn measure portcullis "$GW_PORT" "$BIN" run --config "$WORK/gw.yaml"

awk -v p="${PER[portcullis]}" -v n="${PER[nginx]}" 'BEGIN { printf "\nportcullis / nginx instructions per request: %.2f\n", p / n }'
