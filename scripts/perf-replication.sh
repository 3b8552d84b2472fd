#!/usr/bin/env bash
# acks=all on three replicas against acks=1 on one, measured alternately in one run on
# one `sluice dev --brokers 3` (release build), as docs/performance.md records it.
# Usage: scripts/perf-replication.sh [ROUNDS] [RECORD_SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
size=${2:-100}
cargo build --release --quiet
S=./target/release/sluice
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-perf.XXXXXX")
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$work"' EXIT

port=$((20000 + RANDOM % 20000))
RUST_LOG=warn $S dev --brokers 3 --data-dir "$work/data" --listen "127.0.0.1:$port" > "$work/dev.out" &
dev=$!
for _ in $(seq 300); do grep -q '^ready' "$work/dev.out" 2>/dev/null && break; sleep 0.1; done
export SLUICE_BOOTSTRAP="127.0.0.1:$port"
records=$((200000000 / size))
for r in $(seq "$rounds"); do
  $S topic create "rf1-$r" --partitions 1 --replication-factor 1 > /dev/null
  $S topic create "rf3-$r" --partitions 1 --replication-factor 3 --config min.insync.replicas=2 > /dev/null
  echo "== round $r: acks=1, replication factor 1"
  $S perf produce --topic "rf1-$r" --num-records "$records" --record-size "$size" --acks 1 --batch-size 1048576 --linger-ms 5
  echo "== round $r: acks=all, replication factor 3, min.insync.replicas=2"
  $S perf produce --topic "rf3-$r" --num-records "$records" --record-size "$size" --acks all --batch-size 1048576 --linger-ms 5
done
