#!/usr/bin/env bash
# Long seeded fault campaigns through the real binaries (tests/faults.rs), outside CI.
#
#   scripts/fault-campaign.sh                 one campaign of FAULTS=1000 with a fresh seed
#   scripts/fault-campaign.sh 17 42 99        one campaign per given seed
#   RUNS=5 FAULTS=200 scripts/fault-campaign.sh   five campaigns of 200 faults, fresh seeds
#
# Environment: FAULTS (faults per campaign, default 1000), RUNS (campaigns when no seeds
# are given, default 1), FAULT_NETNS=0 (no network partitions), FAULT_DISK=0 (no full
# disk), FAULT_SLOW_DISK=0 (no slow disk), FAULT_ONLY=kind[,kind] (only those kinds),
# PROFILE=release (build and run optimized; default dev), LOG_DIR (default
# target/fault-campaign).
# While a campaign runs, a build in the same tree replaces target/debug/sluice under it.
# To keep building, run a copy instead: copy the faults test binary and target/debug/sluice
# aside, and inside `unshare -m` bind-mount the copied sluice over target/debug/sluice (the
# path the test binary has compiled in) before starting the copied test binary with
# FAULT_SEED=N FAULTS=M ... --nocapture.
# Each campaign's output goes to LOG_DIR/seed-N.log; the summary names every seed, its
# result, how many records were acknowledged and how long it took. A failed seed
# replays with: FAULT_SEED=N FAULTS=M cargo test --features sluice/etcd --test faults -- --nocapture
set -uo pipefail
cd "$(dirname "$0")/.."

FAULTS="${FAULTS:-1000}"
RUNS="${RUNS:-1}"
LOG_DIR="${LOG_DIR:-target/fault-campaign}"
mkdir -p "$LOG_DIR"
profile=()
[[ "${PROFILE:-dev}" == release ]] && profile=(--release)

seeds=("$@")
if ((${#seeds[@]} == 0)); then
  for ((i = 0; i < RUNS; i++)); do
    seeds+=("$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')")
  done
fi

# Build once, so the campaigns' durations are the campaigns'.
cargo test "${profile[@]}" --features sluice/etcd --test faults --no-run || exit 1

passed=0
failed=0
summary=()
for seed in "${seeds[@]}"; do
  log="$LOG_DIR/seed-$seed.log"
  echo "== FAULT_SEED=$seed FAULTS=$FAULTS (log: $log)"
  start=$(date +%s)
  FAULT_SEED="$seed" FAULTS="$FAULTS" cargo test "${profile[@]}" --features sluice/etcd \
    --test faults -- --nocapture >"$log" 2>&1
  rc=$?
  took=$(($(date +%s) - start))
  line=$(grep -a '^FAULT-CAMPAIGN ' "$log" | tail -1)
  if ((rc == 0)) && [[ -n "$line" ]]; then
    passed=$((passed + 1))
    summary+=("ok    ${line#FAULT-CAMPAIGN } (wall ${took}s)")
  else
    failed=$((failed + 1))
    # The first problem the campaign named, else the panic message.
    why=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -a -A1 '^problems:' | sed -n 2p)
    [[ -n "$why" ]] || why=$(grep -a -A1 -m1 'panicked at' "$log" | tail -1)
    summary+=("FAIL  seed=$seed faults=$FAULTS (wall ${took}s): ${why:-see $log} (log: $log)")
    grep -a -A40 'fault campaign FAILED' "$log" | head -60
  fi
  echo "${summary[-1]}"
done

echo
echo "fault campaign summary: ${#seeds[@]} campaign(s) of FAULTS=$FAULTS, $passed passed, $failed failed"
printf '  %s\n' "${summary[@]}"
((failed == 0))
