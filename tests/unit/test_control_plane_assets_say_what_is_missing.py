"""Where the control-plane binaries come from, and the errors when they cannot be had."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sluice.devcluster import assets


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SLUICE_CACHE_DIR", str(cache))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    return cache


def _fake_binary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_kubebuilder_assets_is_used_when_it_has_both_binaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etcd = _fake_binary(tmp_path / "envtest" / "etcd")
    apiserver = _fake_binary(tmp_path / "envtest" / "kube-apiserver")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "envtest"))

    found = assets.find_binaries()

    assert found == assets.ControlPlaneBinaries(
        etcd=etcd, kube_apiserver=apiserver, source="KUBEBUILDER_ASSETS"
    )


def test_kubebuilder_assets_without_a_binary_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_binary(tmp_path / "envtest" / "etcd")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "envtest"))

    with pytest.raises(assets.AssetsError, match="has no executable kube-apiserver"):
        assets.find_binaries()


def test_nothing_cached_means_nothing_found() -> None:
    assert assets.find_binaries() is None


def test_cached_binaries_are_found_under_the_versioned_key() -> None:
    directory = assets.binaries_cache_dir()
    _fake_binary(directory / "etcd")
    _fake_binary(directory / "kube-apiserver")

    found = assets.find_binaries()

    assert found is not None
    assert found.source == "cache"
    assert assets.KUBERNETES_VERSION in directory.name
    assert assets.ETCD_VERSION in directory.name


def test_building_without_go_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    with pytest.raises(assets.AssetsError, match="no Go toolchain is on PATH") as error:
        assets.ensure_binaries(log=lambda _: None)

    assert "KUBEBUILDER_ASSETS" in str(error.value)


def test_a_failing_go_build_reports_the_compiler_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_go = _fake_binary(tmp_path / "bin" / "go")
    fake_go.write_text("#!/bin/sh\necho 'main.go:1: syntax error near nothing' >&2\nexit 2\n")
    monkeypatch.setenv("PATH", f"{fake_go.parent}{os.pathsep}{os.environ['PATH']}")

    with pytest.raises(assets.AssetsError, match="building etcd failed") as error:
        assets.ensure_binaries(log=lambda _: None)

    assert "syntax error near nothing" in str(error.value)
    assert assets.find_binaries() is None  # nothing half-built was left in the cache


def test_fetching_tools_without_npm_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    with pytest.raises(assets.AssetsError, match="npm is not on PATH"):
        assets.ensure_tools(log=lambda _: None)
