"""The image tier: Sluice's image, built here (``sluice controlplane image``), run with runc.

``scripts/test.sh`` builds the image before pytest, so the session usually finds it cached; if
not, the first test builds it (minutes). Without root, buildah, mmdebstrap or runc every test
here fails, saying which is missing and how to install it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.devcluster.image import ImageBuild, ImageError, ensure_image
from tests.image.runc import Runc, image_config, unpack


@pytest.fixture(scope="session")
def image() -> ImageBuild:
    try:
        return ensure_image(log=lambda m: print(m, flush=True))
    except ImageError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def containers(image: ImageBuild, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runc]:
    runc = shutil.which("runc")
    if runc is None:
        pytest.fail(
            "runc is not on PATH: apt-get install runc (scripts/test.sh does, as root); the "
            "image tier runs the image with it",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail("the image tier runs containers with runc as root: run it as root")
    workdir = tmp_path_factory.mktemp("image")
    rootfs = workdir / "rootfs"
    rootfs.mkdir()
    unpack(image.archive, rootfs)
    yield Runc(runc=runc, rootfs=rootfs, config=image_config(image.archive), workdir=workdir)
    shutil.rmtree(rootfs, ignore_errors=True)


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    directory = tmp_path / "manifests"
    directory.mkdir()
    return directory
