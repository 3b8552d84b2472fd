#!/usr/bin/env bash
# A long seeded campaign of the replication simulator (sim/), outside CI: the real
# ReplicaManager over in-memory logs, in two configurations — no power loss (flush
# unset), and flush.messages=1 with power loss of one broker or all at once — plus the
# fixed regression seeds (see docs/replication.md, "Durability under power loss").
#
#   scripts/sim-campaign.sh                 5000 seeds from 1, per configuration
#   SIM_SEEDS=100000 SIM_FIRST_SEED=5001 scripts/sim-campaign.sh
#
# Prints, per configuration, how many seeds ran, the steps, acknowledged records, faults
# (lost control pushes, power losses) and truncations they covered, or the first failing
# seed with the state of every replica and its last events. Replay one:
#   SIM_SEED=N cargo test -p sluice-sim --release --test sim
set -euo pipefail
cd "$(dirname "$0")/.."
export SIM_SEEDS="${SIM_SEEDS:-5000}"
export SIM_FIRST_SEED="${SIM_FIRST_SEED:-1}"
start=$(date +%s)
cargo test -p sluice-sim --release --test sim -- --nocapture --test-threads 1 2>&1 | grep -v '^\s*$'
echo "elapsed: $(( $(date +%s) - start )) s"
