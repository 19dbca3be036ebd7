#!/usr/bin/env bash
# Bytes per stored value on meter data, before and after compaction, next to the same
# rows as line protocol (what the gateways sent) and as CSV and Parquet exports:
#
#   cargo build --release -p server -p benches
#   benches/storage_size.sh
#
# One gridlake (release build) on a scratch data directory and a free port, with the
# background compaction and the rollup refresh off (so only the raw table is measured and
# compaction happens when this script asks). `gridlake-load write` sends DEVICES meters
# (a random walk of power, cumulative import/export registers, voltage, current,
# frequency; see benches/src/fleet.rs) every INTERVAL from START for WRITE_SECONDS of
# writing. The server is stopped (persisting the buffer) and started again, then:
#   - `GET /api/v1/tables/size_meter`: Parquet files, bytes and rows as snapshots left them;
#   - `POST /api/v1/admin/compact` until nothing is left to merge, and the same again;
#   - `gridlake export --format csv` and `--format parquet` of the whole table.
# Line-protocol bytes are the load tool's count of what it sent (to 0.1 MB).
# A value is one field of one row (tags and time are not counted as values).
# KEEP=1 keeps the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
. benches/common.sh

GRIDLAKE_BIN=${GRIDLAKE_BIN:-target/release/gridlake}
LOAD_BIN=${LOAD_BIN:-target/release/gridlake-load}
DEVICES=${DEVICES:-1000}
INTERVAL=${INTERVAL:-10s}
WRITE_SECONDS=${WRITE_SECONDS:-20}
START=${START:-2026-01-01T00:00:00Z}

for bin in "$GRIDLAKE_BIN" "$LOAD_BIN"; do
    [ -x "$bin" ] || { echo "storage_size.sh: $bin is missing (cargo build --release -p server -p benches)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/gridlake-size.XXXXXX)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2> /dev/null || true; wait "$server_pid" 2> /dev/null || true; fi
    if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

port=$(free_port)
url=http://127.0.0.1:$port
data_dir=$work/data
mkdir -p "$data_dir"
GRIDLAKE_TOKEN=$(admin_token "$GRIDLAKE_BIN" "$data_dir") || exit 1
# In the environment, not on command lines: `ps` shows command lines.
export GRIDLAKE_TOKEN GRIDLAKE_URL=$url
export GRIDLAKE_STORAGE_COMPACTION_INTERVAL=0s GRIDLAKE_QUERY_ROLLUP_REFRESH_INTERVAL=0s

start_server() {
    "$GRIDLAKE_BIN" serve --data-dir "$data_dir" --http-addr "127.0.0.1:$port" >> "$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 150); do
        curl -sf "$url/health" > /dev/null && return 0
        sleep 0.2
    done
    echo "storage_size.sh: the server did not start; see $work/server.log" >&2
    exit 1
}
stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=
}
api() {
    curl -sf -H "Authorization: Bearer $GRIDLAKE_TOKEN" "$@"
}
# Files, bytes and rows of the table, and how many of its columns are fields.
table_line() {
    api "$url/api/v1/tables/size_meter" | python3 -c '
import json, sys
t = json.load(sys.stdin)
fields = sum(1 for c in t["columns"] if c["role"] == "field")
print(t["files"], t["bytes"], t["file_rows"], t["buffer_rows"], fields)'
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr)"
echo "gridlake: $GRIDLAKE_BIN ($("$GRIDLAKE_BIN" --version))"
echo "parameters: DEVICES=$DEVICES INTERVAL=$INTERVAL WRITE_SECONDS=$WRITE_SECONDS START=$START"
start_server
"$LOAD_BIN" write --url "$url" --table-prefix size_ --devices "$DEVICES" \
    --interval "$INTERVAL" --start "$START" --seconds "$WRITE_SECONDS" > "$work/write.out"
grep -E '^(bytes|rows|acked)' "$work/write.out" || true
# "rows: N acknowledged (787.2 MB of line protocol, ...)": 0.1 MB of rounding.
lp_mb=$(sed -n 's/^rows:.*(\([0-9.]*\) MB of line protocol.*/\1/p' "$work/write.out")
stop_server
start_server

read -r files bytes rows buffer fields <<< "$(table_line)"
[ "$buffer" = 0 ] || { echo "storage_size.sh: $buffer rows still in the buffer after a restart" >&2; exit 1; }
values=$((rows * fields))
span=$(api --get "$url/api/v1/sql" --data-urlencode "q=SELECT min(time), max(time), count(DISTINCT device_id) FROM size_meter" --data-urlencode format=csv | tail -1)
echo "data: $rows rows x $fields fields = $values values; first, last, devices: $span"
report() { # label bytes
    python3 -c "import sys; b=int(sys.argv[2]); print(f'{sys.argv[1]:<34} {b:>13,} bytes  {b/$values:6.2f} bytes/value  {b/$rows:7.1f} bytes/row')" "$1" "$2"
}
report "Parquet as snapshots left it ($files files)" "$bytes"

started=$(date +%s.%N)
for pass in $(seq 10); do
    runs=$(api -X POST "$url/api/v1/admin/compact" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"])')
    [ "$runs" = 0 ] && break
done
elapsed=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
read -r files_after bytes_after rows_after _ _ <<< "$(table_line)"
[ "$rows_after" = "$rows" ] || { echo "storage_size.sh: compaction changed the row count ($rows -> $rows_after)" >&2; exit 1; }
report "Parquet after compaction ($files_after files)" "$bytes_after"
echo "compaction: $pass passes, ${elapsed} s"

"$GRIDLAKE_BIN" export --table size_meter --format csv --output "$work/export.csv" > /dev/null 2>&1
"$GRIDLAKE_BIN" export --table size_meter --format parquet --output "$work/export.parquet" > /dev/null 2>&1
report "CSV export (typed header)" "$(stat -c %s "$work/export.csv")"
report "Parquet export (one file)" "$(stat -c %s "$work/export.parquet")"
lp_bytes=$(python3 -c "print(round(float('$lp_mb') * 1e6))")
report "line protocol sent" "$lp_bytes"
echo "load: rows=$rows values=$values parquet_bytes=$bytes parquet_bytes_compacted=$bytes_after files=$files files_compacted=$files_after csv_bytes=$(stat -c %s "$work/export.csv") lp_bytes=$lp_bytes"
