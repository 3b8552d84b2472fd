#!/usr/bin/env bash
# Restart time after kill -9 against a clean restart, with GB written since start.
#
#   scripts/restart-bench.sh [GB] [PARTITIONS]     (defaults: 20 GiB, 4 partitions)
#
# One broker (`sluice dev`, release build), RF 1, acks=1, no flush policy (the default:
# nothing fsynced before the ack). Writes GB of 1 KiB records, spread over PARTITIONS
# single-partition topics written at once (each has an active segment of up to
# `segment.bytes`, 1 GiB, that a crash leaves unflushed), kills the process with
# SIGKILL, drops the page cache (as after a power cycle, so recovery reads from disk),
# and times the restart until `dev` prints `ready`; then stops it cleanly (SIGINT),
# drops the cache again and times a clean restart. Needs root (drop_caches) and GB of
# free disk in $TMPDIR; the data directory is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
GB=${1:-20}
PARTS=${2:-4}
cargo build --release --quiet --features sluice/etcd,sluice/postgres
S=$PWD/target/release/sluice
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-restart.XXXXXX")
dev=
cleanup() {
  [ -n "$dev" ] && { kill -9 "$dev" 2>/dev/null; wait "$dev" 2>/dev/null; } || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
export SLUICE_BOOTSTRAP="127.0.0.1:$port"

start() { # $1: output file; sets $took to the seconds until `ready`, $dev to the pid
  local out=$1 t0
  t0=$(date +%s.%N)
  RUST_LOG=warn $S dev --data-dir "$work/data" --listen "127.0.0.1:$port" > "$out" 2>&1 &
  dev=$!
  for _ in $(seq 6000); do
    if grep -q '^ready' "$out" 2>/dev/null; then
      took=$(python3 -c "print(round($(date +%s.%N) - $t0, 2))")
      return
    fi
    if ! kill -0 "$dev" 2>/dev/null; then echo "dev exited:" >&2; cat "$out" >&2; exit 1; fi
    sleep 0.05
  done
  echo "not ready after 300 s" >&2
  exit 1
}
end_offsets() {
  for i in $(seq "$PARTS"); do
    $S topic describe "big$i" --output json |
      python3 -c "import json,sys; print(json.load(sys.stdin)['partitions'][0]['log_end_offset'], end=' ')"
  done
}

echo "durability: acks=1, replication factor 1, no fsync before the ack (flush.* unset), $PARTS partitions, 1 KiB records, segment.bytes 1 GiB"
start "$work/dev1.out"
echo "cold start (empty): ${took}s"
records=$((GB * 1024 * 1024 / PARTS))
t0=$(date +%s.%N)
pids=()
for i in $(seq "$PARTS"); do
  $S topic create "big$i" --partitions 1 --replication-factor 1 > /dev/null
  $S perf produce --topic "big$i" --num-records "$records" --record-size 1024 --acks 1 \
    --batch-size 1048576 --linger-ms 5 > "$work/produce$i.out" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
wrote=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
echo "wrote $GB GiB in ${wrote}s ($PARTS producers at once)"
du -sh "$work/data" | awk '{print "data directory: " $1}'
before=$(end_offsets)
kill -9 "$dev"
wait "$dev" 2>/dev/null || true
sync
echo 3 > /proc/sys/vm/drop_caches
start "$work/dev2.out"
crash=$took
after=$(end_offsets)
echo "log end offsets before the kill -9: $before; after the restart: $after"
kill -INT "$dev"
wait "$dev" 2>/dev/null || true
sync
echo 3 > /proc/sys/vm/drop_caches
start "$work/dev3.out"
clean=$took
kill -INT "$dev"
wait "$dev" 2>/dev/null || true
dev=
echo "restart after kill -9: ${crash}s; clean restart: ${clean}s; ratio $(python3 -c "print(round($crash / $clean, 2))")"
