"""Sluice's Kubernetes API (``sluice.dev/v1alpha1``): the resource models and their CRDs.

Pure data: parsing and validation only, no I/O. ``models`` is the single source of the
schemas; ``crds`` generates ``crds/*.yaml`` from it.
"""

from sluice.resources.models import (
    API_VERSION,
    GROUP,
    RESET_ANNOTATION,
    VERSION,
    BreakerPolicy,
    BreakerPolicySpec,
    ModelRoute,
    ModelRouteSpec,
    Ref,
    Upstream,
    UpstreamSpec,
    UpstreamStatus,
    parse,
)
from sluice.resources.validation import describe

__all__ = [
    "API_VERSION",
    "GROUP",
    "RESET_ANNOTATION",
    "VERSION",
    "BreakerPolicy",
    "BreakerPolicySpec",
    "ModelRoute",
    "ModelRouteSpec",
    "Ref",
    "Upstream",
    "UpstreamSpec",
    "UpstreamStatus",
    "describe",
    "parse",
]
