#!/usr/bin/env bash
# CDC (Postgres) benchmarks, each beside a Postgres baseline timed in the same run, as
# docs/performance.md records them:
#   scripts/cdc-bench.sh
#
# Setup: a throwaway PostgreSQL 15 (initdb + pg_ctl as the `postgres` user in a temp dir,
# wal_level=logical, a free port on 127.0.0.1, its unix socket in the temp dir, server
# defaults otherwise: fsync on, synchronous_commit on) and a release `sluice dev` (1
# broker, log cleaner off so it does not compete for the cores). The table is
# users(id bigint primary key, name text, email text, version int), ~100 B of column data
# per row (name 46 B, email 41 B).
#
# 1. Initial copy of ROWS rows: `cdc_bench snapshot` (benches/src/bin/cdc_bench.rs) starts
#    `sluice cdc postgres` on a new topic prefix and times, from the spawn, the log line
#    "initial copy written" and the topic's high watermarks covering ROWS records
#    (acknowledged, acks=all). Baseline: `psql -c 'COPY users TO STDOUT' > /dev/null`.
#    CDC_BENCH_COPY_WORKERS="1 2" times the copy once per value of `--copy-workers`
#    (passed as SLUICE_CDC_COPY_WORKERS); CDC_BENCH_BEFORE=BIN also times that `sluice`
#    (an older build) in the same run, alternating with the current one, so a change
#    is measured before and after under the same load.
# 2. Streaming: `cdc_bench stream` applies CHANGES single-row UPDATEs with the connector
#    stopped (a PL/pgSQL loop committing every 10,000 rows, then one committing every row
#    with synchronous_commit=off in that session), starts the connector (it resumes from
#    its slot) and times until the topic holds them all. Baseline: the loop's own time.
# 3. Commit → visible: a connector on ticks (LAT_ROWS rows, same shape), `cdc_bench
#    latency` commits TPS single-row updates per second for SECONDS from 8 connections
#    and three subscribed TableSets timestamp each new version; plus
#    `wait_for_source(pg_current_wal_lsn())` after a commit, under that load and idle.
#    Baseline: the writers' own commit latency.
#
# Environment: CDC_BENCH_ROWS (3000000), CDC_BENCH_CHANGES (200000), CDC_BENCH_TPS (1000),
# CDC_BENCH_SECONDS (60), CDC_BENCH_LAT_ROWS (10000), CDC_BENCH_SNAPSHOTS (copies timed, 2),
# CDC_BENCH_PARTITIONS (topic partitions, 1), CDC_BENCH_PARTS ("snapshot stream latency"),
# CDC_BENCH_NO_BUILD=1 (use the binaries already built), CDC_BENCH_LOAD_WAIT (seconds to
# wait for a 1-minute load average below 1.0 before each part, 180; the load is printed
# beside every figure either way), CDC_BENCH_OUT=DIR keeps the JSON outputs and logs.
# Binaries come from ${CARGO_TARGET_DIR:-target}/release. Postgres and `sluice dev` are
# stopped and temp dirs removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${CDC_BENCH_ROWS:-3000000}
changes=${CDC_BENCH_CHANGES:-200000}
tps=${CDC_BENCH_TPS:-1000}
seconds=${CDC_BENCH_SECONDS:-60}
lat_rows=${CDC_BENCH_LAT_ROWS:-10000}
snapshots=${CDC_BENCH_SNAPSHOTS:-2}
partitions=${CDC_BENCH_PARTITIONS:-1}
parts=${CDC_BENCH_PARTS:-snapshot stream latency}
load_wait=${CDC_BENCH_LOAD_WAIT:-180}
target=${CARGO_TARGET_DIR:-target}

if [ "${CDC_BENCH_NO_BUILD:-0}" != 1 ]; then
    cargo build --release --quiet --features sluice/postgres -p sluice -p sluice-benches
fi
S=$target/release/sluice
B=$target/release/cdc_bench

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-cdc-bench.XXXXXX")
out=${CDC_BENCH_OUT:-$work}
mkdir -p "$out"
dev=
pgdir=
pgbin=/usr/lib/postgresql/15/bin
connector=
cleanup() {
    if [ -n "$connector" ]; then kill -INT "$connector" 2>/dev/null || true; wait "$connector" 2>/dev/null || true; fi
    if [ -n "$dev" ]; then kill -INT "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; fi
    if [ -n "$pgdir" ]; then
        runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -rf "$pgdir"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        if [ $SECONDS -ge $deadline ]; then return 1; fi
        sleep 0.1
    done
}
load1() { cut -d' ' -f1 /proc/loadavg; }
# Waits (at most CDC_BENCH_LOAD_WAIT s) for the 1-minute load average to drop below 1.0.
quiet() {
    local deadline=$((SECONDS + load_wait))
    while awk -v l="$(load1)" 'BEGIN { exit !(l >= 1.0) }' && [ $SECONDS -lt $deadline ]; do
        sleep 5
    done
    echo "   (load average before this part: $(cut -d' ' -f1-3 /proc/loadavg))"
}

# --- Postgres -------------------------------------------------------------------
[ -x "$pgbin/initdb" ] || pgbin=$(pg_config --bindir)
pgdir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-cdc-bench-pg.XXXXXX")
chown postgres: "$pgdir"
chmod 700 "$pgdir"
pgport=$(free_port)
runuser -u postgres -- "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust \
    -E UTF8 --locale=C > "$pgdir/initdb.log" 2>&1 || { cat "$pgdir/initdb.log" >&2; exit 1; }
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -W \
    -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10" \
    start > /dev/null
if ! wait_for 60 "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pgport" -U postgres; then
    cat "$pgdir/server.log" >&2
    exit 1
fi
psqlq() { psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres "$@"; }
psqlq -d postgres -c 'CREATE DATABASE bench' > /dev/null
dsn="postgres://postgres@127.0.0.1:$pgport/bench"
pg_settings=$(psqlq -d bench -c \
    "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
     WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'wal_level', 'full_page_writes', 'logical_decoding_work_mem')")
echo "== postgres $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pgport ($pg_settings)"

# users / ticks: ~100 B of column data per row.
fill() { # table rows
    psqlq -d bench -c "CREATE TABLE $1 (id bigint NOT NULL, name text NOT NULL, email text NOT NULL, version int NOT NULL);
        INSERT INTO $1 SELECT g, 'user ' || lpad(g::text, 8, '0') || ' ' || md5(g::text),
            'user' || lpad(g::text, 8, '0') || '.' || substr(md5('e' || g), 1, 16) || '@example.com', 1
        FROM generate_series(1, $2) g;
        ALTER TABLE $1 ADD PRIMARY KEY (id);" -c "VACUUM (ANALYZE, FREEZE) $1" > /dev/null
}

# --- sluice dev -----------------------------------------------------------------
port=$(free_port)
while [ "$port" = 9392 ] || [ "$port" = 19392 ]; do port=$(free_port); done
bootstrap=127.0.0.1:$port
RUST_LOG=warn $S dev --data-dir "$work/data" --listen "$bootstrap" --log-cleaner-enable false > "$work/dev.out" &
dev=$!
if ! wait_for 60 grep -q '^ready' "$work/dev.out"; then
    cat "$work/dev.out" >&2
    exit 1
fi
echo "== sluice dev on $bootstrap (1 broker, log cleaner off), $(nproc) cores"

# "acks=all, RF n, fsync ..." of a topic, from its description.
durability() {
    $S topic describe --bootstrap "$bootstrap" --output json "$1" 2>/dev/null | jq -r '
        (.configs // {}) as $c
        | (.partitions[0].replicas // [] | length) as $rf
        | (if $c["flush.messages"] == "1" then "every batch"
           elif $c["flush.messages"] != null and $c["flush.messages"] != "9223372036854775807" then "every " + $c["flush.messages"] + " records"
           elif $c["flush.ms"] != null and $c["flush.ms"] != "9223372036854775807" then "every " + $c["flush.ms"] + " ms"
           else "none (OS writeback)" end) as $fsync
        | "acks=all (idempotent), RF \($rf), fsync \($fsync)"' || echo "acks=all, RF ?, fsync ?"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
now_ms() { date +%s%3N; }
sync_commit=$(psqlq -d bench -c 'SHOW synchronous_commit')
summary=()

# --- 1. initial copy --------------------------------------------------------------
if [[ " $parts " == *" snapshot "* || " $parts " == *" stream "* ]]; then
    echo "== filling users with $rows rows"
    t=$(now_ms); fill users "$rows"
    echo "   filled in $(( $(now_ms) - t )) ms; $(psqlq -d bench -c "SELECT round(avg(8 + octet_length(name) + octet_length(email) + 4), 1) || ' B of column data per row, table ' || pg_size_pretty(pg_table_size('users')) FROM users")"
fi
if [[ " $parts " == *" snapshot "* ]]; then
    echo "== 1. initial copy: $rows rows"
    quiet
    copy_runs=()
    for r in 1 2 3; do
        t=$(now_ms)
        psql -X -q -h 127.0.0.1 -p "$pgport" -U postgres -d bench -c 'COPY users TO STDOUT' > /dev/null
        copy_runs+=($(( $(now_ms) - t )))
    done
    copy_ms=$(printf '%s\n' "${copy_runs[@]}" | median)
    echo "   postgres COPY users TO STDOUT (psql > /dev/null): ${copy_runs[*]} ms, median $copy_ms ms"
    # Variants timed: "label binary copy-workers"; each run of each variant in turn.
    variants=()
    for w in ${CDC_BENCH_COPY_WORKERS:-default}; do
        if [ -n "${CDC_BENCH_BEFORE:-}" ]; then variants+=("before:$CDC_BENCH_BEFORE:-"); fi
        variants+=("current:$S:$w")
    done
    # Duplicates (one "before" per worker count) are dropped.
    mapfile -t variants < <(printf '%s\n' "${variants[@]}" | awk '!seen[$0]++')
    declare -A runs_of=()
    n=0
    for r in $(seq "$snapshots"); do
        for v in "${variants[@]}"; do
            IFS=: read -r label bin workers <<< "$v"
            n=$((n + 1))
            env_workers=()
            if [ "$workers" != "-" ] && [ "$workers" != default ]; then env_workers=(SLUICE_CDC_COPY_WORKERS="$workers"); fi
            env "${env_workers[@]}" $B snapshot --sluice "$bin" --dsn "$dsn" --bootstrap "$bootstrap" --prefix "snap$n" \
                --table users --rows "$rows" --partitions "$partitions" --log "$out/connector-snap$n.log" \
                > "$out/snapshot-$n.json"
            echo "   connector run $r, $label (copy workers: $workers): $(jq -c . "$out/snapshot-$n.json") (load $(load1))"
            runs_of[$label:$workers]+="$(jq -r .to_hw_all_ms "$out/snapshot-$n.json") "
            # Only snap1's slot is resumed (part 2); the others would only hold WAL back.
            if [ "$n" -gt 1 ]; then
                psqlq -d bench -c "SELECT pg_drop_replication_slot('sluice_snap$n')" > /dev/null
            fi
        done
    done
    dur=$(durability snap1.public.users)
    for v in "${variants[@]}"; do
        IFS=: read -r label bin workers <<< "$v"
        read -r -a snap_runs <<< "${runs_of[$label:$workers]}"
        snap_ms=$(printf '%s\n' "${snap_runs[@]}" | median)
        summary+=("$(printf '1. initial copy, %s rows, %s (copy workers %s)\tconnector start → HW covers all: %s ms (runs: %s)\tCOPY TO STDOUT: %s ms (runs: %s)\t%.2fx\t%s\t%s; postgres synchronous_commit=%s\tload %s' \
            "$rows" "$label" "$workers" "$snap_ms" "${snap_runs[*]}" \
            "$copy_ms" "${copy_runs[*]}" "$(awk -v a="$snap_ms" -v b="$copy_ms" 'BEGIN { print a / b }')" \
            "$(awk -v s="$snap_ms" -v c="$copy_ms" 'BEGIN { print (s <= 2 * c ? "<=2x COPY ok" : "<=2x COPY FAIL") }')" \
            "$dur" "$sync_commit" "$(load1)")")
    done
fi

# --- 2. streaming -----------------------------------------------------------------
if [[ " $parts " == *" stream "* ]]; then
    if [ ! -f "$out/snapshot-1.json" ]; then
        $B snapshot --sluice "$S" --dsn "$dsn" --bootstrap "$bootstrap" --prefix snap1 \
            --table users --rows "$rows" --partitions "$partitions" --log "$out/connector-snap1.log" > "$out/snapshot-1.json"
    fi
    dur=$(durability snap1.public.users)
    for mode in "10000 on" "1 off"; do
        read -r k sc <<< "$mode"
        echo "== 2. streaming: $changes single-row updates, $k per transaction, synchronous_commit=$sc"
        quiet
        $B stream --sluice "$S" --dsn "$dsn" --bootstrap "$bootstrap" --prefix snap1 --table users \
            --rows "$rows" --partitions "$partitions" --changes "$changes" --txn-rows "$k" --sync-commit "$sc" \
            --log "$out/connector-stream-$k.log" > "$out/stream-$k.json"
        echo "   $(jq -c . "$out/stream-$k.json")"
        summary+=("$(jq -r --arg dur "$dur" --arg load "$(load1)" '
            "2. stream \(.changes) updates, \(.txn_rows)/txn\tconnector start → topic holds all: \(.to_all_ms) ms = \(.changes_per_sec_from_start) changes/s (first→last change: \(.changes_per_sec_first_to_last)/s)\tpostgres applied them in \(.pg_apply_ms) ms = \(.pg_changes_per_sec)/s\t\(.changes_per_sec_from_start / .pg_changes_per_sec * 100 | round / 100)x\t\(if .changes_per_sec_from_start >= 50000 then ">=50k/s ok" else ">=50k/s FAIL" end)\t\($dur); postgres synchronous_commit=\(.synchronous_commit) (burst session)\tload \($load)"' \
            "$out/stream-$k.json")")
    done
fi

# --- 3. commit → visible ------------------------------------------------------------
if [[ " $parts " == *" latency "* ]]; then
    echo "== 3. commit → visible at $tps transactions/s for $seconds s (ticks: $lat_rows rows)"
    fill ticks "$lat_rows"
    RUST_LOG=info $S cdc postgres --bootstrap "$bootstrap" --dsn "$dsn" --tables public.ticks \
        --topic-prefix lat --partitions "$partitions" 2> "$out/connector-lat.log" &
    connector=$!
    if ! wait_for 120 grep -q 'initial copy written' "$out/connector-lat.log"; then
        cat "$out/connector-lat.log" >&2
        exit 1
    fi
    quiet
    $B latency --dsn "$dsn" --bootstrap "$bootstrap" --prefix lat --table ticks --rows "$lat_rows" \
        --tps "$tps" --seconds "$seconds" > "$out/latency.json"
    jq . "$out/latency.json"
    kill -INT "$connector"; wait "$connector" || true; connector=
    dur=$(durability lat.public.ticks)
    summary+=("$(jq -r --arg dur "$dur" --arg load "$(load1)" '
        "3. commit → visible, \(.achieved_tps) txn/s, \(.readers) TableSets\tp50/p99/max \(.visible_ms_all_readers.p50_ms)/\(.visible_ms_all_readers.p99_ms)/\(.visible_ms_all_readers.max_ms) ms (\(.visible_ms_all_readers.count) samples, not seen \(.not_seen)); wait_for_source after commit p50/p99 loaded \(.wait_for_source_ms_loaded.p50_ms)/\(.wait_for_source_ms_loaded.p99_ms) ms, idle \(.wait_for_source_ms_idle.p50_ms)/\(.wait_for_source_ms_idle.p99_ms) ms\tpostgres commit p50/p99/max \(.commit_ms.p50_ms)/\(.commit_ms.p99_ms)/\(.commit_ms.max_ms) ms\t-\t\(if .visible_ms_all_readers.p99_ms <= 50 then "p99<=50 ms ok" else "p99<=50 ms FAIL" end)\t\($dur); postgres synchronous_commit='"$sync_commit"'\tload \($load)"' \
        "$out/latency.json")")
fi

echo
echo "== CDC (Postgres): $(nproc) cores; postgres: $pg_settings"
{
    printf 'run\tsluice cdc\tpostgres baseline (same run)\tratio\tfloor\tdurability\tload (1 min)\n'
    printf '%s\n' "${summary[@]}"
} | column -t -s $'\t'
