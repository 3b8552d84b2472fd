#!/usr/bin/env bash
# End-to-end performance run on this machine, as docs/performance.md records it:
#   1. the disk's raw sequential write speed (dd, 1 GiB, with and without fsync),
#   2. `sluice dev` (release build, 1 broker) with single-partition topics,
#   3. perf produce at full speed for 100 B and 1 KiB records (acks=1),
#   4. perf produce at half the measured 100 B rate (p99 produce->ack),
#   5. end-to-end latency at a fixed rate, and perf consume.
# Durability settings are printed by every perf command beside its numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
S=./target/release/sluice
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-perf.XXXXXX")
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$work"' EXIT

echo "== raw disk, same filesystem as the data directory ($work)"
dd if=/dev/zero of="$work/dd" bs=1M count=1024 2>&1 | tail -1 | sed 's/^/write(2), no fsync: /'
dd if=/dev/zero of="$work/dd" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1 | sed 's/^/write(2) + fdatasync: /'
rm -f "$work/dd"

port=$((20000 + RANDOM % 20000))
RUST_LOG=warn $S dev --data-dir "$work/data" --listen "127.0.0.1:$port" > "$work/dev.out" &
dev=$!
for _ in $(seq 200); do grep -q '^ready' "$work/dev.out" 2>/dev/null && break; sleep 0.1; done
export SLUICE_BOOTSTRAP="127.0.0.1:$port"
for t in p100 p1k lat e2e; do $S topic create $t --partitions 1 --replication-factor 1 > /dev/null; done

echo "== max throughput, 100 B records"
$S perf produce --topic p100 --num-records 5000000 --record-size 100 --acks 1 --batch-size 1048576 --linger-ms 5 --output json | tee "$work/p100.json"
echo "== max throughput, 1 KiB records"
$S perf produce --topic p1k --num-records 1000000 --record-size 1024 --acks 1 --batch-size 1048576 --linger-ms 5
half=$(python3 -c "import json; print(int(json.load(open('$work/p100.json'))['records_per_sec'] / 2))")
echo "== half of the measured 100 B maximum: $half records/s"
$S perf produce --topic lat --num-records $((half * 5)) --record-size 100 --acks 1 --batch-size 1048576 --linger-ms 1 --throughput "$half"
echo "== end to end (produce -> consume) at 100000 records/s"
$S perf produce --topic e2e --num-records 500000 --record-size 100 --acks 1 --linger-ms 1 --throughput 100000 --end-to-end
echo "== consume"
$S perf consume --topic p1k --num-records 1000000
