#!/usr/bin/env bash
# How many simulated SunSpec devices one gridlake polls at a 1 s interval with under 1 %
# missed cycles. For each device count N, a mix of inverters, meters and batteries
# (`gridlake simulate modbus`, one port per device, thirds of N each) runs beside a
# gridlake that polls them all; after a warm-up, the cycle counters of /metrics are read
# twice, WINDOW seconds apart, and the share of cycles that were not polled successfully
# (missed, failed or skipped) in between is reported.
#
#   cargo build --release -p server
#   benches/modbus_capacity.sh                       # defaults below
#   COUNTS="3000 6000" WINDOW=120 benches/modbus_capacity.sh
#
# The simulator and gridlake share this machine's cores, so the figure is for both
# together; the simulator's CPU is printed so that it can be told apart.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${GRIDLAKE_BIN:-target/release/gridlake}
COUNTS=${COUNTS:-"1500 3000 6000"}   # device counts to try
WINDOW=${WINDOW:-60}                # measured window per count, seconds (not SECONDS: bash owns it)
WARMUP=${WARMUP:-15}                 # seconds polled before the window starts
INTERVAL=${INTERVAL:-1s}             # poll interval
BASE_PORT=${BASE_PORT:-20000}        # first simulator port; N ports from here

work=$(mktemp -d /tmp/gridlake-modbus-bench.XXXXXX)
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
cleanup() {
    stop_all
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# CPU seconds (user + system) a process has used so far.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
rss_mib() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
# Sum of gridlake_modbus_cycles_total for one outcome.
cycles() {
    awk -v o="$2" '$1 ~ "^gridlake_modbus_cycles_total\\{outcome=\"" o "\"" { s += $2 } END { printf "%d", s }' "$1"
}

echo "machine: $(nproc) cores, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "binary: $BIN ($("$BIN" --version)); open files limit $(ulimit -n)"
echo "parameters: COUNTS=\"$COUNTS\" WINDOW=$WINDOW WARMUP=$WARMUP INTERVAL=$INTERVAL BASE_PORT=$BASE_PORT"
printf '%8s %10s %8s %8s %8s %8s %9s %10s %10s %9s\n' \
    devices cycles ok missed failed skipped bad_pct gl_cores sim_cores gl_rss_MiB

for n in $COUNTS; do
    third=$(( (n + 2) / 3 ))
    port=$BASE_PORT
    config="$work/gridlake-$n.toml"
    : > "$work/devices-$n.toml"
    sims=()
    outs=()
    for model in inverter meter battery; do
        count=$(( n - (port - BASE_PORT) < third ? n - (port - BASE_PORT) : third ))
        [ "$count" -gt 0 ] || continue
        "$BIN" simulate modbus --model "$model" --count "$count" --port "$port" --interval "$INTERVAL" \
            --print-config | sed '/^\[modbus\]$/,/^interval/d' >> "$work/devices-$n.toml"
        "$BIN" simulate modbus --model "$model" --count "$count" --port "$port" \
            > "$work/sim-$model-$n.out" 2> "$work/sim-$model-$n.log" &
        pids+=($!)
        sims+=($!)
        outs+=("$work/sim-$model-$n.out")
        port=$(( port + count ))
    done
    { printf '[modbus]\nenabled = true\ninterval = "%s"\n' "$INTERVAL"; cat "$work/devices-$n.toml"; } > "$config"
    # Each simulator prints its ready line once every port listens.
    for out in "${outs[@]}"; do
        for _ in $(seq 600); do [ -s "$out" ] && break; sleep 0.1; done
    done

    "$BIN" serve --config "$config" --data-dir "$work/data-$n" --http-addr 127.0.0.1:0 \
        > "$work/serve-$n.out" 2> "$work/serve-$n.log" &
    server=$!
    pids+=($server)
    for _ in $(seq 600); do grep -q 'listening on' "$work/serve-$n.out" 2>/dev/null && break; sleep 0.1; done
    url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$work/serve-$n.out")
    [ -n "$url" ] || { echo "gridlake did not start; see $work/serve-$n.log" >&2; KEEP=1; exit 1; }

    sleep "$WARMUP"
    curl -sf "$url/metrics" > "$work/m0"
    gl0=$(cpu_seconds "$server")
    sim0=0; for p in "${sims[@]}"; do sim0=$(echo "$sim0 + $(cpu_seconds "$p")" | bc -l); done
    sleep "$WINDOW"
    curl -sf "$url/metrics" > "$work/m1"
    gl1=$(cpu_seconds "$server")
    sim1=0; for p in "${sims[@]}"; do sim1=$(echo "$sim1 + $(cpu_seconds "$p")" | bc -l); done
    rss=$(rss_mib "$server")

    ok=$(( $(cycles "$work/m1" ok) - $(cycles "$work/m0" ok) ))
    missed=$(( $(cycles "$work/m1" missed) - $(cycles "$work/m0" missed) ))
    failed=$(( $(cycles "$work/m1" failed) - $(cycles "$work/m0" failed) ))
    skipped=$(( $(cycles "$work/m1" skipped) - $(cycles "$work/m0" skipped) ))
    total=$(( ok + missed + failed + skipped ))
    bad=$(echo "scale=3; 100 * ($missed + $failed + $skipped) / ($total + ($total == 0))" | bc -l)
    printf '%8d %10d %8d %8d %8d %8d %9.3f %10.2f %10.2f %9s\n' \
        "$n" "$total" "$ok" "$missed" "$failed" "$skipped" "$bad" \
        "$(echo "($gl1 - $gl0) / $WINDOW" | bc -l)" "$(echo "($sim1 - $sim0) / $WINDOW" | bc -l)" "$rss"
    stop_all
done
