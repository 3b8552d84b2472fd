#!/usr/bin/env bash
# A long seeded campaign of the consumer-group simulators, outside CI (CI runs 100 KIP-848
# seeds and 150 classic-protocol seeds): the KIP-848 coordinator with failovers
# (broker/src/group/coordinator_tests.rs) and the classic protocol's clients that crash,
# pause, lose answers and commit late across coordinator failovers
# (broker/src/group/classic_tests.rs); see docs/groups.md.
#
#   scripts/group-sim-campaign.sh                  20000 seeds of each
#   SLUICE_GROUP_SIM_SEEDS=200000 scripts/group-sim-campaign.sh
#
# A failure prints SLUICE_GROUP_SIM_SEED=S; replay it with
#   SLUICE_GROUP_SIM_SEED=S cargo test -p sluice-broker --release --lib random_classic
set -euo pipefail
cd "$(dirname "$0")/.."
export SLUICE_GROUP_SIM_SEEDS="${SLUICE_GROUP_SIM_SEEDS:-20000}"
start=$(date +%s)
cargo test -p sluice-broker --release --lib -- --exact \
  group::coordinator::tests::random_membership_with_coordinator_failovers \
  group::classic_tests::random_classic_members_with_lost_answers_and_failovers 2>&1 |
  grep -E 'test |result|SEED|panicked'
echo "seeds per simulator: $SLUICE_GROUP_SIM_SEEDS; elapsed: $(( $(date +%s) - start )) s"
