"""The few Kubernetes API calls Sluice makes, typed, on kubernetes_asyncio.

kubernetes_asyncio is the client because it is asyncio-native like everything else here, it
understands every kubeconfig (exec plugins, OIDC, token files) and in-cluster ServiceAccounts,
and kopf logs in through it (``kopf.login_via_async_client``), so the operator has one source of
credentials. It is untyped; this module is the only place that calls it, and it hands out plain
dicts. Errors become :class:`KubeError` with the API server's status and message; the statuses
callers act on have their own types, so callers catch a type, never compare a status code::

    KubeError          the API server refused or failed (``status``: its HTTP status, 0 if none)
    ├── NotFound       404: no such object (or no such key in a Secret)
    ├── Conflict       409: it already exists, or someone else wrote it first
    ├── Gone           410: the resourceVersion a watch started from has expired: list again
    └── SecretNotText  a Secret's key holds bytes that are not UTF-8 text

:class:`Informer` keeps every object of one kind current (list, then watch), for a component
that needs all of them at every moment rather than an event at a time (the proxy's routing
table); the operator's watches are kopf's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from sluice.errors import SluiceError
from sluice.resources import Ref
from sluice.resources.times import parse_rfc3339, rfc3339  # re-exported for callers

__all__ = [
    "Backoff",
    "Conflict",
    "Connection",
    "Gone",
    "Informer",
    "Kube",
    "KubeError",
    "NotFound",
    "ObjectSource",
    "SecretNotText",
    "TokenReview",
    "parse_rfc3339",
    "rfc3339",
]

log = logging.getLogger("sluice.kube")

MERGE_PATCH = "application/merge-patch+json"


class KubeError(SluiceError):
    """The API server refused a request (``status`` is its HTTP status, 0 if none)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


class NotFound(KubeError):
    """404: no such object."""

    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class Conflict(KubeError):
    """409: the object already exists, or its resourceVersion is not the one written over."""

    def __init__(self, message: str) -> None:
        super().__init__(409, message)


class Gone(KubeError):
    """410: the resourceVersion a watch started from is too old: list again."""

    def __init__(self, message: str) -> None:
        super().__init__(410, message)


_BY_STATUS: dict[int, type[NotFound | Conflict | Gone]] = {404: NotFound, 409: Conflict, 410: Gone}


class SecretNotText(KubeError):
    """A Secret's key holds bytes that are not UTF-8 text, so it cannot be used as a string
    (an API key, a token). Status 0: the API server answered; the value is the problem."""

    def __init__(self, namespace: str, name: str, key: str) -> None:
        super().__init__(0, f'secret {namespace}/{name} key "{key}" is not UTF-8 text')
        self.namespace = namespace
        self.name = name
        self.key = key


def _error(status: int, message: str) -> KubeError:
    """The one place a status becomes a type."""
    kind = _BY_STATUS.get(status)
    return KubeError(status, message) if kind is None else kind(message)


def _wrap(e: ApiException) -> KubeError:
    message = str(e.reason)
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        message = json.loads(e.body or b"").get("message", message)
    return _error(int(e.status or 0), message)


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate: what kopf's login needs."""

    server: str
    ca_path: str | None
    certificate_path: str | None
    private_key_path: str | None
    scheme: str | None
    token: str | None
    insecure: bool


@dataclass(frozen=True)
class TokenReview:
    """The API server's answer about a token: whether it is valid, and whose."""

    authenticated: bool
    username: str | None
    audiences: tuple[str, ...] = ()
    error: str | None = None
    pod_name: str | None = None  # a projected token's pod (user.extra), when it names one


class Kube:
    """An API client for one cluster. ``async with await Kube.connect(...) as kube:``"""

    def __init__(self, api: client.ApiClient) -> None:
        # The generated API classes take dict bodies and extra options (_content_type) that
        # their annotations do not admit; this module is the typed boundary, so Any here.
        self._api: Any = api
        self._configuration: Any = api.configuration
        self._custom: Any = client.CustomObjectsApi(api)
        self._core: Any = client.CoreV1Api(api)
        self._coordination: Any = client.CoordinationV1Api(api)
        self._authentication: Any = client.AuthenticationV1Api(api)

    @classmethod
    async def connect(cls, kubeconfig: Path | None = None) -> Self:
        """In-cluster credentials if there are any and no kubeconfig is named, else kubeconfig
        (``kubeconfig``, ``$KUBECONFIG`` or ``~/.kube/config``)."""
        configuration = client.Configuration()
        if kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                await config.load_kube_config(client_configuration=configuration)
        else:
            await config.load_kube_config(
                config_file=str(kubeconfig), client_configuration=configuration
            )
        return cls(client.ApiClient(configuration))

    async def connection(self) -> Connection:
        """The server and credentials this client uses (tokens from exec plugins included)."""
        cfg = self._configuration
        header: Any = cfg.get_api_key_with_prefix("BearerToken")
        if inspect.isawaitable(header):
            header = await header  # kubernetes_asyncio >= 33.3
        parts = str(header).split(" ", 1) if header else []
        scheme, token = (
            (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
        )
        return Connection(
            server=str(cfg.host),
            ca_path=cfg.ssl_ca_cert,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
            scheme=scheme,
            token=token,
            insecure=not cfg.verify_ssl,
        )

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- custom resources --------------------------------------------------------------------

    async def list_objects(
        self, group: str, version: str, plural: str, namespace: str | None
    ) -> list[dict[str, Any]]:
        """Every object of a custom resource kind, in one namespace or all."""
        items, _ = await self.list_with_version(group, version, plural, namespace)
        return items

    def _lister(self, group: str, version: str, plural: str, namespace: str | None) -> Any:
        if namespace is None:
            return functools.partial(
                self._custom.list_cluster_custom_object, group, version, plural
            )
        return functools.partial(
            self._custom.list_namespaced_custom_object, group, version, namespace, plural
        )

    async def list_with_version(
        self, group: str, version: str, plural: str, namespace: str | None
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object, and the list's resourceVersion to watch from."""
        try:
            result = await self._lister(group, version, plural, namespace)()
        except ApiException as e:
            raise _wrap(e) from e
        items = [dict(item) for item in result.get("items", [])]
        return items, str((result.get("metadata") or {}).get("resourceVersion", ""))

    async def watch_objects(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) events from ``resource_version`` until the server ends the stream.
        An expired version raises :class:`Gone`: list again."""
        stream = watch.Watch()
        try:
            async with stream.stream(
                self._lister(group, version, plural, namespace),
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                allow_watch_bookmarks=True,
            ) as events:
                async for event in events:
                    kind = str(event.get("type"))
                    obj = event.get("raw_object") or event.get("object") or {}
                    if kind == "ERROR":
                        raise _error(int(obj.get("code", 0)), str(obj.get("message", obj)))
                    yield kind, dict(obj)
        except ApiException as e:
            raise _wrap(e) from e

    async def patch_object(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        namespace: str,
        name: str,
        patch: dict[str, Any],
    ) -> dict[str, Any]:
        """JSON merge patch of the object itself (spec, metadata)."""
        try:
            result = await self._custom.patch_namespaced_custom_object(
                group, version, namespace, plural, name, patch, _content_type=MERGE_PATCH
            )
        except ApiException as e:
            raise _wrap(e) from e
        return dict(result)

    async def patch_status(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        namespace: str,
        name: str,
        status: dict[str, Any],
    ) -> dict[str, Any]:
        """JSON merge patch of the status subresource (``None`` values delete fields)."""
        try:
            result = await self._custom.patch_namespaced_custom_object_status(
                group,
                version,
                namespace,
                plural,
                name,
                {"status": status},
                _content_type=MERGE_PATCH,
            )
        except ApiException as e:
            raise _wrap(e) from e
        return dict(result)

    # -- core --------------------------------------------------------------------------------

    async def secret_data(self, namespace: str, name: str) -> dict[str, str | bytes]:
        """A Secret's data, decoded: text as ``str``; a value that is not UTF-8 text (a
        keystore, a certificate in DER) stays ``bytes``, so one binary key never makes the
        others unreadable. :class:`NotFound` if there is no such Secret."""
        try:
            secret = await self._core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            raise _wrap(e) from e
        data: dict[str, str | bytes] = {}
        for key, encoded in (secret.data or {}).items():
            raw = base64.b64decode(encoded)
            try:
                data[key] = raw.decode()
            except UnicodeDecodeError:
                data[key] = raw
        return data

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded. :class:`NotFound` if the Secret or the key is missing,
        :class:`SecretNotText` if its value is not UTF-8 text."""
        data = await self.secret_data(namespace, name)
        if key not in data:
            raise NotFound(f'secret "{name}" has no key "{key}"')
        value = data[key]
        if isinstance(value, bytes):
            raise SecretNotText(namespace, name, key)
        return value

    async def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        try:
            await self._core.create_namespaced_event(namespace, event)
        except ApiException as e:
            raise _wrap(e) from e

    async def list_events(
        self, namespace: str, *, kind: str, name: str, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The Events about one object (``involvedObject``), as plain dicts in the API's
        field names, at most ``limit`` (the server's order: oldest first)."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        try:
            result = await self._core.list_namespaced_event(
                namespace, field_selector=selector, limit=limit
            )
        except ApiException as e:
            raise _wrap(e) from e
        return [self._api.sanitize_for_serialization(item) for item in result.items or ()]

    # -- leases ------------------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            lease = await self._coordination.read_namespaced_lease(name, namespace)
        except ApiException as e:
            error = _wrap(e)
            if isinstance(error, NotFound):
                return None
            raise error from e
        return dict(self._api.sanitize_for_serialization(lease))

    async def create_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        try:
            created = await self._coordination.create_namespaced_lease(namespace, lease)
        except ApiException as e:
            raise _wrap(e) from e
        return dict(self._api.sanitize_for_serialization(created))

    async def replace_lease(
        self, namespace: str, name: str, lease: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace with optimistic concurrency: ``lease.metadata.resourceVersion`` must match
        (:class:`Conflict` when someone else wrote it first)."""
        try:
            replaced = await self._coordination.replace_namespaced_lease(name, namespace, lease)
        except ApiException as e:
            raise _wrap(e) from e
        return dict(self._api.sanitize_for_serialization(replaced))

    # -- authentication ----------------------------------------------------------------------

    async def review_token(self, token: str, audiences: list[str]) -> TokenReview:
        """Ask the API server who a bearer token belongs to (TokenReview), for ``audiences``."""
        body: Any = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences},
        }
        try:
            result = await self._authentication.create_token_review(body)
        except ApiException as e:
            raise _wrap(e) from e
        status = self._api.sanitize_for_serialization(result).get("status") or {}
        user = status.get("user") or {}
        pods = (user.get("extra") or {}).get("authentication.kubernetes.io/pod-name") or []
        return TokenReview(
            authenticated=bool(status.get("authenticated")),
            username=user.get("username"),
            audiences=tuple(status.get("audiences") or ()),
            error=status.get("error"),
            pod_name=str(pods[0]) if len(pods) == 1 else None,
        )


# -- informers -----------------------------------------------------------------------------------


class ObjectSource(Protocol):
    """The calls an :class:`Informer` makes (:class:`Kube` has them)."""

    async def list_with_version(
        self, group: str, version: str, plural: str, namespace: str | None
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch_objects(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...


@dataclass
class Backoff:
    """Delays between retries: ``first``, doubling up to ``cap``; ``reset`` after a success."""

    first: float
    cap: float
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def delay(self) -> float:
        delay = self._next
        self._next = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


def _log_failure(plural: str, error: BaseException, delay: float) -> None:
    log.warning(
        "watching %s failed (%s: %s); retrying in %.1fs", plural, type(error).__name__, error, delay
    )


class Informer:
    """Every object of one kind (in one namespace or all), by :class:`~sluice.resources.Ref`,
    kept current until cancelled: list, then watch from the list's resourceVersion.

    An expired version (:class:`Gone`) lists again at once; Gone again straight after a list
    backs off like any other failure: ``backoff`` seconds, doubling up to ``max_backoff``,
    back to ``backoff`` once an event or the server's end of a stream arrives. Bookmarks only
    move the version on. ``on_change`` is called after every list and every change;
    ``on_failure(error, delay)`` before each back-off (by default it logs a warning). Meanwhile
    :attr:`objects` stays what it was: the last list and the events since.
    """

    def __init__(
        self,
        source: ObjectSource,
        group: str,
        version: str,
        plural: str,
        *,
        namespace: str | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        watch_timeout: int = 300,
        on_change: Callable[[], None] | None = None,
        on_failure: Callable[[BaseException, float], None] | None = None,
    ) -> None:
        self.plural = plural
        self._source = source
        self._kind = (group, version, plural, namespace)
        self._retry = Backoff(backoff, max_backoff)
        self._watch_timeout = watch_timeout
        self._on_change = on_change or (lambda: None)
        self._on_failure = on_failure or functools.partial(_log_failure, plural)
        self._objects: dict[Ref, dict[str, Any]] = {}
        self._listed = False
        self._synced = False
        self._expired = False  # the last attempt ended in Gone before any event

    @property
    def objects(self) -> Mapping[Ref, dict[str, Any]]:
        return self._objects

    @property
    def listed(self) -> bool:
        """A list has succeeded at least once: :attr:`objects` is the whole kind."""
        return self._listed

    @property
    def synced(self) -> bool:
        """Listed, and watching since without a failure: :attr:`objects` is current."""
        return self._synced

    async def run(self) -> None:
        """List and watch until cancelled; a failure is retried, never raised."""
        while True:
            try:
                await self._list_and_watch()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the connection dropped, the server went away, ...
                self._synced = False
                gone = isinstance(e, Gone)
                if gone and not self._expired:  # the version expired: list again at once
                    self._expired = True
                    log.info("watching %s: %s; listing again", self.plural, e)
                    continue
                self._expired = gone  # Gone again straight after a list: back off
                delay = self._retry.delay()
                self._on_failure(e, delay)
                await asyncio.sleep(delay)

    async def _list_and_watch(self) -> None:
        items, version = await self._source.list_with_version(*self._kind)
        self._objects = {Ref.of(item): item for item in items}
        self._listed = self._synced = True
        self._on_change()
        while True:  # watch from the list's version until it expires
            async for kind, obj in self._source.watch_objects(
                *self._kind, resource_version=version, timeout_seconds=self._watch_timeout
            ):
                self._retry.reset()
                self._expired = False
                version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self._objects.pop(Ref.of(obj), None)
                else:
                    self._objects[Ref.of(obj)] = obj
                self._on_change()
            self._retry.reset()  # the server ended the stream in time: watch on
            self._expired = False
