#!/usr/bin/env bash
# The Kafka listener's request path under random and damaged frames, outside CI (CI runs
# 256 cases of each): broker/src/kafka/fuzz_tests.rs feeds random frames, and
# well-formed requests of every served API and version cut short or with bytes flipped,
# through decode → dispatch → answer, and requires an answer, silence or a close — never
# a panic or a hang.
#
#   scripts/kafka-fuzz.sh            20000 cases of each
#   CASES=200000 scripts/kafka-fuzz.sh
#
# Prints the cases (execs) run per target and the time taken; a failure prints the
# minimal failing input proptest found (and saves it under broker/proptest-regressions/).
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${CASES:-20000}"
start=$(date +%s)
PROPTEST_CASES="$cases" cargo test -p sluice-broker --release --lib -- \
  kafka::fuzz_tests::random_frames_never_panic \
  kafka::fuzz_tests::damaged_requests_of_every_served_version_never_panic 2>&1 |
  grep -E 'test |result|minimal|panicked'
echo "execs: $cases per target (2 targets); elapsed: $(( $(date +%s) - start )) s"
