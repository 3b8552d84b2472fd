#!/usr/bin/env bash
# A long seeded campaign of the replication simulator (sim/), outside CI.
#
#   scripts/sim-campaign.sh                 100000 seeds from 1
#   SIM_SEEDS=500000 SIM_FIRST_SEED=100001 scripts/sim-campaign.sh
#
# Prints how many seeds ran, the steps, acknowledged records and faults they covered, or
# the first failing seed with its last events. Replay one: SIM_SEED=N cargo test -p sluice-sim --release
set -euo pipefail
cd "$(dirname "$0")/.."
export SIM_SEEDS="${SIM_SEEDS:-100000}"
export SIM_FIRST_SEED="${SIM_FIRST_SEED:-1}"
start=$(date +%s)
cargo test -p sluice-sim --release --test sim -- --nocapture 2>&1 | grep -v '^\s*$'
echo "elapsed: $(( $(date +%s) - start )) s"
