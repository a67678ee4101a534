"""crds/ is generated from the pydantic models: one source, and a check that nothing drifted."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from sluice.resources import crds

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("directory", ["crds", "charts/sluice/crds"])
def test_the_committed_crds_match_the_models(directory: str) -> None:
    diffs = crds.drift(REPO / directory)

    assert diffs == [], f"{directory} drifted; run: python -m sluice.resources.crds\n" + "".join(
        diffs
    )


def test_drift_is_reported_as_a_diff(tmp_path: Path) -> None:
    crds.main([str(tmp_path)])
    target = tmp_path / "sluice.dev_upstreams.yaml"
    target.write_text(target.read_text().replace("maxLength: 2048", "maxLength: 4096"))

    [diff] = crds.drift(tmp_path)

    assert "-                maxLength: 4096" in diff
    assert "+                maxLength: 2048" in diff
    assert crds.main(["--check", str(tmp_path)]) == 1


def test_every_generated_file_says_it_is_generated() -> None:
    for text in crds.render().values():
        assert text.startswith(crds.HEADER)


def test_optional_nullable_fields_get_no_default_and_defaulted_objects_get_one() -> None:
    spec = crds.structural_schema(crds.models.UpstreamSpec)["properties"]

    assert "default" not in spec["probe"]  # no probe block: never probed
    assert spec["timeouts"]["default"] == {}
    assert spec["timeouts"]["properties"]["connect"]["default"] == "5s"


def test_a_construct_without_a_structural_equivalent_stops_the_generator() -> None:
    class Ambiguous(BaseModel):
        value: int | list[str]

    with pytest.raises(crds.SchemaError, match=r"Ambiguous.value: anyOf"):
        crds.structural_schema(Ambiguous)
