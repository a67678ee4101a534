"""Sluice: a Kubernetes-native gateway for LLM APIs that keeps serving when providers fail.

The package is laid out by what each part may touch:

- ``sluice.core`` — the pure breaker core: state machine, policies, outcome classification.
  No I/O, no clock of its own, no aiohttp/kopf/kubernetes/prometheus imports.
- ``sluice.devcluster`` — a real kube-apiserver and etcd on loopback, for tests and for
  trying ``kubectl`` flows on a laptop (``sluice controlplane up``).

The operator (``sluice.operator``) and the proxy (``sluice.proxy``) are thin glue around the
core; they arrive with their own issues.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sluice")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
