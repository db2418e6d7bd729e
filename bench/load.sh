#!/usr/bin/env bash
# End-to-end load benchmark of webhook-sink, on loopback. See bench/README.md.
#
#   bash bench/load.sh                 # full run (N=200000, RUNS=3), ~10 min on 2 cores
#   QUICK=1 bash bench/load.sh         # smoke run (N=20000, RUNS=1)
#   CURVE=1 bash bench/load.sh         # full run, then the concurrency / template sweep
#
# Environment (defaults in brackets):
#   N [200000]        events per throughput run       BATCH [200]  events per POST to the source
#   CONC [32]         requests in flight: request.concurrency, wrk connections, hyper loop senders
#   RUNS [3]          rounds; each round runs every configuration once, interleaved
#   DISK [1]          also run webhook-sink with buffer.type = "disk"
#   ONE_THREAD [1]    also run ours (memory buffer) with `run --threads 1`
#   PROCS [2]         also run that many webhook-sink processes side by side, one thread
#                     each, the client split between them (the bound of a pipeline per
#                     core); 0 skips it
#   DEAD [1]          also run webhook-sink with a dead receiver: DEAD_N [100000] events
#                     buffered in memory, peak RSS against their raw JSON size
#   BUFFER_EVENTS []  buffer.max_events of the throughput runs (default: the sink's default)
#   LAT [1]           also run the paced latency passes (full and half of the measured rate)
#   LAT_BATCH [BATCH] events per POST in the latency passes (a batch arrives at once, so
#                     its last event waits for the ones before it to be sent)
#   LAT_SECS [5]      duration of each latency pass     WRK_SECS [5]  duration of the ceiling run
#   PUSH_CONNS [2]    client connections to the source  WRK_THREADS [2]
#   RUN_TIMEOUT [600] upper bound of any single run, in seconds
#   HYPER [1]         also run the bare hyper-util client loop (examples/hyper_loop.rs) once
#                     per round: CONC in flight for WRK_SECS, same body, auth and location
#   CEILING [1], PEER [1]  0 = skip the wrk ceiling run, the syslog-ng peer run
#   HYPER_THREADS [0] tokio worker threads of the hyper loop; 0 = tokio's default (one per
#                     core), 1 = a current-thread runtime
#   CURVE [0]         1 = after the rounds, sweep concurrency and template size (bench/README.md)
#   LAT_BUFFER [memory]  buffer.type of the latency passes (disk: a paced disk run, where
#                     the sink keeps up instead of draining a backlog)
#   LAT_RATE []       full load of the latency passes in events/s (half of it for the half
#                     load pass); default: the median rate of this run's memory runs
#   STORM [0]         1 = after the report, the alert-storm scenario (bench/storm.py, ~3 min):
#                     10,000 events to a 1 request/s receiver, with and without digests
#   N_CURVE [50000]   events per webhook-sink run of the sweep
#   CURVE_CONC ["1 8 32 128 256"]  request.concurrency (and hyper/wrk in-flight) points
#   CURVE_RUNS [1]    repetitions of the whole sweep (cells are medians)
#   CURVE_WRK [1]     also run wrk at each concurrency point of the sweep
#   BIN [$CARGO_TARGET_DIR or target]/release/webhook-sink
#   HYPER_BIN [$CARGO_TARGET_DIR or target]/release/examples/hyper_loop
#   LAT_RECEIVER_BIN [$CARGO_TARGET_DIR or target]/release/examples/latency_receiver: the
#                     receiver of the latency passes (µs time stamps; nginx's are ms). Without
#                     it they use nginx, with a note
#   SKIP_BUILD [0]    1 = do not run cargo build --release (nor the examples hyper_loop and
#                     latency_receiver)
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
LAT_BATCH=${LAT_BATCH:-$BATCH}
CONC=${CONC:-32}
RUNS=${RUNS:-3}
DISK=${DISK:-1}
DEAD=${DEAD:-1}
ONE_THREAD=${ONE_THREAD:-1}
PROCS=${PROCS:-2}
DEAD_N=${DEAD_N:-100000}
LAT=${LAT:-1}
LAT_SECS=${LAT_SECS:-5}
LAT_BUFFER=${LAT_BUFFER:-memory}
WRK_SECS=${WRK_SECS:-5}
WRK_THREADS=${WRK_THREADS:-2}
PUSH_CONNS=${PUSH_CONNS:-2}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
HYPER=${HYPER:-1}
CEILING=${CEILING:-1}
PEER=${PEER:-1}
HYPER_THREADS=${HYPER_THREADS:-0}
CURVE=${CURVE:-0}
STORM=${STORM:-0}
N_CURVE=${N_CURVE:-50000}
CURVE_CONC=${CURVE_CONC:-1 8 32 128 256}
CURVE_RUNS=${CURVE_RUNS:-1}
CURVE_WRK=${CURVE_WRK:-1}
# cargo puts its output under CARGO_TARGET_DIR when that is set (relative to the
# directory cargo runs in, which is ROOT here).
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
BIN=${BIN:-$TARGET_DIR/release/webhook-sink}
HYPER_BIN=${HYPER_BIN:-$TARGET_DIR/release/examples/hyper_loop}
LAT_RECEIVER_BIN=${LAT_RECEIVER_BIN:-$TARGET_DIR/release/examples/latency_receiver}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}

for var in N BATCH LAT_BATCH CONC RUNS LAT_SECS WRK_SECS WRK_THREADS PUSH_CONNS RUN_TIMEOUT N_CURVE CURVE_RUNS DEAD_N; do
    if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
        echo "load.sh: $var must be a positive integer, got '${!var}'" >&2
        exit 2
    fi
done
if [[ $LAT_BUFFER != memory && $LAT_BUFFER != disk ]]; then
    echo "load.sh: LAT_BUFFER must be memory or disk, got '$LAT_BUFFER'" >&2
    exit 2
fi
if ! [[ $PROCS =~ ^[0-9]+$ ]] || ((PROCS == 1)); then
    echo "load.sh: PROCS must be 0 (no such run) or 2 or more, got '$PROCS'" >&2
    exit 2
fi
if ! [[ $HYPER_THREADS =~ ^[0-9]+$ ]]; then
    echo "load.sh: HYPER_THREADS must be a number (0 = tokio's default), got '$HYPER_THREADS'" >&2
    exit 2
fi
read -r -a CURVE_POINTS <<<"$CURVE_CONC"
if [[ $CURVE == 1 ]]; then
    if ((${#CURVE_POINTS[@]} == 0)); then
        echo "load.sh: CURVE_CONC is empty" >&2
        exit 2
    fi
    for c in "${CURVE_POINTS[@]}"; do
        if ! [[ $c =~ ^[1-9][0-9]*$ ]]; then
            echo "load.sh: CURVE_CONC must hold positive integers, got '$c'" >&2
            exit 2
        fi
    done
fi

COMMAND="QUICK=$QUICK N=$N BATCH=$BATCH CONC=$CONC RUNS=$RUNS DISK=$DISK ONE_THREAD=$ONE_THREAD DEAD=$DEAD DEAD_N=$DEAD_N LAT=$LAT LAT_BATCH=$LAT_BATCH LAT_SECS=$LAT_SECS WRK_SECS=$WRK_SECS PUSH_CONNS=$PUSH_CONNS HYPER=$HYPER"
[[ $PROCS != 2 ]] && COMMAND+=" PROCS=$PROCS"
[[ $CEILING != 1 ]] && COMMAND+=" CEILING=$CEILING"
[[ $PEER != 1 ]] && COMMAND+=" PEER=$PEER"
[[ $LAT_BUFFER != memory ]] && COMMAND+=" LAT_BUFFER=$LAT_BUFFER"
((HYPER_THREADS)) && COMMAND+=" HYPER_THREADS=$HYPER_THREADS"
[[ $CURVE == 1 ]] && COMMAND+=" CURVE=1 N_CURVE=$N_CURVE CURVE_CONC=\"$CURVE_CONC\" CURVE_RUNS=$CURVE_RUNS CURVE_WRK=$CURVE_WRK"
COMMAND+=" bash bench/load.sh"

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
if [[ $CEILING != 1 ]]; then
    HAVE_WRK=0
elif ! need wrk; then
    HAVE_WRK=0
    log "wrk not found: the ceiling run is skipped (apt-get install -y wrk)"
fi
HAVE_SYSLOG_NG=1
if [[ $PEER != 1 ]]; then
    HAVE_SYSLOG_NG=0
elif ! need syslog-ng || ! ls /usr/lib/syslog-ng/*/libhttp.so >/dev/null 2>&1; then
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
# The bare hyper-util client loop (examples/hyper_loop.rs), for the `hyper` configuration
# and the sweep. Without it those runs are skipped, with a note.
HAVE_HYPER=0
if [[ $HYPER == 1 || $CURVE == 1 ]]; then
    HAVE_HYPER=1
    if [[ $SKIP_BUILD != 1 ]]; then
        log "cargo build --release --example hyper_loop"
        if ! (cd "$ROOT" && cargo build --release --quiet --example hyper_loop); then
            if [[ -x $HYPER_BIN ]]; then
                log "cargo build --release --example hyper_loop failed; using the existing $HYPER_BIN"
            else
                HAVE_HYPER=0
                log "cargo build --release --example hyper_loop failed and there is no $HYPER_BIN: the hyper runs are skipped"
            fi
        fi
    elif [[ ! -x $HYPER_BIN ]]; then
        HAVE_HYPER=0
        log "SKIP_BUILD=1 and no $HYPER_BIN: the hyper runs are skipped (cargo build --release --example hyper_loop)"
    fi
fi

# The receiver of the latency passes (examples/latency_receiver.rs): it stamps each
# request in microseconds. Without it the passes use nginx (millisecond stamps).
HAVE_LAT_RECEIVER=0
if [[ $LAT == 1 ]]; then
    if [[ $SKIP_BUILD != 1 ]]; then
        log "cargo build --release --example latency_receiver"
        (cd "$ROOT" && cargo build --release --quiet --example latency_receiver) ||
            log "cargo build --release --example latency_receiver failed"
    fi
    if [[ -x $LAT_RECEIVER_BIN ]]; then
        HAVE_LAT_RECEIVER=1
    else
        log "no $LAT_RECEIVER_BIN: the latency passes use nginx, whose time stamps are in milliseconds"
    fi
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

# The latency passes' receiver in nginx's place: the same variables, the same log format
# (with microseconds), and QUIT makes it write out its log and stop, as it does nginx.
start_latency_receiver() { # NAME -> NGX_DIR NGX_PORT NGX_LOG NGX_PID
    NGX_DIR=$TMP/$1/receiver
    mkdir -p "$NGX_DIR"
    NGX_PORT=$("${PY[@]}" port)
    NGX_LOG=$NGX_DIR/access.log
    start_bg "$NGX_DIR/stdout" "$NGX_DIR/stderr" \
        "$LAT_RECEIVER_BIN" --port "$NGX_PORT" --auth "$AUTH" --log "$NGX_LOG"
    NGX_PID=$LAST_PID
    if ! run_wait /dev/null "$NGX_DIR/waitport.stderr" 20 "${PY[@]}" waitport "$NGX_PORT" 10; then
        log "the latency receiver did not start: $(tail -3 "$NGX_DIR/stderr" 2>/dev/null)"
        stop_pid "$NGX_PID"
        return 1
    fi
}

# Graceful stop (QUIT): nginx finishes its requests and flushes the log buffer.
stop_nginx() {
    stop_pid "$NGX_PID" QUIT
}

# Body templates. `typical` is the one of every run but the sweep's template points:
# 6 catalog variables and one event field (the send time used by the latency passes).
# The sweep also runs `small` (2 variables), `standard` (no template: the standard
# payload, the event as JSON) and `large` (a chat message with blocks, ~2 KB, about 30
# variables, in templates/large.json, which the criterion bench renders too). In single
# quotes: no shell expansion inside.
TEMPLATE_NAMES=(small typical standard large)
TEMPLATE_small='{"alert": "{{ alertUrl }}", "status": "{{ alertStatus }}"}'
TEMPLATE_typical='{"text": "[{{ alertPriority }}] {{ alertSummary }} is {{ alertStatus }}", "source": "{{ alertSourceName }}", "alert": "{{ alertId }}", "link": {{{ link }}}, "sentAt": {{{ event.sentAt }}}}'
TEMPLATE_standard=''
TEMPLATE_large=$(<"$HERE/templates/large.json")

# The end of a sender's run: unless ERR is already set, wait until nginx has logged N
# answers; then read the sender's CPU, stop it and nginx, and count nginx's log (COUNT_ARG
# "latency" for the latency log; SENDS, the client's send times for it). NAME is the
# sender, and its stderr file in DIR. Sets FIN_ERR, FIN_PROC1 and FIN_COUNT.
finish_run() { # DIR PID N NAME ERR [COUNT_ARG] [SENDS]
    local dir=$1 pid=$2 n=$3 name=$4
    FIN_ERR=$5 FIN_PROC1=""
    if [[ -z $FIN_ERR ]]; then
        run_wait /dev/null "$dir/wait.stderr" $((RUN_TIMEOUT + 30)) \
            "${PY[@]}" wait "$NGX_LOG" "$n" --timeout "$RUN_TIMEOUT" --stall 20 --pid "$pid" ||
            FIN_ERR="$(cat "$dir/wait.stderr")"
    fi
    alive "$pid" && FIN_PROC1=$("${PY[@]}" proc "$pid")
    stop_pid "$pid" TERM
    stop_nginx
    local count_args=("$NGX_LOG" "${6:-}")
    [[ -n ${7:-} && -s ${7:-} ]] && count_args+=(--sends "$7")
    FIN_COUNT=$("${PY[@]}" count "${count_args[@]}")
    [[ -z $FIN_ERR && -z $FIN_PROC1 ]] && FIN_ERR="$name exited early: $(tail -c 300 "$dir/$name.stderr")"
    return 0
}

# webhook-sink's pipeline: an http_server source and one webhook sink to nginx, with
# Basic auth from the URL and the body template named by TEMPLATE (default `typical`,
# see above). The request concurrency is OURS_CONC (default CONC).
# The buffer has its default size (memory: 1000 events, disk: 100000), unless
# BUFFER_EVENTS is set: a client faster than delivery is slowed down by back-pressure
# (the source holds its request until there is room), so memory stays bounded. The dead
# receiver run (BUFFER_TYPE `dead`) sends to a closed port with a memory buffer of EVENTS.
write_ours_config() { # FILE SOURCE_PORT PATH BUFFER_TYPE DATA_DIR EVENTS
    local file=$1 src_port=$2 path=$3 buffer=$4 data=$5 events=$6 limits="" url
    local template_var=TEMPLATE_${TEMPLATE:-typical} template_line=""
    url="http://$USER_NAME:$USER_PASS@127.0.0.1:$NGX_PORT$path"
    if [[ $buffer == dead ]]; then
        # Port 9 (discard) on loopback: nothing listens there, every attempt is refused.
        buffer=memory url="http://$USER_NAME:$USER_PASS@127.0.0.1:9$path"
        limits="buffer.max_events = $((events + BATCH * PUSH_CONNS))
buffer.max_bytes = 4294967296"
    elif [[ -n ${BUFFER_EVENTS:-} ]]; then
        limits="buffer.max_events = $BUFFER_EVENTS
buffer.max_bytes = 17179869184"
    fi
    # No template at all (`standard`): the sink sends the standard payload.
    [[ -n ${!template_var} ]] && template_line="template = '''${!template_var}'''"
    cat >"$file" <<EOF
data_dir = "$data"
shutdown_timeout_secs = 30

[sources.events]
type = "http_server"
address = "127.0.0.1:$src_port"
path = "/events"
retry_after_secs = 1
# Back-pressure: a batch that does not fit waits for room rather than being refused.
full_wait_ms = 60000

[sinks.bench]
type = "webhook"
inputs = ["events"]
url = "$url"
$template_line
healthcheck.enabled = false
request.concurrency = ${OURS_CONC:-$CONC}
buffer.type = "$buffer"
$limits
# Were the buffer still full after full_wait_ms, the client would get 503 and resend,
# rather than the events being dead-lettered: every event is delivered or the run fails.
buffer.when_full = "reject"
EOF
}

# The dead receiver: DEAD_N events pushed into a memory buffer big enough for all of
# them while every delivery attempt is refused; the figure is the peak RSS against the
# events' raw JSON size (target: RSS <= 2 x raw + 20 MB).
run_dead() { # RUN
    local run=$1 dir=$TMP/dead-$1 src_port pid proc1="" push="" err=""
    mkdir -p "$dir/data"
    src_port=$("${PY[@]}" port)
    write_ours_config "$dir/pipeline.toml" "$src_port" /hook dead "$dir/data" "$DEAD_N"
    sed -i 's/^shutdown_timeout_secs = .*/shutdown_timeout_secs = 1/' "$dir/pipeline.toml"
    start_bg "$dir/webhook-sink.stdout" "$dir/webhook-sink.stderr" \
        env WEBHOOK_SINK_LOG=error "$BIN" run --config "$dir/pipeline.toml"
    pid=$LAST_PID
    if ! run_wait /dev/null "$dir/health.stderr" 30 "${PY[@]}" health "http://127.0.0.1:$src_port/health" 20 "$pid"; then
        err="webhook-sink did not start: $(tail -c 300 "$dir/webhook-sink.stderr")"
    fi
    if [[ -z $err ]]; then
        run_wait "$dir/push.json" "$dir/push.stderr" "$RUN_TIMEOUT" "${PY[@]}" push \
            --url "http://127.0.0.1:$src_port/events" --n "$DEAD_N" --batch "$BATCH" \
            --conns "$PUSH_CONNS" --timeout "$RUN_TIMEOUT" ||
            err="push failed: $(tail -c 300 "$dir/push.json" "$dir/push.stderr")"
        push=$(cat "$dir/push.json" 2>/dev/null)
        sleep 1
    fi
    alive "$pid" && proc1=$("${PY[@]}" proc "$pid")
    stop_pid "$pid" TERM
    [[ -z $err && -z $proc1 ]] && err="webhook-sink exited early: $(tail -c 300 "$dir/webhook-sink.stderr")"
    "${PY[@]}" record "$RESULTS" --config dead --run "$run" --push "$push" --proc1 "$proc1" \
        --extra "buffered=$DEAD_N" --error "$err"
}

# One webhook-sink run. MODE: memory | disk | lat_full | lat_half | curve.
# Throughput modes push N events as fast as the source takes them; the latency modes
# pace RATE events/s for LAT_SECS seconds towards nginx's /lat location. `curve` is a
# memory run of the sweep: N_CURVE events, request.concurrency OURS_CONC and the
# template TEMPLATE (both set by the caller).
run_ours() { # RUN MODE [RATE]
    local run=$1 mode=$2 rate=${3:-0} name config buffer=memory path=/hook n=$N batch=$BATCH run_args=()
    local dir src_port pid proc0="" push="" err="" push_args=() extra=()
    case $mode in
        memory) config=ours ;;
        memory1) config=ours_1t run_args=(--threads 1) ;;
        curve)
            config=curve_ours n=$N_CURVE
            extra=(--extra "conc=$OURS_CONC" --extra "template=$TEMPLATE"
                --extra "body_bytes=$(wc -c <"$TMP/body-$TEMPLATE.json")")
            ;;
        disk) config=ours_disk buffer=disk ;;
        lat_full | lat_half)
            config=$mode path=/lat buffer=$LAT_BUFFER
            batch=$LAT_BATCH
            n=$(python3 -c "import math; print(max($batch, math.ceil($rate * $LAT_SECS / $batch) * $batch))")
            push_args=(--rate "$rate" --sends "$TMP/$mode-$run/sends.json")
            extra=(--extra "offered=$rate")
            ;;
    esac
    name=$config-$run
    [[ $mode == curve ]] && name=$config-c$OURS_CONC-$TEMPLATE-$run
    dir=$TMP/$name
    mkdir -p "$dir/data"
    local receiver=start_nginx
    [[ $path == /lat ]] && ((HAVE_LAT_RECEIVER)) && receiver=start_latency_receiver
    $receiver "$name" || {
        "${PY[@]}" record "$RESULTS" --config "$config" --run "$run" --error "the receiver did not start"
        return 1
    }
    src_port=$("${PY[@]}" port)
    write_ours_config "$dir/pipeline.toml" "$src_port" "$path" "$buffer" "$dir/data" "$n"
    start_bg "$dir/webhook-sink.stdout" "$dir/webhook-sink.stderr" \
        env WEBHOOK_SINK_LOG=warn "$BIN" run --config "$dir/pipeline.toml" "${run_args[@]}"
    pid=$LAST_PID
    if ! run_wait /dev/null "$dir/health.stderr" 30 "${PY[@]}" health "http://127.0.0.1:$src_port/health" 20 "$pid"; then
        err="webhook-sink did not start: $(tail -c 300 "$dir/webhook-sink.stderr")"
    fi
    if [[ -z $err ]]; then
        proc0=$("${PY[@]}" proc "$pid")
        run_wait "$dir/push.json" "$dir/push.stderr" "$RUN_TIMEOUT" "${PY[@]}" push \
            --url "http://127.0.0.1:$src_port/events" --n "$n" --batch "$batch" \
            --conns "$PUSH_CONNS" --timeout "$RUN_TIMEOUT" "${push_args[@]}" ||
            err="push failed: $(tail -c 300 "$dir/push.json" "$dir/push.stderr")"
        push=$(cat "$dir/push.json" 2>/dev/null)
    fi
    finish_run "$dir" "$pid" "$n" webhook-sink "$err" "$([[ $path == /lat ]] && echo latency)" "$dir/sends.json"
    "${PY[@]}" record "$RESULTS" --config "$config" --run "$run" --count "$FIN_COUNT" --push "$push" \
        --proc0 "$proc0" --proc1 "$FIN_PROC1" --expect "$n" --error "$FIN_ERR" "${extra[@]}"
}

# The bound of a pipeline per core: PROCS webhook-sink processes side by side, each on one
# thread with its own source port, buffer and CONC/PROCS of the requests in flight, and a
# client of its own pushing N/PROCS events over PUSH_CONNS/PROCS connections (at least
# one; the client's connections are split as the requests in flight are), to one nginx.
# Nothing is shared between them, not even per-alert order: what a design with a pipeline
# per thread could reach at most. CPU per event is the processes' sum; peak RSS the
# largest of them.
run_procs() { # RUN
    local run=$1 config=ours_procs name dir k src_port pids=() ports=() pushers=() err="" proc0="" push=""
    local share=$((N / PROCS)) conns=$(((PUSH_CONNS + PROCS - 1) / PROCS))
    name=$config-$run
    dir=$TMP/$name
    start_nginx "$name" || {
        "${PY[@]}" record "$RESULTS" --config "$config" --run "$run" --error "nginx did not start"
        return 1
    }
    for ((k = 1; k <= PROCS; k++)); do
        mkdir -p "$dir/$k/data"
        src_port=$("${PY[@]}" port)
        OURS_CONC=$((CONC / PROCS)) write_ours_config "$dir/$k/pipeline.toml" "$src_port" /hook memory "$dir/$k/data" "$share"
        start_bg "$dir/$k/webhook-sink.stdout" "$dir/$k/webhook-sink.stderr" \
            env WEBHOOK_SINK_LOG=warn "$BIN" run --config "$dir/$k/pipeline.toml" --threads 1
        pids+=("$LAST_PID") ports+=("$src_port")
    done
    for ((k = 1; k <= PROCS; k++)); do
        if [[ -z $err ]] && ! run_wait /dev/null "$dir/$k/health.stderr" 30 \
            "${PY[@]}" health "http://127.0.0.1:${ports[k - 1]}/health" 20 "${pids[k - 1]}"; then
            err="webhook-sink $k did not start: $(tail -c 300 "$dir/$k/webhook-sink.stderr")"
        fi
    done
    if [[ -z $err ]]; then
        proc0=$("${PY[@]}" proc "${pids[@]}")
        for ((k = 1; k <= PROCS; k++)); do
            start_bg "$dir/$k/push.json" "$dir/$k/push.stderr" timeout "$RUN_TIMEOUT" "${PY[@]}" push \
                --url "http://127.0.0.1:${ports[k - 1]}/events" --n "$share" --batch "$BATCH" \
                --conns "$conns" --timeout "$RUN_TIMEOUT"
            pushers+=("$LAST_PID")
        done
        for ((k = 1; k <= PROCS; k++)); do
            wait "${pushers[k - 1]}" || err="push $k failed: $(tail -c 300 "$dir/$k/push.json" "$dir/$k/push.stderr")"
            forget_pid "${pushers[k - 1]}"
        done
        push=$(cat "$dir/1/push.json" 2>/dev/null)
        run_wait /dev/null "$dir/wait.stderr" $((RUN_TIMEOUT + 30)) \
            "${PY[@]}" wait "$NGX_LOG" "$((share * PROCS))" --timeout "$RUN_TIMEOUT" --stall 20 ||
            err="${err:-$(cat "$dir/wait.stderr")}"
    fi
    local proc1=""
    for pid in "${pids[@]}"; do alive "$pid" || err="${err:-a webhook-sink process exited early}"; done
    [[ -z $err ]] && proc1=$("${PY[@]}" proc "${pids[@]}")
    for pid in "${pids[@]}"; do stop_pid "$pid" TERM; done
    stop_nginx
    "${PY[@]}" record "$RESULTS" --config "$config" --run "$run" --count "$("${PY[@]}" count "$NGX_LOG")" \
        --push "$push" --proc0 "$proc0" --proc1 "$proc1" --expect "$((share * PROCS))" --error "$err" \
        --extra "procs=$PROCS"
}

# The ceiling: wrk sends the body webhook-sink renders for a benchmark event, with the
# same Authorization header, over CONC connections, to the same nginx location.
# CONFIG (default `ceiling`) and IN_FLIGHT (default CONC) are for the sweep.
run_ceiling() { # RUN [CONFIG] [IN_FLIGHT]
    local run=$1 config=${2:-ceiling} conc=${3:-$CONC} name dir count="" err="" wrk_rate threads extra=()
    name=$config-$run
    [[ $config != ceiling ]] && name=$config-c$conc-$run extra=(--extra "conc=$conc")
    dir=$TMP/$name
    threads=$((WRK_THREADS < conc ? WRK_THREADS : conc))
    mkdir -p "$dir"
    start_nginx "$name" || {
        "${PY[@]}" record "$RESULTS" --config "$config" --run "$run" --error "nginx did not start" "${extra[@]}"
        return 1
    }
    run_wait "$dir/wrk.out" "$dir/wrk.err" $((WRK_SECS + 30)) \
        env BENCH_BODY_FILE="$BODY_FILE" BENCH_AUTH="$AUTH" \
        wrk -t "$threads" -c "$conc" -d "${WRK_SECS}s" -s "$HERE/post.lua" "http://127.0.0.1:$NGX_PORT/hook" ||
        err="wrk failed: $(tail -c 300 "$dir/wrk.out" "$dir/wrk.err")"
    stop_nginx
    wrk_rate=$(awk '/^Requests\/sec:/ {print $2}' "$dir/wrk.out")
    count=$("${PY[@]}" count "$NGX_LOG")
    "${PY[@]}" record "$RESULTS" --config "$config" --run "$run" --count "$count" --error "$err" \
        --extra "wrk_rate=${wrk_rate:-0}" --extra "wrk_summary=$(tr -d '\n' <"$dir/wrk.err")" "${extra[@]}"
}

# The bare client: examples/hyper_loop.rs, a plain hyper-util client loop keeping
# IN_FLIGHT (default CONC) POSTs in flight for WRK_SECS seconds, with the body of
# TEMPLATE (default `typical`), the same headers and auth, to the same nginx location.
# Deliveries are counted at nginx, like every other run; CPU and RSS are the loop's own.
run_hyper() { # RUN [CONFIG] [IN_FLIGHT] [TEMPLATE]
    local run=$1 config=${2:-hyper} conc=${3:-$CONC} template=${4:-typical}
    local name dir count="" err="" out="" threads_args=() extra=()
    name=$config-$run
    if [[ $config != hyper ]]; then
        name=$config-c$conc-$template-$run
        extra=(--extra "conc=$conc" --extra "template=$template"
            --extra "body_bytes=$(wc -c <"$TMP/body-$template.json")")
    fi
    dir=$TMP/$name
    ((HYPER_THREADS > 0)) && threads_args=(--threads "$HYPER_THREADS")
    mkdir -p "$dir"
    start_nginx "$name" || {
        "${PY[@]}" record "$RESULTS" --config "$config" --run "$run" --error "nginx did not start" "${extra[@]}"
        return 1
    }
    run_wait "$dir/hyper.json" "$dir/hyper.stderr" $((WRK_SECS + 30)) \
        "$HYPER_BIN" --url "http://127.0.0.1:$NGX_PORT/hook" --body-file "$TMP/body-$template.json" \
        --auth "$AUTH" --conc "$conc" --secs "$WRK_SECS" "${threads_args[@]}" ||
        err="hyper_loop failed: $(tail -c 300 "$dir/hyper.json" "$dir/hyper.stderr")"
    stop_nginx
    out=$(tail -n 1 "$dir/hyper.json" 2>/dev/null)
    count=$("${PY[@]}" count "$NGX_LOG")
    "${PY[@]}" record "$RESULTS" --config "$config" --run "$run" --count "$count" --client "$out" \
        --error "$err" "${extra[@]}"
}

# The peer: syslog-ng reads the same N events (appended to a file it follows) and
# POSTs one request per event with its http() destination.
run_peer() { # RUN
    local run=$1 dir=$TMP/peer-$1 pid proc0="" err="" i
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
    fi
    finish_run "$dir" "$pid" "$N" syslog-ng "$err"
    "${PY[@]}" record "$RESULTS" --config peer --run "$run" --count "$FIN_COUNT" \
        --proc0 "$proc0" --proc1 "$FIN_PROC1" --expect "$N" --error "$FIN_ERR"
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

# The peer's input, and the bodies wrk and the hyper loop send (rendered by
# webhook-sink itself, from the same event and config as its runs).
EVENTS_FILE=$TMP/events.ndjson
"${PY[@]}" gen "$N" "$EVENTS_FILE"
mkdir -p "$TMP/render"
"${PY[@]}" event >"$TMP/render/event.json"
render_body() { # TEMPLATE -> $TMP/body-TEMPLATE.json
    local TEMPLATE=$1 NGX_PORT=1 out=$TMP/render/body-$1
    write_ours_config "$out.toml" 1 /hook memory "$TMP/render/data" "$N"
    if ! "$BIN" render --config "$out.toml" --sink bench --event "$TMP/render/event.json" \
        >"$out.out" 2>"$out.err"; then
        echo "load.sh: webhook-sink render failed for the $1 template: $(cat "$out.err")" >&2
        exit 1
    fi
    python3 -c 'import sys; b = open(sys.argv[1], "rb").read(); open(sys.argv[2], "wb").write(b[:-1] if b.endswith(b"\n") else b)' \
        "$out.out" "$TMP/body-$1.json"
}
if [[ $CURVE == 1 ]]; then
    for t in "${TEMPLATE_NAMES[@]}"; do
        render_body "$t"
    done
else
    render_body typical
fi
BODY_FILE=$TMP/body-typical.json

STARTED=$(date +%s)
for ((run = 1; run <= RUNS; run++)); do
    log "round $run/$RUNS: ours (memory buffer), N=$N"
    run_ours "$run" memory
    if [[ $ONE_THREAD == 1 ]]; then
        log "round $run/$RUNS: ours (memory buffer, --threads 1), N=$N"
        run_ours "$run" memory1
    fi
    if ((PROCS > 1)); then
        log "round $run/$RUNS: ours, $PROCS processes side by side, N=$N"
        run_procs "$run"
    fi
    if ((HAVE_WRK)); then
        log "round $run/$RUNS: ceiling (wrk, ${WRK_SECS}s)"
        run_ceiling "$run"
    fi
    if [[ $HYPER == 1 ]] && ((HAVE_HYPER)); then
        log "round $run/$RUNS: bare client (hyper-util loop, $CONC in flight, ${WRK_SECS}s)"
        run_hyper "$run"
    fi
    if ((HAVE_SYSLOG_NG)); then
        log "round $run/$RUNS: peer (syslog-ng http()), N=$N"
        run_peer "$run"
    fi
    if [[ $DEAD == 1 ]]; then
        log "round $run/$RUNS: ours with a dead receiver, $DEAD_N events buffered"
        run_dead "$run"
    fi
    if [[ $DISK == 1 ]]; then
        log "round $run/$RUNS: ours (disk buffer), N=$N"
        run_ours "$run" disk
    fi
    if [[ $LAT == 1 ]]; then
        # Full load = the median deliveries/s of the memory runs so far (or LAT_RATE, to
        # compare latency at one rate across binaries or runtimes).
        full=${LAT_RATE:-$("${PY[@]}" median "$RESULTS" ours rate)} || full=""
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

# The sweep: webhook-sink (memory buffer, N_CURVE events), the hyper loop and wrk at
# each concurrency of CURVE_CONC with the typical template, then webhook-sink and the
# hyper loop at CONC with each template. The typical template at CONC is the
# concurrency point's run when CONC is one of them.
if [[ $CURVE == 1 ]]; then
    in_conc_points=0
    for c in "${CURVE_POINTS[@]}"; do
        ((c == CONC)) && in_conc_points=1
    done
    for ((crun = 1; crun <= CURVE_RUNS; crun++)); do
        for c in "${CURVE_POINTS[@]}"; do
            log "sweep $crun/$CURVE_RUNS: ours at concurrency $c, N=$N_CURVE"
            OURS_CONC=$c TEMPLATE=typical run_ours "$crun" curve
            if ((HAVE_HYPER)); then
                log "sweep $crun/$CURVE_RUNS: hyper loop, $c in flight, ${WRK_SECS}s"
                run_hyper "$crun" curve_hyper "$c" typical
            fi
            if ((HAVE_WRK)) && [[ $CURVE_WRK == 1 ]]; then
                log "sweep $crun/$CURVE_RUNS: wrk, $c connections, ${WRK_SECS}s"
                run_ceiling "$crun" curve_wrk "$c"
            fi
        done
        for t in "${TEMPLATE_NAMES[@]}"; do
            [[ $t == typical ]] && ((in_conc_points)) && continue
            log "sweep $crun/$CURVE_RUNS: ours with the $t template ($(wc -c <"$TMP/body-$t.json") bytes), concurrency $CONC, N=$N_CURVE"
            OURS_CONC=$CONC TEMPLATE=$t run_ours "$crun" curve
            if ((HAVE_HYPER)); then
                log "sweep $crun/$CURVE_RUNS: hyper loop with the $t body, $CONC in flight, ${WRK_SECS}s"
                run_hyper "$crun" curve_hyper "$CONC" "$t"
            fi
        done
    done
fi
ELAPSED=$(($(date +%s) - STARTED))

NOTE="load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg); took ${ELAPSED}s"
SETTINGS="$VERSIONS; N=$N events, BATCH=$BATCH, CONC=$CONC, client connections=$PUSH_CONNS"
[[ $DISK == 1 ]] && SETTINGS+="; disk buffer on $(df -T "$TMP" | awk 'NR == 2 {print $2 " (" $1 ")"}')"
((HAVE_HYPER)) && SETTINGS+="; hyper loop: $([[ $HYPER_THREADS == 0 ]] && echo "tokio default runtime ($(nproc) workers)" || echo "$HYPER_THREADS tokio thread(s)")"
[[ $LAT == 1 ]] && SETTINGS+="; latency receiver: $( ((HAVE_LAT_RECEIVER)) && echo "examples/latency_receiver (µs stamps)" || echo "nginx (ms stamps)")"
[[ $CURVE == 1 ]] && SETTINGS+="; sweep: N_CURVE=$N_CURVE events, concurrency $CURVE_CONC, $CURVE_RUNS run(s) per point"
"${PY[@]}" report "$RESULTS" --machine "$MACHINE" --cmd "$COMMAND" --settings "$SETTINGS" \
    --note "$NOTE" --conc "$CONC" --procs "$PROCS"
if [[ $STORM == 1 ]]; then
    # At one request per second the CPU is not what limits: the same binary as above.
    python3 "$HERE/storm.py" --bin "$BIN" || exit 1
fi
if grep -q '"error"' "$RESULTS"; then
    exit 1
fi
exit 0
