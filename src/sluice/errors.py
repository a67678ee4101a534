"""The root of Sluice's own errors, and its families. Callers catch a family by name, never a
``ValueError`` or a status code.

::

    SluiceError
    ├── ConfigurationError       something a user configured cannot be used; the message names
    │   │                        the object and the field (a ValueError too, so that pydantic
    │   │                        validators may raise it)
    │   ├── PolicyError          sluice.core: a breaker policy
    │   ├── ManifestError        sluice.proxy.manifests: a manifest on disk
    │   ├── AccessError          sluice.proxy.access: client keys
    │   └── AdminActionError     sluice.proxy.admin: an unknown admin action
    ├── KubeError                sluice.kube: the API server refused or failed
    │   ├── NotFound             404: no such object
    │   ├── Conflict             409: it exists, or someone else wrote it first
    │   ├── Gone                 410: the resourceVersion a watch started from expired
    │   └── SecretNotText        a Secret's value is not UTF-8 text
    └── UpstreamError            sluice.proxy.client: an attempt at an upstream failed; its
                                 ``kind`` is the breaker's ErrorKind

This module imports nothing: every layer, the pure core included, may use it.
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "SluiceError"]


class SluiceError(Exception):
    """The root of every error Sluice raises on purpose."""


class ConfigurationError(SluiceError, ValueError):
    """Something a user configured cannot be used; the message says what and where."""
