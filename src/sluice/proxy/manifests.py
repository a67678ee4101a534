"""The routing table from manifests on disk: the same YAML you would ``kubectl apply``.

A path is a file or a directory (``*.yaml``, ``*.yml``, ``*.json``, not recursive). Besides
Sluice's kinds, ``v1`` Secrets are read for credentials (``data`` base64 or ``stringData``).
Objects without a namespace are in ``default``. Anything else, or anything invalid, is an
error that names the file, the document and the field: a half-read configuration is never
served.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydantic
import yaml

from sluice.proxy.table import Key, Table, build_table
from sluice.resources import parse
from sluice.resources.models import BreakerPolicy, ModelRoute, Upstream

__all__ = ["ManifestError", "load", "signature"]

SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest cannot be used; the message names the file, document and field."""


def files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return found


def signature(paths: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """What changes when a manifest changes (name, size, mtime), to reload on change."""
    result = []
    for path in files(paths):
        stat = path.stat()
        result.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(result)


def _secret_data(document: dict[str, Any], where: str) -> dict[str, str]:
    data: dict[str, str] = {}
    for key, value in (document.get("data") or {}).items():
        try:
            data[key] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as e:
            raise ManifestError(f"{where}: data.{key} is not base64 text") from e
    for key, value in (document.get("stringData") or {}).items():
        data[key] = str(value)
    return data


def load(paths: Iterable[Path], *, default_policy: str = "default") -> Table:
    resources: list[Upstream | BreakerPolicy | ModelRoute] = []
    secrets: dict[Key, dict[str, str]] = {}
    seen: dict[tuple[str, str, str], str] = {}
    for path in files(paths):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as e:
            raise ManifestError(f"{path}: not valid YAML: {e}") from e
        for index, document in enumerate(documents, start=1):
            if document is None:
                continue
            where = f"{path} (document {index})"
            if not isinstance(document, dict):
                raise ManifestError(f"{where}: not a Kubernetes object")
            kind = document.get("kind")
            metadata = document.get("metadata") or {}
            name = metadata.get("name")
            if not name:
                raise ManifestError(f"{where}: metadata.name is required")
            namespace = metadata.get("namespace") or "default"
            identity = (str(kind), namespace, str(name))
            if identity in seen:
                raise ManifestError(
                    f"{where}: {kind} {namespace}/{name} is also in {seen[identity]}"
                )
            seen[identity] = where
            if document.get("apiVersion") == "v1" and kind == "Secret":
                secrets[namespace, str(name)] = _secret_data(document, where)
                continue
            try:
                resources.append(parse(document))
            except pydantic.ValidationError as e:
                first = e.errors()[0]
                field = ".".join(str(p) for p in first["loc"])
                raise ManifestError(f"{where}: {kind} {name}: {field}: {first['msg']}") from e
            except ValueError as e:
                raise ManifestError(f"{where}: {e}") from e
    table = build_table(resources, secrets, default_policy=default_policy)
    if not table.targets:
        raise ManifestError(f"no Upstream in {', '.join(str(p) for p in files(paths))}")
    return table
