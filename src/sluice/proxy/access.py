"""Who may call the proxy: client API keys, and the Host names it answers to. No aiohttp here.

- :class:`ClientKeys`: the keys clients present (``Authorization: Bearer <key>``, as OpenAI
  SDKs send ``api_key``, or ``x-api-key``, as Anthropic's do), read from a file (one key per
  line) or a directory laid out as Kubernetes mounts a Secret (one key per file, the file's
  name is the client's name). Only SHA-256 digests are kept, and a presented key's digest is
  looked up among them: neither the time taken nor memory says anything about a key's bytes,
  and the cost is the same for one key or ten thousand. The path is read again when it changes
  (rotation without a restart); a change that cannot be read keeps the keys in force.
- :class:`HostAllowlist`: the ``Host`` values (and ``Origin`` hosts) the proxy answers. A web
  page can make a browser send requests to a proxy on a developer's laptop; with DNS rebinding
  it even does so "same-origin". Refusing unknown Host names stops both.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sluice.errors import ConfigurationError

__all__ = ["LOOPBACK_HOSTS", "AccessError", "ClientKeys", "HostAllowlist", "presented_key"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
MAX_KEYS = 10_000
MAX_KEY_FILE_BYTES = 1024 * 1024


class AccessError(ConfigurationError):
    """The client keys cannot be read; the message names the path and the problem (never a
    key)."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: ``Authorization: Bearer <key>``, else ``x-api-key``."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("x-api-key")
    return api_key.strip() if api_key and api_key.strip() else None


def _signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when the keys change. A mounted Secret swaps a ``..data`` symlink, so the
    resolved paths are part of it."""
    try:
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    except NotADirectoryError:
        entries = [path]
    result = []
    for entry in entries:
        stat = entry.stat()
        result.append((str(entry.resolve()), stat.st_size, stat.st_mtime_ns))
    return tuple(result)


def _read(path: Path, where: str) -> str:
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise AccessError(f"{where}: larger than {MAX_KEY_FILE_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AccessError(f"{where}: not UTF-8 text") from None
    except OSError as e:
        raise AccessError(f"{where}: {e.strerror or type(e).__name__}") from None


def _checked(key: str, where: str) -> str:
    if len(key) < 8:
        raise AccessError(f"{where}: a client key must be at least 8 characters")
    if any(c.isspace() for c in key):
        raise AccessError(f"{where}: a client key cannot contain whitespace")
    return key


def _load(path: Path) -> dict[bytes, str]:
    """Digest -> client name."""
    keys: dict[bytes, str] = {}
    if path.is_dir():
        for entry in sorted(path.iterdir()):
            if entry.name.startswith(".") or not entry.is_file():
                continue  # a mounted Secret's ..data and timestamped directories
            where = f"{path}/{entry.name}"
            key = _checked(_read(entry, where).strip(), where)
            keys[_digest(key)] = entry.name
    elif path.is_file():
        for number, line in enumerate(_read(path, str(path)).splitlines(), start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                keys[_digest(_checked(text, f"{path} line {number}"))] = f"line {number}"
    else:
        raise AccessError(f"{path}: no such file or directory")
    if not keys:
        raise AccessError(f"{path}: no client keys (every request would be refused)")
    if len(keys) > MAX_KEYS:
        raise AccessError(f"{path}: more than {MAX_KEYS} client keys")
    return keys


@dataclass
class ClientKeys:
    path: Path
    _keys: dict[bytes, str] = field(default_factory=dict, repr=False)
    _seen: tuple[tuple[str, int, int], ...] = ()

    @classmethod
    def load(cls, path: Path) -> ClientKeys:
        """The keys at ``path``; :class:`AccessError` if there are none or they cannot be read."""
        keys = cls(path)
        keys._seen = _signature(path) if path.exists() else ()
        keys._keys = _load(path)
        return keys

    @classmethod
    def of(cls, keys: Mapping[str, str]) -> ClientKeys:
        """From ``{client name: key}`` (tests, embedding)."""
        made = cls(Path(os.devnull))
        made._keys = {_digest(_checked(k, n)): n for n, k in keys.items()}
        return made

    def client(self, key: str | None) -> str | None:
        """The client's name if ``key`` is one of the keys, else None. The keys are held as
        SHA-256 digests: looking a digest up says nothing about a key's bytes (a near miss
        hashes far away), and costs the same for one key or ten thousand."""
        if key is None:
            return None
        return self._keys.get(_digest(key))

    def reload_if_changed(self) -> bool:
        """Read the path again if it changed; True if the keys changed. Raises AccessError (the
        old keys stay in force) if the new ones cannot be read."""
        if self.path == Path(os.devnull):
            return False
        try:
            seen = _signature(self.path)
        except OSError as e:
            raise AccessError(f"{self.path}: {e.strerror or type(e).__name__}") from None
        if seen == self._seen:
            return False
        keys = _load(self.path)
        self._seen = seen
        changed = keys != self._keys
        self._keys = keys
        return changed

    def __len__(self) -> int:
        return len(self._keys)


def _host_of(value: str) -> str:
    """``Host`` or an Origin's authority without the port, lower case; IPv6 in brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@functools.cache
def _pattern(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression for the patterns: literal but for ``*`` (brackets are IPv6)."""
    return re.compile("|".join(re.escape(p).replace(r"\*", "[^/]*") for p in patterns))


@dataclass(frozen=True)
class HostAllowlist:
    """Host names (``*`` globs allowed; ports ignored) the proxy answers. Empty: any."""

    patterns: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> HostAllowlist:
        items = text.split(",") if isinstance(text, str) else text
        return cls(tuple(_host_of(item) for item in items if item.strip()))

    def allows_host(self, host: str | None) -> bool:
        if not self.patterns:
            return True
        if not host:
            return False
        return _pattern(self.patterns).fullmatch(_host_of(host)) is not None

    def allows_origin(self, origin: str | None) -> bool:
        """A browser's ``Origin``: none (not a browser, or same-origin GET) is fine; a web
        page's must be one of the allowed hosts."""
        if origin is None or not self.patterns:
            return True
        netloc = urlsplit(origin).netloc
        return bool(netloc) and self.allows_host(netloc)
