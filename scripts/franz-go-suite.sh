#!/usr/bin/env bash
# franz-go's own pkg/kgo tests (its unit tests and the integration tests that reach a
# broker through KGO_SEEDS) against a one-broker `sluice dev`, outside CI: a few minutes
# of both cores. franz-go comes from the Go module proxy at the version
# tests/kafka_franz/go.mod pins; nothing of it is copied here. Prints each failed test
# and the counts; the results are in docs/kafka-compatibility.md.
#
#   scripts/franz-go-suite.sh [go test flags, e.g. -run 'TestGroupETL']
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /usr/local/go/bin/go ]] && export PATH="$PATH:/usr/local/go/bin"

cargo build -q --bin sluice
data=$(mktemp -d)
dev=
cleanup() {
  if [[ -n "$dev" ]]; then
    kill "$dev" 2>/dev/null || true
    wait "$dev" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT
RUST_LOG=warn target/debug/sluice dev --data-dir "$data/dev" --listen 127.0.0.1:0 \
  --kafka-listen 127.0.0.1:0 >"$data/dev.log" 2>&1 &
dev=$!
for _ in $(seq 300); do
  grep -q '^ready' "$data/dev.log" && break
  sleep 0.1
done
kafka=$(awk '$1 == "kafka" && $2 == "1" { print $3 }' "$data/dev.log")
if [[ -z "$kafka" ]]; then
  echo "sluice dev did not start:" >&2
  cat "$data/dev.log" >&2
  exit 1
fi
echo "sluice dev: Kafka listener $kafka"

log=target/franz-go-suite.log
mkdir -p target
set +e
(cd tests/kafka_franz &&
  KGO_SEEDS=$kafka KGO_TEST_RF=1 KGO_TEST_RECORDS=${KGO_TEST_RECORDS:-20000} GOFLAGS=-mod=mod \
    go test github.com/twmb/franz-go/pkg/kgo -count=1 -parallel 2 -timeout 15m \
    -v "$@") >"$log" 2>&1
status=$?
set -e
grep -E '^(    )*--- FAIL' "$log" || true
pass=$(grep -cE '^--- PASS' "$log" || true)
fail=$(grep -cE '^--- FAIL' "$log" || true)
skip=$(grep -cE '^--- SKIP' "$log" || true)
echo "franz-go pkg/kgo: $pass passed, $fail failed, $skip skipped (top-level tests; log: $log)"
exit "$status"
