# Sourced by scripts/test and scripts/demo: make a fresh Debian machine ready, idempotently.
#   - Python 3.11+ with venv (apt: python3-venv) and Mosquitto (apt: mosquitto) when missing,
#     installed with apt-get when we are root or have password-less sudo;
#   - the virtual environment .venv with kassad installed editable (+ dev tools if asked),
#     reinstalled only when pyproject.toml changed.
set -euo pipefail

KASSAD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$KASSAD_ROOT/.venv"

_apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo="sudo -n"
        else
            echo "kassad setup: please install: $* (apt-get install $*), then run this again" >&2
            exit 1
        fi
    fi
    if ! command -v apt-get >/dev/null; then
        echo "kassad setup: no apt-get here; install $* with your package manager" >&2
        exit 1
    fi
    echo "kassad setup: installing $* with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

_python() {
    local py
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$py"
            return
        fi
    done
    _apt_install python3 python3-venv
    echo python3
}

ensure_mosquitto() {
    if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
        _apt_install mosquitto
    fi
}

# The udev rules' tests run udevadm test against fake sysfs devices (Debian: package udev).
ensure_udev() {
    if ! command -v udevadm >/dev/null && [ ! -x /usr/bin/udevadm ] && [ ! -x /bin/udevadm ]; then
        _apt_install udev
    fi
}

# The clock fault test steps a register's wall clock with libfaketime (Debian: package
# libfaketime), preloaded into that one process.
ensure_faketime() {
    if ! compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null \
            && [ ! -e /usr/lib/faketime/libfaketime.so.1 ]; then
        _apt_install libfaketime
    fi
}

# The aggregator's tests run against a real PostgreSQL at 127.0.0.1:5432 as user postgres
# without a password (KASSAD_TEST_POSTGRES overrides the address). On a machine without one,
# install Debian's package, start its cluster and let local TCP connections in as trust.
ensure_postgres() {
    if [ -n "${KASSAD_TEST_POSTGRES:-}" ]; then
        return
    fi
    if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
        return
    fi
    if ! command -v pg_ctlcluster >/dev/null; then
        _apt_install postgresql
    fi
    local sudo="" version conf
    [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    conf="/etc/postgresql/$version/main/pg_hba.conf"
    if ! $sudo grep -q "kassad tests" "$conf"; then
        echo "kassad setup: letting 127.0.0.1 connect to PostgreSQL as trust (tests)" >&2
        $sudo sed -i "1i host all postgres 127.0.0.1/32 trust # kassad tests" "$conf"
    fi
    $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
        || $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    local i
    for i in $(seq 1 50); do
        pg_isready -q -h 127.0.0.1 -p 5432 && return
        sleep 0.2
    done
    echo "kassad setup: PostgreSQL did not come up on 127.0.0.1:5432" >&2
    exit 1
}

# The store page's browser test drives Debian's chromium through its chromedriver.
ensure_chromium() {
    if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
        _apt_install chromium chromium-driver
    fi
}

ensure_venv() {  # $1: "dev" to install the test tools too
    local py extras="" stamp
    [ "${1:-}" = "dev" ] && extras="[dev]"
    if [ ! -x "$VENV/bin/python" ]; then
        py=$(_python)
        if ! "$py" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            _apt_install python3-venv
            "$py" -m venv "$VENV"
        fi
    fi
    stamp="$VENV/.kassad-installed$extras"
    if [ ! -f "$stamp" ] || [ "$KASSAD_ROOT/pyproject.toml" -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
        "$VENV/bin/python" -m pip install -q -e "$KASSAD_ROOT$extras"
        touch "$stamp"
    fi
}

# mypy resolves kassad.* through this link farm (the import names map onto top-level folders).
ensure_typecheck_links() {
    mkdir -p "$KASSAD_ROOT/build/typecheck/kassad"
    local d
    for d in daemon drivers simulators; do
        ln -sfn "../../../$d" "$KASSAD_ROOT/build/typecheck/kassad/$d"
    done
}
