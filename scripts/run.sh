#!/usr/bin/env bash
# Runs Sluice. With no arguments: the standalone proxy with the example manifests and two fake
# upstreams (one flaky), on http://127.0.0.1:8080. Otherwise the arguments go to `sluice`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_venv devcluster
if [ "$#" -eq 0 ]; then
    set -- demo
fi
exec "$VENV/bin/sluice" "$@"
