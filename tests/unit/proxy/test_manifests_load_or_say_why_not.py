"""Standalone mode reads the same manifests as kubectl; bad ones are refused, naming the place."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.proxy import manifests

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_the_examples_load_with_their_secret() -> None:
    table = manifests.load([EXAMPLES])

    assert sorted(table.targets) == [("default", "primary"), ("default", "secondary")]
    assert table.targets["default", "primary"].api_key == "sk-fake-primary-not-a-real-key"
    assert table.targets["default", "primary"].policy_name == "fast"
    assert [r.key for r in table.routes] == [("default", "m1")]
    assert table.problems == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", "not valid YAML"),
        ("- just a list", "(document 1): not a Kubernetes object"),
        (
            "kind: Upstream\napiVersion: sluice.dev/v1alpha1\nmetadata: {}\n",
            "(document 1): metadata.name is required",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
            "not a Sluice resource: apiVersion 'apps/v1', kind 'Deployment'",
        ),
        (
            "apiVersion: sluice.dev/v1alpha1\nkind: Upstream\nmetadata: {name: u}\n"
            "spec: {provider: openai, baseURL: http://h/v1, models: [{name: m}], "
            "probe: {interval: '10'}}\n",
            "Upstream u: spec.probe.interval: String should match pattern",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: '!!!'}\n",
            "(document 1): data.k is not base64 text",
        ),
    ],
)
def test_a_bad_manifest_is_refused_naming_file_document_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)

    with pytest.raises(manifests.ManifestError) as error:
        manifests.load([path])

    assert str(error.value).startswith(str(path))
    assert message in str(error.value)


def test_an_object_defined_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text((EXAMPLES / "upstreams.yaml").read_text())
    (tmp_path / "b.yaml").write_text((EXAMPLES / "upstreams.yaml").read_text())

    with pytest.raises(manifests.ManifestError, match="BreakerPolicy default/fast is also in"):
        manifests.load([tmp_path])


def test_a_missing_secret_or_policy_is_a_reported_problem_not_a_crash(tmp_path: Path) -> None:
    text = (EXAMPLES / "upstreams.yaml").read_text()
    documents = [
        d for d in text.split("---") if "kind: Secret" not in d and "kind: BreakerPolicy" not in d
    ]
    (tmp_path / "m.yaml").write_text("---".join(documents))

    table = manifests.load([tmp_path])

    assert (
        'Upstream default/primary: BreakerPolicy "fast" not found; using the built-in defaults'
        in table.problems
    )
    assert (
        'Upstream default/primary: credentials secret "primary-key" key "apiKey" not found'
        in table.problems
    )


def test_no_upstream_at_all_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")

    with pytest.raises(manifests.ManifestError, match="no Upstream in"):
        manifests.load([tmp_path])


def test_the_signature_changes_when_a_file_does(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text((EXAMPLES / "upstreams.yaml").read_text())
    before = manifests.signature([tmp_path])

    path.write_text(path.read_text() + "\n# changed\n")

    assert manifests.signature([tmp_path]) != before
