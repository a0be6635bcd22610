#!/usr/bin/env bash
# Type-check the firmware against the MicroPython stubs of each port it runs on.
#
#   bash firmware/typecheck.sh            # esp32 and rp2; exits non-zero on any error
#   bash firmware/typecheck.sh rp2        # one port
#
# Each port gets its own virtual environment (the stub packages install modules of the
# same names, machine, time..., that overwrite each other and would shadow CPython's for
# the gateway): .venv-stubs-<port>/ beside .venv (HEADRACE_STUBS_DIR moves them), with
# mypy in it and the port's stubs under typings/, the layout micropython-stubs documents
# for mypy (custom typeshed and mypy_path both there). Set-up runs once, again when the
# pins below change; checking needs no network. The board module checked is the port's
# (board/__init__.py picks it by sys.platform, which --platform sets); board/unix.py and
# board/fake.py are unix and CPython code, left out. Function bodies are checked
# (check_untyped_defs): the firmware carries no annotations, the stubs do.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DIR=${HEADRACE_STUBS_DIR:-.}
MYPY="mypy==2.4.1"
STUBS_VERSION="1.29.0.post1"  # the MicroPython release of mpy-cross and the unix port here

# Modules exempt from an error code (none: each finding is fixed or marked at its line)
EXEMPT=(
)

say() { printf '\033[1m[typecheck]\033[0m %s\n' "$*" >&2; }

setup() {
    local port=$1 venv=$2 want="$MYPY micropython-$port-stubs==$STUBS_VERSION"
    if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$want" ]; then
        return 0
    fi
    say "setting up $venv ($want)"
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$MYPY"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-user --target "$venv/typings" \
        "micropython-$port-stubs==$STUBS_VERSION"
    echo "$want" > "$venv/.installed"
}

config() {
    local port=$1 venv=$2
    cat <<EOF
[mypy]
python_version = 3.11
platform = $port
custom_typeshed_dir = $venv/typings
mypy_path = firmware:$venv/typings
no_site_packages = True
explicit_package_bases = True
check_untyped_defs = True
cache_dir = $venv/.mypy_cache
EOF
    # the stubs are read, not judged: their own findings are not the firmware's
    local stubs
    stubs=$(cd "$venv/typings" && { for f in *.pyi; do echo "${f%.pyi}"; done
                                    for d in */; do [ -d "$d" ] && echo "${d%/}.*"; done; } | paste -sd, -)
    printf '\n[mypy-%s]\nignore_errors = True\n' "$stubs"
    local e
    for e in "${EXEMPT[@]}"; do
        printf '\n[mypy-%s]\ndisable_error_code = %s\n' "${e%%:*}" "${e#*:}"
    done
}

check() {
    local port=$1 venv="$DIR/.venv-stubs-$1"
    setup "$port" "$venv"
    config "$port" "$venv" > "$venv/mypy.ini"
    local files=() f
    for f in firmware/*.py firmware/sensors/*.py firmware/board/__init__.py firmware/board/_mcu.py \
             "firmware/board/$port.py"; do
        [ "$f" = firmware/manifest.py ] || files+=("$f")  # read by the build tools, not run
    done
    say "$port: mypy over ${#files[@]} modules against micropython-$port-stubs $STUBS_VERSION"
    "$venv/bin/python" -m mypy --config-file "$venv/mypy.ini" "${files[@]}"
}

ports=("$@")
[ ${#ports[@]} -eq 0 ] && ports=(esp32 rp2)
status=0
for port in "${ports[@]}"; do
    case "$port" in esp32|rp2) ;; *) say "unknown port $port (esp32, rp2)"; exit 2 ;; esac
    check "$port" || status=1
done
exit $status
