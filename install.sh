#!/usr/bin/env bash
# pitrader installer.
#   sudo ./install.sh               install the service (64-bit Raspberry Pi OS / Debian 12+)
#   sudo ./install.sh --uninstall   remove program and unit; keeps config, secrets and state
#   sudo ./install.sh --uninstall --purge   ... and removes config, secrets, state, logs, user
#   ./install.sh --dev              local development: .venv in this checkout, editable + test and research extras
# Options (install): --no-start     do not enable and start the service
#                    --no-systemctl never call systemctl (images, containers, staging)
#                    --no-warmup    skip compiling the numba cache
#                    --deps-from VENV  reuse the dependencies installed in VENV (linked, not
#                                   downloaded); pitrader itself is still built and installed.
#                                   For offline staging and the test-suite, not for a Pi.
# Environment: DESTDIR=/tmp/root  stage everything below that root (no apt, no user, no chown)
#              PYTHON=python3.12  the interpreter to use      PITRADER_PIP_ARGS  extra pip arguments
set -euo pipefail
umask 022  # sudo may pass a 0077 umask: the service user must be able to read the venv

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MIN_PY_MINOR=11
SERVICE=pitrader
SVC_USER=pitrader

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

find_python() {
    local cand
    if [ -n "${PYTHON:-}" ]; then  # asked for one interpreter: that one or nothing
        command -v "$PYTHON" >/dev/null 2>&1 || return 1
        "$PYTHON" -c "import sys; sys.exit(0 if sys.version_info >= (3, $MIN_PY_MINOR) else 1)" 2>/dev/null || return 1
        echo "$PYTHON"; return 0
    fi
    for cand in python3 python3.13 python3.12 python3.11; do
        command -v "$cand" >/dev/null 2>&1 || continue
        if "$cand" -c "import sys; sys.exit(0 if sys.version_info >= (3, $MIN_PY_MINOR) else 1)" 2>/dev/null; then
            echo "$cand"; return 0
        fi
    done
    return 1
}

need_python() {
    local py found
    if ! py="$(find_python)"; then
        found="$("${PYTHON:-python3}" --version 2>&1 || echo none)"
        die "Python 3.$MIN_PY_MINOR or newer is required (found: $found). Raspberry Pi OS / Debian 12 (bookworm) ships 3.11; on older releases flash a current 64-bit image, or point PYTHON= at a newer interpreter."
    fi
    "$py" -c "import venv, ensurepip" 2>/dev/null \
        || die "the Python 'venv' module is missing; on Debian/Pi OS: sudo apt-get install python3-venv"
    echo "$py"
}

is_debian_like() {
    [ -r /etc/os-release ] && grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu|raspbian)' /etc/os-release \
        && command -v apt-get >/dev/null 2>&1
}

# Installs the Debian packages that are missing; prints what it does.
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]} (apt-get update && apt-get install -y)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
}

# --- development -------------------------------------------------------------------------------

dev_tools() {
    # The unit-file test needs systemd-analyze; CI machines (containers) often lack systemd.
    command -v systemd-analyze >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ] && is_debian_like; then
        say "systemd-analyze not found: installing the 'systemd' package for the unit-file tests"
        (apt_install systemd) || say "warning: could not install systemd: the unit-file tests will be skipped"
    else
        say "note: systemd-analyze not found and not root on Debian: the unit-file tests will be skipped" \
            "(install the 'systemd' package to run them)"
    fi
}

install_dev() {
    local py venv="$HERE/.venv" stamp
    dev_tools
    py="$(need_python)"
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv with $("$py" --version)"
        "$py" -m venv "$venv" || die "could not create the virtual environment at $venv"
    fi
    # Reinstall only when the dependency list changed: a second run is fast and changes nothing.
    stamp="$venv/.pitrader-installed"
    local want; want="$(sha256sum "$HERE/pyproject.toml" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import core, numba, ccxt, talib" 2>/dev/null; then
        say "up to date ($venv)"
        dev_warmup "$venv"
        return 0
    fi
    say "installing pitrader (editable) with the test and research extras"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null || die "pip upgrade failed"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$HERE[test,research]" || die "pip install failed (see above)"
    echo "$want" > "$stamp"
    dev_warmup "$venv"
    say "done: $venv/bin/pitrader"
}

dev_warmup() {
    # The first `pitrader demo` otherwise sits ~15 s on "waiting for the first scan" compiling.
    # Already-cached kernels load in a second, so a second run stays fast.
    if [ "$NO_WARMUP" = 1 ]; then
        say "skipping numba warm-up (--no-warmup): the first demo/scan compiles (~15 s)"
        return 0
    fi
    say "compiling the numba kernels (pitrader warmup --defaults)"
    (cd "$HERE" && "$1/bin/pitrader" --env-file /dev/null warmup --defaults >/dev/null) \
        || say "warning: numba warm-up failed; the first run compiles instead"
}

# --- Raspberry Pi / Debian service install -----------------------------------------------------

# Paths (below $DESTDIR when staging). %C, %S, %L of the unit resolve to these for a system service.
set_paths() {
    ROOT=""
    if [ -n "${DESTDIR:-}" ]; then
        ROOT="$(mkdir -p "$DESTDIR" && cd "$DESTDIR" && pwd)" || die "DESTDIR=$DESTDIR: cannot create it"
        [ "$ROOT" != / ] || ROOT=""
    fi
    OPT="$ROOT/opt/pitrader"
    VENV="$OPT/venv"
    ETC="$ROOT/etc/pitrader"
    UNIT_DIR="$ROOT/etc/systemd/system"
    STATE="$ROOT/var/lib/pitrader"
    CACHE="$ROOT/var/cache/pitrader"
    LOGS="$ROOT/var/log/pitrader"
    if [ -n "$ROOT" ]; then
        STAGING=1
    else
        STAGING=0
        [ "$(id -u)" -eq 0 ] || die "run as root (sudo ./install.sh), or stage with DESTDIR=/some/dir"
    fi
}

check_arch() {
    # PITRADER_UNAME_M exists for the test-suite only (to simulate a 32-bit Pi).
    local m="${PITRADER_UNAME_M:-$(uname -m)}"
    case "$m" in
        armv6l|armv7l|armv8l|armhf|arm|i386|i486|i586|i686)
            die "32-bit system ($m): numba/llvmlite have no 32-bit wheels; flash 64-bit Raspberry Pi OS (or another 64-bit Debian 12+)" ;;
    esac
    if [ -z "${PITRADER_UNAME_M:-}" ] && command -v dpkg >/dev/null 2>&1; then
        # A 64-bit kernel can run a 32-bit userland (older Pi OS images): the packages decide.
        case "$(dpkg --print-architecture)" in
            armhf|armel|i386) die "32-bit userland ($(dpkg --print-architecture)) on a 64-bit kernel: numba/llvmlite have no 32-bit wheels; flash 64-bit Raspberry Pi OS" ;;
        esac
    fi
}

check_python_bits() {
    local bits
    bits="$("$PY" -c 'import struct; print(struct.calcsize("P") * 8)')"
    [ "$bits" = 64 ] || die "$PY is a ${bits}-bit Python: numba/llvmlite need a 64-bit one; flash 64-bit Raspberry Pi OS"
}

ensure_user() {
    if [ "$STAGING" = 1 ]; then
        return 0
    fi
    if getent passwd "$SVC_USER" >/dev/null; then
        return 0
    fi
    say "creating system user $SVC_USER (no login, home /var/lib/pitrader)"
    useradd --system --user-group --home-dir /var/lib/pitrader --no-create-home \
        --shell /usr/sbin/nologin --comment "pitrader trading service" "$SVC_USER" \
        || die "could not create the system user $SVC_USER"
}

# Owner for files the service itself writes (the numba cache); nothing when staging.
chown_svc() { [ "$STAGING" = 1 ] || chown -R "$SVC_USER:$SVC_USER" "$@"; }

source_hash() {
    (cd "$HERE" && { sha256sum pyproject.toml; find core strategies -name '*.py' -type f -print0 | sort -z \
        | xargs -0 sha256sum; echo "deps-from=${DEPS_FROM:-}"; } | sha256sum | cut -d' ' -f1)
}

install_venv() {
    local stamp="$VENV/.pitrader-installed" want src site pth
    want="$(source_hash)"
    if [ -x "$VENV/bin/python" ] && ! (cd / && "$VENV/bin/python" -c "import sys") 2>/dev/null; then
        say "the venv's Python no longer runs (system Python upgraded?): recreating $VENV"
        rm -rf "$VENV"
    fi
    # (from / so the checkout's own core/ cannot stand in for the installed one)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && (cd / && "$VENV/bin/python" -c "import core.cli") 2>/dev/null; then
        say "program up to date ($VENV)"
        return 0
    fi
    CHANGED=1
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV with $("$PY" --version)"
        mkdir -p "$OPT"
        # With --deps-from, pip comes from the linked environment too.
        "$PY" -m venv ${DEPS_FROM:+--without-pip} "$VENV" || die "could not create the virtual environment at $VENV"
    fi
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    pth="$site/_pitrader_deps_from.pth"
    # Build from a clean copy so a root install leaves no root-owned build files in the checkout.
    src="$(mktemp -d)"
    BUILD_TMP="$src"
    trap 'rm -rf "${BUILD_TMP:-}"' EXIT
    tar -C "$HERE" --exclude=__pycache__ -cf - pyproject.toml README.md core strategies $(cd "$HERE" && ls LICENSE* 2>/dev/null) \
        | tar -C "$src" -xf - || die "could not copy the sources"
    # PITRADER_PIP_ARGS is unquoted on purpose: a list of words (e.g. --index-url URL).
    if [ -n "${DEPS_FROM:-}" ]; then
        local deps_site
        deps_site="$("$DEPS_FROM/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
            || die "--deps-from $DEPS_FROM: not a virtual environment"
        say "linking dependencies from $deps_site (--deps-from: not for production)"
        echo "$deps_site" > "$pth"
        say "installing pitrader into $VENV (no dependency downloads)"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
            ${PITRADER_PIP_ARGS:-} "$src" || die "pip install failed (see above)"
    else
        rm -f "$pth"
        "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --upgrade >/dev/null \
            || die "could not install pip into $VENV"
        say "installing pitrader and its dependencies into $VENV (numba, numpy, ccxt: a few minutes on a Pi)"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null \
            || die "pip upgrade failed (no network?)"
        # (pip always reinstalls a local directory, so new code with the same version number lands too)
        "$VENV/bin/python" -m pip install --disable-pip-version-check ${PITRADER_PIP_ARGS:-} "$src" \
            || die "pip install failed (see above)"
    fi
    (cd / && "$VENV/bin/python" -c "import core.cli") || die "the installed program does not import (see above)"
    echo "$want" > "$stamp"
    # Read-only at runtime: root owns it (ProtectSystem=strict also mounts /opt read-only).
    [ "$STAGING" = 1 ] || chown -R root:root "$OPT"
    chmod -R u+rwX,go+rX,go-w "$OPT"
}

install_config() {
    mkdir -p "$ETC"
    chmod 0755 "$ETC"
    if [ -e "$ETC/config.json" ]; then
        say "keeping existing $ETC/config.json"
    else
        say "installing default config to $ETC/config.json (mode \"paper\": no real orders)"
        install -m 0644 "$HERE/config.json" "$ETC/config.json"
    fi
    if [ -e "$ETC/pitrader.env" ]; then
        say "keeping existing secrets file $ETC/pitrader.env"
    else
        say "creating secrets file $ETC/pitrader.env from .env.example (mode 0600, root only)"
        install -m 0600 "$HERE/.env.example" "$ETC/pitrader.env"
    fi
    # Secrets are read by systemd as root and handed over as a credential: nobody else needs them.
    if [ "$(stat -c %a "$ETC/pitrader.env")" != 600 ]; then
        say "tightening $ETC/pitrader.env to mode 0600"
        chmod 0600 "$ETC/pitrader.env"
    fi
    [ "$STAGING" = 1 ] || chown root:root "$ETC/pitrader.env"
}

check_config() {
    local out
    if out="$("$VENV/bin/pitrader" --config "$ETC/config.json" --env-file "$ETC/pitrader.env" config check 2>&1 >/dev/null)"; then
        CONFIG_OK=1
    else
        CONFIG_OK=0
        echo "$out" >&2
        say "WARNING: $ETC/config.json or pitrader.env is invalid (above); the service would exit with code 78"
    fi
}

install_unit() {
    mkdir -p "$UNIT_DIR"
    if cmp -s "$HERE/deploy/systemd/pitrader.service" "$UNIT_DIR/$SERVICE.service"; then
        say "unit up to date ($UNIT_DIR/$SERVICE.service)"
    else
        say "installing unit $UNIT_DIR/$SERVICE.service"
        install -m 0644 "$HERE/deploy/systemd/pitrader.service" "$UNIT_DIR/$SERVICE.service"
        CHANGED=1
    fi
}

install_wrapper() {
    # `sudo pitrader status` / `tax report` on the Pi: the service's config, state and cache, run
    # as the service user so databases keep their owner (a root-owned file would lock the service out).
    local bin="$ROOT/usr/local/bin/pitrader" tmp
    mkdir -p "$(dirname "$bin")"
    tmp="$(mktemp)"
    cat > "$tmp" <<WRAP
#!/bin/sh
# Installed by pitrader's install.sh: the CLI with the service's settings. Run it with sudo.
set -e
cfg="\${PITRADER_CONFIG:-/etc/pitrader/config.json}"
state="\${STATE_DIRECTORY:-/var/lib/pitrader}"
cache="\${NUMBA_CACHE_DIR:-/var/cache/pitrader/numba}"
if [ "\$(id -u)" = 0 ]; then
    exec runuser -u $SVC_USER -- env PITRADER_CONFIG="\$cfg" STATE_DIRECTORY="\$state" NUMBA_CACHE_DIR="\$cache" \\
        /opt/pitrader/venv/bin/pitrader "\$@"
fi
exec env PITRADER_CONFIG="\$cfg" STATE_DIRECTORY="\$state" NUMBA_CACHE_DIR="\$cache" /opt/pitrader/venv/bin/pitrader "\$@"
WRAP
    if cmp -s "$tmp" "$bin"; then
        rm -f "$tmp"
    else
        say "installing $bin (use: sudo pitrader status)"
        install -m 0755 "$tmp" "$bin"
        rm -f "$tmp"
    fi
}

warmup() {
    local cache="$CACHE/numba"
    mkdir -p "$cache"
    chown_svc "$CACHE"
    say "compiling the numba kernels into $cache (pitrader warmup)"
    # No secrets needed (the env file is root-only); run from / so the service user can cd there.
    local cmd=(env "NUMBA_CACHE_DIR=$cache" "$VENV/bin/pitrader" --config "$ETC/config.json"
               --env-file /dev/null warmup)
    if [ "$STAGING" = 0 ]; then
        cmd=(runuser -u "$SVC_USER" -- "${cmd[@]}")
    fi
    (cd / && "${cmd[@]}") || die "numba warm-up failed (command: ${cmd[*]}); the service would compile at every start"
}

run_systemctl() {
    if [ "$NO_SYSTEMCTL" = 1 ]; then
        say "skipping: systemctl $* (--no-systemctl)"
        return 0
    fi
    say "systemctl $*"
    systemctl "$@"
}

install_system() {
    set_paths
    check_arch
    if [ "$STAGING" = 1 ]; then
        say "staging into $ROOT: no apt packages, no system user, no chown"
    elif is_debian_like; then
        apt_install python3 python3-venv ca-certificates  # wheels exist for everything else
    fi
    PY="$(need_python)"
    check_python_bits
    CHANGED=0
    ensure_user
    install_venv
    install_config
    install_unit
    install_wrapper
    if [ "$NO_WARMUP" = 1 ]; then
        say "skipping numba warm-up (--no-warmup): the first start compiles (slow on a Pi)"
    else
        warmup
    fi
    check_config
    run_systemctl daemon-reload
    if [ "$NO_START" = 1 ]; then
        say "not enabling/starting the service (--no-start); later: systemctl enable --now $SERVICE"
    elif [ "$CONFIG_OK" = 0 ]; then
        say "not starting: fix the configuration, then: systemctl enable --now $SERVICE"
    elif [ "$CHANGED" = 1 ] && [ "$NO_SYSTEMCTL" = 0 ] && systemctl is-active --quiet "$SERVICE"; then
        run_systemctl enable "$SERVICE"
        run_systemctl restart --no-block "$SERVICE"
    else
        # --no-block: READY comes after the first full scan, which can take a minute.
        run_systemctl enable --now --no-block "$SERVICE"
    fi
    say "done. Next:"
    say "  1. API keys (only for mode \"live\"): sudo nano /etc/pitrader/pitrader.env, then sudo systemctl restart $SERVICE"
    say "  2. status: systemctl status $SERVICE     logs: journalctl -u $SERVICE -f"
    say "  3. settings: sudo nano /etc/pitrader/config.json, then sudo systemctl reload $SERVICE"
}

uninstall_system() {
    set_paths
    local unit="$UNIT_DIR/$SERVICE.service"
    if [ "$NO_SYSTEMCTL" = 0 ] && systemctl cat "$SERVICE" >/dev/null 2>&1; then
        run_systemctl disable --now "$SERVICE" || true
    fi
    if [ -e "$unit" ]; then
        say "removing $unit"
        rm -f "$unit"
        run_systemctl daemon-reload
    fi
    if [ -e "$ROOT/usr/local/bin/pitrader" ]; then
        rm -f "$ROOT/usr/local/bin/pitrader"
    fi
    if [ -e "$OPT" ]; then
        say "removing the program $OPT"
        rm -rf "$OPT"
    fi
    if [ -e "$CACHE" ]; then
        say "removing the cache $CACHE"
        rm -rf "$CACHE"
    fi
    if [ "$PURGE" = 1 ]; then
        local d
        for d in "$ETC" "$STATE" "$LOGS"; do
            if [ -e "$d" ]; then
                say "purging $d"
                rm -rf "$d"
            fi
        done
        if [ "$STAGING" = 0 ] && getent passwd "$SVC_USER" >/dev/null; then
            say "removing system user $SVC_USER"
            userdel "$SVC_USER" || say "warning: could not remove user $SVC_USER"
        fi
        say "purged: config, secrets, trade database and tax ledger are gone"
    else
        say "kept: $ETC (config, secrets), $STATE (trades, tax ledger), $LOGS; remove them with --uninstall --purge"
    fi
}

# --- arguments ---------------------------------------------------------------------------------

ACTION=install NO_START=0 NO_SYSTEMCTL=0 NO_WARMUP=0 PURGE=0 DEPS_FROM=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dev) ACTION=dev ;;
        --uninstall) ACTION=uninstall ;;
        --purge) PURGE=1 ;;
        --no-start) NO_START=1 ;;
        --no-systemctl) NO_SYSTEMCTL=1 ;;
        --no-warmup) NO_WARMUP=1 ;;
        --deps-from)
            [ $# -ge 2 ] || die "--deps-from needs a virtual environment directory"
            DEPS_FROM="$(cd "$2" 2>/dev/null && pwd)" || die "--deps-from $2: no such directory"
            [ -x "$DEPS_FROM/bin/python" ] || die "--deps-from $2: not a virtual environment (no bin/python)"
            shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
[ "$PURGE" = 0 ] || [ "$ACTION" = uninstall ] || die "--purge only goes with --uninstall"

case "$ACTION" in
    dev) install_dev ;;
    install) install_system ;;
    uninstall) uninstall_system ;;
esac
