# Shell helpers shared by the bench scripts (sourced, not run): compare.sh,
# mqtt_throughput.sh, chart_latency.sh, storage_size.sh.

# A TCP port free on 127.0.0.1 right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Prints a new admin API token for the gridlake binary $1 whose data directory is $2,
# made the way the README makes the first one (straight into the side store, before the
# server starts). Fails naming the script when the command printed none.
admin_token() {
    local token
    token=$("$1" token create --data-dir "$2" --name bench --scope admin \
        | sed -n 's/.*"token":"\(glk_[^"]*\)".*/\1/p')
    [ -n "$token" ] || { echo "$(basename "$0"): gridlake token create printed no token" >&2; return 1; }
    echo "$token"
}
