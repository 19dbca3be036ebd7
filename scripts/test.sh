#!/usr/bin/env bash
# The whole test suite, as the README and CI run it:
#   1. install what the tests need beyond the Rust toolchain (system and Python packages),
#   2. formatting and lints (rustfmt, clippy with warnings as errors),
#   3. every test of every crate: unit, integration (the real `gridlake` binary on
#      port 0), benches in test mode, and doc tests.
# Run it from anywhere; it works from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# System packages the tests need, one per line.
APT_PACKAGES=(
    mosquitto # the MQTT broker the collector tests run against (/usr/sbin/mosquitto)
    openssl   # makes the CA and certificate of the TLS broker test
    postgresql # the server binaries (initdb, postgres) the crm tests start a cluster with
)

# Installs the packages above that are missing. Runs apt-get directly as root (CI,
# containers) and through sudo otherwise; apt-get update runs once, only when
# something has to be installed.
install_system_packages() {
    local missing=()
    local pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing system packages: ${missing[*]} (no apt-get here: install them yourself)" >&2
        exit 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "missing system packages: ${missing[*]} (not root and no sudo)" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    log "installing ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

if [ "${#APT_PACKAGES[@]}" -gt 0 ]; then
    log "system packages"
    install_system_packages
fi

# Python packages the end-to-end tests run as independent implementations:
# - the second SunSpec implementation the Modbus tests compare against
#   (server/tests/e2e/sunspec_peer.py): pysunspec2 encodes the register image, pymodbus
#   serves it;
# - openapi-spec-validator, which checks the served /api/v1/openapi.json
#   (server/tests/e2e/auth.rs);
# - DuckDB, which buckets the Parquet files gridlake wrote to check gridlake's
#   time_bucket and energy answers (server/tests/e2e/crosscheck.rs).
# - moto, an S3 server (the S3 API implemented in Python, run as a real HTTP server)
#   that the storage tests run every store test against besides the local disk
#   (storage/tests/common/backend.rs).
# Installed only when missing; the tests fail without them when CI=true and are skipped
# (with a message) otherwise. The check imports what the tests use: an older pymodbus
# without the SimData/SimDevice datastore counts as missing, and --upgrade replaces it.
# Pinned to the minor versions the tests were written against.
PIP_PACKAGES=("pymodbus==3.16.*" "pysunspec2==1.3.*" "openapi-spec-validator==0.9.*" "duckdb==1.5.*" "moto[server]==5.2.*")
PIP_CHECK='from pymodbus.simulator import SimData, SimDevice; import sunspec2.device; from openapi_spec_validator import validate; import duckdb; from moto.server import ThreadedMotoServer'

install_python_packages() {
    if ! command -v python3 >/dev/null 2>&1; then
        echo "python3 is missing: install it (the Modbus tests run a Python SunSpec peer, the OpenAPI test a validator)" >&2
        exit 1
    fi
    if python3 -c "$PIP_CHECK" 2>/dev/null; then
        return 0
    fi
    log "installing ${PIP_PACKAGES[*]}"
    # A system Python that is "externally managed" (PEP 668, Debian 12+) refuses plain
    # installs; the test machine is disposable, so override it there.
    python3 -m pip install --quiet --upgrade "${PIP_PACKAGES[@]}" ||
        python3 -m pip install --quiet --upgrade --break-system-packages "${PIP_PACKAGES[@]}"
}

log "python packages"
install_python_packages
# The packages may have gone to another interpreter than the tests' python3: check.
if ! python3 -c "$PIP_CHECK"; then
    echo "python3 still cannot import the test peers' packages (${PIP_PACKAGES[*]}) after pip install" >&2
    exit 1
fi
# The peer tests (SunSpec, OpenAPI validator, DuckDB, moto S3) fail rather than skip when they cannot run.
export GRIDLAKE_REQUIRE_PEERS=1

log "toolchain"
cargo --version
rustc --version

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Test output is also kept in a file so that the run can end with one plain total.
results="$(mktemp)"
trap 'rm -f "$results"' EXIT

log "cargo test --doc"
cargo test --workspace --doc --locked 2>&1 | tee -a "$results"

log "cargo test"
cargo test --workspace --all-targets --locked 2>&1 | tee -a "$results"

# cargo prints one `test result:` line per test binary, and the last of them may be a
# binary without tests; the line below totals them all.
log "total"
awk '/^test result:/ {
        for (i = 1; i < NF; i++) {
            if ($(i + 1) ~ /^passed/) passed += $i
            if ($(i + 1) ~ /^failed/) failed += $i
            if ($(i + 1) ~ /^ignored/) ignored += $i
        }
    }
    END { printf "%d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$results"
