#!/usr/bin/env bash
# Throughput of two sluice binaries measured alternately in one run, on the same
# machine and disk: acks=all on three replicas (min.insync.replicas=2) and acks=1 on one,
# each round on a fresh `sluice dev --brokers 3`. Prints each measurement and the ratio
# of the medians (B / A). Used to check that a change does not slow the hot path:
#
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release)
#   cargo build --release
#   scripts/perf-compare.sh /tmp/base-target/release/sluice target/release/sluice [ROUNDS] [RECORD_SIZE]
set -euo pipefail
A=$(realpath "$1"); B=$(realpath "$2")
rounds=${3:-3}
size=${4:-100}
records=${RECORDS:-$((100000000 / size))}
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-perfcmp.XXXXXX")
dev=
cleanup() { [[ -n "$dev" ]] && kill -INT "$dev" 2>/dev/null && wait "$dev" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# One measurement: prints records/s of `perf produce` for (binary, rf, acks).
measure() {
  local bin=$1 rf=$2 acks=$3 port data
  port=$((20000 + RANDOM % 20000))
  data="$work/data-$RANDOM"
  RUST_LOG=warn "$bin" dev --brokers 3 --data-dir "$data" --listen "127.0.0.1:$port" > "$work/dev.out" 2>&1 &
  dev=$!
  for _ in $(seq 300); do grep -q '^ready' "$work/dev.out" 2>/dev/null && break; sleep 0.1; done
  export SLUICE_BOOTSTRAP="127.0.0.1:$port"
  # Older builds print `ready` before every broker registered: retry the create.
  for _ in $(seq 100); do
    "$bin" topic create perf --partitions 1 --replication-factor "$rf" --config min.insync.replicas=$(( rf > 1 ? 2 : 1 )) > /dev/null 2>&1 && break
    sleep 0.1
  done
  "$bin" perf produce --topic perf --num-records "$records" --record-size "$size" --acks "$acks" \
    --batch-size 1048576 --linger-ms 5 --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["records_per_sec"])'
  kill -INT "$dev"; wait "$dev" 2>/dev/null || true; dev=
  rm -rf "$data"
}

echo "A = $A"
echo "B = $B"
echo "records: $records x $size B, batch 1 MiB, linger 5 ms, no fsync (flush left to the OS), sluice dev --brokers 3"
declare -A results
for r in $(seq "$rounds"); do
  for cfg in "3 all" "1 1"; do
    set -- $cfg
    for which in A B; do
      bin=${!which}
      v=$(measure "$bin" "$1" "$2")
      results["$which $1 $2"]+="$v "
      printf 'round %d  %s  rf=%s acks=%-3s  %12.0f records/s\n' "$r" "$which" "$1" "$2" "$v"
    done
  done
done
for cfg in "3 all" "1 1"; do
  set -- $cfg
  python3 - "${results["A $1 $2"]}" "${results["B $1 $2"]}" "$1" "$2" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"rf={sys.argv[3]} acks={sys.argv[4]:<3}  median A {ma:,.0f}  B {mb:,.0f} records/s  B/A = {mb/ma:.3f}")
PY
done
