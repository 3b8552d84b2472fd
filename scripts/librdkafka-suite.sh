#!/usr/bin/env bash
# Runs librdkafka's own integration suite (librdkafka/tests/, its `test-runner`) against a
# throwaway `sluice dev --brokers 3`.
#
#   scripts/librdkafka-suite.sh                 # the CI subset (ci_classic, ci_consumer below)
#   scripts/librdkafka-suite.sh all             # every test that needs a broker (long: outside CI)
#   scripts/librdkafka-suite.sh 0001,0012,0017  # these tests
#   GROUP_PROTOCOLS=classic scripts/librdkafka-suite.sh ...   # one group protocol only
#   SUBTESTS=l_unsubscribe scripts/librdkafka-suite.sh 0113   # some subtests (the runner's own)
#   GROUP_INITIAL_REBALANCE_DELAY_MS=0 ...       # the dev's delay (default 3000 ms, 0 for ci)
#   TEST_WALL_LIMIT=300 ...                      # seconds per test number (default 900)
#
# librdkafka's source comes from crates.io: the `rdkafka-sys` crate bundles librdkafka with
# its tests/ directory (fetched with `cargo fetch` through a throwaway manifest, so cargo's
# own registry client does the download). It is unpacked, configured without SSL, SASL and
# curl, and built once into target/librdkafka-suite/ (the build is skipped when the
# test-runner binary is there). Build dependencies come from Debian packages (as root)
# when missing. Each test runs in full mode (no -Q, which silently skips subtests).
# KAFKA_PATH points at Kafka's command-line tools made from Apache Kafka 4.4's jars (below).
# Per-test results go to $LIBRDKAFKA_SUITE_OUT (default target/librdkafka-suite/run/):
# results-PROTOCOL.tsv and each test number's log; the last line is
# "librdkafka: N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

crate_version=4.10.0+2.12.1 # rdkafka-sys; librdkafka 2.12.1
kafka_version=4.0.0         # what the suite is told the broker is (TEST_KAFKA_VERSION)
work=$root/target/librdkafka-suite
src=$work/rdkafka-sys-$crate_version/librdkafka
runner=$src/tests/test-runner

# The CI subset (tests/librdkafka_suite.rs): tests known to pass against Sluice that take
# seconds. Produce, consume, compression, offsets, metadata, admin and classic groups run
# with group.protocol=classic; the group tests run again with the KIP-848 protocol
# (consumer). See docs/kafka-compatibility.md for the whole suite's results.
ci_classic=0001,0002,0003,0005,0007,0008,0011,0012,0013,0014,0016,0017,0019,0020,0021,0022,0029,0030,0031,0034,0035,0036,0039,0040,0042,0044,0048,0052,0054,0056,0057,0060,0061,0063,0064,0065,0070,0073,0085,0090,0099,0112,0115,0129,0130,0140
ci_consumer=0019,0020,0021,0022,0029,0030,0040,0056,0060,0103,0112,0130,0140

what=${1:-ci}
# group.initial.rebalance.delay.ms: Kafka's default (3000 ms), which the suite's own test
# clusters run with and some classic-group tests assume (0113 `l_unsubscribe` wants both
# members in the group's first generation, as does 0102); the CI subset passes with 0 ms,
# and runs faster so.
rebalance_delay_ms=${GROUP_INITIAL_REBALANCE_DELAY_MS:-$([[ $what == ci ]] && echo 0 || echo 3000)}

# --- build dependencies (Debian packages) -------------------------------------------------
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[[ -e /usr/include/zlib.h ]] || need+=(zlib1g-dev)
[[ -e /usr/include/zstd.h ]] || need+=(libzstd-dev)
if ((${#need[@]})); then
  echo "installing build dependencies: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# --- librdkafka source and build (cached) ---------------------------------------------------
mkdir -p "$work"
if [[ ! -x "$runner" ]]; then
  if [[ ! -f "$src/configure" ]]; then
    fetch=$work/fetch
    mkdir -p "$fetch/src"
    cat >"$fetch/Cargo.toml" <<EOF
[package]
name = "librdkafka-suite-fetch"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
rdkafka-sys = { version = "=$crate_version", default-features = false }
[workspace]
EOF
    : >"$fetch/src/lib.rs"
    echo "fetching rdkafka-sys $crate_version from crates.io"
    cargo fetch --quiet --manifest-path "$fetch/Cargo.toml"
    crate=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/cache" -name "rdkafka-sys-$crate_version.crate" | head -1)
    [[ -n "$crate" ]] || {
      echo "rdkafka-sys-$crate_version.crate not in cargo's registry cache after cargo fetch" >&2
      exit 1
    }
    tar xzf "$crate" -C "$work"
    chmod +x "$src/configure" "$src"/tests/*.sh 2>/dev/null || true
  fi
  echo "building librdkafka and its test-runner in $src (once)"
  (
    cd "$src"
    ./configure --disable-curl --disable-sasl --disable-ssl --disable-gssapi \
      --disable-lz4-ext --enable-zstd --enable-zlib >"$work/configure.log" 2>&1 ||
      { tail -30 "$work/configure.log" >&2; exit 1; }
    make -j"$(nproc)" libs >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }
    make -j"$(nproc)" -C tests build >>"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }
  )
fi

# --- KAFKA_PATH: Kafka's command-line tools ----------------------------------------------------
# Some tests run Kafka's scripts from "$KAFKA_PATH/bin" (0052 and 0077 create their topics with
# `kafka-topics.sh --bootstrap-server $BROKERS --create ... --config K=V`, 0109 and 0115/0119
# add ACLs with `kafka-acls.sh`, 0113 runs a Java consumer through `kafka-run-class.sh` with
# classes it compiles against "$KAFKA_PATH/libs"). Apache Kafka 4.4's jars
# (scripts/install-apache-kafka.sh, Maven Central) stand in for a Kafka distribution: a
# generated directory whose bin/kafka-*.sh run the tool classes Kafka's own scripts run,
# with libs/ linked to the jars. Kafka 4's tools take only --bootstrap-server (no
# --zookeeper), which is what the suite passes for a broker version >= 3.0.
scripts/install-apache-kafka.sh
kafka_path=$work/kafka-path
mkdir -p "$kafka_path/bin"
ln -sfn "$root/target/apache-kafka/libs" "$kafka_path/libs"
# Each file is written aside and renamed into place: a run in progress (the CI subset beside
# a whole-suite run) never sees one missing or half written.
put() {
  cat >"$kafka_path/bin/.$1.$$"
  chmod +x "$kafka_path/bin/.$1.$$"
  mv -f "$kafka_path/bin/.$1.$$" "$kafka_path/bin/$1"
}
put kafka-run-class.sh <<EOF
#!/usr/bin/env bash
# Generated by scripts/librdkafka-suite.sh: runs a class with Apache Kafka 4.4's jars, like
# Kafka's own kafka-run-class.sh (CLASSPATH first, as there). Logs warnings to stderr.
exec java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \\
  -Dlog4j2.configurationFile=$root/tests/apache-kafka/log4j2-tools.properties \\
  -cp "\${CLASSPATH:+\$CLASSPATH:}$root/target/apache-kafka/libs/*" "\$@"
EOF
# script name -> the class Kafka 4.4's bin/ script runs
for tool in \
  kafka-topics:org.apache.kafka.tools.TopicCommand \
  kafka-configs:org.apache.kafka.tools.ConfigCommand \
  kafka-acls:org.apache.kafka.tools.AclCommand \
  kafka-consumer-groups:org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
  kafka-console-producer:org.apache.kafka.tools.ConsoleProducer \
  kafka-console-consumer:org.apache.kafka.tools.consumer.ConsoleConsumer \
  kafka-get-offsets:org.apache.kafka.tools.GetOffsetShell \
  kafka-delete-records:org.apache.kafka.tools.DeleteRecordsCommand \
  kafka-leader-election:org.apache.kafka.tools.LeaderElectionCommand \
  kafka-broker-api-versions:org.apache.kafka.tools.BrokerApiVersionsCommand; do
  printf '#!/usr/bin/env bash\nexec "$(dirname "$0")/kafka-run-class.sh" %s "$@"\n' \
    "${tool#*:}" | put "${tool%%:*}.sh"
done
[[ "$what" == build ]] && exit 0

# --- which tests -----------------------------------------------------------------------------
# Test numbers; `all` is every number that has a test needing a broker (the runner's -L
# leaves out the local ones: unit tests and mock-cluster tests, which need no broker).
if [[ "$what" == all ]]; then
  what=$(awk '/struct test tests\[\] = \{/,/^};/' "$src/tests/test.c" | tr -d '\n' |
    sed 's/_TEST(/\n_TEST(/g' | grep -oE '_TEST\([0-9]{4}_[a-z0-9_]+,[^)]*' | grep -v 'TEST_F_LOCAL' |
    grep -oE '^_TEST\([0-7][0-9]{3}' | cut -c7- | sort -u | paste -sd, -)
fi

# --- a throwaway three-broker dev ---------------------------------------------------------------
sluice=${SLUICE_BIN:-}
if [[ -z "$sluice" ]]; then
  cargo build --quiet --features sluice/etcd,sluice/postgres --bin sluice
  sluice=$root/target/debug/sluice
fi
out=${LIBRDKAFKA_SUITE_OUT:-$work/run}
rm -rf "$out/logs" "$out"/results-*.tsv
mkdir -p "$out"
tmp=$(mktemp -d)
dev_pid=
cleanup() {
  if [[ -n "$dev_pid" ]]; then
    kill "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Port 0 everywhere: the dev picks free ports and prints them. The suite's tests assume
# a cluster that auto-creates topics with 4 partitions (as its own test clusters do), and
# one with an authorizer that lets everyone do what no ACL speaks of (0109, 0115 and 0119
# add DENY ACLs with kafka-acls.sh and expect everything else to go on working).
RUST_LOG=${RUST_LOG:-warn} "$sluice" dev --brokers 3 --listen 127.0.0.1:0 \
  --kafka-listen 127.0.0.1:0 --num-partitions 4 --data-dir "$tmp/data" \
  --authorizer --allow-everyone-if-no-acl-found \
  --group-initial-rebalance-delay-ms "$rebalance_delay_ms" ${SLUICE_DEV_ARGS:-} \
  >"$tmp/dev.out" 2>"$out/dev.log" &
dev_pid=$!
for _ in $(seq 600); do
  grep -q '^ready' "$tmp/dev.out" && break
  kill -0 "$dev_pid" 2>/dev/null || { cat "$out/dev.log" >&2; echo "sluice dev exited" >&2; exit 1; }
  sleep 0.1
done
grep -q '^ready' "$tmp/dev.out" || { echo "sluice dev not ready within 60 s" >&2; exit 1; }
bootstrap=$(awk '$1 == "kafka" { print $3 }' "$tmp/dev.out" | paste -sd, -)
echo "sluice dev --brokers 3: Kafka listeners $bootstrap"

conf=$tmp/test.conf
cat >"$conf" <<EOF2
bootstrap.servers=$bootstrap
# A debug build of Sluice on a shared machine: give the suite's timeouts room.
test.timeout.multiplier=${TEST_TIMEOUT_MULTIPLIER:-3}
# Every run makes new topics: a rerun does not see the last one's records.
test.topic.random=true
EOF2

# --- run ------------------------------------------------------------------------------------
passed=0
failed=0
skipped=0
for protocol in ${GROUP_PROTOCOLS:-classic consumer}; do
  results=$out/results-$protocol.tsv
  : >"$results"
  case "$what" in
    ci) list=ci_$protocol && list=${!list} ;;
    *) list=$what ;;
  esac
  IFS=, read -ra numbers <<<"$list"
  for n in "${numbers[@]}"; do
    log=$out/logs/$protocol/$n.log
    mkdir -p "$(dirname "$log")"
    start=$SECONDS
    set +e
    (cd "$src/tests" &&
      LD_LIBRARY_PATH=../src:../src-cpp RDKAFKA_TEST_CONF=$conf TESTS=$n \
        KAFKA_PATH=$kafka_path BROKERS=$bootstrap \
        TEST_KAFKA_VERSION=$kafka_version TEST_CONSUMER_GROUP_PROTOCOL=$protocol \
        timeout --signal=KILL "${TEST_WALL_LIMIT:-900}" ./test-runner -L -p1) >"$log" 2>&1
    rc=$?
    set -e
    # the runner's summary: "| NAME | STATE | SECONDSs |" per test it ran or skipped with a reason
    lines=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^\| [0-9]{4}_' |
      awk -F'|' '{ gsub(/ /, "", $2); gsub(/ /, "", $3); print $2 "\t" $3 "\t" $5 }' || true)
    if [[ -z "$lines" ]]; then
      lines="$n	$([[ $rc == 0 ]] && echo PASSED || echo "FAILED")	exit $rc, no summary"
    elif [[ $rc != 0 ]] && ! grep -q FAILED <<<"$lines"; then
      lines="$lines
$n	FAILED	exit $rc"
    fi
    printf '%s\n' "$lines" >>"$results"
    p=$(grep -c $'\tPASSED' <<<"$lines" || true)
    f=$(grep -c $'\tFAILED' <<<"$lines" || true)
    s=$(grep -c $'\tSKIPPED' <<<"$lines" || true)
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    printf '%-9s %s  %3d s  passed %d failed %d skipped %d%s\n' "$protocol" "$n" \
      $((SECONDS - start)) "$p" "$f" "$s" "$([[ $f != 0 ]] && echo "  (log: $log)")"
  done
done
echo "librdkafka: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
