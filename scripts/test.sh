#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: installs what it needs, then runs
# the linters, the type checker and every test tier. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
started=$SECONDS

ensure_venv test

step "control plane: etcd and kube-apiserver (built once from the Go module proxy), helm, kubectl"
"$VENV/bin/sluice" controlplane build

step "prometheus and promtool (Debian's package) for the observability tests"
ensure_debian "the observability tests (tests/integration) run Prometheus and promtool on the dashboards and alerts" prometheus prometheus=/usr/bin/promtool
prometheus --version 2>&1 | head -1

step "chromium (Debian's package) for the console's browser tests"
ensure_debian "the browser tier (tests/browser) drives it with Playwright" chromium
chromium --version 2>&1 | head -1

step "buildah, mmdebstrap and runc (Debian's packages) for the image tier"
ensure_debian "the image tier (tests/image) builds Sluice's image with buildah on a Debian base from mmdebstrap and runs it with runc" buildah mmdebstrap runc
buildah --version
mmdebstrap --version
runc --version | head -1

step "Sluice's image (built once per content hash into ~/.cache/sluice/image; minutes when cold)"
"$VENV/bin/sluice" controlplane image

step "the dev cluster's node (tests/e2e): Debian's containerd, runc, CNI plugins and iptables; kubelet, kube-proxy, kube-scheduler, kube-controller-manager and CoreDNS built once"
ensure_debian "the e2e tier (tests/e2e) runs a one-node cluster on them" containerd runc iptables containernetworking-plugins=/usr/lib/cni/bridge
containerd --version
"$VENV/bin/sluice" controlplane build --node --no-tools

step "ruff"
"$VENV/bin/ruff" check src tests bench
"$VENV/bin/ruff" format --check src tests bench
step "mypy --strict"
"$VENV/bin/mypy"
step "import contracts (the pure core imports no I/O libraries)"
"$VENV/bin/lint-imports"

step "pytest"
set +e
"$VENV/bin/pytest" -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    die "pytest collected no tests; that is a failure, not a pass"
fi
echo "scripts/test.sh: pytest exit $status after $((SECONDS - started))s" >&2
exit "$status"
