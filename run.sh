#!/usr/bin/env bash
# headrace: one entry point that sets itself up on a fresh machine (Python and gcc only).
#
#   ./run.sh demo [headrace demo options]   the gateway with three simulated MicroPython nodes
#   ./run.sh test [pytest options]          the whole test suite (compiled core, then the pure references),
#                                           then every fuzz target for 20 s (HEADRACE_FUZZ_SECONDS)
#   ./run.sh setup                          only the set-up: system packages, .venv, build
#
# Set-up is idempotent and skipped when nothing changed: the Debian packages the
# tests need when missing (mosquitto, socat, libcoap3-bin, postgresql, systemd for
# systemd-analyze, chromium for the status page's browser test; nodejs and npm
# for the Sparkplug host application, unless node and npm are already there), a
# virtual environment in .venv (HEADRACE_VENV to move it),
# and `pip install -e .[test]` with the Cython core required to build; the
# Sparkplug host's npm packages (`npm ci` of hil_tests/sparkplug_host/package-lock.json)
# in .cache/sparkplug_host (HEADRACE_CACHE to move .cache).
set -euo pipefail
cd "$(dirname "$0")"

VENV=${HEADRACE_VENV:-.venv}
PY=${PYTHON:-python3}
# gcc-multilib: the 32-bit frozen firmware (firmware/build); the ARM toolchain and QEMU: the
# Cortex-M3 bench board
TEST_DEBS=(mosquitto socat libcoap3-bin systemd postgresql chromium gcc-multilib gcc-arm-none-eabi
           libnewlib-arm-none-eabi qemu-system-arm)
NODE_DEBS=(nodejs npm)  # a machine with another build of node (one that bundles npm) keeps it
CACHE=${HEADRACE_CACHE:-$PWD/.cache}

say() { printf '\033[1m[headrace]\033[0m %s\n' "$*" >&2; }

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { say "need root to install: ${missing[*]} (apt-get install ${missing[*]})"; exit 1; }
        sudo="sudo"
    fi
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_env() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtual environment $VENV"
        "$PY" -m venv "$VENV" || { apt_install python3-venv; "$PY" -m venv "$VENV"; }
    fi
    local stamp="$VENV/.headrace-installed"
    local want
    want=$(cat pyproject.toml setup.py core_ext/*.pyx core_ext/*.pxd core_ext/*.pxi 2>/dev/null | sha256sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! ls core_ext/_*.so >/dev/null 2>&1; then
        say "installing headrace and its dependencies into $VENV (builds the Cython core)"
        "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
        HEADRACE_BUILD_EXT=1 "$VENV/bin/python" -m pip install -q -e '.[test,fast]'
        echo "$want" > "$stamp"
    fi
}

sparkplug_host() {
    command -v node >/dev/null && command -v npm >/dev/null || apt_install "${NODE_DEBS[@]}"
    local src=hil_tests/sparkplug_host dest="$CACHE/sparkplug_host"
    local want
    want=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
    if [ ! -f "$dest/.installed" ] || [ "$(cat "$dest/.installed")" != "$want" ]; then
        say "installing the Sparkplug host's npm packages into $dest (npm ci)"
        rm -rf "$dest"
        mkdir -p "$dest"
        cp "$src/package.json" "$src/package-lock.json" "$dest/"
        (cd "$dest" && npm ci --no-audit --no-fund --ignore-scripts --cache "$CACHE/npm" >/dev/null)
        echo "$want" > "$dest/.installed"
    fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
    setup)
        apt_install "${TEST_DEBS[@]}"
        python_env
        sparkplug_host
        ;;
    demo)
        python_env
        exec "$VENV/bin/headrace" demo "$@"
        ;;
    test)
        apt_install "${TEST_DEBS[@]}"
        python_env
        sparkplug_host
        export HEADRACE_CACHE="$CACHE"
        export HEADRACE_BUILD_EXT=1 HEADRACE_REQUIRE_EXT=1
        PYTHON="$PY" bash firmware/typecheck.sh  # the firmware against the esp32 and rp2 MicroPython stubs
        say "tests with the compiled core (tests/ and the simulated bench in hil_tests/)"
        "$VENV/bin/python" -m pytest -q "$@"
        say "tests of the pure-Python references (HEADRACE_PURE=1)"
        HEADRACE_PURE=1 HEADRACE_BUILD_EXT=0 HEADRACE_REQUIRE_EXT=0 "$VENV/bin/python" -m pytest -q tests "$@"
        if [ "${HEADRACE_FUZZ_SECONDS:-20}" != 0 ]; then
            say "fuzz targets, ${HEADRACE_FUZZ_SECONDS:-20} s each (fuzz/run.py; HEADRACE_FUZZ_SECONDS=0 skips)"
            "$VENV/bin/python" fuzz/run.py --seconds "${HEADRACE_FUZZ_SECONDS:-20}"
        fi
        ;;
    *)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
