#!/usr/bin/env bash
# Proxy benchmark: portcullis vs nginx as a reverse proxy in front of the same nginx origin,
# each pinned to one core with one worker, loaded by wrk (keep-alive) on the other core.
# See bench/README.md for what is measured and how. Usage: bash bench/run.sh [--no-build]
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bash bench/run.sh [--no-build] [--help]

  --no-build   do not run `cargo build --release -p portcullis` (use the existing binary)

Environment knobs (defaults in brackets):
  ONLY          all | nginx | portcullis | origin   which proxies to run [all]
                (the direct-to-origin baseline runs in every mode unless BASELINE=0)
  BASELINE      1 to run wrk straight against the origin for context, 0 to skip [1]
  PROXY_CPU     core the proxy under test is pinned to [1]
  LOAD_CPU      core wrk is pinned to [0]
  ORIGIN_CPU    core the origin nginx is pinned to [$LOAD_CPU]
  DURATION      measured wrk run, wrk syntax (15s, 1m) [15s]
  WARMUP        warm-up wrk run before each measured run, 0 to skip [3s]
  CONNECTIONS   wrk keep-alive connections [64]
  THREADS       wrk threads [1]
  SCENARIO      gateway config: a name under bench/configs/ (without .yaml) or a file path;
                nginx uses bench/nginx/proxy-NAME.conf when it exists, else proxy.conf [baseline]
  PORTCULLIS_BIN  gateway binary [target/release/portcullis]
  STARTUP_TIMEOUT seconds to wait for a server's port [15]
  RESULTS_DIR   where run artefacts go [bench/results]
EOF
}

die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

log() {
    printf 'bench: %s\n' "$*" >&2
}

# ---------------------------------------------------------------------------------------------
# Arguments and knobs

BUILD=1
for arg in "$@"; do
    case "$arg" in
        --no-build) BUILD=0 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

ONLY=${ONLY:-all}
BASELINE=${BASELINE:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
ORIGIN_CPU=${ORIGIN_CPU:-$LOAD_CPU}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SCENARIO=${SCENARIO:-baseline}
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-15}
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
HOST=127.0.0.1

RUN_NGINX=0
RUN_PORTCULLIS=0
case "$ONLY" in
    all) RUN_NGINX=1 RUN_PORTCULLIS=1 ;;
    nginx) RUN_NGINX=1 ;;
    portcullis) RUN_PORTCULLIS=1 ;;
    origin) BASELINE=1 ;;
    *) die "ONLY must be all, nginx, portcullis or origin (got '$ONLY')" ;;
esac

for knob in PROXY_CPU LOAD_CPU ORIGIN_CPU CONNECTIONS THREADS STARTUP_TIMEOUT; do
    [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a non-negative integer (got '${!knob}')"
done

# wrk duration ("15s", "1m", "2h", "30") to whole seconds, for bounding wrk with `timeout`.
duration_secs() {
    local d=$1
    case "$d" in
        *s) d=${d%s} ;;
        *m) d=$((${d%m} * 60)) ;;
        *h) d=$((${d%h} * 3600)) ;;
    esac
    [[ $d =~ ^[0-9]+$ ]] || die "cannot parse duration '$1' (use e.g. 5s, 1m)"
    printf '%s\n' "$d"
}
DURATION_S=$(duration_secs "$DURATION")
((DURATION_S > 0)) || die "DURATION must be positive"
WARMUP_S=$(duration_secs "$WARMUP")

if [[ -f $SCENARIO ]]; then
    SCENARIO_FILE=$SCENARIO
    SCENARIO_NAME=$(basename "$SCENARIO" .yaml)
else
    SCENARIO_FILE=$BENCH_DIR/configs/$SCENARIO.yaml
    SCENARIO_NAME=$SCENARIO
fi
NGINX_PROXY_TEMPLATE=$BENCH_DIR/nginx/proxy-$SCENARIO_NAME.conf
[[ -f $NGINX_PROXY_TEMPLATE ]] || NGINX_PROXY_TEMPLATE=$BENCH_DIR/nginx/proxy.conf
ORIGIN_TEMPLATE=$BENCH_DIR/nginx/origin.conf

# ---------------------------------------------------------------------------------------------
# Tools

ensure_tools() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v pgrep >/dev/null || missing+=(procps)
    command -v timeout >/dev/null || missing+=(coreutils)
    if ((${#missing[@]} > 0)); then
        log "installing: ${missing[*]}"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; then
            apt-get update
            DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
        fi
    fi
    # nginx-light puts the binary in /usr/sbin, which may not be on a non-root PATH.
    NGINX_BIN=$(command -v nginx || true)
    [[ -n $NGINX_BIN ]] || NGINX_BIN=/usr/sbin/nginx
    [[ -x $NGINX_BIN ]] || die "nginx not found after install"
    command -v wrk >/dev/null || die "wrk not found after install"
}

# ---------------------------------------------------------------------------------------------
# Process bookkeeping: every server started here is recorded and stopped on exit.

STARTED_PIDS=()

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Stops a server and any children it had (an nginx master's workers).
stop_server() {
    local pid=$1 children child
    children=$(pgrep -P "$pid" || true)
    stop_pid "$pid"
    for child in $children; do
        if kill -0 "$child" 2>/dev/null; then
            kill -KILL "$child" 2>/dev/null || true
        fi
    done
}

cleanup() {
    local status=$? i
    trap - EXIT
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        stop_server "${STARTED_PIDS[i]}"
    done
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Sets FREE_PORT to a loopback port nothing listens on (bind failures are still caught by
# wait_port). Not called in a subshell, so ports handed out earlier are remembered.
USED_PORTS=" "
FREE_PORT=
free_port() {
    local i port
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + RANDOM % 40000))
        [[ $USED_PORTS == *" $port "* ]] && continue
        if ! (: <>"/dev/tcp/$HOST/$port") 2>/dev/null; then
            USED_PORTS+="$port "
            FREE_PORT=$port
            return 0
        fi
    done
    die "no free port found on $HOST"
}

# Waits until something accepts on HOST:PORT, failing early if PID dies.
wait_port() {
    local port=$1 pid=$2 what=$3 logfile=$4 i tries
    tries=$((STARTUP_TIMEOUT * 10))
    for ((i = 0; i < tries; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$what exited during startup; last lines of $logfile:"
            tail -n 20 "$logfile" >&2 || true
            die "$what did not start"
        fi
        if (: <>"/dev/tcp/$HOST/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "last lines of $logfile:"
    tail -n 20 "$logfile" >&2 || true
    die "$what did not listen on $HOST:$port within ${STARTUP_TIMEOUT}s"
}

# Copies a template, replacing ${NAME} placeholders with the values given as NAME=VALUE.
render() {
    local src=$1 dst=$2 text kv name value placeholder
    shift 2
    [[ -f $src ]] || die "template not found: $src"
    text=$(<"$src")
    for kv in "$@"; do
        name=${kv%%=*}
        value=${kv#*=}
        placeholder="\${$name}"
        text=${text//"$placeholder"/$value}
    done
    local leftover='\$\{[A-Z_][A-Z0-9_]*\}'
    if [[ $text =~ $leftover ]]; then
        die "unresolved placeholder ${BASH_REMATCH[0]} in $src"
    fi
    printf '%s\n' "$text" >"$dst"
}

# Starts nginx with its own prefix dir; sets STARTED (master pid).
start_nginx() {
    local what=$1 cpu=$2 prefix=$3 conf=$4 port=$5
    mkdir -p "$prefix/tmp" "$prefix/logs"
    "$NGINX_BIN" -t -q -p "$prefix" -e "$prefix/error.log" -c "$conf" >"$prefix/nginx-t.log" 2>&1 ||
        {
            cat "$prefix/nginx-t.log" >&2
            die "$what: nginx rejected $conf"
        }
    taskset -c "$cpu" "$NGINX_BIN" -p "$prefix" -e "$prefix/error.log" -c "$conf" \
        -g 'daemon off;' >"$prefix/stdout.log" 2>&1 &
    STARTED=$!
    STARTED_PIDS+=("$STARTED")
    wait_port "$port" "$STARTED" "$what" "$prefix/error.log"
    log "$what: nginx pid $STARTED on $HOST:$port (cpu $cpu)"
}

start_portcullis() {
    local cpu=$1 conf=$2 port=$3 logfile=$4
    RUST_LOG=${RUST_LOG:-warn} taskset -c "$cpu" "$PORTCULLIS_BIN" run --config "$conf" \
        >"$logfile" 2>&1 &
    STARTED=$!
    STARTED_PIDS+=("$STARTED")
    wait_port "$port" "$STARTED" portcullis "$logfile"
    log "portcullis: pid $STARTED on $HOST:$port (cpu $cpu)"
}

stop_started() {
    local pid=$1 kept=() p
    stop_server "$pid"
    for p in "${STARTED_PIDS[@]}"; do
        [[ $p == "$pid" ]] || kept+=("$p")
    done
    STARTED_PIDS=("${kept[@]}")
}

# ---------------------------------------------------------------------------------------------
# Measurement

# A server's processes: the pid and its direct children (nginx master + worker).
server_pids() {
    local pid=$1
    printf '%s\n' "$pid"
    pgrep -P "$pid" || true
}

# utime+stime in clock ticks, summed over the given pids (all threads of each process).
cpu_ticks() {
    local total=0 pid stat rest fields
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat") || die "pid $pid vanished"
        rest=${stat##*) }
        read -r -a fields <<<"$rest"
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        total=$((total + fields[11] + fields[12]))
    done
    printf '%s\n' "$total"
}

rss_kib() {
    awk '/^VmRSS:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status"
}

# wrk latency ("412.00us", "1.20ms", "2.00s", "1.00m") to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000;
        else if (u == "m") f = 60000000; else if (u == "h") f = 3600000000; else { print "NA"; exit }
        printf "%.1f\n", n * f
    }'
}

# Field from wrk output; prints NA when absent.
wrk_field() {
    local file=$1 what=$2
    case "$what" in
        rps) awk '/^Requests\/sec:/ { print $2; f = 1 } END { if (!f) print "NA" }' "$file" ;;
        requests) awk '/ requests in / { print $1; f = 1 } END { if (!f) print "NA" }' "$file" ;;
        p50) awk '$1 == "50%" { print $2; f = 1 } END { if (!f) print "NA" }' "$file" ;;
        p99) awk '$1 == "99%" { print $2; f = 1 } END { if (!f) print "NA" }' "$file" ;;
        non2xx) awk '/Non-2xx or 3xx responses:/ { print $NF; f = 1 } END { if (!f) print 0 }' "$file" ;;
        sockerr)
            awk '/Socket errors:/ {
                    gsub(/,/, ""); s = $4 + $6 + $8 + $10; f = 1
                 } END { print (f ? s : 0) }' "$file"
            ;;
    esac
}

run_wrk() {
    local url=$1 dur=$2 out=$3 limit
    limit=$(duration_secs "$dur")
    timeout --foreground --signal=INT --kill-after=10 "$((limit + 30))" \
        taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --latency "$url" \
        >"$out" 2>&1 || {
        cat "$out" >&2
        die "wrk failed against $url"
    }
}

# The response must be a 200 with the origin's body, else the numbers would mean nothing.
preflight() {
    local label=$1 url=$2 out=$3 code
    code=$(curl -sS --max-time 5 -o "$out" -w '%{http_code}' "$url") ||
        die "$label: request to $url failed"
    [[ $code == 200 ]] || die "$label: $url answered $code, expected 200 (body in $out)"
    if [[ -n ${ORIGIN_BODY_FILE:-} ]] && ! cmp -s "$out" "$ORIGIN_BODY_FILE"; then
        die "$label: body from $url differs from the origin's ($out vs $ORIGIN_BODY_FILE)"
    fi
}

declare -A R_RPS R_P50 R_P99 R_CPU R_UTIL R_RSS R_REQS R_NON2XX R_SOCKERR R_FLAG R_PROCS
LABELS=()
ANY_FLAGGED=0

# bench_target LABEL URL PID: warm-up, measured run, CPU and RSS of PID and its children.
bench_target() {
    local label=$1 url=$2 pid=$3 pids_before pids_after t0 t1 out rss p reqs flag=""
    local -a pids
    log "$label: preflight $url"
    preflight "$label" "$url" "$RUN_DIR/$label.body"
    if ((WARMUP_S > 0)); then
        log "$label: warm-up $WARMUP"
        run_wrk "$url" "$WARMUP" "$RUN_DIR/$label.warmup.txt"
    fi
    mapfile -t pids < <(server_pids "$pid")
    pids_before=${pids[*]}
    {
        printf 'label=%s pids=%s\n' "$label" "$pids_before"
        for p in "${pids[@]}"; do
            printf 'pid %s: %s affinity=%s\n' "$p" "$(tr -d '\n' <"/proc/$p/comm")" \
                "$(taskset -pc "$p" | awk -F': ' '{ print $2 }')"
        done
    } >>"$RUN_DIR/processes.txt"
    t0=$(cpu_ticks "${pids[@]}")
    log "$label: measured run $DURATION, $CONNECTIONS connections, $THREADS wrk thread(s)"
    out=$RUN_DIR/$label.wrk.txt
    run_wrk "$url" "$DURATION" "$out"
    t1=$(cpu_ticks "${pids[@]}")
    pids_after=$(server_pids "$pid" | paste -sd' ')
    [[ $pids_after == "$pids_before" ]] || flag+="procs-changed "
    rss=0
    for p in "${pids[@]}"; do
        rss=$((rss + $(rss_kib "$p")))
        printf 'pid %s VmRSS %s KiB after run\n' "$p" "$(rss_kib "$p")" >>"$RUN_DIR/processes.txt"
    done

    reqs=$(wrk_field "$out" requests)
    R_REQS[$label]=$reqs
    R_RPS[$label]=$(wrk_field "$out" rps)
    R_P50[$label]=$(to_us "$(wrk_field "$out" p50)")
    R_P99[$label]=$(to_us "$(wrk_field "$out" p99)")
    R_NON2XX[$label]=$(wrk_field "$out" non2xx)
    R_SOCKERR[$label]=$(wrk_field "$out" sockerr)
    R_RSS[$label]=$rss
    R_PROCS[$label]=${#pids[@]}
    # Share of one core the row's processes used during the measured run: near 100 means the
    # proxy was the bottleneck, well below means the load side (wrk + origin) was.
    R_UTIL[$label]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$DURATION_S" \
        'BEGIN { printf "%.0f\n", d * 100 / hz / s }')
    if [[ $reqs =~ ^[0-9]+$ ]] && ((reqs > 0)); then
        R_CPU[$label]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" \
            'BEGIN { printf "%.2f\n", d * 1000000 / hz / n }')
    else
        R_CPU[$label]=NA
        flag+="no-requests "
    fi
    ((R_NON2XX[$label] == 0)) || flag+="non-2xx "
    ((R_SOCKERR[$label] == 0)) || flag+="socket-errors "
    R_FLAG[$label]=${flag:-ok}
    [[ -z $flag ]] || ANY_FLAGGED=1
    LABELS+=("$label")
    log "$label: ${R_RPS[$label]} req/s, p50 ${R_P50[$label]}us, p99 ${R_P99[$label]}us," \
        "${R_CPU[$label]}us CPU/req (${R_UTIL[$label]}% of a core), RSS ${rss} KiB, status ${R_FLAG[$label]}"
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"; else printf "%.2f\n", a / b
    }'
}

# ---------------------------------------------------------------------------------------------
# Main

ensure_tools
CLK_TCK=$(getconf CLK_TCK)

if ((RUN_PORTCULLIS)); then
    [[ -f $SCENARIO_FILE ]] || die "scenario config not found: $SCENARIO_FILE"
    if ((BUILD)); then
        log "building: cargo build --release -p portcullis"
        (cd "$ROOT" && cargo build --release -p portcullis) || die "cargo build failed"
    fi
    [[ -x $PORTCULLIS_BIN ]] || die "gateway binary not found: $PORTCULLIS_BIN (build it or drop --no-build)"
fi

mkdir -p "$RESULTS_DIR"
RUN_DIR=$(mktemp -d "$RESULTS_DIR/run-$(date +%Y%m%d-%H%M%S)-XXXX")
log "artefacts in $RUN_DIR"

# Origin.
free_port
ORIGIN_PORT=$FREE_PORT
ORIGIN_ADDR=$HOST:$ORIGIN_PORT
mkdir -p "$RUN_DIR/origin"
render "$ORIGIN_TEMPLATE" "$RUN_DIR/origin/nginx.conf" \
    PREFIX="$RUN_DIR/origin" LISTEN_ADDR="$ORIGIN_ADDR"
start_nginx origin "$ORIGIN_CPU" "$RUN_DIR/origin" "$RUN_DIR/origin/nginx.conf" "$ORIGIN_PORT"
ORIGIN_PID=$STARTED
ORIGIN_BODY_FILE=
preflight origin "http://$ORIGIN_ADDR/" "$RUN_DIR/origin.body"
ORIGIN_BODY_FILE=$RUN_DIR/origin.body

if ((BASELINE)); then
    bench_target origin-direct "http://$ORIGIN_ADDR/" "$ORIGIN_PID"
fi

if ((RUN_NGINX)); then
    free_port
    port=$FREE_PORT
    mkdir -p "$RUN_DIR/nginx-proxy"
    render "$NGINX_PROXY_TEMPLATE" "$RUN_DIR/nginx-proxy/nginx.conf" \
        PREFIX="$RUN_DIR/nginx-proxy" LISTEN_ADDR="$HOST:$port" ORIGIN_ADDR="$ORIGIN_ADDR"
    start_nginx nginx-proxy "$PROXY_CPU" "$RUN_DIR/nginx-proxy" "$RUN_DIR/nginx-proxy/nginx.conf" "$port"
    pid=$STARTED
    bench_target nginx "http://$HOST:$port/" "$pid"
    stop_started "$pid"
fi

if ((RUN_PORTCULLIS)); then
    free_port
    port=$FREE_PORT
    free_port
    admin_port=$FREE_PORT
    render "$SCENARIO_FILE" "$RUN_DIR/portcullis.yaml" \
        LISTEN_ADDR="$HOST:$port" ORIGIN_ADDR="$ORIGIN_ADDR" ADMIN_ADDR="$HOST:$admin_port" \
        WORK_DIR="$RUN_DIR"
    start_portcullis "$PROXY_CPU" "$RUN_DIR/portcullis.yaml" "$port" "$RUN_DIR/portcullis.log"
    pid=$STARTED
    bench_target portcullis "http://$HOST:$port/" "$pid"
    stop_started "$pid"
fi

# ---------------------------------------------------------------------------------------------
# Report

table() {
    local label
    printf '| target | req/s | p50 (us) | p99 (us) | CPU/req (us) | CPU util (%%) | RSS (KiB) | procs | requests | non-2xx | socket errors | status |\n'
    printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
    for label in "${LABELS[@]}"; do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" \
            "${R_RPS[$label]}" "${R_P50[$label]}" "${R_P99[$label]}" "${R_CPU[$label]}" \
            "${R_UTIL[$label]}" "${R_RSS[$label]}" "${R_PROCS[$label]}" "${R_REQS[$label]}" \
            "${R_NON2XX[$label]}" "${R_SOCKERR[$label]}" "${R_FLAG[$label]% }"
    done
}

ratios() {
    [[ -n ${R_RPS[portcullis]:-} && -n ${R_RPS[nginx]:-} ]] || return 0
    printf '\n| portcullis / nginx | req/s | p50 | p99 | CPU/req | RSS |\n'
    printf '|---|---:|---:|---:|---:|---:|\n'
    printf '| ratio | %s | %s | %s | %s | %s |\n' \
        "$(ratio "${R_RPS[portcullis]}" "${R_RPS[nginx]}")" \
        "$(ratio "${R_P50[portcullis]}" "${R_P50[nginx]}")" \
        "$(ratio "${R_P99[portcullis]}" "${R_P99[nginx]}")" \
        "$(ratio "${R_CPU[portcullis]}" "${R_CPU[nginx]}")" \
        "$(ratio "${R_RSS[portcullis]}" "${R_RSS[nginx]}")"
}

report() {
    local commit
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    printf '## Proxy benchmark (%s)\n\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf -- "- commit %s, scenario \`%s\`, %s\n" "$commit" "$SCENARIO_NAME" "$(uname -sr)"
    printf -- '- wrk: %s thread(s), %s keep-alive connections, %s measured after %s warm-up, on cpu %s\n' \
        "$THREADS" "$CONNECTIONS" "$DURATION" "$WARMUP" "$LOAD_CPU"
    printf -- '- proxy under test on cpu %s (1 worker); origin nginx (1 worker) on cpu %s\n' \
        "$PROXY_CPU" "$ORIGIN_CPU"
    printf -- '- %s; %s\n' "$("$NGINX_BIN" -v 2>&1)" "$(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }')"
    printf -- '- CPU/req: utime+stime of the row'"'"'s processes over the measured run / requests; '
    printf 'CPU util: the same time / run length (100 = one core busy); '
    printf 'RSS: VmRSS summed over them after the run (nginx: master + worker; origin-direct: the origin)\n\n'
    table
    ratios
    if ((ANY_FLAGGED)); then
        printf '\n**Some runs had errors (see status); their figures are not comparable.**\n'
    fi
    printf "\nArtefacts: \`%s\`\n" "${RUN_DIR#"$ROOT"/}"
}

REPORT=$(report)
printf '%s\n' "$REPORT" >"$RUN_DIR/results.md"
printf '%s\n' "$REPORT" >"$RESULTS_DIR/latest.md"
printf '\n%s\n\n' "$REPORT"
log "written to $RESULTS_DIR/latest.md"

if ((ANY_FLAGGED)); then
    die "some runs had non-2xx responses, socket errors or changed processes (see status column)"
fi
