"""The API server's refusals that callers act on are types (NotFound, Conflict, Gone), chosen
in one place from the status, whether the status came with an answer or in a watch event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from sluice.errors import SluiceError
from sluice.kube import Conflict, Gone, Kube, KubeError, NotFound, SecretNotText


def refusal(status: int, message: str) -> ApiException:
    error = ApiException(status=status, reason="Reason")
    error.body = json.dumps({"message": message}).encode()
    return error


class _Coordination:
    def __init__(self, error: ApiException) -> None:
        self.error = error

    async def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        raise self.error

    async def create_namespaced_lease(self, namespace: str, lease: Any) -> Any:
        raise self.error


def kube_refusing(error: ApiException) -> Kube:
    kube = Kube.__new__(Kube)  # no API server: only the coordination API is called
    kube._coordination = _Coordination(error)
    return kube


@pytest.mark.parametrize(
    ("status", "kind"), [(404, NotFound), (409, Conflict), (410, Gone), (500, KubeError)]
)
async def test_a_refusal_is_raised_as_the_type_of_its_status(
    status: int, kind: type[KubeError]
) -> None:
    kube = kube_refusing(refusal(status, "the server says why"))

    with pytest.raises(KubeError) as raised:
        await kube.create_lease("ns", {})

    assert type(raised.value) is kind
    assert raised.value.status == status
    assert str(raised.value) == f"{status}: the server says why"


async def test_a_missing_lease_is_none_and_other_refusals_raise() -> None:
    assert await kube_refusing(refusal(404, "not found")).get_lease("ns", "l") is None
    with pytest.raises(KubeError, match="403: forbidden"):
        await kube_refusing(refusal(403, "forbidden")).get_lease("ns", "l")


class _Stream:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    async def __aenter__(self) -> AsyncIterator[dict[str, Any]]:
        async def events() -> AsyncIterator[dict[str, Any]]:
            for event in self.events:
                yield event

        return events()

    async def __aexit__(self, *_: object) -> None:
        return None


class _Custom:
    async def list_namespaced_custom_object(self, *_: object, **__: object) -> Any:
        raise AssertionError("the fake Watch does not call it")


async def test_an_expired_watch_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    expired = {"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}

    class Watch:
        def stream(self, *_: object, **__: object) -> _Stream:
            return _Stream([expired])

    monkeypatch.setattr("sluice.kube.watch.Watch", Watch)
    kube = Kube.__new__(Kube)
    kube._custom = _Custom()

    with pytest.raises(Gone, match="410: too old resource version"):
        async for _ in kube.watch_objects("g", "v", "things", "ns", resource_version="1"):
            pass


def test_every_kube_error_is_a_sluice_error() -> None:
    for kind in (NotFound, Conflict, Gone, SecretNotText):
        assert issubclass(kind, KubeError)
    assert issubclass(KubeError, SluiceError)
    assert NotFound("x").status == 404
