"""Sluice: a Kubernetes-native gateway for LLM APIs that keeps serving when providers fail.

The package is laid out by what each part may touch (``lint-imports`` checks it):

- ``sluice.core``: the pure breaker core (state machine, policies, outcome classification). No
  I/O, no clock of its own, no aiohttp, kopf, kubernetes or prometheus imports.
- ``sluice.resources``: the ``sluice.dev/v1alpha1`` API as pydantic models, the one source of
  the CRDs. Pure data.
- ``sluice.providers``: each provider's wire format (authentication, addressing). Pure.
- ``sluice.errors``: the root of Sluice's errors and their families.
- ``sluice.kube``: the one module that calls the Kubernetes API (kubernetes_asyncio).
- ``sluice.operator``: the Kopf operator (probes, the cluster breaker in status, Events).
- ``sluice.proxy``: the aiohttp proxy, from the cluster or from manifests on disk; its request
  path is drawn in ``sluice.proxy.handlers``.
- ``sluice.fakes`` and ``sluice.devcluster``: a fake upstream and a real kube-apiserver and etcd
  on loopback, for tests and laptops; the product never imports them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sluice")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
