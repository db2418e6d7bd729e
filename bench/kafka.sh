#!/usr/bin/env bash
# The Kafka scenario of the load benchmark (see bench/README.md and examples/kafka_bench.rs):
# events/s from Kafka through one webhook-sink instance, and the time a surviving instance
# takes to take over the partitions of one killed with SIGKILL. Runs a real Kafka broker
# (fetched once by scripts/fetch-kafka.sh) on loopback.
#
#   bash bench/kafka.sh                # N=50000 events, session_timeout_ms=6000
#   N=200000 SESSION_TIMEOUT_MS=10000 bash bench/kafka.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KAFKA_LIBS="$(scripts/fetch-kafka.sh)"
export KAFKA_LIBS
cargo build --release --bin webhook-sink --example kafka_bench
target="${CARGO_TARGET_DIR:-target}/release"
"$target/examples/kafka_bench" "$target/webhook-sink"
