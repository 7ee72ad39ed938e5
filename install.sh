#!/usr/bin/env bash
# pitrader installer.
#   ./install.sh --dev   local development: .venv in this checkout, editable install + test extra
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MIN_PY_MINOR=11

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

find_python() {
    local cand
    for cand in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$cand" ] || continue
        command -v "$cand" >/dev/null 2>&1 || continue
        if "$cand" -c "import sys; sys.exit(0 if sys.version_info >= (3, $MIN_PY_MINOR) else 1)" 2>/dev/null; then
            echo "$cand"; return 0
        fi
    done
    return 1
}

install_dev() {
    local py venv="$HERE/.venv" stamp
    py="$(find_python)" || die "Python 3.$MIN_PY_MINOR or newer is required (found: $(python3 --version 2>&1 || echo none)). Install it, or point PYTHON= at one."
    "$py" -c "import venv, ensurepip" 2>/dev/null || die "the Python 'venv' module is missing; on Debian/Pi OS: sudo apt-get install python3-venv"
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv with $("$py" --version)"
        "$py" -m venv "$venv" || die "could not create the virtual environment at $venv"
    fi
    # Reinstall only when the dependency list changed: a second run is fast and changes nothing.
    stamp="$venv/.pitrader-installed"
    local want; want="$(sha256sum "$HERE/pyproject.toml" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import core, numba, ccxt, talib" 2>/dev/null; then
        say "up to date ($venv)"
        return 0
    fi
    say "installing pitrader (editable) with the test extra"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null || die "pip upgrade failed"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$HERE[test]" || die "pip install failed (see above)"
    echo "$want" > "$stamp"
    say "done: $venv/bin/pitrader"
}

case "${1:-}" in
    --dev) install_dev ;;
    -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown option '${1:-}' (use --dev; the Raspberry Pi install mode is not implemented yet)" ;;
esac
