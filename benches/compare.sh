#!/usr/bin/env bash
# The same HTTP line-protocol write load against gridlake, VictoriaMetrics and InfluxDB
# 1.x, one after the other on this machine, and a table side by side: rows/s, values/s,
# ack latency, the server's CPU and peak memory, and bytes on disk per field value.
#
#   cargo build --release -p server -p benches
#   benches/compare.sh                                  # defaults below
#   SECONDS=5 DEVICES=1000 GZIP=1 benches/compare.sh
#
# Installs nothing. Needs victoria-metrics and influxd (Debian: victoria-metrics,
# influxdb), python3 (free ports) and the two release binaries of this workspace. Each
# server starts on a scratch data directory and a free port; `gridlake-load write` drives
# it with --server-pid (CPU and RSS from /proc), then stops it with SIGTERM
# (--stop-server: servers flush on shutdown) and measures the data directory.
# SERVERS picks and orders the servers; KEEP=1 keeps the scratch directory.
# `gridlake-open` is gridlake with auth.enabled = false and no token: beside `gridlake`
# (token, registry lookups, last-seen) it measures what access control costs a write.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
. benches/common.sh

# bash counts $SECONDS up from the value it inherits; the environment keeps the original.
RUN_SECONDS=$(printenv SECONDS || echo 30)    # seconds of writing per server
DEVICES=${DEVICES:-10000}                     # meters (series), 5 fields each
BATCH=${BATCH:-10000}                         # rows per request
CONNECTIONS=${CONNECTIONS:-4}                 # concurrent HTTP connections
GZIP=${GZIP:-0}                               # 1: gzip level 1 request bodies
GENERATORS=${GENERATORS:-1}                   # client threads rendering bodies
SERVERS=${SERVERS:-"gridlake victoriametrics influxdb"}
GRIDLAKE_BIN=${GRIDLAKE_BIN:-target/release/gridlake}
LOAD_BIN=${LOAD_BIN:-target/release/gridlake-load}
VM_BIN=${VM_BIN:-victoria-metrics}
INFLUXD_BIN=${INFLUXD_BIN:-influxd}

need() { command -v "$1" > /dev/null 2>&1 || { echo "compare.sh: $1 not found ($2)" >&2; exit 1; }; }
need "$LOAD_BIN" "cargo build --release -p benches, or set LOAD_BIN"
need python3 "used to find free ports"
for server in $SERVERS; do
    case $server in
        gridlake | gridlake-open) need "$GRIDLAKE_BIN" "cargo build --release -p server, or set GRIDLAKE_BIN" ;;
        victoriametrics) need "$VM_BIN" "Debian package victoria-metrics, or set VM_BIN" ;;
        influxdb) need "$INFLUXD_BIN" "Debian package influxdb, or set INFLUXD_BIN" ;;
        *) echo "compare.sh: unknown server $server in SERVERS" >&2; exit 1 ;;
    esac
done

work=$(mktemp -d /tmp/gridlake-compare.XXXXXX)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2> /dev/null || true; wait "$server_pid" 2> /dev/null || true; fi
    if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

package_version() { dpkg-query -W -f='${Version}' "$1" 2> /dev/null || echo unknown; }

load_flags=(--seconds "$RUN_SECONDS" --devices "$DEVICES" --batch "$BATCH"
            --connections "$CONNECTIONS" --generators "$GENERATORS")
[ "$GZIP" = 1 ] && load_flags+=(--gzip)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "parameters: SECONDS=$RUN_SECONDS DEVICES=$DEVICES BATCH=$BATCH CONNECTIONS=$CONNECTIONS GZIP=$GZIP GENERATORS=$GENERATORS SERVERS=\"$SERVERS\""
echo "load tool: $LOAD_BIN (the client shares the cores with each server)"
echo

# Starts server $1 on a free port with data in $work/$1; sets server_pid, url, target,
# data_dir and load_env (what the load tool needs in its environment: gridlake's token).
start_server() {
    local port rpc_port token
    port=$(free_port)
    data_dir=$work/$1
    mkdir -p "$data_dir"
    url=http://127.0.0.1:$port
    load_env=()
    case $1 in
        gridlake)
            target=gridlake
            echo "gridlake: $GRIDLAKE_BIN ($("$GRIDLAKE_BIN" --version))"
            token=$(admin_token "$GRIDLAKE_BIN" "$data_dir") || exit 1
            # In the environment, not on the command line: `ps` shows command lines.
            load_env=(GRIDLAKE_TOKEN="$token")
            "$GRIDLAKE_BIN" serve --data-dir "$data_dir" --http-addr "127.0.0.1:$port" \
                > "$work/$1.log" 2>&1 &
            ;;
        gridlake-open)
            target=gridlake
            echo "gridlake-open: $GRIDLAKE_BIN with auth.enabled = false"
            GRIDLAKE_AUTH_ENABLED=false "$GRIDLAKE_BIN" serve --data-dir "$data_dir" \
                --http-addr "127.0.0.1:$port" > "$work/$1.log" 2>&1 &
            ;;
        victoriametrics)
            target=victoriametrics
            echo "victoriametrics: $VM_BIN (package $(package_version victoria-metrics))"
            # Timestamps lie up to a day or more in the past: keep everything.
            "$VM_BIN" -storageDataPath="$data_dir" -httpListenAddr="127.0.0.1:$port" \
                -retentionPeriod=100y > "$work/$1.log" 2>&1 &
            ;;
        influxdb)
            target=influxdb
            rpc_port=$(free_port)
            echo "influxdb: $INFLUXD_BIN ($("$INFLUXD_BIN" version 2> /dev/null | head -1))"
            # Defaults otherwise; wal-fsync-delay 0s (the default) fsyncs every write.
            cat > "$work/influxdb.conf" <<CONF
reporting-enabled = false
bind-address = "127.0.0.1:$rpc_port"
[meta]
  dir = "$data_dir/meta"
[data]
  dir = "$data_dir/data"
  wal-dir = "$data_dir/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
CONF
            "$INFLUXD_BIN" run -config "$work/influxdb.conf" > "$work/$1.log" 2>&1 &
            ;;
    esac
    server_pid=$!
}

# `load:` summary value of key $1 in file $2.
field() { sed -n 's/^load:.* '"$1"'=\([^ ]*\).*/\1/p' "$2" | tail -1; }

ran=()
for server in $SERVERS; do
    start_server "$server"
    out=$work/$server.out
    if env "${load_env[@]}" "$LOAD_BIN" write --target "$target" --url "$url" "${load_flags[@]}" \
        --server-pid "$server_pid" --data-dir "$data_dir" --stop-server | tee "$out"; then
        ran+=("$server")
    else
        echo "compare.sh: the $server run failed; its log:" >&2
        tail -20 "$work/$server.log" >&2
        kill "$server_pid" 2> /dev/null || true
    fi
    wait "$server_pid" 2> /dev/null || true
    server_pid=
    echo
done
[ "${#ran[@]}" -gt 0 ] || { echo "compare.sh: no run succeeded" >&2; exit 1; }

# The table, then gridlake's figures over each peer's.
printf '%-16s %10s %11s %8s %8s %10s %8s %11s %9s %9s %11s\n' \
    server rows/s values/s p50_ms p99_ms cpu_s cores cpu_s/Mval rss_MiB bytes/val parquet_b/v
for server in "${ran[@]}"; do
    out=$work/$server.out
    cpu=$(field server_cpu_s "$out")
    values=$(field values "$out")
    printf '%-16s %10s %11s %8s %8s %10s %8s %11s %9s %9s %11s\n' "$server" \
        "$(field rows_per_s "$out")" "$(field values_per_s "$out")" \
        "$(field ack_p50_ms "$out")" "$(field ack_p99_ms "$out")" \
        "$cpu" "$(field server_cores "$out")" \
        "$(awk -v c="$cpu" -v v="$values" 'BEGIN { if (v > 0) printf "%.2f", c / v * 1e6; else print "-" }')" \
        "$(field server_rss_max_mib "$out")" "$(field bytes_per_value "$out")" \
        "$(field parquet_bytes_per_value "$out")"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
if [[ " ${ran[*]} " == *" gridlake "* ]]; then
    g=$work/gridlake.out
    g_cpv=$(awk -v c="$(field server_cpu_s "$g")" -v v="$(field values "$g")" 'BEGIN { if (v > 0) print c / v; else print 0 }')
    for peer in "${ran[@]}"; do
        [ "$peer" = gridlake ] && continue
        p=$work/$peer.out
        p_cpv=$(awk -v c="$(field server_cpu_s "$p")" -v v="$(field values "$p")" 'BEGIN { if (v > 0) print c / v; else print 0 }')
        echo "gridlake/$peer: rows/s x$(ratio "$(field rows_per_s "$g")" "$(field rows_per_s "$p")")," \
            "p50 x$(ratio "$(field ack_p50_ms "$g")" "$(field ack_p50_ms "$p")")," \
            "p99 x$(ratio "$(field ack_p99_ms "$g")" "$(field ack_p99_ms "$p")")," \
            "CPU per value x$(ratio "$g_cpv" "$p_cpv")," \
            "peak RSS x$(ratio "$(field server_rss_max_mib "$g")" "$(field server_rss_max_mib "$p")")," \
            "bytes/value x$(ratio "$(field bytes_per_value "$g")" "$(field bytes_per_value "$p")")"
    done
fi
cat <<'NOTE'

Durability differs: gridlake acknowledges a request after its rows are fsynced in the WAL
(group commit); InfluxDB 1.x fsyncs its WAL on every write (wal-fsync-delay = "0s");
VictoriaMetrics acknowledges once rows are buffered in memory and flushes about once a
second, with no fsync per request (a crash loses the last seconds of acknowledged writes).
rows/s and latency are per acknowledged request; CPU is the server's user+system time
during the run (cores = CPU seconds per wall second); rss_MiB is the largest VmRSS
sampled every 100 ms; bytes/val is the whole data directory after a graceful stop
divided by acknowledged field values (parquet_b/v: gridlake's tables/ alone). After a
short run InfluxDB still holds WAL segments and first-level TSM files, and
VictoriaMetrics small parts, that later compactions shrink; so do gridlake's snapshot
files, which its compaction merges and re-encodes (benches/storage_size.sh measures by how
much). Longer runs (SECONDS=60 and more) show their steady state better.
Ratios are gridlake's figure over the peer's: above 1 means more (better for rows/s, worse
for latency, CPU, memory and bytes).
NOTE
