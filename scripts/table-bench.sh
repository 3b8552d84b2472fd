#!/usr/bin/env bash
# Table bootstrap benchmark, as docs/performance.md records it:
#   scripts/table-bench.sh [ROWS] [PARTITIONS...]      (default 3000000 rows; 1 and 8 partitions)
# For each partition count: a fresh `sluice dev` (release, 1 broker, log cleaner off so it
# does not compete for the 2 cores), ROWS distinct keys of ~100 B values produced with
# acks=all RF 1 (fsync: none, the broker default), then benches/src/bin/table_bootstrap.rs
# opens a RawTable and prints time-to-ready, RSS, bytes/row and `get` latency as JSON.
#
# Hook for comparisons (e.g. Postgres COPY of the same rows): `table_bootstrap --csv PATH
# --rows N` writes exactly the rows the topic gets (`key,value`, value quoted JSON), from
# the same `row(i)` function; load that file elsewhere with the same N.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-3000000}
shift || true
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(1 8)
cargo build --release --quiet --bin sluice -p sluice
cargo build --release --quiet -p sluice-benches --bin table_bootstrap
S=./target/release/sluice
B=./target/release/table_bootstrap
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-table-bench.XXXXXX")
dev=
trap '[ -n "$dev" ] && kill -INT $dev 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for p in "${parts[@]}"; do
    port=$((20000 + RANDOM % 20000))
    RUST_LOG=warn $S dev --data-dir "$work/data-$p" --listen "127.0.0.1:$port" \
        --log-cleaner-enable false > "$work/dev-$p.out" &
    dev=$!
    for _ in $(seq 200); do grep -q '^ready' "$work/dev-$p.out" 2>/dev/null && break; sleep 0.1; done
    echo "== $rows rows, $p partition(s)"
    $B --bootstrap "127.0.0.1:$port" --rows "$rows" --partitions "$p"
    kill -INT $dev; wait $dev || true; dev=
    rm -rf "$work/data-$p"
done
