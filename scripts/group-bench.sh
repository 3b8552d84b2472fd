#!/usr/bin/env bash
# Consumer-group benchmark (benches/examples/groups.rs), as docs/performance.md records it:
#   scripts/group-bench.sh
#
# Builds the release `sluice` binary and the `groups` example into CARGO_TARGET_DIR
# (default /work/target-bench if it exists, else target/), prints the load average, runs
# the example against that binary (it starts and stops its own `sluice dev --brokers 3`
# and member processes), and prints the load average again: the machine is shared.
#
# Environment passed through to the example: SLUICE_BENCH_SECS, SLUICE_BENCH_ROUNDS,
# SLUICE_BENCH_JOIN_REPEATS, SLUICE_BENCH_FAILOVER_REPEATS, SLUICE_BENCH_SKIP (see the
# example's header). GROUP_BENCH_NO_BUILD=1 skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if [ -d /work/target-bench ]; then CARGO_TARGET_DIR=/work/target-bench; else CARGO_TARGET_DIR=$PWD/target; fi
fi
export CARGO_TARGET_DIR
if [ "${GROUP_BENCH_NO_BUILD:-0}" != 1 ]; then
  cargo build --release --quiet -p sluice --bin sluice -p sluice-benches --example groups
fi
echo "loadavg before: $(cat /proc/loadavg)"
"$CARGO_TARGET_DIR/release/examples/groups" "$CARGO_TARGET_DIR/release/sluice"
echo "loadavg after: $(cat /proc/loadavg)"
