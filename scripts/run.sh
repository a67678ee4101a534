#!/usr/bin/env bash
# Runs Sluice. Arguments go to the `sluice` command; with none it shows what Sluice can do.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_venv devcluster
if [ "$#" -eq 0 ]; then
    set -- --help
fi
exec "$VENV/bin/sluice" "$@"
