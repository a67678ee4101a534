"""The image's cache keys change exactly when what goes into it changes, and a build that
cannot run says what is missing."""

from __future__ import annotations

import shutil
import stat
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from sluice.devcluster import image
from sluice.devcluster.image import (
    ImageError,
    base_key,
    image_key,
    load_into_containerd,
    missing_message,
    pip_build_options,
    source_root,
)

ROOT = source_root()


@pytest.fixture
def context(tmp_path: Path) -> Path:
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "src" / "sluice").mkdir(parents=True)
    (tmp_path / "src" / "sluice" / "__init__.py").write_text("x = 1\n")
    return tmp_path


def test_the_base_key_follows_mmdebstrap_and_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    key = base_key("mmdebstrap 1.3.5")
    assert key == base_key("mmdebstrap 1.3.5")
    assert len(key) == 12
    assert key != base_key("mmdebstrap 1.4.0")
    monkeypatch.setattr(image, "BASE_PACKAGES", (*image.BASE_PACKAGES, "curl"))
    assert base_key("mmdebstrap 1.3.5") != key


def test_the_image_key_follows_the_base_and_every_input(context: Path) -> None:
    key = image_key("base1", context)
    assert image_key("base1", context) == key
    assert image_key("base2", context) != key
    for name in ("Dockerfile", "constraints.txt", "pyproject.toml", "src/sluice/__init__.py"):
        before = (context / name).read_text()
        (context / name).write_text(before + "\n")
        assert image_key("base1", context) != key, name
        (context / name).write_text(before)
    assert image_key("base1", context) == key
    (context / "src" / "sluice" / "new.py").write_text("")
    assert image_key("base1", context) != key, "a new file under src/ is copied in too"


def test_the_image_key_ignores_bytecode_and_files_the_build_does_not_copy(context: Path) -> None:
    key = image_key("base1", context)
    cache = context / "src" / "sluice" / "__pycache__"
    cache.mkdir()
    (cache / "__init__.cpython-311.pyc").write_bytes(b"\0")
    (context / "notes.txt").write_text("not in the image")
    assert image_key("base1", context) == key


def test_the_image_key_refuses_a_checkout_missing_an_input(context: Path) -> None:
    (context / "constraints.txt").unlink()
    with pytest.raises(ImageError, match=r"constraints\.txt is missing"):
        image_key("base1", context)


def test_nothing_is_missing_for_root_with_both_tools() -> None:
    found = {"buildah": "/usr/bin/buildah", "mmdebstrap": "/usr/bin/mmdebstrap"}
    assert missing_message(found, 0, ROOT) is None


def test_missing_tools_are_named_with_the_command_that_installs_them() -> None:
    message = missing_message({"buildah": None, "mmdebstrap": None}, 0, ROOT)
    assert message is not None
    assert "buildah and mmdebstrap are not on PATH" in message
    assert "apt-get install buildah mmdebstrap" in message
    one = missing_message({"buildah": "/usr/bin/buildah", "mmdebstrap": None}, 0, ROOT)
    assert one is not None
    assert "mmdebstrap is not on PATH: apt-get install mmdebstrap" in one


def test_non_root_and_no_checkout_are_said_too(tmp_path: Path) -> None:
    found = {"buildah": "/usr/bin/buildah", "mmdebstrap": "/usr/bin/mmdebstrap"}
    message = missing_message(found, 1000, tmp_path)
    assert message is not None
    assert "needs root" in message
    assert f"{tmp_path} has no Dockerfile" in message


def test_the_build_reaches_pypi_as_this_machine_does(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    options = pip_build_options({"PIP_CERT": str(ca), "PIP_INDEX_URL": "https://mirror/simple"})
    assert "--build-arg=PIP_INDEX_URL=https://mirror/simple" in options
    assert f"--volume={ca}:/etc/ssl/host-ca.pem:ro" in options
    assert "--build-arg=PIP_CERT=/etc/ssl/host-ca.pem" in options
    assert pip_build_options({"PIP_CERT": str(tmp_path / "absent.pem")}) == []


def test_constraints_pin_every_runtime_dependency() -> None:
    """constraints.txt (scripts/pin-image-deps.py) must not go stale as dependencies change."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for text in [*project["project"]["dependencies"], *project["build-system"]["requires"]]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned: run scripts/pin-image-deps.py"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {text}"


def test_loading_runs_ctr_import_in_the_namespace(tmp_path: Path) -> None:
    ctr = tmp_path / "ctr"
    record = tmp_path / "args"
    ctr.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    ctr.chmod(ctr.stat().st_mode | stat.S_IXUSR)
    load_into_containerd(tmp_path / "a.tar", "/run/c.sock", ctr=str(ctr))
    expected = f"--address /run/c.sock --namespace k8s.io images import {tmp_path / 'a.tar'}"
    assert record.read_text().strip() == expected


def test_loading_without_ctr_says_where_it_comes_from(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="comes with containerd"):
        load_into_containerd(tmp_path / "a.tar", "/run/c.sock", ctr=str(tmp_path / "no-ctr"))
