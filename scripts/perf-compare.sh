#!/usr/bin/env bash
# Throughput of two sluice binaries measured alternately in one run, on the same
# machine and disk: acks=all on three replicas (min.insync.replicas=2) and acks=1 on one,
# each round on a fresh `sluice dev --brokers 3`. Prints each measurement and the ratio
# of the medians (B / A). Used to check that a change does not slow the hot path:
#
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release)
#   cargo build --release
#   scripts/perf-compare.sh /tmp/base-target/release/sluice target/release/sluice [ROUNDS] [RECORD_SIZE]
#
# RECORDS sets the records per measurement; CONFIGS="1,1" limits the runs to
# replication factor 1 with acks=1 (default: "3,all" and "1,1"); PERF_CLIENT=PATH uses
# one client binary for both, so only the brokers differ.
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
  local cpu0 cpu1 rps
  cpu0=$(awk '{print $14 + $15}' "/proc/$dev/stat")
  # PERF_CLIENT=PATH runs the load with one client binary for both (compares brokers only).
  rps=$("${PERF_CLIENT:-$bin}" perf produce --topic perf --num-records "$records" --record-size "$size" --acks "$acks" \
    --batch-size 1048576 --linger-ms 5 --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["records_per_sec"])')
  cpu1=$(awk '{print $14 + $15}' "/proc/$dev/stat")
  # Broker CPU (user + system, ms) per million records: steadier than throughput on a
  # machine whose two cores the client and the brokers share.
  echo "$rps $(( (cpu1 - cpu0) * 1000 / $(getconf CLK_TCK) * 1000000 / records ))"
  kill -INT "$dev"; wait "$dev" 2>/dev/null || true; dev=
  rm -rf "$data"
}

echo "A = $A"
echo "B = $B"
echo "records: $records x $size B, batch 1 MiB, linger 5 ms, no fsync (flush left to the OS), sluice dev --brokers 3"
declare -A results cpus
for r in $(seq "$rounds"); do
  for cfg in ${CONFIGS:-"3,all" "1,1"}; do
    IFS=, read -r -a parts <<< "$cfg"; set -- "${parts[@]}"
    for which in A B; do
      bin=${!which}
      read -r v cpu <<< "$(measure "$bin" "$1" "$2")"
      results["$which $1 $2"]+="$v "
      cpus["$which $1 $2"]+="$cpu "
      printf 'round %d  %s  rf=%s acks=%-3s  %12.0f records/s  broker CPU %5d ms per million records\n' "$r" "$which" "$1" "$2" "$v" "$cpu"
    done
  done
done
for cfg in ${CONFIGS:-"3,all" "1,1"}; do
  IFS=, read -r -a parts <<< "$cfg"; set -- "${parts[@]}"
  python3 - "${results["A $1 $2"]}" "${results["B $1 $2"]}" "${cpus["A $1 $2"]}" "${cpus["B $1 $2"]}" "$1" "$2" <<'PY'
import statistics, sys
med = lambda arg: statistics.median(float(x) for x in arg.split())
ma, mb, ca, cb = (med(a) for a in sys.argv[1:5])
print(f"rf={sys.argv[5]} acks={sys.argv[6]:<3}  median A {ma:,.0f}  B {mb:,.0f} records/s  B/A = {mb/ma:.3f};"
      f"  broker CPU per million records A {ca:,.0f} ms  B {cb:,.0f} ms  B/A = {cb/ca:.3f}")
PY
done
