# Shared by scripts/run.sh and scripts/test.sh: a project venv with Sluice installed.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SLUICE_VENV:-$ROOT/.venv}

die() { echo "error: $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*" >&2; }

# ensure_venv EXTRAS: create .venv with Python >= 3.11 and install sluice[EXTRAS] into it,
# again whenever pyproject.toml changes.
ensure_venv() {
    local extras=$1 python=${PYTHON:-python3}
    command -v "$python" >/dev/null || die "python3 not found; Sluice needs Python 3.11 or newer"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$("$python" --version) is too old; Sluice needs Python 3.11 or newer (set PYTHON=...)"
    if [ ! -x "$VENV/bin/python" ]; then
        step "creating $VENV"
        "$python" -m venv "$VENV" || die "could not create a venv (on Debian: apt-get install python3-venv)"
    fi
    local stamp="$VENV/.sluice-installed" want
    want="$extras $(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        step "installing sluice[$extras] into $VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$extras]"
        echo "$want" > "$stamp"
    fi
}

# ensure_debian PURPOSE PACKAGE...: install Debian's packages that are missing (when root
# with apt-get), else stop naming them and what needs them. A package is missing when the
# command of the same name is not found (give NAME=PATH to test a file instead, e.g.
# containernetworking-plugins=/usr/lib/cni/bridge).
ensure_debian() {
    local purpose=$1 item package check missing=()
    shift
    for item in "$@"; do
        package=${item%%=*}
        check=${item#*=}
        if [ "$check" = "$item" ]; then
            command -v "$package" >/dev/null || missing+=("$package")
        else
            [ -e "$check" ] || missing+=("$package")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        die "${missing[*]} missing and cannot be installed here: apt-get install ${missing[*]} (as root); $purpose"
    fi
}
