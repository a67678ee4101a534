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
