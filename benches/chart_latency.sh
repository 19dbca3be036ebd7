#!/usr/bin/env bash
# Latency of the portal's read endpoints next to the same answers computed from raw rows:
#
#   cargo build --release -p server -p benches
#   benches/chart_latency.sh
#
# One gridlake (release build) on a scratch data directory and a free port gets two
# data sets from `gridlake-load write`:
#   - `one_meter`: one meter every 10 s from START for at least SERIES_DAYS days (the
#     chart shapes ask for SERIES_DAYS from its first row);
#   - `fleet_meter`: FLEET devices (10,000) reporting every 10 s for FLEET_SECONDS of
#     writing (the latest shapes ask for every device's newest reading).
# It waits until the rollups have caught up (the 15-minute rollup of `one_meter` covers
# the window), then runs `gridlake-load query`: p50/p99/max of each shape, one request at
# a time (`api_series` vs `series` and `api_series_raw`; `api_latest` vs `latest` over
# all rows). KEEP=1 keeps the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
. benches/common.sh

GRIDLAKE_BIN=${GRIDLAKE_BIN:-target/release/gridlake}
LOAD_BIN=${LOAD_BIN:-target/release/gridlake-load}
SERIES_DAYS=${SERIES_DAYS:-30}
FLEET=${FLEET:-10000}
FLEET_SECONDS=${FLEET_SECONDS:-5}
ITERATIONS=${ITERATIONS:-50}
START=${START:-2026-01-01T00:00:00Z}
FLEET_START=${FLEET_START:-2026-06-01T00:00:00Z}

for bin in "$GRIDLAKE_BIN" "$LOAD_BIN"; do
    [ -x "$bin" ] || { echo "chart_latency.sh: $bin is missing (cargo build --release -p server -p benches)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/gridlake-chart.XXXXXX)
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
export GRIDLAKE_TOKEN

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr)"
echo "gridlake: $GRIDLAKE_BIN ($("$GRIDLAKE_BIN" --version))"
echo "parameters: SERIES_DAYS=$SERIES_DAYS FLEET=$FLEET FLEET_SECONDS=$FLEET_SECONDS ITERATIONS=$ITERATIONS START=$START FLEET_START=$FLEET_START"
"$GRIDLAKE_BIN" serve --data-dir "$data_dir" --http-addr "127.0.0.1:$port" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    curl -sf "$url/health" > /dev/null && break
    sleep 0.2
done

sql() {
    curl -sf -H "Authorization: Bearer $GRIDLAKE_TOKEN" --get "$url/api/v1/sql" \
        --data-urlencode "q=$1" --data-urlencode format=csv | tail -n +2
}

# One meter, 10-second readings: a second of writing covers months of virtual time; keep
# writing until SERIES_DAYS are there.
"$LOAD_BIN" write --url "$url" --table-prefix one_ --devices 1 --devices-per-site 1 \
    --interval 10s --start "$START" --seconds 2 --connections 1 > "$work/write-one.out"
rows=$(sql "SELECT count(*) FROM one_meter")
echo "one_meter: $rows rows"
[ "$rows" -ge $((SERIES_DAYS * 8640)) ] || { echo "chart_latency.sh: fewer than $SERIES_DAYS days written" >&2; exit 1; }

"$LOAD_BIN" write --url "$url" --table-prefix fleet_ --devices "$FLEET" \
    --interval 10s --start "$FLEET_START" --seconds "$FLEET_SECONDS" > "$work/write-fleet.out"
echo "fleet_meter: $(sql "SELECT count(*) FROM fleet_meter") rows, $(sql "SELECT count(DISTINCT device_id) FROM fleet_meter") devices"

# The refresh runs in the background: wait until every rollup of both tables is complete
# (as many 15-minute and daily rows as the raw rows have series and buckets), so no
# refresh competes with the timed queries.
rolled_up() { # table, width, rollup table
    local want have
    want=$(sql "SELECT count(*) FROM (SELECT DISTINCT device_id, date_bin(INTERVAL '$2', time) FROM $1)")
    have=$(sql "SELECT count(*) FROM $3" 2> /dev/null || echo 0)
    echo "$3: $have of $want rows"
    [ "${have:-0}" -ge "$want" ]
}
for table in one_meter fleet_meter; do
    for i in $(seq 300); do
        if rolled_up "$table" "15 minutes" "${table}_15m" > "$work/rolled" && rolled_up "$table" "1 day" "${table}_1d" >> "$work/rolled"; then
            break
        fi
        [ "$i" -eq 300 ] && { cat "$work/rolled"; echo "chart_latency.sh: the rollups of $table are incomplete after 10 minutes" >&2; exit 1; }
        sleep 2
    done
    cat "$work/rolled"
done
sleep 12 # one more refresh interval (10 s by default): the last pass has finished

"$LOAD_BIN" query --url "$url" --table fleet_meter --series-table one_meter \
    --series-window "$((SERIES_DAYS * 24))h" --latest-window 100000h \
    --iterations "$ITERATIONS" --warmup 3
