#!/usr/bin/env bash
# Instructions per delivered event, counted by valgrind's callgrind: steadier than the
# wall clock on a noisy machine (two runs of one binary differ by about 0.3%).
#
#   bash bench/callgrind.sh            # N=20000 events, both runtimes, ~3 minutes
#   N=50000 KEEP=1 bash bench/callgrind.sh
#
# It runs bench/load.sh's own webhook-sink configurations (default runtime, then
# `run --threads 1`) with webhook-sink under callgrind, everything else skipped, and
# prints the instructions counted in webhook-sink per delivered event (start-up
# included, the same in every run). KEEP=1 keeps the callgrind files for
# `callgrind_annotate`. Needs valgrind (apt-get install -y valgrind) and what load.sh needs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
N=${N:-20000}
KEEP=${KEEP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REAL=${BIN:-$TARGET_DIR/release/webhook-sink}

command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is required (apt-get install -y valgrind)" >&2; exit 2; }
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi

OUT=$(mktemp -d "${TMPDIR:-/tmp}/webhook-sink-callgrind.XXXXXX")
cleanup() { [[ $KEEP == 1 ]] || rm -rf "$OUT"; }
trap cleanup EXIT

# load.sh starts `BIN run ...` for each webhook-sink configuration; this wrapper puts
# those (and only those) under callgrind, numbering the files in the order they start.
cat >"$OUT/bin.sh" <<WRAPPER
#!/usr/bin/env bash
if [[ \${1:-} == run ]]; then
    n=\$(ls "$OUT"/*.cg 2>/dev/null | wc -l)
    exec valgrind --tool=callgrind --callgrind-out-file="$OUT/\$n.cg" "$REAL" "\$@"
fi
exec "$REAL" "\$@"
WRAPPER
chmod +x "$OUT/bin.sh"

QUICK=1 N=$N DISK=0 DEAD=0 LAT=0 HYPER=0 CEILING=0 PEER=0 ONE_THREAD=1 PROCS=0 SKIP_BUILD=1 \
    RUN_TIMEOUT=${RUN_TIMEOUT:-900} BIN="$OUT/bin.sh" bash "$HERE/load.sh" >"$OUT/load.log" 2>&1 || {
    echo "callgrind.sh: the load run failed; its log:" >&2
    tail -20 "$OUT/load.log" >&2
    exit 1
}

echo "instructions per delivered event (callgrind, N=$N, $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)):"
for i in 0 1; do
    label=$([[ $i == 0 ]] && echo "default runtime" || echo "run --threads 1")
    total=$(grep -m1 '^summary:' "$OUT/$i.cg" | awk '{print $2}')
    awk -v t="$total" -v n="$N" -v l="$label" 'BEGIN { printf "  %-16s %8.1fk\n", l, t / n / 1000 }'
done
[[ $KEEP == 1 ]] && echo "callgrind files kept in $OUT (callgrind_annotate $OUT/1.cg)"
exit 0
