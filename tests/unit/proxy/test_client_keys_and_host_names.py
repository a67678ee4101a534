"""Who may call: client keys from a file or a mounted Secret, and the Host allowlist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sluice.proxy.access import AccessError, ClientKeys, HostAllowlist, presented_key


def mounted_secret(root: Path, data: dict[str, str], version: str) -> None:
    """Lay ``data`` out as the kubelet mounts a Secret: files behind a swapped ..data link."""
    target = root / f"..{version}"
    target.mkdir()
    for name, value in data.items():
        (target / name).write_text(value)
    link = root / "..data_tmp"
    link.symlink_to(target.name)
    link.replace(root / "..data")
    for name in data:
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")


def test_a_file_holds_one_key_per_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# the platform team\nsk-first-key-0001\n\n  sk-second-key-002  \n")

    keys = ClientKeys.load(path)

    assert len(keys) == 2
    assert keys.client("sk-first-key-0001") == "line 2"
    assert keys.client("sk-second-key-002") == "line 4"
    assert keys.client("sk-first-key-000") is None
    assert keys.client(None) is None


def test_a_mounted_secret_names_its_clients_and_rotates(tmp_path: Path) -> None:
    mounted_secret(tmp_path, {"team-a": "sk-team-a-1111\n", "team-b": "sk-team-b-1111"}, "v1")
    keys = ClientKeys.load(tmp_path)

    assert keys.client("sk-team-a-1111") == "team-a"
    assert keys.reload_if_changed() is False

    mounted_secret(tmp_path, {"team-a": "sk-team-a-2222", "team-b": "sk-team-b-1111"}, "v2")

    assert keys.reload_if_changed() is True
    assert keys.client("sk-team-a-1111") is None
    assert keys.client("sk-team-a-2222") == "team-a"


def test_keys_that_cannot_be_read_say_why_without_the_key(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    short = tmp_path / "short"
    short.write_text("abc\n")
    spaced = tmp_path / "spaced"
    spaced.mkdir()
    (spaced / "team").write_text("sk-one two-three")

    with pytest.raises(AccessError, match="no client keys"):
        ClientKeys.load(empty)
    with pytest.raises(AccessError, match=r"short line 1: a client key must be at least 8") as e:
        ClientKeys.load(short)
    assert "abc" not in str(e.value).replace(str(tmp_path), "")
    with pytest.raises(AccessError, match="team: a client key cannot contain whitespace"):
        ClientKeys.load(spaced)
    with pytest.raises(AccessError, match="no such file or directory"):
        ClientKeys.load(tmp_path / "missing")


def test_a_broken_rotation_keeps_the_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("sk-first-key-0001\n")
    keys = ClientKeys.load(path)
    path.write_text("# emptied by mistake\n")
    os.utime(path, ns=(1, 1))

    with pytest.raises(AccessError, match="no client keys"):
        keys.reload_if_changed()

    assert keys.client("sk-first-key-0001") == "line 1"


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"Authorization": "Bearer sk-abc"}, "sk-abc"),
        ({"Authorization": "bearer  sk-abc "}, "sk-abc"),
        ({"Authorization": "Basic c2s6YWJj"}, None),
        ({"Authorization": "Bearer "}, None),
        ({"x-api-key": "sk-abc"}, "sk-abc"),
        ({}, None),
    ],
)
def test_the_presented_key_comes_from_bearer_or_x_api_key(
    headers: dict[str, str], key: str | None
) -> None:
    assert presented_key(headers) == key


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8080", True),
        ("LOCALHOST", True),
        ("127.0.0.1:80", True),
        ("[::1]:8080", True),
        ("sluice.ai.svc.cluster.local", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("", False),
        (None, False),
    ],
)
def test_host_names_are_matched_without_their_port(host: str | None, allowed: bool) -> None:
    hosts = HostAllowlist.parse("localhost, 127.0.0.1,[::1],*.svc.cluster.local")

    assert hosts.allows_host(host) is allowed


def test_an_empty_allowlist_allows_any_host_and_origin() -> None:
    hosts = HostAllowlist.parse("")

    assert hosts.allows_host("evil.example")
    assert hosts.allows_origin("http://evil.example")


def test_origins_must_be_allowed_hosts() -> None:
    hosts = HostAllowlist.parse("localhost")

    assert hosts.allows_origin(None)  # not a browser
    assert hosts.allows_origin("http://localhost:3000")
    assert not hosts.allows_origin("http://evil.example")
    assert not hosts.allows_origin("null")  # a sandboxed page or a file://
