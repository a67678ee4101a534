"""Run the built image the way the chart runs it, with runc: no daemon, no registry.

The docker archive that ``ensure_image`` makes (the one containerd imports) is unpacked into a
directory, and each container gets a runtime spec written here: the image's own user,
entrypoint and environment, a read-only root filesystem, /tmp as a fresh tmpfs (the chart's
emptyDir), no capabilities, no new privileges. It shares the host's network namespace, so a
server in it is reachable on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ids = itertools.count()


@dataclass(frozen=True)
class ImageConfig:
    user: str
    entrypoint: list[str]
    cmd: list[str]
    env: list[str]


def image_config(archive: Path) -> ImageConfig:
    """The image's runtime config, as the archive carries it (what containerd will use)."""
    with tarfile.open(archive) as tar:
        manifest = json.load(_member(tar, "manifest.json"))[0]
        config = json.load(_member(tar, manifest["Config"]))["config"]
    return ImageConfig(
        user=config.get("User", ""),
        entrypoint=config.get("Entrypoint") or [],
        cmd=config.get("Cmd") or [],
        env=config.get("Env") or [],
    )


def _member(tar: tarfile.TarFile, name: str) -> Any:
    handle = tar.extractfile(name)
    assert handle is not None, f"{name} is missing from the archive"
    return handle


def unpack(archive: Path, rootfs: Path) -> None:
    """The image's layers in order into ``rootfs``, honouring whiteouts as containerd does."""
    with tarfile.open(archive) as outer:
        manifest = json.load(_member(outer, "manifest.json"))[0]
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=_member(outer, layer)) as tar:
                _apply_layer(tar, rootfs)


def _apply_layer(tar: tarfile.TarFile, rootfs: Path) -> None:
    for member in tar:
        path = Path(member.name)
        if path.name == ".wh..wh..opq":
            for child in (rootfs / path.parent).iterdir():
                _remove(child)
        elif path.name.startswith(".wh."):
            _remove(rootfs / path.parent / path.name.removeprefix(".wh."))
        else:
            tar.extract(member, rootfs, numeric_owner=True, filter="fully_trusted")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _user(text: str) -> dict[str, int]:
    uid, _, gid = text.partition(":")
    return {"uid": int(uid), "gid": int(gid or uid)}


def spec(rootfs: Path, config: ImageConfig, args: list[str], binds: dict[str, Path]) -> Any:
    """An OCI runtime spec like the kubelet's for the chart's pods (see the module docstring)."""
    no_caps: list[str] = []
    # Paths inside the container (its own tmpfs), not the host's temp directory.
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid"]},  # noqa: S108
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro", "nosuid"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]},  # noqa: S108
    ]
    mounts += [
        {"destination": inside, "type": "bind", "source": str(outside), "options": ["rbind", "ro"]}
        for inside, outside in binds.items()
    ]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "user": _user(config.user),
            "args": args,
            "env": config.env,
            "cwd": "/",
            "noNewPrivileges": True,
            "capabilities": dict.fromkeys(
                ("bounding", "effective", "permitted", "inheritable", "ambient"), no_caps
            ),
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "sluice",
        "mounts": mounts,
        "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")]},
    }


@dataclass
class Runc:
    """Containers of one unpacked image, their bundles and runc's state in ``workdir``."""

    runc: str
    rootfs: Path
    config: ImageConfig
    workdir: Path

    def _bundle(self, args: list[str], binds: dict[str, Path]) -> tuple[str, Path]:
        name = f"sluice-image-test-{next(_ids)}"
        bundle = self.workdir / name
        bundle.mkdir(parents=True)
        document = spec(self.rootfs, self.config, args, binds)
        (bundle / "config.json").write_text(json.dumps(document))
        return name, bundle

    def _cmd(self, name: str, bundle: Path) -> list[str]:
        state = str(self.workdir / "state")
        return [self.runc, "--root", state, "run", "--bundle", str(bundle), name]

    def run(
        self, args: list[str], binds: dict[str, Path] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion; ``args`` replace entrypoint and command, as a Pod's would."""
        name, bundle = self._bundle(args, binds or {})
        cmd = self._cmd(name, bundle)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    def start(self, args: list[str], binds: dict[str, Path] | None = None) -> Started:
        name, bundle = self._bundle(args, binds or {})
        process = subprocess.Popen(
            self._cmd(name, bundle), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        return Started(self, name, process)


@dataclass
class Started:
    runc: Runc
    name: str
    process: subprocess.Popen[str]

    def stop(self) -> str:
        """Kill the container and return everything it printed."""
        state = str(self.runc.workdir / "state")
        subprocess.run(
            [self.runc.runc, "--root", state, "kill", self.name, "KILL"],
            capture_output=True,
            check=False,
        )
        output, _ = self.process.communicate(timeout=30)
        subprocess.run(
            [self.runc.runc, "--root", state, "delete", "--force", self.name],
            capture_output=True,
            check=False,
        )
        return output
