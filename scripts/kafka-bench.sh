#!/usr/bin/env bash
# Sluice's Kafka listener and its native API against Apache Kafka 4.4, on this machine, in
# one run, reported as ratios (issue 19's benchmark; docs/performance.md records a run).
#
#   scripts/kafka-bench.sh            # the full run (about 7 minutes of measuring on 2 cores)
#   QUICK=1 scripts/kafka-bench.sh    # a tenth of the records, to try the script
#   BROKERS=kafka scripts/kafka-bench.sh   # one side only (also BROKERS=sluice)
#
# One broker each, replication factor 1, loopback, throwaway data directories in a temp dir,
# run one after the other (never at the same time): a release `sluice dev` with its Kafka
# listener, then Apache Kafka 4.4 in KRaft combined mode (one process, the settings
# tests/common/apache_kafka.rs uses, Kafka's own default JVM options and 1 GiB heap), for
# 100 B records; then both again, freshly started, for 1 KiB. Against each:
# `kafka-producer-perf-test` (the Java client) and librdkafka's `rdkafka_performance -P`, and
# against Sluice also `sluice perf produce` on the native API; acks=1 and acks=all. Then a
# replay of the acks=1 topic librdkafka wrote: `kafka-consumer-perf-test`,
# `rdkafka_performance -C` and (Sluice) `sluice perf consume`.
#
# Every client gets batch.size=1000000 (under every default message/request size limit of
# the three clients and two brokers), linger.ms=5, compression none; idempotence on with
# acks=all (the Java and Sluice producers' default) and off with acks=1. Durability: no
# fsync per write on either broker — Kafka's defaults (log.flush.interval.messages and
# .ms unset: the page cache), and on Sluice flush.messages and flush.ms unset (fsync
# "none (OS writeback)", as `sluice perf` prints); 1 GiB segments on both. Every produce is
# checked by the partition's log end offset (kafka-get-offsets through each broker's Kafka
# listener) and every replay by its record count: a shortfall fails the run.
#
# Before measuring, the script waits (QUIET_WAIT seconds, default 1800) until no cargo,
# rustc or nextest process runs on the machine and it uses under half a core, and it
# measures the CPU everything else on the machine used during each case ("other load",
# below): the table marks the cases that shared the cores. Tools are installed/built when missing: Apache Kafka's jars
# (scripts/install-apache-kafka.sh), librdkafka (scripts/librdkafka-suite.sh build) and its
# examples/rdkafka_performance. Output: progress, then a Markdown table; the raw results
# and the tools' logs stay in $KAFKA_BENCH_OUT (default target/kafka-bench/).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

quick=${QUICK:-0}
# Records per case and client, sized for roughly 10-20 s each on 2 cores (the clients differ
# in speed by up to 6x). The replay reads the topic librdkafka wrote with acks=1, the
# largest, and each consumer the first N records of it, its own N.
declare -A count=(
  [java-100]=6000000 [rdkafka-100]=20000000 [native-100]=15000000
  [java-1024]=2000000 [rdkafka-1024]=5000000 [native-1024]=5000000
)
if [[ "$quick" == 1 ]]; then
  for k in "${!count[@]}"; do count[$k]=$((count[$k] / 10)); done
fi
batch=1000000
linger=5
out=${KAFKA_BENCH_OUT:-$root/target/kafka-bench}
mkdir -p "$out"
rm -f "$out"/*.log "$out/results.tsv"

# --- tools ---------------------------------------------------------------------------------
scripts/install-apache-kafka.sh
libs=$root/target/apache-kafka/libs
scripts/librdkafka-suite.sh build
rdsrc=$root/target/librdkafka-suite/rdkafka-sys-4.10.0+2.12.1/librdkafka
rdperf=$rdsrc/examples/rdkafka_performance
if [[ ! -x "$rdperf" ]]; then
  echo "building librdkafka's examples/rdkafka_performance"
  make -C "$rdsrc/examples" rdkafka_performance >"$out/rdkafka-build.log" 2>&1 ||
    { tail -20 "$out/rdkafka-build.log" >&2; exit 1; }
fi
# BROKERS=kafka or BROKERS=sluice runs one side only (to try the script).
brokers=${BROKERS:-sluice kafka}
S=$root/target/release/sluice
if [[ " $brokers " == *" sluice "* ]]; then
  echo "building sluice (release)"
  cargo build --release --quiet --bin sluice
fi

# Kafka's own JVM options (bin/kafka-run-class.sh), heaps as its start scripts set them:
# 1 GiB for the server, 512 MiB for the perf tools.
jvm_opts=(-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true)
tool() { # a Kafka command-line tool: class, args...
  java -Xmx512M "${jvm_opts[@]}" -Dlog4j2.configurationFile="$root/tests/apache-kafka/log4j2-tools.properties" \
    -cp "$libs/*" "$@"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-kafka-bench.XXXXXX")
broker_pid=
stop_broker() {
  if [[ -n "$broker_pid" ]]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
  fi
}
trap 'stop_broker; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# --- a quiet machine -----------------------------------------------------------------------
# Quiet: no cargo, rustc or nextest process, and the machine's CPU use over 5 s under half a
# core (this run has nothing running yet: it is all someone else's).
busy() { pgrep -f 'rustc|cargo-nextest|nextest' >/dev/null || pgrep -x cargo >/dev/null; }
load_pct() { # percent of one core the machine used over the next 5 s
  local a b
  a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat)
  sleep 5
  b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat)
  echo $(((b - a) * 100 / $(getconf CLK_TCK) / 5))
}
quiet_wait=${QUIET_WAIT:-1800}
waited=0
while { busy && sleep 5 || (($(load_pct) > 50)); } && ((waited < quiet_wait)); do
  ((waited % 60 == 0)) && echo "waiting for a quiet machine (cargo/rustc/nextest running, or over half a core busy): ${waited} s"
  waited=$((waited + 5))
done
if busy || (($(load_pct) > 50)); then
  quiet="NOT quiet: cargo/rustc/nextest or other load still running after ${quiet_wait} s; measured anyway"
else
  quiet="quiet at the start (no cargo, rustc or nextest, under half a core busy; waited ${waited} s)"
fi
echo "machine: $quiet"

# --- brokers -------------------------------------------------------------------------------
bootstrap= native= kafka_starts=0 klog=
start_sluice() {
  local port
  port=$((20000 + RANDOM % 20000))
  RUST_LOG=warn "$S" dev --data-dir "$work/sluice" --listen "127.0.0.1:$port" --kafka-listen 127.0.0.1:0 \
    >"$work/dev.out" 2>>"$out/sluice.log" &
  broker_pid=$!
  for _ in $(seq 600); do
    grep -q '^ready' "$work/dev.out" && break
    kill -0 "$broker_pid" 2>/dev/null || { cat "$out/sluice.log" >&2; echo "sluice dev exited" >&2; exit 1; }
    sleep 0.1
  done
  grep -q '^ready' "$work/dev.out" || { echo "sluice dev not ready within 60 s" >&2; exit 1; }
  native=127.0.0.1:$port
  bootstrap=$(awk '$1 == "kafka" { print $3 }' "$work/dev.out")
}

start_kafka() {
  local port dir=$work/kafka
  klog=$out/kafka-$((++kafka_starts)).log
  mkdir -p "$dir"
  port=$((20000 + RANDOM % 20000))
  bootstrap=127.0.0.1:$port
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$((port + 1))
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# Deleted topics' files go after 1 s instead of 60 (disk space only; no effect on a run).
log.segment.delete.delay.ms=1000
EOF
  cat >"$dir/log4j2.properties" <<EOF
rootLogger.level=INFO
rootLogger.appenderRef.f.ref=F
appender.f.type=File
appender.f.name=F
appender.f.fileName=$klog
appender.f.layout.type=PatternLayout
appender.f.layout.pattern=[%d] %p %m (%c)%n
EOF
  local id
  id=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
  java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$libs/*" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" >"$work/format.out" 2>&1 ||
    { cat "$work/format.out" >&2; exit 1; }
  java -Xmx1G -Xms1G "${jvm_opts[@]}" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$libs/*" kafka.Kafka "$dir/server.properties" >"$out/kafka.stdout" 2>&1 &
  broker_pid=$!
  for _ in $(seq 900); do
    grep -q 'Kafka Server started' "$klog" 2>/dev/null && break
    kill -0 "$broker_pid" 2>/dev/null || { tail -40 "$klog" >&2; echo "Apache Kafka exited" >&2; exit 1; }
    sleep 0.1
  done
  grep -q 'Kafka Server started' "$klog" || { echo "Apache Kafka not started within 90 s" >&2; exit 1; }
}

create_topic() { # broker topic
  if [[ $1 == sluice ]]; then
    SLUICE_BOOTSTRAP=$native "$S" topic create "$2" --partitions 1 --replication-factor 1 >/dev/null
  else
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$2" \
      --partitions 1 --replication-factor 1 >/dev/null
  fi
}
delete_topic() { # broker topic
  if [[ $1 == sluice ]]; then
    SLUICE_BOOTSTRAP=$native "$S" topic delete "$2" >/dev/null
  else
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --delete --topic "$2" >/dev/null
  fi
}
# The partition's log end offset, through the broker's Kafka listener.
end_offset() {
  tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$bootstrap" --topic "$1" --time -1 |
    awk -F: '{ print $NF }'
}

# --- other load ----------------------------------------------------------------------------
# CPU time (clock ticks) the machine spent on anything but this run: the system's busy time
# (/proc/stat) less this script's finished children (the clients: cutime+cstime of this
# shell) and the broker. It includes kernel threads (page-cache writeback of the broker's
# data among them), so a few percent is this run's own I/O. Printed per case as a percentage
# of one core; the table marks cases where it exceeded 10%.
other_ticks() {
  local sys own broker=0
  sys=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat)
  own=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$$/stat")
  [[ -n "$broker_pid" && -r /proc/$broker_pid/stat ]] &&
    broker=$(sed 's/.*) //' "/proc/$broker_pid/stat" | awk '{ print $12 + $13 + $14 + $15 }')
  echo $((sys - own - broker))
}
tick_hz=$(getconf CLK_TCK)
case_start() { t0_ticks=$(other_ticks) t0_ns=$(date +%s%N); }
case_other() { # percent of one core used by others since case_start
  local t1 n1
  t1=$(other_ticks) n1=$(date +%s%N)
  echo $(((t1 - t0_ticks) * 100 * 1000000000 / tick_hz / ((n1 - t0_ns) > 0 ? (n1 - t0_ns) : 1)))
}

# --- one case ------------------------------------------------------------------------------
failures=0
# record broker op size acks client records rps p50 p99 other-load%
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$out/results.tsv"; }
fail() {
  echo "FAILED: $*" | tee -a "$out/failures.log" >&2
  failures=$((failures + 1))
}

produce() { # broker client size acks topic n
  local broker=$1 client=$2 size=$3 acks=$4 topic=$5 n=$6 log rps p50=- p99=- got other idem=false
  log=$out/$broker-produce-$client-$size-$acks.log
  [[ $acks == all ]] && idem=true
  case_start
  case $client in
    java)
      # --payload-file, not --record-size: with --record-size the tool fills every record
      # with fresh random bytes (1 KiB of SplittableRandom per record), a client cost that
      # would flatten the comparison of the brokers. The file holds 1000 payloads of $size
      # random letters (what --record-size generates), one picked at random per record.
      [[ -f "$work/payload-$size" ]] || python3 -c 'import random, string, sys
n = int(sys.argv[1])
sys.stdout.write("".join("".join(random.choices(string.ascii_uppercase, k=n)) + "\n" for _ in range(1000)))' "$size" >"$work/payload-$size"
      timeout --foreground 900 java -Xmx512M "${jvm_opts[@]}" -Dlog4j2.configurationFile="$root/tests/apache-kafka/log4j2-tools.properties" \
        -cp "$libs/*" org.apache.kafka.tools.ProducerPerformance --topic "$topic" --num-records "$n" --payload-file "$work/payload-$size" \
        --throughput -1 --producer-props bootstrap.servers="$bootstrap" acks="$acks" batch.size=$batch \
        linger.ms=$linger compression.type=none enable.idempotence=$idem >"$log" 2>&1 || fail "$log"
      # "N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency, P50 ms 50th, ..."
      read -r rps p50 p99 < <(grep 'records sent' "$log" | tail -1 |
        sed -E 's/.*, ([0-9.]+) records\/sec.* ([0-9.]+) ms 50th, ([0-9.]+) ms 95th, ([0-9.]+) ms 99th.*/\1 \2 \4/') || true
      ;;
    rdkafka)
      local x=(-X "linger.ms=$linger" -X "batch.size=$batch" -X compression.type=none -X "enable.idempotence=$idem")
      timeout --foreground 900 "$rdperf" -P -t "$topic" -p 0 -b "$bootstrap" -s "$size" -c "$n" -a "$([[ $acks == all ]] && echo -1 || echo 1)" \
        "${x[@]}" >"$log" 2>&1 || true
      # Its exit code is not the check: it exits 1 when rd_kafka_outq_len() still counts a
      # request other than a message at the end (seen against Apache Kafka with
      # idempotence: "4999999 messages produced ..., 5000000 delivered (..., 0 failed)").
      # The delivery reports and the log end offset below are.
      # "% N messages produced (B bytes), D delivered (offset O, F failed) in Tms: X msgs/s and Y MB/s, ..."
      local line
      line=$(grep 'messages produced' "$log" | tail -1)
      rps=$(sed -E 's/.* ([0-9]+) msgs\/s.*/\1/' <<<"$line")
      grep -q " $n delivered (offset [0-9-]*, 0 failed)" <<<"$line" || fail "rdkafka_performance: not all $n delivered: $line"
      ;;
    native)
      SLUICE_BOOTSTRAP=$native timeout --foreground 900 "$S" perf produce --topic "$topic" --num-records "$n" --record-size "$size" --acks "$acks" \
        --batch-size $batch --linger-ms $linger --compression none --output json >"$log" 2>&1 || fail "$log"
      read -r rps p50 p99 < <(python3 -c 'import json,sys
j = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
print(j["records_per_sec"], j["latency_ms"]["p50"], j["latency_ms"]["p99"])' "$log") || true
      ;;
  esac
  other=$(case_other)
  got=$(end_offset "$topic" || true)
  [[ "$got" == "$n" ]] || fail "$broker $client produce $size B acks=$acks: log end offset $got, expected $n"
  record "$broker" produce "$size" "$acks" "$client" "$n" "${rps:-0}" "$p50" "$p99" "$other"
  printf '  %-6s produce %4s B acks=%-3s %-8s %12.0f records/s  p50 %s p99 %s ms  (log end offset %s; other load %s%%)\n' \
    "$broker" "$size" "$acks" "$client" "${rps:-0}" "$p50" "$p99" "$got" "$other"
}

consume() { # broker client size topic n
  local broker=$1 client=$2 size=$3 topic=$4 n=$5 log rps got other
  log=$out/$broker-consume-$client-$size.log
  case_start
  case $client in
    java)
      timeout --foreground 900 java -Xmx512M "${jvm_opts[@]}" -Dlog4j2.configurationFile="$root/tests/apache-kafka/log4j2-tools.properties" \
        -cp "$libs/*" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$bootstrap" --topic "$topic" \
        --num-records "$n" --group "bench-$RANDOM" --timeout 30000 >"$log" 2>&1 || fail "$log"
      # header: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec,
      #         rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec (the group join left out)
      read -r got rps < <(grep -E '^[0-9]{4}-' "$log" | tail -1 | awk -F', ' '{ print $5, $10 }') || true
      ;;
    rdkafka)
      timeout --foreground 900 "$rdperf" -C -t "$topic" -p 0 -o beginning -b "$bootstrap" -c "$n" >"$log" 2>&1 || fail "$log"
      # "% N messages (B bytes) consumed in Tms: X msgs/s (Y MB/s)"
      read -r got rps < <(grep 'consumed in' "$log" | tail -1 | sed -E 's/^% ([0-9]+) messages.* ([0-9]+) msgs\/s.*/\1 \2/') || true
      ;;
    native)
      SLUICE_BOOTSTRAP=$native timeout --foreground 900 "$S" perf consume --topic "$topic" --num-records "$n" --output json >"$log" 2>&1 || fail "$log"
      read -r got rps < <(python3 -c 'import json,sys
j = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
print(j["records"], j["records_per_sec"])' "$log") || true
      ;;
  esac
  other=$(case_other)
  # kafka-consumer-perf-test counts every record of its last poll: it may read past N.
  if [[ $client == java ]]; then
    ((${got:-0} >= n)) || fail "$broker $client consume $size B: $got records, expected $n"
  else
    [[ "${got:-}" == "$n" ]] || fail "$broker $client consume $size B: $got records, expected $n"
  fi
  record "$broker" consume "$size" - "$client" "$n" "${rps:-0}" - - "$other"
  printf '  %-6s consume %4s B           %-8s %12.0f records/s  (%s records; other load %s%%)\n' "$broker" "$size" "$client" "${rps:-0}" "$got" "$other"
}

run_size() { # sluice|kafka size
  local broker=$1 size=$2 clients=(java rdkafka) replay=p-rdkafka-$2-1
  [[ $broker == sluice ]] && clients+=(native)
  for acks in 1 all; do
    for client in "${clients[@]}"; do
      local topic=p-$client-$size-$acks
      create_topic "$broker" "$topic"
      produce "$broker" "$client" "$size" "$acks" "$topic" "${count[$client-$size]}"
      # The topic the replay reads stays; the others go now (disk space).
      [[ $topic == "$replay" ]] || delete_topic "$broker" "$topic"
    done
  done
  for client in "${clients[@]}"; do
    consume "$broker" "$client" "$size" "$replay" "${count[$client-$size]}"
  done
}

# Sluice, then Kafka, for 100 B; then both again for 1 KiB: each broker starts afresh for
# each record size, and the two brokers' runs of one size are minutes apart, not the
# whole run, when the load on the machine changes.
start=$SECONDS
for size in 100 1024; do
  if [[ " $brokers " == *" sluice "* ]]; then
    echo "== Sluice $(git rev-parse --short HEAD) (release, sluice dev, 1 broker), $size B records"
    start_sluice
    echo "   native $native, Kafka listener $bootstrap"
    run_size sluice "$size"
    stop_broker
    rm -rf "$work/sluice"
  fi
  if [[ " $brokers " == *" kafka "* ]]; then
    echo "== Apache Kafka 4.4 (KRaft combined mode, 1 node), $size B records"
    start_kafka
    echo "   $bootstrap"
    run_size kafka "$size"
    stop_broker
    rm -rf "$work/kafka"
  fi
done
echo "== $((SECONDS - start)) s"

# --- the table -----------------------------------------------------------------------------
python3 - "$out/results.tsv" "$quiet" "$batch" "$linger" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
quiet, batch, linger = sys.argv[2:5]
r = {(b, op, s, a, c): (int(n), float(rps), p50, p99, int(other)) for b, op, s, a, c, n, rps, p50, p99, other in rows}
names = {"java": "Java client", "rdkafka": "librdkafka", "native": "sluice perf (native)"}
def fmt(key):
    if key not in r:
        return "—", "—", "—"
    n, rps, p50, p99, other = r[key]
    size = int(key[2])
    lat = "—" if p50 == "-" else f"{float(p50):g} / {float(p99):g}"
    return f"{rps:,.0f}" + (f" (other load {other}%)" if other > 10 else ""), f"{rps * size / 1e6:,.1f}", lat
print(f"\nmachine: {quiet}")
print(f"Settings on every row: replication factor 1, one partition, no fsync per write (Kafka defaults:"
      f" log.flush.interval.* unset; Sluice: flush.messages/flush.ms unset), 1 GiB segments,"
      f" batch.size={batch}, linger.ms={linger}, compression none, idempotence on with acks=all"
      f" and off with acks=1. MB/s = 10^6 B of record value per second. Latency = send to ack.\n")
print("| workload | settings | client | records | Sluice records/s | MB/s | p50 / p99 ms | Apache Kafka records/s | MB/s | p50 / p99 ms | Sluice / Kafka |")
print("|---|---|---|---:|---:|---:|---|---:|---:|---|---:|")
for op in ("produce", "consume"):
    for s in ("100", "1024"):
        for a in (("1", "all") if op == "produce" else ("-",)):
            label = f"{op} {'100 B' if s == '100' else '1 KiB'}" + (f" acks={a}" if a != "-" else " (replay)")
            settings = (f"acks={a}, RF 1, fsync none, idempotence {'on' if a == 'all' else 'off'}" if a != "-" else "RF 1, fsync none, consumer defaults")
            for c in ("java", "rdkafka", "native"):
                sl, kf = ("sluice", op, s, a, c), ("kafka", op, s, a, c)
                if sl not in r and kf not in r:
                    continue
                a1, a2, a3 = fmt(sl)
                n = f"{(r.get(sl) or r.get(kf))[0]:,}"
                if c == "native":
                    ratios = []
                    for peer in ("java", "rdkafka"):
                        k = ("kafka", op, s, a, peer)
                        if sl in r and k in r and r[k][1] > 0:
                            ratios.append(f"{r[sl][1] / r[k][1]:.2f}× vs {names[peer]}")
                    print(f"| {label} | {settings} | {names[c]} | {n} | {a1} | {a2} | {a3} | (the rows above) | | | {'; '.join(ratios) or '—'} |")
                else:
                    b1, b2, b3 = fmt(kf)
                    ratio = f"{r[sl][1] / r[kf][1]:.2f}×" if sl in r and kf in r and r[kf][1] > 0 else "—"
                    print(f"| {label} | {settings} | {names[c]} | {n} | {a1} | {a2} | {a3} | {b1} | {b2} | {b3} | {ratio} |")
PY
if ((failures)); then
  echo "$failures check(s) failed: see $out/failures.log" >&2
  exit 1
fi
