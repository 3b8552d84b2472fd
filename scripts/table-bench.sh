#!/usr/bin/env bash
# Table bootstrap benchmark beside its Postgres baseline (issue 10), as docs/performance.md
# records it:
#   scripts/table-bench.sh [ROWS] [PARTITIONS...]      (default 3000000 rows; 1 and 8 partitions)
#
# 1. Postgres: a throwaway PostgreSQL (initdb + pg_ctl from `pg_config --bindir` or
#    /usr/lib/postgresql/15/bin, run as the `postgres` user in a temp dir, a free port on
#    127.0.0.1, its unix socket in the temp dir; apt-get installs `postgresql` only if
#    neither exists). benches/src/bin/pg_copy_load.rs fills `bench_rows(key text primary
#    key, value text)` with the same ROWS rows (the same `row(i)` generator as
#    table_bootstrap), then, in a fresh process, times `COPY bench_rows TO STDOUT (FORMAT
#    binary)` decoded by hand into a HashMap pre-sized to ROWS, with RSS before/after.
#    Postgres is stopped before the Sluice side runs, so it does not compete for the cores.
# 2. Sluice, for each partition count: a fresh `sluice dev` (release, 1 broker, log cleaner
#    off so it does not compete for the 2 cores), ROWS distinct keys of ~100 B values
#    produced with acks=all RF 1, then benches/src/bin/table_bootstrap.rs opens a RawTable
#    and prints time-to-ready, RSS, bytes/row and `get` latency as JSON.
# 3. One summary table: Postgres COPY load vs Table time-to-ready, RSS, bytes/row, the
#    ratio Table/Postgres, the floors of issue 10 (ready <= 5 s, no slower than the
#    Postgres load, memory <= 1.5x raw key+value bytes) and the durability of each side.
#
# Timings are the median of TABLE_BENCH_REPEAT (default 3) fresh processes per side: the
# Postgres load is rerun as is; table_bootstrap produces and opens with --no-latency, then
# reopens the same topic with --skip-produce (--no-latency but for the last run, whose
# memory and `get` latency figures are the ones shown: its update phase adds records, so
# it must come last). Every time is printed beside the median: this 2-core VM is shared
# and noisy.
#
# Environment: TABLE_BENCH_PG=0 skips Postgres, TABLE_BENCH_TABLE=0 skips Sluice,
# TABLE_BENCH_ARGS adds flags to table_bootstrap (e.g. --no-latency), TABLE_BENCH_NO_BUILD=1
# uses the release binaries already in target/release, TABLE_BENCH_OUT=DIR keeps every
# JSON output there. Postgres and `sluice dev` are stopped and temp dirs removed on exit.
#
# Hook for other comparisons: `table_bootstrap --csv PATH --rows N` writes exactly the rows
# the topic gets (`key,value`, value quoted JSON), from the same `row(i)` function.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-3000000}
shift || true
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(1 8)
run_pg=${TABLE_BENCH_PG:-1}
run_table=${TABLE_BENCH_TABLE:-1}
repeat=${TABLE_BENCH_REPEAT:-3}
read -r -a table_args <<< "${TABLE_BENCH_ARGS:-}"

if [ "${TABLE_BENCH_NO_BUILD:-0}" != 1 ]; then
    [ "$run_table" = 1 ] && cargo build --release --quiet --bin sluice -p sluice
    cargo build --release --quiet -p sluice-benches --bin table_bootstrap --bin pg_copy_load
fi
S=./target/release/sluice
B=./target/release/table_bootstrap
P=./target/release/pg_copy_load

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-table-bench.XXXXXX")
out=${TABLE_BENCH_OUT:-$work}
mkdir -p "$out"
dev=
pgdir=
pgbin=
pg_stop() {
    if [ -n "$pgdir" ]; then
        runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -rf "$pgdir"
        pgdir=
    fi
}
cleanup() {
    if [ -n "$dev" ]; then kill -INT "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; fi
    pg_stop
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until `cmd...` succeeds, polling, for at most $1 seconds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        if [ $SECONDS -ge $deadline ]; then return 1; fi
        sleep 0.1
    done
}

pg_bindir() {
    local d
    for d in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/15/bin; do
        if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

if [ "$run_pg" = 1 ]; then
    if ! pgbin=$(pg_bindir); then
        echo "== installing postgresql (apt-get)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        pgbin=$(pg_bindir)
    fi
    pgdir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-table-bench-pg.XXXXXX")
    chown postgres: "$pgdir"
    chmod 700 "$pgdir"
    pgport=$(free_port)
    runuser -u postgres -- "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust \
        -E UTF8 --locale=C > "$pgdir/initdb.log" 2>&1 || { cat "$pgdir/initdb.log" >&2; exit 1; }
    # Server defaults (fsync on, shared_buffers 128MB, ...): only the read is timed.
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -W \
        -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1" start > /dev/null
    if ! wait_for 60 "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pgport" -U postgres; then
        echo "postgres did not get ready within 60 s:" >&2
        cat "$pgdir/server.log" >&2
        exit 1
    fi
    dsn="host=127.0.0.1 port=$pgport user=postgres dbname=postgres"
    pg_settings=$(psql -X -A -t -h 127.0.0.1 -p "$pgport" -U postgres -d postgres -c \
        "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
         WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'wal_level', 'full_page_writes')")
    echo "== postgres $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pgport ($pg_settings)"
    echo "== postgres: filling bench_rows with $rows rows"
    $P --dsn "$dsn" --rows "$rows" --fill --no-verify --output json > "$out/pg-fill.json"
    echo "   filled in $(jq -r '.fill_s | . * 100 | round / 100' "$out/pg-fill.json") s (COPY FROM STDIN binary, then primary key and VACUUM (ANALYZE, FREEZE)); table $(jq -r '.table_bytes_on_disk / 1e6 | round' "$out/pg-fill.json") MB on disk"
    echo "== postgres: COPY bench_rows TO STDOUT (FORMAT binary) into a HashMap, fresh process x $repeat"
    for r in $(seq "$repeat"); do
        f="$out/pg.json"
        [ "$r" -gt 1 ] && f="$out/pg-r$r.json"
        $P --dsn "$dsn" --rows "$rows" --output json > "$f"
        jq -c '{rows, seconds, rows_per_sec, stream_mb_per_sec, rss_before_bytes, rss_after_bytes, rss_delta_per_row, raw_bytes_per_row, verified_rows, runtime}' "$f"
    done
    # The server's share alone: the same COPY written to /dev/null by the backend itself.
    pg_server_ms=$(psql -X -q -h 127.0.0.1 -p "$pgport" -U postgres -d postgres -c '\timing on' \
        -c "COPY bench_rows TO '/dev/null' (FORMAT binary)" | awk '/^Time:/ {print $2}')
    echo "   server alone (COPY bench_rows TO '/dev/null' (FORMAT binary)): ${pg_server_ms} ms"
    pg_stop
fi

if [ "$run_table" = 1 ]; then
    for p in "${parts[@]}"; do
        port=$(free_port)
        RUST_LOG=warn $S dev --data-dir "$work/data-$p" --listen "127.0.0.1:$port" \
            --log-cleaner-enable false > "$work/dev-$p.out" &
        dev=$!
        if ! wait_for 60 grep -q '^ready' "$work/dev-$p.out"; then
            echo "sluice dev did not get ready within 60 s:" >&2
            cat "$work/dev-$p.out" >&2
            exit 1
        fi
        echo "== sluice Table: $rows rows, $p partition(s)"
        tb=("$B" --bootstrap "127.0.0.1:$port" --rows "$rows" --partitions "$p")
        if [ "$repeat" -le 1 ]; then
            "${tb[@]}" "${table_args[@]}" > "$out/table-$p.json"
        else
            "${tb[@]}" --no-latency "${table_args[@]}" > "$out/table-$p-r1.json"
            echo "   run 1 (produce + open): $(jq -c . "$out/table-$p-r1.json")"
            for r in $(seq 2 $((repeat - 1))); do
                "${tb[@]}" --skip-produce --no-latency "${table_args[@]}" > "$out/table-$p-r$r.json"
                echo "   run $r (reopen): $(jq -c . "$out/table-$p-r$r.json")"
            done
            echo "   run $repeat (reopen, then get latency):"
            "${tb[@]}" --skip-produce "${table_args[@]}" > "$out/table-$p.json"
        fi
        cat "$out/table-$p.json"
        $S topic describe --bootstrap "127.0.0.1:$port" --output json \
            "table-bench-$rows-${p}p" > "$out/topic-$p.json" || echo '{}' > "$out/topic-$p.json"
        kill -INT "$dev"
        wait "$dev" || true
        dev=
        rm -rf "$work/data-$p"
    done
fi

# --- summary -----------------------------------------------------------------
echo
echo "== Table bootstrap vs Postgres COPY load: $rows rows x ~100 B values, $(nproc) cores"
# "median (all runs)" of the seconds in the given JSON files' field $1.
times() {
    local field=$1
    shift
    jq -s -r "[.[] | $field] | sort | (.[length / 2 | floor] * 1000 | round / 1000 | tostring)
        + \" (\" + (map(. * 100 | round / 100 | tostring) | join(\" \")) + \")\"" "$@"
}
median() { jq -s -r "[.[] | $1] | sort | .[length / 2 | floor]" "${@:2}"; }
pg_s=
pg_runs=()
if [ -f "$out/pg.json" ]; then
    pg_runs=("$out/pg.json")
    for r in $(seq 2 "$repeat"); do
        [ -f "$out/pg-r$r.json" ] && pg_runs+=("$out/pg-r$r.json")
    done
    pg_s=$(median .seconds "${pg_runs[@]}")
fi
{
    printf 'system\tpartitions\tready s: median (runs)\trows/s\tRSS before MB\tRSS after MB\tRSS B/row\tRSS/raw\traw B/row\tvs Postgres\tfloors\tdurability\n'
    if [ -f "$out/pg.json" ]; then
        jq -r --arg set "${pg_settings:-}" --arg t "$(times .seconds "${pg_runs[@]}")" --arg s "$pg_s" '[
            "postgres COPY binary -> HashMap", "-",
            $t, (.rows / ($s | tonumber) | round),
            (.rss_before_bytes / 1e6 | round), (.rss_after_bytes / 1e6 | round),
            (.rss_delta_per_row * 10 | round / 10), (.rss_delta_over_raw * 100 | round / 100),
            (.raw_bytes_per_row * 10 | round / 10), "1.00", "-",
            ("server " + $set)] | @tsv' "$out/pg.json"
    fi
    for p in "${parts[@]}"; do
        f="$out/table-$p.json"
        [ -f "$f" ] || continue
        runs=("$f")
        for r in $(seq 1 $((repeat - 1))); do
            [ -f "$out/table-$p-r$r.json" ] && runs+=("$out/table-$p-r$r.json")
        done
        jq -r --arg pg "$pg_s" --arg p "$p" --slurpfile t "$out/topic-$p.json" \
            --arg times "$(times '.ready_ms / 1000' "${runs[@]}")" \
            --arg med "$(median '.ready_ms / 1000' "${runs[@]}")" '
            ($med | tonumber) as $s
            | (.rss_delta_per_row) as $rss
            | (.raw_bytes_per_row // 114) as $raw
            | ($t[0].configs // {}) as $c
            | ($t[0].partitions[0].replicas // [] | length) as $rf
            | (if $c["flush.messages"] == "1" then "every batch"
               elif $c["flush.messages"] != null and $c["flush.messages"] != "9223372036854775807" then "every " + $c["flush.messages"] + " records"
               elif $c["flush.ms"] != null and $c["flush.ms"] != "9223372036854775807" then "every " + $c["flush.ms"] + " ms"
               else "none (OS writeback)" end) as $fsync
            | [ "sluice Table (RawTable)", $p,
                $times, (.rows / $s | round),
                ((.rss_before_open_bytes // 0) / 1e6 | round), ((.rss_after_ready_bytes // 0) / 1e6 | round),
                ($rss * 10 | round / 10), ($rss / $raw * 100 | round / 100), ($raw * 10 | round / 10),
                (if $pg == "" then "-" else ($s / ($pg | tonumber) * 100 | round / 100 | tostring) + "x" end),
                ([ (if $s <= 5 then "ready<=5s ok" else "ready<=5s FAIL" end),
                   (if $pg == "" then empty elif $s <= ($pg | tonumber) then "<=pg ok" else "<=pg FAIL" end),
                   (if $rss <= 1.5 * $raw then "mem<=1.5x ok" else "mem<=1.5x FAIL" end) ] | join(" ")),
                "acks=all (produce), RF \($rf), fsync \($fsync)" ] | @tsv' "$f"
    done
} | column -t -s $'\t'
echo "RSS B/row: VmRSS growth of the loading process from before open/COPY to ready, per row"
echo "(table_bootstrap: at ready, before malloc_trim; --no-latency reports it after malloc_trim)."
echo "raw B/row: key + value bytes. vs Postgres: median Table ready time / median Postgres COPY load time."
if [ -n "${pg_server_ms:-}" ]; then
    echo "Postgres server alone (COPY TO '/dev/null', no client): ${pg_server_ms} ms."
fi
