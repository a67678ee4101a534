"""The routing table from manifests on disk: the same YAML you would ``kubectl apply``.

A path is a file or a directory (``*.yaml``, ``*.yml``, ``*.json``, not recursive). Besides
Sluice's kinds, ``v1`` Secrets are read for credentials (``data`` base64 or ``stringData``).
Objects without a namespace are in ``default``. Anything else, or anything invalid, is an
error that names the file, the document and the field: a half-read configuration is never
served. So is an Upstream whose credentials Secret (or its key) is missing or unusable: on disk
that is a half-written configuration, and the Upstream would go out with no key. A YAML error
names the file, the line, the column and the problem, never the source text (it may be a
Secret's key).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydantic
import yaml

from sluice.errors import ConfigurationError
from sluice.proxy.table import Key, Table, build_table
from sluice.resources import describe, parse
from sluice.resources.models import BreakerPolicy, ModelRoute, Upstream

__all__ = ["ManifestError", "load", "signature"]

SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ConfigurationError):
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


# Quoted fragments in PyYAML's messages: token names ('<stream end>') and single characters
# ('\\t') are PyYAML's; longer ones (an alias, a tag) are copied from the source: not shown.
_QUOTED = re.compile(r"'(?!<[a-z ]+>')[^']{5,}'")


def _mark(mark: yaml.Mark | None) -> str:
    return "" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}"


def _yaml_error(path: Path, error: yaml.YAMLError) -> ManifestError:
    """The file, the line and column, and the problem: never str(error), which quotes the
    source (the offending line, which may be a Secret's key)."""
    if isinstance(error, yaml.MarkedYAMLError):
        problem = _QUOTED.sub("'…'", error.problem or "syntax error")
        where = _mark(error.problem_mark or error.context_mark)
        message = f"{path}: not valid YAML" + (f" at {where}" if where else "") + f": {problem}"
        if error.context:
            context = _QUOTED.sub("'…'", error.context)
            if error.context_mark is not None and error.context_mark != error.problem_mark:
                context += f" at {_mark(error.context_mark)}"
            message += f" ({context})"
        return ManifestError(message)
    if isinstance(error, yaml.reader.ReaderError):  # a control character: its code only
        return ManifestError(
            f"{path}: not valid YAML at position {error.position}: unacceptable character "
            f"#x{error.character:04x}: {error.reason}"
        )
    return ManifestError(f"{path}: not valid YAML ({type(error).__name__})")


def _check_credentials(
    upstreams: Iterable[Upstream], secrets: dict[Key, dict[str, str]], where: dict[Key, str]
) -> None:
    """Every referenced Secret and key exists and holds a usable key (see build_table)."""
    for upstream in upstreams:
        if upstream.spec.credentials is None:
            continue
        namespace = upstream.metadata.namespace or "default"
        ref = upstream.spec.credentials.secret_ref
        name = upstream.metadata.name
        upstream_at = f"{where[namespace, name]}: Upstream {namespace}/{name}"
        subject = f'{upstream_at}: credentials secret "{ref.name}"'
        data = secrets.get((namespace, ref.name))
        if data is None:
            raise ManifestError(f'{subject} not found (key "{ref.key}")')
        if ref.key not in data:
            raise ManifestError(f'{subject} has no key "{ref.key}"')
        if any(c in data[ref.key].strip() for c in "\r\n"):
            raise ManifestError(f'{subject} key "{ref.key}" contains a line break')


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


def _documents(path: Path) -> list[Any]:
    try:
        return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as e:
        raise _yaml_error(path, e) from None  # its text quotes the source: not chained
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text (byte {e.start})") from None


def load(paths: Iterable[Path], *, default_policy: str = "default") -> Table:
    """The table the files describe, or a ManifestError naming what cannot be used."""
    resources: list[Upstream | BreakerPolicy | ModelRoute] = []
    secrets: dict[Key, dict[str, str]] = {}
    seen: dict[tuple[str, str, str], str] = {}
    upstreams_at: dict[Key, str] = {}
    for path in files(paths):
        for index, document in enumerate(_documents(path), start=1):
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
                resource = parse(document)
            except pydantic.ValidationError as e:
                raise ManifestError(f"{where}: {kind} {name}: {describe(e)}") from e
            except ValueError as e:
                raise ManifestError(f"{where}: {e}") from e
            resources.append(resource)
            if isinstance(resource, Upstream):
                upstreams_at[namespace, resource.metadata.name] = where
    _check_credentials((r for r in resources if isinstance(r, Upstream)), secrets, upstreams_at)
    table = build_table(resources, secrets, default_policy=default_policy)
    if not table.targets:
        raise ManifestError(f"no Upstream in {', '.join(str(p) for p in files(paths))}")
    return table
