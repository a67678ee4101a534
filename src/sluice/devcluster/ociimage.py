"""Write an OCI image archive of one static binary, in Python, with no registry and no daemon.

The pause image is one file (``/pause``) and an entrypoint; ``ctr images import`` loads the
archive into containerd under the name in its index. Everything is deterministic (fixed
timestamps, owners and order), so the same binary gives the same digest every time.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return f"sha256:{hashlib.sha256(self.data).hexdigest()}"

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        size = len(self.data)
        return {"mediaType": self.media_type, "digest": self.digest, "size": size, **extra}


def _tar(members: list[tuple[str, bytes, int]]) -> bytes:
    """An uncompressed tar of (name, content, mode), owned by root, dated 1970."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def image_blobs(binary: bytes, name: str) -> tuple[Blob, Blob, Blob]:
    """The layer (``/<name>``), the config (entrypoint ``/<name>``) and the manifest."""
    layer = Blob(LAYER_TYPE, _tar([(name, binary, 0o755)]))
    config = Blob(
        CONFIG_TYPE,
        _json(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Entrypoint": [f"/{name}"], "User": "65535:65535"},
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            }
        ),
    )
    manifest = Blob(
        MANIFEST_TYPE,
        _json(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
            }
        ),
    )
    return layer, config, manifest


def archive_bytes(binary: bytes, *, name: str, reference: str) -> bytes:
    """The OCI image layout, as a tar, naming the image ``reference`` for containerd."""
    blobs = image_blobs(binary, name)
    manifest = blobs[2]
    tag = reference.rpartition(":")[2]
    index = {
        "schemaVersion": 2,
        "manifests": [
            manifest.descriptor(
                annotations={
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": tag,
                }
            )
        ],
    }
    members = [
        ("oci-layout", _json({"imageLayoutVersion": "1.0.0"}), 0o644),
        ("index.json", _json(index), 0o644),
    ]
    members += [(f"blobs/sha256/{b.digest.removeprefix('sha256:')}", b.data, 0o644) for b in blobs]
    return _tar(members)


def write_single_binary_image(path: Path, *, binary: Path, reference: str) -> Path:
    """Write the archive of ``binary`` as ``/<its name>`` to ``path``."""
    path.write_bytes(archive_bytes(binary.read_bytes(), name=binary.name, reference=reference))
    return path
