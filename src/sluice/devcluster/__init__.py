"""A real Kubernetes control plane on loopback, for tests and for trying Sluice without a cluster.

etcd and kube-apiserver are the upstream programs, built from the Go module proxy (``assets``)
or taken from ``KUBEBUILDER_ASSETS``; ``cluster`` starts them envtest-style with certificates
from ``pki``. This package is development tooling: the operator and the proxy never import it.
"""

from sluice.devcluster.assets import (
    AssetsError,
    ControlPlaneBinaries,
    Tools,
    ensure_binaries,
    ensure_tools,
    find_binaries,
    find_tools,
)

__all__ = [
    "AssetsError",
    "ControlPlaneBinaries",
    "Tools",
    "ensure_binaries",
    "ensure_tools",
    "find_binaries",
    "find_tools",
]
