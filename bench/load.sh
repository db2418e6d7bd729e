#!/usr/bin/env bash
# End-to-end load benchmark of webhook-sink, on loopback. See bench/README.md.
#
#   bash bench/load.sh                 # full run (N=200000, RUNS=3), ~10 min on 2 cores
#   QUICK=1 bash bench/load.sh         # smoke run (N=20000, RUNS=1)
#
# Environment (defaults in brackets):
#   N [200000]        events per throughput run       BATCH [200]  events per POST to the source
#   CONC [32]         requests in flight: webhook-sink request.concurrency and wrk connections
#   RUNS [3]          rounds; each round runs every configuration once, interleaved
#   DISK [1]          also run webhook-sink with buffer.type = "disk"
#   LAT [1]           also run the paced latency passes (full and half of the measured rate)
#   LAT_SECS [5]      duration of each latency pass     WRK_SECS [5]  duration of the ceiling run
#   PUSH_CONNS [2]    client connections to the source  WRK_THREADS [2]
#   RUN_TIMEOUT [600] upper bound of any single run, in seconds
#   BIN [target/release/webhook-sink]   SKIP_BUILD [0]: 1 = do not run cargo build --release
#   KEEP [0]          1 = keep the temp dir (configs, nginx logs, stderr of every process)
#   TMPDIR [/tmp]     where the temp dir (and the disk buffer) goes
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PY=(python3 "$HERE/bench.py")

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    N=${N:-20000}
    RUNS=${RUNS:-1}
fi
N=${N:-200000}
BATCH=${BATCH:-200}
CONC=${CONC:-32}
RUNS=${RUNS:-3}
DISK=${DISK:-1}
LAT=${LAT:-1}
LAT_SECS=${LAT_SECS:-5}
WRK_SECS=${WRK_SECS:-5}
WRK_THREADS=${WRK_THREADS:-2}
PUSH_CONNS=${PUSH_CONNS:-2}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
BIN=${BIN:-$ROOT/target/release/webhook-sink}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}

for var in N BATCH CONC RUNS LAT_SECS WRK_SECS WRK_THREADS PUSH_CONNS RUN_TIMEOUT; do
    if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
        echo "load.sh: $var must be a positive integer, got '${!var}'" >&2
        exit 2
    fi
done
((WRK_THREADS > CONC)) && WRK_THREADS=$CONC

COMMAND="QUICK=$QUICK N=$N BATCH=$BATCH CONC=$CONC RUNS=$RUNS DISK=$DISK LAT=$LAT LAT_SECS=$LAT_SECS WRK_SECS=$WRK_SECS PUSH_CONNS=$PUSH_CONNS bash bench/load.sh"

# Loopback only: no proxy may be used by libcurl (syslog-ng) or anything else.
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost

USER_NAME=user
USER_PASS=pass
AUTH="Basic $(printf '%s:%s' "$USER_NAME" "$USER_PASS" | base64 -w0)"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------------------
# Processes. Everything started goes into PIDS; the EXIT trap stops whatever is
# still alive, on every path (normal end, error, Ctrl-C, SIGTERM).
PIDS=()
TMP=""

# alive PID [PARENT]: PID is running (not a zombie) and is a child of PARENT (default:
# this script), so that a recycled pid is never mistaken for one of ours.
alive() {
    local stat state ppid
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    state=${stat%% *}
    stat=${stat#* }
    ppid=${stat%% *}
    [[ $state != Z && $ppid == "${2:-$$}" ]]
}

forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do
        [[ $p != "$1" ]] && keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

# stop_pid PID [SIGNAL] [TENTHS]: signal, wait up to TENTHS/10 s (default 10 s), then
# SIGKILL it and the children it has (e.g. nginx's worker); reap.
stop_pid() {
    local pid=$1 sig=${2:-TERM} tenths=${3:-100} i k
    if alive "$pid"; then
        kill -s "$sig" "$pid" 2>/dev/null
        for ((i = 0; i < tenths; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "pid $pid did not stop on SIG$sig within $((tenths / 10)) s; killing it"
            for k in $(pgrep -P "$pid" 2>/dev/null); do
                alive "$k" "$pid" && kill -KILL "$k" 2>/dev/null
            done
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    wait "$pid" 2>/dev/null
    forget_pid "$pid"
    return 0
}

cleanup() {
    local i
    trap - EXIT INT TERM
    # Newest first (client, then webhook-sink / syslog-ng, then nginx); on this path
    # nobody waits for buffers to drain.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}" TERM 30
    done
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP == 1 ]]; then
            log "kept $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# start_bg OUT ERR CMD...: start in the background, remember the pid in LAST_PID.
start_bg() {
    local out=$1 err=$2
    shift 2
    "$@" >"$out" 2>"$err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# run_wait OUT ERR SECS CMD...: run in the background under `timeout`, wait for it
# (so that the traps stay responsive), return its exit code.
run_wait() {
    local out=$1 err=$2 secs=$3 rc
    shift 3
    start_bg "$out" "$err" timeout -k 5 "$secs" "$@"
    wait "$LAST_PID"
    rc=$?
    forget_pid "$LAST_PID"
    return $rc
}

# ---------------------------------------------------------------------------
need() {
    command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]
}
for tool in python3 nginx timeout base64; do
    if ! need "$tool"; then
        echo "load.sh: $tool is required (apt-get install -y nginx python3 coreutils)" >&2
        exit 2
    fi
done
PATH=$PATH:/usr/sbin
HAVE_WRK=1
need wrk || { HAVE_WRK=0; log "wrk not found: the ceiling run is skipped (apt-get install -y wrk)"; }
HAVE_SYSLOG_NG=1
if ! need syslog-ng || ! ls /usr/lib/syslog-ng/*/libhttp.so >/dev/null 2>&1; then
    HAVE_SYSLOG_NG=0
    log "syslog-ng with http() not found: the peer run is skipped (apt-get install -y syslog-ng-core syslog-ng-mod-http)"
fi

if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release"
    if ! (cd "$ROOT" && cargo build --release --quiet); then
        if [[ -x $BIN ]]; then
            log "cargo build --release failed; using the existing $BIN"
        else
            echo "load.sh: cargo build --release failed and there is no $BIN" >&2
            exit 1
        fi
    fi
fi
if [[ ! -x $BIN ]]; then
    echo "load.sh: $BIN not found; run cargo build --release" >&2
    exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/webhook-sink-bench.XXXXXX")
# nginx's worker runs as `nobody`: it must reach the (empty) document root.
chmod 711 "$TMP"
RESULTS=$TMP/results.jsonl
: >"$RESULTS"

# ---------------------------------------------------------------------------
# The receiver: one nginx per run (fresh log, fresh state), from bench/nginx.conf.
start_nginx() { # NAME -> NGX_DIR NGX_PORT NGX_LOG NGX_PID
    NGX_DIR=$TMP/$1/nginx
    mkdir -p "$NGX_DIR/empty"
    chmod 711 "$TMP/$1" "$NGX_DIR"
    NGX_PORT=$("${PY[@]}" port)
    NGX_LOG=$NGX_DIR/access.log
    sed -e "s|@PREFIX@|$NGX_DIR|g" -e "s|@PORT@|$NGX_PORT|g" -e "s|@LOG@|$NGX_LOG|g" \
        -e "s|@AUTH@|$AUTH|g" "$HERE/nginx.conf" >"$NGX_DIR/nginx.conf"
    start_bg "$NGX_DIR/stdout" "$NGX_DIR/stderr" \
        nginx -e "$NGX_DIR/error.log" -p "$NGX_DIR" -c "$NGX_DIR/nginx.conf" -g 'daemon off;'
    NGX_PID=$LAST_PID
    if ! run_wait /dev/null "$NGX_DIR/waitport.stderr" 20 "${PY[@]}" waitport "$NGX_PORT" 10; then
        log "nginx did not start: $(tail -3 "$NGX_DIR/error.log" "$NGX_DIR/stderr" 2>/dev/null)"
        stop_pid "$NGX_PID"
        return 1
    fi
}

# Graceful stop (QUIT): nginx finishes its requests and flushes the log buffer.
stop_nginx() {
    stop_pid "$NGX_PID" QUIT
}

# webhook-sink's pipeline: an http_server source and one webhook sink to nginx, with
# Basic auth from the URL and a typical JSON template (6 catalog variables and one
# event field, the send time used by the latency passes).
write_ours_config() { # FILE SOURCE_PORT PATH BUFFER_TYPE DATA_DIR EVENTS
    local file=$1 src_port=$2 path=$3 buffer=$4 data=$5 events=$6 max_bytes
    if [[ $buffer == memory ]]; then
        max_bytes=4294967296
    else
        max_bytes=17179869184
    fi
    cat >"$file" <<EOF
data_dir = "$data"
shutdown_timeout_secs = 30

[sources.events]
type = "http_server"
address = "127.0.0.1:$src_port"
path = "/events"
retry_after_secs = 1

[sinks.bench]
type = "webhook"
inputs = ["events"]
url = "http://$USER_NAME:$USER_PASS@127.0.0.1:$NGX_PORT$path"
template = '''{"text": "[{{ alertPriority }}] {{ alertSummary }} is {{ alertStatus }}", "source": "{{ alertSourceName }}", "alert": "{{ alertId }}", "link": {{{ link }}}, "sentAt": {{{ event.sentAt }}}}'''
healthcheck.enabled = false
request.concurrency = $CONC
buffer.type = "$buffer"
buffer.max_events = $((events + BATCH * PUSH_CONNS))
buffer.max_bytes = $max_bytes
# A full buffer answers 503 (the client waits Retry-After and resends) instead of
# dead-lettering, so every event is either delivered or the run fails visibly.
buffer.when_full = "reject"
EOF
}

# One webhook-sink run. MODE: memory | disk | lat_full | lat_half.
# Throughput modes push N events as fast as the source takes them; the latency modes
# pace RATE events/s for LAT_SECS seconds towards nginx's /lat location.
run_ours() { # RUN MODE [RATE]
    local run=$1 mode=$2 rate=${3:-0} name config buffer=memory path=/hook n=$N
    local dir src_port pid proc0="" proc1="" push="" count="" err="" push_args=() extra=()
    case $mode in
        memory) config=ours ;;
        disk) config=ours_disk buffer=disk ;;
        lat_full | lat_half)
            config=$mode path=/lat
            n=$(python3 -c "import math; print(max($BATCH, math.ceil($rate * $LAT_SECS / $BATCH) * $BATCH))")
            push_args=(--rate "$rate")
            extra=(--extra "offered=$rate")
            ;;
    esac
    name=$config-$run
    dir=$TMP/$name
    mkdir -p "$dir/data"
    start_nginx "$name" || {
        "${PY[@]}" record "$RESULTS" --config "$config" --run "$run" --error "nginx did not start"
        return 1
    }
    src_port=$("${PY[@]}" port)
    write_ours_config "$dir/pipeline.toml" "$src_port" "$path" "$buffer" "$dir/data" "$n"
    start_bg "$dir/webhook-sink.stdout" "$dir/webhook-sink.stderr" \
        env WEBHOOK_SINK_LOG=warn "$BIN" run --config "$dir/pipeline.toml"
    pid=$LAST_PID
    if ! run_wait /dev/null "$dir/health.stderr" 30 "${PY[@]}" health "http://127.0.0.1:$src_port/health" 20 "$pid"; then
        err="webhook-sink did not start: $(tail -c 300 "$dir/webhook-sink.stderr")"
    fi
    if [[ -z $err ]]; then
        proc0=$("${PY[@]}" proc "$pid")
        run_wait "$dir/push.json" "$dir/push.stderr" "$RUN_TIMEOUT" "${PY[@]}" push \
            --url "http://127.0.0.1:$src_port/events" --n "$n" --batch "$BATCH" \
            --conns "$PUSH_CONNS" --timeout "$RUN_TIMEOUT" "${push_args[@]}" ||
            err="push failed: $(tail -c 300 "$dir/push.json" "$dir/push.stderr")"
        push=$(cat "$dir/push.json" 2>/dev/null)
    fi
    if [[ -z $err ]]; then
        run_wait /dev/null "$dir/wait.stderr" $((RUN_TIMEOUT + 30)) \
            "${PY[@]}" wait "$NGX_LOG" "$n" --timeout "$RUN_TIMEOUT" --stall 20 --pid "$pid" ||
            err="$(cat "$dir/wait.stderr")"
    fi
    alive "$pid" && proc1=$("${PY[@]}" proc "$pid")
    stop_pid "$pid" TERM
    stop_nginx
    count=$("${PY[@]}" count "$NGX_LOG" "$([[ $path == /lat ]] && echo latency)")
    [[ -z $err && -z $proc1 ]] && err="webhook-sink exited early: $(tail -c 300 "$dir/webhook-sink.stderr")"
    "${PY[@]}" record "$RESULTS" --config "$config" --run "$run" --count "$count" --push "$push" \
        --proc0 "$proc0" --proc1 "$proc1" --expect "$n" --error "$err" "${extra[@]}"
}

# The ceiling: wrk sends the body webhook-sink renders for a benchmark event, with the
# same Authorization header, over CONC connections, to the same nginx location.
run_ceiling() { # RUN
    local run=$1 dir=$TMP/ceiling-$1 count="" err="" wrk_rate
    mkdir -p "$dir"
    start_nginx "ceiling-$run" || {
        "${PY[@]}" record "$RESULTS" --config ceiling --run "$run" --error "nginx did not start"
        return 1
    }
    run_wait "$dir/wrk.out" "$dir/wrk.err" $((WRK_SECS + 30)) \
        env BENCH_BODY_FILE="$BODY_FILE" BENCH_AUTH="$AUTH" \
        wrk -t "$WRK_THREADS" -c "$CONC" -d "${WRK_SECS}s" -s "$HERE/post.lua" "http://127.0.0.1:$NGX_PORT/hook" ||
        err="wrk failed: $(tail -c 300 "$dir/wrk.out" "$dir/wrk.err")"
    stop_nginx
    wrk_rate=$(awk '/^Requests\/sec:/ {print $2}' "$dir/wrk.out")
    count=$("${PY[@]}" count "$NGX_LOG")
    "${PY[@]}" record "$RESULTS" --config ceiling --run "$run" --count "$count" --error "$err" \
        --extra "wrk_rate=${wrk_rate:-0}" --extra "wrk_summary=$(tr -d '\n' <"$dir/wrk.err")"
}

# The peer: syslog-ng reads the same N events (appended to a file it follows) and
# POSTs one request per event with its http() destination.
run_peer() { # RUN
    local run=$1 dir=$TMP/peer-$1 pid proc0="" proc1="" count="" err="" i
    mkdir -p "$dir"
    start_nginx "peer-$run" || {
        "${PY[@]}" record "$RESULTS" --config peer --run "$run" --error "nginx did not start"
        return 1
    }
    : >"$dir/input.ndjson"
    sed -e "s|@INPUT@|$dir/input.ndjson|g" -e "s|@PORT@|$NGX_PORT|g" \
        -e "s|@USER@|$USER_NAME|g" -e "s|@PASS@|$USER_PASS|g" "$HERE/syslog-ng.conf" >"$dir/syslog-ng.conf"
    start_bg "$dir/syslog-ng.stdout" "$dir/syslog-ng.stderr" \
        syslog-ng -F -e --no-caps -f "$dir/syslog-ng.conf" -R "$dir/syslog-ng.persist" \
        -p "$dir/syslog-ng.pid" -c "$dir/syslog-ng.ctl"
    pid=$LAST_PID
    for ((i = 0; i < 200; i++)); do
        [[ -S $dir/syslog-ng.ctl ]] && break
        alive "$pid" || break
        sleep 0.05
    done
    if [[ ! -S $dir/syslog-ng.ctl ]] || ! alive "$pid"; then
        err="syslog-ng did not start: $(tail -c 300 "$dir/syslog-ng.stderr")"
    fi
    if [[ -z $err ]]; then
        sleep 0.3
        proc0=$("${PY[@]}" proc "$pid")
        cat "$EVENTS_FILE" >>"$dir/input.ndjson"
        run_wait /dev/null "$dir/wait.stderr" $((RUN_TIMEOUT + 30)) \
            "${PY[@]}" wait "$NGX_LOG" "$N" --timeout "$RUN_TIMEOUT" --stall 20 --pid "$pid" ||
            err="$(cat "$dir/wait.stderr")"
    fi
    alive "$pid" && proc1=$("${PY[@]}" proc "$pid")
    stop_pid "$pid" TERM
    stop_nginx
    count=$("${PY[@]}" count "$NGX_LOG")
    [[ -z $err && -z $proc1 ]] && err="syslog-ng exited early: $(tail -c 300 "$dir/syslog-ng.stderr")"
    "${PY[@]}" record "$RESULTS" --config peer --run "$run" --count "$count" \
        --proc0 "$proc0" --proc1 "$proc1" --expect "$N" --error "$err"
}

# ---------------------------------------------------------------------------
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM_GB=$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
MACHINE="$(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, ${MEM_GB} GB RAM, Linux $(uname -r)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+uncommitted changes")
VERSIONS="webhook-sink $REV$DIRTY; $(nginx -v 2>&1 | sed 's/.*: //')"
((HAVE_WRK)) && VERSIONS+="; $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')"
((HAVE_SYSLOG_NG)) && VERSIONS+="; $(syslog-ng --version 2>/dev/null | head -1)"

log "$COMMAND"
log "machine: $MACHINE; load average before: $LOAD_BEFORE"
log "temp dir: $TMP"

# The peer's input, and the body the ceiling sends (rendered by webhook-sink itself).
EVENTS_FILE=$TMP/events.ndjson
"${PY[@]}" gen "$N" "$EVENTS_FILE"
BODY_FILE=$TMP/body.json
mkdir -p "$TMP/render"
NGX_PORT=1
write_ours_config "$TMP/render/pipeline.toml" 1 /hook memory "$TMP/render/data" "$N"
"${PY[@]}" event >"$TMP/render/event.json"
if ! "$BIN" render --config "$TMP/render/pipeline.toml" --sink bench --event "$TMP/render/event.json" \
    >"$TMP/render/body.out" 2>"$TMP/render/body.err"; then
    echo "load.sh: webhook-sink render failed: $(cat "$TMP/render/body.err")" >&2
    exit 1
fi
python3 -c 'import sys; b = open(sys.argv[1], "rb").read(); open(sys.argv[2], "wb").write(b[:-1] if b.endswith(b"\n") else b)' \
    "$TMP/render/body.out" "$BODY_FILE"

STARTED=$(date +%s)
for ((run = 1; run <= RUNS; run++)); do
    log "round $run/$RUNS: ours (memory buffer), N=$N"
    run_ours "$run" memory
    if ((HAVE_WRK)); then
        log "round $run/$RUNS: ceiling (wrk, ${WRK_SECS}s)"
        run_ceiling "$run"
    fi
    if ((HAVE_SYSLOG_NG)); then
        log "round $run/$RUNS: peer (syslog-ng http()), N=$N"
        run_peer "$run"
    fi
    if [[ $DISK == 1 ]]; then
        log "round $run/$RUNS: ours (disk buffer), N=$N"
        run_ours "$run" disk
    fi
    if [[ $LAT == 1 ]]; then
        # Full load = the median deliveries/s of the memory runs so far.
        full=$("${PY[@]}" median "$RESULTS" ours rate) || full=""
        if [[ -n $full ]]; then
            half=$(python3 -c "print(round($full / 2, 1))")
            log "round $run/$RUNS: latency at full load ($full ev/s, ${LAT_SECS}s)"
            run_ours "$run" lat_full "$full"
            log "round $run/$RUNS: latency at half load ($half ev/s, ${LAT_SECS}s)"
            run_ours "$run" lat_half "$half"
        else
            log "round $run/$RUNS: no successful memory run yet, latency passes skipped"
        fi
    fi
done
ELAPSED=$(($(date +%s) - STARTED))

NOTE="load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg); took ${ELAPSED}s"
"${PY[@]}" report "$RESULTS" --machine "$MACHINE" --cmd "$COMMAND" \
    --settings "$VERSIONS; N=$N events, BATCH=$BATCH, CONC=$CONC, client connections=$PUSH_CONNS; disk buffer on $(df -T "$TMP" | awk 'NR == 2 {print $2 " (" $1 ")"}')" \
    --note "$NOTE"
if grep -q '"error"' "$RESULTS"; then
    exit 1
fi
exit 0
