#!/usr/bin/env bash
# Readings per second from `gridlake simulate mqtt` through a real Mosquitto into
# queryable gridlake storage, next to the broker's own ceiling measured in the same run:
# `mosquitto_sub` alone receiving the same stream.
#
#   cargo build --release -p server
#   benches/mqtt_throughput.sh                      # defaults below
#   MESSAGES=50000 BATCH=1 benches/mqtt_throughput.sh
#
# Needs mosquitto and mosquitto_sub (Debian: mosquitto, mosquitto-clients) and curl.
# Prints every parameter, the machine and one line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
. benches/common.sh

BIN=${GRIDLAKE_BIN:-target/release/gridlake}
MESSAGES=${MESSAGES:-100000}       # MQTT messages per run
DEVICES=${DEVICES:-10000}          # simulated devices
BATCH=${BATCH:-10}                 # readings per message for the JSON meter/inverter formats
CONNECTIONS=${CONNECTIONS:-2}      # publisher connections
START=2024-06-01T00:00:00Z         # virtual time of the first readings (fixed: same payloads every run)

work=$(mktemp -d /tmp/gridlake-mqtt-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }

port=$(free_port)
cat > "$work/mosquitto.conf" <<CONF
user root
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 1000
set_tcp_nodelay true
CONF
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done

broker=mqtt://127.0.0.1:$port
sim=("$BIN" simulate mqtt --broker "$broker" --devices "$DEVICES" --messages "$MESSAGES"
     --rate 0 --batch "$BATCH" --connections "$CONNECTIONS" --start "$START")

echo "machine: $(nproc) cores, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "binary: $BIN ($("$BIN" --version)), mosquitto $(mosquitto -h | head -1 | awk '{print $3}')"
echo "parameters: MESSAGES=$MESSAGES DEVICES=$DEVICES BATCH=$BATCH CONNECTIONS=$CONNECTIONS"
echo "simulator: ${sim[*]}"

summary_field() { sed -n 's/.*\b'"$1"'=\([0-9.]*\).*/\1/p' "$2" | tail -1; }

# 1. The broker's ceiling: mosquitto_sub (QoS 1) is the only subscriber.
mosquitto_sub -h 127.0.0.1 -p "$port" -q 1 -t 'gridlake-sim/#' -C "$MESSAGES" > /dev/null &
sub=$!
sleep 0.5
t0=$(now)
"${sim[@]}" > "$work/sim-ceiling.out" 2> "$work/sim-ceiling.err"
wait "$sub"
t1=$(now)
readings=$(summary_field readings "$work/sim-ceiling.out")
published=$(summary_field readings_per_second "$work/sim-ceiling.out")
echo "mosquitto_sub alone: $readings readings in $(echo "$t1 - $t0" | bc -l | xargs printf '%.2f') s = $(echo "$readings / ($t1 - $t0)" | bc -l | xargs printf '%.0f') readings/s received (publisher: $published readings/s acknowledged by the broker)"

# 2. gridlake: from the first publish until SQL counts every reading.
"$BIN" simulate mqtt --print-config --broker "$broker" \
    | sed 's/^enabled = true$/enabled = true\nclient_id = "gridlake-bench"\nmax_inflight = 10000/' \
    > "$work/gridlake.toml"
# An admin token for the SQL count, made the way the README makes the first one (straight
# into the side store, before the server starts).
token=$(admin_token "$BIN" "$work/data") || exit 1
"$BIN" serve --config "$work/gridlake.toml" --data-dir "$work/data" --http-addr 127.0.0.1:0 \
    > "$work/serve.out" 2> "$work/serve.log" &
server=$!
pids+=($server)
for _ in $(seq 600); do grep -q 'listening on' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$work/serve.out")
for _ in $(seq 600); do curl -s "$url/metrics" | grep -q '^gridlake_mqtt_subscribed 1' && break; sleep 0.1; done

count() {
    curl -s -G "$url/api/v1/sql" -H "Authorization: Bearer $token" --data-urlencode \
        'q=SELECT (SELECT count(*) FROM smart_plug) + (SELECT count(*) FROM ev_charger) + (SELECT count(*) FROM meter) + (SELECT count(*) FROM inverter) AS n' \
        -d format=csv | tail -1
}
t0=$(now)
"${sim[@]}" > "$work/sim-gridlake.out" 2> "$work/sim-gridlake.err"
t_pub=$(now)
readings=$(summary_field readings "$work/sim-gridlake.out")
# Rows are queryable the moment their message is acknowledged, so the collector's own
# counters say when everything is in; polling SQL instead would measure the polling
# (each count scans every row) more than the ingest.
stored() {
    curl -s "$url/metrics" | awk '/^gridlake_mqtt_readings_total/ {n += $2} /^gridlake_mqtt_unacked_messages / {u = $2} END {print (u == 0 ? n : -1)}'
}
while [ "$(stored)" != "$readings" ]; do
    sleep 0.05
    if [ "$(echo "$(now) - $t0 > 600" | bc)" = 1 ]; then echo "gridlake did not store $readings readings in 600 s (has $(stored))" >&2; exit 1; fi
done
t1=$(now)
n=$(count)
t2=$(now)
[ "$n" = "$readings" ] || { echo "SQL counts $n rows, the simulator sent $readings readings" >&2; exit 1; }
rss=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$server/status")
echo "gridlake: $readings readings queryable $(echo "$t1 - $t0" | bc -l | xargs printf '%.2f') s after the first publish = $(echo "$readings / ($t1 - $t0)" | bc -l | xargs printf '%.0f') readings/s (publisher done after $(echo "$t_pub - $t0" | bc -l | xargs printf '%.2f') s); server peak RSS $rss; SQL count of all $n rows took $(echo "$t2 - $t1" | bc -l | xargs printf '%.2f') s"
curl -s "$url/metrics" | grep -E '^gridlake_mqtt_(messages_total|store_busy|unacked)' | sed 's/^/  /'
