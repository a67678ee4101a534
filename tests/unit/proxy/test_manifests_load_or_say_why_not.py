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


def without(kind: str) -> str:
    """The examples' manifests without the objects of one kind."""
    text = (EXAMPLES / "upstreams.yaml").read_text()
    return "---".join(d for d in text.split("---") if f"kind: {kind}" not in d)


def test_a_missing_policy_is_a_reported_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(without("BreakerPolicy"))

    table = manifests.load([tmp_path])

    assert (
        'Upstream default/primary: BreakerPolicy "fast" not found; using the built-in defaults'
        in table.problems
    )


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, 'credentials secret "primary-key" not found (key "apiKey")'),
        ("stringData: {other: sk-x}", 'credentials secret "primary-key" has no key "apiKey"'),
        (
            'stringData: {apiKey: "sk-a\\nsk-b"}',
            'credentials secret "primary-key" key "apiKey" contains a line break',
        ),
    ],
)
def test_a_missing_secret_or_key_is_refused_naming_upstream_secret_and_key(
    tmp_path: Path, secret: str | None, message: str
) -> None:
    """Half-written files (the Upstream saved, its Secret not yet): the Upstream would go out
    with no key, so nothing is served from them."""
    text = without("Secret")
    if secret is not None:
        text += f"\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: primary-key}}\n{secret}\n"
    path = tmp_path / "m.yaml"
    path.write_text(text)

    with pytest.raises(manifests.ManifestError) as error:
        manifests.load([tmp_path])

    assert str(error.value) == f"{path} (document 2): Upstream default/primary: {message}"
    assert "sk-" not in str(error.value)


SECRET_WITH_A_SYNTAX_ERROR = """\
apiVersion: v1
kind: Secret
metadata: {name: primary-key}
stringData:
  apiKey: sk-live-do-not-print-me: oops
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            SECRET_WITH_A_SYNTAX_ERROR,
            "not valid YAML at line 5, column 34: mapping values are not allowed here",
        ),
        (
            "stringData: {apiKey: 'sk-live-do-not-print-me\n",
            "not valid YAML at line 2, column 1: found unexpected end of stream "
            "(while scanning a quoted scalar at line 1, column 22)",
        ),
        (
            "stringData: {apiKey: *sk-live-do-not-print-me}\n",
            "not valid YAML at line 1, column 22: found undefined alias '…'",
        ),
        (
            "stringData: {apiKey: !sk-live-do-not-print-me x}\n",
            "could not determine a constructor for the tag '…'",
        ),
    ],
)
def test_a_yaml_error_names_line_and_column_never_the_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, message: str
) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(text)

    with pytest.raises(manifests.ManifestError) as error:
        manifests.load([path])

    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)
    assert "do-not-print-me" not in str(error.value)
    assert error.value.__cause__ is None
    assert error.value.__suppress_context__  # a traceback does not show PyYAML's text either
    assert "do-not-print-me" not in caplog.text


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(b"kind: \xff\n")

    with pytest.raises(manifests.ManifestError, match="not UTF-8 text"):
        manifests.load([path])


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
